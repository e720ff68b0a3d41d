//! Body framing: Content-Length, chunked (with extensions and trailers) and until-close.

use smol::io::AsyncRead;
use std::{fmt, io};

use super::{Reader, RequestHead, ResponseHead};

/// The longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;
/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    Close,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The stream failed.
    Io(io::Error),
    /// The stream ended before the body did.
    Truncated,
    /// The chunked encoding is broken; the text says where.
    InvalidChunk(&'static str),
    /// `Content-Length` is not a number, or several disagree.
    InvalidLength,
    /// A `Transfer-Encoding` other than chunked, or both it and `Content-Length` on a request.
    UnsupportedTransferEncoding,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "reading the body: {e}"),
            BodyError::Truncated => write!(f, "connection closed inside the body"),
            BodyError::InvalidChunk(what) => write!(f, "invalid chunked encoding: {what}"),
            BodyError::InvalidLength => write!(f, "invalid content-length"),
            BodyError::UnsupportedTransferEncoding => write!(f, "unsupported transfer-encoding"),
        }
    }
}

impl std::error::Error for BodyError {}

fn content_length(headers: &super::Headers) -> Result<Option<u64>, BodyError> {
    let mut found: Option<u64> = None;
    for v in headers.get_all("content-length") {
        // Several fields, or one list, must all agree (RFC 9112 §6.3).
        for part in v.split(|&b| b == b',') {
            let s = std::str::from_utf8(part.trim_ascii()).map_err(|_| BodyError::InvalidLength)?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BodyError::InvalidLength);
            }
            let n: u64 = s.parse().map_err(|_| BodyError::InvalidLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(BodyError::InvalidLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Whether the last transfer coding is `chunked`; `Err` when some other coding is last.
fn chunked(headers: &super::Headers) -> Result<bool, BodyError> {
    let mut last: Option<Vec<u8>> = None;
    for v in headers.get_all("transfer-encoding") {
        for part in v.split(|&b| b == b',') {
            let t = part.trim_ascii();
            if !t.is_empty() {
                last = Some(t.to_ascii_lowercase());
            }
        }
    }
    match last {
        None => Ok(false),
        Some(t) if t == b"chunked" => Ok(true),
        Some(_) => Err(BodyError::UnsupportedTransferEncoding),
    }
}

impl Framing {
    /// The framing of a request body (RFC 9112 §6.3). A request carrying both
    /// `Transfer-Encoding` and `Content-Length` is refused: it is the classic smuggling shape.
    pub fn of_request(head: &RequestHead) -> Result<Framing, BodyError> {
        let te = head.headers.contains("transfer-encoding");
        if te && head.headers.contains("content-length") {
            return Err(BodyError::UnsupportedTransferEncoding);
        }
        if te {
            return if chunked(&head.headers)? {
                Ok(Framing::Chunked)
            } else {
                Err(BodyError::UnsupportedTransferEncoding)
            };
        }
        Ok(match content_length(&head.headers)? {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }

    /// The framing of a response to a request with `method`.
    pub fn of_response(head: &ResponseHead, method: &str) -> Result<Framing, BodyError> {
        if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
            return Ok(Framing::Empty);
        }
        if head.headers.contains("transfer-encoding") {
            // A response with another coding last is delimited by the close (RFC 9112 §6.3).
            return Ok(if chunked(&head.headers).unwrap_or(false) {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        Ok(match content_length(&head.headers)? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        })
    }
}

#[derive(Debug)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Close,
    Done,
}

/// Pulls a body out of a [`Reader`] piece by piece, undoing the framing.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
}

/// Takes one line (without its `\r\n` or `\n`) from the front of the buffer, filling as needed.
async fn take_line<R: AsyncRead + Unpin>(
    rd: &mut Reader<R>,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    loop {
        if let Some(pos) = rd.buffered().iter().position(|&b| b == b'\n') {
            let mut line = rd.buffered()[..pos].to_vec();
            rd.consume(pos + 1);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        if rd.buffered().len() > max || rd.is_full() {
            return Err(BodyError::InvalidChunk("line too long"));
        }
        match rd.fill().await {
            Ok(0) => return Err(BodyError::Truncated),
            Ok(_) => {}
            Err(e) => return Err(BodyError::Io(e)),
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(BodyError::InvalidChunk("chunk size"));
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = (b as char)
            .to_digit(16)
            .ok_or(BodyError::InvalidChunk("chunk size"))?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(d as u64))
            .ok_or(BodyError::InvalidChunk("chunk size"))?;
    }
    Ok(n)
}

impl BodyReader {
    /// A reader for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Self { state }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Appends the next piece of body data to `out` and returns its length; 0 once the body
    /// (and any trailer) has been read completely. Cancel-safe.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut Reader<R>,
        out: &mut Vec<u8>,
    ) -> Result<usize, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if rd.buffered().is_empty() {
                        match rd.fill().await {
                            Ok(0) => return Err(BodyError::Truncated),
                            Ok(_) => {}
                            Err(e) => return Err(BodyError::Io(e)),
                        }
                    }
                    let n = (rd.buffered().len() as u64).min(remaining) as usize;
                    out.extend_from_slice(&rd.buffered()[..n]);
                    rd.consume(n);
                    let left = remaining - n as u64;
                    self.state = match (&self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                    return Ok(n);
                }
                State::Close => {
                    if rd.buffered().is_empty() {
                        match rd.fill().await {
                            Ok(0) => {
                                self.state = State::Done;
                                return Ok(0);
                            }
                            Ok(_) => {}
                            Err(e) => return Err(BodyError::Io(e)),
                        }
                    }
                    let n = rd.buffered().len();
                    out.extend_from_slice(rd.buffered());
                    rd.consume(n);
                    return Ok(n);
                }
                State::ChunkSize => {
                    let line = take_line(rd, MAX_LINE_BYTES).await?;
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    let line = take_line(rd, 2).await?;
                    if !line.is_empty() {
                        return Err(BodyError::InvalidChunk("missing CRLF after chunk data"));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let line = take_line(rd, MAX_LINE_BYTES).await?;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if seen + line.len() > MAX_TRAILER_BYTES {
                        return Err(BodyError::InvalidChunk("trailer section too large"));
                    } else {
                        self.state = State::Trailers(seen + line.len());
                    }
                }
            }
        }
    }
}

/// Frames body data for the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyWriter {
    /// Bytes go out as they are (`Content-Length` or until-close framing).
    Raw,
    /// Each piece becomes one chunk; [`BodyWriter::finish`] writes the last chunk.
    Chunked,
}

impl BodyWriter {
    /// The framing of a body of unknown length sent after `head`: chunked, and so marked in
    /// `head`; for an HTTP/1.0 client, which cannot take chunks, raw bytes ended by closing the
    /// connection (the caller closes it).
    pub fn streaming(head: &mut ResponseHead, client_http10: bool) -> BodyWriter {
        if client_http10 {
            BodyWriter::Raw
        } else {
            head.headers.set("Transfer-Encoding", "chunked");
            BodyWriter::Chunked
        }
    }

    /// Appends `data`, framed, to `out`. Empty data writes nothing: an empty chunk would end
    /// the body.
    pub fn encode(&self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        match self {
            BodyWriter::Raw => out.extend_from_slice(data),
            BodyWriter::Chunked => {
                use std::io::Write;
                // Into the Vec directly: no String per chunk.
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends the end of the body to `out`.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if *self == BodyWriter::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(framing: Framing, wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut rd = Reader::with_capacity(wire, 16);
        let mut body = BodyReader::new(framing);
        let mut out = Vec::new();
        smol::block_on(async {
            while body.read(&mut rd, &mut out).await? > 0 {}
            Ok::<_, BodyError>(())
        })?;
        let (inner, mut rest) = rd.into_parts();
        rest.extend_from_slice(inner);
        Ok((out, rest))
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, rest) = read_all(Framing::Chunked, wire).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn chunked_errors() {
        assert!(matches!(
            read_all(Framing::Chunked, b"zz\r\n"),
            Err(BodyError::InvalidChunk(_))
        ));
        assert!(matches!(
            read_all(Framing::Chunked, b"3\r\nabcX\r\n"),
            Err(BodyError::InvalidChunk(_))
        ));
        assert!(matches!(
            read_all(Framing::Chunked, b"ffffffffffffffffff\r\n"),
            Err(BodyError::InvalidChunk(_))
        ));
        assert!(matches!(
            read_all(Framing::Chunked, b"5\r\nab"),
            Err(BodyError::Truncated)
        ));
    }

    #[test]
    fn length_and_close() {
        let (b, rest) = read_all(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!((b.as_slice(), rest.as_slice()), (&b"abc"[..], &b"def"[..]));
        assert!(matches!(
            read_all(Framing::Length(9), b"abc"),
            Err(BodyError::Truncated)
        ));
        let (b, _) = read_all(Framing::Close, b"all of it").unwrap();
        assert_eq!(b, b"all of it");
    }

    #[test]
    fn framing_rules() {
        let mut req = RequestHead::new("POST", "/");
        assert_eq!(Framing::of_request(&req).unwrap(), Framing::Empty);
        req.headers.push("Content-Length", "5, 5");
        assert_eq!(Framing::of_request(&req).unwrap(), Framing::Length(5));
        req.headers.push("Transfer-Encoding", "chunked");
        assert!(Framing::of_request(&req).is_err());
        let mut bad = RequestHead::new("POST", "/");
        bad.headers.push("Content-Length", "-1");
        assert!(Framing::of_request(&bad).is_err());
        let mut res = ResponseHead::new(200);
        assert_eq!(Framing::of_response(&res, "GET").unwrap(), Framing::Close);
        assert_eq!(Framing::of_response(&res, "HEAD").unwrap(), Framing::Empty);
        res.headers.push("Transfer-Encoding", "gzip, chunked");
        assert_eq!(Framing::of_response(&res, "GET").unwrap(), Framing::Chunked);
        assert_eq!(
            Framing::of_response(&ResponseHead::new(304), "GET").unwrap(),
            Framing::Empty
        );
    }

    #[test]
    fn chunked_round_trip() {
        let mut out = Vec::new();
        BodyWriter::Chunked.encode(b"hello", &mut out);
        BodyWriter::Chunked.encode(b"", &mut out);
        BodyWriter::Chunked.encode(&[7u8; 300], &mut out);
        BodyWriter::Chunked.finish(&mut out);
        let (b, _) = read_all(Framing::Chunked, &out).unwrap();
        assert_eq!(&b[..5], b"hello");
        assert_eq!(b.len(), 305);
    }
}

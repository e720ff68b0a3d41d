//! Request and response heads: parsing with limits, and serialisation.

use smol::io::AsyncRead;
use std::{fmt, io};

use super::{Headers, Reader, BUFFER_BYTES};

/// The most header fields a head may have. httparse fills an array of this many on the
/// stack for each parse, instead of a heap allocation per request.
pub const MAX_HEADERS: usize = 128;

/// Bounds on what a peer may send in one message head.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest head, request line and fields together.
    pub max_head_bytes: usize,
    /// The most header fields (at most 128).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: BUFFER_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Parses a whole request head at the front of `buf`, with its length; `None` while partial.
fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw[..limits.max_headers.min(MAX_HEADERS)]);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor_version: req.version.unwrap_or(1),
                headers: collect_headers(req.headers),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(malformed(e)),
    }
}

/// Parses a whole response head at the front of `buf`, with its length; `None` while partial.
fn parse_response(buf: &[u8], limits: &Limits) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw[..limits.max_headers.min(MAX_HEADERS)]);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            ResponseHead {
                minor_version: res.version.unwrap_or(1),
                status: res.code.unwrap_or(0),
                reason: res.reason.unwrap_or_default().to_string(),
                headers: collect_headers(res.headers),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(malformed(e)),
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The stream failed.
    Io(io::Error),
    /// The bytes are not an HTTP/1.x head; the text says which part is wrong.
    Malformed(&'static str),
    /// The head is larger than [`Limits::max_head_bytes`].
    TooLarge,
    /// The head has more fields than [`Limits::max_headers`].
    TooManyHeaders,
    /// The stream ended in the middle of a head.
    Truncated,
}

impl HeadError {
    /// The status a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Io(e) => write!(f, "reading the message head: {e}"),
            HeadError::Malformed(what) => write!(f, "malformed message head: invalid {what}"),
            HeadError::TooLarge => write!(f, "message head larger than the limit"),
            HeadError::TooManyHeaders => write!(f, "more header fields than the limit"),
            HeadError::Truncated => write!(f, "connection closed inside a message head"),
        }
    }
}

impl std::error::Error for HeadError {}

fn malformed(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("header value"),
        httparse::Error::NewLine => HeadError::Malformed("line ending"),
        httparse::Error::Status => HeadError::Malformed("status"),
        httparse::Error::Token => HeadError::Malformed("token"),
        httparse::Error::Version => HeadError::Malformed("version"),
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Headers {
    let bytes = raw.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut headers = Headers::with_capacity(raw.len(), bytes);
    for h in raw {
        headers.push(h.name, h.value);
    }
    headers
}

/// A request line and its header fields.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method, exactly as sent (case matters: `get` is not `GET`).
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The minor HTTP version: 0 or 1.
    pub minor_version: u8,
    /// The header fields.
    pub headers: Headers,
}

impl RequestHead {
    /// A HTTP/1.1 request head with no fields.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_string(),
            target: target.to_string(),
            minor_version: 1,
            headers: Headers::new(),
        }
    }

    /// Whether the connection may carry another request after this one's response.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.headers.has_token("connection", "keep-alive")
        } else {
            !self.headers.has_token("connection", "close")
        }
    }

    /// Whether the client asks to switch protocols (`Connection: Upgrade`).
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("connection", "upgrade") && self.headers.contains("upgrade")
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target, without the `?`.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Serialises the head, ending with the empty line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_line(out, "");
        self.headers.write_to(out);
        out.extend_from_slice(b"\r\n");
    }

    /// Serialises the head as another server gets it: `prefix` before the target, `host` as
    /// the only `Host` field.
    pub fn write_for(&self, out: &mut Vec<u8>, prefix: &str, host: &str) {
        self.write_line(out, prefix);
        self.headers.write_except(out, "host");
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }

    fn write_line(&self, out: &mut Vec<u8>, prefix: &str) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor_version == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
    }
}

/// A status line and its header fields.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// The minor HTTP version: 0 or 1.
    pub minor_version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields.
    pub headers: Headers,
}

impl ResponseHead {
    /// A HTTP/1.1 response head with the standard reason phrase and no fields.
    pub fn new(status: u16) -> Self {
        Self {
            minor_version: 1,
            status,
            reason: super::reason_phrase(status).to_string(),
            headers: Headers::new(),
        }
    }

    /// Whether the body is gzip (`Content-Encoding: gzip`).
    pub fn is_gzip(&self) -> bool {
        self.headers
            .get_str("content-encoding")
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip"))
    }

    /// The head a proxy sends on for this one: HTTP/1.1, the same status and reason, the
    /// end-to-end fields; when the proxy sends a body other than the one described (unpacked
    /// or rewritten), without `Content-Encoding` and `Content-Length`.
    pub fn relayed(&self, new_body: bool) -> ResponseHead {
        let mut head = ResponseHead {
            minor_version: 1,
            status: self.status,
            reason: self.reason.clone(),
            headers: self.headers.clone(),
        };
        head.headers.strip_hop_by_hop(false);
        if new_body {
            head.headers.remove("content-encoding");
            head.headers.remove("content-length");
        }
        head
    }

    /// Whether the server lets the connection carry another request.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.headers.has_token("connection", "keep-alive")
        } else {
            !self.headers.has_token("connection", "close")
        }
    }

    /// Serialises the head, ending with the empty line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.minor_version == 0 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        {
            use std::io::Write;
            let _ = write!(out, "{}", self.status);
        }
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.headers.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads one request head. `Ok(None)` means the peer closed the connection cleanly
    /// before sending a byte of a new request.
    pub async fn read_request_head(
        &mut self,
        limits: &Limits,
    ) -> Result<Option<RequestHead>, HeadError> {
        loop {
            // RFC 9112 §2.2: a server should ignore empty lines before a request line.
            let skip = self
                .buffered()
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.consume(skip);
            if !self.buffered().is_empty() {
                if let Some((head, n)) = parse_request(self.buffered(), limits)? {
                    if n > limits.max_head_bytes {
                        return Err(HeadError::TooLarge);
                    }
                    self.consume(n);
                    return Ok(Some(head));
                }
                if self.buffered().len() >= limits.max_head_bytes || self.is_full() {
                    return Err(HeadError::TooLarge);
                }
            }
            match self.fill().await {
                Ok(0) if self.buffered().is_empty() => return Ok(None),
                Ok(0) => return Err(HeadError::Truncated),
                Ok(_) => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Reads one response head.
    pub async fn read_response_head(&mut self, limits: &Limits) -> Result<ResponseHead, HeadError> {
        loop {
            if !self.buffered().is_empty() {
                if let Some((head, n)) = parse_response(self.buffered(), limits)? {
                    if n > limits.max_head_bytes {
                        return Err(HeadError::TooLarge);
                    }
                    self.consume(n);
                    return Ok(head);
                }
                if self.buffered().len() >= limits.max_head_bytes || self.is_full() {
                    return Err(HeadError::TooLarge);
                }
            }
            match self.fill().await {
                Ok(0) => return Err(HeadError::Truncated),
                Ok(_) => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        smol::block_on(Reader::new(wire).read_request_head(&Limits::default()))
    }

    #[test]
    fn a_relayed_head_keeps_end_to_end_fields_only() {
        let mut up = ResponseHead::new(200);
        up.minor_version = 0;
        up.reason = "Fine".into();
        for (n, v) in [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "20"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Audit-Id", "a"),
        ] {
            up.headers.push(n, v);
        }
        assert!(up.is_gzip());
        let mut out = Vec::new();
        up.relayed(false).write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\nAudit-Id: a\r\n\r\n"
        );
        let unpacked = up.relayed(true);
        assert!(!unpacked.is_gzip());
        assert_eq!(unpacked.headers.get_str("content-length"), None);
        assert_eq!(unpacked.headers.get_str("audit-id"), Some("a"));
    }

    #[test]
    fn parses_a_request_and_keeps_the_rest_buffered() {
        let wire = b"\r\nPOST /x?a=b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
        let mut r = Reader::new(&wire[..]);
        let head = smol::block_on(r.read_request_head(&Limits::default()))
            .unwrap()
            .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path(), "/x");
        assert_eq!(head.query(), "a=b");
        assert!(head.keep_alive());
        assert_eq!(r.buffered(), b"hi");
    }

    #[test]
    fn clean_close_is_none_and_partial_close_is_truncated() {
        assert!(parse(b"").unwrap().is_none());
        assert!(matches!(parse(b"GET / HT"), Err(HeadError::Truncated)));
    }

    #[test]
    fn limits_map_to_431_and_garbage_to_400() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).unwrap_err().status(), 431);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 70 * 1024));
        assert_eq!(parse(&big).unwrap_err().status(), 431);
        assert_eq!(
            parse(b"\x16\x03\x01\x00\r\n\r\n").unwrap_err().status(),
            400
        );
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 400);
    }

    #[test]
    fn http10_keep_alive_needs_the_token() {
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
        let h = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive());
    }

    #[test]
    fn response_heads_round_trip() {
        let mut head = ResponseHead::new(201);
        head.headers.push("Content-Length", "0");
        let mut out = Vec::new();
        head.write_to(&mut out);
        assert_eq!(out, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        let mut r = Reader::new(&out[..]);
        let back = smol::block_on(r.read_response_head(&Limits::default())).unwrap();
        assert_eq!(back.status, 201);
        assert_eq!(back.headers.get_str("content-length"), Some("0"));
    }
}

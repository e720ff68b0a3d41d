//! The fake apiserver's own small HTTP/1.1 server side, written apart from the hub's parser
//! so that a bug in one is not hidden by the same bug in the other. Framing follows Go's
//! net/http as kube-apiserver uses it: bodies up to 2 KiB get a Content-Length, larger ones
//! are chunked in 2048-byte chunks.

use flate2::write::GzEncoder;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io::{self, Write};

/// The size above which kube-apiserver compresses a response when the client accepts gzip.
pub const GZIP_THRESHOLD: usize = 128 * 1024;

/// A request as the fake sees it.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Raw target (path and query).
    pub target: String,
    /// Decoded path.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first field called `name`, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query value of `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a boolean query flag is set (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.query(key), Some("true") | Some("1"))
    }

    /// Whether the client accepts gzip.
    pub fn accepts_gzip(&self) -> bool {
        self.header("accept-encoding")
            .is_some_and(|v| v.split(',').any(|c| c.trim().starts_with("gzip")))
    }
}

/// Percent-decoding with `+` as space (query) or not (path).
pub fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A buffered server-side connection.
pub struct Conn<S> {
    /// The stream.
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.stream.read(&mut tmp).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n > 0)
    }

    /// Bytes received but not yet consumed (after an upgrade: the first tunnel bytes).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads one request; `None` when the client closed between requests.
    pub async fn read_request(&mut self) -> io::Result<Option<Request>> {
        let (head_len, mut req) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = parsed
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let target = parsed.path.unwrap_or("/").to_string();
                let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
                let req = Request {
                    method: parsed.method.unwrap_or("").to_string(),
                    path: decode(raw_path, false),
                    query: raw_query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            (decode(k, true), decode(v, true))
                        })
                        .collect(),
                    target: target.clone(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (n, req);
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        self.buf.drain(..head_len);
        if req
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if !self.fill().await? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill().await? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                if size == 0 {
                    // No trailers are sent by the hub; the empty line ends the body.
                    self.buf.drain(..2);
                    break;
                }
                req.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while self.buf.len() < len {
                if !self.fill().await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            req.body = self.buf.drain(..len).collect();
        }
        Ok(Some(req))
    }
}

/// A response about to be written.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields (framing fields are added when written).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serialises a status line and fields.
pub fn head_bytes(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `resp` framed like Go's net/http, gzipping bodies over 128 KiB when `gzip_ok`.
/// Returns the body bytes written (after compression, before chunk framing).
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut resp: Response,
    gzip_ok: bool,
    head_only: bool,
) -> io::Result<usize> {
    if gzip_ok && resp.body.len() > GZIP_THRESHOLD {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&resp.body)?;
        resp.body = enc.finish()?;
        resp.headers
            .push(("Content-Encoding".into(), "gzip".into()));
        resp.headers.push(("Vary".into(), "Accept-Encoding".into()));
    }
    let chunked = resp.body.len() > 2048;
    if chunked {
        resp.headers
            .push(("Transfer-Encoding".into(), "chunked".into()));
    } else if resp.status != 204 && resp.status != 304 {
        resp.headers
            .push(("Content-Length".into(), resp.body.len().to_string()));
    }
    let mut out = head_bytes(resp.status, &resp.headers);
    if !head_only {
        if chunked {
            for c in resp.body.chunks(2048) {
                out.extend_from_slice(&chunk(c));
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(&resp.body);
        }
    }
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(if head_only { 0 } else { resp.body.len() })
}

/// Decompresses a gzip body, of one member or several (RFC 1952 §2.2; kube-apiserver 1.37
/// sends a watch-list as one member per event), with flate2, independent of the hub's
/// decoder.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// What the whole gzip members at the front of `data` hold: a stream read so far may end
/// inside a member.
pub fn gunzip_so_far(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out);
    out
}

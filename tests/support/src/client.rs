//! A blocking HTTP/1.1 client for tests, apart from the hub's own code.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A whole response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first field called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An open response whose body is read as it arrives.
pub struct ResponseStream {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    pending: Vec<u8>,
    done: bool,
}

fn read_head<R: Read>(reader: &mut BufReader<R>) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

impl ResponseStream {
    /// The first field called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of body (one chunk when chunked); `None` at the end.
    pub fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if !self.chunked {
            let mut buf = vec![0u8; 16 * 1024];
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            buf.truncate(n);
            return Ok(Some(buf));
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(
            |_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}")),
        )?;
        let mut data = vec![0u8; size + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(size);
        if size == 0 {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// The next `\n`-terminated line of the body (a watch event, a log line).
    pub fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(p) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=p).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..p]).into_owned()));
            }
            match self.next_piece()? {
                Some(p) => self.pending.extend(p),
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    return Ok(Some(
                        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
                    ))
                }
            }
        }
    }

    /// The rest of the body.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.pending);
        while let Some(p) = self.next_piece()? {
            out.extend(p);
        }
        Ok(out)
    }

    /// Sets how long a read may block.
    pub fn set_timeout(&self, d: Duration) {
        let _ = self.reader.get_ref().set_read_timeout(Some(d));
    }

    /// The underlying socket.
    pub fn socket(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

fn write_request<W: Write>(
    stream: &mut W,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: yurthub\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)
}

/// Sends a request and returns the response with its body still to be read.
pub fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<ResponseStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write_request(&mut stream, method, path, headers, body)?;
    let mut reader = BufReader::new(stream);
    let (mut status, mut headers) = read_head(&mut reader)?;
    // Interim answers (100 Continue) precede the real one.
    while (100..200).contains(&status) && status != 101 {
        (status, headers) = read_head(&mut reader)?;
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let mut s = ResponseStream {
        status,
        headers,
        reader,
        chunked,
        pending: Vec::new(),
        done: false,
    };
    if method == "HEAD" || status == 204 || status == 304 {
        s.done = true;
    } else if let (false, Some(len)) = (chunked, length) {
        let mut body = vec![0u8; len as usize];
        s.reader.read_exact(&mut body)?;
        s.pending = body;
        s.done = true;
    }
    Ok(s)
}

/// Opens a watch (or any streamed GET) as `user_agent`; the events are read with
/// [`ResponseStream::next_line`].
pub fn watch(addr: SocketAddr, path: &str, user_agent: &str) -> ResponseStream {
    open(addr, "GET", path, &[("User-Agent", user_agent)], b"")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Sends a request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = open(addr, method, path, headers, body)?;
    let body = s.read_to_end()?;
    Ok(HttpResponse {
        status: s.status,
        headers: s.headers,
        body,
    })
}

/// `GET path` with a User-Agent.
pub fn get(addr: SocketAddr, path: &str, user_agent: &str) -> HttpResponse {
    request(addr, "GET", path, &[("User-Agent", user_agent)], b"")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A kept-alive connection sending one request after another (plain or TLS).
pub struct Session<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Session<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes (one or several pipelined requests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)?;
        self.reader.get_mut().flush()
    }

    /// Reads the next whole response (Content-Length or chunked).
    pub fn read_response(&mut self) -> io::Result<HttpResponse> {
        let (status, headers) = read_head(&mut self.reader)?;
        let resp = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let mut body = Vec::new();
        if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            let mut line = String::new();
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk"))?;
                let mut data = vec![0u8; size + 2];
                self.reader.read_exact(&mut data)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&data[..size]);
            }
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(HttpResponse { body, ..resp })
    }

    /// Sends a request (with `Content-Length` for a body or a write) and reads the whole
    /// response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        write_request(self.reader.get_mut(), method, path, headers, body)?;
        self.reader.get_mut().flush()?;
        self.read_response()
    }

    /// Sends `GET path` and reads the whole response.
    pub fn get(&mut self, path: &str, user_agent: &str) -> io::Result<HttpResponse> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {user_agent}\r\nAccept: application/json\r\n\r\n");
        self.write_raw(req.as_bytes())?;
        self.read_response()
    }
}

/// A blocking TLS connection to `addr` verified by `ca_pem`, presenting no certificate.
pub fn tls_connect_anonymous(
    addr: SocketAddr,
    ca_pem: &str,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    tls_connect_with(addr, ca_pem, None)
}

/// A blocking TLS connection to the test apiserver presenting `client_pem` (cert and key).
pub fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    client_pem: &str,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    tls_connect_with(addr, ca_pem, Some(client_pem))
}

fn tls_connect_with(
    addr: SocketAddr,
    ca_pem: &str,
    client_pem: Option<&str>,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(io::Error::other)?)
        .map_err(io::Error::other)?;
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_root_certificates(roots);
    let mut cfg = match client_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(io::Error::other)?;
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(io::Error::other)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(io::Error::other)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        ServerName::IpAddress(addr.ip().into()),
    )
    .map_err(io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

//! Connections to the cloud apiservers: TLS with the node's client certificate or CA-only for
//! pods' bearer tokens, a keep-alive pool per server and identity, `rr`/`priority` balancing,
//! and the Accept/encoding negotiation for the responses the hub reads.

mod leaders;
mod negotiate;
mod pool;
mod server_url;
mod tls;

pub use leaders::Leaders;
pub use negotiate::{negotiate, Negotiated};
pub use pool::{dial, Connection, TlsConn};
pub use server_url::{LbMode, ServerUrl};
pub use tls::{client_config, insecure_config, read_certs, read_identity, Tls, TlsError};

use smol::io::{AsyncRead, AsyncWriteExt};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::http::{BodyReader, BodyWriter, Framing, Limits, Reader, RequestHead, ResponseHead};

/// Which TLS identity a request travels with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The node's client certificate: requests without credentials of their own.
    Node,
    /// No client certificate: the request carries a pod's bearer token, passed through.
    /// (kube-apiserver tries client certificates before tokens, so the two never share a
    /// connection.)
    Bearer,
}

/// Why no server gave an answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// There was no server to try (none configured, or none healthy).
    NoServer,
    /// Every server tried failed; the last one and what happened there.
    Failed {
        /// The server's URL.
        server: String,
        /// What happened.
        error: ServerFailure,
    },
    /// The health prober found the cloud unreachable while the request waited.
    CloudGone,
    /// The request body could not be read from the client.
    ClientBody(crate::http::BodyError),
}

/// What went wrong with one server.
#[derive(Debug)]
pub enum ServerFailure {
    /// Connecting, the TLS handshake, or the exchange failed.
    Io(io::Error),
    /// Its answer's head is malformed.
    Head(crate::http::HeadError),
    /// Its answer's framing is not understood.
    Framing(crate::http::BodyError),
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerFailure::Io(e) => write!(f, "{e}"),
            ServerFailure::Head(e) => write!(f, "{e}"),
            ServerFailure::Framing(e) => write!(f, "bad response framing: {e}"),
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Upstream's words first: clients and operators grep for them.
        const NONE: &str = "no healthy backends available";
        match self {
            UpstreamError::NoServer => write!(f, "{NONE}: no server configured"),
            UpstreamError::Failed { server, error } => write!(f, "{NONE}: {server}: {error}"),
            UpstreamError::CloudGone => write!(f, "{NONE}: the cloud became unreachable"),
            UpstreamError::ClientBody(e) => write!(f, "reading the request body: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Why one of the hub's own requests ([`Upstream::fetch`]) got no whole answer.
#[derive(Debug)]
pub enum FetchError {
    /// The server could not be reached or did not answer.
    Unreachable(UpstreamError),
    /// The answer's body broke off.
    Body(crate::http::BodyError),
    /// The answer is larger than the hub reads for itself.
    TooLarge,
    /// No whole answer within the timeout.
    Timeout(std::time::Duration),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "{e}"),
            Self::Body(e) => write!(f, "{e}"),
            Self::TooLarge => write!(f, "response too large"),
            Self::Timeout(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// A request body on its way up.
pub enum Body<'a, R> {
    /// No body.
    Empty,
    /// A body read completely beforehand; it can be sent again to another server.
    Buffered(&'a [u8]),
    /// A body streamed from the client; once a byte is sent there is no second try.
    Streamed {
        /// The client's body framing state.
        body: &'a mut BodyReader,
        /// The client connection.
        source: &'a mut Reader<R>,
        /// How the body goes up.
        writer: BodyWriter,
    },
}

/// An upstream answer whose head has arrived; the body is still on the wire.
pub struct Response {
    /// The status line and fields.
    pub head: ResponseHead,
    /// How to read the body from `conn`.
    pub body: BodyReader,
    /// The connection, to be given back with [`Upstream::release`] once the body is read.
    pub conn: Connection,
    /// The server that answered, as an index into the configured list.
    pub server: usize,
}

/// The cloud side: servers, pools and the TLS identities.
pub struct Upstream {
    servers: Vec<pool::Server>,
    lb_mode: LbMode,
    cursor: AtomicUsize,
    tls: RwLock<Arc<Tls>>,
}

fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE")
}

impl Upstream {
    /// The upstream side for `servers`, using `tls` for every connection.
    pub fn new(servers: &[ServerUrl], lb_mode: LbMode, tls: Tls) -> Self {
        Self {
            servers: servers.iter().cloned().map(pool::Server::new).collect(),
            lb_mode,
            cursor: AtomicUsize::new(0),
            tls: RwLock::new(Arc::new(tls)),
        }
    }

    /// The upstream side for `servers` (round robin) with `other`'s TLS identities as they
    /// are now: a follower's leader hubs, reached as the node.
    pub fn sharing_tls(servers: &[ServerUrl], other: &Upstream) -> Self {
        Self {
            servers: servers.iter().cloned().map(pool::Server::new).collect(),
            lb_mode: LbMode::RoundRobin,
            cursor: AtomicUsize::new(0),
            tls: RwLock::new(other.tls()),
        }
    }

    /// How many servers are configured.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether no server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The configured servers.
    pub fn server_urls(&self) -> impl Iterator<Item = &ServerUrl> {
        self.servers.iter().map(|s| &s.url)
    }

    /// Replaces the TLS identities (after a certificate rotation) and closes every pooled
    /// connection, so that new ones present the new certificate.
    pub fn set_tls(&self, tls: Tls) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tls);
        for s in &self.servers {
            s.clear();
        }
    }

    /// The TLS identities in use.
    pub fn tls(&self) -> Arc<Tls> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The order in which servers are tried for the next request.
    pub fn order(&self) -> Vec<usize> {
        let n = self.servers.len();
        let start = match self.lb_mode {
            LbMode::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % n.max(1),
            LbMode::Priority => 0,
        };
        (0..n).map(|i| (start + i) % n).collect()
    }

    /// A connection to `server`: a pooled one if a live one is idle, else a new one.
    pub async fn checkout(&self, server: usize, id: Identity) -> io::Result<(Connection, bool)> {
        let s = &self.servers[server];
        if let Some(conn) = s.take_idle(id) {
            return Ok((conn, true));
        }
        let conn = pool::connect(s, server, id, &self.tls()).await?;
        Ok((conn, false))
    }

    /// Gives a connection whose response was read completely back to its pool.
    pub fn release(&self, conn: Connection) {
        if let Some(s) = self.servers.get(conn.server) {
            s.put_idle(conn, &self.tls());
        }
    }

    /// Connections open to each server (upstream's "closable" connections), by authority.
    pub fn open_connections(&self) -> Vec<(String, usize)> {
        self.servers
            .iter()
            .map(|s| (s.url.authority(), s.open_len()))
            .collect()
    }

    /// How many connections sit idle in the pools (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.servers.iter().map(pool::Server::idle_len).sum()
    }

    /// Sends a request to the servers in balancing order and returns the first answer's head.
    ///
    /// A server that refuses the connection is skipped. A pooled connection that turns out
    /// dead is replaced once for an idempotent request with a replayable body.
    pub async fn send<R: AsyncRead + Unpin>(
        &self,
        head: &RequestHead,
        body: Body<'_, R>,
        id: Identity,
    ) -> Result<Response, UpstreamError> {
        self.send_on(self.order(), head, body, id, false).await
    }

    /// Like [`Upstream::send`], trying only `servers`, in that order.
    pub async fn send_via<R: AsyncRead + Unpin>(
        &self,
        servers: Vec<usize>,
        head: &RequestHead,
        body: Body<'_, R>,
        id: Identity,
    ) -> Result<Response, UpstreamError> {
        self.send_on(servers, head, body, id, false).await
    }

    /// Sends an upgrade request (exec, attach, port-forward) on a connection of its own; the
    /// caller splices the streams once the answer is `101 Switching Protocols`.
    pub async fn upgrade(
        &self,
        head: &RequestHead,
        id: Identity,
    ) -> Result<Response, UpstreamError> {
        self.send_on::<&[u8]>(self.order(), head, Body::Empty, id, true)
            .await
    }

    async fn send_on<R: AsyncRead + Unpin>(
        &self,
        servers: Vec<usize>,
        head: &RequestHead,
        mut body: Body<'_, R>,
        id: Identity,
        fresh: bool,
    ) -> Result<Response, UpstreamError> {
        let mut last = UpstreamError::NoServer;
        for server in servers {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let url = &self.servers[server].url;
                let checked_out = if fresh {
                    pool::connect(&self.servers[server], server, id, &self.tls())
                        .await
                        .map(|c| (c, false))
                } else {
                    self.checkout(server, id).await
                };
                let (mut conn, reused) = match checked_out {
                    Ok(c) => c,
                    Err(e) => {
                        // Every caller reports the failure (a request's line, the health state line).
                        log::debug!("upstream {} unreachable: {e}", self.servers[server].url);
                        last = UpstreamError::Failed {
                            server: self.servers[server].url.to_string(),
                            error: ServerFailure::Io(e),
                        };
                        break;
                    }
                };
                let replayable = !matches!(body, Body::Streamed { .. });
                let s = &self.servers[server];
                let to = Some((url.path_prefix.as_str(), s.host.as_str()));
                match exchange(&mut conn.reader, head, to, &mut body).await {
                    Ok(resp_head) => {
                        let framing =
                            Framing::of_response(&resp_head, &head.method).map_err(|e| {
                                UpstreamError::Failed {
                                    server: url.to_string(),
                                    error: ServerFailure::Framing(e),
                                }
                            })?;
                        return Ok(Response {
                            head: resp_head,
                            body: BodyReader::new(framing),
                            conn,
                            server,
                        });
                    }
                    Err(ExchangeError::Client(e)) => return Err(UpstreamError::ClientBody(e)),
                    Err(ExchangeError::Server(e)) => {
                        log::debug!("upstream {} failed: {e}", self.servers[server].url);
                        last = UpstreamError::Failed {
                            server: self.servers[server].url.to_string(),
                            error: e,
                        };
                        if reused && replayable && idempotent(&head.method) && attempts < 2 {
                            continue;
                        }
                        if !replayable || !idempotent(&head.method) {
                            return Err(last);
                        }
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// The most bytes [`Upstream::fetch`] reads of a body.
const MAX_FETCH_BYTES: usize = 4 * 1024 * 1024;

impl Upstream {
    /// The hub's own request to one server with the node identity: sends `method path` with an
    /// optional JSON body and reads the whole (bounded) answer, all within `timeout`.
    pub async fn fetch(
        &self,
        server: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: std::time::Duration,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        self.fetch_as(server, method, path, body, "application/json", timeout)
            .await
    }

    /// [`Upstream::fetch`] asking for `accept` (e.g. PartialObjectMetadataList, names only).
    pub async fn fetch_as(
        &self,
        server: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        accept: &str,
        timeout: std::time::Duration,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let body = body.map(|b| (b, "application/json"));
        self.fetch_typed(server, method, path, body, accept, timeout)
            .await
    }

    /// [`Upstream::fetch`] with a body of its own content type (a merge patch, say).
    pub async fn fetch_typed(
        &self,
        server: usize,
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
        accept: &str,
        timeout: std::time::Duration,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let work = async {
            let mut head = RequestHead::new(method, path);
            head.headers.push("User-Agent", crate::kube::HUB_USER_AGENT);
            head.headers.push("Accept", accept);
            let body = match body {
                Some((b, content_type)) => {
                    head.headers.push("Content-Type", content_type);
                    head.headers.push("Content-Length", b.len().to_string());
                    Body::Buffered(b)
                }
                None => Body::Empty,
            };
            let mut resp = self
                .send_on::<&[u8]>(vec![server], &head, body, Identity::Node, false)
                .await
                .map_err(FetchError::Unreachable)?;
            let mut out = Vec::new();
            loop {
                let n = resp
                    .body
                    .read(&mut resp.conn.reader, &mut out)
                    .await
                    .map_err(FetchError::Body)?;
                if n == 0 {
                    break;
                }
                if out.len() > MAX_FETCH_BYTES {
                    return Err(FetchError::TooLarge);
                }
            }
            let status = resp.head.status;
            if resp.head.keep_alive() {
                self.release(resp.conn);
            }
            Ok((status, out))
        };
        smol::future::or(work, async {
            async_io::Timer::after(timeout).await;
            Err(FetchError::Timeout(timeout))
        })
        .await
    }
}

enum ExchangeError {
    Server(ServerFailure),
    Client(crate::http::BodyError),
}

/// Sends one request with a small body on a connection of its own making (see [`dial`]) and
/// reads the response head; the body is left to the caller.
pub async fn round_trip(
    conn: &mut Reader<TlsConn>,
    head: &RequestHead,
    body: &[u8],
) -> io::Result<(ResponseHead, BodyReader)> {
    let mut b = if body.is_empty() {
        Body::Empty
    } else {
        Body::Buffered(body)
    };
    let resp = exchange::<&[u8]>(conn, head, None, &mut b)
        .await
        .map_err(|e| match e {
            ExchangeError::Server(e) => io::Error::other(e.to_string()),
            ExchangeError::Client(e) => io::Error::other(e.to_string()),
        })?;
    let framing = Framing::of_response(&resp, &head.method)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((resp, BodyReader::new(framing)))
}

/// Writes the request on `conn` (for a server's path `prefix` and `host` when `to` says so)
/// and reads the response head.
async fn exchange<R: AsyncRead + Unpin>(
    conn: &mut Reader<TlsConn>,
    head: &RequestHead,
    to: Option<(&str, &str)>,
    body: &mut Body<'_, R>,
) -> Result<ResponseHead, ExchangeError> {
    let mut out = Vec::with_capacity(1024);
    match to {
        // A proxied request gets the server's path prefix and its authority as `Host`.
        Some((prefix, host)) => head.write_for(&mut out, prefix, host),
        None => head.write_to(&mut out),
    }
    let server = |e: io::Error| ExchangeError::Server(ServerFailure::Io(e));
    match body {
        Body::Empty => {}
        Body::Buffered(b) => out.extend_from_slice(b),
        Body::Streamed {
            body,
            source,
            writer,
        } => {
            let stream = conn.get_mut();
            stream.write_all(&out).await.map_err(server)?;
            let mut piece = Vec::new();
            loop {
                piece.clear();
                let n = body
                    .read(source, &mut piece)
                    .await
                    .map_err(ExchangeError::Client)?;
                out.clear();
                if n == 0 {
                    writer.finish(&mut out);
                    stream.write_all(&out).await.map_err(server)?;
                    break;
                }
                writer.encode(&piece, &mut out);
                stream.write_all(&out).await.map_err(server)?;
            }
            out.clear();
        }
    }
    let stream = conn.get_mut();
    if !out.is_empty() {
        stream.write_all(&out).await.map_err(server)?;
    }
    stream.flush().await.map_err(server)?;
    loop {
        let resp = conn
            .read_response_head(&Limits::default())
            .await
            .map_err(|e| ExchangeError::Server(ServerFailure::Head(e)))?;
        // Interim answers (100 Continue, 103 Early Hints) are consumed here; 101 is final
        // for upgrades.
        if (100..200).contains(&resp.status) && resp.status != 101 {
            continue;
        }
        return Ok(resp);
    }
}

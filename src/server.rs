//! Listeners and the per-connection loop: keep-alive, head limits and timeouts, and the one
//! place where an error becomes a `metav1.Status` response.
//!
//! A connection is read through one bounded [`Reader`]; each request head is handed to the
//! listener's [`Service`] (the [`proxy`](crate::proxy) or the [`admin`](crate::admin) server),
//! which answers it completely before the next head is read.

use async_io::{Async, Timer};
use smol::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{HeadError, Limits, Reader, RequestHead, ResponseHead};

mod refusal;

pub use refusal::Refusal;

/// What answers the requests of a listener: the proxy, or the admin server.
pub trait Service: Send + Sync + 'static {
    /// Answers one request completely; returns whether the connection may carry another.
    fn serve<'a>(
        &'a self,
        conn: &'a mut ClientConn,
        head: RequestHead,
    ) -> impl std::future::Future<Output = bool> + Send + 'a;
}

/// Whether the hub may serve its clients yet (reference §1.6): until it may, the proxy answers
/// everyone but the hub itself 503 with the reason, and `/v1/readyz` says it.
pub trait Gate: Send + Sync {
    /// `Ok` when clients may be served, else why not.
    fn check(&self) -> Result<(), NotReady>;
}

/// Why the hub does not serve its clients yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// No usable client certificate while the cloud answers; what is wrong with it.
    Certificates(String),
    /// yurt-hub-cfg has not been read.
    HubConfig,
    /// servicetopology's inputs have not synced, and it does not fail open yet; which.
    Topology(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Certificates(why) => write!(f, "certificates not ready: {why}"),
            Self::HubConfig => write!(f, "yurt-hub-cfg not synced yet"),
            Self::Topology(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for NotReady {}

/// How long a connection may wait for the client (`--idle-connection-timeout`,
/// `--request-head-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a kept-alive connection may sit without a new request.
    pub idle: Duration,
    /// How long a client may take to send a whole request head once it has started one
    /// (and a TLS client its handshake): a slowloris client is cut off after this.
    pub head: Duration,
}

impl Default for Timeouts {
    /// 90 s idle, 10 s for a head.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(90),
            head: Duration::from_secs(10),
        }
    }
}

/// A byte stream a client connection runs over (plain TCP or TLS).
pub trait Stream: smol::io::AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: smol::io::AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// One client connection: a buffered read half and a write half, so that a response can be
/// streamed while the read half watches for the client going away.
pub struct ClientConn {
    /// The buffered read side.
    pub reader: Reader<ReadHalf<Box<dyn Stream>>>,
    /// The write side.
    pub writer: WriteHalf<Box<dyn Stream>>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection came in over TLS (the secure proxy port).
    pub tls: bool,
    /// How long it may wait for the client.
    pub timeouts: Timeouts,
    /// The certificate the client presented in the TLS handshake, verified by the
    /// listener's configuration (only a listener that asks for one gets one).
    pub client_cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl ClientConn {
    /// Wraps an accepted stream.
    pub fn new(stream: Box<dyn Stream>, peer: SocketAddr, local: SocketAddr) -> Self {
        let (r, w) = smol::io::split(stream);
        Self {
            reader: Reader::new(r),
            writer: w,
            peer,
            local,
            tls: false,
            timeouts: Timeouts::default(),
            client_cert: None,
        }
    }

    /// Whether a request without credentials of its own may travel with the node's
    /// identity: only over plain HTTP from the node itself (to a loopback address, or from
    /// the very address it connected to, which only a process of the host has), never over
    /// the TLS port or from a pod (reference §13.2 item 24).
    pub fn may_use_node_identity(&self) -> bool {
        let local = self.local.ip().to_canonical();
        !self.tls && (local.is_loopback() || self.peer.ip().to_canonical() == local)
    }
}

/// Writes a complete response with a small body and flushes it.
pub async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: ResponseHead,
    body: &[u8],
) -> io::Result<()> {
    head.headers.set("Content-Length", body.len().to_string());
    let mut out = Vec::with_capacity(256 + body.len());
    head.write_to(&mut out);
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

/// Answers with the `metav1.Status` of `refusal`; `close` adds `Connection: close`.
pub async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    refusal: &Refusal,
    close: bool,
) -> io::Result<()> {
    let status = refusal.status();
    let mut head = ResponseHead::new(status.code);
    head.headers.push("Content-Type", "application/json");
    head.headers.push("Cache-Control", "no-cache, private");
    if close {
        head.headers.push("Connection", "close");
    }
    respond(w, head, &status.to_json()).await
}

/// A connection's idle timeout. Its one timer is armed once per idle period, not once per
/// request: each arming is a registration with the reactor and a wake-up of its thread.
struct IdleClock {
    timer: Timer,
}

impl IdleClock {
    fn new(idle: Duration) -> Self {
        Self {
            timer: Timer::after(idle),
        }
    }

    /// Pends until the connection has waited `idle` since `since`.
    async fn expired(&mut self, since: Instant, idle: Duration) {
        let Some(deadline) = since.checked_add(idle) else {
            // Beyond what the clock can say: never.
            return std::future::pending().await;
        };
        loop {
            let fired = (&mut self.timer).await;
            if fired >= deadline {
                return;
            }
            // It fired for an earlier wait; this one began later.
            self.timer.set_at(deadline);
        }
    }
}

/// Reads the next request head within the idle and head timeouts. `Ok(None)`: the client
/// closed or idled out between requests.
async fn next_head(
    conn: &mut ClientConn,
    idle: &mut IdleClock,
) -> Result<Option<RequestHead>, HeadError> {
    if conn.reader.buffered().is_empty() {
        let since = Instant::now();
        let idle_for = conn.timeouts.idle;
        let first = smol::future::or(async { Some(conn.reader.fill().await) }, async {
            idle.expired(since, idle_for).await;
            None
        })
        .await;
        match first {
            None | Some(Ok(0)) => return Ok(None),
            Some(Err(e)) => return Err(HeadError::Io(e)),
            Some(Ok(_)) => {}
        }
    }
    // A head usually arrives whole: only one that does not needs a timer of its own.
    let limits = Limits::default();
    if let Some(done) = smol::future::poll_once(conn.reader.read_request_head(&limits)).await {
        return done;
    }
    let head_timeout = conn.timeouts.head;
    smol::future::or(conn.reader.read_request_head(&limits), async {
        Timer::after(head_timeout).await;
        Err(HeadError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    })
    .await
}

/// Serves requests on one connection until either side ends it.
pub async fn serve_connection<S: Service>(mut conn: ClientConn, service: Arc<S>) {
    let mut idle = IdleClock::new(conn.timeouts.idle);
    loop {
        let head = match next_head(&mut conn, &mut idle).await {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(HeadError::Io(e)) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    let _ = refuse(&mut conn.writer, &Refusal::HeadTimeout, true).await;
                }
                log::debug!("connection from {}: {e}", conn.peer);
                break;
            }
            Err(e) => {
                log::info!("bad request from {}: {e}", conn.peer);
                let _ = refuse(&mut conn.writer, &Refusal::BadHead(e), true).await;
                break;
            }
        };
        // Boxed: the state of a request being served is large (relays, filters, cache tees)
        // and a connection waiting for its next head must not carry it: 2,000 idle
        // connections would otherwise cost ~30 MiB.
        if !Box::pin(service.serve(&mut conn, head)).await {
            break;
        }
    }
    let _ = conn.writer.close().await;
}

/// Accepts TLS connections on `listener` until shutdown, one task per connection; the
/// handshake must finish within the head timeout.
pub async fn serve_tls<S: Service>(
    listener: Async<TcpListener>,
    config: Arc<rustls::ServerConfig>,
    service: Arc<S>,
    timeouts: Timeouts,
) {
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    accept_loop(listener, move |stream, peer, local| {
        let acceptor = acceptor.clone();
        let service = service.clone();
        async move {
            let handshake =
                smol::future::or(async { Some(acceptor.accept(stream).await) }, async {
                    Timer::after(timeouts.head).await;
                    None
                });
            match handshake.await {
                Some(Ok(tls)) => {
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| c.clone().into_owned());
                    let mut conn = ClientConn::new(Box::new(tls), peer, local);
                    conn.tls = true;
                    conn.client_cert = client_cert;
                    conn.timeouts = timeouts;
                    serve_connection(conn, service).await;
                }
                Some(Err(e)) => log::debug!("TLS handshake with {peer}: {e}"),
                None => log::debug!("TLS handshake with {peer}: timed out"),
            }
        }
    })
    .await
}

/// Accepts plain-TCP connections on `listener` forever, one task per connection.
pub async fn serve_plain<S: Service>(
    listener: Async<TcpListener>,
    service: Arc<S>,
    timeouts: Timeouts,
) {
    accept_loop(listener, move |stream, peer, local| {
        let mut conn = ClientConn::new(Box::new(stream), peer, local);
        conn.timeouts = timeouts;
        serve_connection(conn, service.clone())
    })
    .await
}

/// Accepts connections until shutdown and spawns `handle` for each.
async fn accept_loop<F, Fut>(listener: Async<TcpListener>, handle: F)
where
    F: Fn(Async<TcpStream>, SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener
        .get_ref()
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            crate::runtime::shutting_down().await;
            None
        })
        .await;
        // On shutdown the listener is dropped: new connections are refused at once.
        let Some(accepted) = accepted else { return };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.get_ref().set_nodelay(true);
                // The address this connection reached (the listener may be a wildcard).
                let to = stream.get_ref().local_addr().unwrap_or(local);
                crate::runtime::spawn(handle(stream, peer, to)).detach();
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                log::warn!("accept on {local}: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

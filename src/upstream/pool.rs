//! Dialing and the per-server pools of idle keep-alive connections.

use async_io::{Async, Timer};
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Identity, Tls};
use crate::http::Reader;
use crate::upstream::ServerUrl;

/// The TLS stream to an apiserver.
///
/// Boxed: the TLS state is a few KiB, and a connection moves in and out of the pool and a
/// response at every request.
pub type TlsConn = Box<futures_rustls::client::TlsStream<Async<TcpStream>>>;

/// How long a TCP connect or a TLS handshake may take (upstream YurtHub: 10 s each).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections older than this are not reused: apiservers and middleboxes drop idle
/// connections, and a dead one costs a failed first request.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// The most idle connections kept per server (upstream: 25 per host).
const MAX_IDLE_PER_SERVER: usize = 25;

/// A connection to one apiserver, with its read buffer.
pub struct Connection {
    /// The buffered stream.
    pub reader: Reader<TlsConn>,
    /// Index of the server in the configured list.
    pub server: usize,
    identity: Identity,
    generation: u64,
    idle_since: Instant,
    _open: OpenGuard,
}

/// Counts a connection as open to its server until it is dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    /// Whether the peer closed (or wrote unasked) while the connection sat idle.
    fn is_stale(&self) -> bool {
        if !self.reader.buffered().is_empty() || self.idle_since.elapsed() > MAX_IDLE {
            return true;
        }
        let tcp = self.reader.get_ref().get_ref().0.get_ref();
        // The socket is non-blocking (async-io made it so): WouldBlock means nothing arrived
        // and the peer has not closed; anything else (EOF, data, an error) makes it unusable.
        !matches!(tcp.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

pub(super) struct Server {
    pub(super) url: ServerUrl,
    /// `Host` of every request to it (its authority), made once.
    pub(super) host: String,
    idle: Mutex<Vec<Connection>>,
    open: Arc<AtomicUsize>,
}

impl Server {
    pub(super) fn new(url: ServerUrl) -> Self {
        Self {
            host: url.authority(),
            url,
            idle: Mutex::new(Vec::new()),
            open: Arc::default(),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn take_idle(&self, id: Identity) -> Option<Connection> {
        let mut idle = self.idle();
        while let Some(pos) = idle.iter().rposition(|c| c.identity == id) {
            let conn = idle.swap_remove(pos);
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put_idle(&self, mut conn: Connection, tls: &Tls) {
        if conn.generation != tls.generation() || !conn.reader.buffered().is_empty() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle();
        idle.retain(|c| c.idle_since.elapsed() <= MAX_IDLE);
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push(conn);
        }
    }

    pub(super) fn clear(&self) {
        self.idle().clear();
    }

    pub(super) fn idle_len(&self) -> usize {
        self.idle().len()
    }

    /// Connections open to this server: idle, carrying a request, or tunnelling.
    pub(super) fn open_len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

async fn with_timeout<T>(
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(fut, async {
        Timer::after(DIAL_TIMEOUT).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out"),
        ))
    })
    .await
}

async fn resolve(url: &ServerUrl) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, url.port)]);
    }
    smol::net::resolve((url.host.as_str(), url.port)).await
}

/// The read buffer an upstream connection starts with (the largest TLS record's plaintext);
/// there are a few such connections, not thousands like client ones.
const UPSTREAM_READ_BYTES: usize = 16 * 1024;

/// Opens a new TLS connection to server `server` (`s`) with the identity `id`.
pub(super) async fn connect(
    s: &Server,
    server: usize,
    id: Identity,
    tls: &Tls,
) -> io::Result<Connection> {
    let stream = dial(&s.url, tls.config(id)).await?;
    Ok(Connection {
        // One TLS record's worth: a response of a few KiB arrives in one or two reads.
        reader: Reader::sized(stream, UPSTREAM_READ_BYTES, crate::http::BUFFER_BYTES),
        server,
        identity: id,
        generation: tls.generation(),
        idle_since: Instant::now(),
        _open: OpenGuard::new(&s.open),
    })
}

/// How long an upstream connection may be idle before TCP checks its peer (upstream
/// YurtHub's dialer keeps alive after 30 s): an idle-timeout NAT or load balancer (4 minutes
/// is common) never sees it idle that long.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between unanswered keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is dead: a silent peer is found within
/// 30 + 3 × 10 s, and a relayed watch on it ends (its read fails) so its client re-watches.
const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dead (keepalive only
/// probes an idle connection; without this a request to a vanished peer waits for minutes of
/// retransmissions).
const USER_TIMEOUT_MS: u32 = 60_000;

/// Sets TCP keepalive (and the unacknowledged-data timeout) on an upstream socket.
fn keep_alive(tcp: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(tcp, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(tcp, KEEPALIVE_PROBES)?;
    sockopt::set_tcp_user_timeout(tcp, USER_TIMEOUT_MS)?;
    Ok(())
}

/// Opens a TLS connection to `url` with `config`, trying each address the host resolves to;
/// connect and handshake are each bounded by the dial timeout.
pub async fn dial(url: &ServerUrl, config: Arc<ClientConfig>) -> io::Result<TlsConn> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in resolve(url).await? {
        let tcp = match with_timeout("connect", Async::<TcpStream>::connect(addr)).await {
            Ok(t) => t,
            Err(e) => {
                last = e;
                continue;
            }
        };
        tcp.get_ref().set_nodelay(true)?;
        keep_alive(tcp.get_ref())?;
        let name = match url.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(url.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let connector = TlsConnector::from(config);
        return with_timeout("TLS handshake", connector.connect(name, tcp))
            .await
            .map(Box::new);
    }
    Err(last)
}

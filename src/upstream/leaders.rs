//! A follower hub's way to its NodePool's leader hubs: the leaders that accepted the last TCP
//! check, as an [`Upstream`] over them (round robin, as upstream's leader balancer), with the
//! cloud's TLS identity: the node's client certificate, and the cluster CA to check each
//! leader's serving certificate for the address it is reached on.
//!
//! ```
//! use std::sync::Arc;
//! use yurthub::upstream::{Leaders, LbMode, Tls, Upstream};
//! # let none = std::path::Path::new("/nonexistent");
//! let tls = Tls::load(&none.join("ca.crt"), &none.join("yurthub-current.pem")).unwrap();
//! let cloud = Arc::new(Upstream::new(&[], LbMode::RoundRobin, tls));
//! let leaders = Leaders::new(cloud);
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! smol::block_on(leaders.check(&[addr], std::time::Duration::from_secs(2)));
//! assert_eq!(leaders.current().unwrap().server_urls().next().unwrap().port, addr.port());
//! drop(listener);
//! smol::block_on(leaders.check(&[addr], std::time::Duration::from_secs(2)));
//! assert!(leaders.current().is_none(), "none answers: the cloud is read instead");
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ServerUrl, Upstream};

/// The leaders a follower reads from: those that answered the last check.
pub struct Leaders {
    cloud: Arc<Upstream>,
    /// The reachable leaders, the TLS generation they were set up with, and the upstream
    /// over them (`None` when no leader answered, or the hub reads from the cloud).
    current: Mutex<(Vec<SocketAddr>, u64, Option<Arc<Upstream>>)>,
    changed: event_listener::Event,
    suspect: event_listener::Event,
}

impl Leaders {
    /// No leader yet; connections will present `cloud`'s identity.
    pub fn new(cloud: Arc<Upstream>) -> Self {
        Self {
            cloud,
            current: Mutex::new((Vec::new(), 0, None)),
            changed: event_listener::Event::new(),
            suspect: event_listener::Event::new(),
        }
    }

    /// The upstream over the leaders that answered the last check, if any did.
    pub fn current(&self) -> Option<Arc<Upstream>> {
        self.lock().2.clone()
    }

    /// Notified when the reachable leaders change: a watch of the multiplexer's own then
    /// ends, so that it starts again where it should read now.
    pub fn listen(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    /// Tells whoever runs the checks that a leader failed a request: check now.
    pub fn suspect(&self) {
        self.suspect.notify(usize::MAX);
    }

    /// Notified by [`Leaders::suspect`].
    pub fn listen_suspect(&self) -> event_listener::EventListener {
        self.suspect.listen()
    }

    /// Reads from the cloud from now on (the hub leads, or the pool has no leaders for it).
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Connects to each of `addrs` in turn (within `timeout` each: a pool has a leader or
    /// two) and keeps those that accepted; a change is logged once.
    pub async fn check(&self, addrs: &[SocketAddr], timeout: Duration) {
        let mut up = Vec::new();
        for &addr in addrs {
            let connected = smol::future::or(
                async {
                    async_io::Async::<std::net::TcpStream>::connect(addr)
                        .await
                        .is_ok()
                },
                async {
                    async_io::Timer::after(timeout).await;
                    false
                },
            );
            if connected.await {
                up.push(addr);
            }
        }
        self.set(up);
    }

    fn set(&self, up: Vec<SocketAddr>) {
        let generation = self.cloud.tls().generation();
        let mut current = self.lock();
        if current.0 == up && current.1 == generation {
            return;
        }
        let moved = current.0 != up;
        if moved {
            log::info!(
                "leader hubs reachable: {}",
                if up.is_empty() {
                    "none (pool-scope resources are read from the cloud)".to_string()
                } else {
                    up.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        let upstream = (!up.is_empty()).then(|| {
            let servers: Vec<ServerUrl> = up
                .iter()
                .map(|a| ServerUrl {
                    host: a.ip().to_string(),
                    port: a.port(),
                    path_prefix: String::new(),
                })
                .collect();
            Arc::new(Upstream::sharing_tls(&servers, &self.cloud))
        });
        *current = (up, generation, upstream);
        drop(current);
        if moved {
            self.changed.notify(usize::MAX);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<SocketAddr>, u64, Option<Arc<Upstream>>)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Leaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaders")
            .field("reachable", &self.lock().0)
            .finish()
    }
}

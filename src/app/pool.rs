//! Acting on the NodePool's leader configuration (ConfigMap `leader-hub-<pool>`, read by
//! [`Pool`]): a leader serves its pool's followers on `--multiplexer-port`; a follower checks
//! every [`CHECK_EVERY`] which of its leaders answer, and its multiplexer reads from those;
//! `pool-scoped-metadata` is the set of stores while the ConfigMap names one.

use async_io::Async;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use crate::certs::Certs;
use crate::multiplexer::leaders::{Pool, Source, CHECK_EVERY, CHECK_TIMEOUT};
use crate::multiplexer::{Multiplexer, Resource};
use crate::proxy::Followers;
use crate::server::{self, Timeouts};
use crate::upstream::{read_certs, Leaders};

/// One hub's part in its pool.
pub struct Role {
    /// The pool's configuration as read.
    pub pool: Arc<Pool>,
    /// Where a follower's multiplexer reads.
    pub leaders: Arc<Leaders>,
    /// This hub's node.
    pub node: String,
    /// `--node-ip`: a leader listens there (else on the address the ConfigMap gives it).
    pub node_ip: Option<IpAddr>,
    /// `--multiplexer-port`.
    pub port: u16,
    /// The serving certificate and the cluster CA.
    pub certs: Arc<Certs>,
    /// What answers followers on the leader's listener.
    pub followers: Arc<Followers>,
    /// The listener's timeouts.
    pub timeouts: Timeouts,
    /// The stores, whose set `pool-scoped-metadata` replaces.
    pub multiplexer: Arc<Multiplexer>,
    /// Starts a store's informer. The first ones start once the pool's configuration is
    /// known, so that a follower's first list and watch go to its leader, not the cloud.
    pub fill: Arc<dyn Fn(Arc<Resource>) + Send + Sync>,
}

/// The first re-check after a change that left no leader reachable (doubling to
/// [`CHECK_EVERY`]).
const SOON: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the stores wait for the pool's configuration before they read the cloud.
const FIRST_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Role {
    /// Follows the configuration forever.
    pub async fn run(self) {
        let first = self.pool.listen();
        if !self.pool.was_read() {
            smol::future::or(first, async {
                async_io::Timer::after(FIRST_READ_WAIT).await;
            })
            .await;
        }
        let mut started = false;
        let mut soon = SOON;
        let mut listening: Option<SocketAddr> = None;
        loop {
            let changed = self.pool.listen();
            let suspect = self.leaders.listen_suspect();
            let config = self.pool.config();
            if listening.is_none() {
                if let Some(me) = config.leaders.iter().find(|l| l.node == self.node) {
                    listening = self.serve_followers(me.address);
                }
            }
            let mut next = CHECK_EVERY;
            match config.source(&self.node) {
                Source::Leaders(leaders) => {
                    let addrs: Vec<SocketAddr> = leaders
                        .iter()
                        .map(|l| SocketAddr::new(l.address, self.port))
                        .collect();
                    self.leaders.check(&addrs, CHECK_TIMEOUT).await;
                    // A leader just named may not listen yet: soon again, then less often.
                    if self.leaders.current().is_none() {
                        next = soon;
                        soon = (soon * 2).min(CHECK_EVERY);
                    }
                }
                Source::Cloud => self.leaders.clear(),
            }
            // The ConfigMap's set while it names one, the flag's otherwise.
            let gvrs = config
                .pool_scoped
                .clone()
                .unwrap_or_else(|| self.multiplexer.flag_resources().to_vec());
            let added = self.multiplexer.set(&gvrs);
            let new = if started {
                added
            } else {
                started = true;
                self.multiplexer.resources()
            };
            for r in new {
                (self.fill)(r);
            }
            let changed = smol::future::or(
                async {
                    changed.await;
                    true
                },
                smol::future::or(
                    async {
                        // A leader that failed a request: checked now (and then soon
                        // again, as after a change, if none answers).
                        suspect.await;
                        true
                    },
                    async {
                        async_io::Timer::after(next).await;
                        false
                    },
                ),
            )
            .await;
            if changed {
                soon = SOON;
            }
        }
    }

    /// Binds the followers' listener on `--node-ip` (else `named`, the address the
    /// ConfigMap gives this hub) and serves it; `None` (tried again at the next check) when
    /// it cannot be.
    fn serve_followers(&self, named: IpAddr) -> Option<SocketAddr> {
        let ip = self.node_ip.unwrap_or(named);
        if self.node_ip.is_none() {
            log::warn!(
                "this hub leads its pool without --node-ip: followers reach it on {named}, which its serving certificate names only when given as --node-ip"
            );
        } else if ip != named {
            log::warn!(
                "{}: names this hub {named}, but it listens on --node-ip {ip}: followers will not reach it",
                self.pool.configmap()
            );
        }
        let addr = SocketAddr::new(ip, self.port);
        let tls = match follower_tls(&self.certs) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("multiplexer port: {e}; not serving followers yet");
                return None;
            }
        };
        let listener = match Async::<TcpListener>::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                log::warn!(
                    "multiplexer port: binding {addr}: {e}; tried again in {}s",
                    CHECK_EVERY.as_secs()
                );
                return None;
            }
        };
        let bound = listener.get_ref().local_addr().unwrap_or(addr);
        log::info!("serving the pool's follower hubs on https://{bound}");
        crate::runtime::spawn(server::serve_tls(
            listener,
            tls,
            self.followers.clone(),
            self.timeouts,
        ))
        .detach();
        Some(bound)
    }
}

/// The followers' listener's TLS: the serving certificate, and a client certificate
/// required and verified against the cluster CA (the follower's node certificate).
fn follower_tls(certs: &Certs) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(certs.ca_path()).map_err(|e| format!("the cluster CA: {e}"))? {
        roots.add(ca).map_err(|e| format!("the cluster CA: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("verifying followers: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs.serving_key());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

//! Wiring: builds the pieces from a [`Config`], binds the listeners and runs them.

pub mod cache_cli;
pub mod config;
mod flags;
mod hubcfg;
mod lock;
pub mod logging;
mod pool;
mod ready;
pub mod reset;

use async_io::Async;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use self::lock::{DirLock, LockError};
use self::ready::Readiness;
use self::reset::HubFiles;
use crate::admin::Admin;
use crate::filter::{FilterKind, Filters, Topology};
use crate::metrics::Metrics;
use crate::multiplexer::Multiplexer;

use self::config::{Config, WorkingMode};
use self::hubcfg::LiveConfig;
use crate::cache::seal::{SealError, Sealer};
use crate::cache::store::Recovery;
use crate::cache::tokens::Tokens;
use crate::cache::{Agents, Cache, Options, StoreError};
use crate::certs::{rebuilt, Certs};
use crate::gc::Collector;
use crate::health::{Health, Prober};
use crate::local::Local;
use crate::network::DummyIf;
use crate::proxy::{Edge, Proxy};
use crate::upstream::{Tls, TlsError, Upstream};
use crate::{notify, runtime, server};

/// The program's name and version, as `--version` prints it.
pub const VERSION: &str = concat!("yurthub ", env!("CARGO_PKG_VERSION"));

/// Why the hub could not start.
#[derive(Debug)]
pub enum StartError {
    /// The TLS material for the cloud could not be loaded.
    Tls(TlsError),
    /// The signal handlers could not be installed.
    Signals(std::io::Error),
    /// The cache directory could not be opened.
    Cache(StoreError),
    /// The key that seals cached Secrets could not be loaded.
    Seal(SealError),
    /// Another hub runs on the same directories.
    Locked(LockError),
    /// A listener could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "loading certificates: {e}"),
            StartError::Cache(e) => write!(f, "opening the cache: {e}"),
            StartError::Seal(e) => write!(f, "--encrypt-secrets-key-file: {e}"),
            StartError::Locked(e) => write!(f, "{e}"),
            StartError::Signals(e) => write!(f, "installing signal handlers: {e}"),
            StartError::Bind { addr, error } => write!(f, "binding {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// How long a shutdown lets short requests finish.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// A started hub: where it listens.
#[derive(Clone)]
pub struct Running {
    /// The plain-HTTP proxy address.
    pub proxy_addr: SocketAddr,
    /// The admin server address.
    pub admin_addr: SocketAddr,
    /// The TLS proxy address, when bound at start.
    pub secure_addr: Option<SocketAddr>,
    dummy: Option<Arc<DummyIf>>,
    cache: Option<Cache>,
    metrics: Arc<Metrics>,
    admin: Arc<Admin>,
    /// Held while the hub runs: no second hub, and no `yurthub reset`, on its directories.
    _locks: Arc<Vec<DirLock>>,
}

impl Running {
    /// Waits until every queued cache write is on disk.
    pub async fn flush(&self) {
        if let Some(cache) = self.cache.clone() {
            smol::unblock(move || cache.flush()).await;
        }
    }

    /// Stops accepting, ends watches, lets short requests finish (up to 3 s), and stops the
    /// cache writer after its last write, so the process can exit without a torn file.
    pub async fn shut_down(&self) {
        runtime::begin_shutdown();
        let deadline = std::time::Instant::now() + DRAIN;
        while self.metrics.in_flight() > 0 && std::time::Instant::now() < deadline {
            async_io::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        if let Some(cache) = self.cache.clone() {
            smol::unblock(move || cache.shutdown()).await;
        }
        if let Some(d) = self.dummy.clone() {
            if let Err(e) = smol::unblock(move || d.remove()).await {
                log::warn!("removing the dummy interface: {e}");
            }
        }
    }

    /// Logs the state (SIGUSR1): requests in flight, cache counters, server health.
    pub fn dump_state(&self) {
        let usage = self.cache.as_ref().map(|c| c.store().usage());
        let text = self.admin.render(usage.as_ref());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            log::info!("state: {line}");
        }
    }
}

fn bind(addr: SocketAddr) -> Result<Async<TcpListener>, StartError> {
    Async::<TcpListener>::bind(addr).map_err(|error| StartError::Bind { addr, error })
}

/// How often binding a proxy listener to a missing dummy address is tried again.
const REBIND_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The TLS configuration of the secure proxy port: the serving certificate that [`Certs`]
/// keeps current, ALPN http/1.1 only (upstream disables HTTP/2 there).
fn secure_config(certs: &Certs) -> Result<Arc<rustls::ServerConfig>, StartError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StartError::Tls(TlsError::Rejected(e.to_string())))?
    .with_no_client_auth()
    .with_cert_resolver(certs.serving_key());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Serves the proxy on `addr`, over TLS with `tls`. While the address is on no interface
/// (the dummy link not made yet), binding is retried every minute; `Ok(None)` then.
fn serve_proxy_on(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    proxy: Arc<Proxy>,
    timeouts: server::Timeouts,
    what: &'static str,
) -> Result<Option<SocketAddr>, StartError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let announce = move |l: &Async<TcpListener>| {
        let bound = l.get_ref().local_addr().unwrap_or(addr);
        log::info!("serving {what} on {scheme}://{bound}");
        bound
    };
    let serve = move |l: Async<TcpListener>| {
        let proxy = proxy.clone();
        let tls = tls.clone();
        async move {
            match tls {
                Some(t) => server::serve_tls(l, t, proxy, timeouts).await,
                None => server::serve_plain(l, proxy, timeouts).await,
            }
        }
    };
    match bind(addr) {
        Ok(l) => {
            let bound = announce(&l);
            runtime::spawn(serve(l)).detach();
            Ok(Some(bound))
        }
        Err(StartError::Bind { error, .. })
            if error.kind() == std::io::ErrorKind::AddrNotAvailable =>
        {
            log::warn!(
                "{what}: {} is on no interface ({error}); nothing reaches {scheme}://{addr} until it is (retrying every {}s)",
                addr.ip(),
                REBIND_EVERY.as_secs()
            );
            runtime::spawn(async move {
                loop {
                    async_io::Timer::after(REBIND_EVERY).await;
                    if let Ok(l) = bind(addr) {
                        announce(&l);
                        serve(l).await;
                        return;
                    }
                }
            })
            .detach();
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Binds the listeners and spawns the serving tasks on the [`runtime`]; returns at once. The
/// tasks run while a thread is inside [`runtime::block_on`] (see [`run`] and
/// [`runtime::spawn_thread`]).
pub fn start(config: &Config) -> Result<Running, StartError> {
    let files = HubFiles::of(config);
    let edge = config.working_mode == WorkingMode::Edge;
    // Both locks before anything moves or loads: a second hub on either directory stops here.
    let mut locks = vec![DirLock::acquire(&files.root_dir).map_err(StartError::Locked)?];
    if edge {
        locks.push(DirLock::acquire(&files.cache_lock_dir()).map_err(StartError::Locked)?);
    }
    put_away_another_clusters_identity(config, &files, edge);
    let certs = Certs::new(config.certs_settings());
    let tls = Tls::load(certs.ca_path(), certs.client_path()).map_err(StartError::Tls)?;
    let upstream = Arc::new(Upstream::new(&config.servers, config.lb_mode, tls));
    runtime::spawn(certs.clone().run(upstream.clone())).detach();
    let mut live_agents = None;
    let edge = match config.working_mode {
        WorkingMode::Cloud => None,
        WorkingMode::Edge => {
            let sealer = match &config.encrypt_secrets_key_file {
                Some(key) => Some(Arc::new(
                    Sealer::from_key_file(key, Some(&config.disk_cache_path))
                        .map_err(StartError::Seal)?,
                )),
                None => None,
            };
            let options = Options {
                sealer,
                max_bytes: config.cache_max_bytes,
                max_body_bytes: config.max_cached_list_bytes,
                queue_jobs: 0,
                queue_bytes: 0,
            };
            let (cache, recovery) =
                Cache::open_with(&config.disk_cache_path, options).map_err(StartError::Cache)?;
            if recovery != Recovery::default() {
                log::info!(
                    "cache recovered: {} unfinished writes removed, {} unparsable files quarantined",
                    recovery.removed_temp_files,
                    recovery.quarantined
                );
            }
            let health = Arc::new(Health::new(config.servers.len()));
            let prober = Prober::new(
                config.health_settings(),
                health.clone(),
                upstream.clone(),
                Some(cache.clone()),
            );
            let gate = certs.clone();
            runtime::spawn(async move { prober.run(gate.wait_client()).await }).detach();
            let collector = Collector::new(
                config.gc_settings(),
                upstream.clone(),
                health.clone(),
                cache.clone(),
            );
            let gate = certs.clone();
            runtime::spawn(async move { collector.run(gate.wait_client()).await }).detach();
            let agents = Arc::new(RwLock::new(Agents::new(&config.node_name, "")));
            live_agents = Some(agents.clone());
            Some(Edge {
                local: Local::new(cache.clone(), health.clone(), config.min_request_timeout),
                tokens: Arc::new(Tokens::open(&config.disk_cache_path)),
                own_node: crate::proxy::OwnNode::new(&config.node_name, config.heartbeat_timeout),
                cache,
                health,
                agents,
            })
        }
    };
    let cache = edge.as_ref().map(|e| e.cache.clone());
    let health = edge.as_ref().map(|e| e.health.clone());
    let metrics = Arc::new(Metrics::default());
    let live = live_agents.map(|agents| (agents, Arc::new(AtomicBool::new(false))));
    let mut filters = Filters::new(config.filter_settings());
    let topology = filters.enabled(FilterKind::ServiceTopology).then(|| {
        Topology::new(
            &config.node_name,
            &config.nodepool_name,
            config.filter_sync_timeout,
        )
    });
    if let Some(t) = &topology {
        filters = filters.with_topology(t.clone());
    }
    let serving = certs.serving_key();
    let filters = Arc::new(filters.with_tls_listener(Arc::new(move || serving.is_set())));
    let readiness = Arc::new(Readiness {
        certs: certs.clone(),
        config_synced: live.as_ref().map(|(_, synced)| synced.clone()),
        health: health.clone(),
        topology: topology.clone(),
    });
    // The stores of pool-scope resources: only an edge hub keeps them (they answer offline).
    let multiplexer = (edge.is_some() && !config.pool_scope_resources.is_empty()).then(|| {
        Arc::new(Multiplexer::new(
            &config.node_name,
            &config.pool_scope_resources,
            crate::multiplexer::WINDOW,
        ))
    });
    let mut proxy = Proxy::new(upstream.clone(), edge, metrics.clone())
        .with_readiness(readiness.clone())
        .with_filters(filters.clone());
    if let Some(m) = &multiplexer {
        proxy = proxy.with_multiplexer(m.clone(), config.min_request_timeout);
    }
    // The pool's leader hubs share the stores' upstream reads: a hub with stores and a pool.
    let pool = (multiplexer.is_some() && !config.nodepool_name.is_empty()).then(|| {
        Arc::new(crate::multiplexer::leaders::Pool::new(
            &config.node_name,
            &config.nodepool_name,
        ))
    });
    let leaders = pool
        .as_ref()
        .map(|_| Arc::new(crate::upstream::Leaders::new(upstream.clone())));
    if let Some(l) = &leaders {
        proxy = proxy.with_leaders(l.clone());
    }
    let proxy = Arc::new(proxy);
    let admin = Arc::new(Admin {
        metrics: metrics.clone(),
        readiness,
        topology: topology.clone(),
        filters: Some(filters.clone()),
        health,
        cache: cache.clone(),
        upstream,
        certs: certs.clone(),
        ota: crate::admin::ota::Settings {
            node: config.node_name.clone(),
            manifests: config.pod_manifest_path.clone(),
            staging: config.ota_staging_dir.clone(),
        },
    });
    let admin_listener = bind(SocketAddr::new(config.bind_address, config.serve_port))?;
    let admin_addr = admin_listener
        .get_ref()
        .local_addr()
        .map_err(|error| StartError::Bind {
            addr: SocketAddr::new(config.bind_address, config.serve_port),
            error,
        })?;
    let timeouts = server::Timeouts {
        idle: config.idle_connection_timeout,
        head: config.request_head_timeout,
    };
    runtime::spawn(server::serve_plain(admin_listener, admin.clone(), timeouts)).detach();
    log::info!("serving admin on http://{admin_addr}");
    let listener = bind(SocketAddr::new(
        config.bind_proxy_address,
        config.proxy_port,
    ))?;
    let proxy_addr = listener
        .get_ref()
        .local_addr()
        .map_err(|error| StartError::Bind {
            addr: SocketAddr::new(config.bind_proxy_address, config.proxy_port),
            error,
        })?;
    runtime::spawn(server::serve_plain(listener, proxy.clone(), timeouts)).detach();
    // Pods reach the hub on the dummy address: plain on the proxy port, TLS on the secure
    // port (without the dummy interface, TLS on --bind-proxy-address).
    let dummy = config.enable_dummy_if.then(|| {
        let d = Arc::new(DummyIf::new(&config.dummy_if_name, config.dummy_if_ip));
        if let Err(e) = d.ensure() {
            log::warn!("dummy interface {}: {e}", config.dummy_if_name);
        }
        runtime::spawn(d.clone().run()).detach();
        d
    });
    let secure_ip = match &dummy {
        Some(d) => {
            serve_proxy_on(
                SocketAddr::new(d.ip(), config.proxy_port),
                None,
                proxy.clone(),
                timeouts,
                "proxy for pods",
            )?;
            d.ip()
        }
        None => config.bind_proxy_address,
    };
    let secure_addr = serve_proxy_on(
        SocketAddr::new(secure_ip, config.proxy_secure_port),
        Some(secure_config(&certs)?),
        proxy.clone(),
        timeouts,
        "TLS proxy",
    )?;
    if let Some(a) = secure_addr {
        filters.set_bound_port(a.port());
    }
    // The hub reads what it needs through its own proxy, so it is cached like the rest.
    let own = crate::informer::Source {
        proxy: SocketAddr::new(
            if config.bind_proxy_address.is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                config.bind_proxy_address
            },
            proxy_addr.port(),
        ),
        min_watch_timeout: config.informer_min_watch_timeout,
    };
    let user_agent = crate::kube::multiplexer(&config.node_name);
    let fill = move |r: Arc<crate::multiplexer::Resource>| {
        let informer = crate::informer::Informer::new(own, r.path.clone(), "multiplexer")
            .with_user_agent(user_agent.clone());
        runtime::spawn(async move {
            // A store taken out of the set stops reading.
            smol::future::or(
                informer.run(crate::multiplexer::Filler(r.clone())),
                r.wait_retired(),
            )
            .await
        })
        .detach();
    };
    if let (Some(pool), Some(leaders), Some(m)) = (pool, leaders, &multiplexer) {
        if topology.is_none() {
            log::warn!(
                "servicetopology is disabled: its NodePool informer is what tells a leader hub its pool's nodes, so this hub, if it leads, refuses every follower"
            );
        }
        let path = format!(
            "/api/v1/namespaces/{}/configmaps?fieldSelector=metadata.name%3D{}",
            config.namespace,
            pool.configmap()
        );
        let informer = crate::informer::Informer::new(own, path, "leader-hub");
        runtime::spawn(informer.run(pool.clone())).detach();
        let role = self::pool::Role {
            followers: Arc::new(crate::proxy::Followers::new(
                proxy.clone(),
                &config.node_name,
                pool.clone(),
                topology.clone(),
            )),
            pool,
            leaders,
            node: config.node_name.clone(),
            node_ip: config.node_ip,
            port: config.multiplexer_port,
            certs: certs.clone(),
            timeouts,
            multiplexer: m.clone(),
            fill: Arc::new(fill),
        };
        runtime::spawn(role.run()).detach();
    } else {
        for r in multiplexer.iter().flat_map(|m| m.resources()) {
            fill(r);
        }
    }
    if let Some(t) = topology {
        runtime::spawn(t.run(own)).detach();
    }
    if let Some((agents, synced)) = live {
        let live = LiveConfig::new(own, &config.namespace, &config.node_name, agents, synced)
            .with_filters(filters);
        runtime::spawn(live.run()).detach();
    }
    log::info!(
        "serving proxy on http://{proxy_addr} for {}",
        config
            .servers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(Running {
        proxy_addr,
        admin_addr,
        secure_addr,
        dummy,
        cache,
        metrics,
        admin,
        _locks: Arc::new(locks),
    })
}

/// Before anything is loaded: when the operator has pointed the hub at a rebuilt cluster
/// ([`rebuilt`]), the old identity and cache are moved aside and the hub bootstraps afresh.
/// The network is asked only when `--join-token` points somewhere the bootstrap kubeconfig
/// does not, and for at most [`rebuilt::DISCOVERY_WAIT`], so an offline start is not held up.
/// `f`'s answer, or `None` when the cloud does not give it within [`rebuilt::DISCOVERY_WAIT`]
/// (the network gets a bounded say: an offline start is never held up for longer).
fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> Option<T> {
    async_io::block_on(smol::future::or(f, async {
        async_io::Timer::after(rebuilt::DISCOVERY_WAIT).await;
        log::info!(
            "identity: the cluster did not answer {what} within {}s",
            rebuilt::DISCOVERY_WAIT.as_secs()
        );
        None
    }))
}

fn put_away_another_clusters_identity(config: &Config, files: &HubFiles, with_cache: bool) {
    let settings = config.certs_settings();
    let Some(old_ca) = rebuilt::old_ca(&settings) else {
        return;
    };
    let evidence = rebuilt::offline_evidence(&settings, &old_ca).or_else(|| {
        within(
            "the CA check",
            rebuilt::discovered_evidence(&settings, &old_ca),
        )
    });
    let Some(why) = evidence else {
        return;
    };
    let works = within("with the current certificate", async {
        Some(rebuilt::identity_still_works(&settings).await)
    });
    if works == Some(true) {
        log::warn!(
            "identity: {why}, but the cloud still accepts this node's certificate over pki/ca.crt: nothing moved"
        );
        return;
    }
    files.move_aside(
        &why,
        rebuilt::bootstrap_of_ca(&settings, &old_ca),
        with_cache,
    );
}

/// Starts the hub and serves until SIGTERM or SIGINT, telling systemd (when it started us)
/// when the hub is ready and when it stops.
pub fn run(config: &Config) -> Result<(), StartError> {
    use smol::stream::StreamExt;
    runtime::block_on(async {
        let mut signals = async_signal::Signals::new([
            async_signal::Signal::Term,
            async_signal::Signal::Int,
            async_signal::Signal::Usr1,
        ])
        .map_err(StartError::Signals)?;
        let running = start(config)?;
        notify::send("READY=1");
        if let Some(every) = notify::watchdog_interval() {
            runtime::spawn(notify::watchdog(every)).detach();
        }
        // The signals get a task of their own: the future given to `block_on` is polled at
        // every wake-up of the executor, and each poll of the signal pipe is a system call.
        let state = running.clone();
        runtime::spawn(async move {
            while let Some(Ok(signal)) = signals.next().await {
                if signal == async_signal::Signal::Usr1 {
                    state.dump_state();
                    continue;
                }
                log::info!("received {signal:?}: shutting down");
                break;
            }
        })
        .await;
        notify::send("STOPPING=1");
        running.shut_down().await;
        log::info!("stopped");
        Ok(())
    })
}

//! A NodePool's leader hubs, as yurt-manager's hub-leader-config controller writes them in
//! ConfigMap `<namespace>/leader-hub-<pool>` (reference §10.1): which hubs lead, whether
//! followers read from them, and the pool-scope resources (replacing
//! `--pool-scope-resources` while the ConfigMap says so).
//!
//! ```
//! use yurthub::multiplexer::leaders::{PoolConfig, Source};
//! let cm = serde_json::json!({"data": {
//!     "leaders": "edge-1/192.168.1.10,edge-2/192.168.1.11",
//!     "enable-leader-election": "true",
//!     "pool-scoped-metadata": "/v1/services,discovery.k8s.io/v1/endpointslices"}});
//! let (pool, problems) = PoolConfig::from_configmap(&cm);
//! assert!(problems.is_empty());
//! assert!(matches!(pool.source("edge-3"), Source::Leaders(l) if l.len() == 2));
//! assert!(matches!(pool.source("edge-1"), Source::Cloud));
//! assert!(pool.leads("edge-1"));
//! ```

use serde_json::Value;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::informer::Handler;

use super::{Gvr, GvrError};

/// The ConfigMap that describes `pool`'s leader hubs.
pub fn configmap_name(pool: &str) -> String {
    format!("leader-hub-{pool}")
}

/// One leader hub, as the ConfigMap names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its node's name.
    pub node: String,
    /// The address its `--multiplexer-port` listens on.
    pub address: IpAddr,
}

/// What a `leader-hub-<pool>` ConfigMap says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolConfig {
    /// The leaders, in the ConfigMap's order.
    pub leaders: Vec<Leader>,
    /// `enable-leader-election`: whether followers read from the leaders at all.
    pub election: bool,
    /// `pool-scoped-metadata`, when given (and well formed): the resources to keep stores of.
    pub pool_scoped: Option<Vec<Gvr>>,
}

/// Where a hub's multiplexer reads the pool-scope resources from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// The cloud, itself (no election, no leaders, or this hub leads).
    Cloud,
    /// One of these leaders, the cloud when none answers.
    Leaders(&'a [Leader]),
}

/// A part of the ConfigMap that cannot be used (the rest still is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A `leaders` entry that is not `nodeName/address`.
    Leader(String),
    /// `pool-scoped-metadata` names something that is not a resource the hub can keep.
    PoolScoped(GvrError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Leader(e) => write!(
                f,
                "leaders: {e:?} is not nodeName/address (e.g. edge-1/192.168.1.10); left out"
            ),
            ConfigError::PoolScoped(e) => {
                write!(
                    f,
                    "pool-scoped-metadata: {e}; the resources stay as they were"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl PoolConfig {
    /// Reads a ConfigMap object; what cannot be used is left out and told.
    pub fn from_configmap(cm: &Value) -> (PoolConfig, Vec<ConfigError>) {
        let data = |key: &str| cm["data"][key].as_str().unwrap_or("");
        let mut problems = Vec::new();
        let mut leaders: Vec<Leader> = Vec::new();
        for entry in data("leaders")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            match parse_leader(entry) {
                // The same node twice is one leader: a round robin must not favour it.
                Some(l) if leaders.iter().any(|k| k.node == l.node) => {}
                Some(l) => leaders.push(l),
                None => problems.push(ConfigError::Leader(entry.to_string())),
            }
        }
        let pool_scoped = match cm["data"].get("pool-scoped-metadata") {
            None => None,
            Some(_) => match Gvr::parse_list(data("pool-scoped-metadata")) {
                Ok(gvrs) => Some(gvrs),
                Err(e) => {
                    problems.push(ConfigError::PoolScoped(e));
                    None
                }
            },
        };
        let config = PoolConfig {
            leaders,
            election: data("enable-leader-election") == "true",
            pool_scoped,
        };
        (config, problems)
    }

    /// Whether `node`'s hub is one of the leaders (it serves the pool's followers).
    pub fn leads(&self, node: &str) -> bool {
        self.leaders.iter().any(|l| l.node == node)
    }

    /// Where `node`'s multiplexer reads from: the leaders only with election on, leaders
    /// named, and `node` not one of them (a leader reads from the cloud).
    pub fn source(&self, node: &str) -> Source<'_> {
        if self.election && !self.leaders.is_empty() && !self.leads(node) {
            Source::Leaders(&self.leaders)
        } else {
            Source::Cloud
        }
    }
}

/// How often a follower checks that its leaders answer (upstream's TCP check: 20 s).
pub const CHECK_EVERY: Duration = Duration::from_secs(20);

/// How long a follower's TCP check waits for a leader (upstream: 2 s).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The pool's leader configuration as last read, for one hub: an informer on the
/// `leader-hub-<pool>` ConfigMap feeds it (it is a [`Handler`]); whoever acts on it waits on
/// [`Pool::listen`]. No ConfigMap (none written, or deleted) is the empty configuration:
/// no leaders, the cloud.
#[derive(Debug)]
pub struct Pool {
    node: String,
    configmap: String,
    state: Mutex<(PoolConfig, Vec<ConfigError>)>,
    read: std::sync::atomic::AtomicBool,
    changed: event_listener::Event,
}

impl Pool {
    /// The configuration of `pool` as seen by the hub of `node`, empty until read.
    pub fn new(node: &str, pool: &str) -> Self {
        Self {
            node: node.to_string(),
            configmap: configmap_name(pool),
            state: Mutex::default(),
            read: Default::default(),
            changed: event_listener::Event::new(),
        }
    }

    /// The ConfigMap's name.
    pub fn configmap(&self) -> &str {
        &self.configmap
    }

    /// The configuration as last read.
    pub fn config(&self) -> PoolConfig {
        self.lock().0.clone()
    }

    /// Whether this hub is one of the pool's leaders now.
    pub fn leads(&self) -> bool {
        self.lock().0.leads(&self.node)
    }

    /// Whether the ConfigMap has been read (or found missing, or refused) once.
    pub fn was_read(&self) -> bool {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The first reading (a missing or refused ConfigMap counts: there is nothing to
    /// wait for) wakes whoever waits for it, even when it changes nothing.
    fn first_read(&self) -> bool {
        !self.read.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Notified when the configuration changes, and when it is first read.
    pub fn listen(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (PoolConfig, Vec<ConfigError>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `cm` (or its absence) as the configuration; a change is logged in one line,
    /// and what cannot be used once each time it changes.
    fn apply(&self, cm: Option<&Value>) {
        let (config, problems) = cm.map(PoolConfig::from_configmap).unwrap_or_default();
        let mut state = self.lock();
        if state.1 != problems {
            for p in &problems {
                log::warn!("{}: {p}", self.configmap);
            }
        }
        let first = self.first_read();
        if state.0 == config {
            state.1 = problems;
            drop(state);
            if first {
                self.changed.notify(usize::MAX);
            }
            return;
        }
        let role = if config.leads(&self.node) {
            "this hub leads: it serves the pool's followers"
        } else if matches!(config.source(&self.node), Source::Leaders(_)) {
            "this hub follows: pool-scope resources are read from a leader"
        } else {
            "pool-scope resources are read from the cloud"
        };
        log::info!(
            "{}: leaders [{}], leader election {}; {role}",
            self.configmap,
            config
                .leaders
                .iter()
                .map(|l| format!("{}/{}", l.node, l.address))
                .collect::<Vec<_>>()
                .join(","),
            if config.election { "on" } else { "off" }
        );
        *state = (config, problems);
        drop(state);
        self.changed.notify(usize::MAX);
    }
}

impl Handler for Pool {
    fn replace(&self, items: &[Value]) {
        self.apply(items.first());
    }

    fn upsert(&self, obj: &Value) {
        self.apply(Some(obj));
    }

    fn delete(&self, _obj: &Value) {
        self.apply(None);
    }

    fn missing(&self) {
        self.apply(None);
    }

    /// Not to be read (no RBAC for it, say): the configuration stays as it is, the
    /// cloud when never read.
    fn refused(&self, _status: u16) {
        if self.first_read() {
            self.changed.notify(usize::MAX);
        }
    }
}

/// `nodeName/address`: a node name as Kubernetes allows one, an IPv4 or IPv6 address.
fn parse_leader(entry: &str) -> Option<Leader> {
    let (node, address) = entry.split_once('/')?;
    let valid_name = !node.is_empty()
        && node.len() <= 253
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_name {
        return None;
    }
    Some(Leader {
        node: node.to_string(),
        address: address.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(data: Value) -> (PoolConfig, Vec<ConfigError>) {
        PoolConfig::from_configmap(&json!({"metadata": {"name": "leader-hub-p"}, "data": data}))
    }

    #[test]
    fn leaders_election_and_resources_read_as_the_controller_writes_them() {
        let (pool, problems) = read(json!({
            "leaders": "edge-1/192.168.1.10, edge-2/fd00::2",
            "enable-leader-election": "true",
            "interconnectivity": "true",
            "pool-scoped-metadata": "/v1/services,discovery.k8s.io/v1/endpointslices"}));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            pool.leaders,
            [
                Leader {
                    node: "edge-1".into(),
                    address: "192.168.1.10".parse().unwrap()
                },
                Leader {
                    node: "edge-2".into(),
                    address: "fd00::2".parse().unwrap()
                }
            ]
        );
        assert!(pool.election);
        assert_eq!(
            pool.pool_scoped,
            Some(Gvr::parse_list(super::super::DEFAULT_RESOURCES).unwrap())
        );
        assert_eq!(configmap_name("p"), "leader-hub-p");
    }

    #[test]
    fn followers_read_from_leaders_only_with_election_on() {
        let (pool, _) =
            read(json!({"leaders": "edge-1/10.0.0.1", "enable-leader-election": "true"}));
        assert!(matches!(pool.source("edge-2"), Source::Leaders(l) if l[0].node == "edge-1"));
        // A leader reads from the cloud, and serves the others.
        assert_eq!(pool.source("edge-1"), Source::Cloud);
        assert!(pool.leads("edge-1") && !pool.leads("edge-2"));
        let (off, _) =
            read(json!({"leaders": "edge-1/10.0.0.1", "enable-leader-election": "false"}));
        assert_eq!(off.source("edge-2"), Source::Cloud);
        let (none, _) = read(json!({"enable-leader-election": "true"}));
        assert_eq!(none.source("edge-2"), Source::Cloud);
        // No ConfigMap data at all: the cloud, the flag's resources.
        let (empty, problems) = PoolConfig::from_configmap(&json!({}));
        assert_eq!((empty, problems), (PoolConfig::default(), vec![]));
    }

    #[test]
    fn what_cannot_be_used_is_left_out_and_told() {
        let (pool, problems) = read(json!({
            "leaders": "edge-1/10.0.0.1,Edge_2/10.0.0.2,edge-3,edge-4/not-an-ip,edge-1/10.0.0.9,/10.0.0.5",
            "enable-leader-election": "true",
            "pool-scoped-metadata": "/v1/services,v1/pods"}));
        assert_eq!(pool.leaders.len(), 1, "{:?}", pool.leaders);
        assert_eq!(pool.leaders[0].address.to_string(), "10.0.0.1");
        assert_eq!(pool.pool_scoped, None, "a bad set is not applied in part");
        let told: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(told.len(), 5, "{told:?}");
        assert!(told[0].contains("\"Edge_2/10.0.0.2\""), "{told:?}");
        assert!(told[4].starts_with("pool-scoped-metadata: "), "{told:?}");
        // An empty set is a set: no stores.
        let (none, problems) = read(json!({"pool-scoped-metadata": ""}));
        assert!(problems.is_empty());
        assert_eq!(none.pool_scoped, Some(vec![]));
    }

    #[test]
    fn the_pool_follows_the_configmap_and_wakes_who_waits() {
        let pool = Pool::new("edge-2", "p");
        assert_eq!(pool.configmap(), "leader-hub-p");
        assert_eq!(pool.config(), PoolConfig::default());
        let woken = pool.listen();
        let cm = json!({"data": {"leaders": "edge-1/10.0.0.1", "enable-leader-election": "true"}});
        pool.replace(std::slice::from_ref(&cm));
        assert!(smol::block_on(async {
            smol::future::or(
                async {
                    woken.await;
                    true
                },
                async {
                    async_io::Timer::after(std::time::Duration::from_secs(5)).await;
                    false
                },
            )
            .await
        }));
        assert!(matches!(pool.config().source("edge-2"), Source::Leaders(_)));
        assert!(!pool.leads());
        // The same again is no change: nobody is woken.
        let quiet = pool.listen();
        pool.upsert(&cm);
        assert!(smol::block_on(async {
            smol::future::or(
                async {
                    quiet.await;
                    false
                },
                async {
                    async_io::Timer::after(std::time::Duration::from_millis(50)).await;
                    true
                },
            )
            .await
        }));
        pool.delete(&cm);
        assert_eq!(pool.config(), PoolConfig::default());
        let leader = Pool::new("edge-1", "p");
        leader.upsert(&cm);
        assert!(leader.leads());
    }
}

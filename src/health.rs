//! Is the cloud reachable? Decided per server by renewing the node's Lease ourselves
//! (reference §5), the same load as kubelet's own lease, and a truer test than `/healthz`.
//!
//! One failed probe (after its internal retries) makes a server unhealthy at once; it turns
//! healthy again after `--heartbeat-healthy-threshold` consecutive successes. When kubelet has
//! not touched its lease for `--kubelet-health-grace-period`, probes stop and every server
//! counts as unhealthy: a dead kubelet's node must not look alive.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::upstream::Upstream;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Where kubelet's lease is cached.
pub const LEASE_RESOURCE: &str = "leases.v1.coordination.k8s.io";

struct ServerState {
    healthy: AtomicBool,
    successes: AtomicU32,
}

/// Per-server health, shared by the prober and the router.
pub struct Health {
    servers: Vec<ServerState>,
    probed: AtomicBool,
    kubelet_seen: Mutex<Option<Instant>>,
    changed: event_listener::Event,
}

impl Health {
    /// `n` servers, all healthy until the first probe says otherwise.
    pub fn new(n: usize) -> Self {
        Self {
            servers: (0..n)
                .map(|_| ServerState {
                    healthy: AtomicBool::new(true),
                    successes: AtomicU32::new(0),
                })
                .collect(),
            kubelet_seen: Mutex::new(None),
            changed: event_listener::Event::new(),
            probed: AtomicBool::new(false),
        }
    }

    /// Waits until every server has been probed once (at start-up; immediate afterwards), so
    /// the first requests are routed by a real answer rather than a guess.
    pub async fn first_probe_done(&self) {
        // Every request asks: no listener (an allocation) once the answer is known.
        if self.probed.load(Ordering::Acquire) {
            return;
        }
        loop {
            let listener = self.changed.listen();
            if self.probed.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }

    fn mark_probed(&self) {
        self.probed.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    /// Whether server `i` is believed reachable.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.servers
            .get(i)
            .is_some_and(|s| s.healthy.load(Ordering::Relaxed))
    }

    /// Whether any server is believed reachable.
    pub fn any_healthy(&self) -> bool {
        (0..self.servers.len()).any(|i| self.is_healthy(i))
    }

    /// Waits until some server turns healthy (or returns at once if one is).
    pub async fn wait_healthy(&self) {
        loop {
            let listener = self.changed.listen();
            if self.any_healthy() {
                return;
            }
            listener.await;
        }
    }

    /// Waits until server `i` is believed unreachable.
    pub async fn wait_unhealthy(&self, i: usize) {
        loop {
            let listener = self.changed.listen();
            if !self.is_healthy(i) {
                return;
            }
            listener.await;
        }
    }

    /// Waits until no server is believed reachable.
    pub async fn wait_none_healthy(&self) {
        loop {
            let listener = self.changed.listen();
            if !self.any_healthy() {
                return;
            }
            listener.await;
        }
    }

    /// Records that kubelet just sent a lease request through the hub.
    pub fn kubelet_lease_seen(&self) {
        *self.kubelet_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn kubelet_silent_for(&self) -> Option<Duration> {
        self.kubelet_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// Sets a server's state; a change is one log line (with why, when lost) and a wake-up.
    fn set(&self, i: usize, healthy: bool, url: &str, why: Option<&ProbeError>) {
        let was = self.servers[i].healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            match why {
                Some(e) if !healthy => log::warn!("server {url} is now unhealthy: {e}"),
                _ if !healthy => log::warn!("server {url} is now unhealthy"),
                _ => log::info!("server {url} is now healthy"),
            }
            self.changed.notify(usize::MAX);
        }
    }

    /// Records a probe's outcome: `Err` makes the server unhealthy at once, `threshold`
    /// successes in a row healthy again.
    fn record(
        &self,
        i: usize,
        outcome: Result<(), &ProbeError>,
        threshold: u32,
        initial: bool,
        url: &str,
    ) {
        let s = &self.servers[i];
        if let Err(e) = outcome {
            s.successes.store(0, Ordering::Relaxed);
            self.set(i, false, url, Some(e));
            return;
        }
        let n = s.successes.fetch_add(1, Ordering::Relaxed) + 1;
        if initial || s.healthy.load(Ordering::Relaxed) || n >= threshold {
            self.set(i, true, url, None);
        }
    }
}

/// How the prober probes (the `--heartbeat-*` flags and kubelet's grace period).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node whose Lease is renewed.
    pub node: String,
    /// The timeout of each probe request.
    pub timeout: Duration,
    /// Lease updates tried per probe.
    pub retries: u32,
    /// Good probes needed before a server counts as healthy again.
    pub threshold: u32,
    /// Stop renewing when kubelet is silent this long.
    pub grace: Duration,
    /// The period of the probe.
    pub interval: Duration,
}

/// Why a probe of a server failed.
#[derive(Debug)]
pub enum ProbeError {
    /// No whole answer from the server.
    Fetch(crate::upstream::FetchError),
    /// The server answered with this status while reading, creating or renewing the lease.
    Status {
        /// What the hub was doing.
        doing: &'static str,
        /// The answer's status.
        code: u16,
    },
    /// The server answered `/readyz` with this status.
    NotReady(u16),
    /// The lease the server sent is not a Lease the hub can renew.
    BadLease(String),
    /// `--heartbeat-failed-retry` is 0: nothing was tried.
    NoAttempt,
    /// kubelet has been silent for longer than its grace period: the node is not alive for
    /// the cloud, so its lease is not renewed and the cloud not probed.
    KubeletSilent,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fetch(e) => write!(f, "{e}"),
            Self::Status { doing, code } => write!(f, "{doing} the lease: status {code}"),
            Self::NotReady(code) => write!(f, "/readyz answered {code}"),
            Self::BadLease(why) => write!(f, "{why}"),
            Self::NoAttempt => write!(f, "no attempt"),
            Self::KubeletSilent => write!(
                f,
                "kubelet silent for longer than --kubelet-health-grace-period: the lease is not renewed"
            ),
        }
    }
}

impl std::error::Error for ProbeError {}

fn lease_from(body: &[u8]) -> Result<Value, ProbeError> {
    serde_json::from_slice(body).map_err(|e| ProbeError::BadLease(e.to_string()))
}

/// Renews the node's Lease through one server a tick and checks the others' readiness,
/// remembering the last renewed copy.
pub struct Prober {
    health: Arc<Health>,
    upstream: Arc<Upstream>,
    cache: Option<Cache>,
    node: String,
    timeout: Duration,
    retries: u32,
    threshold: u32,
    grace: Duration,
    interval: Duration,
    servers: usize,
    /// The Lease as last renewed (through any server: they share one etcd).
    last: Option<Value>,
    /// The server to renew through next, round robin.
    next: usize,
    /// When the Node was last looked up for the lease's owner reference.
    owner_looked_up: Option<std::time::Instant>,
}

/// Whether `server` is ready (`/readyz`, answered to anyone): how the servers the lease is
/// not renewed through this tick are checked, for two bytes of answer.
async fn ready(
    upstream: &Upstream,
    server: usize,
    retries: u32,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut last_err = ProbeError::NoAttempt;
    for _ in 0..retries {
        match upstream
            .fetch_typed(server, "GET", "/readyz", None, "text/plain", timeout)
            .await
        {
            Ok((200, _)) => return Ok(()),
            Ok((code, _)) => last_err = ProbeError::NotReady(code),
            Err(e) => last_err = ProbeError::Fetch(e),
        }
    }
    Err(last_err)
}

/// The annotation yurt-manager puts on the lease of a node another node heartbeats for; the
/// node's own renewal removes it (upstream YurtHub does).
const DELEGATE_HEARTBEAT: &str = "openyurt.io/delegate-heartbeat";

impl Prober {
    /// A prober for every configured server.
    pub fn new(
        settings: Settings,
        health: Arc<Health>,
        upstream: Arc<Upstream>,
        cache: Option<Cache>,
    ) -> Self {
        let n = upstream.len();
        Self {
            health,
            upstream,
            cache,
            node: settings.node,
            timeout: settings.timeout,
            retries: settings.retries,
            threshold: settings.threshold,
            grace: settings.grace,
            interval: settings.interval,
            last: None,
            next: 0,
            owner_looked_up: None,
            servers: n,
        }
    }

    fn lease_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}",
            self.node
        )
    }

    async fn create(&self, server: usize) -> Result<Value, ProbeError> {
        let mut lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.node, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": self.node,
                     "leaseDurationSeconds": self.grace.as_secs().max(1),
                     "renewTime": crate::kube::time::micro_now()}
        });
        if let Some(owner) = self.node_owner(server).await {
            lease["metadata"]["ownerReferences"] = owner;
        }
        let body = serde_json::to_vec(&lease).unwrap_or_default();
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases");
        match self
            .upstream
            .fetch(server, "POST", &path, Some(&body), self.timeout)
            .await
            .map_err(ProbeError::Fetch)?
        {
            (201 | 200, b) => lease_from(&b),
            (code, _) => Err(ProbeError::Status {
                doing: "creating",
                code,
            }),
        }
    }

    /// The lease's owner reference to the node's Node, when the Node exists: kubelet's
    /// lease controller reads the Node at every renewal of a lease without one (the hub
    /// answers those renewals from its copy), so a lease created before the Node must get
    /// it later.
    async fn node_owner(&self, server: usize) -> Option<Value> {
        let path = format!("/api/v1/nodes/{}?resourceVersion=0", self.node);
        match self
            .upstream
            .fetch(server, "GET", &path, None, self.timeout)
            .await
        {
            Ok((200, body)) => {
                let node = serde_json::from_slice::<Value>(&body).ok()?;
                let uid = node["metadata"]["uid"].as_str()?;
                Some(json!([{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid}]))
            }
            _ => None,
        }
    }

    /// Renews the lease through `server` with the smallest request that does it: a merge
    /// patch of `spec.renewTime` (and the delegate annotation's removal when the lease may
    /// carry it), no read first; creates the lease when there is none. The renewed lease.
    async fn renew(&mut self, server: usize) -> Result<Value, ProbeError> {
        let mut last_err = ProbeError::NoAttempt;
        for _ in 0..self.retries {
            let mut patch = json!({"spec": {"renewTime": crate::kube::time::micro_now()}});
            let delegated = self.last.as_ref().is_none_or(|l| {
                l.pointer("/metadata/annotations")
                    .and_then(Value::as_object)
                    .is_some_and(|a| a.contains_key(DELEGATE_HEARTBEAT))
            });
            if delegated {
                patch["metadata"] = json!({"annotations": {DELEGATE_HEARTBEAT: null}});
            }
            // A lease without its owner (created before kubelet registered the Node) gets
            // it once the Node exists, looked up at most every six ticks.
            let ownerless = self.last.as_ref().is_some_and(|l| {
                l.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
            });
            let due = self
                .owner_looked_up
                .is_none_or(|t| t.elapsed() >= self.interval * 6);
            if ownerless && due {
                self.owner_looked_up = Some(std::time::Instant::now());
                if let Some(owner) = self.node_owner(server).await {
                    patch["metadata"]["ownerReferences"] = owner;
                }
            }
            let body = serde_json::to_vec(&patch).unwrap_or_default();
            match self
                .upstream
                .fetch_typed(
                    server,
                    "PATCH",
                    &self.lease_path(),
                    Some((&body, "application/merge-patch+json")),
                    "application/json",
                    self.timeout,
                )
                .await
            {
                Ok((200, b)) => return lease_from(&b),
                Ok((404, _)) => return self.create(server).await,
                Ok((code, _)) => {
                    last_err = ProbeError::Status {
                        doing: "renewing",
                        code,
                    }
                }
                // A reset connection is retried like a bad status: one transport hiccup must
                // not send the whole node offline.
                Err(e) => last_err = ProbeError::Fetch(e),
            }
        }
        Err(last_err)
    }

    fn url(&self, server: usize) -> String {
        self.upstream
            .server_urls()
            .nth(server)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Renews the lease through `server` and records the outcome.
    async fn renew_and_record(&mut self, server: usize, initial: bool) -> bool {
        let url = self.url(server);
        match self.renew(server).await {
            Ok(lease) => {
                if let Some(cache) = &self.cache {
                    // Served to kubelet locally: its own lease calls never leave the node.
                    cache.put(
                        "kubelet",
                        LEASE_RESOURCE,
                        serde_json::to_vec(&lease).unwrap_or_default(),
                    );
                }
                self.last = Some(lease);
                self.health
                    .record(server, Ok(()), self.threshold, initial, &url);
                true
            }
            Err(e) => {
                log::debug!("health probe of {url} (renewing the lease) failed: {e}");
                self.health
                    .record(server, Err(&e), self.threshold, initial, &url);
                false
            }
        }
    }

    /// One tick: the lease is renewed once, through the next healthy server in turn (all
    /// servers share one etcd: one write a tick is what the cloud needs, and a write per
    /// server was a conflict and a retry each); every other server is checked for
    /// readiness, side by side, so a blackholed one holds up none.
    async fn tick(&mut self, initial: bool) {
        let n = self.servers.max(1);
        let renewer = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| initial || self.health.is_healthy(i))
            .unwrap_or(self.next % n);
        self.next = renewer + 1;
        let others: Vec<_> = (0..self.servers)
            .filter(|&i| i != renewer)
            .map(|i| {
                let (health, upstream, url) =
                    (self.health.clone(), self.upstream.clone(), self.url(i));
                let (retries, timeout, threshold) = (self.retries, self.timeout, self.threshold);
                crate::runtime::spawn(async move {
                    let outcome = ready(&upstream, i, retries, timeout).await;
                    if let Err(e) = &outcome {
                        log::debug!("health probe of {url} failed: {e}");
                    }
                    let outcome = outcome.as_ref().map(|_| ());
                    health.record(i, outcome, threshold, initial, &url);
                })
            })
            .collect();
        let renewed = self.renew_and_record(renewer, initial).await;
        for task in others {
            task.await;
        }
        // The renewal failed through a server that looked healthy: the lease must not wait a
        // whole interval, so the next healthy one renews it now.
        if !renewed && !initial {
            let again = (1..n)
                .map(|k| (renewer + k) % n)
                .find(|&i| self.health.is_healthy(i));
            if let Some(i) = again {
                self.next = i + 1;
                self.renew_and_record(i, false).await;
            }
        }
    }

    /// Probes once (success makes a server healthy at once), then every interval, forever;
    /// starts only once `gate` resolves (the first client certificate: without it the cloud
    /// cannot be asked, which says nothing about whether it is reachable).
    pub async fn run(mut self, gate: impl std::future::Future<Output = ()>) {
        let mut gate = std::pin::pin!(gate);
        if smol::future::poll_once(gate.as_mut()).await.is_none() {
            // Requests are not held up for a probe that cannot happen yet; readiness keeps
            // clients other than the hub out meanwhile.
            self.health.mark_probed();
            gate.await;
        }
        self.tick(true).await;
        self.health.mark_probed();
        loop {
            async_io::Timer::after(self.interval).await;
            if self
                .health
                .kubelet_silent_for()
                .is_some_and(|d| d > self.grace)
            {
                for i in 0..self.servers {
                    let silent = Err(&ProbeError::KubeletSilent);
                    self.health
                        .record(i, silent, self.threshold, false, &self.url(i));
                }
                log::debug!("kubelet silent for longer than the grace period: lease not renewed");
                continue;
            }
            self.tick(false).await;
        }
    }
}

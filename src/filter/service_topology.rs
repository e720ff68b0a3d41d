//! servicetopology (reference §6.2): EndpointSlices seen by kube-proxy, coredns and
//! nginx-ingress-controller keep only the endpoints of this node, or of this node's pool, when
//! the slice's Service asks for it with the annotation `openyurt.io/topologyKeys`.
//!
//! The filter needs two inputs, read through the hub's own proxy: every Service (for its
//! annotation) and this node's NodePool (`apps.openyurt.io/v1beta2`, `status.nodes`). Until
//! both are synced the hub is not ready; when they never sync (the NodePool CRD is missing,
//! FAQ items 3 and 6), the filter **fails open** after `--filter-sync-timeout`: slices pass
//! unchanged, one log line and the `yurthub_filter_fail_open` metric say why, and coredns and
//! kube-proxy are not blocked forever as upstream's are.
//!
//! ```
//! use yurthub::filter::Topology;
//! use std::time::Duration;
//! let t = Topology::new("n1", "pool-a", Duration::from_secs(30));
//! assert!(t.ready().is_err()); // nothing synced yet, the timeout still runs
//! ```

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::informer::{Handler, Informer, Source};

/// servicetopology waits for these inputs (`services`, `nodepools` or both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotSynced(pub &'static str);

impl std::fmt::Display for NotSynced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "servicetopology: waiting for {}", self.0)
    }
}

impl std::error::Error for NotSynced {}

/// The annotation a Service chooses its topology with.
pub const TOPOLOGY_KEYS: &str = "openyurt.io/topologyKeys";

/// What servicetopology knows about the cluster.
#[derive(Debug)]
pub struct Topology {
    node: String,
    pool: String,
    deadline: Instant,
    /// `namespace/name` → the Service's topologyKeys annotation (only annotated Services).
    services: RwLock<HashMap<String, String>>,
    /// The pool's nodes, once the NodePool was read (`None`: not read, or no such pool).
    pool_nodes: RwLock<Option<BTreeSet<String>>>,
    services_synced: AtomicBool,
    pools_synced: AtomicBool,
    failed_open: AtomicBool,
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Topology {
    /// The filter's state for `node` in `pool`; it fails open `timeout` from now if its inputs
    /// are not synced by then.
    pub fn new(node: &str, pool: &str, timeout: Duration) -> Arc<Topology> {
        Arc::new(Topology {
            node: node.to_string(),
            pool: pool.to_string(),
            deadline: Instant::now() + timeout,
            services: RwLock::default(),
            pool_nodes: RwLock::default(),
            services_synced: AtomicBool::new(false),
            pools_synced: AtomicBool::new(false),
            failed_open: AtomicBool::new(false),
        })
    }

    fn synced(&self) -> bool {
        self.services_synced.load(Ordering::Relaxed) && self.pools_synced.load(Ordering::Relaxed)
    }

    /// Whether `node` is one of this hub's pool's nodes, as the NodePool's status lists
    /// them; `None` until the NodePool has been read (or when there is no such pool).
    pub fn in_pool(&self, node: &str) -> Option<bool> {
        self.pool_nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|nodes| nodes.contains(node))
    }

    /// Whether the inputs are missing past the timeout (slices then pass unchanged).
    pub fn failing_open(&self) -> bool {
        if self.synced() || Instant::now() < self.deadline {
            return false;
        }
        if !self.failed_open.swap(true, Ordering::Relaxed) {
            log::warn!(
                "servicetopology: {} not synced within --filter-sync-timeout; endpoint slices pass unfiltered until they are (is the NodePool CRD apps.openyurt.io/v1beta2 installed?)",
                self.missing_inputs()
            );
        }
        true
    }

    fn missing_inputs(&self) -> &'static str {
        match (
            self.services_synced.load(Ordering::Relaxed),
            self.pools_synced.load(Ordering::Relaxed),
        ) {
            (false, false) => "services and nodepools",
            (false, true) => "services",
            _ => "nodepools",
        }
    }

    /// `Ok` when the filter can work or has given up waiting (a readiness condition).
    pub fn ready(&self) -> Result<(), NotSynced> {
        if self.synced() || self.failing_open() {
            Ok(())
        } else {
            Err(NotSynced(self.missing_inputs()))
        }
    }

    /// Filters one EndpointSlice; never drops it, at most empties it.
    pub fn apply(&self, slice: &mut Value) -> bool {
        if !self.synced() {
            // Before the timeout readiness keeps clients out; after it, fail open.
            return true;
        }
        let service = format!(
            "{}/{}",
            slice["metadata"]["namespace"].as_str().unwrap_or(""),
            slice["metadata"]["labels"]["kubernetes.io/service-name"]
                .as_str()
                .unwrap_or("")
        );
        let Some(keys) = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&service)
            .cloned()
        else {
            return true;
        };
        // Exact values, as upstream: anything else leaves the slice unchanged.
        let nodes: BTreeSet<String> = if keys == "kubernetes.io/hostname" {
            BTreeSet::from([self.node.clone()])
        } else if keys == "openyurt.io/nodepool" || keys == "kubernetes.io/zone" {
            match &*self.pool_nodes.read().unwrap_or_else(|e| e.into_inner()) {
                Some(n) => n.clone(),
                // The pool could not be looked up: unchanged (upstream's rule).
                None => return true,
            }
        } else {
            return true;
        };
        if let Some(eps) = slice.get_mut("endpoints").and_then(Value::as_array_mut) {
            // v1 names the node in `nodeName`, v1beta1 in `topology`; list items carry no
            // apiVersion, so both are looked at.
            eps.retain(|ep| {
                ep["nodeName"]
                    .as_str()
                    .or_else(|| ep["topology"]["kubernetes.io/hostname"].as_str())
                    .is_some_and(|n| nodes.contains(n))
            });
        } else if slice.get("endpoints").is_some() {
            slice["endpoints"] = json!([]);
        }
        true
    }

    /// Lists and watches the Services and this node's NodePool through `source`; runs
    /// forever.
    pub async fn run(self: Arc<Self>, source: Source) {
        let services =
            Informer::new(source, "/api/v1/services", "services").run(Services(self.clone()));
        let pools = Informer::new(
            source,
            format!(
                "/apis/apps.openyurt.io/v1beta2/nodepools?fieldSelector=metadata.name%3D{}",
                self.pool
            ),
            "nodepools",
        )
        .run(Pools(self.clone()));
        smol::future::zip(services, pools).await;
    }
}

struct Services(Arc<Topology>);

impl Handler for Services {
    fn replace(&self, items: &[Value]) {
        let map = items
            .iter()
            .filter_map(|s| {
                Some((
                    key(s),
                    s["metadata"]["annotations"][TOPOLOGY_KEYS]
                        .as_str()?
                        .to_string(),
                ))
            })
            .collect();
        *self.0.services.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.0.services_synced.store(true, Ordering::Relaxed);
    }

    fn upsert(&self, obj: &Value) {
        let mut map = self.0.services.write().unwrap_or_else(|e| e.into_inner());
        match obj["metadata"]["annotations"][TOPOLOGY_KEYS].as_str() {
            Some(k) => map.insert(key(obj), k.to_string()),
            None => map.remove(&key(obj)),
        };
    }

    fn delete(&self, obj: &Value) {
        self.0
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(obj));
    }
}

struct Pools(Arc<Topology>);

impl Pools {
    fn set(&self, pool: Option<&Value>) {
        let nodes = pool.map(|p| {
            p["status"]["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        });
        *self.0.pool_nodes.write().unwrap_or_else(|e| e.into_inner()) = nodes;
    }
}

impl Handler for Pools {
    fn replace(&self, items: &[Value]) {
        self.set(items.first());
        self.0.pools_synced.store(true, Ordering::Relaxed);
    }

    fn upsert(&self, obj: &Value) {
        self.set(Some(obj));
    }

    fn delete(&self, _obj: &Value) {
        self.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(service: &str, nodes: &[&str]) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": nodes.iter().map(|n| json!({"addresses": ["10.0.0.1"], "nodeName": n})).collect::<Vec<_>>()})
    }

    fn names(slice: &Value) -> Vec<String> {
        slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["nodeName"].as_str().unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn node_and_pool_topology() {
        let t = Topology::new("n1", "pool-a", Duration::from_secs(30));
        let svc = |name: &str, keys: Option<&str>| {
            let mut s = json!({"metadata": {"name": name, "namespace": "default"}});
            if let Some(k) = keys {
                s["metadata"]["annotations"] = json!({TOPOLOGY_KEYS: k});
            }
            s
        };
        Services(t.clone()).replace(&[
            svc("by-node", Some("kubernetes.io/hostname")),
            svc("by-pool", Some("openyurt.io/nodepool")),
            svc("plain", None),
        ]);
        assert!(t.ready().is_err(), "pools not synced yet");
        Pools(t.clone())
            .replace(&[json!({"metadata": {"name": "pool-a"}, "status": {"nodes": ["n1", "n2"]}})]);
        assert!(t.ready().is_ok());
        let mut s = slice("by-node", &["n1", "n2", "n3"]);
        assert!(t.apply(&mut s));
        assert_eq!(names(&s), ["n1"]);
        let mut s = slice("by-pool", &["n1", "n2", "n3"]);
        s["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"addresses": ["10.0.0.9"]}));
        t.apply(&mut s);
        assert_eq!(
            names(&s),
            ["n1", "n2"],
            "and one without nodeName is dropped"
        );
        let mut s = slice("plain", &["n1", "n3"]);
        t.apply(&mut s);
        assert_eq!(names(&s), ["n1", "n3"]);
        let mut s = slice("unknown", &["n3"]);
        t.apply(&mut s);
        assert_eq!(names(&s), ["n3"]);
        // The annotation goes away: unchanged from then on.
        Services(t.clone()).upsert(&svc("by-node", None));
        let mut s = slice("by-node", &["n1", "n2"]);
        t.apply(&mut s);
        assert_eq!(names(&s), ["n1", "n2"]);
        // The pool disappears: pool topology leaves slices unchanged.
        Pools(t.clone()).delete(&json!({}));
        let mut s = slice("by-pool", &["n1", "n3"]);
        t.apply(&mut s);
        assert_eq!(names(&s), ["n1", "n3"]);
    }

    #[test]
    fn v1beta1_items_without_api_version_use_topology() {
        let t = Topology::new("n1", "pool-a", Duration::from_secs(30));
        Services(t.clone()).replace(&[json!({"metadata": {"name": "s", "namespace": "default",
            "annotations": {TOPOLOGY_KEYS: "kubernetes.io/hostname"}}})]);
        Pools(t.clone()).replace(&[]);
        let mut s = json!({"metadata": {"name": "s-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "s"}},
            "endpoints": [{"addresses": ["10.0.0.1"], "topology": {"kubernetes.io/hostname": "n1"}},
                          {"addresses": ["10.0.0.2"], "topology": {"kubernetes.io/hostname": "n2"}}]});
        t.apply(&mut s);
        assert_eq!(s["endpoints"].as_array().unwrap().len(), 1);
        assert_eq!(s["endpoints"][0]["addresses"][0], "10.0.0.1");
    }

    #[test]
    fn fails_open_after_the_timeout() {
        let t = Topology::new("n1", "pool-a", Duration::ZERO);
        Services(t.clone()).replace(&[json!({"metadata": {"name": "s", "namespace": "default",
            "annotations": {TOPOLOGY_KEYS: "kubernetes.io/hostname"}}})]);
        assert!(t.ready().is_ok());
        assert!(t.failing_open());
        let mut s = slice("s", &["n2"]);
        assert!(t.apply(&mut s));
        assert_eq!(names(&s), ["n2"]);
    }
}

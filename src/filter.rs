//! Response filters (reference §6): rewrites of what some components see, so that pods and
//! kube-proxy talk to the hub instead of the cloud. Filters run on get/list/watch responses in
//! one fixed order; a list item a filter drops disappears, a watch object it drops becomes a
//! DELETED event, and BOOKMARK/ERROR events pass untouched. What is cached is the filtered body.
//!
//! ```
//! use yurthub::filter::{Filters, Settings};
//! let f = Filters::new(Settings::default());
//! let chain = f.chain("kubelet", "list", "services").unwrap();
//! let mut svc = serde_json::json!({"kind":"Service","metadata":{"name":"kubernetes","namespace":"default"},
//!     "spec":{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443}]}});
//! assert!(chain.apply(&mut svc));
//! assert_eq!(svc["spec"]["clusterIP"], "169.254.2.1");
//! assert_eq!(svc["spec"]["ports"][0]["port"], 10268);
//! ```

mod discard_cloud_service;
mod forward_kube_svc_traffic;
mod in_cluster_config;
mod kind;
mod master_service;
mod node_port_isolation;
mod service_env_updater;
mod service_topology;
mod stream;

pub use kind::{FilterKind, UnknownFilter};
pub use service_topology::{NotSynced, Topology};
pub use stream::{ListStream, StreamError};

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// What the filters need to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where pods reach the hub: the dummy interface's IP, or `--bind-proxy-address`.
    pub hub_host: String,
    /// The TLS proxy port.
    pub hub_port: u16,
    /// This node's pool (nodeportisolation).
    pub nodepool: String,
    /// `--enable-resource-filter`.
    pub enabled: bool,
    /// `--disabled-resource-filters` ([`FilterKind::parse_list`]).
    pub disabled: BTreeSet<FilterKind>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hub_host: "169.254.2.1".into(),
            hub_port: 10268,
            nodepool: String::new(),
            enabled: true,
            disabled: BTreeSet::new(),
        }
    }
}

/// The filters with their live per-filter component lists (yurt-hub-cfg keys).
pub struct Filters {
    settings: Settings,
    /// The TLS port actually bound, when `--proxy-secure-port=0` let the system pick it.
    bound_port: std::sync::atomic::AtomicU16,
    extra: RwLock<BTreeMap<FilterKind, BTreeSet<String>>>,
    topology: Option<Arc<Topology>>,
    /// Whether the TLS listener has a certificate; `None`: not asked (always rewrite).
    tls_ready: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// What was last logged about it: 0 nothing, 1 held back, 2 rewriting.
    tls_said: std::sync::atomic::AtomicU8,
}

/// The filters that apply to one request, in order.
#[derive(Clone, Debug)]
pub struct Chain {
    kinds: Vec<FilterKind>,
    settings: Settings,
    topology: Option<Arc<Topology>>,
}

impl Filters {
    /// Filters with `settings` and no extra components.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            bound_port: std::sync::atomic::AtomicU16::new(0),
            extra: RwLock::new(BTreeMap::new()),
            topology: None,
            tls_ready: None,
            tls_said: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Lets the filters that send pods to the TLS listener rewrite only while `ready` says it
    /// has a serving certificate: without one, every pod sent there would fail its handshake,
    /// so those objects pass as the cloud sent them.
    pub fn with_tls_listener(mut self, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.tls_ready = Some(ready);
        self
    }

    /// The enabled filters that send pods to the TLS listener.
    fn tls_kinds(&self) -> impl Iterator<Item = FilterKind> + '_ {
        FilterKind::ALL
            .into_iter()
            .filter(|k| k.points_at_tls_listener() && self.enabled(*k))
    }

    /// The enabled filters held back because the TLS listener has no certificate yet.
    pub fn held_for_tls(&self) -> Vec<FilterKind> {
        if self.tls_ready.as_ref().is_none_or(|ready| ready()) {
            return Vec::new();
        }
        self.tls_kinds().collect()
    }

    /// What an operator is told while filters are held back (the log, `/v1/readyz`).
    pub fn held_for_tls_note(&self) -> Option<String> {
        let held = self.held_for_tls();
        (!held.is_empty()).then(|| held_note(&held))
    }

    /// Whether the TLS listener can take pods, logging each change once.
    fn tls_listener_ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        let Some(ready) = &self.tls_ready else {
            return true;
        };
        let now = ready();
        let said = if now { 2 } else { 1 };
        // A load first: every filtered request asks, and a swap would write a shared line.
        if self.tls_said.load(Ordering::Relaxed) != said
            && self.tls_said.swap(said, Ordering::Relaxed) != said
        {
            let kinds: Vec<FilterKind> = self.tls_kinds().collect();
            if now {
                log::info!(
                    "filter: the TLS listener has its serving certificate: {} rewrite again (new lists and watches)",
                    names(&kinds)
                );
            } else {
                log::warn!(
                    "filter: {}, so that pods are not sent to a port that cannot complete a handshake",
                    held_note(&kinds)
                );
            }
        }
        now
    }

    /// The TLS port the listener got, when the settings asked for any (port 0).
    pub fn set_bound_port(&self, port: u16) {
        self.bound_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// Gives servicetopology its inputs (without them it leaves slices unchanged).
    pub fn with_topology(mut self, topology: Arc<Topology>) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Whether `kind` runs at all (`--enable-resource-filter`, `--disabled-resource-filters`).
    pub fn enabled(&self, kind: FilterKind) -> bool {
        self.settings.enabled && !self.settings.disabled.contains(&kind)
    }

    /// Applies yurt-hub-cfg: a data key named after a filter lists extra components (keys
    /// that name no filter are the caller's).
    pub fn set_extra_components(&self, data: &BTreeMap<String, String>) {
        let mut extra = BTreeMap::new();
        for kind in FilterKind::ALL {
            if let Some(v) = data.get(kind.name()) {
                let set: BTreeSet<String> = v
                    .split(',')
                    .map(|c| c.trim().to_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                extra.insert(kind, set);
            }
        }
        *self.extra.write().unwrap_or_else(|e| e.into_inner()) = extra;
    }

    /// The chain for a request, if any filter applies. The hub's own requests are never
    /// filtered.
    pub fn chain(&self, component: &str, verb: &str, resource: &str) -> Option<Chain> {
        if !self.settings.enabled || crate::kube::is_hub(component) {
            return None;
        }
        let extra = self.extra.read().unwrap_or_else(|e| e.into_inner());
        let mut tls = None;
        let kinds: Vec<FilterKind> = FilterKind::ALL
            .into_iter()
            .filter(|kind| !self.settings.disabled.contains(kind))
            .filter(|kind| {
                let (comps, res, verbs) = kind.defaults();
                res == resource
                    && verbs.contains(&verb)
                    && (comps.contains(&component)
                        || extra.get(kind).is_some_and(|e| e.contains(component)))
            })
            .filter(|kind| {
                !kind.points_at_tls_listener()
                    || *tls.get_or_insert_with(|| self.tls_listener_ready())
            })
            .collect();
        let mut settings = self.settings.clone();
        if settings.hub_port == 0 {
            settings.hub_port = self.bound_port.load(std::sync::atomic::Ordering::Relaxed);
        }
        (!kinds.is_empty()).then(|| Chain {
            kinds,
            settings,
            topology: self.topology.clone(),
        })
    }
}

/// `masterservice, serviceenvupdater`.
fn names(kinds: &[FilterKind]) -> String {
    kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn held_note(kinds: &[FilterKind]) -> String {
    format!(
        "no serving certificate for the TLS listener yet: {} leave objects as the cloud sent them",
        names(kinds)
    )
}

impl Chain {
    /// Whether the chain may change `raw` (one object, event or body) at all; when not, it
    /// passes byte for byte without being parsed.
    pub fn may_change(&self, raw: &[u8]) -> bool {
        self.kinds.iter().any(|k| {
            k.needles().is_none_or(|all| {
                all.iter()
                    .any(|x| memchr::memmem::find(raw, x.as_bytes()).is_some())
            })
        })
    }

    /// Runs the chain over one object; false when a filter drops it.
    pub fn apply(&self, obj: &mut Value) -> bool {
        for kind in &self.kinds {
            let keep = match kind {
                FilterKind::MasterService => master_service::apply(obj, &self.settings),
                FilterKind::InClusterConfig => in_cluster_config::apply(obj),
                FilterKind::ServiceEnvUpdater => service_env_updater::apply(obj, &self.settings),
                FilterKind::ForwardKubeSvcTraffic => {
                    forward_kube_svc_traffic::apply(obj, &self.settings)
                }
                FilterKind::ServiceTopology => self.topology.as_ref().is_none_or(|t| t.apply(obj)),
                FilterKind::DiscardCloudService => discard_cloud_service::apply(obj),
                FilterKind::NodePortIsolation => node_port_isolation::apply(obj, &self.settings),
            };
            if !keep {
                return false;
            }
        }
        true
    }

    /// Appends one object (a list's item, an initial watch event's object) to `out` as the
    /// chain leaves it: byte for byte when no filter can act on it (or it is not JSON, for
    /// the client to judge). False, with nothing appended, when a filter drops it. One
    /// object at a time: a list of thousands is never parsed whole.
    pub fn append_object(&self, object: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.may_change(object) {
            out.extend_from_slice(object);
            return true;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(object) else {
            out.extend_from_slice(object);
            return true;
        };
        if !self.apply(&mut v) {
            return false;
        }
        // Writing a Value into a Vec fails only on a map with non-string keys, which a
        // parsed JSON object cannot have; the object is then passed as it came.
        let start = out.len();
        if serde_json::to_writer(&mut *out, &v).is_err() {
            out.truncate(start);
            out.extend_from_slice(object);
        }
        true
    }

    /// Filters a whole get/list body; `None` when it passes unchanged (not JSON, or nothing
    /// in it the chain acts on).
    pub fn apply_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if !self.may_change(body) {
            return None;
        }
        let mut v: Value = serde_json::from_slice(body).ok()?;
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            items.retain_mut(|item| self.apply(item));
        } else if v.get("kind").and_then(Value::as_str) != Some("Status") {
            if self.kinds.iter().any(|k| k.may_drop()) {
                // A single object a filter would drop is served as it is (there is no
                // "nothing").
                let mut copy = v.clone();
                if self.apply(&mut copy) {
                    v = copy;
                }
            } else {
                self.apply(&mut v);
            }
        }
        serde_json::to_vec(&v).ok()
    }

    /// Filters one watch event line (given without its newline; returned with it); a
    /// dropped object becomes a DELETED event. A line that is not JSON passes unchanged, for
    /// the client to judge, and keeps its own line: it must not swallow the next event.
    pub fn apply_event(&self, line: &[u8]) -> Vec<u8> {
        let parsed = self
            .may_change(line)
            .then(|| serde_json::from_slice::<Value>(line).ok())
            .flatten();
        let Some(mut ev) = parsed else {
            let mut out = Vec::with_capacity(line.len() + 1);
            out.extend_from_slice(line);
            out.push(b'\n');
            return out;
        };
        match ev["type"].as_str() {
            Some("ADDED" | "MODIFIED" | "DELETED") => {
                let original = self
                    .kinds
                    .iter()
                    .any(|k| k.may_drop())
                    .then(|| ev["object"].clone());
                if !self.apply(&mut ev["object"]) {
                    ev = json!({"type": "DELETED", "object": original});
                }
                let mut out = serde_json::to_vec(&ev).unwrap_or_else(|_| line.to_vec());
                out.push(b'\n');
                out
            }
            _ => {
                let mut out = line.to_vec();
                out.push(b'\n');
                out
            }
        }
    }
}

/// Whether `obj` is `ns/name` (list items carry no kind; the chain is chosen per resource).
fn named(obj: &Value, ns: &str, name: &str) -> bool {
    obj["metadata"]["namespace"] == ns && obj["metadata"]["name"] == name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fuzzing find: `default/kubernetes` whose `spec` is a string panicked masterservice.
    #[test]
    fn a_kubernetes_service_with_a_string_spec_passes_unchanged() {
        let f = Filters::new(Settings::default());
        let chain = f.chain("kubelet", "list", "services").unwrap();
        let body = br#"{"kind":"ServiceList","items":[{"metadata":{"name":"kubernetes","namespace":"default"},"spec":"ClusterIP"}]}"#;
        let out: Value = serde_json::from_slice(&chain.apply_body(body).unwrap()).unwrap();
        assert_eq!(out["items"][0]["spec"], "ClusterIP");
        let mut odd =
            json!({"metadata": {"name": "kubernetes", "namespace": "default"}, "spec": null});
        assert!(chain.apply(&mut odd));
        assert_eq!(odd["spec"]["clusterIP"], "169.254.2.1");
    }

    fn filters() -> Filters {
        Filters::new(Settings {
            nodepool: "hangzhou".into(),
            ..Settings::default()
        })
    }

    #[test]
    fn defaults_and_exemptions() {
        let f = filters();
        assert!(f.chain("kubelet", "watch", "services").is_some());
        assert!(f.chain("kubelet", "get", "services").is_none());
        assert!(f.chain("coredns", "list", "services").is_none());
        assert!(f.chain("yurthub", "list", "services").is_none());
        let mut data = BTreeMap::new();
        data.insert("masterservice".to_string(), " coredns , foo".to_string());
        f.set_extra_components(&data);
        assert!(f.chain("coredns", "list", "services").is_some());
        let off = Filters::new(Settings {
            disabled: FilterKind::parse_list(["*"]).0,
            ..Settings::default()
        });
        assert!(off.chain("kubelet", "list", "services").is_none());
    }

    #[test]
    fn filters_that_point_at_the_tls_listener_wait_for_its_certificate() {
        let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = loaded.clone();
        let f = filters().with_tls_listener(Arc::new(move || {
            seen.load(std::sync::atomic::Ordering::Relaxed)
        }));
        // masterservice is kubelet's only filter on services; serviceenvupdater on pods.
        assert!(f.chain("kubelet", "list", "services").is_none());
        assert!(f.chain("kubelet", "get", "pods").is_none());
        // kube-proxy's services keep discardcloudservice and nodeportisolation.
        assert!(f.chain("kube-proxy", "list", "services").is_some());
        assert_eq!(
            f.held_for_tls(),
            vec![
                FilterKind::MasterService,
                FilterKind::InClusterConfig,
                FilterKind::ServiceEnvUpdater,
                FilterKind::ForwardKubeSvcTraffic
            ]
        );
        loaded.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(f.chain("kubelet", "list", "services").is_some());
        assert!(f.held_for_tls().is_empty());
    }

    #[test]
    fn inclusterconfig_comments_out_the_kubeconfig_line() {
        let f = filters();
        let chain = f.chain("kubelet", "get", "configmaps").unwrap();
        let mut cm = json!({"kind": "ConfigMap", "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "data": {"config.conf": "apiVersion: v1\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n  qps: 5\n"}});
        assert!(chain.apply(&mut cm));
        assert_eq!(
            cm["data"]["config.conf"],
            "apiVersion: v1\nclientConnection:\n#  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n  qps: 5\n"
        );
    }

    #[test]
    fn filters_never_add_fields_to_objects_they_leave_alone() {
        let f = filters();
        let chain = f.chain("kubelet", "list", "pods").unwrap();
        let mut meta =
            json!({"kind": "PartialObjectMetadata", "metadata": {"name": "p", "namespace": "d"}});
        let before = meta.clone();
        assert!(chain.apply(&mut meta));
        assert_eq!(meta, before);
    }

    #[test]
    fn dropped_watch_objects_become_deleted_events() {
        let f = filters();
        let chain = f.chain("kube-proxy", "watch", "services").unwrap();
        let line = br#"{"type":"ADDED","object":{"kind":"Service","metadata":{"name":"lb","namespace":"d","annotations":{"svc.openyurt.io/discard":"true"}},"spec":{"type":"LoadBalancer"}}}"#;
        let out: Value = serde_json::from_slice(&chain.apply_event(line)).unwrap();
        assert_eq!(out["type"], "DELETED");
        assert_eq!(out["object"]["metadata"]["name"], "lb");
        let bookmark = br#"{"type":"BOOKMARK","object":{"kind":"Service","metadata":{"resourceVersion":"5"}}}"#;
        assert_eq!(chain.apply_event(bookmark), [&bookmark[..], b"\n"].concat());
        let list = br#"{"kind":"ServiceList","items":[{"kind":"Service","metadata":{"name":"x-tunnel-server-internal-svc","namespace":"kube-system"},"spec":{}},{"kind":"Service","metadata":{"name":"ok","namespace":"d"},"spec":{}}]}"#;
        let v: Value = serde_json::from_slice(&chain.apply_body(list).unwrap()).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn objects_one_at_a_time_are_dropped_changed_or_passed_byte_for_byte() {
        let f = filters();
        let chain = f.chain("kube-proxy", "list", "services").unwrap();
        let mut out = b"[".to_vec();
        let lb = br#"{"kind":"Service","metadata":{"name":"lb","namespace":"d","annotations":{"svc.openyurt.io/discard":"true"}},"spec":{"type":"LoadBalancer"}}"#;
        assert!(!chain.append_object(lb, &mut out));
        assert_eq!(out, b"[", "nothing of a dropped object");
        // Unusual spacing survives: an object no filter acts on is not re-serialized.
        let plain = br#"{"kind":"Service", "metadata":{"name":"web","namespace":"d"},"spec":{}}"#;
        assert!(chain.append_object(plain, &mut out));
        assert_eq!(out, [&b"["[..], &plain[..]].concat());
        let kubelet = f.chain("kubelet", "list", "services").unwrap();
        let master = br#"{"kind":"Service","metadata":{"name":"kubernetes","namespace":"default"},"spec":{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443}]}}"#;
        let mut changed = Vec::new();
        assert!(kubelet.append_object(master, &mut changed));
        let v: Value = serde_json::from_slice(&changed).unwrap();
        assert_ne!(v["spec"]["clusterIP"], "10.96.0.1");
    }
}

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

mod stream;
mod topology;

pub use topology::{NotSynced, Topology};

pub use stream::{ListStream, StreamError};

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// The filters, in the order they run (upstream's order is a set's, i.e. random: A6).
pub const ORDER: &[&str] = &[
    "masterservice",
    "inclusterconfig",
    "serviceenvupdater",
    "forwardkubesvctraffic",
    "servicetopology",
    "discardcloudservice",
    "nodeportisolation",
];

/// Which (component, resource, verbs) each filter serves by default (reference §6.1).
const DEFAULTS: &[(&str, &[&str], &str, &[&str])] = &[
    (
        "masterservice",
        &["kubelet"],
        "services",
        &["list", "watch"],
    ),
    (
        "discardcloudservice",
        &["kube-proxy"],
        "services",
        &["list", "watch"],
    ),
    (
        "inclusterconfig",
        &["kubelet"],
        "configmaps",
        &["get", "list", "watch"],
    ),
    (
        "nodeportisolation",
        &["kube-proxy"],
        "services",
        &["list", "watch"],
    ),
    (
        "forwardkubesvctraffic",
        &["kube-proxy"],
        "endpointslices",
        &["list", "watch"],
    ),
    (
        "servicetopology",
        &["kube-proxy", "coredns", "nginx-ingress-controller"],
        "endpointslices",
        &["list", "watch"],
    ),
    (
        "serviceenvupdater",
        &["kubelet"],
        "pods",
        &["list", "watch", "get", "patch"],
    ),
];

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
    /// `--disabled-resource-filters` (`*` disables all).
    pub disabled: BTreeSet<String>,
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
    extra: RwLock<BTreeMap<String, BTreeSet<String>>>,
    topology: Option<Arc<Topology>>,
}

/// The filters that apply to one request, in order.
#[derive(Clone, Debug)]
pub struct Chain {
    names: Vec<&'static str>,
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
        }
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

    /// Whether `name` runs at all (`--enable-resource-filter`, `--disabled-resource-filters`).
    pub fn enabled(&self, name: &str) -> bool {
        self.settings.enabled
            && !self.settings.disabled.contains("*")
            && !self.settings.disabled.contains(name)
    }

    /// Applies yurt-hub-cfg: a data key named after a filter lists extra components.
    pub fn set_extra_components(&self, data: &BTreeMap<String, String>) {
        let mut extra = BTreeMap::new();
        for name in ORDER {
            if let Some(v) = data.get(*name) {
                let set: BTreeSet<String> = v
                    .split(',')
                    .map(|c| c.trim().to_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                extra.insert(name.to_string(), set);
            }
        }
        *self.extra.write().unwrap_or_else(|e| e.into_inner()) = extra;
    }

    /// The chain for a request, if any filter applies. The hub's own requests are never
    /// filtered.
    pub fn chain(&self, component: &str, verb: &str, resource: &str) -> Option<Chain> {
        if !self.settings.enabled
            || self.settings.disabled.contains("*")
            || crate::kube::is_hub(component)
        {
            return None;
        }
        let extra = self.extra.read().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&'static str> = ORDER
            .iter()
            .copied()
            .filter(|name| !self.settings.disabled.contains(*name))
            .filter(|name| {
                DEFAULTS.iter().any(|(n, comps, res, verbs)| {
                    n == name
                        && *res == resource
                        && verbs.contains(&verb)
                        && (comps.contains(&component)
                            || extra.get(*name).is_some_and(|e| e.contains(component)))
                })
            })
            .collect();
        let mut settings = self.settings.clone();
        if settings.hub_port == 0 {
            settings.hub_port = self.bound_port.load(std::sync::atomic::Ordering::Relaxed);
        }
        (!names.is_empty()).then(|| Chain {
            names,
            settings,
            topology: self.topology.clone(),
        })
    }
}

/// Strings one of which must appear in an object's JSON for the filter to change or drop it
/// (kube-apiserver writes them unescaped); `None` when it may act on any object. Most
/// objects hold none of them and then pass as they came, never parsed.
fn needles(name: &str) -> Option<&'static [&'static str]> {
    match name {
        // Both act on `default/kubernetes` only.
        "masterservice" | "forwardkubesvctraffic" => Some(&["\"kubernetes\""]),
        "inclusterconfig" => Some(&["\"kube-proxy\""]),
        "serviceenvupdater" => Some(&["KUBERNETES_SERVICE_"]),
        "discardcloudservice" => Some(&["x-tunnel-server-internal-svc", "svc.openyurt.io/discard"]),
        "nodeportisolation" => Some(&["nodeport.openyurt.io/listen"]),
        _ => None,
    }
}

/// Whether the filter may drop an object (the others only rewrite).
fn may_drop(name: &str) -> bool {
    matches!(
        name,
        "discardcloudservice" | "nodeportisolation" | "servicetopology"
    )
}

impl Chain {
    /// Whether the chain may change `raw` (one object, event or body) at all; when not, it
    /// passes byte for byte without being parsed.
    pub fn may_change(&self, raw: &[u8]) -> bool {
        self.names.iter().any(|n| {
            needles(n).is_none_or(|all| {
                all.iter()
                    .any(|x| memchr::memmem::find(raw, x.as_bytes()).is_some())
            })
        })
    }

    /// Runs the chain over one object; false when a filter drops it.
    pub fn apply(&self, obj: &mut Value) -> bool {
        for name in &self.names {
            let keep = match *name {
                "masterservice" => master_service(obj, &self.settings),
                "inclusterconfig" => in_cluster_config(obj),
                "serviceenvupdater" => service_env_updater(obj, &self.settings),
                "forwardkubesvctraffic" => forward_kube_svc_traffic(obj, &self.settings),
                "servicetopology" => self.topology.as_ref().is_none_or(|t| t.apply(obj)),
                "discardcloudservice" => discard_cloud_service(obj),
                "nodeportisolation" => node_port_isolation(obj, &self.settings),
                _ => true,
            };
            if !keep {
                return false;
            }
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
            if self.names.iter().any(|n| may_drop(n)) {
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
                    .names
                    .iter()
                    .any(|n| may_drop(n))
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

/// `default/kubernetes` points at the hub: kubelet then gives pods
/// `KUBERNETES_SERVICE_HOST/PORT` = the hub, so InClusterConfig clients come through it.
fn master_service(obj: &mut Value, s: &Settings) -> bool {
    if !named(obj, "default", "kubernetes") {
        return true;
    }
    // Written through maps, never `obj["spec"][..] = ..`: that panics when a hostile or
    // broken answer makes `spec` a string (found by fuzzing).
    let Some(spec) = crate::kube::object_at(obj, "spec") else {
        return true;
    };
    spec.insert("clusterIP".into(), json!(s.hub_host));
    spec.insert("clusterIPs".into(), json!([s.hub_host]));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p["name"] == "https") {
            p["port"] = json!(s.hub_port);
        }
    }
    true
}

/// Comments out `kubeconfig:` in kube-proxy's config, so it falls back to InClusterConfig.
fn in_cluster_config(obj: &mut Value) -> bool {
    if named(obj, "kube-system", "kube-proxy") {
        if let Some(conf) = obj["data"]["config.conf"].as_str() {
            let rewritten: Vec<String> = conf
                .split('\n')
                .map(|line| {
                    let parts: Vec<&str> = line.trim().split(':').collect();
                    if parts.len() == 2 && parts[0].trim() == "kubeconfig" {
                        format!("#{line}")
                    } else {
                        line.to_string()
                    }
                })
                .collect();
            obj["data"]["config.conf"] = json!(rewritten.join("\n"));
        }
    }
    true
}

/// Explicitly set `KUBERNETES_SERVICE_HOST/PORT` in regular containers point at the hub.
fn service_env_updater(obj: &mut Value, s: &Settings) -> bool {
    // `get_mut`, not indexing: an index on a missing key would add it as null.
    if let Some(containers) = obj
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env {
                    match e["name"].as_str() {
                        Some("KUBERNETES_SERVICE_HOST") => e["value"] = json!(s.hub_host),
                        Some("KUBERNETES_SERVICE_PORT") => {
                            e["value"] = json!(s.hub_port.to_string())
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    true
}

/// kube-proxy's view of `default/kubernetes` endpoints leads to the hub.
fn forward_kube_svc_traffic(obj: &mut Value, s: &Settings) -> bool {
    if !named(obj, "default", "kubernetes") {
        return true;
    }
    let v6 = s.hub_host.contains(':');
    let family = obj["addressType"].as_str().unwrap_or("IPv4");
    if (family == "IPv6") != v6 {
        return true;
    }
    if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p["name"] == "https") {
            p["port"] = json!(s.hub_port);
        }
    }
    obj["endpoints"] = json!([{"addresses": [s.hub_host], "conditions": {"ready": true}}]);
    true
}

/// Drops cloud-only services from kube-proxy's view.
fn discard_cloud_service(obj: &mut Value) -> bool {
    if named(obj, "kube-system", "x-tunnel-server-internal-svc") {
        return false;
    }
    !(obj["spec"]["type"] == "LoadBalancer"
        && obj["metadata"]["annotations"]["svc.openyurt.io/discard"] == "true")
}

/// NodePort services listen only in the pools their annotation names (reference §6.2).
fn node_port_isolation(obj: &mut Value, s: &Settings) -> bool {
    let ty = obj["spec"]["type"].as_str().unwrap_or("");
    if ty != "NodePort" && ty != "LoadBalancer" {
        return true;
    }
    let Some(value) = obj["metadata"]["annotations"]["nodeport.openyurt.io/listen"].as_str() else {
        return true;
    };
    if s.nodepool.is_empty() {
        return true;
    }
    let mut decisions: BTreeMap<String, bool> = BTreeMap::new();
    let mut star = false;
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "*" {
            star = true;
            continue;
        }
        let (name, positive) = match item.strip_prefix('-') {
            Some(n) => (n, false),
            None => (item, true),
        };
        decisions.entry(name.to_string()).or_insert(positive);
    }
    match decisions.get(&s.nodepool) {
        Some(keep) => *keep,
        None => star,
    }
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
            disabled: ["*".to_string()].into(),
            ..Settings::default()
        });
        assert!(off.chain("kubelet", "list", "services").is_none());
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
    fn node_port_isolation_rules() {
        let s = Settings {
            nodepool: "hangzhou".into(),
            ..Settings::default()
        };
        let svc = |listen: &str| {
            json!({"kind": "Service", "metadata": {"name": "s", "namespace": "d", "annotations": {"nodeport.openyurt.io/listen": listen}},
                   "spec": {"type": "NodePort"}})
        };
        for (listen, keep) in [
            ("hangzhou", true),
            ("-hangzhou", false),
            ("*", true),
            ("shanghai", false),
            ("", false),
            ("hangzhou,-hangzhou", true),
            ("-hangzhou,*", false),
        ] {
            assert_eq!(
                node_port_isolation(&mut svc(listen), &s),
                keep,
                "{listen:?}"
            );
        }
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
}

//! masterservice (kubelet's services): `default/kubernetes` points at the hub.

use serde_json::{json, Value};

use super::{named, Settings};

/// `default/kubernetes` points at the hub: kubelet then gives pods
/// `KUBERNETES_SERVICE_HOST/PORT` = the hub, so InClusterConfig clients come through it.
pub(super) fn apply(obj: &mut Value, s: &Settings) -> bool {
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

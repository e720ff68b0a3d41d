//! forwardkubesvctraffic (kube-proxy's endpointslices): `default/kubernetes` endpoints lead to the hub.

use serde_json::{json, Value};

use super::{named, Settings};

/// kube-proxy's view of `default/kubernetes` endpoints leads to the hub.
pub(super) fn apply(obj: &mut Value, s: &Settings) -> bool {
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

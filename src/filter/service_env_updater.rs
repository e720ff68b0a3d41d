//! serviceenvupdater (kubelet's pods): explicit apiserver addresses in containers' env lead to the hub.

use serde_json::{json, Value};

use super::Settings;

/// Explicitly set `KUBERNETES_SERVICE_HOST/PORT` in regular containers point at the hub.
pub(super) fn apply(obj: &mut Value, s: &Settings) -> bool {
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

//! inclusterconfig (kubelet's configmaps): kube-proxy's own kubeconfig is commented out.

use serde_json::{json, Value};

use super::named;

/// Comments out `kubeconfig:` in kube-proxy's config, so it falls back to InClusterConfig.
pub(super) fn apply(obj: &mut Value) -> bool {
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

//! nodeportisolation (kube-proxy's services): NodePort services listen only in the pools their annotation names.

use serde_json::Value;
use std::collections::BTreeMap;

use super::Settings;

/// NodePort services listen only in the pools their annotation names (reference §6.2).
pub(super) fn apply(obj: &mut Value, s: &Settings) -> bool {
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

    use serde_json::json;

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
            assert_eq!(apply(&mut svc(listen), &s), keep, "{listen:?}");
        }
    }
}

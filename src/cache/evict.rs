//! Which cached objects go first when the cache outgrows `--cache-max-bytes`.
//!
//! The order: Events (of every component, both API groups), then objects of components that
//! are not built-in agents, then the built-in agents' other objects; inside each class the
//! least recently written first. Never evicted: what kubelet needs to restart its pods
//! offline (its pods, node, lease and services, and the ConfigMaps and Secrets those pods
//! reference) and the hub's own inputs (the `yurthub` component: yurt-hub-cfg and
//! servicetopology's NodePools and Services, which readiness waits for).
//!
//! The writer applies the order: an object a list view holds is never evicted alone (its
//! list would be partial offline); the views that hold it are dropped whole, after the
//! objects of the same class that no view holds.

use serde_json::Value;
use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::store::{valid_part, ObjectKey, Store};
use super::{BUILTIN_AGENTS, METADATA_TREE};

/// Kubelet's resources that are kept whole.
const KUBELET_KEEPS: &[&str] = &[
    "pods.v1.core",
    "nodes.v1.core",
    "leases.v1.coordination.k8s.io",
    "services.v1.core",
    // Pod admission and volume set-up read these.
    "runtimeclasses.v1.node.k8s.io",
    "csidrivers.v1.storage.k8s.io",
];

/// One object that may be evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// 0 Events, 1 non-built-in agents, 2 built-in agents.
    pub class: u8,
    /// The last write.
    pub written: SystemTime,
    /// The object.
    pub key: ObjectKey,
}

/// The (kind, namespace, name) of every ConfigMap and Secret a pod needs to start.
pub fn pod_references(pod: &Value) -> Vec<(&'static str, String, String)> {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut out = Vec::new();
    let mut add = |kind: &'static str, name: &Value| {
        if let Some(n) = name.as_str() {
            out.push((kind, ns.clone(), n.to_string()));
        }
    };
    let spec = &pod["spec"];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add("configmaps", &v["configMap"]["name"]);
        add("secrets", &v["secret"]["secretName"]);
        add("secrets", &v["csi"]["nodePublishSecretRef"]["name"]);
        add("secrets", &v["azureFile"]["secretName"]);
        for plugin in [
            "rbd",
            "cephfs",
            "iscsi",
            "flexVolume",
            "scaleIO",
            "storageos",
        ] {
            add("secrets", &v[plugin]["secretRef"]["name"]);
        }
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add("configmaps", &s["configMap"]["name"]);
            add("secrets", &s["secret"]["name"]);
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add("secrets", &s["name"]);
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add("configmaps", &e["valueFrom"]["configMapKeyRef"]["name"]);
                add("secrets", &e["valueFrom"]["secretKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add("configmaps", &e["configMapRef"]["name"]);
                add("secrets", &e["secretRef"]["name"]);
            }
        }
    }
    out
}

/// What must stay: kubelet's restart set and the hub's own inputs.
pub struct Protected {
    referenced: HashSet<(String, String, String)>,
    /// kubelet's pods could not be read: all its ConfigMaps and Secrets stay.
    all_refs: bool,
}

impl Protected {
    /// Reads kubelet's cached pods to learn which ConfigMaps and Secrets they reference.
    pub fn load(store: &Store) -> Protected {
        let mut referenced = HashSet::new();
        let pods = match store.list("kubelet", "pods.v1.core", None) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cache eviction: kubelet's pods unreadable ({e}); all its ConfigMaps and Secrets kept");
                return Protected {
                    referenced,
                    all_refs: true,
                };
            }
        };
        for (key, bytes) in pods {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(pod) => {
                    for (kind, ns, name) in pod_references(&pod) {
                        referenced.insert((format!("{kind}.v1.core"), ns, name));
                    }
                }
                Err(_) => {
                    log::warn!(
                        "cache eviction: pod {}/{} unreadable; all kubelet's ConfigMaps and Secrets kept",
                        key.namespace,
                        key.name
                    );
                    return Protected {
                        referenced,
                        all_refs: true,
                    };
                }
            }
        }
        Protected {
            referenced,
            all_refs: false,
        }
    }

    /// Whether `key` is never evicted.
    pub fn keeps(&self, key: &ObjectKey) -> bool {
        // Events are never part of what must stay, whoever cached them: they go first.
        if key.resource.starts_with("events.") {
            return false;
        }
        match key.component.as_str() {
            "yurthub" => true,
            "kubelet" => {
                KUBELET_KEEPS.contains(&key.resource.as_str())
                    || (self.all_refs
                        && matches!(
                            key.resource.as_str(),
                            "configmaps.v1.core" | "secrets.v1.core"
                        ))
                    || self.referenced.contains(&(
                        key.resource.clone(),
                        key.namespace.clone(),
                        key.name.clone(),
                    ))
            }
            _ => false,
        }
    }
}

fn class_of(key: &ObjectKey) -> u8 {
    let agent = key.component.split('/').next().unwrap_or("");
    if key.resource.starts_with("events.") {
        0
    } else if !BUILTIN_AGENTS.contains(&agent) {
        1
    } else {
        2
    }
}

fn files(dir: &Path) -> Vec<(String, SystemTime)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let written = e.metadata().and_then(|m| m.modified()).ok()?;
            valid_part(&name).then_some((name, written))
        })
        .collect()
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| valid_part(n))
        .collect()
}

/// Every evictable object in the order it would go.
pub fn candidates(store: &Store, protected: &Protected) -> Vec<Candidate> {
    let root = store.root();
    let mut components = Vec::new();
    for c in store.components() {
        if root.join(&c).join(METADATA_TREE).is_dir() {
            components.push(format!("{c}/{METADATA_TREE}"));
        }
        components.push(c);
    }
    let mut out = Vec::new();
    for component in components {
        let cdir = root.join(&component);
        for resource in subdirs(&cdir) {
            if resource == METADATA_TREE {
                continue;
            }
            let rdir = cdir.join(&resource);
            let mut found: Vec<(String, String, SystemTime)> = files(&rdir)
                .into_iter()
                .map(|(n, t)| (String::new(), n, t))
                .collect();
            for ns in subdirs(&rdir) {
                found.extend(
                    files(&rdir.join(&ns))
                        .into_iter()
                        .map(|(n, t)| (ns.clone(), n, t)),
                );
            }
            for (namespace, name, written) in found {
                let key = ObjectKey {
                    component: component.clone(),
                    resource: resource.clone(),
                    namespace,
                    name,
                };
                if !protected.keeps(&key) {
                    out.push(Candidate {
                        class: class_of(&key),
                        written,
                        key,
                    });
                }
            }
        }
    }
    out.sort_by_key(|c| (c.class, c.written));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_restart_set_stays_and_events_go_first() {
        let root = std::env::temp_dir().join(format!("yurthub-evict-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (store, _) = Store::open(&root).unwrap();
        let key = |c: &str, r: &str, ns: &str, n: &str| ObjectKey {
            component: c.into(),
            resource: r.into(),
            namespace: ns.into(),
            name: n.into(),
        };
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "volumes": [{"configMap": {"name": "cm-vol"}}, {"projected": {"sources": [{"secret": {"name": "s-proj"}}]}}],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "s-env"}}}], "envFrom": [{"configMapRef": {"name": "cm-from"}}]}]}});
        store
            .write(
                &key("kubelet", "pods.v1.core", "default", "web"),
                &serde_json::to_vec(&pod).unwrap(),
            )
            .unwrap();
        let evictable = [
            key("kubelet", "events.v1.core", "default", "e1"),
            key("kube-proxy", "events.v1.events.k8s.io", "default", "e2"),
            key("my-operator", "configmaps.v1.core", "default", "x"),
            key("kubelet", "configmaps.v1.core", "default", "unused"),
            key(
                "kubelet/partialobjectmetadatas.v1.meta.k8s.io",
                "pods.v1.core",
                "default",
                "web",
            ),
        ];
        let kept = [
            key("kubelet", "nodes.v1.core", "", "node-1"),
            key(
                "kubelet",
                "leases.v1.coordination.k8s.io",
                "kube-node-lease",
                "node-1",
            ),
            key("kubelet", "configmaps.v1.core", "default", "cm-vol"),
            key("kubelet", "configmaps.v1.core", "default", "cm-from"),
            key("kubelet", "secrets.v1.core", "default", "s-proj"),
            key("kubelet", "secrets.v1.core", "default", "s-env"),
            key("kubelet", "secrets.v1.core", "default", "pull"),
            key(
                "yurthub",
                "configmaps.v1.core",
                "kube-system",
                "yurt-hub-cfg",
            ),
        ];
        for k in evictable.iter().chain(&kept) {
            store.write(k, b"{}").unwrap();
        }
        let order: Vec<(u8, ObjectKey)> = candidates(&store, &Protected::load(&store))
            .into_iter()
            .map(|c| (c.class, c.key))
            .collect();
        let keys: Vec<&ObjectKey> = order.iter().map(|(_, k)| k).collect();
        assert_eq!(order.len(), evictable.len(), "{order:?}");
        for k in &evictable {
            assert!(keys.contains(&k), "{k:?} evictable");
        }
        let classes: Vec<u8> = order.iter().map(|(c, _)| *c).collect();
        assert_eq!(classes, vec![0, 0, 1, 2, 2]);
        assert_eq!(order[2].1.component, "my-operator");
        fs::remove_dir_all(&root).unwrap();
    }
}

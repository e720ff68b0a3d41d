//! Whose each component's cache is: the identity whose requests filled it, so that offline
//! it is read by that identity only (the hub cannot ask the cloud who may read what, and a
//! pod naming itself `kubelet` must not read kubelet's Secrets).
//!
//! An owner is [`Owner::Node`] (requests the hub sends with the node's certificate) or the
//! subject of a bearer token the cloud accepted (a service account's JWT `sub`, or a digest
//! of an opaque token). The first identity to have a component's answers cached owns it;
//! another token's answers are relayed but not cached; the node takes any component over
//! (its earlier contents are dropped, they were read for someone else). Components found on
//! disk when ownership was first recorded are the node's if they are the node's agents
//! ([`NODE_AGENTS`]), and unowned otherwise (read by the node only, claimed by the first).
//! The map is kept in `_internal/owners.json`.
//!
//! ```
//! use yurthub::cache::owners::{Claim, Owner, Owners};
//! let dir = std::env::temp_dir().join(format!("owners-doc-{}", std::process::id()));
//! let owners = Owners::open(&dir, &[]);
//! let coredns = Owner::Subject("system:serviceaccount:kube-system:coredns".into());
//! assert_eq!(owners.claim("coredns", &coredns), Claim::Claimed);
//! assert!(owners.may_read("coredns", &coredns));
//! assert!(!owners.may_read("coredns", &Owner::Node));
//! let other = Owner::Subject("system:serviceaccount:default:app".into());
//! assert_eq!(owners.claim("coredns", &other), Claim::HeldBy(coredns.clone()));
//! assert_eq!(owners.claim("coredns", &Owner::Node), Claim::TakenOver(coredns));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::store::{mkdirs, read_regular, INTERNAL_DIR};
use crate::atomic_file;

/// The file, under [`INTERNAL_DIR`].
const FILE: &str = "owners.json";

/// The components that speak with the node's identity on a node (kubelet and the node's
/// daemons, the hub itself): found cached before ownership was recorded, they are the node's.
pub const NODE_AGENTS: &[&str] = &["kubelet", "kube-proxy", "flannel", "yurthub"];

/// Who a cache was filled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    /// Requests sent with the node's identity.
    Node,
    /// Requests with a bearer token of this subject.
    Subject(String),
}

impl Owner {
    /// The owner a request with `token` (accepted by the cloud) stands for.
    pub fn of_token(token: &str) -> Owner {
        Owner::Subject(super::tokens::subject(token))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Node => f.write_str("the node"),
            Owner::Subject(s) => f.write_str(s),
        }
    }
}

/// What [`Owners::claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The component was already this owner's.
    Holds,
    /// The component had no owner and now has this one.
    Claimed,
    /// The node took the component over from this owner: what it cached must go.
    TakenOver(Owner),
    /// Another owner holds the component: the answer is not cached.
    HeldBy(Owner),
}

/// The owners of the components (see the module docs).
pub struct Owners {
    file: PathBuf,
    map: Mutex<HashMap<String, Owner>>,
}

/// The component a cache directory belongs to (metadata trees are `<component>/…`).
fn agent(component: &str) -> &str {
    component.split('/').next().unwrap_or(component)
}

impl Owners {
    /// The owners recorded in the cache at `root`; when none were (a cache from before
    /// ownership, or adopted from upstream YurtHub), the node's agents among `components`
    /// (those cached on disk) are recorded as the node's.
    pub fn open(root: &Path, components: &[String]) -> Owners {
        let rel = Path::new(INTERNAL_DIR).join(FILE);
        let owners = Owners {
            file: root.join(&rel),
            map: Mutex::default(),
        };
        match read_regular(root, &rel) {
            Ok(Some(bytes)) => {
                let map = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    // Unowned components are read by the node only: nothing leaks.
                    log::warn!("cache: {FILE} unreadable ({e}): components' owners forgotten");
                    HashMap::new()
                });
                *owners.lock() = map;
            }
            _ => {
                let mine: HashMap<String, Owner> = components
                    .iter()
                    .filter(|c| NODE_AGENTS.contains(&c.as_str()))
                    .map(|c| (c.clone(), Owner::Node))
                    .collect();
                *owners.lock() = mine;
                owners.persist();
            }
        }
        owners
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self) {
        let snapshot = serde_json::to_vec(&*self.lock()).unwrap_or_default();
        let written = self
            .file
            .parent()
            .map_or(Ok(()), |d| mkdirs(d).map_err(|e| e.to_string()))
            .and_then(|()| {
                atomic_file::replace(&self.file, &[&snapshot], 0o600).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            log::warn!("cache: recording the components' owners: {e}");
        }
    }

    /// Records that `owner`'s answers for `component` are to be cached, if they may be.
    pub fn claim(&self, component: &str, owner: &Owner) -> Claim {
        let component = agent(component);
        let claim = {
            let mut map = self.lock();
            let claim = match map.get(component) {
                Some(o) if o == owner => return Claim::Holds,
                Some(o) if *owner != Owner::Node => return Claim::HeldBy(o.clone()),
                Some(o) => Claim::TakenOver(o.clone()),
                None => Claim::Claimed,
            };
            map.insert(component.to_string(), owner.clone());
            claim
        };
        self.persist();
        claim
    }

    /// Whether `owner`'s answers for `component` may still be cached: no other identity owns
    /// it (the writer asks when it applies them: the node may have taken it over since).
    pub fn may_cache(&self, component: &str, owner: &Owner) -> bool {
        self.lock().get(agent(component)).is_none_or(|o| o == owner)
    }

    /// Whether `reader` may read `component`'s cache: its owner may; an unowned one (cached
    /// before ownership was recorded) only the node may.
    pub fn may_read(&self, component: &str, reader: &Owner) -> bool {
        match self.lock().get(agent(component)) {
            Some(o) => o == reader,
            None => *reader == Owner::Node,
        }
    }

    /// The owner of `component`, if recorded.
    pub fn owner(&self, component: &str) -> Option<Owner> {
        self.lock().get(agent(component)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_agents_found_on_disk_are_the_nodes_and_the_record_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("yurthub-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let found = ["kubelet".to_string(), "coredns".to_string()];
        let owners = Owners::open(&dir, &found);
        let pod = Owner::Subject("system:serviceaccount:a:b".into());
        assert_eq!(owners.claim("kubelet", &pod), Claim::HeldBy(Owner::Node));
        assert!(owners.may_read(
            "kubelet/partialobjectmetadatas.v1.meta.k8s.io",
            &Owner::Node
        ));
        assert!(
            !owners.may_read("coredns", &pod),
            "unowned: the node's only"
        );
        assert!(owners.may_read("coredns", &Owner::Node));
        assert_eq!(owners.claim("coredns", &pod), Claim::Claimed);
        let again = Owners::open(&dir, &[]);
        assert_eq!(again.owner("coredns"), Some(pod.clone()));
        assert!(again.may_read("coredns", &pod));
        assert!(!again.may_read("coredns", &Owner::Node));
        assert!(again.may_cache("kubelet", &Owner::Node));
        assert!(!again.may_cache("kubelet", &pod));
        assert!(again.may_cache("flannel", &pod), "unowned");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

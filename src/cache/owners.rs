//! Whose each component's cache is: the identity whose requests filled it, so that offline
//! it is read by that identity only (the hub cannot ask the cloud who may read what, and a
//! pod naming itself `kubelet` must not read kubelet's Secrets).
//!
//! An owner is [`Owner::Node`] (requests the hub sends with the node's certificate) or the
//! subject of a bearer token the cloud accepted (a service account's JWT `sub`, the digest
//! of an opaque token, or `system:anonymous` for a header the apiserver reads as no token).
//! The rules:
//! - the first identity whose *read* the cloud answers owns the component; only the owner's
//!   answers are cached; another token's are relayed, not cached;
//! - the built-in agents' names ([`BUILTIN_AGENTS`]) are claimed only by the node or a
//!   service account of a system namespace ([`SYSTEM_NAMESPACES`]): a pod cannot squat
//!   coredns's or kube-proxy's name before they start;
//! - the node takes any component over; what was cached there for the other is removed;
//! - a component cached before owners were recorded (an upgrade, a cache adopted from
//!   upstream YurtHub, a lost record) is read by the node only; the node's claim keeps what
//!   is there, a token's claim removes it first (it may have been cached for anyone);
//! - at most [`MAX_OWNERS`] components are recorded.
//!
//! Removals are recorded as pending in the same file as the owner change, before the writer
//! applies them, and are applied again at the next start if the hub stopped in between. The
//! map is kept in `_internal/owners.json`.
//!
//! ```
//! use yurthub::cache::owners::{Claim, Owner, Owners};
//! let dir = std::env::temp_dir().join(format!("owners-doc-{}", std::process::id()));
//! let owners = Owners::open(&dir);
//! let coredns = Owner::Subject("system:serviceaccount:kube-system:coredns".into());
//! assert_eq!(owners.claim("coredns", &coredns), Claim::Claimed { drop: true });
//! assert!(owners.may_read("coredns", &coredns));
//! assert!(!owners.may_read("coredns", &Owner::Node));
//! let pod = Owner::Subject("system:serviceaccount:default:app".into());
//! assert_eq!(owners.claim("coredns", &pod), Claim::HeldBy(coredns.clone()));
//! assert_eq!(owners.claim("kube-proxy", &pod), Claim::Reserved);
//! assert_eq!(owners.claim("coredns", &Owner::Node), Claim::TakenOver(coredns));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::store::{read_regular, write_record, INTERNAL_DIR};
use super::target::BUILTIN_AGENTS;

/// The file, under [`INTERNAL_DIR`].
const FILE: &str = "owners.json";

/// The most components recorded (with `cache_agents: "*"` any User-Agent is one): past it,
/// new components are relayed, not cached.
pub const MAX_OWNERS: usize = 256;

/// The namespaces whose service accounts may own a built-in agent's cache (coredns,
/// kube-proxy, raven, the tunnel agent run in kube-system; flannel in kube-flannel).
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-flannel"];

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

    /// The owner of a request whose `Authorization` the apiserver does not read as a bearer
    /// token: it is served as anonymous.
    pub fn anonymous() -> Owner {
        Owner::Subject("system:anonymous".to_string())
    }

    /// Whether it may own a built-in agent's cache.
    fn may_own_builtin(&self) -> bool {
        match self {
            Owner::Node => true,
            Owner::Subject(s) => s
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, _)| SYSTEM_NAMESPACES.contains(&ns)),
        }
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
    /// The component had no owner and now has this one; with `drop`, what was cached there
    /// before owners were recorded must go first.
    Claimed {
        /// Whether a removal is pending.
        drop: bool,
    },
    /// The node took the component over from this owner: what it cached must go.
    TakenOver(Owner),
    /// Another owner holds the component: the answer is not cached.
    HeldBy(Owner),
    /// A built-in agent's name, and the claimant is neither the node nor a system service
    /// account: not cached.
    Reserved,
    /// Not recorded ([`MAX_OWNERS`] reached, or the record could not be written): not
    /// cached.
    NotRecorded,
}

/// What `_internal/owners.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Record {
    owners: BTreeMap<String, Owner>,
    /// Components whose earlier contents are to be removed (the writer has not yet).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    dropping: BTreeSet<String>,
}

/// The owners of the components (see the module docs).
pub struct Owners {
    file: PathBuf,
    record: Mutex<Record>,
}

/// The component a cache directory belongs to (metadata trees are `<component>/…`).
pub fn agent(component: &str) -> &str {
    component.split('/').next().unwrap_or(component)
}

impl Owners {
    /// The owners recorded in the cache at `root` (none if the record is absent; an
    /// unreadable one is logged and none are: unowned components are the node's to read).
    pub fn open(root: &Path) -> Owners {
        let rel = Path::new(INTERNAL_DIR).join(FILE);
        let record = match read_regular(root, &rel) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "cache: {FILE} unreadable ({e}): components' owners forgotten; offline their caches are read by the node only until their owners are answered again"
                );
                Record::default()
            }),
            Ok(None) => Record::default(),
            Err(e) => {
                log::warn!("cache: {FILE} not read ({e}): components' owners forgotten");
                Record::default()
            }
        };
        Owners {
            file: root.join(rel),
            record: Mutex::new(record),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, record: &Record) -> bool {
        let snapshot = serde_json::to_vec(record).unwrap_or_default();
        match write_record(&self.file, &snapshot) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("cache: recording the components' owners: {e}");
                false
            }
        }
    }

    /// Records that `owner`'s answers for `component` are to be cached, if they may be (see
    /// the module docs). A change is on disk before it is returned.
    pub fn claim(&self, component: &str, owner: &Owner) -> Claim {
        let component = agent(component);
        let mut record = self.lock();
        let claim = match record.owners.get(component) {
            Some(o) if o == owner => return Claim::Holds,
            Some(o) if *owner != Owner::Node => return Claim::HeldBy(o.clone()),
            Some(o) => Claim::TakenOver(o.clone()),
            None if BUILTIN_AGENTS.contains(&component) && !owner.may_own_builtin() => {
                return Claim::Reserved
            }
            None if record.owners.len() >= MAX_OWNERS => return Claim::NotRecorded,
            None => Claim::Claimed {
                drop: *owner != Owner::Node,
            },
        };
        let mut next = record.clone();
        next.owners.insert(component.to_string(), owner.clone());
        if matches!(claim, Claim::TakenOver(_) | Claim::Claimed { drop: true }) {
            next.dropping.insert(component.to_string());
        }
        // Not on disk, not in force: after a restart the old owner would read what the new
        // one cached.
        if !self.persist(&next) {
            return Claim::NotRecorded;
        }
        *record = next;
        claim
    }

    /// Whether `owner`'s answers for `component` may still be cached: no other identity owns
    /// it (the writer asks when it applies them: the node may have taken it over since).
    pub fn may_cache(&self, component: &str, owner: &Owner) -> bool {
        self.lock()
            .owners
            .get(agent(component))
            .is_none_or(|o| o == owner)
    }

    /// Whether `reader` may read `component`'s cache: its owner may; an unowned one (cached
    /// before owners were recorded) only the node may.
    pub fn may_read(&self, component: &str, reader: &Owner) -> bool {
        match self.lock().owners.get(agent(component)) {
            Some(o) => o == reader,
            None => *reader == Owner::Node,
        }
    }

    /// The owner of `component`, if recorded.
    pub fn owner(&self, component: &str) -> Option<Owner> {
        self.lock().owners.get(agent(component)).cloned()
    }

    /// Components whose earlier contents are still to be removed.
    pub fn dropping(&self) -> Vec<String> {
        self.lock().dropping.iter().cloned().collect()
    }

    /// Whether `component`'s earlier contents are still to be removed.
    pub fn is_dropping(&self, component: &str) -> bool {
        self.lock().dropping.contains(agent(component))
    }

    /// Forgets `component`'s owner and pending removal (its cache was removed by the
    /// operator: the next identity answered claims it); whether it had one.
    pub fn forget(&self, component: &str) -> bool {
        let mut record = self.lock();
        let mut next = record.clone();
        let had = next.owners.remove(component).is_some();
        next.dropping.remove(component);
        if had && self.persist(&next) {
            *record = next;
        }
        had
    }

    /// Records that `component`'s earlier contents were removed.
    pub fn dropped(&self, component: &str) {
        let mut record = self.lock();
        if !record.dropping.contains(component) {
            return;
        }
        let mut next = record.clone();
        next.dropping.remove(component);
        // Unwritten, it is removed again at the next start: harmless.
        self.persist(&next);
        *record = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_removals_and_the_record_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("yurthub-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let owners = Owners::open(&dir);
        let pod = Owner::Subject("system:serviceaccount:a:b".into());
        let proxy = Owner::Subject("system:serviceaccount:kube-system:kube-proxy".into());
        assert_eq!(
            owners.claim("kubelet", &Owner::Node),
            Claim::Claimed { drop: false }
        );
        assert_eq!(owners.claim("kubelet", &pod), Claim::HeldBy(Owner::Node));
        assert!(owners.may_read(
            "kubelet/partialobjectmetadatas.v1.meta.k8s.io",
            &Owner::Node
        ));
        assert!(
            !owners.may_read("flanneld", &pod),
            "unowned: the node's only"
        );
        assert!(owners.may_read("flanneld", &Owner::Node));
        assert_eq!(owners.claim("flanneld", &pod), Claim::Reserved);
        assert_eq!(
            owners.claim("kube-proxy", &proxy),
            Claim::Claimed { drop: true }
        );
        assert_eq!(
            owners.claim("my-agent", &pod),
            Claim::Claimed { drop: true }
        );
        assert!(owners.is_dropping("kube-proxy"));
        // The hub stops before the writer removed kube-proxy's earlier contents.
        let again = Owners::open(&dir);
        assert_eq!(again.owner("kube-proxy"), Some(proxy.clone()));
        assert_eq!(
            again.dropping(),
            vec!["kube-proxy".to_string(), "my-agent".to_string()]
        );
        again.dropped("kube-proxy");
        assert_eq!(Owners::open(&dir).dropping(), vec!["my-agent".to_string()]);
        assert!(again.may_read("kube-proxy", &proxy));
        assert!(!again.may_read("kube-proxy", &Owner::Node));
        assert!(again.may_cache("kubelet", &Owner::Node));
        assert!(!again.may_cache("kubelet", &pod));
        assert!(again.may_cache("coredns", &pod), "unowned");
        std::fs::write(dir.join("_internal/owners.json"), b"{not json").unwrap();
        assert_eq!(Owners::open(&dir).owner("kubelet"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn past_the_cap_new_components_are_not_recorded() {
        let dir = std::env::temp_dir().join(format!("yurthub-owners-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let owners = Owners::open(&dir);
        for i in 0..MAX_OWNERS {
            assert_eq!(
                owners.claim(&format!("a{i}"), &Owner::Node),
                Claim::Claimed { drop: false }
            );
        }
        assert_eq!(owners.claim("one-more", &Owner::Node), Claim::NotRecorded);
        assert_eq!(owners.claim("a1", &Owner::Node), Claim::Holds);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

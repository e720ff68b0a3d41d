//! Shared list/watch of pool-scope resources (issue 18; reference §10.1): one in-memory watch
//! cache per resource (Services, EndpointSlices), filled by one list and watch upstream, from
//! which every local client's lists and watches are answered with kube-apiserver's semantics,
//! instead of each component opening its own cluster-wide watch over the WAN.
//!
//! [`watch_cache`] is the store: objects at a resourceVersion, a window of recent events,
//! lists (any version, an exact one inside the window, pages with continue tokens, label and
//! field selectors) and the start of watches (from any version, from one inside the window,
//! or 410 Gone outside it).

pub mod leaders;
pub mod watch_cache;

pub use watch_cache::{CacheError, EventType, ListPage, ListQuery, WatchCache};

use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::informer::Handler;

/// Upstream's default `--pool-scope-resources`, and this hub's.
pub const DEFAULT_RESOURCES: &str = "/v1/services,discovery.k8s.io/v1/endpointslices";

/// The event window every store keeps at least (kube-apiserver's watch cache: 3 minutes).
pub const WINDOW: Duration = Duration::from_secs(180);

/// A resource named as upstream's `--pool-scope-resources` names it: `group/version/resource`,
/// the core group empty (`/v1/services`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gvr {
    /// The API group ("" for the core group).
    pub group: String,
    /// The version.
    pub version: String,
    /// The resource (plural, lower case).
    pub resource: String,
}

/// Why a `--pool-scope-resources` entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GvrError {
    /// Not `group/version/resource`.
    Shape(String),
    /// A resource whose objects' Kind the hub does not know (its store could not name them).
    UnknownKind(String),
}

impl fmt::Display for GvrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GvrError::Shape(s) => write!(
                f,
                "{s:?} is not group/version/resource (e.g. /v1/services, discovery.k8s.io/v1/endpointslices)"
            ),
            GvrError::UnknownKind(s) => write!(f, "{s:?}: no Kind known for this resource"),
        }
    }
}

impl std::error::Error for GvrError {}

impl Gvr {
    /// A comma-separated list (blank entries ignored), each checked.
    pub fn parse_list(s: &str) -> Result<Vec<Gvr>, GvrError> {
        let mut out: Vec<Gvr> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parts: Vec<&str> = entry.split('/').collect();
            let [group, version, resource] = parts[..] else {
                return Err(GvrError::Shape(entry.to_string()));
            };
            let name_ok = |p: &str| {
                p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            };
            if version.is_empty()
                || resource.is_empty()
                || ![group, version, resource].iter().all(|p| name_ok(p))
            {
                return Err(GvrError::Shape(entry.to_string()));
            }
            if crate::kube::kind_of(resource).is_none() {
                return Err(GvrError::UnknownKind(entry.to_string()));
            }
            let gvr = Gvr {
                group: group.to_string(),
                version: version.to_string(),
                resource: resource.to_string(),
            };
            if !out.contains(&gvr) {
                out.push(gvr);
            }
        }
        Ok(out)
    }

    /// The collection's path: `/api/v1/services`, `/apis/<group>/<version>/<resource>`.
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.resource)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.resource)
        }
    }

    /// The objects' apiVersion: `v1`, `discovery.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for Gvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.group, self.version, self.resource)
    }
}

/// One pool-scope resource: its watch cache, filled by an informer through the hub's own
/// proxy (as `multiplexer-proxy-<node>`, so the cache keeps its answers apart for offline
/// starts), and the signal its watchers wait on.
#[derive(Debug)]
pub struct Resource {
    /// What it is.
    pub gvr: Gvr,
    /// The collection, e.g. `/api/v1/services`.
    pub path: String,
    /// The objects' kind, e.g. `Service`.
    pub kind: String,
    /// The list's kind, e.g. `ServiceList`.
    pub list_kind: String,
    /// The apiVersion, e.g. `v1` or `discovery.k8s.io/v1`.
    pub api_version: String,
    cache: Mutex<WatchCache>,
    changed: event_listener::Event,
    resets: AtomicU64,
    refused: AtomicU16,
    retired: std::sync::atomic::AtomicBool,
}

impl Resource {
    /// The store of `gvr` (whose Kind [`Gvr::parse_list`] checked), keeping the events of
    /// `window`.
    pub fn new(gvr: &Gvr, window: Duration) -> Self {
        let kind = crate::kube::kind_of(&gvr.resource).unwrap_or("");
        Self {
            path: gvr.path(),
            kind: kind.to_string(),
            list_kind: format!("{kind}List"),
            api_version: gvr.api_version(),
            cache: Mutex::new(WatchCache::new(&gvr.resource, window)),
            changed: event_listener::Event::new(),
            resets: AtomicU64::new(0),
            refused: AtomicU16::new(0),
            retired: Default::default(),
            gvr: gvr.clone(),
        }
    }

    /// The watch cache, locked (briefly: nothing waits while holding it).
    pub fn cache(&self) -> MutexGuard<'_, WatchCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A listener woken at the next change (taken before reading the cache, so that no
    /// change falls between the read and the wait).
    pub fn listen(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    /// How many relists could not be told as events: a watch that saw another count must
    /// end with 410.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.changed.notify(usize::MAX);
    }

    /// Whether the store's own list was refused for good (401, 403: the node may not list
    /// the resource, a cluster without upstream's `yurt-hub-multiplexer` role; 404: no such
    /// resource, or offline nothing cached) the last time it was tried, and it has never
    /// been filled: the clients are better served the ordinary way than with 429 for ever.
    pub fn refused(&self) -> bool {
        matches!(self.refused.load(Ordering::Relaxed), 401 | 403 | 404)
    }

    /// `obj` as the store keeps it: with its kind and apiVersion, which a list's items lack
    /// and every watch event's object must carry.
    /// Whether the store was taken out of the set (`pool-scoped-metadata` no longer names
    /// it): its watches end, its informer stops, its clients go the ordinary way.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Returns once the store is [retired](Resource::retired).
    pub async fn wait_retired(&self) {
        loop {
            let woken = self.listen();
            if self.retired() {
                return;
            }
            woken.await;
        }
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.changed();
    }

    fn typed(&self, obj: &Value) -> Option<Vec<u8>> {
        if obj.get("kind").is_some_and(Value::is_string) {
            return serde_json::to_vec(obj).ok();
        }
        let mut obj = obj.clone();
        let map = obj.as_object_mut()?;
        map.insert("kind".into(), self.kind.clone().into());
        map.insert("apiVersion".into(), self.api_version.clone().into());
        serde_json::to_vec(&obj).ok()
    }
}

/// The node's multiplexer: a store per pool-scope resource.
#[derive(Debug)]
pub struct Multiplexer {
    /// The User-Agent its own requests carry, `multiplexer-proxy-<node>`: those go on to the
    /// cloud (or the disk), never back to a store.
    pub user_agent: String,
    /// `--pool-scope-resources`: the set when the pool's ConfigMap names none.
    flag: Vec<Gvr>,
    window: Duration,
    resources: std::sync::RwLock<Vec<Arc<Resource>>>,
}

impl Multiplexer {
    /// Node `node`'s stores of `gvrs`, each keeping `window` of events.
    pub fn new(node: &str, gvrs: &[Gvr], window: Duration) -> Self {
        Self {
            user_agent: crate::kube::multiplexer(node),
            flag: gvrs.to_vec(),
            window,
            resources: std::sync::RwLock::new(
                gvrs.iter()
                    .map(|g| Arc::new(Resource::new(g, window)))
                    .collect(),
            ),
        }
    }

    /// The stores.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The set the flag gave.
    pub fn flag_resources(&self) -> &[Gvr] {
        &self.flag
    }

    /// The store of a resource, if it is a pool-scope one.
    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| {
                r.gvr.group == group && r.gvr.version == version && r.gvr.resource == resource
            })
            .cloned()
    }

    /// Makes `gvrs` the set: a store no longer in it is [retired](Resource::retired), one
    /// new in it is made (empty: its clients get 429 until it is filled). Returns the new
    /// stores, for their informers to be started.
    pub fn set(&self, gvrs: &[Gvr]) -> Vec<Arc<Resource>> {
        let mut resources = self.resources.write().unwrap_or_else(|p| p.into_inner());
        let (kept, gone): (Vec<_>, Vec<_>) =
            resources.drain(..).partition(|r| gvrs.contains(&r.gvr));
        let added: Vec<Arc<Resource>> = gvrs
            .iter()
            .filter(|g| !kept.iter().any(|r| r.gvr == **g))
            .map(|g| Arc::new(Resource::new(g, self.window)))
            .collect();
        *resources = kept;
        resources.extend(added.iter().cloned());
        if !gone.is_empty() || !added.is_empty() {
            log::info!(
                "multiplexer: pool-scope resources now {}",
                resources
                    .iter()
                    .map(|r| r.gvr.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        drop(resources);
        for r in gone {
            r.retire();
        }
        added
    }
}

/// Fills a [`Resource`] from an [`crate::informer::Informer`].
pub struct Filler(pub Arc<Resource>);

impl Filler {
    fn apply(&self, kind: EventType, obj: &Value) {
        let Some(bytes) = self.0.typed(obj) else {
            return;
        };
        let applied = self.0.cache().apply(kind, bytes, Instant::now());
        match applied {
            Ok(Some(_)) => self.0.changed(),
            Ok(None) => {}
            Err(e) => log::warn!("multiplexer {}: an event left out: {e}", self.0.path),
        }
    }

    /// Replaces the store's objects with a list's, at `rv`.
    fn fill(&self, objects: Vec<Vec<u8>>, rv: &str) {
        let Ok(rv) = rv.parse::<u64>() else {
            log::warn!(
                "multiplexer {}: a list at resourceVersion {rv:?} left out",
                self.0.path
            );
            return;
        };
        self.0.refused.store(0, Ordering::Relaxed);
        let replaced = self.0.cache().replace(objects, rv, Instant::now());
        if replaced.is_err() {
            self.0.resets.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "multiplexer {}: listed again at {rv}; its watches start over",
                self.0.path
            );
        }
        self.0.changed();
    }
}

impl Handler for Filler {
    fn replace(&self, items: &[Value]) {
        self.replace_at(items, "0");
    }

    fn replace_at(&self, items: &[Value], rv: &str) {
        self.fill(items.iter().filter_map(|v| self.0.typed(v)).collect(), rv);
    }

    fn replace_raw(&self, items: &[&serde_json::value::RawValue], rv: &str) {
        // One item parsed at a time: 2,000 Services parsed whole would cost several times
        // the list's bytes, and an allocator keeps much of what a peak took.
        let objects = items
            .iter()
            .filter_map(|i| {
                let v: Value = serde_json::from_str(i.get()).ok()?;
                self.0.typed(&v)
            })
            .collect();
        self.fill(objects, rv);
    }

    fn upsert(&self, obj: &Value) {
        self.apply(EventType::Modified, obj);
    }

    fn delete(&self, obj: &Value) {
        self.apply(EventType::Deleted, obj);
    }

    fn refused(&self, status: u16) {
        if self.0.cache().is_synced() {
            return;
        }
        let before = self.0.refused.swap(status, Ordering::Relaxed);
        if before != status && self.0.refused() {
            log::warn!(
                "multiplexer {}: its list was answered {status}; clients are answered the ordinary way until it succeeds",
                self.0.path
            );
        }
    }

    fn bookmark(&self, rv: &str) {
        if let Ok(rv) = rv.parse::<u64>() {
            self.0.cache().bookmark(rv);
            self.0.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_scope_resources_read_as_upstream_writes_them() {
        let gvrs = Gvr::parse_list(DEFAULT_RESOURCES).unwrap();
        assert_eq!(
            gvrs.iter().map(Gvr::path).collect::<Vec<_>>(),
            [
                "/api/v1/services",
                "/apis/discovery.k8s.io/v1/endpointslices"
            ]
        );
        assert_eq!(gvrs[1].api_version(), "discovery.k8s.io/v1");
        assert_eq!(
            Resource::new(&gvrs[1], WINDOW).list_kind,
            "EndpointSliceList"
        );
        assert_eq!(Gvr::parse_list(" , ").unwrap(), []);
        assert_eq!(
            Gvr::parse_list("/v1/services,/v1/services").unwrap().len(),
            1
        );
        for bad in ["services", "/v1/", "a/b/c/d", "/v1/Services", "/v1/widgets"] {
            assert!(Gvr::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_filler_fills_the_cache_and_wakes_its_watchers() {
        let gvrs = Gvr::parse_list(DEFAULT_RESOURCES).unwrap();
        let r = Arc::new(Resource::new(&gvrs[0], WINDOW));
        let f = Filler(r.clone());
        let svc = |name: &str, rv: u64| {
            json!({"metadata": {"name": name, "namespace": "default",
                "resourceVersion": rv.to_string()}, "spec": {"type": "ClusterIP"}})
        };
        let woken = r.listen();
        f.refused(403);
        assert!(
            r.refused(),
            "the node may not list it: clients go the ordinary way"
        );
        f.refused(500);
        assert!(!r.refused(), "a passing failure: clients retry");
        f.replace_at(&[svc("a", 3)], "7");
        assert!(smol::future::block_on(smol::future::or(
            async {
                woken.await;
                true
            },
            async {
                async_io::Timer::after(Duration::from_secs(1)).await;
                false
            },
        )));
        assert!(r.cache().is_synced());
        f.upsert(&svc("b", 8));
        f.bookmark("9");
        f.delete(&svc("a", 10));
        let kinds: Vec<(EventType, u64)> = r
            .cache()
            .events_since(7)
            .unwrap()
            .iter()
            .map(|e| (e.kind, e.rv))
            .collect();
        assert_eq!(kinds, [(EventType::Added, 8), (EventType::Deleted, 10)]);
        assert!(!r.refused(), "a refusal counts only before the first list");
        f.refused(403);
        assert!(!r.refused());
        // A list that disagrees with what the cache saw: watches must start over.
        f.replace_at(&[], "9");
        assert_eq!(r.resets(), 1);
        assert_eq!(r.cache().resource_version(), 9);
    }
}

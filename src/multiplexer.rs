//! Shared list/watch of pool-scope resources (issue 18; reference §10.1): one in-memory watch
//! cache per resource (Services, EndpointSlices), filled by one list and watch upstream, from
//! which every local client's lists and watches are answered with kube-apiserver's semantics,
//! instead of each component opening its own cluster-wide watch over the WAN.
//!
//! [`watch_cache`] is the store: objects at a resourceVersion, a window of recent events,
//! lists (any version, an exact one inside the window, pages with continue tokens, label and
//! field selectors) and the start of watches (from any version, from one inside the window,
//! or 410 Gone outside it).

pub mod watch_cache;

pub use watch_cache::{CacheError, EventType, ListPage, ListQuery, WatchCache};

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::informer::Handler;

/// One pool-scope resource: its watch cache, filled by an informer through the hub's own
/// proxy (as `multiplexer-proxy-<node>`, so the cache keeps its answers apart for offline
/// starts), and the signal its watchers wait on.
#[derive(Debug)]
pub struct Resource {
    /// The collection, e.g. `/api/v1/services`.
    pub path: String,
    /// The list's kind, e.g. `ServiceList`.
    pub list_kind: String,
    /// The list's apiVersion, e.g. `v1` or `discovery.k8s.io/v1`.
    pub api_version: String,
    cache: Mutex<WatchCache>,
    changed: event_listener::Event,
    resets: AtomicU64,
}

impl Resource {
    /// The resource at `path` (its last segment names it, e.g. `services`), keeping the
    /// events of `window`.
    pub fn new(path: &str, list_kind: &str, api_version: &str, window: Duration) -> Self {
        let name = path.rsplit('/').next().unwrap_or("");
        Self {
            path: path.to_string(),
            list_kind: list_kind.to_string(),
            api_version: api_version.to_string(),
            cache: Mutex::new(WatchCache::new(name, window)),
            changed: event_listener::Event::new(),
            resets: AtomicU64::new(0),
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
}

/// Fills a [`Resource`] from an [`crate::informer::Informer`].
pub struct Filler(pub Arc<Resource>);

impl Filler {
    fn apply(&self, kind: EventType, obj: &Value) {
        let Ok(bytes) = serde_json::to_vec(obj) else {
            return;
        };
        let applied = self.0.cache().apply(kind, bytes, Instant::now());
        match applied {
            Ok(Some(_)) => self.0.changed(),
            Ok(None) => {}
            Err(e) => log::warn!("multiplexer {}: an event left out: {e}", self.0.path),
        }
    }
}

impl Handler for Filler {
    fn replace(&self, items: &[Value]) {
        self.replace_at(items, "0");
    }

    fn replace_at(&self, items: &[Value], rv: &str) {
        let Ok(rv) = rv.parse::<u64>() else {
            log::warn!(
                "multiplexer {}: a list at resourceVersion {rv:?} left out",
                self.0.path
            );
            return;
        };
        let objects = items
            .iter()
            .filter_map(|v| serde_json::to_vec(v).ok())
            .collect();
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

    fn upsert(&self, obj: &Value) {
        self.apply(EventType::Modified, obj);
    }

    fn delete(&self, obj: &Value) {
        self.apply(EventType::Deleted, obj);
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
    fn the_filler_fills_the_cache_and_wakes_its_watchers() {
        let r = Arc::new(Resource::new(
            "/api/v1/services",
            "ServiceList",
            "v1",
            Duration::from_secs(180),
        ));
        let f = Filler(r.clone());
        let svc = |name: &str, rv: u64| {
            json!({"metadata": {"name": name, "namespace": "default",
                "resourceVersion": rv.to_string()}, "spec": {"type": "ClusterIP"}})
        };
        let woken = r.listen();
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
        // A list that disagrees with what the cache saw: watches must start over.
        f.replace_at(&[], "9");
        assert_eq!(r.resets(), 1);
        assert_eq!(r.cache().resource_version(), 9);
    }
}

//! Garbage collection of the cache (reference §3.7, without its bugs A1 and A2).
//!
//! - At start-up, once the cloud answers: kubelet's cached pods that the cloud no longer lists
//!   for this node are removed, unless that would remove every one of them (a cloud that
//!   answers an empty list by mistake must not wipe the node's memory).
//! - Every `--gc-frequency`: cached Events of every component, in both API groups
//!   (`events.v1.core`, which kubelet writes and upstream never collects, and
//!   `events.v1.events.k8s.io`), are removed when older than `--event-ttl` (even offline) or
//!   when the cloud answers 404 for them. The first other answer ends the cloud checks of
//!   that round, so an unhealthy cloud is not hammered.
//!
//! Removal goes through the cache writer ([`Cache::forget`]), in order with everything else
//! it applies, and takes the object out of every list view too.

use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::object::parse_rv;
use crate::cache::{Cache, ObjectKey};
use crate::health::Health;
use crate::upstream::Upstream;

/// The Event resources collected, with the API path prefix of each.
const EVENTS: &[(&str, &str)] = &[
    ("events.v1.core", "/api/v1"),
    ("events.v1.events.k8s.io", "/apis/events.k8s.io/v1"),
];

/// The collector task.
pub struct Collector {
    node: String,
    every: Duration,
    event_ttl: Duration,
    timeout: Duration,
    upstream: Arc<Upstream>,
    health: Arc<Health>,
    cache: Cache,
}

/// When an Event last happened, in seconds since the epoch: the newest of the times it
/// reports (either API group's fields), or, when it reports none, when it was created.
pub fn event_time(event: &Value) -> Option<u64> {
    let newest = |fields: &[&Value]| {
        fields
            .iter()
            .filter_map(|v| v.as_str().and_then(crate::kube::time::parse))
            .max()
    };
    newest(&[
        &event["lastTimestamp"],
        &event["deprecatedLastTimestamp"],
        &event["eventTime"],
        &event["series"]["lastObservedTime"],
    ])
    .or_else(|| {
        newest(&[
            &event["firstTimestamp"],
            &event["deprecatedFirstTimestamp"],
            &event["metadata"]["creationTimestamp"],
        ])
    })
}

/// What the collector needs from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node whose pods are collected.
    pub node: String,
    /// `--gc-frequency`.
    pub every: Duration,
    /// `--event-ttl`.
    pub event_ttl: Duration,
    /// The timeout of each request to the cloud (at least 5 s).
    pub timeout: Duration,
}

impl Collector {
    /// A collector for the settings' node, using the hub's own connections to the cloud.
    pub fn new(
        settings: Settings,
        upstream: Arc<Upstream>,
        health: Arc<Health>,
        cache: Cache,
    ) -> Self {
        Self {
            node: settings.node,
            every: settings.every,
            event_ttl: settings.event_ttl,
            timeout: settings.timeout.max(Duration::from_secs(5)),
            upstream,
            health,
            cache,
        }
    }

    fn healthy_server(&self) -> Option<usize> {
        self.upstream
            .order()
            .into_iter()
            .find(|i| self.health.is_healthy(*i))
    }

    /// Collects pods once, as soon as the cloud answers after start-up, and Events every
    /// `--gc-frequency` meanwhile. `gate` resolves when the hub has a client certificate to
    /// talk to the cloud with.
    pub async fn run(self, gate: impl std::future::Future<Output = ()>) {
        gate.await;
        self.health.first_probe_done().await;
        let pods = async {
            if self.healthy_server().is_none() {
                log::info!("gc: cloud unreachable; cached pods are checked when it answers");
                self.health.wait_healthy().await;
            }
            self.pods().await;
        };
        let events = async {
            loop {
                self.events().await;
                async_io::Timer::after(self.every).await;
            }
        };
        smol::future::zip(pods, events).await;
    }

    /// Removes kubelet's cached pods the cloud no longer has on this node.
    pub async fn pods(&self) {
        let cache = self.cache.clone();
        let cached: Vec<ObjectKey> = smol::unblock(move || {
            cache
                .store()
                .list("kubelet", "pods.v1.core", None)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        })
        .await;
        if cached.is_empty() {
            return;
        }
        let Some(server) = self.healthy_server() else {
            log::info!(
                "gc: cloud unreachable at start-up; the {} cached pods are kept",
                cached.len()
            );
            return;
        };
        // Names are all that is needed: metadata only, a fraction of the bytes on the WAN.
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", self.node);
        let accept =
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        let listed = match self
            .upstream
            .fetch_as(server, "GET", &path, None, accept, self.timeout)
            .await
        {
            Ok((200, body)) => serde_json::from_slice::<Value>(&body).ok(),
            Ok((status, _)) => {
                log::warn!("gc: listing this node's pods answered {status}; cached pods kept");
                return;
            }
            Err(e) => {
                log::warn!("gc: listing this node's pods: {e}; cached pods kept");
                return;
            }
        };
        let Some(items) = listed.as_ref().and_then(|l| l["items"].as_array()) else {
            log::warn!("gc: the pod list does not parse; cached pods kept");
            return;
        };
        // A pod re-created after this list is newer than it: kept.
        let list_rv = parse_rv(
            listed
                .as_ref()
                .and_then(|l| l["metadata"]["resourceVersion"].as_str()),
        );
        let live: HashSet<(&str, &str)> = items
            .iter()
            .filter_map(|p| {
                Some((
                    p["metadata"]["namespace"].as_str()?,
                    p["metadata"]["name"].as_str()?,
                ))
            })
            .collect();
        let gone: Vec<ObjectKey> = cached
            .iter()
            .filter(|k| !live.contains(&(k.namespace.as_str(), k.name.as_str())))
            .cloned()
            .collect();
        if gone.len() == cached.len() {
            log::warn!(
                "gc: the cloud lists none of the {} cached pods of {}; keeping them (never all at once)",
                cached.len(),
                self.node
            );
            return;
        }
        for k in gone {
            log::info!(
                "gc: pod {}/{} is gone from the cloud; removed from the cache",
                k.namespace,
                k.name
            );
            self.cache.forget(k, list_rv);
        }
    }

    /// Removes cached Events past their TTL or gone from the cloud.
    pub async fn events(&self) {
        let cache = self.cache.clone();
        let now = crate::kube::time::now_secs();
        // Each Event with its time and the resourceVersion seen, so one updated meanwhile stays.
        let found: Vec<(ObjectKey, Option<u64>, u64)> = smol::unblock(move || {
            let store = cache.store();
            let mut out = Vec::new();
            for component in store.components() {
                for (resource, _) in EVENTS {
                    for (key, bytes) in store.list(&component, resource, None).unwrap_or_default() {
                        let v = serde_json::from_slice::<Value>(&bytes).ok();
                        let rv = parse_rv(
                            v.as_ref()
                                .and_then(|v| v["metadata"]["resourceVersion"].as_str()),
                        );
                        let stored = key.rel_path().ok().and_then(|rel| {
                            let m = std::fs::metadata(store.root().join(rel)).ok()?;
                            let t = m.modified().ok()?;
                            t.duration_since(std::time::UNIX_EPOCH)
                                .ok()
                                .map(|d| d.as_secs())
                        });
                        // The TTL runs at the latest from when the hub stored the Event: a
                        // body's own times (an offline create's, in 2099) never extend it.
                        let at = match (v.as_ref().and_then(event_time), stored) {
                            (Some(t), Some(s)) => Some(t.min(s)),
                            (t, s) => t.or(s),
                        };
                        out.push((key, at, rv));
                    }
                }
            }
            out
        })
        .await;
        if found.is_empty() {
            return;
        }
        let ttl = self.event_ttl.as_secs();
        let mut cloud = self.healthy_server();
        let (mut expired, mut gone, mut kept) = (0, 0, 0);
        for (key, at, rv) in found {
            if at.is_some_and(|t| now.saturating_sub(t) > ttl) {
                self.cache.forget(key, rv);
                expired += 1;
                continue;
            }
            let Some(server) = cloud else {
                kept += 1;
                continue;
            };
            let prefix = EVENTS
                .iter()
                .find(|(r, _)| *r == key.resource)
                .map_or("/api/v1", |(_, p)| *p);
            let path = format!("{prefix}/namespaces/{}/events/{}", key.namespace, key.name);
            match self
                .upstream
                .fetch(server, "GET", &path, None, self.timeout)
                .await
            {
                Ok((404, _)) => {
                    self.cache.forget(key, rv);
                    gone += 1;
                }
                Ok((200, _)) => kept += 1,
                other => {
                    let why = match other {
                        Ok((status, _)) => format!("answered {status}"),
                        Err(e) => e.to_string(),
                    };
                    log::info!("gc: checking Events with the cloud stopped: {path} {why}");
                    cloud = None;
                    kept += 1;
                }
            }
        }
        // A round that removed nothing is no event (offline, every round is one such).
        let level = if expired + gone > 0 {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "gc: Events: {expired} older than {}s and {gone} gone from the cloud removed, {kept} kept",
            ttl
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_newest_of_an_events_times_counts() {
        let core = json!({"metadata": {"creationTimestamp": "2026-11-29T10:00:00Z"},
            "firstTimestamp": "2026-11-29T10:00:00Z", "lastTimestamp": "2026-11-29T11:00:00Z"});
        assert_eq!(
            super::event_time(&core),
            crate::kube::time::parse("2026-11-29T11:00:00Z")
        );
        let v1 = json!({"eventTime": "2026-11-29T10:00:00.000001Z",
            "series": {"count": 3, "lastObservedTime": "2026-11-29T12:00:00.500000Z"}});
        assert_eq!(
            super::event_time(&v1),
            crate::kube::time::parse("2026-11-29T12:00:00Z")
        );
        assert_eq!(super::event_time(&json!({"eventTime": null})), None);
        let created = json!({"metadata": {"creationTimestamp": "2026-11-29T10:00:00Z"}});
        assert_eq!(
            super::event_time(&created),
            crate::kube::time::parse("2026-11-29T10:00:00Z")
        );
    }
}

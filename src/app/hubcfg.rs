//! The live part of the configuration: ConfigMap `<--namespace>/yurt-hub-cfg`, listed and
//! watched through the hub's own proxy with the hub's User-Agent, so that its own reads are
//! cached and keep working offline (reference §3.1, §13.2 item 13).

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::cache::Agents;
use crate::filter::{FilterKind, Filters};
use crate::informer::{Handler, Informer, Source};

/// The ConfigMap's name.
pub const HUB_CONFIGMAP: &str = "yurt-hub-cfg";

/// What yurt-hub-cfg says, applied to the shared settings as it changes.
pub struct LiveConfig {
    source: Source,
    namespace: String,
    node: String,
    agents: Arc<RwLock<Agents>>,
    synced: Arc<AtomicBool>,
    filters: Option<Arc<Filters>>,
    /// The keys last reported as meaning nothing (reported again only when they change).
    unknown_keys: std::sync::Mutex<Vec<String>>,
}

impl LiveConfig {
    /// Watches yurt-hub-cfg in `namespace` through `source`, updating `agents`;
    /// `synced` turns true once the ConfigMap has been read (a readiness condition).
    pub fn new(
        source: Source,
        namespace: &str,
        node: &str,
        agents: Arc<RwLock<Agents>>,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Self {
            source,
            namespace: namespace.to_string(),
            node: node.to_string(),
            agents,
            synced,
            filters: None,
            unknown_keys: Default::default(),
        }
    }

    /// Also applies the per-filter component lists (data keys named after filters).
    pub fn with_filters(mut self, filters: Arc<Filters>) -> Self {
        self.filters = Some(filters);
        self
    }

    fn apply(&self, cm: Option<&Value>) {
        self.report_unknown_keys(cm);
        if let Some(f) = &self.filters {
            let data: std::collections::BTreeMap<String, String> = cm
                .and_then(|c| c["data"].as_object())
                .map(|d| {
                    d.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            f.set_extra_components(&data);
        }
        let value = cm
            .and_then(|c| c["data"]["cache_agents"].as_str())
            .unwrap_or("");
        let new = Agents::new(&self.node, value);
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        if *agents != new {
            log::info!("yurt-hub-cfg: cache_agents now {value:?}");
            *agents = new;
        }
    }

    /// A misspelt key (`servicetopolgy: coredns`) would otherwise change nothing, silently.
    fn report_unknown_keys(&self, cm: Option<&Value>) {
        let unknown: Vec<String> = cm
            .and_then(|c| c["data"].as_object())
            .into_iter()
            .flat_map(|d| d.keys())
            .filter(|k| *k != "cache_agents" && k.parse::<FilterKind>().is_err())
            .cloned()
            .collect();
        let mut last = self.unknown_keys.lock().unwrap_or_else(|e| e.into_inner());
        if *last != unknown {
            if !unknown.is_empty() {
                log::warn!(
                    "{HUB_CONFIGMAP}: keys {unknown:?} are neither cache_agents nor a filter's name ({}): ignored",
                    FilterKind::ALL.map(FilterKind::name).join(", ")
                );
            }
            *last = unknown;
        }
    }

    /// Lists and watches forever, backing off after failures.
    pub async fn run(self) {
        let path = format!(
            "/api/v1/namespaces/{}/configmaps?fieldSelector=metadata.name%3D{HUB_CONFIGMAP}",
            self.namespace
        );
        Informer::new(self.source, path, HUB_CONFIGMAP)
            .run(self)
            .await
    }
}

impl Handler for LiveConfig {
    fn replace(&self, items: &[Value]) {
        self.apply(items.first());
        self.synced.store(true, Ordering::Relaxed);
    }

    fn upsert(&self, obj: &Value) {
        self.apply(Some(obj));
    }

    fn delete(&self, _obj: &Value) {
        self.apply(None);
    }

    /// Offline with nothing cached yet the list is a 404: no ConfigMap means no extra agents.
    fn missing(&self) {
        self.apply(None);
        self.synced.store(true, Ordering::Relaxed);
    }
}

//! The live part of the configuration: ConfigMap `<--namespace>/yurt-hub-cfg`, listed and
//! watched through the hub's own proxy with the hub's User-Agent, so that its own reads are
//! cached and keep working offline (reference §3.1, §13.2 item 13).

use async_io::{Async, Timer};
use serde_json::Value;
use smol::io::AsyncWriteExt;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::cache::Agents;
use crate::filter::Filters;
use crate::http::{BodyReader, Framing, Limits, Reader, RequestHead};

/// The ConfigMap's name.
pub const HUB_CONFIGMAP: &str = "yurt-hub-cfg";

/// What yurt-hub-cfg says, applied to the shared settings as it changes.
pub struct LiveConfig {
    proxy: SocketAddr,
    namespace: String,
    node: String,
    agents: Arc<RwLock<Agents>>,
    synced: Arc<AtomicBool>,
    filters: Option<Arc<Filters>>,
}

/// Why one round of list-and-watch ended.
#[derive(Debug)]
enum RoundError {
    Io(String),
    Status(u16),
    Gone,
}

impl std::fmt::Display for RoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoundError::Io(e) => write!(f, "{e}"),
            RoundError::Status(s) => write!(f, "answered {s}"),
            RoundError::Gone => write!(f, "resource version expired"),
        }
    }
}

impl LiveConfig {
    /// Watches yurt-hub-cfg in `namespace` through the proxy at `proxy`, updating `agents`;
    /// `synced` turns true once the ConfigMap has been read (a readiness condition).
    pub fn new(
        proxy: SocketAddr,
        namespace: &str,
        node: &str,
        agents: Arc<RwLock<Agents>>,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Self {
            proxy,
            namespace: namespace.to_string(),
            node: node.to_string(),
            agents,
            synced,
            filters: None,
        }
    }

    /// Also applies the per-filter component lists (data keys named after filters).
    pub fn with_filters(mut self, filters: Arc<Filters>) -> Self {
        self.filters = Some(filters);
        self
    }

    fn apply(&self, cm: Option<&Value>) {
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

    async fn request(
        &self,
        target: &str,
    ) -> Result<(u16, Reader<Async<TcpStream>>, BodyReader), RoundError> {
        let io = |e: std::io::Error| RoundError::Io(e.to_string());
        let mut stream = Async::<TcpStream>::connect(self.proxy).await.map_err(io)?;
        let mut head = RequestHead::new("GET", target);
        head.headers.push("Host", self.proxy.to_string());
        head.headers.push("User-Agent", crate::app::USER_AGENT);
        head.headers.push("Accept", "application/json");
        let mut out = Vec::new();
        head.write_to(&mut out);
        stream.write_all(&out).await.map_err(io)?;
        let mut reader = Reader::new(stream);
        let resp = reader
            .read_response_head(&Limits::default())
            .await
            .map_err(|e| RoundError::Io(e.to_string()))?;
        let framing =
            Framing::of_response(&resp, "GET").map_err(|e| RoundError::Io(e.to_string()))?;
        Ok((resp.status, reader, BodyReader::new(framing)))
    }

    /// One list, then one watch until it ends.
    async fn round(&self) -> Result<(), RoundError> {
        let path = format!(
            "/api/v1/namespaces/{}/configmaps?fieldSelector=metadata.name%3D{HUB_CONFIGMAP}",
            self.namespace
        );
        let (status, mut reader, mut body) = self.request(&path).await?;
        let mut bytes = Vec::new();
        while body
            .read(&mut reader, &mut bytes)
            .await
            .map_err(|e| RoundError::Io(e.to_string()))?
            > 0
        {
            if bytes.len() > 1024 * 1024 {
                return Err(RoundError::Io("yurt-hub-cfg list too large".into()));
            }
        }
        // Offline with nothing cached yet the list is a 404: no ConfigMap means no extra agents.
        let list: Value = match status {
            200 => serde_json::from_slice(&bytes).map_err(|e| RoundError::Io(e.to_string()))?,
            404 => serde_json::json!({"items": [], "metadata": {"resourceVersion": "0"}}),
            s => return Err(RoundError::Status(s)),
        };
        self.apply(list["items"].as_array().and_then(|i| i.first()));
        self.synced.store(true, Ordering::Relaxed);
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let (status, mut reader, mut body) = self
            .request(&format!(
                "{path}&watch=true&resourceVersion={rv}&timeoutSeconds=300"
            ))
            .await?;
        if status != 200 {
            return Err(RoundError::Status(status));
        }
        let mut buf = Vec::new();
        loop {
            let n = body
                .read(&mut reader, &mut buf)
                .await
                .map_err(|e| RoundError::Io(e.to_string()))?;
            if n == 0 {
                return Ok(());
            }
            while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=p).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                match ev["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => self.apply(Some(&ev["object"])),
                    Some("DELETED") => self.apply(None),
                    Some("ERROR") => return Err(RoundError::Gone),
                    _ => {}
                }
            }
        }
    }

    /// Lists and watches forever, backing off after failures.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.round().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    log::debug!("yurt-hub-cfg watch ended: {e}; retrying in {backoff:?}");
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

//! The admin port (`--bind-address:--serve-port`, 127.0.0.1:10267 by default): `/v1/healthz`,
//! `/v1/readyz`, `/metrics` in Prometheus text format (reference §9), `GET /pods` (the pods
//! cached for kubelet, a `PodList`), `POST /v1/token` to hand the hub a new bootstrap token
//! (reference §7.4), and the OTA update endpoints ([`ota`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::cache::Cache;
use crate::certs::Certs;
use crate::filter::{FilterKind, Filters, Topology};
use crate::health::Health;
use crate::http::{RequestHead, ResponseHead};
use crate::metrics::{self, Exposition, Metrics};
use crate::server::{respond, ClientConn, Gate, Service};
use crate::upstream::Upstream;

pub mod ota;

/// The admin server.
pub struct Admin {
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<dyn Gate>,
    /// servicetopology's inputs, when that filter runs (whether it fails open).
    pub topology: Option<Arc<Topology>>,
    /// The filters (which are held back for want of a serving certificate).
    pub filters: Option<Arc<Filters>>,
    /// Cloud health (edge mode).
    pub health: Option<Arc<Health>>,
    /// The cache (edge mode).
    pub cache: Option<Cache>,
    /// The upstream side.
    pub upstream: Arc<Upstream>,
    /// The certificate manager (for `/v1/token`).
    pub certs: Arc<Certs>,
    /// This node and its static pod directory, for OTA upgrades.
    pub ota: ota::Settings,
}

async fn text(conn: &mut ClientConn, status: u16, content_type: &str, body: &str) -> bool {
    let mut head = ResponseHead::new(status);
    head.headers.push("Content-Type", content_type);
    respond(&mut conn.writer, head, body.as_bytes())
        .await
        .is_ok()
}

impl Admin {
    /// The /metrics document; `usage` is the cache's per-component size, when measured.
    pub fn render(&self, usage: Option<&BTreeMap<String, (u64, u64)>>) -> String {
        let mut out = Exposition::default();
        if let Some(u) = usage {
            for (family, pick) in [(&metrics::CACHE_OBJECTS, 0), (&metrics::CACHE_BYTES, 1)] {
                out.family(family);
                for (component, v) in u {
                    let n = if pick == 0 { v.0 } else { v.1 };
                    out.sample(family, &[("component", component.as_str())], n as f64);
                }
            }
        }
        self.metrics.render(&mut out);
        if let Some(h) = &self.health {
            out.family(&metrics::SERVER_HEALTHY);
            for (i, url) in self.upstream.server_urls().enumerate() {
                let v = if h.is_healthy(i) { 1.0 } else { 0.0 };
                out.sample(&metrics::SERVER_HEALTHY, &[("server", url.authority())], v);
            }
        }
        if let Some(c) = &self.cache {
            let s = c.stats();
            let counters = [
                (&metrics::CACHE_WRITES, &s.writes),
                (&metrics::CACHE_WRITE_ERRORS, &s.write_errors),
                (&metrics::CACHE_QUEUE_OVERFLOWS, &s.overflows),
                (&metrics::CACHE_EVICTIONS, &s.evictions),
                (&metrics::CACHE_EVICTED_LISTS, &s.evicted_lists),
                (&metrics::CACHE_GC_REMOVED, &s.collected),
                (&metrics::CACHE_VIEWS_DROPPED, &s.views_dropped),
            ];
            for (family, v) in counters {
                out.single(family, v.load(Ordering::Relaxed) as f64);
            }
            out.single(
                &metrics::CACHE_QUARANTINED,
                s.quarantined.load(Ordering::Relaxed) as f64,
            );
            out.single(&metrics::CACHE_VIEWS, c.view_count() as f64);
        }
        out.family(&metrics::CLOSABLE_CONNS);
        for (server, n) in self.upstream.open_connections() {
            out.sample(&metrics::CLOSABLE_CONNS, &[("server", server)], n as f64);
        }
        out.family(&metrics::CERTIFICATE_EXPIRY);
        for (name, secs) in self.certs.expiry_seconds() {
            out.sample(&metrics::CERTIFICATE_EXPIRY, &[("certificate", name)], secs);
        }
        out.single(
            &metrics::UPSTREAM_IDLE,
            self.upstream.idle_connections() as f64,
        );
        if self.topology.is_some() || self.filters.is_some() {
            out.family(&metrics::FILTER_FAIL_OPEN);
        }
        if let Some(t) = &self.topology {
            let v = if t.failing_open() { 1.0 } else { 0.0 };
            out.sample(
                &metrics::FILTER_FAIL_OPEN,
                &[("filter", "servicetopology")],
                v,
            );
        }
        if let Some(f) = &self.filters {
            let held = f.held_for_tls();
            for kind in FilterKind::ALL
                .into_iter()
                .filter(|k| k.points_at_tls_listener())
            {
                let v = if held.contains(&kind) { 1.0 } else { 0.0 };
                out.sample(&metrics::FILTER_FAIL_OPEN, &[("filter", kind.name())], v);
            }
        }
        out.family(&metrics::BUILD_INFO);
        out.sample(
            &metrics::BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
            ],
            1.0,
        );
        out.text().to_string()
    }
}

/// The largest `/v1/token` body read.
const MAX_TOKEN_BODY: usize = 4096;

/// The join token in a `/v1/token` body: upstream's JSON `{"jointoken":"…"}`, or the
/// `jointoken:…` (or form-encoded `jointoken=…`) that the operator FAQ's own
/// `curl -d "jointoken:xxx"` sends. `Ok(None)` when the body names no join token.
fn join_token_of(body: &[u8]) -> Result<Option<String>, serde_json::Error> {
    let json = serde_json::from_slice::<std::collections::HashMap<String, String>>(body);
    match json {
        Ok(tokens) => Ok(tokens.get("jointoken").cloned()),
        Err(e) => {
            let text = std::str::from_utf8(body).unwrap_or("").trim();
            match text.split_once([':', '=']) {
                Some((key, token)) if key.trim() == "jointoken" => {
                    Ok(Some(token.trim().to_string()))
                }
                _ => Err(e),
            }
        }
    }
}

impl Admin {
    /// `POST /v1/token` with `{"jointoken":"<id>.<secret>"}` (or `jointoken:<id>.<secret>`,
    /// as the FAQ's curl sends it); the answers are upstream's
    /// (reference §7.4), as plain text.
    async fn token(&self, conn: &mut ClientConn, head: &RequestHead) -> bool {
        let plain = "text/plain; charset=utf-8";
        let framing = match crate::http::Framing::of_request(head) {
            Ok(f) => f,
            Err(e) => {
                let _ = text(conn, 400, plain, &format!("could not decode tokens, {e}")).await;
                return false;
            }
        };
        let mut body = crate::http::BodyReader::new(framing);
        let mut data = Vec::new();
        loop {
            match body.read(&mut conn.reader, &mut data).await {
                Ok(0) => break,
                Ok(_) if data.len() > MAX_TOKEN_BODY => {
                    let _ = text(conn, 413, plain, "request body too large").await;
                    return false;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        let token = match join_token_of(&data) {
            Ok(t) => t,
            Err(e) => {
                return text(conn, 400, plain, &format!("could not decode tokens, {e}")).await
            }
        };
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            return text(conn, 400, plain, "no join token is set").await;
        };
        let token = token.as_str();
        match self.certs.update_token(token).await {
            Ok(()) => {
                log::info!("bootstrap token replaced through /v1/token");
                text(conn, 200, plain, "update bootstrap token successfully").await
            }
            Err(e) => {
                log::warn!("/v1/token: {e}");
                text(
                    conn,
                    500,
                    plain,
                    &format!("could not update bootstrap token, {e}"),
                )
                .await
            }
        }
    }
}

/// `GET /pods`'s answer: a `PodList` of every pod cached for kubelet, or why there is none.
fn cached_pods(cache: &Cache) -> Result<Vec<u8>, (u16, String)> {
    let objects = cache
        .store()
        .list("kubelet", "pods.v1.core", None)
        .map_err(|e| (500, format!("reading the cached pods: {e}")))?;
    let mut body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#.to_vec();
    for (i, (key, bytes)) in objects.iter().enumerate() {
        // As upstream: a cached object that is no Pod fails the answer, never hides in it.
        let kind = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string));
        if kind.as_deref() != Some("Pod") {
            return Err((
                500,
                format!(
                    "{}/{}: the cached object is not a Pod",
                    key.namespace, key.name
                ),
            ));
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(bytes.trim_ascii());
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

impl Admin {
    /// `GET /pods`: kubelet's cached pods, as upstream serves them for node-local tools.
    async fn pods(&self, conn: &mut ClientConn) -> bool {
        let Some(cache) = self.cache.clone() else {
            return text(
                conn,
                501,
                "text/plain; charset=utf-8",
                "/pods lists the pods cached for kubelet: in the cloud working mode nothing is cached",
            )
            .await;
        };
        match smol::unblock(move || cached_pods(&cache)).await {
            Ok(body) => {
                let mut head = ResponseHead::new(200);
                head.headers.push("Content-Type", "application/json");
                respond(&mut conn.writer, head, &body).await.is_ok()
            }
            Err((status, why)) => text(conn, status, "text/plain; charset=utf-8", &why).await,
        }
    }
}

impl Service for Admin {
    async fn serve(&self, conn: &mut ClientConn, head: RequestHead) -> bool {
        // Admin requests carry no bodies worth reading; one with a body ends the connection.
        let keep = head.keep_alive()
            && matches!(
                crate::http::Framing::of_request(&head),
                Ok(crate::http::Framing::Empty)
            );
        let get = matches!(head.method.as_str(), "GET" | "HEAD");
        if let Some((ns, pod, action)) = ota::route(head.path()) {
            let ok = if head.method == "POST" {
                let health = self.health.as_deref();
                let (status, body) =
                    ota::run(&self.upstream, health, &self.ota, ns, pod, action).await;
                // Upstream's answers: a success's text is sent as JSON, failures as text.
                let content_type = if status == 200 {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                text(conn, status, content_type, &body).await
            } else {
                text(conn, 405, "text/plain; charset=utf-8", "method not allowed").await
            };
            return ok && keep;
        }
        let ok = match head.path() {
            "/v1/healthz" if get => text(conn, 200, "text/plain; charset=utf-8", "OK").await,
            "/v1/readyz" if get => match self.readiness.check() {
                Ok(()) => {
                    // Ready, but say what still waits, so an operator sees why pods are not
                    // pointed at the hub.
                    let body = match self.filters.as_ref().and_then(|f| f.held_for_tls_note()) {
                        Some(note) => format!("OK\n{note}"),
                        None => "OK".to_string(),
                    };
                    text(conn, 200, "text/plain; charset=utf-8", &body).await
                }
                Err(why) => text(conn, 500, "text/plain; charset=utf-8", &why.to_string()).await,
            },
            "/metrics" => {
                let usage = match self.cache.clone() {
                    Some(c) => Some(smol::unblock(move || c.store().usage()).await),
                    None => None,
                };
                let body = self.render(usage.as_ref());
                text(conn, 200, "text/plain; version=0.0.4; charset=utf-8", &body).await
            }
            "/pods" if get => self.pods(conn).await,
            "/v1/token" if matches!(head.method.as_str(), "POST" | "PUT") => {
                return self.token(conn, &head).await && head.keep_alive();
            }
            "/v1/healthz" | "/v1/readyz" | "/v1/token" | "/pods" => {
                text(conn, 405, "text/plain; charset=utf-8", "method not allowed").await
            }
            _ => text(conn, 404, "text/plain; charset=utf-8", "404 page not found").await,
        };
        ok && keep
    }
}

//! Counters and gauges, with upstream YurtHub's names and labels (reference §8), and their
//! Prometheus text exposition (format 0.0.4), written by hand: it is small.
//!
//! Every pod on the node can send requests, so no request may grow the metrics without bound:
//! label values are cut to [`MAX_LABEL_BYTES`], a family holds at most [`MAX_SERIES`] series of
//! requests that did not come with the node's identity (the rest share one `other` series per
//! verb), an in-flight series that sits at zero is dropped after [`IDLE_SERIES`], and requests
//! the hub refuses are only counted, by reason.
//!
//! ```
//! use yurthub::metrics::{Exposition, Metrics, RequestLabels};
//! let m = Metrics::default();
//! let labels = RequestLabels::new("list", "pods", "", "kubelet/v1.32");
//! let guard = m.request_started(labels.clone(), true);
//! m.add_traffic(guard.labels(), true, 512);
//! drop(guard);
//! let mut out = Exposition::default();
//! m.render(&mut out);
//! assert!(out.text().contains("node_yurthub_in_flight_requests_collector{verb=\"list\",resource=\"pods\",subresources=\"\",client=\"kubelet/v1.32\"} 0"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest label value kept; longer ones are cut (User-Agents, resource names from paths).
pub const MAX_LABEL_BYTES: usize = 128;
/// The most series a per-request family holds for requests without the node's identity.
pub const MAX_SERIES: usize = 256;
/// How long an in-flight series at zero stays before it is dropped.
pub const IDLE_SERIES: Duration = Duration::from_secs(600);
/// The label value of the series that requests past [`MAX_SERIES`] share.
pub const OTHER: &str = "other";

/// The labels of the per-request families.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestLabels {
    /// The Kubernetes verb.
    pub verb: String,
    /// The resource.
    pub resource: String,
    /// The subresource.
    pub subresources: String,
    /// The full lower-cased User-Agent.
    pub client: String,
}

/// `v` cut to at most [`MAX_LABEL_BYTES`] on a character boundary.
fn bounded(v: &str) -> String {
    let mut end = v.len().min(MAX_LABEL_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

impl RequestLabels {
    /// The labels of a request, each cut to [`MAX_LABEL_BYTES`].
    pub fn new(verb: &str, resource: &str, subresources: &str, client: &str) -> Self {
        Self {
            verb: bounded(verb),
            resource: bounded(resource),
            subresources: bounded(subresources),
            client: bounded(client),
        }
    }

    /// The series requests share once a family is full: only the verb is kept.
    fn other(&self) -> Self {
        Self {
            verb: self.verb.clone(),
            resource: OTHER.into(),
            subresources: String::new(),
            client: OTHER.into(),
        }
    }
}

/// Why the hub refused a request itself (the label of [`REFUSED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalReason {
    /// A target or body framing the hub cannot read (400).
    BadRequest,
    /// The node's identity asked for where only a pod's own token may be used (401).
    Unauthorized,
    /// The hub is not ready yet (503).
    NotReady,
}

impl RefusalReason {
    const ALL: [RefusalReason; 3] = [
        RefusalReason::BadRequest,
        RefusalReason::Unauthorized,
        RefusalReason::NotReady,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::BadRequest => "bad_request",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::NotReady => "not_ready",
        }
    }
}

/// One in-flight series: its count and when it last changed.
struct Gauge {
    n: i64,
    changed: Instant,
}

/// The request metrics the proxy updates.
#[derive(Default)]
pub struct Metrics {
    in_flight: Gauges,
    aggregated: Gauges,
    for_multiplexer: Gauges,
    in_flight_total: AtomicI64,
    traffic: Mutex<BTreeMap<RequestLabels, u64>>,
    gzip_saved: AtomicU64,
    refused: [AtomicU64; 3],
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a> {
    metrics: &'a Metrics,
    family: Which,
    labels: RequestLabels,
    server: String,
}

/// Which in-flight family a guard counts in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    /// Requests proxied or answered from the cache ([`IN_FLIGHT`]).
    Proxied,
    /// Requests the multiplexer answers ([`AGGREGATED_IN_FLIGHT`]).
    Aggregated,
    /// The multiplexer's own requests to a server ([`FOR_MULTIPLEXER`]).
    ForMultiplexer,
}

impl InFlight<'_> {
    /// The labels the request is counted under (`other` ones once the family is full): its
    /// traffic goes under the same.
    pub fn labels(&self) -> &RequestLabels {
        &self.labels
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // The series stays, at 0, once the request ends (the FAQ reads it that way), until
        // it has been idle for IDLE_SERIES.
        self.metrics
            .gauges(self.family)
            .end(&self.labels, &self.server);
        if self.family != Which::ForMultiplexer {
            self.metrics.in_flight_total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One in-flight family: a gauge per labels (and server, for the family that has one).
#[derive(Default)]
struct Gauges(Mutex<BTreeMap<(RequestLabels, String), Gauge>>);

impl Gauges {
    /// Counts one more under `labels` (or `other`, once the family is full); the labels used.
    fn start(&self, labels: RequestLabels, server: &str, node_identity: bool) -> RequestLabels {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (labels, server.to_string());
        if !map.contains_key(&key) {
            if map.len() >= MAX_SERIES {
                let now = Instant::now();
                map.retain(|_, g| g.n != 0 || now.duration_since(g.changed) < IDLE_SERIES);
            }
            key.0 = admitted(key.0, map.len(), node_identity);
        }
        let g = map.entry(key.clone()).or_insert(Gauge {
            n: 0,
            changed: Instant::now(),
        });
        g.n += 1;
        g.changed = Instant::now();
        key.0
    }

    fn end(&self, labels: &RequestLabels, server: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = map.get_mut(&(labels.clone(), server.to_string())) {
            g.n -= 1;
            g.changed = Instant::now();
        }
    }

    fn render(&self, out: &mut Exposition, family: &Family) {
        out.family(family);
        for ((l, server), g) in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let mut labels = vec![
                ("verb", l.verb.clone()),
                ("resource", l.resource.clone()),
                ("subresources", l.subresources.clone()),
                ("client", l.client.clone()),
            ];
            if family.name == FOR_MULTIPLEXER.name {
                labels.push(("server", server.clone()));
            }
            out.sample(family, &labels, g.n as f64);
        }
    }
}

/// The labels a new series gets in a family that already holds `len` series: its own while
/// there is room (always, for the node's own requests), else the shared `other` one.
fn admitted(labels: RequestLabels, len: usize, node_identity: bool) -> RequestLabels {
    if node_identity || len < MAX_SERIES {
        labels
    } else {
        labels.other()
    }
}

impl Metrics {
    /// Counts a request in flight until the returned guard is dropped. `node_identity`: the
    /// request came as the node (token-less where that is allowed), whose components are
    /// never folded into `other`.
    pub fn request_started(&self, labels: RequestLabels, node_identity: bool) -> InFlight<'_> {
        self.started(Which::Proxied, labels, "", node_identity)
    }

    /// Counts a request the multiplexer answers from its store, in
    /// [`AGGREGATED_IN_FLIGHT`] instead of [`IN_FLIGHT`] (upstream's split).
    pub fn aggregated_started(&self, labels: RequestLabels, node_identity: bool) -> InFlight<'_> {
        self.started(Which::Aggregated, labels, "", node_identity)
    }

    /// Counts the multiplexer's own request to `server` while it runs ([`FOR_MULTIPLEXER`]).
    pub fn multiplexer_upstream_started(
        &self,
        labels: RequestLabels,
        server: &str,
    ) -> InFlight<'_> {
        self.started(Which::ForMultiplexer, labels, server, true)
    }

    fn gauges(&self, family: Which) -> &Gauges {
        match family {
            Which::Proxied => &self.in_flight,
            Which::Aggregated => &self.aggregated,
            Which::ForMultiplexer => &self.for_multiplexer,
        }
    }

    fn started(
        &self,
        family: Which,
        labels: RequestLabels,
        server: &str,
        node_identity: bool,
    ) -> InFlight<'_> {
        let labels = self.gauges(family).start(labels, server, node_identity);
        if family != Which::ForMultiplexer {
            self.in_flight_total.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            metrics: self,
            family,
            labels,
            server: server.to_string(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight_total.load(Ordering::Relaxed)
    }

    /// Counts a request the hub refused itself; nothing else of it is recorded.
    pub fn refused(&self, reason: RefusalReason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds bytes received from the cloud for a request (`labels` from its [`InFlight`];
    /// `node_identity` as for [`Metrics::request_started`]).
    pub fn add_traffic(&self, labels: &RequestLabels, node_identity: bool, bytes: u64) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        // Called per piece of every body: the labels are copied only for a new series.
        match traffic.get_mut(labels) {
            Some(total) => *total += bytes,
            None => {
                // Counters are never dropped, so this family fills on its own account.
                let key = admitted(labels.clone(), traffic.len(), node_identity);
                *traffic.entry(key).or_default() += bytes;
            }
        }
    }

    /// Counts what gzip has kept off the wire so far for one response, from its unpacker's
    /// running totals (compressed, plain): called as the body comes, so a watch that streams
    /// for days counts as it goes. `counted` is what this response has added already.
    pub fn gzip_saved_so_far(&self, counted: &mut u64, totals: Option<(u64, u64)>) {
        let Some((compressed, plain)) = totals else {
            return;
        };
        let saved = plain.saturating_sub(compressed);
        if saved > *counted {
            self.gzip_saved
                .fetch_add(saved - *counted, Ordering::Relaxed);
            *counted = saved;
        }
    }

    /// Writes the request families.
    pub fn render(&self, out: &mut Exposition) {
        self.in_flight.render(out, &IN_FLIGHT);
        self.aggregated.render(out, &AGGREGATED_IN_FLIGHT);
        self.for_multiplexer.render(out, &FOR_MULTIPLEXER);
        out.single(
            &IN_FLIGHT_TOTAL,
            self.in_flight_total.load(Ordering::Relaxed) as f64,
        );
        out.family(&PROXY_TRAFFIC);
        for (l, n) in self
            .traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.sample(
                &PROXY_TRAFFIC,
                &[
                    ("client", l.client.clone()),
                    ("verb", l.verb.clone()),
                    ("resource", l.resource.clone()),
                    ("subresources", l.subresources.clone()),
                ],
                *n as f64,
            );
        }
        out.single(&GZIP_SAVED, self.gzip_saved.load(Ordering::Relaxed) as f64);
        out.family(&REFUSED);
        for reason in RefusalReason::ALL {
            out.sample(
                &REFUSED,
                &[("reason", reason.as_str())],
                self.refused[reason as usize].load(Ordering::Relaxed) as f64,
            );
        }
    }
}

/// A metric family: every name the hub exposes is written once, below, with its type and help
/// (upstream YurtHub's names where it has them, `yurthub_` for the hub's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// The HELP text.
    pub help: &'static str,
}

/// `node_yurthub_in_flight_requests_collector`.
pub const IN_FLIGHT: Family = Family {
    name: "node_yurthub_in_flight_requests_collector",
    kind: "gauge",
    help: "Requests of each client, verb and resource now in flight through the hub",
};
/// `node_yurthub_aggregated_in_flight_requests_collector`.
pub const AGGREGATED_IN_FLIGHT: Family = Family {
    name: "node_yurthub_aggregated_in_flight_requests_collector",
    kind: "gauge",
    help: "Lists and watches of pool-scope resources the multiplexer now answers from its store",
};
/// `node_yurthub_target_for_multiplexer_requests_collector`.
pub const FOR_MULTIPLEXER: Family = Family {
    name: "node_yurthub_target_for_multiplexer_requests_collector",
    kind: "gauge",
    help: "The multiplexer's own lists and watches now running against each server",
};
/// `node_yurthub_in_flight_requests_total`.
pub const IN_FLIGHT_TOTAL: Family = Family {
    name: "node_yurthub_in_flight_requests_total",
    kind: "gauge",
    help: "All requests now in flight through the hub",
};
/// `node_yurthub_proxy_traffic_collector`.
pub const PROXY_TRAFFIC: Family = Family {
    name: "node_yurthub_proxy_traffic_collector",
    kind: "counter",
    help: "Bytes of response bodies received from the cloud per client, verb and resource",
};
/// `yurthub_gzip_saved_bytes_total`.
pub const GZIP_SAVED: Family = Family {
    name: "yurthub_gzip_saved_bytes_total",
    kind: "counter",
    help: "Bytes gzip kept off the wire, for the responses the hub unpacked",
};
/// `yurthub_refused_requests_total`.
pub const REFUSED: Family = Family {
    name: "yurthub_refused_requests_total",
    kind: "counter",
    help: "Requests the hub refused itself (bad_request, unauthorized: the node's identity asked for on the TLS port, not_ready), recorded nowhere else",
};
/// `node_yurthub_server_healthy_status`.
pub const SERVER_HEALTHY: Family = Family {
    name: "node_yurthub_server_healthy_status",
    kind: "gauge",
    help: "Whether the hub believes each cloud apiserver reachable (1) or not (0)",
};
/// `node_yurthub_closable_conns_collector`.
pub const CLOSABLE_CONNS: Family = Family {
    name: "node_yurthub_closable_conns_collector",
    kind: "gauge",
    help:
        "Connections now open to each cloud apiserver (relays on them end when it turns unhealthy)",
};
/// `yurthub_cache_objects`.
pub const CACHE_OBJECTS: Family = Family {
    name: "yurthub_cache_objects",
    kind: "gauge",
    help: "Objects in the cache per component",
};
/// `yurthub_cache_bytes`.
pub const CACHE_BYTES: Family = Family {
    name: "yurthub_cache_bytes",
    kind: "gauge",
    help: "Bytes in the cache per component",
};
/// `yurthub_cache_writes_total`.
pub const CACHE_WRITES: Family = Family {
    name: "yurthub_cache_writes_total",
    kind: "counter",
    help: "Objects written to the cache",
};
/// `yurthub_cache_write_errors_total`.
pub const CACHE_WRITE_ERRORS: Family = Family {
    name: "yurthub_cache_write_errors_total",
    kind: "counter",
    help: "Failed cache writes and deletes (a full disk among them)",
};
/// `yurthub_cache_queue_overflows_total`.
pub const CACHE_QUEUE_OVERFLOWS: Family = Family {
    name: "yurthub_cache_queue_overflows_total",
    kind: "counter",
    help: "Responses not cached because the cache queue was full",
};
/// `yurthub_cache_evictions_total`.
pub const CACHE_EVICTIONS: Family = Family {
    name: "yurthub_cache_evictions_total",
    kind: "counter",
    help: "Objects evicted to keep the cache within --cache-max-bytes",
};
/// `yurthub_cache_evicted_lists_total`.
pub const CACHE_EVICTED_LISTS: Family = Family {
    name: "yurthub_cache_evicted_lists_total",
    kind: "counter",
    help: "List views dropped whole to keep the cache within --cache-max-bytes (answered 404 offline until listed again)",
};
/// `yurthub_cache_views`.
pub const CACHE_VIEWS: Family = Family {
    name: "yurthub_cache_views",
    kind: "gauge",
    help: "List views the cache keeps (one per component, type and selector)",
};
/// `yurthub_cache_views_dropped_total`.
pub const CACHE_VIEWS_DROPPED: Family = Family {
    name: "yurthub_cache_views_dropped_total",
    kind: "counter",
    help: "List views dropped, least recently used first, past 1024 per component and type or 4096 in all",
};
/// `yurthub_cache_gc_removed_total`.
pub const CACHE_GC_REMOVED: Family = Family {
    name: "yurthub_cache_gc_removed_total",
    kind: "counter",
    help: "Cached pods and Events removed by garbage collection",
};
/// `yurthub_cache_quarantined_files`.
pub const CACHE_QUARANTINED: Family = Family {
    name: "yurthub_cache_quarantined_files",
    kind: "gauge",
    help: "Unparsable cache files moved to _quarantine",
};
/// `yurthub_certificate_expiry_seconds`.
pub const CERTIFICATE_EXPIRY: Family = Family {
    name: "yurthub_certificate_expiry_seconds",
    kind: "gauge",
    help: "Seconds until the hub's client and serving certificates expire",
};
/// `yurthub_upstream_idle_connections`.
pub const UPSTREAM_IDLE: Family = Family {
    name: "yurthub_upstream_idle_connections",
    kind: "gauge",
    help: "Kept-alive connections to the cloud now idle",
};
/// `yurthub_filter_fail_open`.
pub const FILTER_FAIL_OPEN: Family = Family {
    name: "yurthub_filter_fail_open",
    kind: "gauge",
    help: "Whether a filter passes responses unchanged because what it needs is missing (servicetopology: inputs never synced; the filters that send pods to the TLS listener: no serving certificate yet)",
};
/// `yurthub_build_info`.
pub const BUILD_INFO: Family = Family {
    name: "yurthub_build_info",
    kind: "gauge",
    help: "The hub's version",
};

/// A Prometheus text document being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// A label value as the text format takes it: `\\`, `"` and line feeds escaped, and other
/// control characters (a raw carriage return from a header) dropped, since parsers differ
/// on them.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Exposition {
    /// Starts a metric family with its HELP and TYPE lines.
    pub fn family(&mut self, f: &Family) {
        let _ = writeln!(self.out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(self.out, "# TYPE {} {}", f.name, f.kind);
    }

    /// Writes a family of one sample without labels.
    pub fn single(&mut self, f: &Family, value: f64) {
        self.family(f);
        self.sample::<&str>(f, &[], value);
    }

    /// Writes one sample of family `f`.
    pub fn sample<V: AsRef<str>>(&mut self, f: &Family, labels: &[(&str, V)], value: f64) {
        self.out.push_str(f.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v.as_ref()));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The document.
    pub fn text(&self) -> &str {
        &self.out
    }
}

//! Counters and gauges, with upstream YurtHub's names and labels (reference §8), and their
//! Prometheus text exposition (format 0.0.4), written by hand: it is small.
//!
//! ```
//! use yurthub::metrics::{Exposition, Metrics, RequestLabels};
//! let m = Metrics::default();
//! let labels = RequestLabels { verb: "list".into(), resource: "pods".into(), subresources: "".into(), client: "kubelet/v1.32".into() };
//! let guard = m.request_started(labels.clone());
//! m.add_traffic(&labels, 512);
//! drop(guard);
//! let mut out = Exposition::default();
//! m.render(&mut out);
//! assert!(out.text().contains("node_yurthub_in_flight_requests_collector{verb=\"list\",resource=\"pods\",subresources=\"\",client=\"kubelet/v1.32\"} 0"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

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

/// The request metrics the proxy updates.
#[derive(Default)]
pub struct Metrics {
    in_flight: Mutex<BTreeMap<RequestLabels, i64>>,
    in_flight_total: AtomicI64,
    traffic: Mutex<BTreeMap<RequestLabels, u64>>,
    gzip_saved: AtomicU64,
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a> {
    metrics: &'a Metrics,
    labels: RequestLabels,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // The series stays, at 0, once the request ends: the FAQ reads it that way.
        if let Some(n) = self
            .metrics
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.labels)
        {
            *n -= 1;
        }
        self.metrics.in_flight_total.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a request in flight until the returned guard is dropped.
    pub fn request_started(&self, labels: RequestLabels) -> InFlight<'_> {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels.clone())
            .or_default() += 1;
        self.in_flight_total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            metrics: self,
            labels,
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight_total.load(Ordering::Relaxed)
    }

    /// Adds bytes received from the cloud for a request.
    pub fn add_traffic(&self, labels: &RequestLabels, bytes: u64) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        // Called per piece of every body: the labels are copied only for a new series.
        match traffic.get_mut(labels) {
            Some(total) => *total += bytes,
            None => {
                traffic.insert(labels.clone(), bytes);
            }
        }
    }

    /// Adds the bytes gzip kept off the wire for one response (plain minus compressed).
    pub fn add_gzip_saved(&self, bytes: u64) {
        self.gzip_saved.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Writes the request families.
    pub fn render(&self, out: &mut Exposition) {
        let request_labels = |l: &RequestLabels| {
            [
                ("verb", l.verb.clone()),
                ("resource", l.resource.clone()),
                ("subresources", l.subresources.clone()),
                ("client", l.client.clone()),
            ]
        };
        out.family(
            "node_yurthub_in_flight_requests_collector",
            "gauge",
            "Requests of each client, verb and resource now in flight through the hub",
        );
        for (l, n) in self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.sample(
                "node_yurthub_in_flight_requests_collector",
                &request_labels(l),
                *n as f64,
            );
        }
        out.single(
            "node_yurthub_in_flight_requests_total",
            "gauge",
            "All requests now in flight through the hub",
            self.in_flight_total.load(Ordering::Relaxed) as f64,
        );
        out.family(
            "node_yurthub_proxy_traffic_collector",
            "counter",
            "Bytes of response bodies received from the cloud per client, verb and resource",
        );
        for (l, n) in self
            .traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.sample(
                "node_yurthub_proxy_traffic_collector",
                &[
                    ("client", l.client.clone()),
                    ("verb", l.verb.clone()),
                    ("resource", l.resource.clone()),
                    ("subresources", l.subresources.clone()),
                ],
                *n as f64,
            );
        }
        out.single(
            "yurthub_gzip_saved_bytes_total",
            "counter",
            "Bytes gzip kept off the wire, for the responses the hub unpacked",
            self.gzip_saved.load(Ordering::Relaxed) as f64,
        );
    }
}

/// A Prometheus text document being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// Starts a metric family with its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Writes a family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample::<&str>(name, &[], value);
    }

    /// Writes one sample.
    pub fn sample<V: AsRef<str>>(&mut self, name: &str, labels: &[(&str, V)], value: f64) {
        self.out.push_str(name);
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

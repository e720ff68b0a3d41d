//! What the hub asks the apiserver for on requests whose responses it reads (reference §13.2
//! item 9, 10): JSON instead of protobuf, and gzip on the wire.

use crate::http::RequestHead;
use crate::kube::RequestInfo;

/// What the client asked for, remembered when the request was rewritten.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Whether the request was rewritten at all.
    pub applied: bool,
    /// The client's original `Accept`.
    pub client_accept: Option<String>,
    /// Whether the client takes a gzip body.
    pub client_gzip: bool,
}

/// Whether an `Accept-Encoding` value admits gzip (`gzip` or `*` with a non-zero q).
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
    })
}

/// The `Accept` the hub sends: the client's clauses without protobuf ones (every Kubernetes
/// client also accepts JSON), or plain JSON when nothing else is left. `as=` clauses (Table,
/// PartialObjectMetadata) are kept: dropping them would change what `kubectl get` prints, and
/// such answers are never treated as objects.
fn json_accept(accept: Option<&str>) -> String {
    let kept: Vec<&str> = accept
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let media = c.split(';').next().unwrap_or("").trim();
            !media.eq_ignore_ascii_case("application/vnd.kubernetes.protobuf")
        })
        .collect();
    if kept.is_empty() {
        "application/json".to_string()
    } else {
        kept.join(",")
    }
}

/// Rewrites `head` when the hub reads the answer (`read_by_hub`: it is cached or filtered) and
/// the answer is an object, a list or a watch: get, list, watch, and the objects that create,
/// update and patch return. Every other request, protobuf `Accept` included, goes byte for byte
/// as it came.
pub fn negotiate(head: &mut RequestHead, ri: &RequestInfo, read_by_hub: bool) -> Negotiated {
    let readable = read_by_hub
        && ri.is_resource_request
        && matches!(
            ri.verb.as_str(),
            "get" | "list" | "watch" | "create" | "update" | "patch"
        )
        && (ri.subresource.is_empty() || ri.subresource == "status");
    let client_gzip = head
        .headers
        .get_all("accept-encoding")
        .any(|v| accepts_gzip(&String::from_utf8_lossy(v)));
    if !readable {
        return Negotiated {
            applied: false,
            client_accept: head.headers.get_str("accept").map(str::to_string),
            client_gzip,
        };
    }
    let client_accept = head.headers.get_str("accept").map(str::to_string);
    head.headers
        .set("Accept", json_accept(client_accept.as_deref()));
    head.headers.set("Accept-Encoding", "gzip");
    Negotiated {
        applied: true,
        client_accept,
        client_gzip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, accept: Option<&str>, enc: Option<&str>) -> (RequestHead, Negotiated) {
        run_as("GET", target, accept, enc, true)
    }

    fn run_as(
        method: &str,
        target: &str,
        accept: Option<&str>,
        enc: Option<&str>,
        read_by_hub: bool,
    ) -> (RequestHead, Negotiated) {
        let mut head = RequestHead::new(method, target);
        if let Some(a) = accept {
            head.headers.push("Accept", a);
        }
        if let Some(e) = enc {
            head.headers.push("Accept-Encoding", e);
        }
        let ri = RequestInfo::classify(method, target).unwrap();
        let n = negotiate(&mut head, &ri, read_by_hub);
        (head, n)
    }

    #[test]
    fn kubelet_protobuf_becomes_json_with_gzip() {
        let (h, n) = run(
            "/api/v1/pods?watch=true",
            Some("application/vnd.kubernetes.protobuf,application/json"),
            None,
        );
        assert_eq!(h.headers.get_str("accept"), Some("application/json"));
        assert_eq!(h.headers.get_str("accept-encoding"), Some("gzip"));
        assert!(n.applied && !n.client_gzip);
        assert_eq!(
            n.client_accept.as_deref(),
            Some("application/vnd.kubernetes.protobuf,application/json")
        );
    }

    #[test]
    fn table_clauses_stay_and_logs_pass_untouched() {
        let t = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        let (h, _) = run("/api/v1/pods", Some(t), Some("gzip"));
        assert_eq!(h.headers.get_str("accept"), Some(t));
        let (h, n) = run(
            "/api/v1/namespaces/a/pods/p/log?follow=true",
            Some("*/*"),
            None,
        );
        assert!(!n.applied);
        assert_eq!(h.headers.get_str("accept"), Some("*/*"));
        assert!(!h.headers.contains("accept-encoding"));
        let (h, _) = run("/api/v1/pods", None, None);
        assert_eq!(h.headers.get_str("accept"), Some("application/json"));
    }

    #[test]
    fn writes_the_hub_caches_ask_json_and_what_it_does_not_read_passes_untouched() {
        // kubelet creating its CSINode: the answer is cached, so it must be JSON.
        let (h, n) = run_as(
            "POST",
            "/apis/storage.k8s.io/v1/csinodes",
            Some(PB),
            Some("gzip"),
            true,
        );
        assert!(n.applied);
        assert_eq!(h.headers.get_str("accept"), Some("application/json"));
        let (h, n) = run_as("PATCH", "/api/v1/nodes/n1/status", Some(PB), None, true);
        assert!(n.applied && !n.client_gzip);
        assert_eq!(h.headers.get_str("accept"), Some("application/json"));
        // A request the hub neither caches nor filters keeps protobuf end to end.
        for (method, target) in [
            ("GET", "/api/v1/pods"),
            ("POST", "/api/v1/namespaces/a/pods"),
        ] {
            let (h, n) = run_as(method, target, Some(PB), Some("gzip"), false);
            assert!(!n.applied);
            assert_eq!(h.headers.get_str("accept"), Some(PB));
            assert_eq!(h.headers.get_str("accept-encoding"), Some("gzip"));
        }
        // Subresources other than status are never read (tokens, evictions, logs).
        let (h, n) = run_as(
            "POST",
            "/api/v1/namespaces/a/serviceaccounts/default/token",
            Some(PB),
            None,
            true,
        );
        assert!(!n.applied);
        assert_eq!(h.headers.get_str("accept"), Some(PB));
    }

    const PB: &str = "application/vnd.kubernetes.protobuf,application/json";

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
    }
}

//! The admin port as an operator uses it (seed FAQ items 3 and 4): /v1/healthz, /v1/readyz,
//! and /metrics, parsed by a real Prometheus text parser.

use std::time::{Duration, Instant};
use testapi::client::{self, get, request};
use testapi::{pod, Cluster, Hub, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";

fn metrics(hub: &Hub) -> String {
    let r = get(hub.admin_addr, "/metrics", "curl/8");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text()
}

/// The value of the one sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn health_and_readiness_answer_ok_and_unknown_paths_404() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let r = get(hub.admin_addr, "/v1/healthz", "curl/8");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    let r = get(hub.admin_addr, "/v1/readyz", "curl/8");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(get(hub.admin_addr, "/nope", "curl/8").status, 404);
    let r = request(hub.admin_addr, "POST", "/v1/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 405);
}

#[test]
fn in_flight_requests_show_each_triplet_one_while_open_zero_after() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("p1", NODE));
    let hub = c.start_hub(BIN, &[]);
    let list = get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    let rv = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let w = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        KUBELET,
    );
    let client = KUBELET.to_lowercase();
    let text = metrics(&hub);
    let list_labels = [
        ("verb", "list"),
        ("resource", "pods"),
        ("client", client.as_str()),
    ];
    let watch_labels = [
        ("verb", "watch"),
        ("resource", "pods"),
        ("client", client.as_str()),
    ];
    assert_eq!(
        sample(
            &text,
            "node_yurthub_in_flight_requests_collector",
            &list_labels
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "node_yurthub_in_flight_requests_collector",
            &watch_labels
        ),
        Some(1.0)
    );
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&hub);
        if sample(
            &text,
            "node_yurthub_in_flight_requests_collector",
            &watch_labels,
        ) == Some(0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch still counts as in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn traffic_counts_the_bytes_the_apiserver_sent() {
    let c = Cluster::new();
    for i in 0..3 {
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("p{i}"), NODE),
        );
    }
    let hub = c.start_hub(BIN, &[]);
    let mut received = 0;
    for _ in 0..3 {
        received += get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET)
            .body
            .len();
    }
    let text = metrics(&hub);
    let client = KUBELET.to_lowercase();
    let bytes = sample(
        &text,
        "node_yurthub_proxy_traffic_collector",
        &[
            ("verb", "list"),
            ("resource", "pods"),
            ("client", client.as_str()),
        ],
    );
    assert_eq!(bytes, Some(received as f64));
    assert_eq!(
        sample(&text, "node_yurthub_server_healthy_status", &[]),
        Some(1.0)
    );
}

#[test]
fn the_exposition_parses_with_a_strict_prometheus_parser() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    let weird = "weird \"agent\"\\x/1";
    get(hub.proxy_addr, "/api/v1/namespaces/default/pods", weird);
    let text = metrics(&hub);
    // A validating parser of the text format 0.0.4: names, escapes, one TYPE per family,
    // families not interleaved.
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e:?}\n{text}"));
    let families = &exposition.families;
    assert!(families.len() >= 8, "{:?}", families.keys());
    // The hostile client name comes back exactly as sent: escaped on the way out, so the
    // parser decodes it to the same string.
    let clients: Vec<String> = families
        .values()
        .flat_map(|f| f.iter_samples())
        .filter_map(|s| {
            let labels = s.get_labelset().ok()?;
            labels.get_label_value("client").map(str::to_string)
        })
        .collect();
    assert!(
        clients.iter().any(|c| c.starts_with("weird \"agent\"\\x")),
        "{clients:?}\n{text}"
    );
}

#[test]
fn until_ready_clients_get_503_but_the_hub_itself_is_served() {
    let c = Cluster::new();
    std::fs::remove_file(c.root.path().join("pki/yurthub-current.pem")).unwrap();
    let hub = Hub::spawn(BIN, &c.hub_args(&[&c.api]), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        if let Ok(r) = request(hub.admin_addr, "GET", "/v1/readyz", &[], b"") {
            break r;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(ready.status, 500);
    assert!(
        ready.text().contains("certificates not ready"),
        "{}",
        ready.text()
    );
    let r = get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    let own = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods",
        "yurthub/v0.1.0",
    );
    assert_ne!(own.status, 503);
}

#[test]
fn cache_size_certificate_expiry_open_connections_and_gzip_savings() {
    let c = Cluster::new();
    // Enough pods that the list crosses the apiserver's 128 KiB gzip threshold.
    for i in 0..300 {
        let mut p = pod(&format!("p-{i:03}"), NODE);
        p["metadata"]["annotations"] = serde_json::json!({"note": "x".repeat(600)});
        c.api.create("/api/v1/namespaces/default/pods", p);
    }
    let hub = c.start_hub(BIN, &[]);
    let list = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/pods",
        &[("User-Agent", KUBELET)],
        b"",
    )
    .unwrap();
    assert_eq!(list.status, 200);
    let plain = list.body.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = metrics(&hub);
        if sample(&t, "yurthub_cache_objects", &[("component", "kubelet")]) >= Some(300.0) {
            break t;
        }
        assert!(Instant::now() < deadline, "the pods were not cached:\n{t}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let bytes = sample(&text, "yurthub_cache_bytes", &[("component", "kubelet")]).unwrap();
    assert!(bytes > 300.0 * 600.0, "{bytes}");
    // The certificates Cluster wrote are valid for a year.
    for cert in ["client", "serving"] {
        let left = sample(
            &text,
            "yurthub_certificate_expiry_seconds",
            &[("certificate", cert)],
        )
        .unwrap_or_else(|| panic!("no expiry for {cert}:\n{text}"));
        assert!(
            left > 364.0 * 86400.0 && left <= 365.0 * 86400.0,
            "{cert}: {left}"
        );
    }
    // The pooled connection the list came over is still open.
    let server = c.api.addr().to_string();
    let open = sample(
        &text,
        "node_yurthub_closable_conns_collector",
        &[("server", &server)],
    );
    assert!(open >= Some(1.0), "{text}");
    // The list came gzipped from the apiserver and was unpacked for this client.
    let saved = sample(&text, "yurthub_gzip_saved_bytes_total", &[]).unwrap();
    let wire = c.api.body_bytes_sent() as f64;
    // Saved = what the apiserver would have sent plain minus what it sent (the whole wire).
    assert!(
        saved > plain / 2.0 && saved + wire > plain * 0.9,
        "saved {saved} of {plain} (wire {wire})"
    );
}

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

/// A pod that yurt-manager marked for an OTA upgrade to revision `rev-2`.
fn marked(name: &str, owner: &str, image_ready: Option<&str>) -> serde_json::Value {
    let mut p = pod(name, NODE);
    p["metadata"]["ownerReferences"] =
        serde_json::json!([{"apiVersion": "v1", "kind": owner, "name": "x", "uid": "u"}]);
    let mut conditions = vec![serde_json::json!(
        {"type": "PodNeedUpgrade", "status": "True", "message": "controllerrevision: rev-2"})];
    if let Some(status) = image_ready {
        conditions.push(serde_json::json!(
            {"type": "PodImageReady", "status": status, "message": "controllerrevision: rev-2"}));
    }
    p["status"] = serde_json::json!({"phase": "Running", "conditions": conditions});
    p
}

fn ota(hub: &Hub, pod: &str, action: &str) -> (u16, String) {
    let path = format!("/openyurt.io/v1/namespaces/default/pods/{pod}/{action}");
    let r = request(hub.admin_addr, "POST", &path, &[], b"").unwrap();
    (r.status, r.text())
}

/// The OTA flow of a DaemonSet pod on the node, as an operator runs it with curl: pre-pull
/// the image, upgrade (the pod is deleted for its OnDelete strategy), and the refusals.
#[test]
fn ota_image_pull_then_upgrade_of_a_daemonset_pod() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/pods",
        marked("ds-1", "DaemonSet", None),
    );
    let mut unmarked = pod("plain", NODE);
    unmarked["metadata"]["ownerReferences"] =
        serde_json::json!([{"kind": "DaemonSet", "name": "x"}]);
    c.api.create("/api/v1/namespaces/default/pods", unmarked);
    c.api.create(
        "/api/v1/namespaces/default/pods",
        pod("elsewhere", "node-2"),
    );
    let hub = c.start_hub(BIN, &["--heartbeat-interval-seconds=1"]);
    let (status, text) = ota(&hub, "ds-1", "imagepull");
    assert_eq!(
        (status, text.as_str()),
        (200, "Image pre-pull requested for pod default/ds-1")
    );
    let after = c.api.get("/api/v1/namespaces/default/pods/ds-1").unwrap();
    let conditions = after["status"]["conditions"].as_array().unwrap();
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "PodImageReady")
        .unwrap();
    assert_eq!(
        (&ready["status"], &ready["message"]),
        (&"False".into(), &"controllerrevision: rev-2".into())
    );
    assert!(
        conditions.iter().any(|c| c["type"] == "PodNeedUpgrade"),
        "{after}"
    );
    // Not pulled yet: no upgrade.
    let (status, text) = ota(&hub, "ds-1", "upgrade");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("image is not ready"), "{text}");
    assert!(c.api.get("/api/v1/namespaces/default/pods/ds-1").is_some());
    // The image-pull controller says it is there: the pod goes, for its DaemonSet to remake.
    c.api.update(
        "/api/v1/namespaces/default/pods/ds-1",
        marked("ds-1", "DaemonSet", Some("True")),
    );
    assert_eq!(
        ota(&hub, "ds-1", "upgrade"),
        (200, "Start updating pod default/ds-1".to_string())
    );
    assert!(c.api.get("/api/v1/namespaces/default/pods/ds-1").is_none());
    // Refusals: not marked, not this node's, not there, not a POST, the cloud away.
    assert_eq!(ota(&hub, "plain", "upgrade").0, 403);
    assert_eq!(ota(&hub, "elsewhere", "imagepull").0, 403);
    assert_eq!(ota(&hub, "ghost", "upgrade").0, 500);
    let r = get(
        hub.admin_addr,
        "/openyurt.io/v1/namespaces/default/pods/plain/upgrade",
        "curl/8",
    );
    assert_eq!(r.status, 405);
    // The requests went to the cloud as the node.
    let users: Vec<_> = c
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .filter_map(|r| r.user.clone())
        .collect();
    assert_eq!(users, [format!("system:node:{NODE}")]);
    c.api.set_fault(testapi::Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(30));
    assert_eq!(
        ota(&hub, "plain", "imagepull"),
        (
            503,
            "OTA upgrade is not allowed when node is disconnected to cloud".to_string()
        )
    );
}

/// A static pod of a YurtStaticSet: its manifest comes from ConfigMap `yurt-static-set-<name>`
/// into kubelet's static pod directory, the old one backed up.
#[test]
fn ota_upgrade_of_a_static_pod_stages_its_manifest() {
    let c = Cluster::new();
    let dirs = testapi::TempDir::new("ota");
    let (manifests, staging) = (dirs.path().join("manifests"), dirs.path().join("staging"));
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("nginx.yaml"), "old manifest\n").unwrap();
    let static_pod = format!("nginx-{NODE}");
    c.api.create(
        "/api/v1/namespaces/default/pods",
        marked(&static_pod, "Node", None),
    );
    c.api.create(
        "/api/v1/namespaces/default/pods",
        marked("orphan", "ReplicaSet", None),
    );
    let flags = [
        format!("--pod-manifest-path={}", manifests.display()),
        format!("--ota-staging-dir={}", staging.display()),
    ];
    let hub = c.start_hub(BIN, &[&flags[0], &flags[1]]);
    // No ConfigMap yet.
    let (status, text) = ota(&hub, &static_pod, "upgrade");
    assert_eq!(
        (status, text.as_str()),
        (403, "Configmap for static pod does not exist")
    );
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({"metadata": {"name": "yurt-static-set-nginx"}, "data": {"nginx": "new manifest\n"}}),
    );
    assert_eq!(
        ota(&hub, &static_pod, "upgrade"),
        (200, format!("Start updating pod default/{static_pod}"))
    );
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(manifests.join("nginx.yaml")), "new manifest\n");
    assert_eq!(read(staging.join("nginx.bak")), "old manifest\n");
    assert_eq!(read(staging.join("nginx.upgrade")), "new manifest\n");
    // Neither a DaemonSet's nor a static pod: not for OTA.
    assert_eq!(ota(&hub, "orphan", "upgrade").0, 400);
}

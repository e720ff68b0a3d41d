//! Response filters end to end (reference §6, seed FAQ item 5): what kubelet and kube-proxy see
//! through the hub, online and as cached.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testapi::client::{self, get, request};
use testapi::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const KUBE_PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";

fn kubernetes_service() -> Value {
    json!({"metadata": {"name": "kubernetes"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}})
}

#[test]
fn kubelet_sees_the_kubernetes_service_at_the_hub_and_so_does_its_cache() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/services", kubernetes_service());
    c.api.create("/api/v1/namespaces/default/services", json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "https", "port": 443}]}}));
    let hub = c.start_hub(BIN, &[]);
    let list = get(hub.proxy_addr, "/api/v1/services", KUBELET).json();
    let items = list["items"].as_array().unwrap();
    let k8s = items
        .iter()
        .find(|s| s["metadata"]["name"] == "kubernetes")
        .unwrap();
    // Without the dummy interface the hub is at --bind-proxy-address and its TLS port
    // (tests/network.rs checks the defaults, 169.254.2.1:10268, in a namespace of its own).
    let secure = hub.secure_addr();
    assert_eq!(k8s["spec"]["clusterIP"], "127.0.0.1");
    assert_eq!(k8s["spec"]["ports"][0]["port"], secure.port());
    let web = items
        .iter()
        .find(|s| s["metadata"]["name"] == "web")
        .unwrap();
    assert_eq!(
        web["spec"]["clusterIP"], "10.96.0.9",
        "other services are untouched"
    );
    // Other components see the real thing.
    let plain = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/services/kubernetes",
        "coredns/1.11",
    )
    .json();
    assert_eq!(plain["spec"]["clusterIP"], "10.96.0.1");
    // The cache holds what kubelet saw (the FAQ's check of cache/kubelet/services/...).
    let file = c
        .cache
        .path()
        .join("kubelet/services.v1.core/default/kubernetes");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.is_file() {
        assert!(Instant::now() < deadline, "not cached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cached: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(cached["spec"]["clusterIP"], "127.0.0.1");
    // Watches are filtered event by event.
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
        KUBELET,
    );
    let mut svc = c
        .api
        .get("/api/v1/namespaces/default/services/kubernetes")
        .unwrap();
    svc["metadata"]["labels"] = json!({"touched": "yes"});
    c.api
        .update("/api/v1/namespaces/default/services/kubernetes", svc);
    let ev: Value = serde_json::from_str(&w.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["spec"]["clusterIP"], "127.0.0.1");
    // The cache follows the watch as kubelet saw it (the multiplexer's store answered it).
    wait_until("the change cached", Duration::from_secs(10), || {
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| {
                v["metadata"]["labels"]["touched"] == "yes" && v["spec"]["clusterIP"] == "127.0.0.1"
            })
    });
}

#[test]
fn inclusterconfig_comments_out_kube_proxys_kubeconfig_for_kubelet() {
    let c = Cluster::new();
    let conf = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nmode: iptables\n";
    c.api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        json!({"metadata": {"name": "kube-proxy"}, "data": {"config.conf": conf}}),
    );
    let hub = c.start_hub(BIN, &[]);
    let cm = get(
        hub.proxy_addr,
        "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
        KUBELET,
    )
    .json();
    assert_eq!(
        cm["data"]["config.conf"],
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nclientConnection:\n#  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nmode: iptables\n"
    );
}

#[test]
fn kube_proxy_does_not_see_discarded_cloud_services_even_in_a_large_gzip_list() {
    let c = Cluster::new();
    c.api.create("/api/v1/namespaces/default/services", json!({"metadata": {"name": "cloud-lb", "annotations": {"svc.openyurt.io/discard": "true"}}, "spec": {"type": "LoadBalancer"}}));
    let pad = "x".repeat(3000);
    for i in 0..60 {
        c.api.create("/api/v1/namespaces/default/services", json!({"metadata": {"name": format!("svc-{i:02}"), "annotations": {"pad": pad}}, "spec": {"type": "ClusterIP"}}));
    }
    // kube-proxy's own list from the cloud, filtered as it streams (the multiplexer's store
    // would answer it from memory).
    let hub = c.start_hub(BIN, &["--pool-scope-resources="]);
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/services",
        &[("User-Agent", KUBE_PROXY), ("Accept-Encoding", "gzip")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-encoding"),
        None,
        "a filtered body is sent plain"
    );
    let names: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 60);
    assert!(!names.contains(&"cloud-lb".to_string()));
    assert_eq!(
        c.api
            .client_requests()
            .last()
            .unwrap()
            .header("accept-encoding"),
        Some("gzip")
    );
}

fn slice(service: &str, nodes: &[&str]) -> Value {
    json!({"metadata": {"name": format!("{service}-x1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": nodes.iter().enumerate().map(|(i, n)| json!({"addresses": [format!("10.1.0.{i}")], "nodeName": n})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 80}]})
}

fn endpoint_nodes(list: &Value, slice: &str) -> Vec<String> {
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == slice)
        .unwrap_or_else(|| panic!("no slice {slice} in {list}"));
    item["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["nodeName"].as_str().unwrap().to_string())
        .collect()
}

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

fn topology_cluster() -> Cluster {
    let c = Cluster::new();
    let svc = |name: &str, keys: Option<&str>| {
        let mut s = json!({"metadata": {"name": name}, "spec": {"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}});
        if let Some(k) = keys {
            s["metadata"]["annotations"] = json!({"openyurt.io/topologyKeys": k});
        }
        s
    };
    let services = "/api/v1/namespaces/default/services";
    c.api
        .create(services, svc("by-node", Some("kubernetes.io/hostname")));
    c.api
        .create(services, svc("by-pool", Some("openyurt.io/nodepool")));
    c.api.create(services, svc("plain", None));
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    for name in ["by-node", "by-pool", "plain"] {
        c.api
            .create(slices, slice(name, &[testapi::NODE, "node-2", "node-9"]));
    }
    c
}

#[test]
fn servicetopology_keeps_this_nodes_or_this_pools_endpoints() {
    // Seed FAQ item 6: kube-proxy's endpoint slices follow the Services' topology.
    let c = topology_cluster();
    c.api.create(
        "/apis/apps.openyurt.io/v1beta2/nodepools",
        json!({"metadata": {"name": "pool-a"}, "spec": {"type": "Edge"}, "status": {"nodes": [testapi::NODE, "node-2"]}}),
    );
    let hub = c.start_hub(BIN, &[]);
    let list = get(hub.proxy_addr, SLICES, KUBE_PROXY).json();
    assert_eq!(endpoint_nodes(&list, "by-node-x1"), [testapi::NODE]);
    assert_eq!(
        endpoint_nodes(&list, "by-pool-x1"),
        [testapi::NODE, "node-2"]
    );
    assert_eq!(
        endpoint_nodes(&list, "plain-x1"),
        [testapi::NODE, "node-2", "node-9"]
    );
    // coredns too; kubelet is not a servicetopology client.
    let coredns = get(hub.proxy_addr, SLICES, "coredns/1.11.3").json();
    assert_eq!(endpoint_nodes(&coredns, "by-node-x1"), [testapi::NODE]);
    let kubelet = get(hub.proxy_addr, SLICES, KUBELET).json();
    assert_eq!(endpoint_nodes(&kubelet, "by-node-x1").len(), 3);
    // The list+watch ends in the in-flight metric (the FAQ's check): nothing left open.
    let metrics = get(hub.admin_addr, "/metrics", "curl/8").text();
    assert!(
        metrics.contains("yurthub_filter_fail_open{filter=\"servicetopology\"} 0"),
        "{metrics}"
    );
}

#[test]
fn servicetopology_fails_open_when_the_nodepool_crd_is_missing() {
    let c = topology_cluster();
    c.api.unregister_type("apps.openyurt.io", "nodepools");
    let hub = testapi::Hub::spawn(
        BIN,
        &[
            c.hub_args(&[&c.api]),
            vec!["--filter-sync-timeout=2s".into()],
        ]
        .concat(),
        &[],
    );
    // Not ready while it waits (once yurt-hub-cfg is read), with the reason.
    let started = Instant::now();
    let reason = loop {
        let r = request(hub.admin_addr, "GET", "/v1/readyz", &[], b"").unwrap();
        assert_eq!(r.status, 500, "ready before the timeout: {}", r.text());
        if r.text().contains("servicetopology") || started.elapsed() > Duration::from_millis(1500) {
            break r.text();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A slow machine may not have listed Services yet either ("waiting for services and
    // nodepools"); what matters is that the missing CRD is named.
    assert!(
        reason.contains("servicetopology: waiting for") && reason.contains("nodepools"),
        "{reason}"
    );
    // Then it gives up waiting: ready, and slices pass unchanged instead of blocking kube-proxy.
    hub.wait_ready(Duration::from_secs(20));
    let list = get(hub.proxy_addr, SLICES, KUBE_PROXY).json();
    assert_eq!(endpoint_nodes(&list, "by-node-x1").len(), 3);
    hub.wait_for_log(
        "servicetopology: nodepools not synced",
        Duration::from_secs(5),
    );
    let metrics = get(hub.admin_addr, "/metrics", "curl/8").text();
    assert!(
        metrics.contains("yurthub_filter_fail_open{filter=\"servicetopology\"} 1"),
        "{metrics}"
    );
}

//! Response filters end to end (reference §6, seed FAQ item 5): what kubelet and kube-proxy see
//! through the hub, online and as cached.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testapi::client::{self, get, request};
use testapi::Cluster;

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
    assert_eq!(k8s["spec"]["clusterIP"], "169.254.2.1");
    assert_eq!(k8s["spec"]["ports"][0]["port"], 10268);
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
    assert_eq!(cached["spec"]["clusterIP"], "169.254.2.1");
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
    assert_eq!(ev["object"]["spec"]["clusterIP"], "169.254.2.1");
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
    let hub = c.start_hub(BIN, &[]);
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

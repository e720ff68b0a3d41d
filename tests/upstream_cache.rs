//! A node moved from upstream YurtHub: the cache it left in `--disk-cache-path`, in either of
//! upstream's layouts, is served offline from the first start, and the cloud's first lists
//! take over from it.
//!
//! The trees are written the way upstream writes them (reference §3.3): one JSON object per
//! file as Go's encoder makes it (`kind` first, compact, a newline), files 0600 in directories
//! 0755, a `tmp_` backup beside an object whose rewrite a crash cut short, non-resource
//! answers at the top, `_internal/restmapper`, and no record of which lists were made.

use serde_json::{json, Value};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use testapi::client::get;
use testapi::wait_until;
use testapi::{names, pod, Cluster, Fault, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const KUBE_PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const FAST: &[&str] = &[
    "--heartbeat-interval-seconds=1",
    "--heartbeat-timeout-seconds=1",
    "--heartbeat-healthy-threshold=2",
    // The hub's own informers' lists were never cached by upstream (its informers bypass
    // its proxy): offline, readiness waits this long for the service topology's inputs.
    "--filter-sync-timeout=1s",
];
/// kube-proxy's selector for Services and EndpointSlices.
const PROXY_SELECTOR: &str =
    "labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";

/// Writes `bytes` at `rel` below `root` as upstream's disk storage does.
fn upstream_file(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path.parent().unwrap())
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

/// `obj` as Go's JSON encoder writes a typed object: `kind` and `apiVersion` first.
fn go_json(kind: &str, api_version: &str, mut obj: Value) -> Vec<u8> {
    let m = obj.as_object_mut().unwrap();
    m.remove("kind");
    m.remove("apiVersion");
    let rest = serde_json::to_string(&obj).unwrap();
    format!(
        "{{\"kind\":\"{kind}\",\"apiVersion\":\"{api_version}\",{}\n",
        &rest[1..]
    )
    .into_bytes()
}

fn upstream_object(root: &Path, rel: &str, kind: &str, api_version: &str, obj: Value) {
    upstream_file(root, rel, &go_json(kind, api_version, obj));
}

fn cached_pod(name: &str, ns: &str, app: &str, rv: u64) -> Value {
    let mut p = pod(name, NODE);
    p["metadata"]["namespace"] = json!(ns);
    p["metadata"]["labels"] = json!({ "app": app });
    p["metadata"]["resourceVersion"] = json!(rv.to_string());
    p["metadata"]["managedFields"] = json!([{"manager": "kubelet", "operation": "Update"}]);
    p
}

fn service(name: &str, ns: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "40", "labels": labels},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}
    })
}

fn list(addr: std::net::SocketAddr, path: &str, ua: &str) -> (u16, Value) {
    let r = get(addr, path, ua);
    let body = if r.status == 200 {
        r.json()
    } else {
        json!({ "text": r.text() })
    };
    (r.status, body)
}

fn quarantined(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("_quarantine"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_cache_upstream_yurthub_wrote_is_served_offline_from_the_first_start() {
    let c = Cluster::new();
    let root = c.cache.path().to_path_buf();
    let pods = "kubelet/pods.v1.core";
    for (name, ns, app, rv) in [
        ("web-1", "default", "web", 11),
        ("db-1", "default", "db", 12),
    ] {
        let p = cached_pod(name, ns, app, rv);
        upstream_object(&root, &format!("{pods}/{ns}/{name}"), "Pod", "v1", p);
    }
    // A crash cut a rewrite of coredns-1 short: the backup is the whole old object.
    let old = cached_pod("coredns-1", "kube-system", "dns", 20);
    upstream_object(
        &root,
        &format!("{pods}/kube-system/tmp_coredns-1"),
        "Pod",
        "v1",
        old,
    );
    upstream_file(
        &root,
        &format!("{pods}/kube-system/coredns-1"),
        b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metad",
    );
    // Files no object is: one that is not JSON, one holding another object than its name.
    upstream_file(
        &root,
        &format!("{pods}/default/garbage"),
        b"\x00\x01 not json",
    );
    let other = cached_pod("other", "default", "web", 13);
    upstream_object(
        &root,
        &format!("{pods}/default/renamed"),
        "Pod",
        "v1",
        other,
    );
    let node = json!({"metadata": {"name": NODE, "resourceVersion": "30", "labels": {"kubernetes.io/hostname": NODE}}});
    upstream_object(
        &root,
        &format!("kubelet/nodes.v1.core/{NODE}"),
        "Node",
        "v1",
        node,
    );
    upstream_object(
        &root,
        "kube-proxy/services.v1.core/default/kubernetes",
        "Service",
        "v1",
        service("kubernetes", "default", json!({"component": "apiserver"})),
    );
    upstream_object(
        &root,
        "kube-proxy/services.v1.core/kube-system/kube-dns",
        "Service",
        "v1",
        service("kube-dns", "kube-system", json!({"k8s-app": "kube-dns"})),
    );
    // kube-proxy's EndpointSlice list was answered empty: upstream made the directory only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root.join("kube-proxy/endpointslices.v1.discovery.k8s.io"))
        .unwrap();
    upstream_file(
        &root,
        "version",
        br#"{"major":"1","minor":"36","gitVersion":"v1.36.0","platform":"linux/arm64"}"#,
    );
    upstream_file(
        &root,
        "_internal/restmapper/cache-crd-restmapper.conf",
        b"{}",
    );

    c.api.set_fault(Fault::Refuse);
    let hub = c.start_hub(BIN, FAST);
    let line = hub.wait_for_log("adopted upstream YurtHub's cache", Duration::from_secs(10));
    assert!(
        line.contains("6 objects of 4 types for 2 components")
            && line.contains("1 interrupted writes settled")
            && line.contains("3 files quarantined"),
        "{line}"
    );

    // kubelet's own lists, with its own selectors, as upstream would have answered them.
    let a = hub.proxy_addr;
    let (s, mine) = list(
        a,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
        KUBELET,
    );
    assert_eq!(s, 200, "{mine}");
    assert_eq!(names(&mine), ["db-1", "web-1", "coredns-1"]);
    assert_eq!(mine["kind"], "PodList");
    let coredns = &mine["items"][2];
    assert_eq!(coredns["metadata"]["resourceVersion"], "20", "{coredns}");
    let (s, web) = list(
        a,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        KUBELET,
    );
    assert_eq!((s, names(&web)), (200, vec!["web-1".to_string()]));
    let r = get(a, &format!("/api/v1/nodes/{NODE}"), KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["resourceVersion"], "30");
    let r = get(a, "/version", KUBELET);
    assert_eq!(
        (r.status, r.json()["gitVersion"].as_str()),
        (200, Some("v1.36.0"))
    );

    // kube-proxy's: its Services, and its EndpointSlices, which the cloud said were none.
    let (s, svcs) = list(a, &format!("/api/v1/services?{PROXY_SELECTOR}"), KUBE_PROXY);
    assert_eq!(s, 200, "{svcs}");
    assert_eq!(names(&svcs), ["kubernetes", "kube-dns"]);
    let (s, slices) = list(
        a,
        &format!("/apis/discovery.k8s.io/v1/endpointslices?{PROXY_SELECTOR}"),
        KUBE_PROXY,
    );
    assert_eq!(s, 200, "{slices}");
    assert_eq!(slices["kind"], "EndpointSliceList");
    assert!(names(&slices).is_empty());
    // What upstream never cached for a component is still not known: a type, or a
    // namespace it had no directory for.
    let (s, _) = list(a, "/api/v1/nodes", KUBE_PROXY);
    assert_eq!(s, 404);
    let (s, _) = list(a, "/api/v1/namespaces/kube-public/pods", KUBELET);
    assert_eq!(s, 404);
    let (s, dns) = list(a, "/api/v1/namespaces/kube-system/services", KUBE_PROXY);
    assert_eq!((s, names(&dns)), (200, vec!["kube-dns".to_string()]));

    // On disk: the whole copy in place and the cut one quarantined, the strays quarantined,
    // the tree closed to other users.
    let pod_dir = root.join(pods);
    assert!(!pod_dir.join("kube-system/tmp_coredns-1").exists());
    let q = quarantined(&root);
    assert_eq!(q.len(), 3, "{q:?}");
    for (file, name) in q.iter().zip([
        "kubelet_pods.v1.core_default_garbage.",
        "kubelet_pods.v1.core_default_renamed.",
        "kubelet_pods.v1.core_kube-system_coredns-1.",
    ]) {
        assert!(file.starts_with(name), "{q:?}");
    }
    assert_eq!(mode(&pod_dir.join("default")), 0o700);
    assert_eq!(mode(&root.join("kube-proxy")), 0o700);
    assert!(root.join("_internal/layout").is_file());

    // The cloud comes back: kubelet's first list is the cloud's, and from then on its pods
    // are what the cloud said (web-1 is gone there), also offline.
    c.api
        .create("/api/v1/namespaces/default/pods", pod("db-1", NODE));
    c.api.set_fault(Fault::None);
    hub.wait_for_log("is now healthy", Duration::from_secs(10));
    let (s, online) = list(
        a,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
        KUBELET,
    );
    assert_eq!((s, names(&online)), (200, vec!["db-1".to_string()]));
    hub.wait_for_log(
        "kubelet pods.v1.core listed by the cloud: the list adopted from upstream YurtHub's cache is retired",
        Duration::from_secs(10),
    );
    // The pods upstream held that the cloud no longer has are gone (removed by the list
    // itself or by the pod collector, whichever came first).
    wait_until("the gone pods removed", Duration::from_secs(10), || {
        !pod_dir.join("default/web-1").exists() && !pod_dir.join("kube-system/coredns-1").exists()
    });
    let views = root.join("_internal/views/kubelet/pods.v1.core");
    wait_until("kubelet's pod view", Duration::from_secs(10), || {
        std::fs::read_dir(&views).is_ok_and(|d| d.count() == 1)
    });
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let (s, offline) = list(
        a,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
        KUBELET,
    );
    assert_eq!((s, names(&offline)), (200, vec!["db-1".to_string()]));
    // Another selector of that type has no adopted answer any more, and the pod it would
    // have found is gone.
    let (s, _) = list(
        a,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        KUBELET,
    );
    assert_eq!(s, 404);
}

#[test]
fn an_older_layout_cache_moves_to_the_current_one_and_is_served_offline() {
    let c = Cluster::new();
    let root = c.cache.path().to_path_buf();
    upstream_object(
        &root,
        "kubelet/pods/default/web-1",
        "Pod",
        "v1",
        cached_pod("web-1", "default", "web", 11),
    );
    upstream_object(
        &root,
        &format!("kubelet/nodes/{NODE}"),
        "Node",
        "v1",
        json!({"metadata": {"name": NODE, "resourceVersion": "30"}}),
    );
    upstream_object(
        &root,
        &format!("kubelet/leases/kube-node-lease/{NODE}"),
        "Lease",
        "coordination.k8s.io/v1",
        json!({"metadata": {"name": NODE, "namespace": "kube-node-lease", "resourceVersion": "31"}}),
    );
    upstream_object(
        &root,
        "kube-proxy/services/default/kubernetes",
        "Service",
        "v1",
        service("kubernetes", "default", json!({})),
    );
    // kube-proxy's EndpointSlices of kube-system were listed, and there were none.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root.join("kube-proxy/endpointslices/kube-system"))
        .unwrap();
    // An object without an apiVersion cannot be placed: quarantined, not guessed.
    upstream_file(
        &root,
        "kubelet/pods/default/unversioned",
        br#"{"kind":"Pod","metadata":{"name":"unversioned","namespace":"default"}}"#,
    );

    c.api.set_fault(Fault::Refuse);
    let mut hub = c.start_hub(BIN, FAST);
    let line = hub.wait_for_log("adopted upstream YurtHub's cache", Duration::from_secs(10));
    assert!(
        line.contains("4 objects of 5 types") && line.contains("4 moved from the older layout"),
        "{line}"
    );
    for moved in [
        "kubelet/pods.v1.core/default/web-1".to_string(),
        format!("kubelet/nodes.v1.core/{NODE}"),
        format!("kubelet/leases.v1.coordination.k8s.io/kube-node-lease/{NODE}"),
        "kube-proxy/services.v1.core/default/kubernetes".to_string(),
    ] {
        assert!(root.join(&moved).is_file(), "{moved}");
    }
    for gone in [
        "kubelet/pods",
        "kubelet/nodes",
        "kubelet/leases",
        "kube-proxy/services",
    ] {
        assert!(!root.join(gone).exists(), "{gone}");
    }
    assert!(root
        .join("kube-proxy/endpointslices.v1.discovery.k8s.io")
        .is_dir());
    let q = quarantined(&root);
    assert!(
        q.len() == 1 && q[0].starts_with("kubelet_pods_default_unversioned."),
        "{q:?}"
    );

    let reads = |hub: &testapi::Hub| {
        let a = hub.proxy_addr;
        let pods = list(
            a,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
            KUBELET,
        );
        let svcs = list(a, &format!("/api/v1/services?{PROXY_SELECTOR}"), KUBE_PROXY);
        let slices = list(
            a,
            &format!("/apis/discovery.k8s.io/v1/endpointslices?{PROXY_SELECTOR}"),
            KUBE_PROXY,
        );
        [pods, svcs, slices]
            .into_iter()
            .map(|(s, v)| (s, names(&v)))
            .collect::<Vec<_>>()
    };
    let expected = vec![
        (200, vec!["web-1".to_string()]),
        (200, vec!["kubernetes".to_string()]),
        (200, vec![]),
    ];
    assert_eq!(reads(&hub), expected);
    let slices = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices";
    let (s, none) = list(hub.proxy_addr, slices, KUBE_PROXY);
    assert_eq!((s, names(&none)), (200, vec![]));
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    assert_eq!(list(hub.proxy_addr, slices, KUBE_PROXY).0, 404);

    // A second start finds the tree its own: nothing adopted again, the same answers.
    hub.stop();
    let hub = c.start_hub(BIN, FAST);
    assert_eq!(reads(&hub), expected);
    assert!(!hub
        .log()
        .iter()
        .any(|l| l.contains("adopted upstream YurtHub's cache")));
}

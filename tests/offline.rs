//! Edge autonomy end to end: online reads fill the cache at the documented paths; with the
//! cloud refused or blackholed, the same reads are answered from the cache with upstream
//! YurtHub's status codes; held watches end when the cloud returns; a fresh process serves
//! from the cache with the cloud down.

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use testapi::client::{self, get, request};
use testapi::wait_until;
use testapi::{names, pod, Cluster, Fault, Hub, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const FAST: &[&str] = &[
    "--heartbeat-interval-seconds=1",
    "--heartbeat-timeout-seconds=1",
    "--heartbeat-healthy-threshold=2",
];

/// Turns the multiplexer off, for tests of a component's own cached lists of Services.
const NO_MULTIPLEXER: &str = "--pool-scope-resources=";

fn seed(c: &Cluster) {
    c.api.create(
        "/api/v1/nodes",
        json!({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}),
    );
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        let mut p = pod(name, NODE);
        p["metadata"]["labels"] = json!({"app": app});
        c.api.create("/api/v1/namespaces/default/pods", p);
    }
    let mut unscheduled = pod("pending", "");
    unscheduled["spec"]["nodeName"] = json!("");
    c.api.create("/api/v1/namespaces/default/pods", unscheduled);
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "settings"}, "data": {"a": "1"}}),
    );
}

/// The reads a kubelet makes, through the hub; returns them for comparison.
fn kubelet_reads(addr: std::net::SocketAddr) -> Vec<(u16, Value)> {
    [
        "/api/v1/namespaces/default/pods/web-1",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Ddb",
        "/api/v1/nodes/node-1",
        "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dsettings",
    ]
    .iter()
    .map(|p| {
        let r = get(addr, p, KUBELET);
        (r.status, r.json())
    })
    .collect()
}

fn comparable(reads: &[(u16, Value)]) -> Vec<(u16, Vec<String>)> {
    reads
        .iter()
        .map(|(s, v)| match v["items"].as_array() {
            Some(_) => (*s, names(v)),
            None => (
                *s,
                vec![v["metadata"]["name"].as_str().unwrap_or("").to_string()],
            ),
        })
        .collect()
}

/// Waits until the reads of [`kubelet_reads`] are on disk (the writer applies jobs in order,
/// so the last one's view file means all are there).
fn wait_cached(c: &Cluster) {
    let root = c.cache.path().to_path_buf();
    wait_until(
        "the online reads to be cached",
        Duration::from_secs(10),
        || {
            root.join("kubelet/configmaps.v1.core/default/settings")
                .is_file()
                && std::fs::read_dir(root.join("_internal/views/kubelet/configmaps.v1.core"))
                    .is_ok_and(|d| d.count() == 1)
                && std::fs::read_dir(root.join("_internal/views/kubelet/pods.v1.core"))
                    .is_ok_and(|d| d.count() == 2)
        },
    );
}

fn go_offline(c: &Cluster, hub: &Hub) {
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
}

#[test]
fn online_reads_fill_the_cache_at_the_documented_paths() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let reads = kubelet_reads(hub.proxy_addr);
    assert!(reads.iter().all(|(s, _)| *s == 200), "{reads:?}");
    let root = c.cache.path();
    wait_until("cache files", Duration::from_secs(10), || {
        root.join("kubelet/pods.v1.core/default/web-1").is_file()
            && root.join("kubelet/nodes.v1.core/node-1").is_file()
            && root
                .join("kubelet/configmaps.v1.core/default/settings")
                .is_file()
            && root.join("kubelet/pods.v1.core/default/db-1").is_file()
    });
    let stored: Value = serde_json::from_slice(
        &std::fs::read(root.join("kubelet/pods.v1.core/default/web-1")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (stored["kind"].as_str(), stored["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
    assert_eq!(stored["spec"]["nodeName"], NODE);
    // The hub renews the node lease itself and keeps it as kubelet's.
    wait_until("the renewed lease", Duration::from_secs(10), || {
        root.join("kubelet/leases.v1.coordination.k8s.io/kube-node-lease/node-1")
            .is_file()
    });
    assert!(c
        .api
        .get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1")
        .is_some());
    // Not cached: other components, pods without a node. The writer applies jobs in order,
    // so once the marker object is on disk, everything before it has been decided.
    get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods",
        "curl/8.0",
    );
    get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "marker"}}),
    );
    get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/configmaps/marker",
        KUBELET,
    );
    wait_until("the marker", Duration::from_secs(10), || {
        root.join("kubelet/configmaps.v1.core/default/marker")
            .is_file()
    });
    assert!(!root.join("curl").exists());
    assert!(!root.join("kubelet/pods.v1.core/default/pending").exists());
    let files = std::fs::read_dir(root.join("kubelet/pods.v1.core/default"))
        .unwrap()
        .count();
    assert_eq!(files, 3);
}

#[test]
fn a_refused_cloud_gets_the_same_answers_from_the_cache() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let online = kubelet_reads(hub.proxy_addr);
    let version = get(hub.proxy_addr, "/version", "coredns/1.11");
    assert_eq!(version.status, 200);
    wait_cached(&c);
    wait_until("/version cached", Duration::from_secs(10), || {
        c.cache.path().join("version").is_file()
    });
    go_offline(&c, &hub);
    let offline = kubelet_reads(hub.proxy_addr);
    // CoreDNS needs /version to start offline (field notes oy#880).
    let cached_version = get(hub.proxy_addr, "/version", "coredns/1.11");
    assert_eq!(
        (cached_version.status, cached_version.json()),
        (200, version.json())
    );
    assert_eq!(
        get(hub.proxy_addr, "/apis/discovery.k8s.io/v1", "coredns/1.11").status,
        404
    );
    assert_eq!(
        get(hub.proxy_addr, "/openapi/v2", "coredns/1.11").status,
        400
    );
    assert_eq!(comparable(&offline), comparable(&online));
    let list = &offline[1].1;
    assert_eq!(list["kind"], "PodList");
    let max_rv = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(list["metadata"]["resourceVersion"], max_rv.to_string());

    let a = hub.proxy_addr;
    let missing = get(a, "/api/v1/namespaces/default/pods/nope", KUBELET);
    assert_eq!(
        (missing.status, missing.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let del = request(
        a,
        "DELETE",
        "/api/v1/namespaces/default/pods/web-1",
        &[("User-Agent", KUBELET)],
        b"",
    )
    .unwrap();
    assert_eq!(del.status, 403);
    assert_eq!(
        del.json()["message"],
        "delete request is not supported in local cache"
    );
    let body = br#"{"metadata":{"name":"ev1","namespace":"default"},"reason":"Started"}"#;
    let created = request(
        a,
        "POST",
        "/api/v1/namespaces/default/events",
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .unwrap();
    assert_eq!((created.status, created.body.as_slice()), (201, &body[..]));
    let patched = request(
        a,
        "PATCH",
        "/api/v1/namespaces/default/pods/web-1/status",
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", "application/merge-patch+json"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json()["metadata"]["name"], "web-1");
    let uncacheable = get(a, "/api/v1/namespaces/default/pods", "curl/8.0");
    assert_eq!(uncacheable.status, 400);
    assert!(uncacheable.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("can not cache for curl"));
    let token = request(
        a,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &[("User-Agent", KUBELET)],
        br#"{"spec":{"audiences":["api"]}}"#,
    )
    .unwrap();
    assert_eq!(token.status, 201);
    assert_eq!(
        token.json()["status"]["token"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    // A body that is JSON but no object is answered too, never a crash.
    for odd in [&b"[]"[..], b"\"x\"", b"7"] {
        let token = request(
            a,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            &[("User-Agent", KUBELET)],
            odd,
        )
        .unwrap();
        assert_eq!(token.status, 201, "{}", String::from_utf8_lossy(odd));
    }
    // kubelet's own lease is always answered here, from the copy the hub renewed.
    let lease = get(
        a,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1",
        KUBELET,
    );
    assert_eq!(lease.status, 200);
    assert_eq!(lease.json()["spec"]["holderIdentity"], NODE);
    // An empty pod list for kubelet is a 404, so that it does not stop every pod.
    let none = get(a, "/api/v1/namespaces/empty/pods", KUBELET);
    assert_eq!(none.status, 404);
    // A selector never seen online is evaluated over the cached objects.
    let fresh = get(
        a,
        "/api/v1/namespaces/default/pods?labelSelector=app%20in%20(web,db)",
        KUBELET,
    );
    assert_eq!(names(&fresh.json()), vec!["db-1", "web-1", "web-2"]);
}

#[test]
fn two_label_selectors_keep_their_own_answers_offline() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let web = "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb";
    let db = "/api/v1/namespaces/default/pods?labelSelector=app%3Ddb";
    assert_eq!(
        names(&get(hub.proxy_addr, web, KUBELET).json()),
        vec!["web-1", "web-2"]
    );
    assert_eq!(
        names(&get(hub.proxy_addr, db, KUBELET).json()),
        vec!["db-1"]
    );
    let views = c.cache.path().join("_internal/views/kubelet/pods.v1.core");
    wait_until("both views", Duration::from_secs(10), || {
        std::fs::read_dir(&views).is_ok_and(|d| d.count() == 2)
    });
    go_offline(&c, &hub);
    assert_eq!(
        names(&get(hub.proxy_addr, web, KUBELET).json()),
        vec!["web-1", "web-2"]
    );
    assert_eq!(
        names(&get(hub.proxy_addr, db, KUBELET).json()),
        vec!["db-1"]
    );
}

#[test]
fn a_blackholed_cloud_is_detected_within_three_heartbeats_and_held_watches_end_when_it_returns() {
    let c = Cluster::new();
    seed(&c);
    // Default ratios (interval 10 s, probe timeout 2 s, 3 tries), scaled down: a probe of a
    // blackholed server takes its 3 timed-out tries, and all of it fits in three intervals.
    let hub = c.start_hub(
        BIN,
        &[
            "--heartbeat-interval-seconds=2",
            "--heartbeat-timeout-seconds=1",
            "--heartbeat-healthy-threshold=2",
        ],
    );
    let _ = kubelet_reads(hub.proxy_addr);
    wait_cached(&c);
    let rv = c.api.resource_version();
    let mut online = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        KUBELET,
    );
    wait_until("the watch upstream", Duration::from_secs(10), || {
        c.api.open_watches_on("pods") == 1
    });
    c.api.set_fault(Fault::Blackhole);
    c.api.reset_connections();
    let t = Instant::now();
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let detected = t.elapsed();
    assert!(
        detected <= Duration::from_secs(6),
        "blackhole detected after {detected:?} (three heartbeats are 6 s)"
    );

    // A watch relayed from the now silent server is ended, so its client re-watches here.
    online.set_timeout(Duration::from_secs(10));
    match online.read_to_end() {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the relayed watch hangs on the dead link"
        ),
    }
    // Offline: a watch is held open with no events.
    let mut w = client::watch(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion=0",
        KUBELET,
    );
    assert_eq!(w.status, 200);
    // The cloud comes back: two good probes later the held watch ends cleanly.
    c.api.set_fault(Fault::None);
    w.set_timeout(Duration::from_secs(20));
    let rest = w.read_to_end().unwrap();
    assert!(rest.is_empty(), "no events from an offline watch");
    // And requests go to the cloud again.
    c.api
        .create("/api/v1/namespaces/default/pods", pod("after-outage", NODE));
    wait_until("the cloud answering again", Duration::from_secs(10), || {
        get(
            hub.proxy_addr,
            "/api/v1/namespaces/default/pods/after-outage",
            KUBELET,
        )
        .status
            == 200
    });
}

#[test]
fn a_fresh_process_with_the_cloud_down_serves_from_the_cache() {
    let c = Cluster::new();
    seed(&c);
    let online = {
        let hub = c.start_hub(BIN, FAST);
        let r = kubelet_reads(hub.proxy_addr);
        wait_cached(&c);
        r
    };
    c.api.set_fault(Fault::Refuse);
    let hub = c.start_hub(BIN, FAST);
    let offline = kubelet_reads(hub.proxy_addr);
    assert_eq!(comparable(&offline), comparable(&online));
    assert!(Path::new(&c.cache.path().join("kubelet")).is_dir());
}

#[test]
fn a_watch_list_is_replayed_from_the_cache_offline() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let _ = kubelet_reads(hub.proxy_addr);
    wait_cached(&c);
    go_offline(&c, &hub);
    let mut w = client::watch(hub.proxy_addr, "/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&labelSelector=app%3Dweb&timeoutSeconds=2", KUBELET);
    let mut seen = Vec::new();
    while let Some(line) = w.next_line().unwrap() {
        let ev: Value = serde_json::from_str(&line).unwrap();
        seen.push((
            ev["type"].as_str().unwrap().to_string(),
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
        if ev["type"] == "BOOKMARK" {
            assert_eq!(
                ev["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED".into(), "web-1".into()),
            ("ADDED".into(), "web-2".into()),
            ("BOOKMARK".into(), String::new())
        ]
    );
}

#[test]
fn partial_object_metadata_lives_in_its_own_tree_and_is_served_offline() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let accept =
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let path = "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb";
    let headers = [("User-Agent", KUBELET), ("Accept", accept)];
    let online = request(hub.proxy_addr, "GET", path, &headers, b"")
        .unwrap()
        .json();
    assert_eq!(online["kind"], "PartialObjectMetadataList");
    let file = c
        .cache
        .path()
        .join("kubelet/partialobjectmetadatas.v1.meta.k8s.io/pods.v1.core/default/web-1");
    wait_until("the metadata tree", Duration::from_secs(10), || {
        file.is_file()
    });
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["kind"], "PartialObjectMetadata");
    assert!(stored.get("spec").is_none());
    // Full objects are untouched by metadata answers.
    assert!(!c
        .cache
        .path()
        .join("kubelet/pods.v1.core/default/web-1")
        .exists());
    go_offline(&c, &hub);
    let offline = request(hub.proxy_addr, "GET", path, &headers, b"")
        .unwrap()
        .json();
    assert_eq!(offline["kind"], "PartialObjectMetadataList");
    assert_eq!(offline["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(names(&offline), vec!["web-1", "web-2"]);
}

/// kubelet's lease updates are answered by the hub even online; their bodies must be read, or
/// the next request on the connection would be parsed from the body.
#[test]
fn a_local_answer_consumes_the_request_body_and_keeps_the_connection() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, FAST);
    let lease = c
        .cache
        .path()
        .join("kubelet/leases.v1.coordination.k8s.io/kube-node-lease/node-1");
    wait_until("the renewed lease", Duration::from_secs(10), || {
        lease.is_file()
    });
    let tcp = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = client::Session::new(tcp);
    let body = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"node-1","namespace":"kube-node-lease"},"spec":{"holderIdentity":"node-1"}}"#;
    let mut wire = format!(
        "PUT /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1 HTTP/1.1\r\nHost: x\r\nUser-Agent: {KUBELET}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(body);
    wire.extend_from_slice(format!("GET /api/v1/namespaces/default/pods/none HTTP/1.1\r\nHost: x\r\nUser-Agent: {KUBELET}\r\n\r\n").as_bytes());
    s.write_raw(&wire).unwrap();
    let statuses: Vec<u16> = (0..2).map(|_| s.read_response().unwrap().status).collect();
    assert_eq!(statuses, vec![200, 404]);
}

/// Seed FAQ items 11 and 13: a component named in `cache_agents` is cached, `*` caches every
/// component that sends a User-Agent, and removing it stops caching, all without a restart.
#[test]
fn cache_agents_in_yurt_hub_cfg_apply_live() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let root = c.cache.path().to_path_buf();
    let read = |ua: &str, name: &str| {
        assert_eq!(
            get(
                hub.proxy_addr,
                &format!("/api/v1/namespaces/default/pods/{name}"),
                ua
            )
            .status,
            200
        );
    };
    // kubelet's reads act as markers: the writer applies jobs in order.
    let marker = |name: &str| {
        read(KUBELET, name);
        let f = root.join(format!("kubelet/pods.v1.core/default/{name}"));
        wait_until("the marker", Duration::from_secs(10), || f.is_file());
    };
    read("foo/1.0", "web-1");
    marker("web-1");
    assert!(!root.join("foo").exists(), "foo is not a cache agent yet");

    c.api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        json!({"metadata": {"name": "yurt-hub-cfg"}, "data": {"cache_agents": "foo"}}),
    );
    hub.wait_for_log("cache_agents now \"foo\"", Duration::from_secs(10));
    read("foo/1.0", "web-1");
    wait_until("foo cached", Duration::from_secs(10), || {
        root.join("foo/pods.v1.core/default/web-1").is_file()
    });

    let path = "/api/v1/namespaces/kube-system/configmaps/yurt-hub-cfg";
    let mut cm = c.api.get(path).unwrap();
    cm["data"]["cache_agents"] = json!("*");
    c.api.update(path, cm);
    hub.wait_for_log("cache_agents now \"*\"", Duration::from_secs(10));
    read("anything-else/2.0", "web-2");
    wait_until("* caches all", Duration::from_secs(10), || {
        root.join("anything-else/pods.v1.core/default/web-2")
            .is_file()
    });

    let mut cm = c.api.get(path).unwrap();
    cm["data"]["cache_agents"] = json!("");
    c.api.update(path, cm);
    hub.wait_for_log("cache_agents now \"\"", Duration::from_secs(10));
    read("bar/1.0", "web-2");
    marker("db-1");
    assert!(!root.join("bar").exists(), "removal stops caching");
}

/// kubelet's start-up writes, as a real kubelet makes them (found against a real kubelet
/// restarted offline, tests/real_cluster.rs): what it creates and patches online is cached
/// from the cloud's JSON answer; offline, creates echo the request's own bytes and type, the
/// TokenRequest is read from protobuf, and reviews are left to the cloud.
#[test]
fn kubelet_writes_are_cached_online_and_answered_truly_offline() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/nodes",
        json!({"metadata": {"name": NODE}, "status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}}),
    );
    c.api.create(
        "/api/v1/namespaces/default/serviceaccounts",
        json!({"metadata": {"name": "default"}}),
    );
    let hub = c.start_hub(BIN, FAST);
    let a = hub.proxy_addr;
    const PB: &str = "application/vnd.kubernetes.protobuf";
    let pb_accept = "application/vnd.kubernetes.protobuf, */*";
    // Online: kubelet creates its CSINode (protobuf on the wire, as kubelet speaks). The hub
    // asks the cloud for JSON because it caches the answer; the client takes JSON too.
    let csinode = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
        "metadata": {"name": NODE}, "spec": {"drivers": []}});
    let created = request(
        a,
        "POST",
        "/apis/storage.k8s.io/v1/csinodes",
        &[
            ("User-Agent", KUBELET),
            ("Accept", pb_accept),
            ("Content-Type", "application/json"),
        ],
        csinode.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/json"));
    let asked = c
        .api
        .client_requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.target.contains("csinodes"))
        .expect("the create reached the cloud");
    assert_eq!(asked.header("accept"), Some("*/*"));
    // kubelet's strategic-merge patch of its status: Ready merged in by type, the rest kept.
    let patched = request(
        a,
        "PATCH",
        &format!("/api/v1/nodes/{NODE}/status"),
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", "application/strategic-merge-patch+json"),
        ],
        br#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    )
    .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.text());
    let conditions = |v: &Value| -> Vec<(String, String)> {
        v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let want = vec![
        ("Ready".to_string(), "True".to_string()),
        ("DiskPressure".to_string(), "False".to_string()),
    ];
    assert_eq!(conditions(&patched.json()), want);
    let cached = c.cache.path().join("kubelet");
    wait_until(
        "kubelet's writes in the cache",
        Duration::from_secs(10),
        || {
            let node = std::fs::read(cached.join(format!("nodes.v1.core/{NODE}")));
            cached
                .join(format!("csinodes.v1.storage.k8s.io/{NODE}"))
                .is_file()
                && node
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|n| conditions(&n) == want)
        },
    );
    // A request the hub neither caches nor filters keeps the client's protobuf Accept.
    c.api.clear_requests();
    let _ = request(
        a,
        "GET",
        "/api/v1/namespaces/default/serviceaccounts/default",
        &[("User-Agent", "operator/1.0"), ("Accept", pb_accept)],
        b"",
    )
    .unwrap();
    let passed = c.api.client_requests();
    assert_eq!(passed.last().unwrap().header("accept"), Some(pb_accept));

    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    // The CSINode kubelet looks up at start is there.
    let got = get(
        a,
        &format!("/apis/storage.k8s.io/v1/csinodes/{NODE}"),
        KUBELET,
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["kind"], "CSINode");
    // An offline create echoes the request: its own bytes under its own type.
    let body = b"k8s\0\x0a\x0b\x0a\x02v1\x12\x04Node\x12\x00";
    let echoed = request(
        a,
        "POST",
        "/api/v1/nodes",
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", PB),
            ("Accept", pb_accept),
        ],
        body,
    )
    .unwrap();
    assert_eq!(echoed.status, 201);
    assert_eq!(echoed.header("content-type"), Some(PB));
    assert_eq!(echoed.body, body);
    // The TokenRequest kubelet sends in protobuf (kube-apiserver 1.36's own bytes).
    let token = request(
        a,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &[("User-Agent", KUBELET), ("Content-Type", PB)],
        include_bytes!("../src/local/testdata/tokenrequest-1.36.pb"),
    )
    .unwrap();
    assert_eq!(token.status, 201, "{}", token.text());
    let t = token.json();
    assert_eq!(t["spec"]["audiences"], json!(["aud-x", "aud-y"]));
    assert_eq!(t["spec"]["expirationSeconds"], 60);
    assert_eq!(t["spec"]["boundObjectRef"]["name"], "web-1");
    let broken = request(
        a,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &[("User-Agent", KUBELET), ("Content-Type", PB)],
        b"k8s\0\x12\x7f",
    )
    .unwrap();
    assert_eq!(broken.status, 400);
    assert!(broken.json()["message"]
        .as_str()
        .unwrap()
        .contains("protobuf"));
    // Whether a user may do something is the cloud's to say.
    let sar = request(
        a,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &[("User-Agent", KUBELET), ("Content-Type", "application/json")],
        br#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"user":"x"}}"#,
    )
    .unwrap();
    assert_eq!(sar.status, 502);
}

const KUBE_PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";

fn service(name: &str, note: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "annotations": {"note": note}},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53}]}})
}

/// kube-proxy flushes every rule on an empty Service list, flannel drops its routes on an empty
/// Node list: offline, a list that was never cached is "not known" (404), never empty.
#[test]
fn offline_a_list_never_cached_is_404_and_one_cached_empty_is_empty() {
    let c = Cluster::new();
    // Each component's own cache first: the multiplexer, which answers Services and
    // EndpointSlices from the store it fills as the hub, is off until the end.
    let hub = c.start_hub(BIN, &[FAST, &[NO_MULTIPLEXER]].concat());
    // Online, flanneld lists an empty namespace's services: a real, empty answer.
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/empty/services",
        "flanneld/v0.25.1",
    );
    assert_eq!((r.status, names(&r.json()).len()), (200, 0));
    wait_until("the empty view", Duration::from_secs(10), || {
        std::fs::read_dir(
            c.cache
                .path()
                .join("_internal/views/flanneld/services.v1.core"),
        )
        .is_ok_and(|d| d.count() == 1)
    });
    go_offline(&c, &hub);
    for (path, ua) in [
        ("/api/v1/services", KUBE_PROXY),
        ("/api/v1/nodes", "flanneld/v0.25.1"),
        ("/apis/discovery.k8s.io/v1/endpointslices", "coredns/1.11.3"),
    ] {
        let r = get(hub.proxy_addr, path, ua);
        assert_eq!(r.status, 404, "{ua} {path}: {}", r.text());
        assert_eq!(r.json()["reason"], "NotFound", "{path}");
        assert_eq!(r.json()["kind"], "Status", "{path}");
    }
    // A watch-list's initial events are a list too.
    let r = get(
        hub.proxy_addr,
        "/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        KUBE_PROXY,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // What the cloud really answered empty is answered empty.
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/empty/services",
        "flanneld/v0.25.1",
    );
    assert_eq!((r.status, names(&r.json()).len()), (200, 0), "{}", r.text());
    // With the multiplexer, started offline: its store has no copy on disk to fill from,
    // so lists and watch-lists are still "not known", not the empty store.
    hub.kill();
    let hub = c.start_hub(BIN, FAST);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    for path in [
        "/api/v1/services",
        "/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    ] {
        let r = get(hub.proxy_addr, path, KUBE_PROXY);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = get(
        hub.proxy_addr,
        "/apis/discovery.k8s.io/v1/endpointslices",
        "coredns/1.11.3",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

/// A list too large to cache is remembered: offline it is refused, not answered with what an
/// older, smaller answer held.
#[test]
fn offline_a_list_once_too_large_to_cache_is_404_not_its_older_answer() {
    let c = Cluster::new();
    let mut args = FAST.to_vec();
    args.push("--max-cached-list-bytes=4096");
    // kube-proxy's own cache (the multiplexer would answer its Services from memory).
    args.push(NO_MULTIPLEXER);
    let hub = c.start_hub(BIN, &args);
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("dns", "small"),
    );
    let r = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!((r.status, names(&r.json()).len()), (200, 1));
    let view = c
        .cache
        .path()
        .join("_internal/views/kube-proxy/services.v1.core");
    wait_until("the small list's view", Duration::from_secs(10), || {
        std::fs::read_dir(&view).is_ok_and(|d| d.count() == 1)
    });
    for i in 0..20 {
        let note = "x".repeat(300);
        c.api.create(
            "/api/v1/namespaces/default/services",
            service(&format!("svc-{i}"), &note),
        );
    }
    let r = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!((r.status, names(&r.json()).len()), (200, 21));
    hub.wait_for_log(
        "larger than --max-cached-list-bytes",
        Duration::from_secs(10),
    );
    wait_until("the view to say too large", Duration::from_secs(10), || {
        std::fs::read_dir(&view).is_ok_and(|d| {
            d.flatten().any(|f| {
                std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("\"too_large\":true"))
            })
        })
    });
    go_offline(&c, &hub);
    let r = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("--max-cached-list-bytes"),
        "{}",
        r.text()
    );
}

/// Offline, selectors over cached objects read fields as the apiserver does: a pod that leaves
/// `spec.hostNetwork` unset has `spec.hostNetwork=false`.
#[test]
fn offline_field_selectors_see_booleans_as_the_apiserver_does() {
    let c = Cluster::new();
    seed(&c);
    let mut host = pod("host-1", NODE);
    host["spec"]["hostNetwork"] = json!(true);
    c.api.create("/api/v1/namespaces/default/pods", host);
    let hub = c.start_hub(BIN, FAST);
    let mine = "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dnode-1";
    let online = get(hub.proxy_addr, mine, KUBELET);
    assert_eq!(names(&online.json()).len(), 4);
    wait_until("the pods to be cached", Duration::from_secs(10), || {
        c.cache
            .path()
            .join("kubelet/pods.v1.core/default/host-1")
            .is_file()
    });
    go_offline(&c, &hub);
    let pod_network = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dnode-1%2Cspec.hostNetwork%3Dfalse",
        KUBELET,
    );
    assert_eq!(pod_network.status, 200, "{}", pod_network.text());
    let mut got = names(&pod_network.json());
    got.sort();
    assert_eq!(got, ["db-1", "web-1", "web-2"]);
    let host_network = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods?fieldSelector=spec.hostNetwork%3Dtrue",
        KUBELET,
    );
    assert_eq!(names(&host_network.json()), ["host-1"]);
}

/// A dry run's answer is what the object would be, not what it is: kubelet's cached copy and
/// this node's pods are not touched by one.
#[test]
fn dry_run_writes_never_reach_the_cache() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    let cm = "/api/v1/namespaces/default/configmaps/settings";
    let cached = c
        .cache
        .path()
        .join("kubelet/configmaps.v1.core/default/settings");
    assert_eq!(get(hub.proxy_addr, cm, KUBELET).json()["data"]["a"], "1");
    wait_until(
        "the configmap to be cached",
        Duration::from_secs(10),
        || cached.is_file(),
    );
    let json = [
        ("User-Agent", KUBELET),
        ("Content-Type", "application/json"),
    ];
    let changed =
        json!({"metadata": {"name": "settings", "namespace": "default"}, "data": {"a": "2"}});
    let r = request(
        hub.proxy_addr,
        "PUT",
        &format!("{cm}?dryRun=All"),
        &json,
        changed.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["data"]["a"].clone()),
        (200, json!("2")),
        "{}",
        r.text()
    );
    let ghost = pod("ghost", NODE);
    let r = request(
        hub.proxy_addr,
        "POST",
        "/api/v1/namespaces/default/pods?dryRun=All",
        &json,
        ghost.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // The cache's writer applies jobs in order: once a later answer is on disk, the dry runs'
    // would be too.
    get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods/web-1",
        KUBELET,
    );
    wait_until(
        "a later answer to be cached",
        Duration::from_secs(10),
        || {
            c.cache
                .path()
                .join("kubelet/pods.v1.core/default/web-1")
                .is_file()
        },
    );
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
    assert_eq!(on_disk["data"]["a"], "1");
    assert!(!c
        .cache
        .path()
        .join("kubelet/pods.v1.core/default/ghost")
        .exists());
    assert_eq!(
        c.api.get(cm).unwrap()["data"]["a"],
        "1",
        "the cloud stored nothing either"
    );
    go_offline(&c, &hub);
    assert_eq!(get(hub.proxy_addr, cm, KUBELET).json()["data"]["a"], "1");
}

/// Offline, the log says so once (with why), not once per probe or request: an operator
/// reading the journal sees the state change, not a flood.
#[test]
fn offline_the_log_says_the_cloud_is_lost_once_not_per_probe_or_request() {
    let c = Cluster::new();
    seed(&c);
    let hub = c.start_hub(BIN, FAST);
    kubelet_reads(hub.proxy_addr);
    wait_cached(&c);
    go_offline(&c, &hub);
    let lost = hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    assert!(
        lost.contains(" WARN ") && lost.contains("unhealthy: "),
        "{lost}"
    );
    // Counted from the first failed probe after the change: what was cut at the change itself
    // (a watch's body, a request caught in the gap) is the change, logged once.
    let at = hub.log().iter().position(|l| l == &lost).unwrap_or(0);
    wait_until(
        "a failed probe after the change",
        Duration::from_secs(20),
        || {
            hub.log()[at..]
                .iter()
                .any(|l| l.contains("health probe of"))
        },
    );
    let from = hub.log().len();
    for _ in 0..10 {
        kubelet_reads(hub.proxy_addr);
    }
    // Three more probe rounds (each of three lease attempts) fail meanwhile: at --v=2 each
    // is a debug line.
    wait_until("three more failed probes", Duration::from_secs(20), || {
        hub.log()[from..]
            .iter()
            .filter(|l| l.contains("health probe of"))
            .count()
            >= 3
    });
    // Certificate attempts are not probes or requests: they have their own limiter (the first
    // failure after a success is news), and the harness's certificate, which rcgen gives only
    // one organization, is renewed at start, so one may fail here.
    let warnings: Vec<String> = hub.log()[from..]
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("[yurthub::certs"))
        .cloned()
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// `GET /pods` on the admin port, as node-local tools use it: kubelet's cached pods as a
/// `PodList`, online or not; a cached object that is no Pod fails it (500), never hides.
#[test]
fn get_pods_on_the_admin_port_lists_kubelets_cached_pods() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("web-1", NODE));
    c.api
        .create("/api/v1/namespaces/kube-system/pods", pod("dns-1", NODE));
    let hub = c.start_hub(BIN, FAST);
    assert_eq!(get(hub.proxy_addr, "/api/v1/pods", KUBELET).status, 200);
    let pods = c.cache.path().join("kubelet/pods.v1.core");
    wait_until("the pods cached", Duration::from_secs(10), || {
        pods.join("default/web-1").is_file() && pods.join("kube-system/dns-1").is_file()
    });
    go_offline(&c, &hub);
    let r = get(hub.admin_addr, "/pods", "curl/8");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("PodList"), Some("v1"))
    );
    assert_eq!(names(&list), ["web-1", "dns-1"]);
    let wrong = request(hub.admin_addr, "POST", "/pods", &[], b"").unwrap();
    assert_eq!(wrong.status, 405);
    std::fs::write(
        pods.join("default/odd"),
        br#"{"kind":"ConfigMap","metadata":{"name":"odd"}}"#,
    )
    .unwrap();
    let r = get(hub.admin_addr, "/pods", "curl/8");
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("default/odd: the cached object is not a Pod"),
        "{}",
        r.text()
    );
}

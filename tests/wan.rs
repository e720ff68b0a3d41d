//! The WAN link (issue 16): upstream sockets that notice a dead peer, streams that survive a
//! flapping probe, and the hub's own informers that list once and then only watch.

use std::time::{Duration, Instant};
use testapi::client::{self, get};
use testapi::wait_until;
use testapi::{pod, Cluster, Fault, Middlebox, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";

/// The hub's own requests for `path` (its informers' as `yurthub`, and the multiplexer's,
/// which lists and watches Services and EndpointSlices for every local client, the hub's
/// own informers among them), watches or not.
fn hub_requests(c: &Cluster, path: &str, watches: bool) -> Vec<String> {
    c.api
        .requests()
        .into_iter()
        .filter(|r| {
            r.header("user-agent")
                .is_some_and(|ua| ua.starts_with("yurthub") || ua.starts_with("multiplexer-proxy-"))
                && r.target.split('?').next() == Some(path)
                && r.target.contains("watch=true") == watches
        })
        .map(|r| r.target)
        .collect()
}

/// The TCP sockets of this network namespace connected to `port`, with their timer kind
/// (`/proc/net/tcp`'s `tr`: 0 none, 1 retransmit, 2 keepalive) and its seconds to go.
fn sockets_to(port: u16) -> Vec<(u8, f64)> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when ...; 01 is ESTABLISHED.
            if f.len() < 6 || f[3] != "01" {
                continue;
            }
            let rem_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if rem_port != Some(port) {
                continue;
            }
            let (tr, when) = f[5].split_once(':').unwrap_or(("0", "0"));
            let tr = u8::from_str_radix(tr, 16).unwrap_or(0);
            let ticks = u64::from_str_radix(when, 16).unwrap_or(0);
            out.push((tr, ticks as f64 / 100.0));
        }
    }
    out
}

#[test]
fn every_upstream_connection_is_kept_alive_by_tcp_within_thirty_seconds() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &["--filter-sync-timeout=1s"]);
    let mut w = client::watch(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods?watch=true",
        KUBELET,
    );
    assert_eq!(w.status, 200);
    wait_until("the watch upstream", Duration::from_secs(10), || {
        c.api.open_watches_on("pods") == 1
    });
    // Every established connection from the hub to the apiserver (probes, informers, the
    // relayed watch) has TCP keepalive armed: an idle one shows the keepalive timer, due
    // within the 30 s upstream YurtHub uses. A busy one may show another timer a moment.
    let port = c.api.addr().port();
    wait_until(
        "keepalive on every upstream socket",
        Duration::from_secs(10),
        || {
            let socks = sockets_to(port);
            socks.len() >= 2 && socks.iter().all(|&(tr, when)| tr == 2 && when <= 30.0)
        },
    );
    w.set_timeout(Duration::from_millis(200));
    let _ = w.next_piece();
}

#[test]
fn a_failed_probe_leaves_a_running_watch_alone_and_it_keeps_delivering() {
    let c = Cluster::new();
    let hub = c.start_hub(
        BIN,
        &[
            "--heartbeat-interval-seconds=1",
            "--heartbeat-failed-retry=1",
            "--filter-sync-timeout=1s",
        ],
    );
    let rv = c.api.resource_version();
    let mut w = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        KUBELET,
    );
    assert_eq!(w.status, 200);
    wait_until("the watch upstream", Duration::from_secs(10), || {
        c.api.open_watches_on("pods") == 1
    });
    // The lease probe fails (the apiserver answers 503 for a moment): the hub counts the
    // cloud as unreachable, and answers new requests from the cache.
    c.api.set_fault(Fault::Status(503));
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    c.api.set_fault(Fault::None);
    hub.wait_for_log("is now healthy", Duration::from_secs(10));
    // The watch opened before is still the one the apiserver serves, and it delivers.
    assert_eq!(c.api.open_watches_on("pods"), 1);
    c.api
        .create("/api/v1/namespaces/default/pods", pod("after-flap", NODE));
    w.set_timeout(Duration::from_secs(10));
    let line = w
        .next_line()
        .unwrap()
        .expect("the watch ended on a probe verdict");
    assert!(line.contains("after-flap"), "{line}");
    let watches = c
        .api
        .client_requests()
        .iter()
        .filter(|r| r.target.contains("/pods?watch=true"))
        .count();
    assert_eq!(watches, 1, "kubelet had to watch again");
}

#[test]
fn the_hubs_informers_list_once_then_watch_from_where_they_were() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/services",
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
    );
    // Watches of 1 to 2 s: in a few seconds, what 30 minutes would be at the defaults.
    let _hub = c.start_hub(BIN, &["--informer-min-watch-timeout=1s"]);
    wait_until(
        "six rounds of the Services watch",
        Duration::from_secs(20),
        || hub_requests(&c, "/api/v1/services", true).len() >= 6,
    );
    c.api.create(
        "/api/v1/namespaces/default/services",
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 5432}]}}),
    );
    let after = c.api.resource_version();
    wait_until(
        "a watch from the new resourceVersion",
        Duration::from_secs(10),
        || {
            hub_requests(&c, "/api/v1/services", true).iter().any(|t| {
                t.contains(&format!("resourceVersion={after}&"))
                    || t.ends_with(&format!("resourceVersion={after}"))
            })
        },
    );
    let lists = hub_requests(&c, "/api/v1/services", false);
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert!(lists[0].contains("resourceVersion=0"), "{lists:?}");
    for w in hub_requests(&c, "/api/v1/services", true) {
        assert!(w.contains("allowWatchBookmarks=true"), "{w}");
        assert!(
            !w.contains("resourceVersion=0&") && !w.ends_with("resourceVersion=0"),
            "{w}"
        );
        assert!(w.contains("timeoutSeconds=1"), "{w}");
    }
}

#[test]
fn an_informer_watch_a_nat_forgot_is_noticed_and_watched_again() {
    let c = Cluster::new();
    let mb = Middlebox::start(c.api.addr());
    let mut args = c.hub_args(&[&c.api]);
    args[0] = format!("--server-addr={}", mb.url());
    args.extend(
        [
            "--informer-min-watch-timeout=3s",
            "--heartbeat-interval-seconds=1",
        ]
        .map(String::from),
    );
    let hub = testapi::Hub::start(BIN, &args);
    wait_until("the Services watch", Duration::from_secs(20), || {
        !hub_requests(&c, "/api/v1/services", true).is_empty()
    });
    let before = hub_requests(&c, "/api/v1/services", true).len();
    // The NAT forgets every connection: the watch's server side ends on time, the hub never
    // hears of it; the hub gives the watch up past its timeout and watches again.
    mb.forget_all();
    let forgotten = Instant::now();
    wait_until("a new Services watch", Duration::from_secs(30), || {
        hub_requests(&c, "/api/v1/services", true).len() > before
    });
    let noticed = forgotten.elapsed();
    assert!(
        noticed <= Duration::from_secs(6 + 1 + 5 + 3),
        "the dead watch was noticed after {noticed:?}"
    );
    assert_eq!(get(hub.proxy_addr, "/api/v1/services", KUBELET).status, 200);
}

#[test]
fn the_lease_is_renewed_by_one_small_patch_a_tick_through_one_of_several_servers() {
    let c = Cluster::new();
    let b = testapi::ApiServer::start(&c.pki);
    let d = testapi::ApiServer::start(&c.pki);
    let mut args = c.hub_args(&[&c.api, &b, &d]);
    args.extend(["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"].map(String::from));
    let _hub = testapi::Hub::start(BIN, &args);
    let servers = [&c.api, &b, &d];
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    // Each server has its own store here: the first renewal through each creates the lease.
    wait_until("a lease on every server", Duration::from_secs(20), || {
        servers
            .iter()
            .all(|s| s.get(&format!("{lease}/{NODE}")).is_some())
    });
    for s in servers {
        s.clear_requests();
    }
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let ticks = window.elapsed().as_secs_f64();
    let mut writes = 0;
    for s in servers {
        let hub: Vec<_> = s
            .requests()
            .into_iter()
            .filter(|r| {
                r.header("user-agent")
                    .is_some_and(|u| u.starts_with("yurthub"))
            })
            .collect();
        let on_lease: Vec<_> = hub.iter().filter(|r| r.target.starts_with(lease)).collect();
        for r in &on_lease {
            assert_eq!(r.method, "PATCH", "{} {}", r.method, r.target);
            assert_eq!(
                r.header("content-type"),
                Some("application/merge-patch+json")
            );
            let len: usize = r.header("content-length").unwrap().parse().unwrap();
            assert!(len < 80, "a renewal of {len} bytes");
        }
        assert!(!on_lease.is_empty(), "round robin skipped a server");
        writes += on_lease.len();
        assert!(
            hub.iter().any(|r| r.target == "/readyz"),
            "the other servers are checked for readiness"
        );
    }
    // One renewal a tick in all, not one per server.
    assert!(
        (writes as f64) <= ticks + 1.0,
        "{writes} lease writes in {ticks:.1} ticks of 1 s"
    );
}

#[test]
fn the_renewal_removes_the_delegate_heartbeat_annotation_and_keeps_the_rest() {
    let c = Cluster::new();
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    c.api.create(
        leases,
        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease",
                "annotations": {"openyurt.io/delegate-heartbeat": "true", "keep": "me"}},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                "renewTime": "2026-01-01T00:00:00.000000Z"}}),
    );
    let _hub = c.start_hub(
        BIN,
        &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
    );
    let path = format!("{leases}/{NODE}");
    wait_until("the node's own renewal", Duration::from_secs(10), || {
        c.api.get(&path).is_some_and(|l| {
            l["spec"]["renewTime"] != "2026-01-01T00:00:00.000000Z"
                && l["metadata"]["annotations"]
                    .get("openyurt.io/delegate-heartbeat")
                    .is_none()
        })
    });
    let l = c.api.get(&path).unwrap();
    assert_eq!(l["metadata"]["annotations"]["keep"], "me");
    assert_eq!(l["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(l["spec"]["holderIdentity"], NODE);
}

#[test]
fn a_client_the_hub_neither_caches_nor_filters_keeps_its_own_accept() {
    let c = Cluster::new();
    let token = c.api.add_service_account_token("default", "app", 1);
    let hub = c.start_hub(BIN, &["--filter-sync-timeout=1s"]);
    let protobuf = "application/vnd.kubernetes.protobuf,application/json";
    let auth = format!("Bearer {token}");
    let mut s = testapi::client::Session::new(
        testapi::client::tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap(),
    );
    // A pod's own client (no cache agent): what it asks for reaches the apiserver as it is,
    // so a protobuf client pays protobuf sizes.
    let r = s
        .request(
            "GET",
            "/api/v1/namespaces/default/pods",
            &[
                ("User-Agent", "app/1.0"),
                ("Authorization", &auth),
                ("Accept", protobuf),
                ("Accept-Encoding", "identity"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let up = c
        .api
        .client_requests()
        .into_iter()
        .rfind(|r| r.target == "/api/v1/namespaces/default/pods")
        .unwrap();
    assert_eq!(up.header("accept"), Some(protobuf));
    assert_eq!(up.header("accept-encoding"), Some("identity"));
    // kubelet's list is cached: asked for as JSON (and gzip).
    assert_eq!(
        testapi::client::request(
            hub.proxy_addr,
            "GET",
            "/api/v1/namespaces/default/pods",
            &[("User-Agent", KUBELET), ("Accept", protobuf)],
            b"",
        )
        .unwrap()
        .status,
        200
    );
    let up = c.api.client_requests().pop().unwrap();
    assert_eq!(up.header("accept"), Some("application/json"));
}

#[test]
fn kubelets_read_of_its_own_node_is_answered_from_the_cache_while_its_watch_runs() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/nodes",
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"role": "edge"}}}),
    );
    let hub = c.start_hub(BIN, &["--filter-sync-timeout=1s"]);
    let node = format!("/api/v1/nodes/{NODE}");
    let read = format!("{node}?resourceVersion=0");
    let upstream_reads = |c: &Cluster| {
        c.api
            .client_requests()
            .iter()
            .filter(|r| r.target.starts_with(&node))
            .count()
    };
    // Without kubelet's watch the hub cannot know its copy is current: the cloud answers.
    assert_eq!(get(hub.proxy_addr, &read, KUBELET).status, 200);
    assert_eq!(upstream_reads(&c), 1);
    let mut w = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/nodes?fieldSelector=metadata.name%3D{NODE}&watch=true"),
        KUBELET,
    );
    assert_eq!(w.status, 200);
    wait_until(
        "kubelet's node watch upstream",
        Duration::from_secs(10),
        || c.api.open_watches_on("nodes") == 1,
    );
    // Its first event reached kubelet: the hub relays the watch (the apiserver counts it
    // open a moment before the hub has read its answer).
    w.set_timeout(Duration::from_secs(10));
    assert!(w.next_line().unwrap().unwrap().contains("ADDED"));
    let cached = c.cache.path().join(format!("kubelet/nodes.v1.core/{NODE}"));
    wait_until("the node in the cache", Duration::from_secs(10), || {
        cached.is_file()
    });
    c.api.clear_requests();
    let r = get(hub.proxy_addr, &read, KUBELET);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["labels"]["role"], "edge");
    assert_eq!(upstream_reads(&c), 0, "answered by the cloud");
    // A change comes down kubelet's watch, and the next read has it.
    let mut changed = c.api.get(&node).unwrap();
    changed["metadata"]["labels"]["role"] = "gateway".into();
    c.api.update(&node, changed);
    while !w.next_line().unwrap().unwrap().contains("gateway") {}
    wait_until(
        "the new label from the cache",
        Duration::from_secs(10),
        || get(hub.proxy_addr, &read, KUBELET).json()["metadata"]["labels"]["role"] == "gateway",
    );
    assert_eq!(upstream_reads(&c), 0);
    // A read of the latest version (kubelet's retry), or another client's, goes to the cloud.
    assert_eq!(get(hub.proxy_addr, &node, KUBELET).status, 200);
    assert_eq!(get(hub.proxy_addr, &read, "kubectl/v1.36").status, 200);
    assert_eq!(upstream_reads(&c), 2);
    // The watch ends: reads go to the cloud again.
    drop(w);
    wait_until("the watch's end upstream", Duration::from_secs(10), || {
        c.api.open_watches_on("nodes") == 0
    });
    wait_until("a read from the cloud", Duration::from_secs(10), || {
        let before = upstream_reads(&c);
        get(hub.proxy_addr, &read, KUBELET);
        upstream_reads(&c) > before
    });
}

/// A Service named `name` with a cluster IP from `n`.
fn service(n: usize) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{n}"), "namespace": "default",
            "labels": {"app": "shop", "tier": "backend"}},
        "spec": {"clusterIP": format!("10.96.{}.{}", n / 250, n % 250 + 2),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": "shop"}, "type": "ClusterIP"}})
}

/// Reads watch events (lines) until one contains `needle`; returns how many came.
fn lines_until(w: &mut client::ResponseStream, needle: &str) -> usize {
    let mut n = 0;
    loop {
        let line = w.next_line().unwrap().expect("the watch ended");
        n += 1;
        if line.contains(needle) {
            return n;
        }
    }
}

#[test]
fn watch_lists_come_gzip_where_the_apiserver_offers_it_and_what_that_saves_is_counted() {
    let c = Cluster::new();
    // kube-apiserver 1.37 compresses watch-lists; 1.36 (real_cluster.rs) compresses none.
    c.api.set_watch_list_gzip(true);
    c.api.create(
        "/api/v1/nodes",
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    );
    for n in 0..40 {
        c.api
            .create("/api/v1/namespaces/default/services", service(n));
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("p{n}"), NODE),
        );
    }
    let hub = c.start_hub(BIN, &["--filter-sync-timeout=1s"]);
    // kubelet's informer: a watch the apiserver makes a watch-list (bookmarks, any version).
    let pods = format!(
        "/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}&allowWatchBookmarks=true&resourceVersion=0&watch=true"
    );
    let mut w = client::watch(hub.proxy_addr, &pods, KUBELET);
    w.set_timeout(Duration::from_secs(10));
    assert_eq!(w.status, 200);
    // kubelet asked for no gzip: it gets plain events, one line each, as they come.
    assert_eq!(w.header("content-encoding"), None);
    assert_eq!(lines_until(&mut w, "initial-events-end"), 41);
    // The hub asked for gzip, and the apiserver sent it.
    let asked = c
        .api
        .requests()
        .into_iter()
        .find(|r| r.target == pods)
        .expect("kubelet's watch upstream");
    assert_eq!(asked.header("accept-encoding"), Some("gzip"));
    // What gzip saved is counted while the watch still runs, not at its end.
    wait_until("the savings counted", Duration::from_secs(10), || {
        hub.metric("yurthub_gzip_saved_bytes_total") > 0.0
    });
    let saved = hub.metric("yurthub_gzip_saved_bytes_total");
    // A change comes down the open watch at once, and into the cache.
    let path = "/api/v1/namespaces/default/pods/p3";
    let mut p = c.api.get(path).unwrap();
    p["metadata"]["labels"] = serde_json::json!({"rollout": "second"});
    c.api.update(path, p);
    assert_eq!(lines_until(&mut w, "second"), 1);
    let cached = c.cache.path().join("kubelet/pods.v1.core/default/p3");
    wait_until("the change in the cache", Duration::from_secs(10), || {
        std::fs::read_to_string(&cached).is_ok_and(|t| t.contains("second"))
    });
    assert!(hub.metric("yurthub_gzip_saved_bytes_total") > saved);

    // A client that takes gzip gets the apiserver's members untouched where the hub only
    // caches (kubelet's pods are filtered, its Node is not): gzip members holding an
    // event each.
    let node = format!(
        "/api/v1/nodes?fieldSelector=metadata.name%3D{NODE}&allowWatchBookmarks=true&resourceVersion=0&watch=true"
    );
    let mut z = client::open(
        hub.proxy_addr,
        "GET",
        &node,
        &[("User-Agent", KUBELET), ("Accept-Encoding", "gzip")],
        b"",
    )
    .unwrap();
    z.set_timeout(Duration::from_secs(10));
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    let mut wire = Vec::new();
    let mut events_until = |needle: &str| loop {
        let text = String::from_utf8(testapi::wire::gunzip_so_far(&wire)).unwrap();
        if text.contains(needle) {
            return text.lines().map(str::to_string).collect::<Vec<_>>();
        }
        wire.extend(z.next_piece().unwrap().expect("the watch ended"));
    };
    let events = events_until("initial-events-end");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains(r#""type":"ADDED""#));
    let path = format!("/api/v1/nodes/{NODE}");
    let mut n = c.api.get(&path).unwrap();
    n["metadata"]["labels"]["rollout"] = "third".into();
    c.api.update(&path, n);
    let events = events_until("third");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[2].contains(r#""type":"MODIFIED""#));
    let cached = c.cache.path().join(format!("kubelet/nodes.v1.core/{NODE}"));
    wait_until("the node in the cache", Duration::from_secs(10), || {
        std::fs::read_to_string(&cached).is_ok_and(|t| t.contains("third"))
    });

    // kube-proxy's Services watch-list is filtered: unpacked, filtered, sent plain.
    let mut s = client::watch(
        hub.proxy_addr,
        "/api/v1/services?allowWatchBookmarks=true&resourceVersion=0&watch=true",
        "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9",
    );
    s.set_timeout(Duration::from_secs(10));
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-encoding"), None);
    // 40 Services and the apiserver's own `kubernetes`, if it has one.
    let n = lines_until(&mut s, "initial-events-end");
    assert!(n >= 41, "{n} events");
}

/// The hub's patches of the node's status.
fn status_patches(c: &Cluster) -> usize {
    c.api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.target == format!("/api/v1/nodes/{NODE}/status"))
        .count()
}

/// The `Autonomy` condition of `node`: (status, reason).
fn autonomy(node: &serde_json::Value) -> Option<(String, String)> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Autonomy")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

#[test]
fn kubelets_reads_of_its_node_keep_the_autonomy_condition_as_the_annotations_say() {
    let c = Cluster::new();
    let path = format!("/api/v1/nodes/{NODE}");
    c.api.create(
        "/api/v1/nodes",
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "annotations": {"node.beta.openyurt.io/autonomy": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
    );
    let hub = c.start_hub(
        BIN,
        &["--filter-sync-timeout=1s", "--heartbeat-interval-seconds=1"],
    );
    let cached = c.cache.path().join(format!("kubelet/nodes.v1.core/{NODE}"));
    let read = |c: &Cluster| {
        let r = get(
            hub.proxy_addr,
            &format!("{path}?resourceVersion=0"),
            KUBELET,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let node = r.json();
        // kubelet reads every 10 s: the cache has each answer before the next read.
        if c.api.get(&path).is_some_and(|n| n == node) {
            wait_until("the answer in the cache", Duration::from_secs(10), || {
                std::fs::read(&cached)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|n| {
                        n["metadata"]["resourceVersion"] == node["metadata"]["resourceVersion"]
                    })
            });
        }
        node
    };
    // The first read sets the condition (from the cloud's copy: none is cached yet), and
    // its answer has it.
    let on = Some((
        "True".to_string(),
        "autonomy enabled successfully".to_string(),
    ));
    assert_eq!(autonomy(&read(&c)), on);
    assert_eq!(autonomy(&c.api.get(&path).unwrap()), on);
    assert_eq!(status_patches(&c), 1);
    // kubelet's own conditions stay.
    assert_eq!(
        c.api.get(&path).unwrap()["status"]["conditions"][0]["type"],
        "Ready"
    );
    // While it holds, reads send nothing more.
    for _ in 0..3 {
        assert_eq!(autonomy(&read(&c)), on);
    }
    assert_eq!(status_patches(&c), 1);

    // The annotation removed: False, within two reads (one learns it, the next sets it).
    let mut n = c.api.get(&path).unwrap();
    n["metadata"]["annotations"] = serde_json::json!({});
    c.api.update(&path, n);
    read(&c);
    let off = Some(("False".to_string(), "autonomy disabled".to_string()));
    assert_eq!(autonomy(&read(&c)), off);
    assert_eq!(autonomy(&c.api.get(&path).unwrap()), off);
    assert_eq!(status_patches(&c), 2);

    // The newer annotation turns it on again, unless the node is no edge worker.
    let mut n = c.api.get(&path).unwrap();
    n["metadata"]["annotations"] = serde_json::json!({"node.openyurt.io/autonomy-duration": "10m"});
    c.api.update(&path, n);
    read(&c);
    assert_eq!(autonomy(&read(&c)), on);
    let mut n = c.api.get(&path).unwrap();
    n["metadata"]["labels"] = serde_json::json!({"openyurt.io/is-edge-worker": "false"});
    c.api.update(&path, n);
    read(&c);
    assert_eq!(autonomy(&read(&c)), off);
    assert_eq!(status_patches(&c), 4);

    // Offline, a read that would change the condition is still answered, from the cache,
    // with the node as it was last read (upstream answers 500 then).
    let mut n = c.api.get(&path).unwrap();
    n["metadata"]["labels"] = serde_json::json!({});
    c.api.update(&path, n);
    read(&c);
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let offline = read(&c);
    assert_eq!(autonomy(&offline), off);
    assert_eq!(offline["metadata"]["labels"], serde_json::json!({}));
    assert_eq!(status_patches(&c), 4);
    // Back online, the next read sets it.
    c.api.set_fault(Fault::None);
    wait_until("the condition set again", Duration::from_secs(20), || {
        autonomy(&read(&c)) == on
    });
    assert_eq!(autonomy(&c.api.get(&path).unwrap()), on);

    // A cache that cannot write (a file where a directory must be, as a full disk fails
    // them): Unknown after more than three reads see it, with the cache's error; True
    // again once the same object is written.
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "default"}, "data": {"k": "v"}}),
    );
    let blocker = c.cache.path().join("kubelet/configmaps.v1.core");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let config = "/api/v1/namespaces/default/configmaps/app-config";
    assert_eq!(get(hub.proxy_addr, config, KUBELET).status, 200);
    hub.wait_for_log("cache write", Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(autonomy(&read(&c)), on);
    }
    let failed = read(&c);
    let condition = failed["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Autonomy")
        .unwrap()
        .clone();
    assert_eq!(condition["status"], "Unknown", "{condition}");
    assert_eq!(condition["reason"], "cache failed");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("1 cached object could not be written or deleted: cache write: ")
            && !message.contains("app-config"),
        "{condition}"
    );
    assert_eq!(autonomy(&c.api.get(&path).unwrap()).unwrap().0, "Unknown");
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(get(hub.proxy_addr, config, KUBELET).status, 200);
    wait_until("the configmap cached", Duration::from_secs(10), || {
        blocker.join("default/app-config").is_file()
    });
    assert_eq!(autonomy(&read(&c)), on);
}

#[test]
fn a_lease_created_before_the_node_gets_its_owner_so_kubelet_stops_reading_the_node() {
    let c = Cluster::new();
    let hub = c.start_hub(
        BIN,
        &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
    );
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}");
    wait_until("the hub's lease", Duration::from_secs(10), || {
        c.api.get(&lease).is_some()
    });
    assert!(c.api.get(&lease).unwrap()["metadata"]["ownerReferences"].is_null());
    // kubelet registers its Node after the hub started.
    let node = c.api.create(
        "/api/v1/nodes",
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    );
    let uid = node["metadata"]["uid"].clone();
    wait_until("the lease's owner", Duration::from_secs(20), || {
        c.api.get(&lease).unwrap()["metadata"]["ownerReferences"][0]["uid"] == uid
    });
    let owner = &c.api.get(&lease).unwrap()["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node");
    assert_eq!(owner["name"], NODE);
    // kubelet's renewal, answered by the hub from its copy, carries it: kubelet's lease
    // controller has no reason to read the Node at each renewal.
    wait_until(
        "kubelet's answer with the owner",
        Duration::from_secs(10),
        || {
            let r = client::request(
                hub.proxy_addr,
                "PUT",
                &lease,
                &[
                    ("User-Agent", KUBELET),
                    ("Content-Type", "application/json"),
                ],
                serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": NODE, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40}})
                .to_string()
                .as_bytes(),
            )
            .unwrap();
            r.status == 200 && r.json()["metadata"]["ownerReferences"][0]["uid"] == uid
        },
    );
    // Once owned, the hub reads the Node no more.
    c.api.clear_requests();
    std::thread::sleep(Duration::from_secs(7));
    let reads = hub_requests(&c, &format!("/api/v1/nodes/{NODE}"), false);
    assert!(reads.is_empty(), "{reads:?}");
}

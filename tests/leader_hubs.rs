//! Leader hubs (issue 18): in a NodePool whose `leader-hub-<pool>` ConfigMap names a leader
//! with leader election on, the followers' multiplexers read the pool-scope resources from
//! the leader (one upstream watch per resource for the pool), fall back to the cloud when it
//! stops without dropping their local clients' watches, and the leader answers only its
//! pool's followers.

use serde_json::{json, Value};
use std::time::Duration;
use testapi::client::{self, get, Session};
use testapi::{hub_args_for, Cluster, Hub, Pki, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBE_PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const LEADER: &str = "edge-1";
const FOLLOWER: &str = "edge-2";

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"port": 80}]}})
}

/// Services requests the apiserver received from `ua`, as `GET`/`WATCH` targets.
fn services_requests(c: &Cluster, ua: &str) -> Vec<String> {
    c.api
        .requests()
        .into_iter()
        .filter(|r| r.header("user-agent") == Some(ua))
        .filter(|r| r.target.split('?').next() == Some("/api/v1/services"))
        .map(|r| r.target)
        .collect()
}

/// A port nothing listens on now (the leader's `--multiplexer-port`, which every hub of
/// the pool must know before the leader binds it), below Linux's ephemeral range so that no
/// outgoing connection of a test running beside takes it meanwhile.
fn free_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    (0..1000u64)
        .map(|i| 20_000 + ((seed + i * 7919) % 12_000) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 32000")
}

/// A hub of the pool for `node`, its files in `dirs`, its followers' port `port`.
fn start_hub(c: &Cluster, node: &str, dirs: &(TempDir, TempDir), port: u16) -> Hub {
    c.pki.write_hub_files(dirs.0.path(), node);
    let mut args = hub_args_for(&[&c.api], node, dirs.0.path(), dirs.1.path());
    args.extend([
        "--filter-sync-timeout=1s".to_string(),
        format!("--multiplexer-port={port}"),
        // The leader listens on its node's address; loopback here, which the test
        // serving certificate names.
        "--node-ip=127.0.0.1".to_string(),
    ]);
    Hub::start(BIN, &args)
}

fn dirs() -> (TempDir, TempDir) {
    (TempDir::new("root"), TempDir::new("cache"))
}

/// A request to the leader's followers' port over TLS presenting `client_pem` (none: no
/// certificate); the answer, or the error that ended the exchange.
fn ask_leader(
    c: &Cluster,
    port: u16,
    client_pem: Option<&str>,
    path: &str,
    ua: &str,
) -> std::io::Result<client::HttpResponse> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = match client_pem {
        Some(pem) => client::tls_connect(addr, &c.pki.ca_pem, pem)?,
        None => client::tls_connect_anonymous(addr, &c.pki.ca_pem)?,
    };
    let mut s = Session::new(stream);
    s.get(path, ua)
}

/// A cluster with pool-a of the leader's and the follower's nodes, and Service `a`.
fn pool_cluster() -> Cluster {
    let c = Cluster::new();
    c.api.create(
        "/apis/apps.openyurt.io/v1beta2/nodepools",
        json!({"metadata": {"name": "pool-a"}, "spec": {"type": "Edge"},
            "status": {"nodes": [LEADER, FOLLOWER]}}),
    );
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("a", "10.96.0.10"),
    );
    c
}

/// pool-a's `leader-hub-pool-a` as yurt-manager's hub-leader-config controller writes it:
/// the leader on loopback, `election` and `resources` as given.
fn leader_configmap(election: &str, resources: &str) -> Value {
    json!({"metadata": {"name": "leader-hub-pool-a", "namespace": "kube-system",
            "labels": {"openyurt.io/configmap-name": "leader-hub-pool-a"}},
        "data": {"leaders": format!("{LEADER}/127.0.0.1"), "enable-leader-election": election,
            "interconnectivity": "true", "pool-scoped-metadata": resources}})
}

const ALL: &str = "/v1/services,discovery.k8s.io/v1/endpointslices";

/// Names the leader in pool-a's ConfigMap (yurt-manager's hub-leader-config controller
/// writes it in a real cluster) and starts it: its followers' port, its files, itself.
fn leading_pool(c: &Cluster) -> (u16, (TempDir, TempDir), Hub) {
    let port = free_port();
    c.api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        leader_configmap("true", ALL),
    );
    let dirs = dirs();
    let leader = start_leader(c, &dirs, port);
    (port, dirs, leader)
}

/// Starts the leader and waits until it serves its followers from a filled store.
fn start_leader(c: &Cluster, dirs: &(TempDir, TempDir), port: u16) -> Hub {
    let leader = start_hub(c, LEADER, dirs, port);
    leader.wait_for_log(
        &format!("serving the pool's follower hubs on https://127.0.0.1:{port}"),
        Duration::from_secs(30),
    );
    testapi::wait_until(
        "the leader's services store",
        Duration::from_secs(30),
        || get(leader.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200,
    );
    leader
}

fn node_pem(pki: &Pki, node: &str) -> String {
    pki.client_pem(&format!("system:node:{node}"), &["system:nodes"])
}

#[test]
fn followers_read_from_the_leader_and_fall_back_to_the_cloud_when_it_stops() {
    let c = pool_cluster();
    let (port, _leader_dirs, mut leader) = leading_pool(&c);
    let follower_dirs = dirs();
    let follower = start_hub(&c, FOLLOWER, &follower_dirs, port);
    follower.wait_for_log(
        &format!("leader hubs reachable: 127.0.0.1:{port}"),
        Duration::from_secs(30),
    );

    // The follower's clients are served from its store, filled from the leader: the cloud
    // sees no Services request from the follower's multiplexer.
    let mut list = get(follower.proxy_addr, "/api/v1/services", KUBE_PROXY);
    testapi::wait_until(
        "the follower's services store",
        Duration::from_secs(30),
        || {
            list = get(follower.proxy_addr, "/api/v1/services", KUBE_PROXY);
            list.status == 200
        },
    );
    let list = list.json();
    assert_eq!(testapi::names(&list), ["a"], "{list}");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = client::watch(
        follower.proxy_addr,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
        KUBE_PROXY,
    );
    assert_eq!(watch.status, 200);
    add_and_see(&c, &mut watch, "b", "10.96.0.11");
    let leader_ua = format!("multiplexer-proxy-{LEADER}");
    let follower_ua = format!("multiplexer-proxy-{FOLLOWER}");
    assert!(
        services_requests(&c, &follower_ua).is_empty(),
        "{:?}",
        services_requests(&c, &follower_ua)
    );
    let leader_watches = services_requests(&c, &leader_ua)
        .into_iter()
        .filter(|t| t.contains("watch=true"))
        .count();
    assert_eq!(leader_watches, 1, "{:?}", services_requests(&c, &leader_ua));
    // The follower's gauge names the leader while its watch runs there.
    let metrics = get(follower.admin_addr, "/metrics", "curl/8").text();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("node_yurthub_target_for_multiplexer_requests_collector")
            && l.contains(&format!("server=\"https://127.0.0.1:{port}\""))
            && l.ends_with(" 1")),
        "{metrics}"
    );
    // A pod naming itself the follower's multiplexer, with a token, is no way to the
    // leader (which answers the node's certificate): its request goes to the cloud, which
    // judges its token.
    let spoof = client::request(
        follower.proxy_addr,
        "GET",
        "/api/v1/services",
        &[
            ("User-Agent", &follower_ua),
            ("Authorization", "Bearer not-a-token"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(spoof.status, 401, "{}", spoof.text());
    // The follower keeps its own copy on disk, for offline starts.
    assert!(follower_dirs.1.path().join(&follower_ua).is_dir());

    // The leader stops: the follower's store goes on from the cloud, and its local watch
    // is not dropped.
    leader.signal("TERM");
    assert_eq!(leader.wait_exit(Duration::from_secs(10)), Some(0));
    add_and_see(&c, &mut watch, "c", "10.96.0.12");
    assert!(
        services_requests(&c, &follower_ua)
            .iter()
            .any(|t| t.contains("watch=true")),
        "{:?}",
        services_requests(&c, &follower_ua)
    );
}

/// Creates Service `name` in the cloud and waits for `watch` to tell it ADDED.
fn add_and_see(c: &Cluster, watch: &mut client::ResponseStream, name: &str, ip: &str) {
    c.api
        .create("/api/v1/namespaces/default/services", service(name, ip));
    let ev = next_event(watch);
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some(name)),
        "{ev}"
    );
}

/// The next watch event, skipping bookmarks.
fn next_event(w: &mut client::ResponseStream) -> Value {
    w.set_timeout(Duration::from_secs(30));
    loop {
        let line = w.next_line().expect("read event").expect("an event");
        let ev: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if ev["type"] != "BOOKMARK" {
            return ev;
        }
    }
}

#[test]
fn the_leader_answers_only_its_pools_followers_multiplexers() {
    let c = pool_cluster();
    let (port, _leader_dirs, _leader) = leading_pool(&c);
    let follower_ua = format!("multiplexer-proxy-{FOLLOWER}");
    let follower_pem = node_pem(&c.pki, FOLLOWER);

    // The follower's multiplexer, with its node's certificate: its list, unfiltered (once
    // the leader has read its NodePool).
    let mut ok = None;
    testapi::wait_until("the follower answered", Duration::from_secs(30), || {
        let r = ask_leader(
            &c,
            port,
            Some(&follower_pem),
            "/api/v1/services",
            &follower_ua,
        )
        .expect("the follower is answered");
        let done = r.status == 200;
        ok = Some(r);
        done
    });
    let ok = ok.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(testapi::names(&ok.json()), ["a"]);

    let refused = |pem: Option<&str>, path: &str, ua: &str, why: &str| {
        let r = ask_leader(&c, port, pem, path, ua).expect("an answer");
        assert_eq!(r.status, 403, "{path} as {ua}: {}", r.text());
        let status = r.json();
        assert_eq!(status["kind"], "Status");
        let message = status["message"].as_str().unwrap_or("");
        assert!(message.contains(why), "{path} as {ua}: {message}");
    };
    // Another pool's node, with a good certificate.
    let outsider = node_pem(&c.pki, "edge-9");
    refused(
        Some(&outsider),
        "/api/v1/services",
        "multiplexer-proxy-edge-9",
        "not in this hub's pool",
    );
    // A follower's certificate, but not as its multiplexer.
    refused(
        Some(&follower_pem),
        "/api/v1/services",
        KUBE_PROXY,
        "not as its multiplexer",
    );
    // Anything but a list or watch of a pool-scope resource: no way to the cloud here.
    refused(
        Some(&follower_pem),
        "/api/v1/secrets",
        &follower_ua,
        "not a list or watch of a pool-scope resource",
    );
    refused(
        Some(&follower_pem),
        "/api/v1/namespaces/default/services/a",
        &follower_ua,
        "not a list or watch",
    );
    // The leader's own node: no follower of itself.
    let own = node_pem(&c.pki, LEADER);
    refused(
        Some(&own),
        "/api/v1/services",
        "multiplexer-proxy-edge-1",
        "this hub's own node",
    );
    // A certificate that is no node's.
    let admin = c.pki.client_pem("admin", &["system:masters"]);
    refused(
        Some(&admin),
        "/api/v1/services",
        &follower_ua,
        "not a node's certificate",
    );

    // No certificate, or one of another CA: the handshake fails, nothing is answered.
    assert!(ask_leader(&c, port, None, "/api/v1/services", &follower_ua).is_err());
    let stranger = Pki::new();
    let foreign = node_pem(&stranger, FOLLOWER);
    assert!(ask_leader(&c, port, Some(&foreign), "/api/v1/services", &follower_ua).is_err());
}

#[test]
fn followers_move_as_the_configmap_changes_without_dropping_local_watches() {
    let c = pool_cluster();
    let port = free_port();
    // No ConfigMap yet: each hub reads from the cloud.
    let (leader_dirs, follower_dirs) = (dirs(), dirs());
    let leader = start_hub(&c, LEADER, &leader_dirs, port);
    let follower = start_hub(&c, FOLLOWER, &follower_dirs, port);
    for hub in [&leader, &follower] {
        testapi::wait_until("the services stores", Duration::from_secs(30), || {
            get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200
        });
    }
    testapi::wait_until("a services watch per hub", Duration::from_secs(30), || {
        c.api.open_watches_on("services") == 2
    });
    let mut watch = client::watch(
        follower.proxy_addr,
        "/api/v1/services?watch=true",
        KUBE_PROXY,
    );
    assert_eq!(watch.status, 200);
    assert_eq!(next_event(&mut watch)["object"]["metadata"]["name"], "a");
    let mut slices = client::watch(
        follower.proxy_addr,
        "/apis/discovery.k8s.io/v1/endpointslices?watch=true",
        KUBE_PROXY,
    );
    assert_eq!(slices.status, 200);

    // yurt-manager names edge-1 the leader: the follower's watch moves there.
    let cm = leader_configmap;
    let all = ALL;
    c.api
        .create("/api/v1/namespaces/kube-system/configmaps", cm("true", all));
    leader.wait_for_log("serving the pool's follower hubs", Duration::from_secs(30));
    follower.wait_for_log(
        &format!("leader hubs reachable: 127.0.0.1:{port}"),
        Duration::from_secs(30),
    );
    testapi::wait_until(
        "one services watch for the pool",
        Duration::from_secs(30),
        || c.api.open_watches_on("services") == 1,
    );
    add_and_see(&c, &mut watch, "b", "10.96.0.11");
    let metrics = get(follower.admin_addr, "/metrics", "curl/8").text();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("node_yurthub_target_for_multiplexer_requests_collector")
            && l.contains(&format!("server=\"https://127.0.0.1:{port}\""))),
        "{metrics}"
    );

    // Election off: back to the cloud, the local watch still open.
    let path = "/api/v1/namespaces/kube-system/configmaps/leader-hub-pool-a";
    c.api.update(path, cm("false", all));
    follower.wait_for_log("leader hubs reachable: none", Duration::from_secs(30));
    testapi::wait_until(
        "a services watch per hub again",
        Duration::from_secs(30),
        || c.api.open_watches_on("services") == 2,
    );
    add_and_see(&c, &mut watch, "c", "10.96.0.12");

    // EndpointSlices leave the set: their store-served watch ends, and a list goes the
    // ordinary way (kube-proxy's own request reaches the cloud).
    c.api.update(path, cm("false", "/v1/services"));
    slices.set_timeout(Duration::from_secs(30));
    while let Some(line) = slices.next_line().expect("the watch ends cleanly") {
        let ev: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(ev["type"], "ERROR", "{ev}");
    }
    let before = c.api.requests().len();
    let list = get(
        follower.proxy_addr,
        "/apis/discovery.k8s.io/v1/endpointslices",
        KUBE_PROXY,
    );
    assert_eq!(list.status, 200);
    assert!(
        c.api.requests()[before..].iter().any(|r| {
            r.header("user-agent") == Some(KUBE_PROXY) && r.target.contains("endpointslices")
        }),
        "kube-proxy's list went to the cloud"
    );
    // Services stay served by the store: the local watch is still open.
    add_and_see(&c, &mut watch, "d", "10.96.0.13");
}

#[test]
fn a_follower_cut_off_from_the_cloud_reads_from_its_leader() {
    let c = pool_cluster();
    let (port, leader_dirs, mut leader) = leading_pool(&c);
    let follower_dirs = dirs();
    // The follower's WAN link: a relay that can go away (the pool's own network stays).
    let wan = testapi::middlebox::Middlebox::start(c.api.addr());
    c.pki.write_hub_files(follower_dirs.0.path(), FOLLOWER);
    let mut args = hub_args_for(
        &[&c.api],
        FOLLOWER,
        follower_dirs.0.path(),
        follower_dirs.1.path(),
    );
    args.retain(|a| !a.starts_with("--server-addr="));
    args.extend([
        format!("--server-addr={}", wan.url()),
        "--filter-sync-timeout=1s".to_string(),
        format!("--multiplexer-port={port}"),
        "--heartbeat-interval-seconds=1".to_string(),
    ]);
    let follower = Hub::start(BIN, &args);
    follower.wait_for_log(
        &format!("leader hubs reachable: 127.0.0.1:{port}"),
        Duration::from_secs(30),
    );
    testapi::wait_until(
        "the follower's services store",
        Duration::from_secs(30),
        || get(follower.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200,
    );
    let mut watch = client::watch(
        follower.proxy_addr,
        "/api/v1/services?watch=true",
        KUBE_PROXY,
    );
    assert_eq!(next_event(&mut watch)["object"]["metadata"]["name"], "a");

    // The WAN goes down, and the leader restarts: the follower reads its disk meanwhile,
    // then the leader again, with the cloud still out of its reach.
    drop(wan);
    follower.wait_for_log("is now unhealthy", Duration::from_secs(30));
    leader.signal("TERM");
    assert_eq!(leader.wait_exit(Duration::from_secs(10)), Some(0));
    follower.wait_for_log("leader hubs reachable: none", Duration::from_secs(30));
    let _leader = start_leader(&c, &leader_dirs, port);
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("b", "10.96.0.11"),
    );
    // The local watch was never dropped, and sees what only the leader could tell.
    let ev = next_event(&mut watch);
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b")),
        "{ev}"
    );
    let list = get(follower.proxy_addr, "/api/v1/services", KUBE_PROXY).json();
    assert_eq!(testapi::names(&list), ["a", "b"], "{list}");
}

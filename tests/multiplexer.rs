//! The multiplexer (issue 18): every local list and watch of a pool-scope resource answered
//! from one store per resource, filled by one list and watch upstream, with kube-apiserver's
//! semantics, each client's filters, offline from the disk copy.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testapi::client::{self, get};
use testapi::{names, wait_until, Cluster, Fault, Hub, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBE_PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const COREDNS: &str = "coredns/1.11.3 (linux/arm64)";
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
/// Upstream's default pool-scope resources.
const POOL_SCOPE: &str = "--pool-scope-resources=/v1/services,discovery.k8s.io/v1/endpointslices";

fn service(name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"port": 80}]}})
}

/// Requests of `resource` the apiserver received from a User-Agent starting with `ua`.
fn upstream_requests(c: &Cluster, ua: &str, resource: &str) -> Vec<String> {
    c.api
        .requests()
        .into_iter()
        .filter(|r| r.header("user-agent").is_some_and(|u| u.starts_with(ua)))
        .filter(|r| r.target.split('?').next().unwrap_or("").ends_with(resource))
        .map(|r| r.target)
        .collect()
}

/// Starts a hub and waits until its Services store answers.
fn synced_hub(c: &Cluster, extra: &[&str]) -> Hub {
    let mut args = vec!["--filter-sync-timeout=1s", POOL_SCOPE];
    args.extend_from_slice(extra);
    let hub = c.start_hub(BIN, &args);
    wait_until("the services store", Duration::from_secs(15), || {
        get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200
    });
    hub
}

/// The next watch event as JSON, skipping nothing.
fn next_event(w: &mut client::ResponseStream) -> Value {
    let line = w.next_line().expect("read event").expect("an event");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// An event's type and its object's name.
fn typed_name(ev: &Value) -> (&str, &str) {
    (
        ev["type"].as_str().unwrap_or(""),
        ev["object"]["metadata"]["name"].as_str().unwrap_or(""),
    )
}

#[test]
fn every_local_client_is_served_from_one_upstream_watch_per_resource() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("a", "10.96.0.10", json!({})),
    );
    let hub = synced_hub(&c, &[]);
    let list = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).json();
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["apiVersion"], "v1");
    assert!(names(&list).contains(&"a".to_string()), "{list}");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // kube-proxy, coredns and kubelet each watch Services; kube-proxy and coredns slices.
    let mut watches = Vec::new();
    for ua in [KUBE_PROXY, COREDNS, KUBELET] {
        let w = client::watch(
            hub.proxy_addr,
            &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
            ua,
        );
        assert_eq!(w.status, 200);
        watches.push(w);
    }
    for ua in [KUBE_PROXY, COREDNS] {
        let w = client::watch(
            hub.proxy_addr,
            "/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=0",
            ua,
        );
        assert_eq!(w.status, 200);
        watches.push(w);
    }
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("b", "10.96.0.11", json!({})),
    );
    for w in watches.iter_mut().take(3) {
        let ev = next_event(w);
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["metadata"]["name"], "b");
        assert_eq!(ev["object"]["kind"], "Service");
    }
    // One watch per resource at the apiserver, the multiplexer's; none of the clients'.
    wait_until("the multiplexer's watches", Duration::from_secs(10), || {
        c.api.open_watches_on("services") == 1 && c.api.open_watches_on("endpointslices") == 1
    });
    assert_eq!(c.api.open_watches_on("services"), 1);
    assert_eq!(c.api.open_watches_on("endpointslices"), 1);
    for ua in ["kube-proxy", "coredns", "kubelet"] {
        assert!(
            upstream_requests(&c, ua, "services").is_empty(),
            "{ua} reached the cloud: {:?}",
            upstream_requests(&c, ua, "services")
        );
    }
    let mux = format!("multiplexer-proxy-{NODE}");
    let mine = upstream_requests(&c, &mux, "services");
    assert!(
        mine.iter()
            .any(|t| t.contains("watch=true") && t.contains("allowWatchBookmarks=true")),
        "{mine:?}"
    );
    // Its answers are cached under its own name, for offline starts.
    assert!(c.cache.path().join(&mux).is_dir());
    // The metrics: five requests served by the multiplexer, two of its own upstream.
    let text = get(hub.admin_addr, "/metrics", "curl/8").text();
    let sum = |family: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(family) && l.contains('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("node_yurthub_aggregated_in_flight_requests_collector"),
        5.0,
        "{text}"
    );
    assert_eq!(
        sum("node_yurthub_target_for_multiplexer_requests_collector"),
        2.0,
        "{text}"
    );
    assert!(
        text.lines().any(|l| l
            .starts_with("node_yurthub_target_for_multiplexer_requests_collector")
            && l.contains(&format!("server=\"{}\"", c.api.url()))),
        "{text}"
    );
}

#[test]
fn lists_and_watches_keep_the_apiservers_semantics() {
    let c = Cluster::new();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let app = if i % 2 == 0 { "web" } else { "db" };
        c.api.create(
            "/api/v1/namespaces/default/services",
            service(name, &format!("10.96.0.{}", 10 + i), json!({"app": app})),
        );
    }
    let hub = synced_hub(&c, &[]);
    let p = hub.proxy_addr;
    let list = |q: &str| get(p, &format!("/api/v1/services?{q}"), KUBE_PROXY);

    // Label and field selectors, those the apiserver allows for Services.
    assert_eq!(names(&list("labelSelector=app%3Dweb").json()), ["a", "c"]);
    assert_eq!(
        names(&list("fieldSelector=metadata.name%3Db").json()),
        ["b"]
    );
    assert_eq!(
        names(&list("fieldSelector=spec.clusterIP%3D10.96.0.13").json()),
        ["d"]
    );
    assert_eq!(
        names(
            &get(
                p,
                "/api/v1/namespaces/default/services?fieldSelector=spec.type%3DClusterIP",
                KUBE_PROXY
            )
            .json()
        )
        .len(),
        4
    );
    assert!(names(&get(p, "/api/v1/namespaces/other/services", KUBE_PROXY).json()).is_empty());
    let bad = list("fieldSelector=spec.ports%3D80");
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("field label not supported: spec.ports"),
        "{}",
        bad.text()
    );

    // Pages: limit and continue over one snapshot, remainingItemCount.
    let first = list("limit=3").json();
    assert_eq!(names(&first), ["a", "b", "c"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    c.api.delete("/api/v1/namespaces/default/services/d");
    wait_until(
        "the delete reaches the store",
        Duration::from_secs(10),
        || names(&list("").json()).len() == 3,
    );
    let second = list(&format!("limit=3&continue={token}")).json();
    assert_eq!(
        names(&second),
        ["d"],
        "the page reads the first page's snapshot"
    );
    let again = list(&format!("limit=3&resourceVersion=0&continue={token}"));
    assert_eq!(again.status, 200, "{}", again.text());

    // Exact versions inside the window, 410 before it, 504 beyond the store's.
    let exact = list(&format!("resourceVersion={rv}&resourceVersionMatch=Exact")).json();
    assert_eq!(names(&exact), ["a", "b", "c", "d"]);
    let gone = list("resourceVersion=1&resourceVersionMatch=Exact");
    assert_eq!(gone.status, 410);
    assert_eq!(gone.json()["reason"], "Expired");
    let started = Instant::now();
    let future = list("resourceVersion=999999");
    assert_eq!(future.status, 504, "{}", future.text());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the version first"
    );
    assert_eq!(future.json()["details"]["retryAfterSeconds"], 1);

    // A watch from before the window: 200, then one ERROR event 410 Expired, as the
    // apiserver's cache answers.
    let mut old = client::watch(
        p,
        "/api/v1/services?watch=true&resourceVersion=1",
        KUBE_PROXY,
    );
    assert_eq!(old.status, 200);
    let ev = next_event(&mut old);
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(old.next_line().unwrap().is_none(), "the watch ends there");

    // A watch from inside the window replays what followed: the delete of d.
    let mut w = client::watch(
        p,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
        KUBE_PROXY,
    );
    assert_eq!(typed_name(&next_event(&mut w)), ("DELETED", "d"));

    // A selected watch sees an object leave its selection as DELETED.
    let mut web = client::watch(
        p,
        "/api/v1/services?watch=true&labelSelector=app%3Dweb&resourceVersion=0",
        KUBE_PROXY,
    );
    let mut seen = [next_event(&mut web), next_event(&mut web)];
    seen.sort_by_key(|e| {
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    assert!(seen.iter().all(|e| e["type"] == "ADDED"));
    let seen: Vec<&str> = seen
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(seen, ["a", "c"]);
    let mut a = c.api.get("/api/v1/namespaces/default/services/a").unwrap();
    a["metadata"]["labels"]["app"] = "db".into();
    c.api.update("/api/v1/namespaces/default/services/a", a);
    assert_eq!(typed_name(&next_event(&mut web)), ("DELETED", "a"));

    // Watch-list: the objects, then a bookmark that marks their end.
    let mut wl = client::watch(
        p,
        "/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
        KUBE_PROXY,
    );
    let mut added = Vec::new();
    loop {
        let ev = next_event(&mut wl);
        if ev["type"] == "BOOKMARK" {
            assert_eq!(
                ev["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
            assert_eq!(ev["object"]["kind"], "Service");
            break;
        }
        assert_eq!(ev["type"], "ADDED");
        added.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    added.sort();
    assert_eq!(added, ["a", "b", "c"]);
    let refused = get(
        p,
        "/api/v1/services?watch=true&sendInitialEvents=true",
        KUBE_PROXY,
    );
    assert_eq!(refused.status, 400);

    // A short watch ends cleanly at its timeout.
    let mut short = client::watch(
        p,
        "/api/v1/services?watch=true&timeoutSeconds=1&resourceVersion=0",
        KUBE_PROXY,
    );
    let started = Instant::now();
    let body = String::from_utf8(short.read_to_end().unwrap()).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        body.contains(r#""type":"ADDED""#) && !body.contains("ERROR"),
        "{body}"
    );
    // No timeout to speak of (0 is none; one past the clock's range is cut to a year):
    // the watch runs, and the hub with it.
    for t in ["0", "18446744073709551615"] {
        let mut long = client::watch(
            p,
            &format!("/api/v1/services?watch=true&timeoutSeconds={t}&resourceVersion=0"),
            KUBE_PROXY,
        );
        assert_eq!(long.status, 200);
        assert_eq!(next_event(&mut long)["type"], "ADDED");
    }
    assert_eq!(list("").status, 200);
    // sendInitialEvents=false: only what follows.
    let mut quiet = client::watch(
        p,
        "/api/v1/services?watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&resourceVersion=0",
        KUBE_PROXY,
    );
    assert_eq!(quiet.status, 200);
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("e", "10.96.0.20", json!({})),
    );
    assert_eq!(typed_name(&next_event(&mut quiet)), ("ADDED", "e"));

    // Tables are the cloud's to make.
    let before = upstream_requests(&c, "kubectl", "services").len();
    let table = client::request(
        p,
        "GET",
        "/api/v1/services",
        &[
            ("User-Agent", "kubectl/v1.32.0"),
            (
                "Accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(table.status, 200);
    assert_eq!(
        upstream_requests(&c, "kubectl", "services").len(),
        before + 1
    );
}

#[test]
fn before_its_first_list_the_store_answers_429_and_offline_it_answers_from_disk() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("a", "10.96.0.10", json!({})),
    );
    c.api.set_fault(Fault::Hold("multiplexer-proxy".into()));
    let mut hub = c.start_hub(
        BIN,
        &[
            "--filter-sync-timeout=1s",
            "--heartbeat-interval-seconds=1",
            POOL_SCOPE,
        ],
    );
    testapi::wait_ready(hub.admin_addr);
    let early = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!(early.status, 429, "{}", early.text());
    assert_eq!(early.header("retry-after"), Some("1"));
    assert_eq!(early.json()["reason"], "TooManyRequests");
    c.api.set_fault(Fault::None);
    wait_until("the store filled", Duration::from_secs(15), || {
        get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200
    });
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("b", "10.96.0.11", json!({})),
    );
    wait_until("b in the store", Duration::from_secs(10), || {
        names(&get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).json()).len() == 2
    });
    // A clean stop: the cache writer has written what it was given.
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(20)), Some(0));

    // Offline from the start: the store is filled from the multiplexer's copy on disk, and
    // answers every client, with selectors.
    c.api.set_fault(Fault::Refuse);
    let hub = c.start_hub(
        BIN,
        &[
            "--filter-sync-timeout=1s",
            "--heartbeat-interval-seconds=1",
            POOL_SCOPE,
        ],
    );
    wait_until(
        "the store filled from disk",
        Duration::from_secs(15),
        || get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200,
    );
    let list = get(hub.proxy_addr, "/api/v1/services", COREDNS).json();
    let mut got = names(&list);
    got.sort();
    assert_eq!(got, ["a", "b"]);
    let one = get(
        hub.proxy_addr,
        "/api/v1/services?fieldSelector=metadata.name%3Db",
        KUBE_PROXY,
    )
    .json();
    assert_eq!(names(&one), ["b"]);
}

#[test]
fn a_cache_from_before_the_multiplexer_still_answers_an_offline_start() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("a", "10.96.0.10", json!({})),
    );
    // The hub of before: kube-proxy's list cached under its own name.
    let mut hub = c.start_hub(
        BIN,
        &["--filter-sync-timeout=1s", "--pool-scope-resources="],
    );
    wait_until("kube-proxy's list", Duration::from_secs(15), || {
        get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200
    });
    assert_eq!(
        upstream_requests(&c, "kube-proxy", "services").len(),
        1,
        "no multiplexer then"
    );
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(20)), Some(0));
    c.api.set_fault(Fault::Refuse);
    let hub = c.start_hub(
        BIN,
        &[
            "--filter-sync-timeout=1s",
            "--heartbeat-interval-seconds=1",
            POOL_SCOPE,
        ],
    );
    testapi::wait_ready(hub.admin_addr);
    // Not a 429 for ever: the component's own copy, as before.
    let list = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(names(&list.json()), ["a"]);
}

#[test]
fn each_client_gets_its_own_filters_and_a_token_only_what_the_cloud_gave_it() {
    let c = Cluster::new();
    let mut lb = service("lb", "10.96.0.20", json!({}));
    lb["spec"]["type"] = "LoadBalancer".into();
    lb["metadata"]["annotations"] = json!({"svc.openyurt.io/discard": "true"});
    c.api.create("/api/v1/namespaces/default/services", lb);
    c.api.create(
        "/api/v1/namespaces/default/services",
        service("a", "10.96.0.10", json!({})),
    );
    let hub = synced_hub(&c, &[]);
    let p = hub.proxy_addr;
    // discardcloudservice is kube-proxy's filter: flanneld sees the cloud-only Service.
    // (Not coredns: what the node is answered is cached as the node's, and coredns's cache
    // is to be its service account's below.)
    let mut kp = names(&get(p, "/api/v1/services", KUBE_PROXY).json());
    kp.sort();
    assert!(!kp.contains(&"lb".to_string()), "{kp:?}");
    assert!(
        names(&get(p, "/api/v1/services", "flanneld/v0.25.1").json()).contains(&"lb".to_string())
    );
    let mut w = client::watch(
        p,
        "/api/v1/services?watch=true&resourceVersion=0",
        KUBE_PROXY,
    );
    let first = next_event(&mut w);
    assert_eq!(
        first["object"]["metadata"]["name"], "a",
        "lb is left out of the initial events"
    );

    // A pod's token: its first list goes to the cloud, which decides; after that the store
    // answers it. A token the cloud refuses is never served from the store.
    let token = c.api.add_service_account_token("kube-system", "coredns", 1);
    let auth = format!("Bearer {token}");
    let list_as = |ua: &str, auth: &str| {
        client::request(
            p,
            "GET",
            "/api/v1/services",
            &[("User-Agent", ua), ("Authorization", auth)],
            b"",
        )
        .unwrap()
    };
    assert_eq!(list_as(COREDNS, &auth).status, 200);
    assert_eq!(upstream_requests(&c, "coredns", "services").len(), 1);
    // The cloud's answer is the proof, once the cache has taken it.
    let cached = c.cache.path().join("coredns/services.v1.core/default");
    wait_until("coredns's list cached", Duration::from_secs(10), || {
        std::fs::read_dir(&cached).map(|d| d.count()).unwrap_or(0) == 2
    });
    let mut pw = client::open(
        p,
        "GET",
        "/api/v1/services?watch=true&resourceVersion=0",
        &[("User-Agent", COREDNS), ("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(pw.status, 200);
    assert_eq!(next_event(&mut pw)["type"], "ADDED");
    assert_eq!(
        upstream_requests(&c, "coredns", "services").len(),
        1,
        "the watch came from the store"
    );
    // What the store tells the token's watch is cached for the token's owner, as the
    // cloud's answers were, and the component stays its.
    let mut a = c.api.get("/api/v1/namespaces/default/services/a").unwrap();
    a["metadata"]["labels"] = json!({"seen": "by-coredns"});
    c.api.update("/api/v1/namespaces/default/services/a", a);
    let cached_a = cached.join("a");
    wait_until(
        "the change in coredns's cache",
        Duration::from_secs(10),
        || std::fs::read_to_string(&cached_a).is_ok_and(|t| t.contains("by-coredns")),
    );
    // The node naming itself coredns with a request the store refuses takes nothing over
    // (only a 200 is cached, and claims the component, as from the cloud).
    let bad = get(p, "/api/v1/services?fieldSelector=spec.bogus%3Dx", COREDNS);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let owners = std::fs::read_to_string(c.cache.path().join("_internal/owners.json")).unwrap();
    assert!(
        owners.contains("system:serviceaccount:kube-system:coredns"),
        "{owners}"
    );
    // coredns's token as another component: nothing was listed for that one with it.
    let borrowed = list_as(KUBE_PROXY, &auth);
    assert_eq!(borrowed.status, 200);
    assert_eq!(
        upstream_requests(&c, "kube-proxy", "services").len(),
        1,
        "to the cloud"
    );
    let forged = list_as(COREDNS, "Bearer forged");
    assert_eq!(forged.status, 401);
    assert_eq!(upstream_requests(&c, "coredns", "services").len(), 2);
}

#[test]
fn a_resource_the_store_may_not_list_is_answered_the_ordinary_way_not_429_for_ever() {
    let c = Cluster::new();
    // A cluster that serves no EndpointSlices (or forbids the node to list them): the
    // store's own list is refused for good.
    c.api.unregister_type("discovery.k8s.io", "endpointslices");
    let hub = synced_hub(&c, &[]);
    let path = "/apis/discovery.k8s.io/v1/endpointslices";
    wait_until("the cloud's own answer", Duration::from_secs(10), || {
        get(hub.proxy_addr, path, KUBE_PROXY).status == 404
    });
    assert!(
        !upstream_requests(&c, "kube-proxy", "endpointslices").is_empty(),
        "kube-proxy's list went to the cloud"
    );
    hub.wait_for_log("its list was answered 404", Duration::from_secs(5));
    // Services, which the store lists, are still answered from it.
    assert_eq!(
        get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status,
        200
    );
    assert!(upstream_requests(&c, "kube-proxy", "services").is_empty());
}

//! A pod on the node as an attacker: it reaches the TLS listener (and the plain one on the
//! dummy address) with no valid credentials, or with a token of its own, and tries to grow
//! the hub's memory, to pass as kubelet, or to have the node's identity act for someone else.
//! Each test plays the attack at a small scale and asserts the bound the README states.

use std::io::{Read, Write};
use std::time::Duration;
use testapi::client::{get, request, tls_connect_anonymous, Session};
use testapi::{wait_until, Cluster, Hub};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const PROXY: &str = "kube-proxy/v1.32.0 (linux/arm64) kubernetes/70d3cc9";

fn metrics(hub: &Hub) -> String {
    let r = get(hub.admin_addr, "/metrics", "curl/8");
    assert_eq!(r.status, 200);
    r.text()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn requests_from_pods_cannot_grow_the_metrics() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    // A TLS session to the hub's listener, as a pod has.
    let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
    let long = "x".repeat(4096);
    // Token-less: refused, and only counted.
    for i in 0..300 {
        let path = format!("/api/v1/namespaces/default/{long}{i}");
        let ua = format!("evil-anonymous-{i}/{long}");
        let r = s.get(&path, &ua).unwrap();
        assert_eq!(r.status, 401);
    }
    let text = metrics(&hub);
    assert!(
        !text.contains("evil-anonymous"),
        "a refused request left a series"
    );
    assert_eq!(
        value(
            &text,
            "yurthub_refused_requests_total{reason=\"unauthorized\"}"
        ),
        300.0
    );
    // With a token of its own (the cloud decides): recorded, but cut and capped.
    for i in 0..400 {
        let path = format!("/api/v1/namespaces/default/configmaps/{long}{i}");
        let ua = format!("evil-token-{i}/{long}");
        let r = s
            .request(
                "GET",
                &path,
                &[("User-Agent", &ua), ("Authorization", "Bearer not-a-token")],
                b"",
            )
            .unwrap();
        assert!(r.status >= 400, "{}", r.status);
    }
    let text = metrics(&hub);
    let in_flight = series(&text, "node_yurthub_in_flight_requests_collector");
    // The node's own series (the hub's informers here) are always kept, and may come
    // before or after the pod's: the cap is on the others.
    let others = in_flight
        .iter()
        .filter(|l| !l.contains("client=\"yurthub/"))
        .count();
    assert!(
        others <= yurthub::metrics::MAX_SERIES + 1,
        "{others} in-flight series of requests without the node's identity"
    );
    assert!(
        in_flight
            .iter()
            .any(|l| l.contains("resource=\"other\"") && l.contains("client=\"other\"")),
        "no shared series once the family is full"
    );
    for l in &in_flight {
        for value in l.split('"').skip(1).step_by(2) {
            assert!(value.len() <= yurthub::metrics::MAX_LABEL_BYTES, "{value}");
        }
    }
    assert!(text.len() < 256 * 1024, "/metrics is {} bytes", text.len());
}

#[test]
fn a_carriage_return_in_a_path_never_reaches_the_exposition() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods%0D%0Aevil%20value",
        KUBELET,
    );
    assert!(r.status >= 400, "{}", r.status);
    let text = metrics(&hub);
    assert!(!text.contains('\r'), "a raw CR in the exposition");
    assert!(text.contains("evil value"), "the request was not recorded");
}

#[test]
fn only_the_node_identity_counts_as_kubelet_for_the_lease() {
    let c = Cluster::new();
    let hub = c.start_hub(
        BIN,
        &[
            "--heartbeat-interval-seconds=1",
            "--kubelet-health-grace-period=2s",
        ],
    );
    // kubelet renews its lease through the hub once, from the node, then dies.
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1";
    let r = get(hub.proxy_addr, lease, KUBELET);
    assert!(r.status < 500, "{}", r.status);
    // A pod keeps calling the lease with kubelet's User-Agent and a token of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faker = {
        let (addr, ca, stop) = (hub.secure_addr(), c.pki.ca_pem.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = Session::new(tls_connect_anonymous(addr, &ca).unwrap());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let headers = [("User-Agent", KUBELET), ("Authorization", "Bearer fake")];
                if s.request("GET", lease, &headers, b"").is_err() {
                    s = Session::new(tls_connect_anonymous(addr, &ca).unwrap());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // The node is not kept alive: the hub sees kubelet silent and stops renewing.
    hub.wait_for_log(
        "kubelet silent for longer than --kubelet-health-grace-period",
        Duration::from_secs(15),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    faker.join().unwrap();
}

#[test]
fn the_node_identity_never_carries_a_clients_impersonation_or_forwarding_claims() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("User-Agent", KUBELET),
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("X-Remote-User", "system:admin"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = c.api.client_requests();
    let last = seen.last().unwrap();
    assert_eq!(last.user.as_deref(), Some("system:node:node-1"));
    for name in ["impersonate-user", "impersonate-group", "x-remote-user"] {
        assert_eq!(last.header(name), None, "{name} reached the cloud");
    }
    assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn an_upgrade_with_a_body_is_refused_at_once() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let mut s = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /api/v1/namespaces/default/pods/web/exec?command=sh HTTP/1.1\r\nHost: x\r\n\
          User-Agent: kubectl/v1.36\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("an upgrade request must not carry a body"),
        "{text}"
    );
}

#[test]
fn files_in_the_cache_are_served_only_if_regular_small_and_reached_without_links() {
    let c = Cluster::new();
    c.api.set_fault(testapi::Fault::Refuse);
    let hub = c.start_hub(
        BIN,
        &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
    );
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let root = c.cache.path();
    let cms = root.join("kubelet/configmaps.v1.core");
    std::fs::create_dir_all(cms.join("default")).unwrap();
    // Outside the cache: what a link would serve.
    let outside = testapi::TempDir::new("outside");
    let secret = outside.path().join("secret");
    std::fs::write(
        &secret,
        br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"secret","namespace":"evil"}}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, cms.join("default/leak")).unwrap();
    std::os::unix::fs::symlink(outside.path(), cms.join("evil")).unwrap();
    let fifo = cms.join("default/fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let big = format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"big","namespace":"default"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(17 << 20)
    );
    std::fs::write(cms.join("default/big"), big).unwrap();

    // `yurthub cache get` does not hang on the FIFO either.
    let (code, out) = testapi::cache_cli(
        BIN,
        root,
        &["get", "kubelet/configmaps.v1.core/default/fifo"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not a regular file"), "{out}");

    for path in [
        "/api/v1/namespaces/default/configmaps/leak",
        "/api/v1/namespaces/evil/configmaps/secret",
        "/api/v1/namespaces/default/configmaps/fifo",
        "/api/v1/namespaces/default/configmaps/big",
    ] {
        let r = get(hub.proxy_addr, path, KUBELET);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    // Moved aside (the links themselves), and nothing outside was touched.
    assert!(secret.is_file());
    let q: Vec<String> = std::fs::read_dir(root.join("_quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in [
        "default_leak.",
        "configmaps.v1.core_evil.",
        "default_fifo.",
        "default_big.",
    ] {
        assert!(q.iter().any(|f| f.contains(name)), "{name} not in {q:?}");
    }
    assert!(!cms.join("evil").exists() && !cms.join("default/leak").exists());
}

#[test]
fn offline_creates_are_the_nodes_only_and_its_events_are_small_and_expire() {
    let c = Cluster::new();
    // A pod's own token, which the cloud accepts while it is there.
    c.api
        .add_token("pod-token", "system:serviceaccount:default:app", &[]);
    let hub = c.start_hub(
        BIN,
        &[
            "--heartbeat-interval-seconds=1",
            "--filter-sync-timeout=1s",
            "--gc-frequency=1s",
            "--event-ttl=3s",
        ],
    );
    let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
    let seen = s
        .request(
            "GET",
            "/api/v1/namespaces/default/events",
            &[
                ("User-Agent", "app/v1"),
                ("Authorization", "Bearer pod-token"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(seen.status, 200);
    let tokens = c.cache.path().join("_internal/tokens.json");
    wait_until(
        "the token to be remembered",
        Duration::from_secs(10),
        || tokens.is_file(),
    );
    c.api.set_fault(testapi::Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let event = |name: &str, pad: usize| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "firstTimestamp": "2099-01-01T00:00:00Z", "lastTimestamp": "2099-01-01T00:00:00Z",
            "message": "x".repeat(pad)
        }))
        .unwrap()
    };
    let path = "/api/v1/namespaces/default/events";
    // A pod, with a token of its own, naming itself the hub: refused before its 1 MiB body
    // is read.
    for _ in 0..5 {
        let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: yurthub/v1\r\n\
             Authorization: Bearer pod-token\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            1 << 20
        );
        s.write_raw(head.as_bytes()).unwrap();
        let r = s.read_response().unwrap();
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let headers = [
        ("User-Agent", KUBELET),
        ("Content-Type", "application/json"),
    ];
    let big = request(
        hub.proxy_addr,
        "POST",
        path,
        &headers,
        &event("big", 40 << 10),
    )
    .unwrap();
    assert_eq!(big.status, 413, "{}", big.text());
    let small = request(hub.proxy_addr, "POST", path, &headers, &event("small", 100)).unwrap();
    assert_eq!(small.status, 201, "{}", small.text());
    let root = c.cache.path();
    let stored = root.join("kubelet/events.v1.core/default/small");
    wait_until(
        "the node's Event to be stored",
        Duration::from_secs(10),
        || stored.is_file(),
    );
    assert!(!root.join("yurthub/events.v1.core").exists());
    assert!(!root.join("kubelet/events.v1.core/default/big").exists());
    // Its times say 2099; its TTL runs from when the hub stored it.
    wait_until(
        "an Event dated 2099 to go at --event-ttl",
        Duration::from_secs(20),
        || !stored.exists(),
    );
}

#[test]
fn lists_with_ever_new_selectors_keep_at_most_the_capped_views() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let mut s = Session::new(std::net::TcpStream::connect(hub.proxy_addr).unwrap());
    let n = 1100;
    for i in 0..n {
        let path = format!("/api/v1/namespaces/default/configmaps?labelSelector=probe%3D{i}");
        let r = s.get(&path, KUBELET).unwrap();
        assert_eq!(r.status, 200);
    }
    let dir = c
        .cache
        .path()
        .join("_internal/views/kubelet/configmaps.v1.core");
    let cap = 1024;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&hub);
        let dropped = value(&text, "yurthub_cache_views_dropped_total");
        if dropped >= (n - cap) as f64 {
            assert!(value(&text, "yurthub_cache_views") <= cap as f64 + 8.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "views never capped:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files <= cap, "{files} view files");
    hub.wait_for_log("more lists than the hub keeps", Duration::from_secs(5));
}

#[test]
fn offline_only_tokens_the_cloud_accepted_read_the_cache_also_after_a_restart() {
    let c = Cluster::new();
    let coredns = c.api.add_service_account_token("kube-system", "coredns", 1);
    let args = ["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"];
    let mut hub = c.start_hub(BIN, &args);
    let read = |hub: &Hub, token: &str| {
        let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
        let auth = format!("Bearer {token}");
        s.request(
            "GET",
            "/api/v1/services",
            &[("User-Agent", "coredns/v1.11"), ("Authorization", &auth)],
            b"",
        )
        .unwrap()
    };
    assert_eq!(read(&hub, &coredns).status, 200);
    assert_eq!(read(&hub, "made-up").status, 401, "the cloud's own verdict");
    let cached = c
        .cache
        .path()
        .join("_internal/views/coredns/services.v1.core");
    let tokens = c.cache.path().join("_internal/tokens.json");
    wait_until("the answers to be cached", Duration::from_secs(10), || {
        cached.is_dir() && tokens.is_file()
    });
    assert!(!std::fs::read_to_string(&tokens).unwrap().contains(&coredns));
    for restart in [false, true] {
        if restart {
            hub.stop();
            hub = c.start_hub(BIN, &args);
        } else {
            c.api.set_fault(testapi::Fault::Refuse);
        }
        hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
        assert_eq!(read(&hub, &coredns).status, 200);
        let forged = read(&hub, "made-up");
        assert_eq!(forged.status, 401, "{}", forged.text());
        assert!(forged
            .text()
            .contains("only tokens the cloud accepted before"));
    }
}

#[test]
fn offline_each_identity_reads_only_what_was_cached_for_it() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/secrets",
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "web-secret", "namespace": "default"}, "data": {"k": "djE="}}),
    );
    let coredns = c.api.add_service_account_token("kube-system", "coredns", 1);
    let coredns_renewed = c.api.add_service_account_token("kube-system", "coredns", 2);
    let app = c.api.add_service_account_token("default", "app", 1);
    // Each component's own cache: the multiplexer, which would answer the node's Services
    // from the store it fills as the hub, is off (tests/multiplexer.rs has its rules).
    let args = [
        "--heartbeat-interval-seconds=1",
        "--filter-sync-timeout=1s",
        "--pool-scope-resources=",
    ];
    let mut hub = c.start_hub(BIN, &args);
    let with_token = |hub: &Hub, path: &str, ua: &str, token: &str| {
        let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
        let auth = format!("Bearer {token}");
        s.request(
            "GET",
            path,
            &[("User-Agent", ua), ("Authorization", &auth)],
            b"",
        )
        .unwrap()
    };
    let secrets = "/api/v1/namespaces/default/secrets";
    let services = "/api/v1/services";
    // Online: kubelet (the node) lists Secrets, coredns (its service account) Services; a
    // pod names itself kubelet, then coredns, and the cloud answers it too.
    assert_eq!(get(hub.proxy_addr, secrets, KUBELET).status, 200);
    assert_eq!(
        with_token(&hub, services, "coredns/v1.11", &coredns).status,
        200
    );
    // coredns's renewed token is seen online once (on another request).
    let endpoints = "/apis/discovery.k8s.io/v1/endpointslices";
    assert_eq!(
        with_token(&hub, endpoints, "coredns/v1.11", &coredns_renewed).status,
        200
    );
    assert_eq!(with_token(&hub, secrets, KUBELET, &app).status, 200);
    assert_eq!(
        with_token(&hub, services, "coredns/v1.11", &app).status,
        200
    );
    let views = c.cache.path().join("_internal/views");
    let owners = c.cache.path().join("_internal/owners.json");
    wait_until("the answers to be cached", Duration::from_secs(10), || {
        views.join("kubelet/secrets.v1.core").is_dir()
            && views.join("coredns/services.v1.core").is_dir()
            && std::fs::read_to_string(&owners).is_ok_and(|o| o.contains("coredns"))
    });
    let recorded = std::fs::read_to_string(&owners).unwrap();
    assert!(
        recorded.contains("system:serviceaccount:kube-system:coredns")
            && !recorded.contains("default:app"),
        "{recorded}"
    );
    hub.wait_for_log(
        "coredns is cached for system:serviceaccount:kube-system:coredns",
        Duration::from_secs(5),
    );
    for restart in [false, true] {
        if restart {
            hub.stop();
            hub = c.start_hub(BIN, &args);
        } else {
            c.api.set_fault(testapi::Fault::Refuse);
        }
        hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
        // The node reads kubelet's Secrets; a pod's accepted token with kubelet's name does not.
        let node = get(hub.proxy_addr, secrets, KUBELET);
        assert_eq!(node.status, 200, "{}", node.text());
        assert!(node.text().contains("web-secret"));
        let pod = with_token(&hub, secrets, KUBELET, &app);
        assert_eq!(pod.status, 403, "{}", pod.text());
        assert!(!pod.text().contains("web-secret"));
        assert!(pod
            .text()
            .contains("read only by the identity it was cached for"));
        let one = with_token(
            &hub,
            "/api/v1/namespaces/default/secrets/web-secret",
            KUBELET,
            &app,
        );
        assert_eq!(one.status, 403, "{}", one.text());
        // coredns's Services: to coredns's account, with any of its tokens; not to the pod's
        // nor to the node.
        for token in [&coredns, &coredns_renewed] {
            let r = with_token(&hub, services, "coredns/v1.11", token);
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(
            with_token(&hub, services, "coredns/v1.11", &app).status,
            403
        );
        assert_eq!(get(hub.proxy_addr, services, "coredns/v1.11").status, 403);
    }
}

#[test]
fn built_in_names_are_not_a_pods_and_the_node_takes_over_what_a_system_account_cached() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/secrets",
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app-secret", "namespace": "default"}}),
    );
    let app = c.api.add_service_account_token("default", "app", 1);
    let system = c
        .api
        .add_service_account_token("kube-system", "kube-proxy", 1);
    let hub = c.start_hub(
        BIN,
        &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
    );
    let with_token = |ua: &str, path: &str, token: &str| {
        let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
        let auth = format!("Bearer {token}");
        s.request(
            "GET",
            path,
            &[("User-Agent", ua), ("Authorization", &auth)],
            b"",
        )
        .unwrap()
    };
    let secrets = "/api/v1/namespaces/default/secrets";
    // A pod names itself kube-proxy before kube-proxy starts: answered, never cached.
    assert_eq!(with_token(PROXY, secrets, &app).status, 200);
    hub.wait_for_log(
        "kube-proxy: answers for system:serviceaccount:default:app are relayed, not cached: a built-in agent's cache is only the node's or a system service account's",
        Duration::from_secs(10),
    );
    // kube-proxy's own service account (kube-proxy in-cluster, through the TLS port) may.
    assert_eq!(with_token(PROXY, secrets, &system).status, 200);
    let cached = c
        .cache
        .path()
        .join("kube-proxy/secrets.v1.core/default/app-secret");
    wait_until("the answers to be cached", Duration::from_secs(10), || {
        cached.is_file()
    });
    // The node's kube-proxy comes: its requests are cached, and what was cached for the
    // service account is gone. (Nodes, not Services: the multiplexer answers those once
    // its store has listed them, and this test is not about that timing.)
    assert_eq!(get(hub.proxy_addr, "/api/v1/nodes", PROXY).status, 200);
    hub.wait_for_log(
        "kube-proxy: 1 lists and 1 objects cached for another identity removed",
        Duration::from_secs(10),
    );
    assert!(!cached.exists());
    let owners = std::fs::read_to_string(c.cache.path().join("_internal/owners.json")).unwrap();
    assert!(!owners.contains("dropping"), "{owners}");
    wait_until(
        "kube-proxy's list to be cached",
        Duration::from_secs(10),
        || {
            c.cache
                .path()
                .join("_internal/views/kube-proxy/nodes.v1.core")
                .is_dir()
        },
    );
    c.api.set_fault(testapi::Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let r = with_token(PROXY, "/api/v1/nodes", &system);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(get(hub.proxy_addr, "/api/v1/nodes", PROXY).status, 200);
    assert_eq!(
        get(hub.proxy_addr, secrets, PROXY).status,
        404,
        "the node never listed them: not cached for it"
    );
}

#[test]
fn a_token_the_apiserver_does_not_read_is_never_remembered_nor_an_owner() {
    let c = Cluster::new();
    // A JWT naming coredns's account, made up by a pod: with two spaces after "Bearer" the
    // apiserver reads no token and serves the request as anonymous.
    let forged = c.api.add_service_account_token("kube-system", "coredns", 1);
    c.api.add_token("unrelated", "nobody", &[]);
    let hub = c.start_hub(
        BIN,
        &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
    );
    let send = |auth: &str| {
        let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
        s.request(
            "GET",
            "/api/v1/services",
            &[("User-Agent", "coredns/v1.11"), ("Authorization", auth)],
            b"",
        )
        .unwrap()
    };
    let double_space = format!("Bearer  {forged}");
    let online = send(&double_space);
    assert!(
        online.status != 200,
        "served to anonymous: {}",
        online.status
    );
    let recorded = c.api.requests();
    assert!(recorded
        .iter()
        .any(|r| r.header("authorization") == Some(double_space.as_str()) && r.user.is_none()));
    assert!(!c.cache.path().join("_internal/tokens.json").exists());
    c.api.set_fault(testapi::Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    assert_eq!(send(&double_space).status, 401);
    assert_eq!(send(&format!("Bearer {forged}")).status, 401);
}

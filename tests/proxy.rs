//! The proxy end to end: raw HTTP clients through the real `yurthub` binary to the test
//! apiserver.

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use testapi::client::{self, get, request};
use testapi::{pod, ApiServer, Cluster, Fault, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
const COREDNS: &str = "coredns/1.11.3";

#[test]
fn get_and_list_reach_the_apiserver_with_the_node_identity() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("p1", NODE));
    c.api
        .create("/api/v1/namespaces/default/pods", pod("p2", NODE));
    let hub = c.start_hub(BIN, &[]);

    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods/p1",
        KUBELET,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "p1");
    let r = get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    assert_eq!(r.status, 200);
    let names: Vec<_> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("p1"), json!("p2")]);
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods/nope",
        KUBELET,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["reason"], "NotFound");

    let seen = c.api.client_requests();
    assert!(seen
        .iter()
        .all(|r| r.user.as_deref() == Some("system:node:node-1")));
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(last.header("user-agent"), Some(KUBELET));
}

#[test]
fn upgrade_tunnel_carries_a_mebibyte_each_way() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("shell", NODE));
    let hub = c.start_hub(BIN, &[]);
    let mut s = TcpStream::connect(hub.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"POST /api/v1/namespaces/default/pods/shell/exec?command=sh&stdin=true&stdout=true HTTP/1.1\r\n\
          Host: x\r\nUser-Agent: kubectl/v1.32.4\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: spdy/3.1"),
        "{head}"
    );

    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = s.try_clone().unwrap();
    let sent = payload.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    s.read_to_end(&mut echoed).unwrap();
    w.join().unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");
}

#[test]
fn bearer_tokens_pass_through_without_the_node_certificate() {
    let c = Cluster::new();
    c.api.add_token(
        "sa-token-123",
        "system:serviceaccount:default:app",
        &["system:serviceaccounts"],
    );
    let hub = c.start_hub(BIN, &[]);
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("User-Agent", "app/1.0"),
            ("Authorization", "Bearer sa-token-123"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("Authorization", "Bearer wrong")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/configmaps",
        "kubelet/v1.32",
    );
    assert_eq!(r.status, 200);

    let seen = c.api.client_requests();
    assert_eq!(
        seen[0].user.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(seen[0].header("authorization"), Some("Bearer sa-token-123"));
    assert_eq!(
        seen[1].user, None,
        "a rejected token must not fall back to the node identity"
    );
    assert_eq!(seen[2].user.as_deref(), Some("system:node:node-1"));
}

#[test]
fn requests_fail_over_to_the_next_apiserver_and_spread_round_robin() {
    let c = Cluster::new();
    let second = ApiServer::start(&c.pki);
    for api in [&c.api, &second] {
        api.create(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "cm"}}),
        );
    }
    let hub = testapi::Hub::start(BIN, &c.hub_args(&[&c.api, &second]));
    for _ in 0..6 {
        assert_eq!(
            get(
                hub.proxy_addr,
                "/api/v1/namespaces/default/configmaps/cm",
                KUBELET
            )
            .status,
            200
        );
    }
    assert!(
        !c.api.client_requests().is_empty() && !second.client_requests().is_empty(),
        "rr uses both servers"
    );

    c.api.set_fault(Fault::Refuse);
    c.api.reset_connections();
    second.clear_requests();
    for _ in 0..6 {
        let r = get(
            hub.proxy_addr,
            "/api/v1/namespaces/default/configmaps/cm",
            KUBELET,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(second.client_requests().len(), 6);
}

#[test]
fn priority_mode_prefers_the_first_server() {
    let c = Cluster::new();
    let second = ApiServer::start(&c.pki);
    let mut args = c.hub_args(&[&c.api, &second]);
    args.push("--lb-mode=priority".into());
    let hub = testapi::Hub::start(BIN, &args);
    for _ in 0..4 {
        assert_eq!(
            get(hub.proxy_addr, "/api/v1/namespaces", KUBELET).status,
            200
        );
    }
    assert_eq!(
        (
            c.api.client_requests().len(),
            second.client_requests().len()
        ),
        (4, 0)
    );
}

/// In cloud mode the hub is a plain proxy: with every server down there is nothing to answer
/// from, and the client gets a 502 Status (edge mode answers from the cache, see offline.rs).
#[test]
fn bad_gateway_with_a_status_when_no_server_answers() {
    let c = Cluster::new();
    let second = ApiServer::start(&c.pki);
    let mut args = c.hub_args(&[&c.api, &second]);
    args.push("--working-mode=cloud".into());
    let hub = testapi::Hub::start(BIN, &args);
    c.api.set_fault(Fault::Refuse);
    second.set_fault(Fault::Refuse);
    std::thread::sleep(Duration::from_millis(100));
    let r = get(hub.proxy_addr, "/api/v1/pods", KUBELET);
    assert_eq!(r.status, 502);
    let s = r.json();
    assert_eq!(
        (s["kind"].as_str(), s["code"].as_u64()),
        (Some("Status"), Some(502))
    );
    assert!(s["message"]
        .as_str()
        .unwrap()
        .contains("no healthy backends"));
    // And it recovers as soon as a server is back.
    second.set_fault(Fault::None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(hub.proxy_addr, "/api/v1/pods", KUBELET).status != 200 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_events_arrive_as_they_happen_and_a_client_leaving_ends_the_upstream_watch() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let rv = c.api.resource_version().to_string();
    let mut w = client::watch(
        hub.proxy_addr,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        KUBELET,
    );
    assert_eq!(w.status, 200);
    assert_eq!(w.header("transfer-encoding"), Some("chunked"));
    for i in 0..3 {
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("w{i}"), NODE),
        );
        let ev: serde_json::Value = serde_json::from_str(&w.next_line().unwrap().unwrap()).unwrap();
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["metadata"]["name"], format!("w{i}"));
    }
    assert_eq!(c.api.open_watches_on("pods"), 1);
    drop(w);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.api.open_watches_on("pods") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream watch still open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn negotiation_asks_for_json_and_gzip_and_unpacks_for_clients_without_gzip() {
    let c = Cluster::new();
    let big = "x".repeat(4096);
    for i in 0..60 {
        c.api.create(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("cm-{i:02}")}, "data": {"blob": big}}),
        );
    }
    let hub = c.start_hub(BIN, &[]);
    // coredns: a cache agent no filter rewrites configmaps for (kubelet's get inclusterconfig,
    // and filtered bodies are sent plain).
    let accept = "application/vnd.kubernetes.protobuf,application/json";
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("User-Agent", COREDNS), ("Accept", accept)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 60);
    let up = c.api.client_requests().pop().unwrap();
    assert_eq!(up.header("accept"), Some("application/json"));
    assert_eq!(up.header("accept-encoding"), Some("gzip"));

    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("User-Agent", COREDNS), ("Accept-Encoding", "gzip")],
        b"",
    )
    .unwrap();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let plain = testapi::wire::gunzip(&r.body);
    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 60);

    // Logs are not negotiated: they pass byte for byte.
    c.api
        .create("/api/v1/namespaces/default/pods", pod("p", NODE));
    c.api.append_log("default", "p", "hello");
    c.api.clear_requests();
    let r = request(
        hub.proxy_addr,
        "GET",
        "/api/v1/namespaces/default/pods/p/log",
        &[("Accept", "*/*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.text(), "hello\n");
    let up = c.api.client_requests().pop().unwrap();
    assert_eq!(up.header("accept"), Some("*/*"));
    assert_eq!(up.header("accept-encoding"), None);
}

#[test]
fn writes_go_through_with_their_bodies() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let body =
        serde_json::to_vec(&json!({"metadata": {"name": "cm"}, "data": {"k": "v"}})).unwrap();
    let r = request(
        hub.proxy_addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("Content-Type", "application/json"),
            ("Expect", "100-continue"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(
        hub.proxy_addr,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/cm",
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"data":{"k":"w"}}"#,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        c.api
            .get("/api/v1/namespaces/default/configmaps/cm")
            .unwrap()["data"]["k"],
        "w"
    );
    // A chunked request body is re-framed on the way up.
    let mut s = TcpStream::connect(hub.proxy_addr).unwrap();
    s.write_all(b"PUT /api/v1/namespaces/default/configmaps/cm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let full =
        serde_json::to_vec(&json!({"metadata": {"name": "cm"}, "data": {"k": "chunked"}})).unwrap();
    for part in full.chunks(10) {
        s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
            .unwrap();
        s.write_all(part).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        c.api
            .get("/api/v1/namespaces/default/configmaps/cm")
            .unwrap()["data"]["k"],
        "chunked"
    );
    let r = request(
        hub.proxy_addr,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/cm",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(c
        .api
        .get("/api/v1/namespaces/default/configmaps/cm")
        .is_none());
}

#[test]
fn keep_alive_carries_many_requests_on_one_connection() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let tcp = TcpStream::connect(hub.proxy_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = client::Session::new(tcp);
    for _ in 0..20 {
        let r = s.get("/version", "kubelet/v1.32").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().contains("v1.36.2"));
    }
}

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

#[test]
fn get_and_list_reach_the_apiserver_with_the_node_identity() {
    let c = Cluster::new();
    c.api.create("/api/v1/namespaces/default/pods", pod("p1", NODE));
    c.api.create("/api/v1/namespaces/default/pods", pod("p2", NODE));
    let hub = c.start_hub(BIN, &[]);

    let r = get(hub.proxy_addr, "/api/v1/namespaces/default/pods/p1", KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "p1");
    let r = get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET);
    assert_eq!(r.status, 200);
    let names: Vec<_> = r.json()["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].clone()).collect();
    assert_eq!(names, vec![json!("p1"), json!("p2")]);
    let r = get(hub.proxy_addr, "/api/v1/namespaces/default/pods/nope", KUBELET);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["reason"], "NotFound");

    let seen = c.api.requests();
    assert!(seen.iter().all(|r| r.user.as_deref() == Some("system:node:node-1")));
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(last.header("user-agent"), Some(KUBELET));
}

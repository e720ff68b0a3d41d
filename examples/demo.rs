//! The hub in front of an in-process test apiserver, showing requests going through.
//!
//! `cargo run --release --example demo` starts the test apiserver (TLS, client certificates),
//! writes the node's certificate where the hub expects it, starts the hub, and then plays a
//! kubelet: reads, a watch, a write and a followed log, printing each step.

use serde_json::json;
use std::time::Instant;
use testapi::client::{self, get, request};
use testapi::{pod, Cluster, NODE};
use yurthub::app::config::{Config, Parsed};

const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/demo";

fn main() {
    yurthub::app::logging::init(log::LevelFilter::Info);
    let c = Cluster::new();
    println!("test apiserver on {}", c.api.url());
    c.api.create(
        "/api/v1/namespaces/kube-system/pods",
        pod("coredns-abc", NODE),
    );
    c.api.create(
        "/api/v1/namespaces/kube-system/pods",
        pod("kube-proxy-xyz", NODE),
    );

    let args = c.hub_args(&[&c.api]);
    println!("yurthub {}", args.join(" "));
    let Parsed::Run(cfg) = Config::from_args(args).expect("valid flags") else {
        unreachable!("no --help here")
    };
    let hub = yurthub::app::start(&cfg).expect("the hub starts");
    yurthub::runtime::spawn_thread();
    testapi::wait_ready(hub.admin_addr);
    let addr = hub.proxy_addr;

    let v = get(addr, "/version", KUBELET).json();
    println!("GET /version through the hub -> {}", v["gitVersion"]);

    let list = get(addr, "/api/v1/namespaces/kube-system/pods", KUBELET).json();
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    println!(
        "LIST kube-system pods -> {names:?} at resourceVersion {}",
        list["metadata"]["resourceVersion"]
    );

    let rv = c.api.resource_version();
    let mut watch = client::open(
        addr,
        "GET",
        &format!("/api/v1/namespaces/kube-system/pods?watch=true&resourceVersion={rv}"),
        &[("User-Agent", KUBELET)],
        b"",
    )
    .unwrap();
    let t = Instant::now();
    c.api.create(
        "/api/v1/namespaces/kube-system/pods",
        pod("flannel-q9", NODE),
    );
    let event: serde_json::Value =
        serde_json::from_str(&watch.next_line().unwrap().unwrap()).unwrap();
    println!(
        "WATCH -> {} {} after {:?}",
        event["type"],
        event["object"]["metadata"]["name"],
        t.elapsed()
    );
    drop(watch);

    let body = serde_json::to_vec(
        &json!({"metadata": {"name": "node-settings"}, "data": {"mode": "edge"}}),
    )
    .unwrap();
    let r = request(
        addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .unwrap();
    println!(
        "POST configmap -> {} (resourceVersion {})",
        r.status,
        r.json()["metadata"]["resourceVersion"]
    );

    c.api.append_log(
        "kube-system",
        "coredns-abc",
        "[INFO] plugin/reload: Running configuration",
    );
    let mut logs = client::open(
        addr,
        "GET",
        "/api/v1/namespaces/kube-system/pods/coredns-abc/log?follow=true",
        &[("User-Agent", "kubectl/v1.32")],
        b"",
    )
    .unwrap();
    println!("LOGS -f -> {}", logs.next_line().unwrap().unwrap());
    c.api.append_log(
        "kube-system",
        "coredns-abc",
        "[INFO] 10.0.0.7:5353 - A example.org",
    );
    println!("LOGS -f -> {}", logs.next_line().unwrap().unwrap());
    drop(logs);

    let r = get(addr, "/api/v1/namespaces/kube-system/pods/missing", KUBELET);
    println!("GET a missing pod -> {} {}", r.status, r.json()["message"]);

    let users: std::collections::BTreeSet<_> = c
        .api
        .requests()
        .iter()
        .filter_map(|r| r.user.clone())
        .collect();
    println!(
        "the apiserver saw {} requests, authenticated as {users:?}",
        c.api.requests().len()
    );
}

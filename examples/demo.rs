//! The hub in front of an in-process test apiserver: online, then offline, then back.
//!
//! `cargo run --release --example demo` starts the test apiserver (TLS, client certificates),
//! writes the node's certificate where the hub expects it, starts the hub (this same program,
//! re-run as the hub process), and then plays a kubelet: reads, a watch, a write and a followed
//! log through the cloud; then the cloud goes away and the same reads are answered from the
//! cache, the hub restarts offline and still answers, and when the cloud returns the watch the
//! hub held ends so that the kubelet lists afresh from the cloud. The hub's own log lines are
//! shown as `hub |`.

use serde_json::json;
use std::time::{Duration, Instant};
use testapi::client::{self, get, request};
use testapi::{pod, Cluster, Fault, Hub, NODE};
use yurthub::app::config::{Config, Parsed};

const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/demo";
/// The first argument that makes this program the hub.
const AS_HUB: &str = "--as-hub";

fn main() {
    if std::env::args().nth(1).as_deref() == Some(AS_HUB) {
        std::process::exit(run_hub());
    }
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

    let mut args = c.hub_args(&[&c.api]);
    // Info, not debug; the cloud probed every second so the demo need not wait ten.
    args.extend(["--v=0".into(), "--heartbeat-interval-seconds=1".into()]);
    println!("yurthub {}", args.join(" "));
    let mut log = Log::default();
    let hub = start(&args, &mut log);
    let addr = hub.proxy_addr;

    let v = get(addr, "/version", KUBELET).json();
    println!("GET /version through the hub -> {}", v["gitVersion"]);

    let list = get(addr, "/api/v1/namespaces/kube-system/pods", KUBELET).json();
    println!(
        "LIST kube-system pods -> {:?} at resourceVersion {}",
        names(&list),
        list["metadata"]["resourceVersion"]
    );

    let rv = c.api.resource_version().to_string();
    let mut watch = watch_pods(addr, &rv);
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
    log.show(&hub);

    println!("\n-- the cloud goes away (the WAN link drops: connections refused)");
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(30));
    log.show(&hub);
    let before = c.api.requests().len();
    read_offline(addr, "offline, from the cache");
    let r = get(addr, "/api/v1/namespaces/kube-system/pods/missing", KUBELET);
    println!(
        "GET a pod never cached -> {} {}",
        r.status,
        r.json()["message"]
    );

    println!("\n-- the hub restarts while the cloud is still away (SIGTERM, as systemd stops it)");
    let code = stop(hub, &mut log);
    println!("the hub exited with status {code}");
    let hub = start(&args, &mut log);
    let addr = hub.proxy_addr;
    read_offline(addr, "after the restart, still from the cache");
    let rv = list_rv(addr);
    let mut watch = watch_pods(addr, &rv);
    println!(
        "WATCH kube-system pods -> {} (held open by the hub while offline)",
        watch.status
    );
    assert_eq!(c.api.requests().len(), before, "the cloud was not reached");

    println!("\n-- the cloud comes back");
    c.api.set_fault(Fault::None);
    let t = Instant::now();
    let ended = loop {
        match watch.next_line() {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break t.elapsed(),
        }
    };
    hub.wait_for_log("is now healthy", Duration::from_secs(30));
    log.show(&hub);
    println!(
        "the held watch ended {ended:.1?} after the cloud returned: the kubelet lists and watches the cloud again"
    );
    let list = get(addr, "/api/v1/namespaces/kube-system/pods", KUBELET);
    println!(
        "LIST kube-system pods -> {} {:?} from the cloud again ({} requests reached it since it returned)",
        list.status,
        names(&list.json()),
        c.api.requests().len() - before
    );
    let code = stop(hub, &mut log);
    println!("the hub exited with status {code}");
}

/// The hub process: this program re-run with [`AS_HUB`] and the hub's flags.
fn run_hub() -> i32 {
    match Config::from_args(std::env::args().skip(2)) {
        Ok(Parsed::Run(cfg)) => {
            yurthub::app::logging::init(log::LevelFilter::Info);
            cfg.log_no_effect();
            match yurthub::app::run(&cfg) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            }
        }
        Ok(_) => 0,
        Err(e) => {
            eprintln!("yurthub: {e}");
            2
        }
    }
}

fn start(args: &[String], log: &mut Log) -> Hub {
    let exe = std::env::current_exe().expect("this program's path");
    let mut all = vec![AS_HUB.to_string()];
    all.extend(args.iter().cloned());
    let hub = Hub::start(exe.to_str().expect("a UTF-8 path"), &all);
    log.seen = 0;
    log.show(&hub);
    hub
}

/// SIGTERM, as systemd stops the hub; the exit status, after its last lines.
fn stop(mut hub: Hub, log: &mut Log) -> i32 {
    hub.signal("TERM");
    let code = hub.wait_exit(Duration::from_secs(10)).unwrap_or(-1);
    log.show(&hub);
    let warnings = hub.log().iter().filter(|l| l.contains(" WARN ")).count();
    println!("({warnings} warnings in this run of the hub)");
    code
}

/// The kubelet's reads again, answered while the cloud refuses every connection.
fn read_offline(addr: std::net::SocketAddr, how: &str) {
    let list = get(addr, "/api/v1/namespaces/kube-system/pods", KUBELET);
    println!(
        "LIST kube-system pods -> {} {:?} ({how})",
        list.status,
        names(&list.json())
    );
    let one = get(
        addr,
        "/api/v1/namespaces/kube-system/pods/coredns-abc",
        KUBELET,
    );
    println!(
        "GET pod coredns-abc -> {} {} ({how})",
        one.status,
        one.json()["metadata"]["name"]
    );
}

/// kubelet's watch of kube-system's pods from `rv`.
fn watch_pods(addr: std::net::SocketAddr, rv: &str) -> client::ResponseStream {
    client::open(
        addr,
        "GET",
        &format!("/api/v1/namespaces/kube-system/pods?watch=true&resourceVersion={rv}"),
        &[("User-Agent", KUBELET)],
        b"",
    )
    .unwrap()
}

fn list_rv(addr: std::net::SocketAddr) -> String {
    let list = get(addr, "/api/v1/namespaces/kube-system/pods", KUBELET).json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string()
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The hub's log lines not shown yet.
#[derive(Default)]
struct Log {
    seen: usize,
}

impl Log {
    fn show(&mut self, hub: &Hub) {
        let lines = hub.log();
        for line in lines.iter().skip(self.seen) {
            if line != "<exited>" {
                println!("  hub | {line}");
            }
        }
        self.seen = lines.len();
    }
}

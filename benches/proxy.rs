//! Proxy figures, printed as a table and compared with DESIGN.md §3 (never asserted):
//! the added p50/p99 latency of a proxied GET against the same request sent straight to the
//! test apiserver, and the delay of a watch event through the hub.
//!
//! Run with `cargo bench --bench proxy`.

use std::time::{Duration, Instant};
use testapi::client::{self, Session};
use testapi::{pod, Cluster, NODE};
use yurthub::config::{Config, Parsed};

const SAMPLES: usize = 2000;
/// A cache agent no filter applies to for pods: the plain proxied path (kubelet's pod reads
/// also pass serviceenvupdater).
const UA: &str = "coredns/1.11.3";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("bench", NODE));
    let Parsed::Run(cfg) = Config::from_args(c.hub_args(&[&c.api])).expect("flags") else {
        unreachable!("hub_args never asks for --help")
    };
    let hub = yurthub::app::start(&cfg).expect("hub starts");
    yurthub::runtime::spawn_thread();
    testapi::wait_ready(hub.admin_addr);

    let client_pem = c.pki.client_pem("system:node:node-1", &["system:nodes"]);
    let mut direct =
        Session::new(client::tls_connect(c.api.addr(), &c.pki.ca_pem, &client_pem).unwrap());
    let tcp = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut proxied = Session::new(tcp);
    let path = "/api/v1/namespaces/default/pods/bench";

    let mut t_direct = Vec::with_capacity(SAMPLES);
    let mut t_proxied = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let t = Instant::now();
        assert_eq!(direct.get(path, UA).unwrap().status, 200);
        let d = t.elapsed();
        let t = Instant::now();
        assert_eq!(proxied.get(path, UA).unwrap().status, 200);
        let p = t.elapsed();
        if i >= 200 {
            t_direct.push(d);
            t_proxied.push(p);
        }
    }
    t_direct.sort();
    t_proxied.sort();

    // Watch delay: from the create call until the event line arrives through the hub.
    let rv = c.api.resource_version();
    let mut w = client::open(
        hub.proxy_addr,
        "GET",
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        &[("User-Agent", UA)],
        b"",
    )
    .unwrap();
    let mut t_watch = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("w-{i}"), NODE),
        );
        w.next_line().unwrap().expect("an event");
        t_watch.push(t.elapsed());
    }
    t_watch.sort();

    let (d50, p50) = (percentile(&t_direct, 0.5), percentile(&t_proxied, 0.5));
    let (d99, p99) = (percentile(&t_direct, 0.99), percentile(&t_proxied, 0.99));
    let added = micros(p50) - micros(d50);
    println!("figure                                   value        budget     verdict");
    println!(
        "GET direct to apiserver p50/p99 (us)     {:>6.0}/{:<6.0}",
        micros(d50),
        micros(d99)
    );
    println!(
        "GET through the hub p50/p99 (us)         {:>6.0}/{:<6.0}",
        micros(p50),
        micros(p99)
    );
    println!(
        "added latency of a proxied GET p50 (us)  {:>8.0}     <= 150     {}",
        added,
        if added <= 150.0 { "PASS" } else { "MISS" }
    );
    println!(
        "watch event through the hub p50/p99 (us) {:>5.0}/{:<6.0}",
        micros(percentile(&t_watch, 0.5)),
        micros(percentile(&t_watch, 0.99))
    );
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/yurthub");
    match std::fs::metadata(&bin) {
        Ok(m) => println!(
            "stripped release binary, host (bytes)    {:>8}     (aarch64 budget 2.5 MiB, see README)",
            m.len()
        ),
        Err(_) => println!("stripped release binary: run `cargo build --release` first"),
    }
}

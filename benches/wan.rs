//! The hub's own bytes on the WAN link, measured (never asserted), counted by a relay
//! between the hub and the test apiserver (`testapi::Middlebox`), as a metered link bills
//! them:
//!
//! 1. lease renewals: a node whose only traffic is the hub's own, renewing once a second,
//!    with one server and with three (issue 16 items 0 and 4);
//! 2. the hub's informers with short watches (`--informer-min-watch-timeout=1s`): what their
//!    watch rounds cost with 200 Services, each round standing for 5 to 10 minutes at the
//!    defaults (item 3).
//!
//! Run with `cargo bench --bench wan`; `YURTHUB_BIN=<path>` measures another build (an older
//! release, for the figures before).

use std::time::{Duration, Instant};
use testapi::{ApiServer, Cluster, Hub, Middlebox};

fn bin() -> String {
    std::env::var("YURTHUB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_yurthub").to_string())
}

/// Starts a hub whose servers are reached through one middlebox each.
fn hub(c: &Cluster, servers: &[&ApiServer], extra: &[&str]) -> (Hub, Vec<Middlebox>) {
    let boxes: Vec<Middlebox> = servers.iter().map(|s| Middlebox::start(s.addr())).collect();
    let mut args = c.hub_args(servers);
    let urls: Vec<String> = boxes.iter().map(Middlebox::url).collect();
    args[0] = format!("--server-addr={}", urls.join(","));
    args.extend(extra.iter().map(|s| s.to_string()));
    (Hub::start(&bin(), &args), boxes)
}

fn total(boxes: &[Middlebox]) -> (u64, u64) {
    boxes
        .iter()
        .map(Middlebox::bytes)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The bytes relayed over `window` after `settle`.
fn measure(boxes: &[Middlebox], settle: Duration, window: Duration) -> (u64, u64, f64) {
    std::thread::sleep(settle);
    let before = total(boxes);
    let t = Instant::now();
    std::thread::sleep(window);
    let after = total(boxes);
    (
        after.0 - before.0,
        after.1 - before.1,
        t.elapsed().as_secs_f64(),
    )
}

fn main() {
    println!("binary: {}", bin());
    for n in [1usize, 3] {
        let c = Cluster::new();
        let extra: Vec<ApiServer> = (1..n).map(|_| ApiServer::start(&c.pki)).collect();
        let mut servers = vec![&c.api];
        servers.extend(extra.iter());
        let (hub, boxes) = hub(
            &c,
            &servers,
            &["--heartbeat-interval-seconds=1", "--filter-sync-timeout=1s"],
        );
        let (up, down, secs) = measure(&boxes, Duration::from_secs(3), Duration::from_secs(20));
        let per_tick = (up + down) as f64 / secs;
        println!(
            "lease, {n} server(s): {:.0} B up + {:.0} B down per tick of the probe; at the default 10 s: {:.1} MB a day",
            up as f64 / secs,
            down as f64 / secs,
            per_tick * 8640.0 / 1e6
        );
        drop(hub);
    }
    let c = Cluster::new();
    for i in 0..200 {
        c.api.create(
            "/api/v1/namespaces/default/services",
            serde_json::json!({"metadata": {"name": format!("svc-{i:03}")},
                "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1), "ports": [{"port": 80}]}}),
        );
    }
    let (hub, boxes) = hub(
        &c,
        &[&c.api],
        &[
            "--heartbeat-interval-seconds=3600",
            "--informer-min-watch-timeout=1s",
        ],
    );
    let (up, down, secs) = measure(&boxes, Duration::from_secs(3), Duration::from_secs(20));
    // Watches of 1 to 2 s: a round every 1.5 s on average, for 5 to 10 minutes at the defaults.
    let rounds = secs / 1.5;
    println!(
        "informers (yurt-hub-cfg, Services, NodePools; 200 Services): {:.0} B per round of their watches ({up} up, {down} down in {secs:.0} s); at the defaults (a round per 7.5 min): {:.2} MB a day",
        (up + down) as f64 / rounds,
        (up + down) as f64 / rounds * 192.0 / 1e6
    );
    drop(hub);
}

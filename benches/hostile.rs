//! A hostile pod at full scale, measured (never asserted): the hub's resident memory before
//! and after each attack of issue 17 that used to grow it, as the README's security model
//! bounds them.
//!
//! 1. 2,000 token-less requests to the TLS listener with 30 KB paths and User-Agents
//!    (refused: only counted), then 2,000 with a made-up token (forwarded: capped series);
//! 5. 3,000 lists with distinct label selectors (capped views);
//! 6. four kubelet watches of ConfigMaps while 1 MB updates flood in (the cache writer's
//!    queue bounded in bytes);
//! 7. 1,000 watches of Services answered by the multiplexer's store, never read.
//!
//! Run with `cargo bench --bench hostile`.

use std::time::Duration;
use testapi::client::{get, tls_connect_anonymous, watch, Session};
use testapi::{rss_kib, Cluster, Hub};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/bench";

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The peak resident set of the process so far, KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn metrics_bytes(hub: &Hub) -> usize {
    get(hub.admin_addr, "/metrics", "curl/8").body.len()
}

fn report(what: &str, hub: &Hub, before: u64) {
    let after = rss_kib(hub.pid());
    println!(
        "{what:<58} RSS {:>6.1} -> {:>6.1} MiB (peak {:>6.1}), /metrics {:>7} B",
        mib(before),
        mib(after),
        mib(peak_kib(hub.pid())),
        metrics_bytes(hub)
    );
}

fn main() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let long = "x".repeat(30 * 1024);

    // 1. Token-less, then with a made-up token.
    let before = rss_kib(hub.pid());
    let mut s = Session::new(tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap());
    for i in 0..2000 {
        let path = format!("/api/v1/namespaces/default/{long}{i}");
        let _ = s.get(&path, &format!("evil-{i}/{long}"));
    }
    report(
        "1. 2,000 token-less requests, 30 KB path and UA",
        &hub,
        before,
    );
    let before = rss_kib(hub.pid());
    for i in 0..2000 {
        let path = format!("/api/v1/namespaces/default/configmaps/{long}{i}");
        let ua = format!("evil-{i}/{long}");
        let _ = s.request(
            "GET",
            &path,
            &[("User-Agent", &ua), ("Authorization", "Bearer made-up")],
            b"",
        );
    }
    report(
        "1. 2,000 requests with a made-up token, 30 KB path and UA",
        &hub,
        before,
    );

    // 5. Lists with ever new selectors.
    let before = rss_kib(hub.pid());
    let mut plain = Session::new(std::net::TcpStream::connect(hub.proxy_addr).unwrap());
    for i in 0..3000 {
        let path = format!("/api/v1/namespaces/default/pods?labelSelector=probe%3D{i}");
        let _ = plain.get(&path, KUBELET);
    }
    std::thread::sleep(Duration::from_secs(1));
    report("5. 3,000 lists with distinct label selectors", &hub, before);

    // 6. A flood of 1 MB watch events on four kubelet watches.
    let before = rss_kib(hub.pid());
    let data = "y".repeat(1 << 20);
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({"metadata": {"name": "flood"}, "data": {"a": data}}),
    );
    let watches: Vec<_> = (0..4)
        .map(|i| {
            let path = format!(
                "/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3Dflood&labelSelector=w{i}!%3Dx"
            );
            watch(hub.proxy_addr, &path, KUBELET)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let readers: Vec<_> = watches
        .into_iter()
        .map(|mut w| {
            std::thread::spawn(move || {
                w.set_timeout(Duration::from_secs(5));
                while let Ok(Some(_)) = w.next_line() {}
            })
        })
        .collect();
    for round in 0..100 {
        c.api.update(
            "/api/v1/namespaces/default/configmaps/flood",
            serde_json::json!({"metadata": {"name": "flood"}, "data": {"a": data, "round": round.to_string()}}),
        );
    }
    for r in readers {
        let _ = r.join();
    }
    std::thread::sleep(Duration::from_secs(2));
    report("6. 4 watches x 100 events of 1 MB", &hub, before);

    // 7. Watches the multiplexer's store answers (Services), opened and never read: what
    //    each costs the hub, and what 100 changes cost while none of them is read.
    for i in 0..100 {
        c.api.create(
            "/api/v1/namespaces/default/services",
            serde_json::json!({"metadata": {"name": format!("svc-{i}")},
                "spec": {"clusterIP": format!("10.96.1.{i}"), "ports": [{"port": 80}]}}),
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(hub.pid());
    let idle: Vec<_> = (0..1000)
        .map(|_| watch(hub.proxy_addr, "/api/v1/services?watch=true", KUBELET))
        .collect();
    for i in 0..100 {
        let path = format!("/api/v1/namespaces/default/services/svc-{i}");
        if let Some(mut svc) = c.api.get(&path) {
            svc["metadata"]["labels"] = serde_json::json!({"round": i.to_string()});
            c.api.update(&path, svc);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    report(
        "7. 1,000 unread store watches of 100 Services, 100 changes",
        &hub,
        before,
    );
    drop(idle);
}

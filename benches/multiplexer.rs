//! The cloud side of Services and EndpointSlices (issue 18, "Scale, measured"): one test
//! apiserver and N hubs, each a process of its own with its own node name, each with a
//! kube-proxy-, a coredns- and a kubelet-like client watching Services (kubelet) or Services
//! and EndpointSlices (the other two); 2,000 Services and 2,000 EndpointSlices, 10 changes a
//! second. Printed per N and mode: watches open at the apiserver, bytes its answers carried
//! per minute, the delay from a change at the apiserver to each client seeing it (p50, p99),
//! and each hub's resident memory. Measured, never asserted.
//!
//! Modes: (a) no sharing (`--pool-scope-resources=`: every client's watch goes to the
//! cloud), (b) the multiplexer (the default: upstream's resources), (c) the multiplexer and
//! leader hubs: all N hubs in one NodePool whose `leader-hub-<pool>` ConfigMap names the
//! first one leader, the others reading from it over TLS on loopback.
//!
//! Run with `cargo bench --bench multiplexer`; `YURTHUB_BENCH_HUBS=1,10` picks the Ns
//! (default 1,10,50), `YURTHUB_BENCH_MODES=b,c` the modes (default a,b,c),
//! `YURTHUB_BENCH_SECONDS` the measured window (default 60).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use testapi::{client, rss_kib, ApiServer, Hub, Pki, TempDir};

const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";
const KUBE_PROXY: &str = "kube-proxy/v1.36.2 (linux/arm64) kubernetes/98b3519";
const COREDNS: &str = "coredns/1.12.1 (linux/arm64)";
const SERVICES: usize = 2_000;
const CHANGES_PER_SECOND: u64 = 10;

/// The hub measured: the shipped build (static musl) when it is built (`cross/build.sh
/// x86_64-unknown-linux-musl`), since a glibc build's allocator keeps more resident; else
/// this build's.
fn hub_binary() -> String {
    let musl = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/yurthub");
    if musl.is_file() {
        musl.display().to_string()
    } else {
        env!("CARGO_BIN_EXE_yurthub").to_string()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn service(i: usize, stamp: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 40),
            "labels": {"app": format!("app-{i}")},
            "annotations": {"bench/changed-at": stamp.to_string()}},
        "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
            "selector": {"app": format!("app-{i}")},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(i: usize, stamp: u64) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": format!("ns-{}", i % 40),
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
            "annotations": {"bench/changed-at": stamp.to_string()}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [format!("10.244.{}.{}", i / 250, i % 250)],
            "conditions": {"ready": true}, "nodeName": "node-0"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

/// Delays seen by the clients, in microseconds.
type Delays = Arc<Mutex<Vec<u64>>>;

/// A client's watch, read on a thread of its own until `stop`: each event's delay from the
/// change's stamp, counted while `measuring`.
fn watcher(
    hub: std::net::SocketAddr,
    path: &'static str,
    ua: &'static str,
    delays: Delays,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let list = client::get(hub, path, ua);
            if list.status != 200 {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            let rv = list.json()["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            let target = format!("{path}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=600");
            let Ok(mut w) = client::open(hub, "GET", &target, &[("User-Agent", ua)], b"") else {
                continue;
            };
            w.set_timeout(Duration::from_millis(500));
            while !stop.load(Ordering::Relaxed) {
                match w.next_line() {
                    Ok(Some(line)) => {
                        let at = now_micros();
                        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        let stamp = ev["object"]["metadata"]["annotations"]["bench/changed-at"]
                            .as_str()
                            .and_then(|s| s.parse::<u64>().ok());
                        if let (Some(s), true) = (stamp, measuring.load(Ordering::Relaxed)) {
                            delays.lock().unwrap().push(at.saturating_sub(s));
                        }
                    }
                    Ok(None) => break,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        }
    })
}

struct Row {
    hubs: usize,
    mode: &'static str,
    watches: usize,
    bytes_per_minute: f64,
    p50_ms: f64,
    p99_ms: f64,
    events: usize,
    rss_mib: f64,
}

/// How the hubs share the cloud's Services and EndpointSlices.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// (a) every client's watch goes to the cloud.
    NoSharing,
    /// (b) one store per resource per hub.
    Multiplexer,
    /// (c) one store per resource per pool at the cloud: followers read from the leader.
    Leader,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoSharing => "(a) no sharing",
            Mode::Multiplexer => "(b) multiplexer",
            Mode::Leader => "(c) leader hub",
        }
    }
}

fn run(n: usize, mode: Mode, seconds: u64) -> Row {
    let shared = mode != Mode::NoSharing;
    let pki = Pki::new();
    let api = ApiServer::start(&pki);
    api.set_bookmark_interval(Duration::from_secs(60));
    for i in 0..SERVICES {
        api.create(
            &format!("/api/v1/namespaces/ns-{}/services", i % 40),
            service(i, 0),
        );
        api.create(
            &format!(
                "/apis/discovery.k8s.io/v1/namespaces/ns-{}/endpointslices",
                i % 40
            ),
            slice(i, 0),
        );
    }
    // (c): the pool of all N nodes, node-0 its leader (yurt-manager writes the ConfigMap).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    if mode == Mode::Leader {
        let nodes: Vec<String> = (0..n).map(|h| format!("node-{h}")).collect();
        api.create(
            "/apis/apps.openyurt.io/v1beta2/nodepools",
            json!({"metadata": {"name": "pool-a"}, "spec": {"type": "Edge"},
                "status": {"nodes": nodes}}),
        );
        api.create(
            "/api/v1/namespaces/kube-system/configmaps",
            json!({"metadata": {"name": "leader-hub-pool-a", "namespace": "kube-system"},
                "data": {"leaders": "node-0/127.0.0.1", "enable-leader-election": "true"}}),
        );
    }
    let mut dirs = Vec::new();
    let mut hubs: Vec<Hub> = Vec::new();
    for h in 0..n {
        let node = format!("node-{h}");
        let root = TempDir::new("root");
        let cache = TempDir::new("cache");
        pki.write_hub_files(root.path(), &node);
        // The later of two values wins: the bench logs less than the tests.
        let mut args = testapi::hub_args_for(&[&api], &node, root.path(), cache.path());
        args.extend(["--filter-sync-timeout=1s".to_string(), "--v=1".to_string()]);
        // (b) is the default, upstream's resources; (a) turns the multiplexer off.
        if !shared {
            args.push("--pool-scope-resources=".into());
        }
        if mode == Mode::Leader {
            args.extend([
                format!("--multiplexer-port={port}"),
                "--node-ip=127.0.0.1".to_string(),
            ]);
        }
        let hub = Hub::start(&hub_binary(), &args);
        if mode == Mode::Leader && h == 0 {
            // The followers find their leader serving when they start.
            hub.wait_for_log("serving the pool's follower hubs", Duration::from_secs(30));
            let deadline = Instant::now() + Duration::from_secs(60);
            while client::get(hub.proxy_addr, "/api/v1/services?limit=1", KUBE_PROXY).status != 200
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        hubs.push(hub);
        dirs.push((root, cache));
    }
    let delays: Delays = Arc::default();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for hub in &hubs {
        for (path, ua) in [
            ("/api/v1/services", KUBE_PROXY),
            ("/apis/discovery.k8s.io/v1/endpointslices", KUBE_PROXY),
            ("/api/v1/services", COREDNS),
            ("/apis/discovery.k8s.io/v1/endpointslices", COREDNS),
            ("/api/v1/services", KUBELET),
        ] {
            threads.push(watcher(
                hub.proxy_addr,
                path,
                ua,
                delays.clone(),
                measuring.clone(),
                stop.clone(),
            ));
        }
    }
    // Every client has listed and watches before the window opens.
    let wanted = match mode {
        Mode::NoSharing => 5 * n,
        Mode::Multiplexer => 2 * n,
        Mode::Leader => 2,
    };
    let deadline = Instant::now() + Duration::from_secs(120 + 3 * n as u64);
    // Watches from each client's hub reached, and (c) the followers' first ones from the
    // cloud moved to the leader.
    let settled = |w: usize| match mode {
        Mode::Leader => w == wanted,
        _ => w >= wanted,
    };
    while !settled(api.open_watches_on("services") + api.open_watches_on("endpointslices"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    measuring.store(true, Ordering::Relaxed);
    let bytes_before = api.body_bytes_sent();
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let i = (tick as usize * 7919) % SERVICES;
        let stamp = now_micros().to_string();
        let ns = format!("ns-{}", i % 40);
        if tick.is_multiple_of(2) {
            let path = format!("/api/v1/namespaces/{ns}/services/svc-{i}");
            if let Some(mut s) = api.get(&path) {
                s["metadata"]["annotations"]["bench/changed-at"] = stamp.into();
                api.update(&path, s);
            }
        } else {
            let path =
                format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/svc-{i}-abcde");
            if let Some(mut s) = api.get(&path) {
                s["metadata"]["annotations"]["bench/changed-at"] = stamp.into();
                api.update(&path, s);
            }
        }
        tick += 1;
        let next = started + Duration::from_micros(tick * 1_000_000 / CHANGES_PER_SECOND);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(false, Ordering::Relaxed);
    let bytes = api.body_bytes_sent() - bytes_before;
    let watches = api.open_watches_on("services") + api.open_watches_on("endpointslices");
    let rss: Vec<f64> = hubs
        .iter()
        .map(|h| rss_kib(h.pid()) as f64 / 1024.0)
        .collect();
    if mode == Mode::Leader {
        // How steady the followers' reading from the leader was.
        let lines: Vec<String> = hubs.iter().flat_map(|h| h.log()).collect();
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        println!(
            "(c) over all hubs' logs: {} watches moved, {} changes of reachable leaders, {} requests passed over by the leader",
            count("watching again"),
            count("leader hubs reachable"),
            count("asking the cloud")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(hubs);
    let mut d = delays.lock().unwrap().clone();
    d.sort_unstable();
    let pct = |p: f64| {
        if d.is_empty() {
            f64::NAN
        } else {
            d[((d.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    Row {
        hubs: n,
        mode: mode.name(),
        watches,
        bytes_per_minute: bytes as f64 * 60.0 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        events: d.len(),
        rss_mib: rss.iter().cloned().fold(0.0, f64::max),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("multiplexer: bench");
        return;
    }
    let ns: Vec<usize> = std::env::var("YURTHUB_BENCH_HUBS")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let picked = std::env::var("YURTHUB_BENCH_MODES").unwrap_or_else(|_| "a,b,c".into());
    let modes: Vec<Mode> = [
        ("a", Mode::NoSharing),
        ("b", Mode::Multiplexer),
        ("c", Mode::Leader),
    ]
    .into_iter()
    .filter(|(name, _)| picked.split(',').any(|p| p.trim() == *name))
    .map(|(_, m)| m)
    .collect();
    let seconds = std::env::var("YURTHUB_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!(
        "{SERVICES} Services and {SERVICES} EndpointSlices, {CHANGES_PER_SECOND} changes/s, {seconds} s measured; 5 client watches per hub; hub {}",
        hub_binary()
    );
    println!(
        "| hubs | mode | watches at the apiserver | apiserver bytes/min | delay p50 | delay p99 | events seen | max RSS per hub |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &ns {
        for mode in modes.iter().copied() {
            let r = run(n, mode, seconds);
            println!(
                "| {} | {} | {} | {:.1} MB | {:.1} ms | {:.1} ms | {} | {:.1} MiB |",
                r.hubs,
                r.mode,
                r.watches,
                r.bytes_per_minute / 1e6,
                r.p50_ms,
                r.p99_ms,
                r.events,
                r.rss_mib
            );
        }
    }
}

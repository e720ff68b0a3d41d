//! A real kubelet and kube-proxy (kubemark's hollow node, 1.36) with one pod, against a real
//! kube-apiserver 1.36 (`testapi::envtest`), through the hub and then directly (issue 16,
//! bench b): the bytes on the link to the apiserver, counted by a relay in front of it
//! (`testapi::Middlebox`), over a window of steady state; measured, never asserted.
//!
//! Both runs are the same node with the same identity (the hub's node certificate, which
//! the hub uses for its clients too). Through the hub, it also prints what each request of
//! the node pulled (the hub's traffic counters) and a tally of the hub's answers. `YURTHUB_BENCH_SECONDS` sets the window (600);
//! `YURTHUB_BIN=<path>` measures another build. Without the Kubernetes binaries
//! (`../shared/envtest`, or `YURTHUB_KUBE_ASSETS`) it prints SKIPPED.
//!
//! Run with `cargo bench --bench hollow`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use testapi::envtest::{self, Assets, ControlPlane, Hollow};
use testapi::{Hub, Middlebox, TempDir};

const NODE: &str = "hollow-bench";

fn bin() -> String {
    std::env::var("YURTHUB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_yurthub").to_string())
}

/// One run's figures.
struct Run {
    up: u64,
    down: u64,
    secs: f64,
    requests: BTreeMap<String, u64>,
}

/// Waits `settle`, then counts the relay's bytes and the hollow node's requests for `window`.
fn measure(relay: &Middlebox, hollows: &[&Hollow], settle: Duration, window: Duration) -> Run {
    std::thread::sleep(settle);
    let (up0, down0) = relay.bytes();
    let from: Vec<usize> = hollows.iter().map(|h| h.log_len()).collect();
    let started = std::time::Instant::now();
    std::thread::sleep(window);
    let (up1, down1) = relay.bytes();
    let mut requests = BTreeMap::new();
    for (h, from) in hollows.iter().zip(from) {
        for (verb, path, _) in h.responses_since(from) {
            *requests
                .entry(testapi::request_kind(&verb, &path))
                .or_default() += 1;
        }
    }
    Run {
        up: up1 - up0,
        down: down1 - down0,
        secs: started.elapsed().as_secs_f64(),
        requests,
    }
}

fn report(name: &str, r: &Run) {
    let per = |b: u64, period: f64| b as f64 / r.secs * period;
    println!(
        "{name}: {} B up, {} B down in {:.0} s; {:.0} KB an hour, {:.2} MB a day",
        r.up,
        r.down,
        r.secs,
        per(r.up + r.down, 3600.0) / 1e3,
        per(r.up + r.down, 86400.0) / 1e6
    );
    for (k, n) in &r.requests {
        println!("  {k:<45} {n}");
    }
}

fn main() {
    let Some(assets) = Assets::find() else {
        println!("{}", envtest::SKIPPED);
        return;
    };
    if !assets.has("kubemark") {
        println!("SKIPPED: no kubemark among the Kubernetes binaries");
        return;
    }
    let window = Duration::from_secs(
        std::env::var("YURTHUB_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let settle = Duration::from_secs(30);
    println!("binary: {}", bin());
    let cp = ControlPlane::start(assets);
    cp.install_openyurt();
    let admin = cp.admin();

    // Through the hub: kubelet and kube-proxy on its plain port, the hub to the relay.
    let relay = Middlebox::start(cp.addr());
    let (root, cache) = (TempDir::new("bench-root"), TempDir::new("bench-cache"));
    let mut args = cp.join_args(NODE, root.path(), cache.path(), 0);
    args[0] = format!("--server-addr={}", relay.url());
    // Each request a line (debug): the tally below says where the bytes go.
    args.push("--v=4".into());
    let hub = Hub::spawn(&bin(), &args, &[]);
    hub.wait_ready(Duration::from_secs(60));
    let server = format!("http://{}", hub.proxy_addr);
    let kubelet = Hollow::start(cp.assets(), "kubelet", NODE, &server).expect("kubemark");
    let proxy = Hollow::start(cp.assets(), "proxy", NODE, &server).expect("kubemark");
    admin.create(
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": NODE,
                "containers": [{"name": "nginx", "image": "registry.example/nginx:1.27"}]}}),
    );
    admin.wait_for(
        "/api/v1/namespaces/default/pods/web",
        Duration::from_secs(120),
        |p| p["status"]["phase"] == "Running",
    );
    let through = measure(&relay, &[&kubelet, &proxy], settle, window);
    // What each of the node's requests pulled through the hub, by the hub's own count.
    let metrics = testapi::client::get(hub.admin_addr, "/metrics", "curl/8").text();
    let pulled: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("node_yurthub_proxy_traffic_collector{"))
        .collect();
    // kubelet's own log of its requests through the hub, for a closer look.
    let kept = std::env::temp_dir().join("hollow-kubelet-through-hub.log");
    if std::fs::write(&kept, kubelet.log()).is_ok() {
        println!("kubelet's log (through the hub): {}", kept.display());
    }
    drop((kubelet, proxy));

    // Directly: the same node, its kubeconfig naming the relay and the hub's certificate.
    let relay = Middlebox::start(cp.addr());
    let ca = root.path().join("bench-ca.crt");
    std::fs::write(&ca, cp.ca_pem()).expect("write the CA");
    let pem = root.path().join("pki/yurthub-current.pem");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: cloud\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: node\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: cloud\n  context:\n    cluster: cloud\n    user: node\ncurrent-context: cloud\n",
        relay.url(),
        ca.display(),
        pem.display(),
        pem.display()
    );
    let kubelet = Hollow::start_with(cp.assets(), "kubelet", NODE, &kubeconfig).expect("kubemark");
    let proxy = Hollow::start_with(cp.assets(), "proxy", NODE, &kubeconfig).expect("kubemark");
    envtest::wait_for(
        "the direct kubelet's first node status",
        Duration::from_secs(60),
        || {
            (kubelet
                .responses_since(0)
                .iter()
                .any(|(v, p, s)| v == "PATCH" && p.contains("/status") && *s == 200))
            .then_some(())
        },
    );
    let direct = measure(&relay, &[&kubelet, &proxy], settle, window);

    report("through the hub", &through);
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for line in hub.log() {
        if let Some((_, rest)) = line.split_once("[yurthub::proxy] ") {
            if let Some((what, _)) = rest.rsplit_once(" in ") {
                *tally.entry(what.to_string()).or_default() += 1;
            }
        }
    }
    println!("  the hub's answers (whole run):");
    for (k, n) in tally {
        println!("    {n:>5} {k}");
    }
    println!("  bytes of the node's requests through the hub (since it started):");
    for l in pulled {
        println!("    {l}");
    }
    report("directly", &direct);
    println!(
        "through the hub / directly: {:.2}",
        (through.up + through.down) as f64
            / through.secs
            / ((direct.up + direct.down) as f64 / direct.secs)
    );
}

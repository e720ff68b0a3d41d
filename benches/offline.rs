//! Offline figures, printed and compared with DESIGN.md §3 (never asserted): an offline LIST
//! of 1,000 cached pods, and process start to serving from the cache with the cloud down.
//!
//! Run with `cargo bench --bench offline`.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use testapi::client::{get, Session};
use testapi::{pod, Cluster, Fault, Hub, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/bench";
const PODS: usize = 1000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The resident set of a process (VmRSS), in KiB; 0 when unreadable (e.g. under an emulator
/// the figure would be the emulator's).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let c = Cluster::new();
    for i in 0..PODS {
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("pod-{i:04}"), NODE),
        );
    }
    let list_path = "/api/v1/namespaces/default/pods";
    {
        let hub = c.start_hub(BIN, &[]);
        let r = get(hub.proxy_addr, list_path, KUBELET);
        assert_eq!(r.json()["items"].as_array().unwrap().len(), PODS);
        let view = c.cache.path().join("_internal/views/kubelet/pods.v1.core");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_dir(&view).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "the list was not cached");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    c.api.set_fault(Fault::Refuse);

    // Start to serving: spawn, then poll until a cached pod is answered.
    let mut starts = Vec::new();
    for _ in 0..15 {
        let port = free_port();
        let mut args = c.hub_args(&[&c.api]);
        args.retain(|a| !a.starts_with("--proxy-port") && !a.starts_with("--v="));
        args.push(format!("--proxy-port={port}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Instant::now();
        let mut child = testapi::command(BIN)
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if let Ok(r) = testapi::client::request(
                addr,
                "GET",
                "/api/v1/namespaces/default/pods/pod-0001",
                &[("User-Agent", KUBELET)],
                b"",
            ) {
                if r.status == 200 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
            assert!(t.elapsed() < Duration::from_secs(10), "never served");
        }
        starts.push(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    starts.sort();

    // Offline LIST of every cached pod, on a kept-alive connection.
    let hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    let rss_idle = rss_kib(hub.pid());
    let tcp = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
    let mut s = Session::new(tcp);
    let mut lists = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let r = s.get(list_path, KUBELET).unwrap();
        let d = t.elapsed();
        assert_eq!(r.status, 200);
        if i == 0 {
            assert_eq!(r.json()["items"].as_array().unwrap().len(), PODS);
        }
        lists.push(d);
    }
    lists.sort();
    let watches: Vec<_> = (0..30)
        .map(|_| {
            testapi::client::open(
                hub.proxy_addr,
                "GET",
                "/api/v1/namespaces/default/pods?watch=true",
                &[("User-Agent", KUBELET)],
                b"",
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let rss_busy = rss_kib(hub.pid());
    drop(watches);

    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let list_p50 = ms(lists[lists.len() / 2]);
    let start_p50 = ms(starts[starts.len() / 2]);
    println!("figure                                          value      budget    verdict");
    println!(
        "offline LIST of {PODS} pods, p50 (ms)             {list_p50:>7.1}    <= 25     {}",
        verdict(list_p50 <= 25.0)
    );
    println!(
        "start to serving from cache, cloud down, p50 (ms) {start_p50:>5.1}    <= 100    {}",
        verdict(start_p50 <= 100.0)
    );
    let (idle, busy) = (rss_idle as f64 / 1024.0, rss_busy as f64 / 1024.0);
    println!(
        "RSS idle, offline, certs loaded (MiB)              {idle:>5.1}    <= 4      {}",
        verdict(idle <= 4.0)
    );
    println!(
        "RSS, {PODS} pods cached, 30 open watches (MiB)     {busy:>5.1}    <= 12     {}",
        verdict(busy <= 12.0)
    );
}

//! Offline figures, printed and compared with DESIGN.md §3 (never asserted): the bytes a
//! kubelet-like start-up pulls from the cloud with and without gzip, an offline LIST of 1,000
//! cached pods, cached GETs per second offline, process start to serving from the cache with
//! the cloud down, RSS idle and with 2,000 cached objects and 30 open watches, and the
//! stripped binary sizes that are built.
//!
//! Run with `cargo bench --bench offline`.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use testapi::client::{get, Session};
use testapi::{pod, rss_anon_kib, rss_kib, Cluster, Fault, Hub, NODE};

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

/// The apiserver's body-bytes counter once it has stopped moving: it counts a response when
/// its last write returns, which may be after the client has read it.
fn settled_bytes(c: &Cluster) -> u64 {
    let mut last = c.api.body_bytes_sent();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = c.api.body_bytes_sent();
        if now == last {
            return now;
        }
        last = now;
    }
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
    for i in 0..PODS {
        c.api.create(
            "/api/v1/namespaces/default/configmaps",
            serde_json::json!({"metadata": {"name": format!("cm-{i:04}")}, "data": {"config.yaml": format!("key: value-{i}\nother: {}\n", "x".repeat(200))}}),
        );
    }
    c.api.create(
        "/api/v1/nodes",
        serde_json::json!({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}),
    );
    for i in 0..50 {
        c.api.create(
            "/api/v1/namespaces/default/services",
            serde_json::json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"clusterIP": format!("10.96.0.{}", i + 10), "ports": [{"port": 80}]}}),
        );
    }
    let list_path = "/api/v1/namespaces/default/pods";
    // What a kubelet-like start-up pulls from the cloud: its pods, its node, services and
    // configmaps (the watches that follow start at the lists' resourceVersion).
    let startup = [
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
        "/api/v1/nodes/node-1",
        "/api/v1/services",
        "/api/v1/configmaps",
    ];
    let (pulled_gzip, pulled_plain);
    {
        let hub = c.start_hub(BIN, &[]);
        let before = c.api.body_bytes_sent();
        for p in startup {
            assert_eq!(get(hub.proxy_addr, p, KUBELET).status, 200, "{p}");
        }
        pulled_gzip = settled_bytes(&c) - before;
        let client_pem = c.pki.client_pem("system:node:node-1", &["system:nodes"]);
        let mut direct = Session::new(
            testapi::client::tls_connect(c.api.addr(), &c.pki.ca_pem, &client_pem).unwrap(),
        );
        let before = c.api.body_bytes_sent();
        for p in startup {
            assert_eq!(direct.get(p, KUBELET).unwrap().status, 200, "{p}");
        }
        pulled_plain = settled_bytes(&c) - before;
        let r = get(hub.proxy_addr, list_path, KUBELET);
        assert_eq!(r.json()["items"].as_array().unwrap().len(), PODS);
        let view = c.cache.path().join("_internal/views/kubelet/pods.v1.core");
        let cms = c.cache.path().join("kubelet/configmaps.v1.core/default");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_dir(&view).map(|d| d.count()).unwrap_or(0) < 2
            || std::fs::read_dir(&cms).map(|d| d.count()).unwrap_or(0) < PODS
        {
            assert!(Instant::now() < deadline, "the lists were not cached");
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
    // The shipped build is static musl: measured too when it is built (cross/build.sh
    // x86_64-unknown-linux-musl), since a glibc build also maps the shared libc.
    let musl = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/yurthub");
    let rss_musl = musl.is_file().then(|| {
        let hub = Hub::start(&musl.display().to_string(), &c.hub_args(&[&c.api]));
        std::thread::sleep(Duration::from_millis(300));
        let anon = rss_anon_kib(hub.pid());
        (rss_kib(hub.pid()), anon)
    });
    let hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    std::thread::sleep(Duration::from_millis(300));
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
    // Cached GETs per second offline: one kept-alive client, then four at once.
    let one = "/api/v1/namespaces/default/pods/pod-0001";
    let rate = |clients: usize| {
        let window = Duration::from_secs(2);
        let counts: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        let tcp = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
                        tcp.set_nodelay(true).unwrap();
                        let mut s = Session::new(tcp);
                        let t = Instant::now();
                        let mut n = 0;
                        while t.elapsed() < window {
                            assert_eq!(s.get(one, KUBELET).unwrap().status, 200);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        counts.iter().sum::<usize>() as f64 / window.as_secs_f64()
    };
    let (rate1, rate4) = (rate(1), rate(4));
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
    match rss_musl {
        Some((rss, anon)) => {
            let mib = rss as f64 / 1024.0;
            println!(
                "RSS idle, offline, certs loaded, static musl (MiB) {mib:>5.1}    <= 4      {} (heap and stacks {:.1}, this build's glibc binary {idle:.1})",
                verdict(mib <= 4.0),
                anon as f64 / 1024.0
            );
        }
        None => println!(
            "RSS idle, offline, certs loaded, glibc build (MiB) {idle:>5.1}    <= 4      {} (build x86_64-unknown-linux-musl for the shipped figure)",
            verdict(idle <= 4.0)
        ),
    }
    println!(
        "RSS, {} objects cached, 30 open watches (MiB)    {busy:>5.1}    <= 12     {}",
        2 * PODS,
        verdict(busy <= 12.0)
    );
    println!(
        "cached GETs per second offline, 1 / 4 clients     {rate1:>6.0} / {rate4:<6.0} (one serving thread)"
    );
    println!(
        "bytes pulled at a kubelet-like start-up            {pulled_gzip:>8} with gzip (through the hub), {pulled_plain} without ({:.0} % saved)",
        100.0 * (1.0 - pulled_gzip as f64 / pulled_plain.max(1) as f64)
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    for (triple, budget) in [
        ("aarch64-unknown-linux-musl", Some(2.5)),
        ("armv7-unknown-linux-musleabihf", None),
        ("x86_64-unknown-linux-musl", None),
    ] {
        match std::fs::metadata(root.join(triple).join("release/yurthub")) {
            Ok(m) => {
                let mib = m.len() as f64 / 1024.0 / 1024.0;
                match budget {
                    Some(b) => println!(
                        "stripped binary {triple} (MiB)   {mib:>5.2}    <= {b}    {}",
                        verdict(mib <= b)
                    ),
                    None => println!("stripped binary {triple} (MiB) {mib:>5.2}"),
                }
            }
            Err(_) => println!("stripped binary {triple}: not built (cross/build.sh {triple})"),
        }
    }
}

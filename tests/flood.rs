//! Connection floods: 2,000 idle connections and 200 slowloris clients (a byte a second) do
//! not stop normal clients from being served, cost bounded memory, and are closed after
//! `--idle-connection-timeout` and `--request-head-timeout`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testapi::client::get;
use testapi::{pod, rss_kib, Cluster, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";
const IDLE: usize = 2000;
const SLOW: usize = 200;

/// What the hub did with a connection it should have closed: the bytes it sent, or an error.
fn outcome(s: &mut TcpStream) -> Result<Vec<u8>, std::io::ErrorKind> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        // Bytes sent after the hub closed make it reset: a close all the same.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
        Err(e) => Err(e.kind()),
    }
}

#[test]
fn idle_and_slowloris_floods_are_bounded_and_cut_off_while_normal_clients_are_served() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("web-1", NODE));
    let hub = c.start_hub(
        BIN,
        &["--idle-connection-timeout=4s", "--request-head-timeout=3s"],
    );
    let path = "/api/v1/namespaces/default/pods/web-1";
    assert_eq!(get(hub.proxy_addr, path, KUBELET).status, 200);
    let rss_before = rss_kib(hub.pid());

    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(hub.proxy_addr).expect("connect"))
        .collect();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(hub.proxy_addr).expect("connect"))
        .collect();
    let head =
        b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nUser-Agent: kubelet/1\r\n\r\n";
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
    let dripping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut writers = writers;
            for byte in head.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                for w in &mut writers {
                    let _ = w.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // Normal clients, each on a new connection behind the flood, are served.
    for _ in 0..20 {
        let r = get(hub.proxy_addr, path, KUBELET);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["metadata"]["name"], "web-1");
    }
    let rss_flood = rss_kib(hub.pid());
    eprintln!(
        "flood: {IDLE} idle + {SLOW} slow connections opened in {:?}; hub RSS {rss_before} KiB before, {rss_flood} KiB with them (+{} KiB, {} bytes per connection)",
        opened.elapsed(),
        rss_flood.saturating_sub(rss_before),
        rss_flood.saturating_sub(rss_before) * 1024 / (IDLE + SLOW) as u64
    );
    if std::env::var_os("YURTHUB_TEST_RUNNER").is_none() {
        // Natively the figure is the hub's own (under an emulator it is the emulator's).
        assert!(
            rss_flood.saturating_sub(rss_before) < 32 * 1024,
            "memory grew by {} KiB for {} connections",
            rss_flood - rss_before,
            IDLE + SLOW
        );
    }

    // The slowloris clients are cut off by the head timeout with a 408...
    for s in &mut slow {
        let got = outcome(s).expect("the hub closes a slowloris connection");
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    stop.store(true, Ordering::Relaxed);
    // ...and the idle ones by the idle timeout, silently.
    for s in &mut idle {
        assert_eq!(outcome(s), Ok(Vec::new()), "an idle connection left open");
    }
    let _ = dripping.join();
    assert_eq!(get(hub.proxy_addr, path, KUBELET).status, 200);
    eprintln!(
        "flood: every connection closed by {:?}; hub RSS {} KiB after",
        opened.elapsed(),
        rss_kib(hub.pid())
    );
}

//! What systemd sees of the hub: the notification protocol (READY, WATCHDOG, STOPPING) over a
//! socket the test binds, and a clean exit on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;
use testapi::{Cluster, Hub, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");

#[test]
fn the_hub_speaks_sd_notify_and_exits_cleanly_on_sigterm() {
    let c = Cluster::new();
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut hub = Hub::start_with_env(
        BIN,
        &c.hub_args(&[&c.api]),
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    while seen.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 2
        || !seen.contains(&"READY=1".to_string())
    {
        seen.push(recv());
    }
    assert_eq!(seen[0], "READY=1", "ready comes first: {seen:?}");
    hub.signal("TERM");
    loop {
        let m = recv();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert_eq!(hub.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn sigterm_during_twenty_watches_exits_zero_within_five_seconds_leaving_no_temp_files() {
    let c = Cluster::new();
    for i in 0..5 {
        c.api.create(
            "/api/v1/namespaces/default/pods",
            testapi::pod(&format!("p{i}"), testapi::NODE),
        );
    }
    let mut hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    let kubelet = "kubelet/v1.32.0 (linux/arm64)";
    let rv = c.api.resource_version();
    let watches: Vec<_> = (0..20)
        .map(|_| {
            testapi::client::watch(
                hub.proxy_addr,
                &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
                kubelet,
            )
        })
        .collect();
    // Keep the writer busy while the signal arrives.
    for i in 0..50 {
        let path = format!("/api/v1/namespaces/default/pods/p{}", i % 5);
        let mut p = c.api.get(&path).unwrap();
        p["metadata"]["labels"] = serde_json::json!({"n": i.to_string()});
        c.api.update(&path, p);
    }
    let t = std::time::Instant::now();
    hub.signal("TERM");
    assert_eq!(
        hub.wait_exit(Duration::from_secs(5)),
        Some(0),
        "exit within 5 s"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(watches);
    let mut stack = vec![c.cache.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "temporary file left: {}",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(hub.log().iter().any(|l| l.contains("stopped")));
}

#[test]
fn sigusr1_logs_a_state_dump() {
    let c = Cluster::new();
    let hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    hub.signal("USR1");
    hub.wait_for_log(
        "state: node_yurthub_server_healthy_status",
        Duration::from_secs(10),
    );
}

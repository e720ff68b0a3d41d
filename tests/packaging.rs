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

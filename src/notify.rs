//! The systemd notification protocol (`sd_notify(3)`): one datagram per state change to the
//! socket named by `$NOTIFY_SOCKET`. The hub sends `READY=1` once it serves, `STOPPING=1` when
//! it shuts down, and `WATCHDOG=1` at half of `$WATCHDOG_USEC` while it runs.
//!
//! ```no_run
//! yurthub::notify::send("READY=1");
//! ```

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to the service manager; does nothing outside systemd. Failures are logged,
/// never fatal: the hub serves whether or not anyone listens.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: the name after '@' (Linux only).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = result {
        log::warn!("notifying the service manager ({state}): {e}");
    }
}

/// The watchdog period systemd asks for: half of `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is
/// unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pets the watchdog forever (run it as a task when [`watchdog_interval`] is some).
pub async fn watchdog(every: Duration) {
    loop {
        send("WATCHDOG=1");
        async_io::Timer::after(every).await;
    }
}

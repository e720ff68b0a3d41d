//! The log backend: one line per record on stderr,
//! `2026-11-30T19:47:09.298Z INFO  [yurthub::certs] message`, in UTC.
//!
//! A write that fails (the log pipe closed, as with `yurthub … | head`) loses that line, never
//! the process: `eprintln!`-style writes panic on a closed pipe, and with `panic = "abort"`
//! that would take the hub down and skip its clean-up.
//!
//! ```
//! yurthub::app::logging::init(log::LevelFilter::Info);
//! log::info!("cache: ready");
//! ```

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Logs at `level` and above from here on (rustls, polling and async-io at warnings only).
/// A second call changes nothing.
pub fn init(level: log::LevelFilter) {
    if log::set_logger(Box::leak(Box::new(StderrLog { level }))).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes each record as one line on stderr.
struct StderrLog {
    level: log::LevelFilter,
}

impl StderrLog {
    /// rustls logs every handshake detail at debug and the reactor its wake-ups: only the
    /// hub's own lines follow `--v`. rustls' warnings too are left out: each ("peer closed
    /// connection without sending TLS close_notify" when an apiserver goes away) comes back to
    /// the hub as an error, which says it once with what the hub was doing.
    fn max_for(&self, target: &str) -> log::LevelFilter {
        if target.starts_with("rustls") {
            self.level.min(log::LevelFilter::Error)
        } else if ["polling", "async_io"]
            .iter()
            .any(|q| target.starts_with(q))
        {
            self.level.min(log::LevelFilter::Warn)
        } else {
            self.level
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.max_for(m.target())
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = crate::kube::time::format(now.as_secs(), None);
        let stamp = stamp.trim_end_matches('Z');
        let _ = writeln!(
            std::io::stderr().lock(),
            "{stamp}.{:03}Z {:<5} [{}] {}",
            now.subsec_millis(),
            r.level(),
            r.target(),
            r.args()
        );
    }

    fn flush(&self) {}
}

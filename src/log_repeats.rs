//! Repeated log lines, rate-limited: the first line of a kind is logged at once, its repeats at
//! most once a window, each saying how many like it were left out since.
//!
//! A hub that cannot reach the cloud fails the same way for every request and every retry; the
//! state change has a line of its own ("server … is now unhealthy"), so what repeats is noise
//! that buries it. A kind is a key: the failing server and the cause, so a new cause is news
//! and is logged at once.
//!
//! ```
//! use std::time::Duration;
//! use yurthub::log_repeats::Repeats;
//!
//! static UNREACHABLE: Repeats = Repeats::new(Duration::from_secs(60));
//! let mut logged = Vec::new();
//! for _ in 0..3 {
//!     if let Some(more) = UNREACHABLE.allow("https://10.0.0.1:6443: connection refused") {
//!         logged.push(format!("upstream unreachable{more}"));
//!     }
//! }
//! assert_eq!(logged, ["upstream unreachable"]);
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Kinds remembered at most; past it the one logged longest ago is forgotten (and so is logged
/// at once if it comes again). Keys come from bounded sets (servers, causes), so this is slack.
const MAX_KINDS: usize = 64;

/// The kinds of line seen, and when each was last logged.
pub struct Repeats {
    every: Duration,
    seen: Mutex<Vec<Seen>>,
}

struct Seen {
    key: String,
    logged: Instant,
    left_out: u64,
}

impl Repeats {
    /// Lines of one kind are logged at most once per `every`.
    pub const fn new(every: Duration) -> Repeats {
        Repeats {
            every,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Whether the line of kind `key` is to be logged now: the first time, and then once
    /// `every` has passed since it last was. `Some` says how many were left out meanwhile.
    pub fn allow(&self, key: &str) -> Option<LeftOut> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.iter_mut().find(|s| s.key == key) {
            if now.duration_since(s.logged) < self.every {
                s.left_out += 1;
                return None;
            }
            let count = std::mem::take(&mut s.left_out);
            s.logged = now;
            return Some(LeftOut {
                count,
                window: self.every,
            });
        }
        if seen.len() >= MAX_KINDS {
            if let Some(oldest) = (0..seen.len()).min_by_key(|&i| seen[i].logged) {
                seen.swap_remove(oldest);
            }
        }
        seen.push(Seen {
            key: key.to_string(),
            logged: now,
            left_out: 0,
        });
        Some(LeftOut {
            count: 0,
            window: self.every,
        })
    }

    /// Forgets the kinds whose key starts with `prefix`: after a state change (a success
    /// between failures) the next failure is news again.
    pub fn forget(&self, prefix: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !s.key.starts_with(prefix));
    }
}

/// How many lines of a kind were left out since the last one logged: displayed as nothing, or
/// as ` (and N more like it in Ws)` to end the line that is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// Lines left out.
    pub count: u64,
    window: Duration,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            0 => Ok(()),
            n => write!(
                f,
                " (and {n} more like it, logged at most once every {}s)",
                self.window.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_logged_once_per_window_with_the_count_left_out() {
        let r = Repeats::new(Duration::from_millis(50));
        assert_eq!(r.allow("a").map(|l| l.count), Some(0));
        assert!(r.allow("a").is_none());
        assert!(r.allow("a").is_none());
        // Another kind is news.
        assert_eq!(r.allow("b").map(|l| l.count), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        let again = r.allow("a").unwrap();
        assert_eq!(again.count, 2);
        assert_eq!(
            again.to_string(),
            " (and 2 more like it, logged at most once every 0s)"
        );
        assert!(r.allow("a").is_none());
        r.forget("a");
        assert_eq!(r.allow("a").map(|l| l.count), Some(0));
    }

    #[test]
    fn kinds_are_bounded() {
        let r = Repeats::new(Duration::from_secs(60));
        for i in 0..(MAX_KINDS * 3) {
            assert!(r.allow(&i.to_string()).is_some());
        }
        assert_eq!(r.seen.lock().unwrap().len(), MAX_KINDS);
    }
}

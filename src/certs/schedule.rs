//! When to renew, and how long to wait after a failure.

use std::time::{Duration, SystemTime};

use super::x509::Certificate;
use super::CertError;
use crate::log_repeats::Repeats;

/// A random point between 70 % and 90 % of the validity (client-go's rotation deadline).
pub(super) fn jittered_deadline(info: &Certificate) -> SystemTime {
    let mut b = [0u8; 4];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map(|()| f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
        .unwrap_or(0.5);
    info.at_fraction(0.7 + 0.2 * r)
}

/// Certificate attempts that failed, by what and why.
static FAILURES: Repeats = Repeats::new(Duration::from_secs(600));

/// Back-off between failed attempts: 2 s doubling to 32 s, then every 32 s (upstream's).
pub(super) struct Backoff(pub(super) u32);

impl Backoff {
    pub(super) fn next(&mut self) -> Duration {
        let d = Duration::from_secs(2u64 << self.0.min(4));
        self.0 = self.0.saturating_add(1);
        d
    }

    /// Logs a failed attempt at `what` and says when to try again. The first failure after
    /// a success is logged at once, later ones every 10 minutes with how many were left out
    /// (keyed by `what` alone: a cause names a new CSR at each attempt).
    pub(super) fn failed(&mut self, what: &str, e: &CertError, now: SystemTime) -> SystemTime {
        if self.0 == 0 {
            FAILURES.forget(what);
        }
        let d = self.next();
        match FAILURES.allow(what) {
            Some(more) => log::warn!(
                "{what} not obtained: {e}; next attempt in {}s{more}",
                d.as_secs()
            ),
            None => log::debug!("{what} not obtained: {e}; next attempt in {}s", d.as_secs()),
        }
        now + d
    }
}

/// Sleeps until `at`, or until `wake` fires.
pub(super) async fn wait_until(at: SystemTime, wake: event_listener::EventListener) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    smol::future::or(
        async {
            async_io::Timer::after(wait).await;
        },
        wake,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn backoff_doubles_from_2_to_32_seconds_and_stays() {
        let mut b = Backoff(0);
        let secs: Vec<u64> = (0..7).map(|_| b.next().as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 32, 32]);
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let again = b.failed("the client certificate", &CertError::BadToken, now);
        assert_eq!(again, now + Duration::from_secs(32));
    }

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let info = Certificate {
            not_before,
            not_after: not_before + Duration::from_secs(1000),
            common_name: String::new(),
            organizations: Vec::new(),
            ip_addresses: Vec::new(),
            spki: Vec::new(),
        };
        for _ in 0..50 {
            let at = jittered_deadline(&info).duration_since(not_before).unwrap();
            assert!((700..=900).contains(&at.as_secs()), "{at:?}");
        }
    }
}

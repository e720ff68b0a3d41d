//! Kubernetes timestamps: `metav1.Time` (RFC 3339, seconds) and `metav1.MicroTime`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `secs` since the epoch as `2026-11-29T10:12:42Z`, or with `micros` as
/// `2026-11-29T10:12:42.123456Z`.
pub fn format(secs: u64, micros: Option<u32>) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let base = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    match micros {
        Some(us) => format!("{base}.{us:06}Z"),
        None => format!("{base}Z"),
    }
}

/// `t` as `2026-11-29T10:12:42Z` (whole seconds; times before the epoch as the epoch).
pub fn rfc3339(t: SystemTime) -> String {
    format(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        None,
    )
}

/// The seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `metav1.MicroTime` of now.
pub fn micro_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format(d.as_secs(), Some(d.subsec_micros()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_instants() {
        assert_eq!(super::format(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(super::format(1_867_219_034, None), "2029-03-03T07:57:14Z");
        assert_eq!(
            super::format(951_782_400, Some(5)),
            "2000-02-29T00:00:00.000005Z"
        );
    }
}

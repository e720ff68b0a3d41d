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

/// Seconds since the epoch of an RFC 3339 time as Kubernetes writes them
/// (`2026-11-29T10:12:42Z`, `…42.123456Z`, `…42+02:00`); `None` when it is not one.
pub fn parse(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            if o.len() != 6 || o[3] != b':' || !matches!(o[0], b'+' | b'-') {
                return None;
            }
            let hm: i64 =
                rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60;
            if o[0] == b'+' {
                hm
            } else {
                -hm
            }
        }
    };
    // Days-from-civil (H. Hinnant's algorithm), the inverse of `format`.
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86400 + hour * 3600 + min * 60 + sec - offset;
    u64::try_from(secs).ok()
}

/// A watch's timeout as Kubernetes spreads them (client-go's reflector, the apiserver for
/// watches without `timeoutSeconds`, upstream YurtHub): a random duration in [min, 2 min),
/// so that watches started together do not all end together.
pub fn watch_timeout(min: std::time::Duration) -> std::time::Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let span = min.as_millis().max(1) as u64;
    min + std::time::Duration::from_millis(nanos % span)
}

/// Parses a duration as Go's `time.ParseDuration` does (`90s`, `1h30m`, `1.5h`, `300ms`,
/// `0`, up to Go's 292 years): what Kubernetes and OpenYurt write in annotations. A negative
/// duration (other than `-0`) is refused: no annotation the hub reads means one.
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit..];
        nanos += n * scale;
    }
    if nanos == 0.0 {
        return Some(std::time::Duration::ZERO);
    }
    (!negative && nanos.is_finite() && nanos <= i64::MAX as f64)
        .then(|| std::time::Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_durations() {
        use std::time::Duration;
        let d = super::parse_go_duration;
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("90s"), Some(Duration::from_secs(90)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d("2\u{b5}s"), Some(Duration::from_micros(2)));
        assert_eq!(d("-0"), Some(Duration::ZERO));
        assert_eq!(d("+0"), Some(Duration::ZERO));
        assert_eq!(d("2562047h"), Some(Duration::from_secs(2_562_047 * 3600)));
        for bad in [
            "", "10", "-1h", "1d", "h", "1h-30m", ".", "1..5s", "+", "2562048h",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_is_the_inverse_of_format_and_refuses_garbage() {
        for secs in [0, 951_782_400, 1_867_219_034, 1_796_000_000] {
            assert_eq!(super::parse(&super::format(secs, None)), Some(secs));
            assert_eq!(super::parse(&super::format(secs, Some(42))), Some(secs));
        }
        assert_eq!(super::parse("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(super::parse("1970-01-01T00:00:10-00:01"), Some(70));
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T10:12:42",
            "2026-11-29T10:12:42.Z",
            "x026-11-29T10:12:42Z",
            "2026-11-29T10:12:42+2:00",
            "2026-11-29T10:1é:42Z",
        ] {
            assert_eq!(super::parse(bad), None, "{bad}");
        }
    }

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

//! Just enough X.509 reading for the hub's decisions: validity, subject common name, IP
//! alternative names, and the SubjectPublicKeyInfo a CA pin hashes.
//!
//! A walk over DER tag-length-value triples; every length is checked against what is left,
//! so a truncated or hostile file gives an error, never a panic.
//!
//! ```
//! # use yurthub::certs::x509::Certificate;
//! assert!(Certificate::parse(b"\x30\x03\x02\x01\x01").is_err());
//! ```

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// What the hub reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The subject's common name (empty when absent).
    pub common_name: String,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

/// A cursor over DER elements.
pub(super) struct Der<'a>(pub(super) &'a [u8]);

impl<'a> Der<'a> {
    /// The next element: (tag, contents).
    pub(super) fn next(&mut self) -> Result<(u8, &'a [u8]), ParseError> {
        let (&tag, rest) = self.0.split_first().ok_or(ParseError("truncated"))?;
        let (&first, mut rest) = rest.split_first().ok_or(ParseError("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(ParseError("bad length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(ParseError("truncated"));
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((tag, contents))
    }

    /// The next element, which must have `tag`.
    pub(super) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], ParseError> {
        match self.next()? {
            (t, c) if t == tag => Ok(c),
            _ => Err(ParseError(what)),
        }
    }

    /// The next element with its header, as raw DER.
    pub(super) fn raw(&mut self) -> Result<&'a [u8], ParseError> {
        let before = self.0;
        self.next()?;
        Ok(&before[..before.len() - self.0.len()])
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

fn digits(s: &[u8]) -> Result<u64, ParseError> {
    s.iter().try_fold(0u64, |a, &b| {
        if b.is_ascii_digit() {
            Ok(a * 10 + u64::from(b - b'0'))
        } else {
            Err(ParseError("bad time"))
        }
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, s: &[u8]) -> Result<SystemTime, ParseError> {
    let (year, rest) = match (tag, s.len()) {
        (0x17, 13) => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return Err(ParseError("bad time")),
    };
    if rest[10] != b'Z' {
        return Err(ParseError("bad time"));
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, h, m, sec) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(ParseError("bad time"));
    }
    // Days from civil (H. Hinnant's algorithm), the inverse of kube::time::format.
    let y = year as i64 - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86400 + (h * 3600 + m * 60 + sec) as i64;
    u64::try_from(secs)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| ParseError("time before 1970"))
}

fn string(tag: u8, value: &[u8]) -> String {
    match tag {
        // UTF8String, PrintableString, IA5String, TeletexString
        0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8_lossy(value).into_owned(),
        _ => String::new(),
    }
}

impl Certificate {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Certificate, ParseError> {
        let cert = Der(der).expect(SEQUENCE, "not a certificate")?;
        let mut tbs = Der(Der(cert).expect(SEQUENCE, "no tbsCertificate")?);
        let (mut tag, mut el) = tbs.next()?;
        if tag == 0xa0 {
            // [0] version
            (tag, el) = tbs.next()?;
        }
        let _ = (tag, el); // serial number
        tbs.expect(SEQUENCE, "no signature algorithm")?;
        tbs.expect(SEQUENCE, "no issuer")?;
        let mut validity = Der(tbs.expect(SEQUENCE, "no validity")?);
        let (t1, v1) = validity.next()?;
        let (t2, v2) = validity.next()?;
        let mut out = Certificate {
            not_before: time(t1, v1)?,
            not_after: time(t2, v2)?,
            common_name: String::new(),
            organizations: Vec::new(),
            ip_addresses: Vec::new(),
            spki: Vec::new(),
        };
        let mut subject = Der(tbs.expect(SEQUENCE, "no subject")?);
        while !subject.0.is_empty() {
            let mut rdn = Der(subject.expect(SET, "bad subject")?);
            while !rdn.0.is_empty() {
                let mut atv = Der(rdn.expect(SEQUENCE, "bad subject")?);
                let oid = atv.expect(0x06, "bad subject")?;
                let (tag, value) = atv.next()?;
                if oid == OID_CN {
                    out.common_name = string(tag, value);
                } else if oid == OID_O {
                    out.organizations.push(string(tag, value));
                }
            }
        }
        out.spki = tbs.raw()?.to_vec();
        while !tbs.0.is_empty() {
            let (tag, el) = tbs.next()?;
            if tag != 0xa3 {
                continue; // issuer/subject unique IDs
            }
            let mut exts = Der(Der(el).expect(SEQUENCE, "bad extensions")?);
            while !exts.0.is_empty() {
                let mut ext = Der(exts.expect(SEQUENCE, "bad extension")?);
                let oid = ext.expect(0x06, "bad extension")?;
                let (mut tag, mut value) = ext.next()?;
                if tag == 0x01 {
                    (tag, value) = ext.next()?; // critical
                }
                if oid != OID_SAN || tag != 0x04 {
                    continue;
                }
                let mut names = Der(Der(value).expect(SEQUENCE, "bad SAN")?);
                while !names.0.is_empty() {
                    let (tag, name) = names.next()?;
                    // [7] iPAddress
                    if tag == 0x87 {
                        match name.len() {
                            4 => out.ip_addresses.push(IpAddr::from(
                                <[u8; 4]>::try_from(name).map_err(|_| ParseError("bad IP"))?,
                            )),
                            16 => out.ip_addresses.push(IpAddr::from(
                                <[u8; 16]>::try_from(name).map_err(|_| ParseError("bad IP"))?,
                            )),
                            _ => return Err(ParseError("bad IP")),
                        }
                    }
                }
            }
        }
        if out.spki.is_empty() {
            return Err(ParseError("no public key"));
        }
        Ok(out)
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The point at `fraction` (0..1) of the validity period.
    pub fn at_fraction(&self, fraction: f64) -> SystemTime {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + total.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_both_forms() {
        let t = time(0x17, b"261129093000Z").unwrap();
        assert_eq!(
            crate::kube::time::format(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), None),
            "2026-11-29T09:30:00Z"
        );
        let g = time(0x18, b"20500101000000Z").unwrap();
        assert_eq!(
            crate::kube::time::format(g.duration_since(UNIX_EPOCH).unwrap().as_secs(), None),
            "2050-01-01T00:00:00Z"
        );
        assert!(time(0x17, b"2611290930Z").is_err());
        assert!(time(0x17, b"261329093000Z").is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        // A certificate made by openssl (CN, O, SAN IP 127.0.0.1 and DNS kubernetes), cut at
        // every length: never a panic, always an error.
        let pem = "MIIB1DCCAXqgAwIBAgIUMK1qU8A5lskTtNiymARlOhuxzOkwCgYIKoZIzj0EAwIwMTEVMBMGA1UECgwMc3lzdGVtOm5vZGVzMRgwFgYDVQQDDA90ZXN0LWNsdXN0ZXItY2EwHhcNMjYxMTI5MTIxNTA2WhcNMzYxMTI2MTIxNTA2WjAxMRUwEwYDVQQKDAxzeXN0ZW06bm9kZXMxGDAWBgNVBAMMD3Rlc3QtY2x1c3Rlci1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAhvQ5xcdaX+4AMKeWeLlPffqNDTZ8h6x+pankXFhcdsDa4DWWXUWgc6ibZc7KAJb+8L/FZnBvpV80VV+Mh2W+ijcDBuMB0GA1UdDgQWBBQcJQJO+NdXnr6UKajUIKkGWA0X0jAfBgNVHSMEGDAWgBQcJQJO+NdXnr6UKajUIKkGWA0X0jAPBgNVHRMBAf8EBTADAQH/MBsGA1UdEQQUMBKHBH8AAAGCCmt1YmVybmV0ZXMwCgYIKoZIzj0EAwIDSAAwRQIgPmgcebQ1544rC7gleWf+h8wdODLFw3C5U5XmifTAO+UCIQDpGMv1GXXDP0j56B9GLq/qx6ambUKIB7z1sRV5EDJVEQ==";
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem)
            .unwrap();
        let c = Certificate::parse(&der).unwrap();
        assert_eq!(c.common_name, "test-cluster-ca");
        assert_eq!(c.organizations, vec!["system:nodes".to_string()]);
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(
            crate::kube::time::format(secs(c.not_before), None),
            "2026-11-29T12:15:06Z"
        );
        assert_eq!(
            crate::kube::time::format(secs(c.not_after), None),
            "2036-11-26T12:15:06Z"
        );
        assert_eq!(c.ip_addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert!(c.spki.starts_with(&[0x30, 0x59]));
        for n in 0..der.len() {
            assert!(Certificate::parse(&der[..n]).is_err(), "length {n}");
        }
        // Every single-byte corruption parses or fails, but never panics.
        for i in 0..der.len() {
            for bits in [0x01u8, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[i] ^= bits;
                let _ = Certificate::parse(&bad);
            }
        }
    }
}

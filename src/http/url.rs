//! Request-target decoding with the rules of Go's `net/url`, which is what kube-apiserver
//! applies before it classifies a request: the path is percent-decoded (`%2F` becomes a
//! separator), a bad escape in the path makes the request invalid, and query pairs that hold a
//! `;` or a bad escape are dropped silently.

use std::fmt;

/// Why a request target is not acceptable.
#[derive(Debug, PartialEq, Eq)]
pub enum UrlError {
    /// A `%` not followed by two hex digits in the path.
    InvalidEscape(String),
    /// Neither origin-form (`/…`), absolute-form (`http://host/…`) nor `*`.
    InvalidTarget,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::InvalidEscape(e) => write!(f, "invalid URL escape {e:?}"),
            UrlError::InvalidTarget => write!(f, "invalid URI for request"),
        }
    }
}

impl std::error::Error for UrlError {}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes `s`; `plus_is_space` is the query rule. `None` on a bad escape.
fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex)?;
                let lo = b.get(i + 2).copied().and_then(hex)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The escape text Go names in its error, e.g. `"%zz"` or `"%"`.
fn bad_escape(s: &str) -> String {
    let b = s.as_bytes();
    let is_hex = |i: usize| b.get(i).copied().and_then(hex).is_some();
    let pos = (0..b.len())
        .find(|&i| b[i] == b'%' && !(is_hex(i + 1) && is_hex(i + 2)))
        .unwrap_or(0);
    String::from_utf8_lossy(&b[pos..(pos + 3).min(b.len())]).into_owned()
}

/// Splits a request target into its decoded path and its raw query.
pub fn split_target(target: &str) -> Result<(String, &str), UrlError> {
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let raw_path = if raw_path == "*" || raw_path.starts_with('/') {
        raw_path
    } else if let Some(rest) = raw_path
        .strip_prefix("http://")
        .or_else(|| raw_path.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "",
        }
    } else {
        return Err(UrlError::InvalidTarget);
    };
    let path =
        unescape(raw_path, false).ok_or_else(|| UrlError::InvalidEscape(bad_escape(raw_path)))?;
    Ok((path, raw_query))
}

/// Decoded query parameters, in order, with repeated keys kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string the way Go's `url.ParseQuery` does, dropping the pairs it
    /// would report as errors.
    pub fn parse(raw: &str) -> Self {
        let mut pairs = Vec::new();
        for part in raw.split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(k), Some(v)) = (unescape(k, true), unescape(v, true)) {
                pairs.push((k, v));
            }
        }
        Self { pairs }
    }

    /// The first value of `key` (keys are case-sensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present, with or without a value.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_decoding_follows_go() {
        assert_eq!(split_target("/a%2Fb?x").unwrap(), ("/a/b".to_string(), "x"));
        assert_eq!(split_target("/a+b").unwrap().0, "/a+b");
        assert_eq!(
            split_target("http://h:1/api/v1?q=1").unwrap(),
            ("/api/v1".to_string(), "q=1")
        );
        assert_eq!(split_target("*").unwrap().0, "*");
        assert_eq!(
            split_target("/x%zz"),
            Err(UrlError::InvalidEscape("%zz".into()))
        );
        assert_eq!(
            split_target("/x%"),
            Err(UrlError::InvalidEscape("%".into()))
        );
        assert_eq!(split_target("x/y"), Err(UrlError::InvalidTarget));
    }

    #[test]
    fn query_drops_what_go_drops() {
        let q = Query::parse("a=1&b=%zz&c;d=2&e=x+y&f&a=2&%77atch=true");
        assert_eq!(q.get("a"), Some("1"));
        assert!(!q.contains("b"));
        assert!(!q.contains("c;d"));
        assert_eq!(q.get("e"), Some("x y"));
        assert_eq!(q.get("f"), Some(""));
        assert_eq!(q.get("watch"), Some("true"));
    }
}

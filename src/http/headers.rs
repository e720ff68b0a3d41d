//! An ordered header list with case-insensitive look-ups.

use std::fmt;

/// Header fields in arrival order. Names keep their spelling on the wire; every look-up ignores
/// case, as RFC 9110 requires.
///
/// Every name and value lives in one buffer: a head costs two allocations, not two per field
/// (the proxy parses, rewrites and writes two heads per request).
#[derive(Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    fields: Vec<Field>,
}

/// Where one field's name and value sit in [`Headers::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    /// [`key`] of the name: a look-up compares names only where keys agree.
    key: u32,
    start: usize,
    name_len: usize,
    value_len: usize,
}

/// A name's length and first and last letters, folded to lower case: computed in constant
/// time, and different for almost any two names a head carries.
fn key(name: &[u8]) -> u32 {
    let fold = |b: Option<&u8>| u32::from(b.map_or(0, u8::to_ascii_lowercase));
    ((name.len() as u32) << 16) | (fold(name.first()) << 8) | fold(name.last())
}

/// Fields that describe one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

impl Headers {
    /// Removes the hop-by-hop fields (RFC 9110 §7.6.1: `Connection`, the names it lists,
    /// `Transfer-Encoding`, `Upgrade`, …), which belong to one connection and must not be
    /// forwarded; `keep_upgrade` keeps `Connection` and `Upgrade` for a tunnelled upgrade.
    pub fn strip_hop_by_hop(&mut self, keep_upgrade: bool) {
        // The names `Connection` lists are hop-by-hop too; most messages list none but `close`
        // or `keep-alive`, and then nothing is allocated.
        let listed: Vec<Vec<u8>> = self
            .get_all("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"keep-alive")
            })
            .map(<[u8]>::to_vec)
            .collect();
        // One pass over the fields, not one per name.
        self.remove_where(|name| {
            let hop = HOP_BY_HOP
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
                || listed.iter().any(|n| name.eq_ignore_ascii_case(n));
            let kept = keep_upgrade
                && (name.eq_ignore_ascii_case(b"connection")
                    || name.eq_ignore_ascii_case(b"upgrade"));
            hop && !kept
        });
    }

    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `fields` fields of `bytes` bytes in all (names and
    /// values), plus some for fields added later.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes + 128),
            fields: Vec::with_capacity(fields + 4),
        }
    }

    fn name_bytes(&self, f: &Field) -> &[u8] {
        &self.bytes[f.start..f.start + f.name_len]
    }

    fn name(&self, f: &Field) -> &str {
        // Only `&str` names are pushed, and a field is split at their end.
        std::str::from_utf8(self.name_bytes(f)).unwrap_or("")
    }

    fn is(&self, f: &Field, key: u32, name: &str) -> bool {
        f.key == key && self.name_bytes(f).eq_ignore_ascii_case(name.as_bytes())
    }

    fn value(&self, f: &Field) -> &[u8] {
        let at = f.start + f.name_len;
        &self.bytes[at..at + f.value_len]
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let k = key(name.as_bytes());
        self.fields
            .iter()
            .find(|f| self.is(f, k, name))
            .map(|f| self.value(f))
    }

    /// The value of the first field called `name`, when it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of the fields called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let k = key(name.as_bytes());
        self.fields
            .iter()
            .filter(move |f| self.is(f, k, name))
            .map(|f| self.value(f))
    }

    /// Whether any field called `name` lists `token` among its comma-separated elements
    /// (`Connection: keep-alive, Upgrade`), ignoring case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Whether a field called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field, keeping any existing ones of the same name.
    pub fn push(&mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref().as_bytes(), value.as_ref());
        self.fields.push(Field {
            key: key(name),
            start: self.bytes.len(),
            name_len: name.len(),
            value_len: value.len(),
        });
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
    }

    /// Replaces every field called `name` by one with `value`.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.remove(name);
        self.push(name, value);
    }

    /// Removes every field called `name` (its bytes stay until the list is dropped).
    pub fn remove(&mut self, name: &str) {
        let (k, bytes) = (key(name.as_bytes()), &self.bytes);
        self.fields.retain(|f| {
            f.key != k
                || !bytes[f.start..f.start + f.name_len].eq_ignore_ascii_case(name.as_bytes())
        });
    }

    /// Removes every field whose name (as sent) `drop` accepts.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&[u8]) -> bool) {
        let bytes = &self.bytes;
        self.fields
            .retain(|f| !drop(&bytes[f.start..f.start + f.name_len]));
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|f| (self.name(f), self.value(f)))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Serialises the fields as `Name: value\r\n` lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_except(out, "");
    }

    /// Serialises the fields but those called `skip`.
    pub fn write_except(&self, out: &mut Vec<u8>, skip: &str) {
        let k = key(skip.as_bytes());
        for f in self
            .fields
            .iter()
            .filter(|f| skip.is_empty() || !self.is(f, k, skip))
        {
            let (n, v) = (self.name_bytes(f), self.value(f));
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never reach a log line, even through a Debug print.
        let mut m = f.debug_map();
        for (n, v) in self.iter() {
            if n.eq_ignore_ascii_case("authorization") {
                m.entry(&n, &"<masked>");
            } else {
                m.entry(&n, &String::from_utf8_lossy(v));
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_tokens_split_on_commas() {
        let mut h = Headers::new();
        h.push("Connection", "keep-alive, Upgrade");
        h.push("content-TYPE", "application/json");
        assert_eq!(h.get_str("Content-Type"), Some("application/json"));
        assert!(h.has_token("connection", "upgrade"));
        assert!(!h.has_token("connection", "close"));
        h.set("CONTENT-type", "text/plain");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get_str("content-type"), Some("text/plain"));
        h.remove("connection");
        assert!(!h.contains("Connection"));
        h.push("X-A", vec![b'1']);
        h.push(String::from("x-a"), "2");
        assert_eq!(h.get_all("X-a").collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(out, b"CONTENT-type: text/plain\r\nX-A: 1\r\nx-a: 2\r\n");
        assert_eq!(h.clone(), h);
    }

    #[test]
    fn debug_masks_authorization() {
        let mut h = Headers::new();
        h.push("Authorization", "Bearer secret-token");
        assert!(!format!("{h:?}").contains("secret"));
    }
}

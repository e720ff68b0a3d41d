//! Filtering a list as it streams: the hub never holds more than one item of a list it
//! rewrites, so a 20 MiB list of ConfigMaps costs the memory of one ConfigMap.
//!
//! The bytes before the `items` array and after it pass unchanged; each item is cut out
//! (strings and escapes respected), run through the [`Chain`], and written back, with the
//! commas remade around the items a filter drops.
//!
//! ```
//! use yurthub::filter::{Filters, ListStream, Settings};
//! let chain = Filters::new(Settings::default()).chain("kube-proxy", "list", "services").unwrap();
//! let mut s = ListStream::new(1 << 20);
//! let mut out = Vec::new();
//! let body = br#"{"kind":"ServiceList","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"lb","annotations":{"svc.openyurt.io/discard":"true"}},"spec":{"type":"LoadBalancer"}}]}"#;
//! for piece in body.chunks(7) {
//!     s.feed(piece, &chain, &mut out).unwrap();
//! }
//! assert!(s.is_complete());
//! assert!(String::from_utf8(out).unwrap().contains(r#""items":[{"metadata":{"name":"a"}}]"#));
//! ```

use std::fmt;

use super::Chain;

/// The room an item buffer keeps between items (most objects are a few KiB).
const KEPT_ITEM_BYTES: usize = 64 * 1024;

/// Why a list could not be filtered as it streamed.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError {
    /// One item is larger than the limit.
    ItemTooLarge(usize),
    /// Something other than an object inside `items`.
    NotAnObjectList,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::ItemTooLarge(max) => write!(f, "a list item is larger than {max} bytes"),
            StreamError::NotAnObjectList => write!(f, "the list's items are not objects"),
        }
    }
}

impl std::error::Error for StreamError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Before the items array: passes through, watching for the `items` key at depth 1.
    Head,
    /// Inside the items array, between items.
    Between,
    /// Inside one item.
    Item,
    /// After the items array: passes through.
    Tail,
}

/// A list being filtered as it streams.
pub struct ListStream {
    mode: Mode,
    depth: u32,
    in_string: bool,
    escape: bool,
    /// The string being read at depth 1 (a key, maybe), up to a few bytes.
    key: Vec<u8>,
    /// `"items":` was read at depth 1; a `[` next opens the array.
    items_next: bool,
    /// `"items":null`: an empty list as Go may write it.
    items_null: bool,
    item: Vec<u8>,
    kept: usize,
    max_item: usize,
}

impl ListStream {
    /// A stream whose items may each be up to `max_item` bytes.
    pub fn new(max_item: usize) -> Self {
        Self {
            mode: Mode::Head,
            depth: 0,
            in_string: false,
            escape: false,
            key: Vec::new(),
            items_next: false,
            items_null: false,
            item: Vec::new(),
            kept: 0,
            max_item,
        }
    }

    /// Whether the items array was seen and closed, or was `null` (the body was a whole list).
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Tail || (self.mode == Mode::Head && self.items_null)
    }

    /// Whether the body stopped inside the items array (an item never closed): what was
    /// sent is not the whole list and the client must not take it as one.
    pub fn is_cut(&self) -> bool {
        matches!(self.mode, Mode::Between | Mode::Item)
    }

    /// Whether `b` is inside a string (updating the string state); for the scanners below.
    fn string_byte(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return true;
        }
        if b == b'"' {
            self.in_string = true;
            return true;
        }
        false
    }

    /// Takes the next bytes of the body and appends the filtered output to `out`.
    pub fn feed(
        &mut self,
        data: &[u8],
        chain: &Chain,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        let mut verbatim_from = 0;
        for (i, &b) in data.iter().enumerate() {
            match self.mode {
                Mode::Tail => {}
                Mode::Head => {
                    let was_in_string = self.in_string;
                    if self.string_byte(b) {
                        if self.depth == 1 {
                            if !was_in_string {
                                self.key.clear();
                            } else if self.in_string && self.key.len() < 8 {
                                self.key.push(b);
                            }
                        }
                        continue;
                    }
                    match b {
                        b':' if self.depth == 1 => self.items_next = self.key == b"items",
                        b',' if self.depth == 1 => self.items_next = false,
                        b'n' if self.depth == 1 && self.items_next => self.items_null = true,
                        b'[' if self.depth == 1 && self.items_next => {
                            out.extend_from_slice(&data[verbatim_from..=i]);
                            verbatim_from = i + 1;
                            self.depth = 2;
                            self.mode = Mode::Between;
                        }
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                        _ => {}
                    }
                }
                Mode::Between => match b {
                    b'{' => {
                        self.item.clear();
                        self.item.push(b);
                        self.depth = 3;
                        self.mode = Mode::Item;
                    }
                    b']' => {
                        out.push(b']');
                        verbatim_from = i + 1;
                        self.depth = 1;
                        self.mode = Mode::Tail;
                    }
                    b',' | b' ' | b'\n' | b'\r' | b'\t' => {}
                    _ => return Err(StreamError::NotAnObjectList),
                },
                Mode::Item => {
                    self.item.push(b);
                    if self.item.len() > self.max_item {
                        return Err(StreamError::ItemTooLarge(self.max_item));
                    }
                    if self.string_byte(b) {
                        continue;
                    }
                    match b {
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth -= 1;
                            if self.depth == 2 {
                                self.emit_item(chain, out);
                                self.mode = Mode::Between;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if matches!(self.mode, Mode::Head | Mode::Tail) {
            out.extend_from_slice(&data[verbatim_from..]);
        }
        Ok(())
    }

    fn emit_item(&mut self, chain: &Chain, out: &mut Vec<u8>) {
        let mark = out.len();
        if self.kept > 0 {
            out.push(b',');
        }
        if chain.append_object(&self.item, out) {
            self.kept += 1;
        } else {
            out.truncate(mark);
        }
        self.clear_item();
    }

    /// Empties the item buffer, keeping a usual item's room but not a huge one's.
    fn clear_item(&mut self) {
        self.item.clear();
        self.item.shrink_to(KEPT_ITEM_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Filters, Settings};
    use serde_json::{json, Value};

    #[test]
    fn any_piece_size_gives_what_the_whole_body_filter_gives() {
        let f = Filters::new(Settings::default());
        let chain = f.chain("kube-proxy", "list", "services").unwrap();
        let cloud = json!({"annotations": {"svc.openyurt.io/discard": "true"}});
        let list = json!({"kind": "ServiceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "7", "items": ["not", "these"]},
            "items": [
                {"metadata": {"name": "cloud-0", "annotations": cloud["annotations"]}, "spec": {"type": "LoadBalancer"}},
                {"metadata": {"name": "a \"quoted\" {name}"}, "spec": {"x": "]}[{"}},
                {"metadata": {"name": "cloud-1", "annotations": cloud["annotations"]}, "spec": {"type": "LoadBalancer"}},
                {"metadata": {"name": "b"}},
                {"metadata": {"name": "cloud-2", "annotations": cloud["annotations"]}, "spec": {"type": "LoadBalancer"}}
            ],
            "after": {"items": [1]}});
        let body = serde_json::to_vec_pretty(&list).unwrap();
        let whole: Value = serde_json::from_slice(&chain.apply_body(&body).unwrap()).unwrap();
        for size in [1, 2, 3, 7, 64, body.len()] {
            let mut s = ListStream::new(1 << 20);
            let mut out = Vec::new();
            for piece in body.chunks(size) {
                s.feed(piece, &chain, &mut out).unwrap();
            }
            assert!(s.is_complete());
            let streamed: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            assert_eq!(streamed, whole, "piece size {size}");
        }
        let names: Vec<&str> = whole["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a \"quoted\" {name}", "b"]);
    }

    #[test]
    fn limits_and_odd_bodies() {
        let f = Filters::new(Settings::default());
        let chain = f.chain("kube-proxy", "list", "services").unwrap();
        let mut s = ListStream::new(16);
        let mut out = Vec::new();
        let big = br#"{"items":[{"metadata":{"name":"a-long-name-indeed"}}]}"#;
        assert_eq!(
            s.feed(big, &chain, &mut out),
            Err(StreamError::ItemTooLarge(16))
        );
        let mut s = ListStream::new(1024);
        assert_eq!(
            s.feed(br#"{"items":[1,2]}"#, &chain, &mut Vec::new()),
            Err(StreamError::NotAnObjectList)
        );
        // A Status (no items) passes unchanged and is not a complete list.
        let status = br#"{"kind":"Status","code":410,"message":"items gone"}"#;
        let mut s = ListStream::new(1024);
        let mut out = Vec::new();
        s.feed(status, &chain, &mut out).unwrap();
        assert_eq!(out, status);
        assert!(!s.is_complete());
        // An empty or null items list.
        for body in [&br#"{"items":[]}"#[..], br#"{"items":null}"#] {
            let mut s = ListStream::new(1024);
            let mut out = Vec::new();
            s.feed(body, &chain, &mut out).unwrap();
            assert_eq!(out, body);
            assert!(s.is_complete() && !s.is_cut());
        }
        // An item that never closes is held back, and the list is known to be cut.
        let mut s = ListStream::new(1024);
        let mut out = Vec::new();
        s.feed(br#"{"items":[{"a":1},{"b":"#, &chain, &mut out)
            .unwrap();
        assert!(s.is_cut() && !s.is_complete());
    }
}

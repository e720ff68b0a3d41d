//! One resource's objects in memory as kube-apiserver's watch cache keeps them: the current
//! state at a resourceVersion, and the events of a recent window, so that lists and watches
//! of many clients are answered from one list and watch upstream.
//!
//! The semantics are the apiserver's: a list at any version (`0`, or none, which the hub
//! treats as `0` as upstream YurtHub does), not older than a version (a version the cache has
//! not reached yet is [`CacheError::TooNew`]: the caller waits for it, then answers 504), or
//! exactly one (rebuilt from the window, or 410 `Expired` outside it); pages with `limit` and
//! continue tokens that read one consistent snapshot; label and field selectors. A watch
//! starts from any version (the current objects as ADDED events first), or from one inside
//! the window (the events after it), else 410.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use yurthub::multiplexer::{EventType, ListQuery, WatchCache};
//!
//! let svc = |name: &str, rv: u64| format!(
//!     r#"{{"metadata":{{"name":"{name}","namespace":"default","resourceVersion":"{rv}"}}}}"#
//! ).into_bytes();
//! let mut cache = WatchCache::new("services", Duration::from_secs(180));
//! let now = Instant::now();
//! cache.replace(vec![svc("a", 5), svc("b", 7)], 9, now).unwrap();
//! cache.apply(EventType::Modified, svc("a", 12), now).unwrap();
//!
//! // A list at any version has both; one exactly at 9 has `a` as it was then.
//! assert_eq!(cache.list(&ListQuery::default()).unwrap().items.len(), 2);
//! let then = ListQuery { resource_version: "9".into(), exact: true, ..Default::default() };
//! assert_eq!(cache.list(&then).unwrap().items[0].rv, 5);
//! // A watch from 9 gets the change to `a`; one from 3, before the window, gets 410.
//! assert_eq!(cache.events_since(9).unwrap().len(), 1);
//! assert!(cache.events_since(3).is_err());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kube::{FieldSelector, LabelSelector};

/// The most events the window keeps, whatever their age (a bound on memory under churn far
/// beyond a pool's: 10 changes a second for three minutes is 1,800).
const MAX_EVENTS: usize = 50_000;

/// Why a list or watch cannot be answered from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// The cache has not been filled by its first list yet: 429, `Retry-After: 1`.
    NotSynced,
    /// The version asked for is older than the window: 410 `Expired`.
    Expired {
        /// The version asked for.
        requested: u64,
        /// The oldest version the cache can answer from.
        oldest: u64,
    },
    /// The version asked for is newer than the cache's: wait for it (then 504).
    TooNew {
        /// The version asked for.
        requested: u64,
    },
    /// A bad request: 400 with this message.
    BadRequest(String),
}

impl CacheError {
    /// The HTTP status kube-apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            CacheError::NotSynced => 429,
            CacheError::Expired { .. } => 410,
            CacheError::TooNew { .. } => 504,
            CacheError::BadRequest(_) => 400,
        }
    }

    /// The `reason` of its `metav1.Status`.
    pub fn reason(&self) -> &'static str {
        match self {
            CacheError::NotSynced => "TooManyRequests",
            CacheError::Expired { .. } => "Expired",
            CacheError::TooNew { .. } => "Timeout",
            CacheError::BadRequest(_) => "BadRequest",
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::NotSynced => f.write_str(
                "the hub's cache of this resource is not ready yet, please try again later",
            ),
            CacheError::Expired { requested, oldest } => {
                write!(f, "too old resource version: {requested} ({oldest})")
            }
            CacheError::TooNew { requested } => {
                write!(f, "Too large resource version: {requested}")
            }
            CacheError::BadRequest(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CacheError {}

/// What an event did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object is new.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventType {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One object as the cache holds it: its JSON as the apiserver sent it, and what selectors
/// read, taken out once.
#[derive(Debug)]
pub struct Item {
    /// Its namespace ("" for a cluster-scoped object).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its resourceVersion.
    pub rv: u64,
    /// Its JSON.
    pub bytes: Arc<[u8]>,
    labels: Vec<(String, String)>,
    fields: Vec<(&'static str, String)>,
}

impl Item {
    /// Its key as kube-apiserver orders a list: `<namespace>/<name>`, or `<name>`.
    fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// Whether it matches both selectors.
    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(|k| {
            self.labels
                .iter()
                .find(|(l, _)| l == k)
                .map(|(_, v)| v.as_str())
        }) && fields.matches(|f| {
            self.fields
                .iter()
                .find(|(name, _)| *name == f)
                .map(|(_, v)| v.as_str())
        })
    }
}

/// One change, as the window keeps it.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The version at which it happened.
    pub rv: u64,
    /// The object after it (before it, for a deletion: its last state).
    pub object: Arc<Item>,
    /// The object before it, when there was one: a watcher whose selector matched it then
    /// and not now sees a deletion.
    pub prev: Option<Arc<Item>>,
    at: Instant,
}

impl Event {
    /// What a watcher with these selectors sees of it, if anything: a change that moves an
    /// object into or out of the selection is an ADDED or DELETED to it.
    pub fn visible(
        &self,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<(EventType, &Arc<Item>)> {
        let now = self.object.matches(labels, fields);
        let before = self
            .prev
            .as_ref()
            .is_some_and(|p| p.matches(labels, fields));
        match (self.kind, before, now) {
            (EventType::Deleted, true, _) => Some((EventType::Deleted, &self.object)),
            (EventType::Deleted, false, _) => None,
            (_, false, true) => Some((EventType::Added, &self.object)),
            (_, true, true) => Some((EventType::Modified, &self.object)),
            // As kube-apiserver: the object as the watcher last saw it (it matched then).
            (_, true, false) => self.prev.as_ref().map(|p| (EventType::Deleted, p)),
            (_, false, false) => None,
        }
    }

    /// The watch event line (`{"type":..,"object":..}` and a newline) for `kind` of `item`
    /// (what [`Event::visible`] gave). An object that is not at the event's version (a
    /// deleted object's last state after a relist, an object leaving a selection) is sent
    /// at the event's version, as kube-apiserver does, so a client that resumes from it
    /// does not go back in time.
    pub fn line(&self, kind: EventType, item: &Item) -> Vec<u8> {
        let mut out = Vec::with_capacity(item.bytes.len() + 32);
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(br#"","object":"#);
        let rewritten = (item.rv != self.rv)
            .then(|| serde_json::from_slice::<Value>(&item.bytes).ok())
            .flatten()
            .and_then(|mut v| {
                v["metadata"]["resourceVersion"] = self.rv.to_string().into();
                serde_json::to_vec(&v).ok()
            });
        out.extend_from_slice(rewritten.as_deref().unwrap_or(&item.bytes));
        out.extend_from_slice(b"}\n");
        out
    }
}

/// A list request, as the cache reads it.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// `resourceVersion` ("" when absent).
    pub resource_version: String,
    /// `resourceVersionMatch=Exact`.
    pub exact: bool,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue` ("" when absent).
    pub continue_token: String,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The version the page was read at.
    pub rv: u64,
    /// The objects, in key order.
    pub items: Vec<Arc<Item>>,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many objects the next pages hold, when there are any.
    pub remaining: Option<usize>,
}

impl ListPage {
    /// The list's JSON, `kind` (e.g. `ServiceList`) of `api_version`, the items as the
    /// apiserver sent them.
    pub fn to_json(&self, kind: &str, api_version: &str) -> Vec<u8> {
        self.to_json_with(kind, api_version, |item, out| {
            out.extend_from_slice(item);
            true
        })
    }

    /// The list's JSON with each item written by `each` (which appends it to the list's
    /// bytes, changed or not, or returns false to leave it out): a client's filters, one
    /// object at a time.
    pub fn to_json_with(
        &self,
        kind: &str,
        api_version: &str,
        mut each: impl FnMut(&[u8], &mut Vec<u8>) -> bool,
    ) -> Vec<u8> {
        let size: usize = self.items.iter().map(|i| i.bytes.len() + 1).sum();
        let mut out = Vec::with_capacity(size + 200);
        let mut meta = serde_json::json!({"resourceVersion": self.rv.to_string()});
        if let Some(c) = &self.continue_token {
            meta["continue"] = c.as_str().into();
        }
        if let Some(n) = self.remaining {
            meta["remainingItemCount"] = n.into();
        }
        let head = serde_json::json!({"kind": kind, "apiVersion": api_version, "metadata": meta});
        let head = head.to_string();
        // `{"apiVersion":..,"kind":..,"metadata":{..}` then `,"items":[..]}`.
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(br#","items":["#);
        let mut first = true;
        for item in &self.items {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if each(&item.bytes, &mut out) {
                first = false;
            } else {
                out.truncate(mark);
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// The objects of one resource at a version, and the events of a window before it.
#[derive(Debug)]
pub struct WatchCache {
    fields: &'static [&'static str],
    items: BTreeMap<String, Arc<Item>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// The oldest version the window answers from: every change after it is in `history`.
    oldest: u64,
    window: Duration,
    synced: bool,
}

/// The fields kube-apiserver lets a field selector test for `resource`, beyond
/// `metadata.name` and `metadata.namespace`.
fn selectable(resource: &str) -> &'static [&'static str] {
    match resource {
        "services" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// A continue token as kube-apiserver writes them: unpadded URL-safe base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`.
fn encode_continue(rv: u64, after: &str) -> String {
    let start = format!("{after}\u{0}");
    let token = serde_json::json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64(token.to_string().as_bytes())
}

fn decode_continue(token: &str) -> Result<(u64, String), CacheError> {
    let bad = || CacheError::BadRequest(format!("invalid continue token: {token:?}"));
    let json = unbase64(token).ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&json).map_err(|_| bad())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = v["rv"].as_u64().filter(|&rv| rv > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    Ok((rv, start.strip_suffix('\u{0}').unwrap_or(start).to_string()))
}

/// Go's `base64.RawURLEncoding`, which the apiserver's continue tokens use.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
    }
    out
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Why an object from upstream was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadObject {
    /// Not JSON, or not an object with a name and a numeric resourceVersion.
    Unreadable,
}

impl fmt::Display for BadObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an object with a name and a resourceVersion")
    }
}

impl std::error::Error for BadObject {}

/// A relist whose difference from the cache cannot be told to watchers as events (an object
/// changed at a version the cache had passed): every watch must end with 410.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset;

impl WatchCache {
    /// An empty cache of `resource` (not synced until [`WatchCache::replace`]), keeping the
    /// events of `window` at least.
    pub fn new(resource: &str, window: Duration) -> Self {
        Self {
            fields: selectable(resource),
            items: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            oldest: 0,
            window,
            synced: false,
        }
    }

    /// The version the cache is at.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Whether the first list has filled it.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no objects.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn item(&self, bytes: Vec<u8>) -> Result<Item, BadObject> {
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| BadObject::Unreadable)?;
        let meta = &v["metadata"];
        let name = meta["name"].as_str().ok_or(BadObject::Unreadable)?;
        let rv = meta["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .ok_or(BadObject::Unreadable)?;
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let fields = self
            .fields
            .iter()
            .filter_map(|&f| Some((f, crate::kube::field_value(&v, f)?)))
            .collect();
        Ok(Item {
            namespace: meta["namespace"].as_str().unwrap_or("").to_string(),
            name: name.to_string(),
            rv,
            bytes: bytes.into(),
            labels,
            fields,
        })
    }

    fn record(&mut self, event: Event) -> Arc<Event> {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        let now = event.at;
        while self.history.len() > MAX_EVENTS
            || self
                .history
                .front()
                .is_some_and(|e| now.duration_since(e.at) > self.window && self.history.len() > 1)
        {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
        event
    }

    /// Takes a whole list read at `rv` (the first, or a relist after an upstream watch
    /// failed or the source changed). Returns the difference from what the cache held, as
    /// events every watch can be sent; [`Reset`] when it cannot be told as events (the
    /// window then starts at `rv`, and every watch must end with 410). Unreadable objects
    /// are left out.
    pub fn replace(
        &mut self,
        objects: Vec<Vec<u8>>,
        rv: u64,
        now: Instant,
    ) -> Result<Vec<Arc<Event>>, Reset> {
        let mut next = BTreeMap::new();
        for bytes in objects {
            if let Ok(item) = self.item(bytes) {
                next.insert(item.key(), Arc::new(item));
            }
        }
        let first = !self.synced;
        self.synced = true;
        let mut changes: Vec<Event> = Vec::new();
        let consistent = !first && rv >= self.rv;
        if consistent {
            for (key, new) in &next {
                match self.items.get(key) {
                    Some(old) if old.rv == new.rv => {}
                    old => changes.push(Event {
                        kind: if old.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        },
                        rv: new.rv,
                        object: new.clone(),
                        prev: old.cloned(),
                        at: now,
                    }),
                }
            }
            for (key, old) in &self.items {
                if !next.contains_key(key) {
                    changes.push(Event {
                        kind: EventType::Deleted,
                        rv,
                        object: old.clone(),
                        prev: Some(old.clone()),
                        at: now,
                    });
                }
            }
        }
        // A change the cache missed happened after its version; one at or before it means
        // the cache's view and the new source's disagree about history itself.
        let expressible = consistent && changes.iter().all(|e| e.rv > self.rv);
        self.items = next;
        if first || !expressible {
            self.history.clear();
            self.rv = rv;
            self.oldest = rv;
            return if first { Ok(Vec::new()) } else { Err(Reset) };
        }
        changes.sort_by_key(|e| e.rv);
        self.rv = rv;
        Ok(changes.into_iter().map(|e| self.record(e)).collect())
    }

    /// Takes one watch event from upstream (an object at its new version; a deleted
    /// object's last state). A version the cache has passed is a duplicate and ignored.
    pub fn apply(
        &mut self,
        kind: EventType,
        bytes: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Arc<Event>>, BadObject> {
        let item = Arc::new(self.item(bytes)?);
        if item.rv <= self.rv {
            return Ok(None);
        }
        let key = item.key();
        let prev = match kind {
            EventType::Deleted => self.items.remove(&key),
            _ => self.items.insert(key, item.clone()),
        };
        // The apiserver's cache tells ADDED from MODIFIED by what it held, not by what the
        // event said (a relayed stream may have lost the difference).
        let kind = match (kind, &prev) {
            (EventType::Deleted, None) => {
                self.rv = item.rv;
                return Ok(None);
            }
            (EventType::Deleted, Some(_)) => EventType::Deleted,
            (_, None) => EventType::Added,
            (_, Some(_)) => EventType::Modified,
        };
        self.rv = item.rv;
        Ok(Some(self.record(Event {
            kind,
            rv: item.rv,
            object: item,
            prev,
            at: now,
        })))
    }

    /// Moves the cache to `rv` without a change (a bookmark from upstream).
    pub fn bookmark(&mut self, rv: u64) {
        if rv > self.rv {
            self.rv = rv;
        }
    }

    /// Whether the cache can answer from `rv`: not beyond its version, not before its window.
    fn in_window(&self, rv: u64) -> Result<(), CacheError> {
        if rv > self.rv {
            return Err(CacheError::TooNew { requested: rv });
        }
        if rv < self.oldest {
            return Err(CacheError::Expired {
                requested: rv,
                oldest: self.oldest,
            });
        }
        Ok(())
    }

    /// The objects as they were at `rv`, rebuilt from the window.
    fn state_at(&self, rv: u64) -> Result<BTreeMap<String, Arc<Item>>, CacheError> {
        self.in_window(rv)?;
        let mut items = self.items.clone();
        for e in self.history.iter().rev().take_while(|e| e.rv > rv) {
            let key = e.object.key();
            match (e.kind, &e.prev) {
                (EventType::Added, _) | (_, None) => {
                    items.remove(&key);
                }
                (_, Some(prev)) => {
                    items.insert(key, prev.clone());
                }
            }
        }
        Ok(items)
    }

    fn check_fields(&self, fields: &FieldSelector) -> Result<(), CacheError> {
        match fields.fields().find(|f| !self.fields.contains(f)) {
            Some(f) => Err(CacheError::BadRequest(format!(
                "field label not supported: {f}"
            ))),
            None => Ok(()),
        }
    }

    /// Answers a list.
    pub fn list(&self, q: &ListQuery) -> Result<ListPage, CacheError> {
        if !self.synced {
            return Err(CacheError::NotSynced);
        }
        self.check_fields(&q.fields)?;
        let parse_rv = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| CacheError::BadRequest(format!("invalid resource version: {s}")))
        };
        let (rv, after, snapshot) = if !q.continue_token.is_empty() {
            // "0" is allowed, as the apiserver allows it: the token names the version.
            if !q.resource_version.is_empty() && q.resource_version != "0" {
                return Err(CacheError::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (rv, after) = decode_continue(&q.continue_token)?;
            let snapshot = self.state_at(rv).map_err(|e| match e {
                CacheError::Expired { .. } => CacheError::Expired {
                    requested: rv,
                    oldest: self.oldest,
                },
                e => e,
            })?;
            (rv, Some(after), Some(snapshot))
        } else if q.exact {
            if q.resource_version.is_empty() || q.resource_version == "0" {
                return Err(CacheError::BadRequest(
                    "resourceVersionMatch: Exact requires a resourceVersion other than 0".into(),
                ));
            }
            let rv = parse_rv(&q.resource_version)?;
            (rv, None, Some(self.state_at(rv)?))
        } else {
            if !q.resource_version.is_empty() && q.resource_version != "0" {
                let rv = parse_rv(&q.resource_version)?;
                if rv > self.rv {
                    return Err(CacheError::TooNew { requested: rv });
                }
            }
            (self.rv, None, None)
        };
        let items = snapshot.as_ref().unwrap_or(&self.items);
        let range = match &after {
            Some(k) => (Bound::Excluded(k.clone()), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut selected = items
            .range(range)
            .map(|(_, i)| i)
            .filter(|i| i.matches(&q.labels, &q.fields));
        let mut page: Vec<Arc<Item>> = Vec::new();
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        for item in selected.by_ref() {
            page.push(item.clone());
            if page.len() == limit {
                break;
            }
        }
        let remaining = selected.count();
        let continue_token = (remaining > 0).then(|| {
            let last = page.last().map(|i| i.key()).unwrap_or_default();
            encode_continue(rv, &last)
        });
        Ok(ListPage {
            rv,
            items: page,
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    /// The events after `rv`, for a watch from it: [`CacheError::Expired`] when the window
    /// no longer holds them all, [`CacheError::TooNew`] when the cache is not there yet.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, CacheError> {
        if !self.synced {
            return Err(CacheError::NotSynced);
        }
        self.in_window(rv)?;
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// The start of a watch from any version: the current objects that match, as ADDED
    /// events (kube-apiserver sends them first), and the version to follow from.
    pub fn initial_events(
        &self,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<(Vec<Arc<Item>>, u64), CacheError> {
        if !self.synced {
            return Err(CacheError::NotSynced);
        }
        self.check_fields(fields)?;
        let items = self
            .items
            .values()
            .filter(|i| i.matches(labels, fields))
            .cloned()
            .collect();
        Ok((items, self.rv))
    }

    /// Checks a watch's field selector before it starts (400 for a field the resource
    /// does not let selectors test).
    pub fn check_watch(&self, fields: &FieldSelector) -> Result<(), CacheError> {
        self.check_fields(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str, rv: u64, labels: &str, ip: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"Service","metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"{rv}","labels":{labels}}},"spec":{{"clusterIP":"{ip}","type":"ClusterIP"}}}}"#
        )
        .into_bytes()
    }

    fn names(page: &ListPage) -> Vec<String> {
        page.items.iter().map(|i| i.name.clone()).collect()
    }

    fn q() -> ListQuery {
        ListQuery::default()
    }

    fn filled() -> (WatchCache, Instant) {
        let mut c = WatchCache::new("services", Duration::from_secs(180));
        let now = Instant::now();
        assert_eq!(c.list(&q()).unwrap_err(), CacheError::NotSynced);
        c.replace(
            vec![
                obj("default", "a", 3, r#"{"app":"web"}"#, "10.96.0.3"),
                obj("default", "b", 4, r#"{"app":"db"}"#, "10.96.0.4"),
                obj("kube-system", "dns", 2, r#"{"app":"dns"}"#, "10.96.0.10"),
            ],
            10,
            now,
        )
        .unwrap();
        (c, now)
    }

    #[test]
    fn lists_at_any_version_select_by_labels_and_fields_in_key_order() {
        let (c, _) = filled();
        let all = c.list(&q()).unwrap();
        assert_eq!(all.rv, 10);
        assert_eq!(names(&all), ["a", "b", "dns"]);
        let web = ListQuery {
            labels: LabelSelector::parse("app in (web,dns)").unwrap(),
            ..q()
        };
        assert_eq!(names(&c.list(&web).unwrap()), ["a", "dns"]);
        for (sel, want) in [
            ("metadata.namespace=kube-system", vec!["dns"]),
            ("spec.clusterIP=10.96.0.4", vec!["b"]),
            ("metadata.name!=a,spec.type=ClusterIP", vec!["b", "dns"]),
        ] {
            let fq = ListQuery {
                fields: FieldSelector::parse(sel).unwrap(),
                ..q()
            };
            assert_eq!(names(&c.list(&fq).unwrap()), want, "{sel}");
        }
        let bad = ListQuery {
            fields: FieldSelector::parse("spec.selector=x").unwrap(),
            ..q()
        };
        let e = c.list(&bad).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (400, "field label not supported: spec.selector")
        );
        // Not older than a version the cache has: now; a newer one must be waited for.
        let newer = ListQuery {
            resource_version: "11".into(),
            ..q()
        };
        assert_eq!(
            c.list(&newer).unwrap_err(),
            CacheError::TooNew { requested: 11 }
        );
        let older = ListQuery {
            resource_version: "5".into(),
            ..q()
        };
        assert_eq!(c.list(&older).unwrap().rv, 10);
    }

    #[test]
    fn pages_read_one_snapshot_even_when_objects_change_between_them() {
        let (mut c, now) = filled();
        let first = c.list(&ListQuery { limit: 2, ..q() }).unwrap();
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.remaining, Some(1));
        let token = first.continue_token.clone().unwrap();
        // The token has the apiserver's fields.
        let decoded = String::from_utf8(unbase64(&token).unwrap()).unwrap();
        assert_eq!(
            decoded,
            r#"{"rv":10,"start":"default/b\u0000","v":"meta.k8s.io/v1"}"#
        );
        // dns changes and a new object sorts after b: the next page is still as at 10.
        c.apply(
            EventType::Modified,
            obj("kube-system", "dns", 11, r#"{"app":"dns2"}"#, "10.96.0.10"),
            now,
        )
        .unwrap();
        c.apply(
            EventType::Added,
            obj("default", "c", 12, "{}", "10.96.0.5"),
            now,
        )
        .unwrap();
        let next = c
            .list(&ListQuery {
                limit: 2,
                continue_token: token,
                ..q()
            })
            .unwrap();
        assert_eq!(names(&next), ["dns"]);
        assert_eq!(next.items[0].rv, 2);
        assert_eq!(next.continue_token, None);
        // An exact version inside the window is rebuilt; before it, 410.
        let exact = |rv: &str| {
            c.list(&ListQuery {
                resource_version: rv.into(),
                exact: true,
                ..q()
            })
        };
        assert_eq!(names(&exact("11").unwrap()), ["a", "b", "dns"]);
        assert_eq!(exact("11").unwrap().items[2].rv, 11);
        assert_eq!(exact("9").unwrap_err().code(), 410);
        assert_eq!(exact("0").unwrap_err().code(), 400);
        let bad = c.list(&ListQuery {
            continue_token: "!!".into(),
            ..q()
        });
        assert_eq!(bad.unwrap_err().code(), 400);
    }

    #[test]
    fn watches_get_the_events_after_their_version_inside_the_window_or_410() {
        let mut c = WatchCache::new("services", Duration::from_secs(180));
        let t0 = Instant::now();
        c.replace(
            vec![obj("default", "a", 3, r#"{"app":"web"}"#, "10.96.0.3")],
            10,
            t0,
        )
        .unwrap();
        // Duplicates and old versions are ignored; kinds follow what the cache held.
        assert!(c
            .apply(EventType::Modified, obj("default", "a", 3, "{}", "x"), t0)
            .unwrap()
            .is_none());
        let e = c
            .apply(
                EventType::Modified,
                obj("default", "b", 11, r#"{"app":"web"}"#, "10.96.0.4"),
                t0,
            )
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, EventType::Added);
        c.apply(
            EventType::Modified,
            obj("default", "a", 12, r#"{"app":"db"}"#, "10.96.0.3"),
            t0 + Duration::from_secs(60),
        )
        .unwrap();
        c.apply(
            EventType::Deleted,
            obj("default", "b", 13, r#"{"app":"web"}"#, "10.96.0.4"),
            t0 + Duration::from_secs(120),
        )
        .unwrap();
        let rvs = |c: &WatchCache, rv| -> Vec<u64> {
            c.events_since(rv).unwrap().iter().map(|e| e.rv).collect()
        };
        assert_eq!(rvs(&c, 10), [11, 12, 13]);
        assert_eq!(rvs(&c, 12), [13]);
        assert_eq!(rvs(&c, 13), Vec::<u64>::new());
        assert_eq!(c.events_since(14).unwrap_err().code(), 504);
        assert_eq!(
            c.events_since(9).unwrap_err(),
            CacheError::Expired {
                requested: 9,
                oldest: 10
            }
        );
        // A watcher of app=web sees a's relabelling as its deletion.
        let web = LabelSelector::parse("app=web").unwrap();
        let any = FieldSelector::default();
        let lines: Vec<Value> = c
            .events_since(10)
            .unwrap()
            .iter()
            .filter_map(|e| e.visible(&web, &any).map(|(k, i)| e.line(k, i)))
            .map(|l| serde_json::from_slice(&l).unwrap())
            .collect();
        let seen: Vec<(&str, &str, &str, &str)> = lines
            .iter()
            .map(|l| {
                let m = &l["object"]["metadata"];
                (
                    l["type"].as_str().unwrap(),
                    m["name"].as_str().unwrap(),
                    m["resourceVersion"].as_str().unwrap(),
                    m["labels"]["app"].as_str().unwrap(),
                )
            })
            .collect();
        // a leaves as it was seen (app=web), at the version of the change.
        assert_eq!(
            seen,
            [
                ("ADDED", "b", "11", "web"),
                ("DELETED", "a", "12", "web"),
                ("DELETED", "b", "13", "web")
            ]
        );
        // Events older than the window go, once newer ones come: watches from before
        // them get 410.
        c.apply(
            EventType::Added,
            obj("default", "c", 14, "{}", "10.96.0.9"),
            t0 + Duration::from_secs(290),
        )
        .unwrap();
        assert_eq!(c.events_since(10).unwrap_err().code(), 410);
        assert_eq!(rvs(&c, 12), [13, 14]);
    }

    #[test]
    fn a_relist_is_told_as_the_difference_or_ends_every_watch() {
        let (mut c, now) = filled();
        // The new source has b changed, dns gone and d new, all after the cache's version.
        let diff = c
            .replace(
                vec![
                    obj("default", "a", 3, r#"{"app":"web"}"#, "10.96.0.3"),
                    obj("default", "b", 15, r#"{"app":"db"}"#, "10.96.0.4"),
                    obj("default", "d", 16, "{}", "10.96.0.6"),
                ],
                20,
                now,
            )
            .unwrap();
        let got: Vec<(EventType, String, u64)> = diff
            .iter()
            .map(|e| (e.kind, e.object.name.clone(), e.rv))
            .collect();
        assert_eq!(
            got,
            [
                (EventType::Modified, "b".to_string(), 15),
                (EventType::Added, "d".to_string(), 16),
                (EventType::Deleted, "dns".to_string(), 20)
            ]
        );
        assert_eq!(c.events_since(10).unwrap().len(), 3);
        // The deletion a relist found is sent at the relist's version.
        let gone = &diff[2];
        let line: Value = serde_json::from_slice(&gone.line(gone.kind, &gone.object)).unwrap();
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "20");
        assert_eq!(line["type"], "DELETED");
        // A source behind the cache, or one whose history disagrees: watches end (410).
        assert!(matches!(c.replace(vec![], 19, now), Err(Reset)));
        assert_eq!(c.events_since(10).unwrap_err().code(), 410);
        assert_eq!(c.list(&q()).unwrap().rv, 19);
    }

    #[test]
    fn lists_are_in_the_apiservers_key_order() {
        let mut c = WatchCache::new("services", Duration::from_secs(180));
        c.replace(
            vec![obj("a", "x", 2, "{}", "1"), obj("a-b", "x", 3, "{}", "2")],
            5,
            Instant::now(),
        )
        .unwrap();
        // `a-b/x` before `a/x`: '-' sorts before '/'.
        let all = c.list(&q()).unwrap();
        let keys: Vec<String> = all.items.iter().map(|i| i.key()).collect();
        assert_eq!(keys, ["a-b/x", "a/x"]);
    }

    #[test]
    fn a_list_renders_as_the_apiserver_writes_it() {
        let (c, _) = filled();
        let page = c.list(&ListQuery { limit: 1, ..q() }).unwrap();
        let v: Value = serde_json::from_slice(&page.to_json("ServiceList", "v1")).unwrap();
        assert_eq!(v["kind"], "ServiceList");
        assert_eq!(v["metadata"]["resourceVersion"], "10");
        assert_eq!(v["metadata"]["remainingItemCount"], 2);
        assert!(v["metadata"]["continue"].is_string());
        assert_eq!(v["items"][0]["metadata"]["name"], "a");
        // Items a client's filters leave out leave no trace (first, middle or last).
        let all = c.list(&q()).unwrap();
        for dropped in ["a", "b", "dns"] {
            let body = all.to_json_with("ServiceList", "v1", |item, out| {
                let name = format!(r#""name":"{dropped}""#);
                let keep = memchr::memmem::find(item, name.as_bytes()).is_none();
                if keep {
                    out.extend_from_slice(item);
                }
                keep
            });
            let v: Value = serde_json::from_slice(&body).unwrap();
            let names: Vec<_> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(names.len(), 2, "{names:?}");
            assert!(!names.contains(&dropped), "{names:?}");
        }
        // Go's RawURLEncoding: no padding, `-` and `_`.
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
        assert_eq!(base64(&[0xfb, 0xff]), "-_8");
        assert_eq!(
            unbase64("YW55IGNhcm5hbCBwbGVhcw").unwrap(),
            b"any carnal pleas"
        );
    }
}

//! Lists and watches of pool-scope resources answered from the multiplexer's stores
//! ([`crate::multiplexer`]) with kube-apiserver's semantics, instead of each component's own
//! cluster-wide request to the cloud (reference §10.1).
//!
//! Which requests come here is the proxy's decision ([`Proxy`](super::Proxy)); this room
//! only answers: the list at the version asked for (waiting a little for one the store has
//! not reached, as the apiserver's cache does), the watch from a version or from "any", its
//! events through the client's own filters, bookmarks, its end. What a client is answered
//! is also copied to its own cache ([`Tee`]) as its answers from the cloud would be: offline
//! without the store, and to the operator reading `cache/kubelet/services…`, it is the same.

use smol::io::AsyncWriteExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::filter::Chain;
use crate::http::url::Query;
use crate::http::{BodyWriter, RequestHead, ResponseHead};
use crate::kube::{FieldSelector, LabelSelector, RequestInfo, Status, StatusDetails};
use crate::local::Local;
use crate::multiplexer::{CacheError, ListQuery, Resource};
use crate::server::{self, ClientConn};

use super::Tee;

/// How long a request waits for the store to reach the version it asks for: kube-apiserver's
/// cache waits 3 s, then answers 504 (`Too large resource version`).
const FRESH_WAIT: Duration = Duration::from_secs(3);

/// The longest watch a client can ask for (a year): longer ones are cut to it.
const MAX_WATCH_SECONDS: u64 = 365 * 24 * 3600;

/// What is gathered for a client before it is written (a watch's initial events are
/// written in pieces of this size, not held whole).
const WRITE_PIECE: usize = 64 * 1024;

/// The buffer a watch keeps between writes.
const IDLE_BUFFER: usize = 4 * 1024;

/// How often a watch that allows bookmarks gets one while nothing it sees changes (the
/// apiserver sends one about every minute).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// Whether the store can answer the request at all: a list or watch (of the collection, or
/// of one object by name, which is a watch with `metadata.name=`), asked for as objects.
/// Table and PartialObjectMetadata answers (`as=` in `Accept`) are the cloud's to make; they
/// go the ordinary way.
pub(super) fn servable(ri: &RequestInfo, head: &RequestHead) -> bool {
    matches!(ri.verb.as_str(), "list" | "watch")
        && ri.subresource.is_empty()
        && head.method == "GET"
        && !head.is_upgrade()
        && !head
            .headers
            .get_all("accept")
            .any(|v| v.windows(3).any(|w| w.eq_ignore_ascii_case(b"as=")))
}

/// How long the cloud's answer to a token's list or watch of a resource lets the store
/// answer that token, while the cloud is up: after it, the token's next request goes to the
/// cloud again, so that a pod whose access was taken away learns it within this time.
pub(super) const RECONFIRM: Duration = Duration::from_secs(600);

/// The most tokens [`Readers`] remembers (the oldest confirmation goes first).
const MAX_READERS: usize = 1024;

/// When the cloud last answered a token a list or watch of a pool-scope resource. Tokens
/// are kept only as keyed hashes, in memory: this is a recency, not a credential (offline,
/// the persisted [`Tokens`](crate::cache::tokens::Tokens) and the cache decide).
#[derive(Default)]
pub(super) struct Readers {
    keys: std::collections::hash_map::RandomState,
    seen: std::sync::Mutex<std::collections::HashMap<(u64, String), Instant>>,
}

impl Readers {
    fn key(&self, token: &str, resource: &str) -> (u64, String) {
        use std::hash::BuildHasher;
        (self.keys.hash_one(token), resource.to_string())
    }

    /// The cloud has just answered `token` a list or watch of `resource` with success.
    pub(super) fn confirm(&self, token: &str, resource: &str) {
        let key = self.key(token, resource);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_READERS && !seen.contains_key(&key) {
            let oldest = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                seen.remove(&k);
            }
        }
        seen.insert(key, Instant::now());
    }

    /// Whether the cloud answered `token` for `resource` within [`RECONFIRM`].
    pub(super) fn confirmed(&self, token: &str, resource: &str) -> bool {
        let key = self.key(token, resource);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&key).is_some_and(|at| at.elapsed() < RECONFIRM)
    }
}

/// What one answer needs besides the connection.
pub(super) struct Request<'a> {
    /// The classification.
    pub info: &'a RequestInfo,
    /// The query.
    pub query: &'a Query,
    /// The store.
    pub resource: &'a Arc<Resource>,
    /// The client's filters, if any apply.
    pub chain: Option<Chain>,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The watch length when the client names none (a random time in [t, 2t)).
    pub min_request_timeout: Duration,
    /// Makes the copy of the answer for the client's own cache, when it keeps one: called
    /// only once the answer is a 200 (making it claims the client's component).
    pub tee: &'a (dyn Fn() -> Option<Tee> + Sync),
}

/// How a request was answered.
pub(super) struct Answered {
    /// The status code sent.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

impl Answered {
    fn new(status: u16, keep_alive: bool) -> Self {
        Self { status, keep_alive }
    }
}

/// The 429 a client gets while the store has not been filled yet: it retries in a second.
pub(super) async fn not_synced(conn: &mut ClientConn, keep_alive: bool) -> Answered {
    error(conn, &CacheError::NotSynced, keep_alive).await
}

/// The `metav1.Status` of `e`, as the apiserver words it, with `Retry-After` where the
/// apiserver sends one.
async fn error(conn: &mut ClientConn, e: &CacheError, keep_alive: bool) -> Answered {
    let status = status_of(e);
    let retry = status.details.is_some();
    let mut head = ResponseHead::new(e.code());
    head.headers.push("Content-Type", "application/json");
    head.headers.push("Cache-Control", "no-cache, private");
    if retry {
        head.headers.push("Retry-After", "1");
    }
    if !keep_alive {
        head.headers.push("Connection", "close");
    }
    let sent = server::respond(&mut conn.writer, head, &status.to_json())
        .await
        .is_ok();
    Answered::new(e.code(), sent && keep_alive)
}

/// The `metav1.Status` of `e`: `retryAfterSeconds` where the apiserver says when to retry.
fn status_of(e: &CacheError) -> Status {
    let mut status = Status::failure(e.code(), e.to_string());
    status.reason = e.reason();
    if matches!(e, CacheError::NotSynced | CacheError::TooNew { .. }) {
        status = status.with_details(StatusDetails {
            retry_after_seconds: Some(1),
            ..Default::default()
        });
    }
    status
}

/// The watch event that ends a watch with `e`, and its newline.
fn error_event(e: &CacheError) -> Vec<u8> {
    let mut line = br#"{"type":"ERROR","object":"#.to_vec();
    line.extend_from_slice(&status_of(e).to_json());
    line.extend_from_slice(b"}\n");
    line
}

fn bad(what: &str, e: impl std::fmt::Display) -> CacheError {
    CacheError::BadRequest(format!("{what}: {e}"))
}

/// The selectors of a request; a namespaced request selects its namespace.
fn selectors(req: &Request<'_>) -> Result<(LabelSelector, FieldSelector), CacheError> {
    let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))
        .map_err(|e| bad("unable to parse requirement", e))?;
    let mut fields = req.query.get("fieldSelector").unwrap_or("").to_string();
    // The path's namespace and name select as the apiserver's do (the name may also have
    // come from the field selector: selecting it twice changes nothing).
    for (field, value) in [
        ("metadata.namespace", &req.info.namespace),
        ("metadata.name", &req.info.name),
    ] {
        if value.is_empty() {
            continue;
        }
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str(field);
        fields.push('=');
        fields.push_str(&crate::kube::escape_value(value));
    }
    let fields = FieldSelector::parse(&fields).map_err(|e| bad("invalid field selector", e))?;
    Ok((labels, fields))
}

/// The version a request names, if it names one other than "any" (`""` and `"0"`).
fn named_version(query: &Query) -> Result<Option<u64>, CacheError> {
    match query.get("resourceVersion").unwrap_or("") {
        "" | "0" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| CacheError::BadRequest(format!("invalid resource version: {v}"))),
    }
}

/// Waits until the store has reached `rv` or [`FRESH_WAIT`] has passed; whether it has.
async fn fresh(resource: &Resource, rv: u64) -> bool {
    let deadline = Instant::now() + FRESH_WAIT;
    loop {
        let woken = resource.listen();
        if resource.cache().resource_version() >= rv {
            return true;
        }
        let reached = smol::future::or(
            async {
                woken.await;
                true
            },
            async {
                async_io::Timer::at(deadline).await;
                false
            },
        )
        .await;
        if !reached {
            return resource.cache().resource_version() >= rv;
        }
    }
}

/// Answers a list.
pub(super) async fn list(conn: &mut ClientConn, req: Request<'_>, keep_alive: bool) -> Answered {
    let page = match list_page(&req).await {
        Ok(p) => p,
        Err(e) => return error(conn, &e, keep_alive).await,
    };
    let r = req.resource;
    let body = match &req.chain {
        Some(c) => page.to_json_with(&r.list_kind, &r.api_version, |item, out| {
            c.append_object(item, out)
        }),
        None => page.to_json(&r.list_kind, &r.api_version),
    };
    if let Some(mut tee) = (req.tee)() {
        tee.feed(&body);
        tee.finish();
    }
    Answered::new(
        200,
        // Only GETs come here (`servable`): the body is always sent.
        Local::object_bytes(conn, false, &body).await && keep_alive,
    )
}

async fn list_page(req: &Request<'_>) -> Result<crate::multiplexer::ListPage, CacheError> {
    let (labels, fields) = selectors(req)?;
    let exact = match req.query.get("resourceVersionMatch").unwrap_or("") {
        "" | "NotOlderThan" => false,
        "Exact" => true,
        m => {
            return Err(CacheError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
            )))
        }
    };
    let limit = match req.query.get("limit").unwrap_or("") {
        "" => 0,
        l => l
            .parse::<i64>()
            .map_err(|_| CacheError::BadRequest(format!("invalid limit: {l}")))?
            .max(0) as usize,
    };
    let q = ListQuery {
        resource_version: req.query.get("resourceVersion").unwrap_or("").to_string(),
        exact,
        labels,
        fields,
        limit,
        continue_token: req.query.get("continue").unwrap_or("").to_string(),
    };
    let first = req.resource.cache().list(&q);
    match first {
        Err(CacheError::TooNew { requested }) => {
            fresh(req.resource, requested).await;
            req.resource.cache().list(&q)
        }
        other => other,
    }
}

/// How a watch ended.
enum End {
    /// Its time is up, or the store ended it with an `ERROR` event: the body is complete.
    Complete,
    /// The client went away or the connection broke.
    Broken,
}

/// Answers a watch.
pub(super) async fn watch(conn: &mut ClientConn, req: Request<'_>, keep_alive: bool) -> Answered {
    let start = watch_start(&req).await;
    let (labels, fields, from) = match start {
        Ok(s) => s,
        Err(e) => return error(conn, &e, keep_alive).await,
    };
    let tee = (req.tee)();
    let mut head = ResponseHead::new(200);
    head.headers.push("Content-Type", "application/json");
    head.headers.push("Cache-Control", "no-cache, private");
    let writer = BodyWriter::streaming(&mut head, req.http10);
    let close = !keep_alive || writer == BodyWriter::Raw;
    if close {
        head.headers.set("Connection", "close");
    }
    let mut out = Vec::with_capacity(IDLE_BUFFER);
    head.write_to(&mut out);
    let mut w = Watch {
        req: &req,
        writer,
        labels,
        fields,
        out,
        tee,
    };
    let keep = match w.run(conn, from).await {
        End::Complete => {
            w.writer.finish(&mut w.out);
            let sent =
                conn.writer.write_all(&w.out).await.is_ok() && conn.writer.flush().await.is_ok();
            sent && !close
        }
        End::Broken => false,
    };
    Answered::new(200, keep)
}

/// Where a watch starts: the current objects (any version asked for, or `sendInitialEvents`),
/// or the events after a version.
enum From {
    /// The objects as ADDED events, then what follows `rv`; `initial_end`: a bookmark
    /// marks the end of those events.
    Now { initial_end: bool },
    /// The events after `rv`.
    Version(u64),
}

async fn watch_start(
    req: &Request<'_>,
) -> Result<(LabelSelector, FieldSelector, From), CacheError> {
    let (labels, fields) = selectors(req)?;
    req.resource.cache().check_watch(&fields)?;
    let q = req.query;
    let bookmarks = q.get("allowWatchBookmarks") == Some("true");
    let asked = q.get("sendInitialEvents");
    let initial = asked == Some("true");
    let rvm = q.get("resourceVersionMatch").unwrap_or("");
    if asked.is_some() && rvm != "NotOlderThan" {
        return Err(CacheError::BadRequest(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
        ));
    }
    if asked.is_none() && !rvm.is_empty() {
        return Err(CacheError::BadRequest(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into(),
        ));
    }
    let named = named_version(q)?;
    if asked == Some("false") {
        // No initial events: what follows the version named, or the store's own.
        let rv = match named {
            Some(rv) => {
                fresh(req.resource, rv).await;
                rv
            }
            None => req.resource.cache().resource_version(),
        };
        return Ok((labels, fields, From::Version(rv)));
    }
    if let Some(rv) = named {
        // A version the store has not reached: it is waited for a little; the watch then
        // starts there whatever the store's version, so that nothing at or before it is sent.
        fresh(req.resource, rv).await;
        if initial {
            if req.resource.cache().resource_version() < rv {
                return Err(CacheError::TooNew { requested: rv });
            }
        } else {
            return Ok((labels, fields, From::Version(rv)));
        }
    }
    // As kube-apiserver 1.36 does: a watch from "any" version that allows bookmarks is told
    // where its initial events end, asked to or not.
    Ok((
        labels,
        fields,
        From::Now {
            initial_end: bookmarks,
        },
    ))
}

/// One watch being answered.
struct Watch<'r, 'a> {
    req: &'r Request<'a>,
    writer: BodyWriter,
    labels: LabelSelector,
    fields: FieldSelector,
    /// What is due to the client.
    out: Vec<u8>,
    /// The copy of the events for the client's own cache.
    tee: Option<Tee>,
}

impl Watch<'_, '_> {
    /// Sends one event line (newline-terminated) to the client and its cache copy.
    fn send(&mut self, line: &[u8]) {
        if let Some(t) = &mut self.tee {
            t.feed(line);
        }
        self.writer.encode(line, &mut self.out);
    }

    fn push_line(&mut self, line: &[u8]) {
        let line = match &self.req.chain {
            Some(c) => c.apply_event(line.strip_suffix(b"\n").unwrap_or(line)),
            None => line.to_vec(),
        };
        self.send(&line);
    }

    /// An object of the initial events; one the client's filters drop is left out (it was
    /// never the client's to see).
    fn push_initial(&mut self, bytes: &[u8]) {
        let mut line = Vec::with_capacity(bytes.len() + 32);
        line.extend_from_slice(br#"{"type":"ADDED","object":"#);
        let kept = match &self.req.chain {
            Some(c) => c.append_object(bytes, &mut line),
            None => {
                line.extend_from_slice(bytes);
                true
            }
        };
        if kept {
            line.extend_from_slice(b"}\n");
            self.send(&line);
        }
    }

    fn push_bookmark(&mut self, rv: u64, initial_end: bool) {
        let r = self.req.resource;
        let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = serde_json::json!({"type": "BOOKMARK",
            "object": {"kind": r.kind, "apiVersion": r.api_version, "metadata": meta}});
        let mut line = ev.to_string().into_bytes();
        line.push(b'\n');
        self.send(&line);
    }

    fn push_error(&mut self, e: &CacheError) {
        self.send(&error_event(e));
    }

    async fn flush(&mut self, conn: &mut ClientConn) -> bool {
        let ok = self.out.is_empty()
            || (conn.writer.write_all(&self.out).await.is_ok()
                && conn.writer.flush().await.is_ok());
        self.out.clear();
        // A burst (the initial events) must not stay with a watch that then idles for
        // minutes: a thousand of them would keep a thousand bursts.
        self.out.shrink_to(IDLE_BUFFER);
        ok
    }

    async fn run(&mut self, conn: &mut ClientConn, from: From) -> End {
        let resource = self.req.resource.clone();
        let resets = resource.resets();
        // `0` is no timeout to the apiserver (its default applies); a huge one is as good
        // as none, and must not overflow the clock.
        let timeout = match self
            .req
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
        {
            Some(s) => Duration::from_secs(s.min(MAX_WATCH_SECONDS)),
            None => crate::kube::time::watch_timeout(self.req.min_request_timeout),
        };
        let deadline = Instant::now() + timeout;
        let bookmarks = self.req.query.get("allowWatchBookmarks") == Some("true");
        let mut next_bookmark = Instant::now() + BOOKMARK_EVERY;
        let mut last = match from {
            From::Version(rv) => rv,
            From::Now { initial_end } => {
                let start = resource.cache().initial_events(&self.labels, &self.fields);
                let (items, rv) = match start {
                    Ok(s) => s,
                    Err(e) => {
                        self.push_error(&e);
                        return End::Complete;
                    }
                };
                for item in &items {
                    self.push_initial(&item.bytes);
                    if self.out.len() >= WRITE_PIECE && !self.flush(conn).await {
                        return End::Broken;
                    }
                }
                if initial_end {
                    self.push_bookmark(rv, true);
                }
                rv
            }
        };
        loop {
            let woken = resource.listen();
            if resource.retired() {
                // No longer a pool-scope resource: the client watches again, the
                // ordinary way.
                return End::Complete;
            }
            if resource.resets() != resets {
                // The store was listed again and could not tell the difference as events:
                // the client lists again too.
                self.push_error(&CacheError::Expired {
                    requested: last,
                    oldest: resource.cache().resource_version(),
                });
                return End::Complete;
            }
            let batch = {
                let c = resource.cache();
                let at = c.resource_version();
                let events = if last >= at {
                    Ok(Vec::new())
                } else {
                    c.events_since(last)
                };
                events.map(|e| (e, at))
            };
            match batch {
                Ok((events, at)) => {
                    for e in &events {
                        if let Some((kind, item)) = e.visible(&self.labels, &self.fields) {
                            let line = e.line(kind, item);
                            self.push_line(&line);
                        }
                    }
                    last = last.max(at);
                }
                Err(e) => {
                    // Events the client has not had fell out of the window (a client
                    // reading too slowly for the churn): it lists again.
                    self.push_error(&e);
                    return End::Complete;
                }
            }
            if bookmarks && Instant::now() >= next_bookmark {
                self.push_bookmark(last, false);
                next_bookmark = Instant::now() + BOOKMARK_EVERY;
            }
            if !self.flush(conn).await {
                return End::Broken;
            }
            enum Wake {
                Change,
                Tick,
                Gone,
                ShuttingDown,
            }
            let tick = if bookmarks {
                deadline.min(next_bookmark)
            } else {
                deadline
            };
            // The timer, the client and a shutdown are looked at before the store: a store
            // that changes at every turn must not keep a watch past its end.
            let wake = smol::future::or(
                smol::future::or(
                    async {
                        async_io::Timer::at(tick).await;
                        Wake::Tick
                    },
                    smol::future::or(
                        async {
                            conn.reader.closed().await;
                            Wake::Gone
                        },
                        async {
                            crate::runtime::shutting_down().await;
                            Wake::ShuttingDown
                        },
                    ),
                ),
                async {
                    woken.await;
                    Wake::Change
                },
            )
            .await;
            match wake {
                // A shutdown ends the watch cleanly: the client watches again elsewhere.
                Wake::ShuttingDown => return End::Complete,
                Wake::Gone => return End::Broken,
                Wake::Tick if Instant::now() >= deadline => return End::Complete,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_single_objects_go_the_ordinary_way() {
        let head = |target: &str, accept: &str| {
            let mut h = RequestHead::new("GET", target);
            h.headers.push("Accept", accept);
            (RequestInfo::classify("GET", target).unwrap(), h)
        };
        let (ri, h) = head(
            "/api/v1/services?watch=true",
            "application/vnd.kubernetes.protobuf, application/json",
        );
        assert!(servable(&ri, &h));
        let (ri, h) = head("/api/v1/namespaces/a/services", "application/json");
        assert!(servable(&ri, &h));
        let (ri, h) = head(
            "/api/v1/services",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        );
        assert!(!servable(&ri, &h));
        let (ri, h) = head("/api/v1/namespaces/a/services/x", "application/json");
        assert!(!servable(&ri, &h), "a get");
        let (ri, h) = head(
            "/api/v1/services?watch=true&fieldSelector=metadata.name%3Dx",
            "application/json",
        );
        assert!(servable(&ri, &h), "a watch of one object by name");
        let (ri, h) = head("/api/v1/namespaces/a/services/x/status", "application/json");
        assert!(!servable(&ri, &h));
    }

    #[test]
    fn a_token_is_answered_from_the_store_only_after_the_cloud_answered_it() {
        let r = Readers::default();
        assert!(!r.confirmed("t1", "/api/v1/services"));
        r.confirm("t1", "/api/v1/services");
        assert!(r.confirmed("t1", "/api/v1/services"));
        assert!(!r.confirmed("t1", "/apis/discovery.k8s.io/v1/endpointslices"));
        assert!(!r.confirmed("t2", "/api/v1/services"));
        for i in 0..MAX_READERS + 10 {
            r.confirm(&format!("other-{i}"), "/api/v1/services");
        }
        assert_eq!(r.seen.lock().unwrap().len(), MAX_READERS, "bounded");
    }

    #[test]
    fn statuses_read_as_the_apiservers() {
        let e = CacheError::Expired {
            requested: 1,
            oldest: 458,
        };
        // The line of the apiserver's own capture (06-watch-too-old-rv), byte for byte.
        assert_eq!(
            String::from_utf8(error_event(&e)).unwrap(),
            concat!(
                r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (458)","reason":"Expired","code":410}}"#,
                "\n"
            )
        );
        let busy = String::from_utf8(status_of(&CacheError::NotSynced).to_json()).unwrap();
        assert!(
            busy.contains(r#""reason":"TooManyRequests""#)
                && busy.contains(r#""retryAfterSeconds":1"#),
            "{busy}"
        );
    }
}

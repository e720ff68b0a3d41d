//! List-then-watch of one collection through the hub's own proxy, with the hub's User-Agent,
//! so the hub's own reads are cached and keep working offline (reference §13.2 item 13).
//! A small informer: the handler sees the listed items, then each watch event; it lists
//! once and re-watches from the last resourceVersion it saw (bookmarks keep that fresh),
//! and lists again only when the apiserver answers 410 Gone.

use async_io::{Async, Timer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use smol::io::AsyncWriteExt;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::{BodyReader, Framing, Limits, Reader, RequestHead};
use crate::kube::Lines;

/// What an informer tells its owner.
pub trait Handler: Send + Sync {
    /// The whole collection as listed (it replaces what was known).
    fn replace(&self, items: &[Value]);
    /// The whole collection as listed at `rv`; by default [`Handler::replace`].
    fn replace_at(&self, items: &[Value], rv: &str) {
        let _ = rv;
        self.replace(items);
    }
    /// The whole collection as listed at `rv`, each item as the list carried it. By default
    /// parsed and given to [`Handler::replace_at`]; a handler that keeps bytes takes them
    /// one item at a time instead, never holding the whole list parsed.
    fn replace_raw(&self, items: &[&RawValue], rv: &str) {
        let values: Vec<Value> = items
            .iter()
            .filter_map(|i| serde_json::from_str(i.get()).ok())
            .collect();
        self.replace_at(&values, rv);
    }
    /// A bookmark: the collection is at `rv`, with no change since the last event.
    fn bookmark(&self, rv: &str) {
        let _ = rv;
    }
    /// An object added or modified.
    fn upsert(&self, obj: &Value);
    /// An object deleted.
    fn delete(&self, obj: &Value);
    /// The list answered 404: the collection does not exist (a CRD not installed), or,
    /// offline, nothing is cached yet.
    fn missing(&self) {}
    /// The list answered `status`, not 200 (after [`Handler::missing`] for a 404).
    fn refused(&self, status: u16) {
        let _ = status;
    }
}

/// A handler shared with others (the hub keeps reading what it hands an informer).
impl<H: Handler + ?Sized> Handler for std::sync::Arc<H> {
    fn replace(&self, items: &[Value]) {
        (**self).replace(items)
    }
    fn replace_at(&self, items: &[Value], rv: &str) {
        (**self).replace_at(items, rv)
    }
    fn replace_raw(&self, items: &[&RawValue], rv: &str) {
        (**self).replace_raw(items, rv)
    }
    fn bookmark(&self, rv: &str) {
        (**self).bookmark(rv)
    }
    fn upsert(&self, obj: &Value) {
        (**self).upsert(obj)
    }
    fn delete(&self, obj: &Value) {
        (**self).delete(obj)
    }
    fn missing(&self) {
        (**self).missing()
    }
    fn refused(&self, status: u16) {
        (**self).refused(status)
    }
}

/// A list as read: its version, and its items left unparsed (borrowed from the body).
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default, borrow)]
    metadata: RawListMeta<'a>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Default, Deserialize)]
struct RawListMeta<'a> {
    #[serde(rename = "resourceVersion", default, borrow)]
    resource_version: Option<std::borrow::Cow<'a, str>>,
}

/// Why one round of list-and-watch ended.
#[derive(Debug)]
enum RoundError {
    Io(String),
    Status(u16),
    Gone,
}

impl std::fmt::Display for RoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoundError::Io(e) => write!(f, "{e}"),
            RoundError::Status(s) => write!(f, "answered {s}"),
            RoundError::Gone => write!(f, "resource version expired"),
        }
    }
}

/// The largest list (and watch event) an informer reads.
const MAX_LIST: usize = 16 * 1024 * 1024;

/// Where the hub's informers read, and how long their watches run.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// The hub's own plain proxy.
    pub proxy: SocketAddr,
    /// Each watch asks for a random `timeoutSeconds` in [t, 2t) (client-go's reflector and
    /// upstream YurtHub: 5 to 10 minutes), then re-watches from where it was.
    pub min_watch_timeout: Duration,
}

/// One collection, e.g. `/api/v1/services` or a path with a field selector.
pub struct Informer {
    source: Source,
    path: String,
    what: &'static str,
    user_agent: String,
}

impl Informer {
    /// Lists and watches `path` (which may carry a query) through `source`; `what` names it
    /// in the log.
    pub fn new(source: Source, path: impl Into<String>, what: &'static str) -> Self {
        Self {
            source,
            path: path.into(),
            what,
            user_agent: crate::kube::HUB_USER_AGENT.to_string(),
        }
    }

    /// Reads as `user_agent` (a component of the hub's own, whose answers the cache keeps
    /// apart) instead of the hub's own User-Agent.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The path with `query` added.
    fn with_query(&self, query: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.path)
    }

    async fn request(
        &self,
        target: &str,
    ) -> Result<(u16, Reader<Async<TcpStream>>, BodyReader), RoundError> {
        let io = |e: std::io::Error| RoundError::Io(e.to_string());
        let mut stream = Async::<TcpStream>::connect(self.source.proxy)
            .await
            .map_err(io)?;
        let mut head = RequestHead::new("GET", target);
        head.headers.push("Host", self.source.proxy.to_string());
        head.headers.push("User-Agent", self.user_agent.as_str());
        head.headers.push("Accept", "application/json");
        let mut out = Vec::new();
        head.write_to(&mut out);
        stream.write_all(&out).await.map_err(io)?;
        let mut reader = Reader::new(stream);
        let resp = reader
            .read_response_head(&Limits::default())
            .await
            .map_err(|e| RoundError::Io(e.to_string()))?;
        let framing =
            Framing::of_response(&resp, "GET").map_err(|e| RoundError::Io(e.to_string()))?;
        Ok((resp.status, reader, BodyReader::new(framing)))
    }

    /// Lists the collection (from the apiserver's watch cache: `resourceVersion=0`, not a
    /// quorum read of etcd); its resourceVersion.
    async fn list(&self, handler: &dyn Handler) -> Result<String, RoundError> {
        let (status, mut reader, mut body) =
            self.request(&self.with_query("resourceVersion=0")).await?;
        let mut bytes = Vec::new();
        while body
            .read(&mut reader, &mut bytes)
            .await
            .map_err(|e| RoundError::Io(e.to_string()))?
            > 0
        {
            if bytes.len() > MAX_LIST {
                return Err(RoundError::Io(format!("{} list too large", self.what)));
            }
        }
        let list: RawList<'_> = match status {
            200 => serde_json::from_slice(&bytes).map_err(|e| RoundError::Io(e.to_string()))?,
            404 => {
                handler.missing();
                handler.refused(404);
                return Err(RoundError::Status(404));
            }
            s => {
                handler.refused(s);
                return Err(RoundError::Status(s));
            }
        };
        let rv = list
            .metadata
            .resource_version
            .map_or_else(|| "0".to_string(), |v| v.into_owned());
        handler.replace_raw(&list.items.unwrap_or_default(), &rv);
        Ok(rv)
    }

    /// One watch from `rv` until it ends; `rv` follows every event and bookmark, so the next
    /// watch starts where this one stopped. A watch that outlives its own `timeoutSeconds`
    /// by far sits on a dead link (a NAT that forgot it, silently): it is given up.
    async fn watch(&self, handler: &dyn Handler, rv: &mut String) -> Result<(), RoundError> {
        let timeout = crate::kube::time::watch_timeout(self.source.min_watch_timeout);
        let deadline = timeout + timeout / 10 + Duration::from_secs(5);
        let target = self.with_query(&format!(
            "watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds={}",
            timeout.as_secs().max(1)
        ));
        let watched = self.watch_until_end(handler, rv, &target);
        smol::future::or(watched, async {
            Timer::after(deadline).await;
            Err(RoundError::Io(format!(
                "no end {}s past its timeout: the link is dead",
                (deadline - timeout).as_secs()
            )))
        })
        .await
    }

    async fn watch_until_end(
        &self,
        handler: &dyn Handler,
        rv: &mut String,
        target: &str,
    ) -> Result<(), RoundError> {
        let (status, mut reader, mut body) = self.request(target).await?;
        match status {
            200 => {}
            410 => return Err(RoundError::Gone),
            s => return Err(RoundError::Status(s)),
        }
        let mut piece = Vec::new();
        let mut lines = Lines::new(MAX_LIST);
        loop {
            piece.clear();
            let n = body
                .read(&mut reader, &mut piece)
                .await
                .map_err(|e| RoundError::Io(e.to_string()))?;
            if n == 0 {
                return Ok(());
            }
            // An ERROR event ends the watch; what follows it is not applied.
            let mut error = None;
            lines
                .push(&piece, |line| {
                    if error.is_some() {
                        return;
                    }
                    let Ok(ev) = serde_json::from_slice::<Value>(line) else {
                        return;
                    };
                    let obj = &ev["object"];
                    match ev["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => handler.upsert(obj),
                        Some("DELETED") => handler.delete(obj),
                        Some("BOOKMARK") => {
                            if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                                handler.bookmark(v);
                            }
                        }
                        Some("ERROR") => {
                            error = Some(obj["code"].as_u64().unwrap_or(0));
                            return;
                        }
                        _ => {}
                    }
                    if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                        *rv = v.to_string();
                    }
                })
                .map_err(|e| RoundError::Io(e.to_string()))?;
            match error {
                Some(410) => return Err(RoundError::Gone),
                Some(code) => return Err(RoundError::Status(code as u16)),
                None => {}
            }
        }
    }

    /// Lists once, then watches forever from the last resourceVersion seen, as client-go's
    /// reflector does: a list again only when the apiserver no longer has that version
    /// (410 Gone), or when no list has succeeded yet; backs off after failures.
    pub async fn run(self, handler: impl Handler) {
        let mut backoff = Duration::from_millis(200);
        let mut rv: Option<String> = None;
        loop {
            let started = std::time::Instant::now();
            let result = match &mut rv {
                None => self.list(&handler).await.map(|v| rv = Some(v)),
                Some(v) => self.watch(&handler, v).await,
            };
            match result {
                Ok(()) if rv.is_some() && started.elapsed() < Duration::from_secs(1) => {
                    // A watch that ends at once (an offline answer, or a server closing it
                    // at once) must not become a tight loop.
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    if matches!(e, RoundError::Gone) {
                        log::info!(
                            "{} watch: resource version expired; listing again",
                            self.what
                        );
                        rv = None;
                    } else {
                        log::debug!("{} watch ended: {e}; retrying in {backoff:?}", self.what);
                    }
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

//! List-then-watch of one collection through the hub's own proxy, with the hub's User-Agent,
//! so the hub's own reads are cached and keep working offline (reference §13.2 item 13).
//! A small informer: the handler sees the listed items, then each watch event; after a
//! failure or an expired resourceVersion it lists again.

use async_io::{Async, Timer};
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
    /// An object added or modified.
    fn upsert(&self, obj: &Value);
    /// An object deleted.
    fn delete(&self, obj: &Value);
    /// The list answered 404: the collection does not exist (a CRD not installed), or,
    /// offline, nothing is cached yet.
    fn missing(&self) {}
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

/// One collection, e.g. `/api/v1/services` or a path with a field selector.
pub struct Informer {
    proxy: SocketAddr,
    path: String,
    what: &'static str,
}

impl Informer {
    /// Lists and watches `path` (which may carry a query) through the proxy at `proxy`;
    /// `what` names it in the log.
    pub fn new(proxy: SocketAddr, path: impl Into<String>, what: &'static str) -> Self {
        Self {
            proxy,
            path: path.into(),
            what,
        }
    }

    async fn request(
        &self,
        target: &str,
    ) -> Result<(u16, Reader<Async<TcpStream>>, BodyReader), RoundError> {
        let io = |e: std::io::Error| RoundError::Io(e.to_string());
        let mut stream = Async::<TcpStream>::connect(self.proxy).await.map_err(io)?;
        let mut head = RequestHead::new("GET", target);
        head.headers.push("Host", self.proxy.to_string());
        head.headers.push("User-Agent", crate::kube::HUB_USER_AGENT);
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

    /// One list, then one watch until it ends.
    async fn round(&self, handler: &dyn Handler) -> Result<(), RoundError> {
        let (status, mut reader, mut body) = self.request(&self.path).await?;
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
        let list: Value = match status {
            200 => serde_json::from_slice(&bytes).map_err(|e| RoundError::Io(e.to_string()))?,
            404 => {
                handler.missing();
                return Err(RoundError::Status(404));
            }
            s => return Err(RoundError::Status(s)),
        };
        handler.replace(list["items"].as_array().map_or(&[][..], Vec::as_slice));
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let (status, mut reader, mut body) = self
            .request(&format!(
                "{}{sep}watch=true&resourceVersion={rv}&timeoutSeconds=300",
                self.path
            ))
            .await?;
        if status != 200 {
            return Err(RoundError::Status(status));
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
            // An ERROR event ends the round; what follows it is not applied.
            let mut gone = false;
            lines
                .push(&piece, |line| {
                    if gone {
                        return;
                    }
                    let Ok(ev) = serde_json::from_slice::<Value>(line) else {
                        return;
                    };
                    match ev["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => handler.upsert(&ev["object"]),
                        Some("DELETED") => handler.delete(&ev["object"]),
                        Some("ERROR") => gone = true,
                        _ => {}
                    }
                })
                .map_err(|e| RoundError::Io(e.to_string()))?;
            if gone {
                return Err(RoundError::Gone);
            }
        }
    }

    /// Lists and watches forever, backing off after failures.
    pub async fn run(self, handler: impl Handler) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = std::time::Instant::now();
            match self.round(&handler).await {
                // A watch that ran a while ended normally; one that ended at once is a
                // failure in disguise and must not turn into a tight relist loop.
                Ok(()) if started.elapsed() >= Duration::from_secs(5) => {
                    backoff = Duration::from_millis(200)
                }
                Ok(()) => {
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    log::debug!("{} watch ended: {e}; retrying in {backoff:?}", self.what);
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

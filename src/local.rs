//! Answers from the cache while the cloud is unreachable, with upstream YurtHub's status codes
//! and semantics (reference §4): reads from the cache, watches held open without events,
//! writes acknowledged but not applied, deletes refused.

use serde_json::{json, Value};
use smol::io::AsyncWriteExt;
use std::time::Duration;

use crate::cache::{self, Cache, NotCached, ObjectKey, Shape, Target, ViewKey};
use crate::health::Health;
use crate::http::url::Query;
use crate::http::{BodyReader, Framing, RequestHead, ResponseHead};
use crate::kube::{FieldSelector, LabelSelector, RequestInfo};
use crate::server::{refuse, respond, ClientConn, Refusal};

mod token;

use token::TokenRequestSpec;

/// The largest request body read for an offline create.
const MAX_OFFLINE_BODY: usize = 1024 * 1024;

/// What the cache knows of a list.
enum Listed {
    /// Its items (possibly none: the cloud answered it empty) and resourceVersion.
    Items(Vec<Vec<u8>>, u64),
    /// Nothing: no list with these selectors was seen and no cached object matches.
    NotCached,
    /// The cloud's last answer was too large to cache.
    TooLarge,
    /// The list was dropped whole to keep the cache within its byte budget.
    Evicted,
    /// Updates to it were dropped (a full cache queue) since it was last listed, or some of
    /// its members are not on disk.
    Stale,
}

impl Listed {
    /// The items and resourceVersion, or why the list is not answered.
    fn items(self, resource: &str) -> Result<(Vec<Vec<u8>>, u64), Refusal> {
        match self {
            Listed::Items(items, rv) => Ok((items, rv)),
            Listed::NotCached => Err(Refusal::NotCached(resource.to_string())),
            Listed::TooLarge => Err(Refusal::ListTooLarge(resource.to_string())),
            Listed::Evicted => Err(Refusal::ListEvicted(resource.to_string())),
            Listed::Stale => Err(Refusal::ListIncomplete(resource.to_string())),
        }
    }
}

fn api_version(ri: &RequestInfo) -> String {
    if ri.api_group.is_empty() {
        ri.api_version.clone()
    } else {
        format!("{}/{}", ri.api_group, ri.api_version)
    }
}

/// Offline answers.
pub struct Local {
    cache: Cache,
    health: std::sync::Arc<Health>,
    min_request_timeout: Duration,
    event_budget: EventBudget,
}

/// The largest Event taken offline (kubelet's are about 1 KiB).
const MAX_OFFLINE_EVENT_BYTES: usize = 16 * 1024;
/// How many Events created offline are stored per hour; with the size above and the Event
/// TTL, this bounds what offline creates put on disk (and Events are evicted first).
const OFFLINE_EVENTS_PER_HOUR: u32 = 500;

/// Offline Events stored in the current hour.
#[derive(Default)]
struct EventBudget(std::sync::Mutex<Option<(std::time::Instant, u32)>>);

impl EventBudget {
    /// Whether one more may be stored now.
    fn take(&self) -> bool {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (since, n) = b.get_or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(3600) {
            (*since, *n) = (now, 0);
        }
        *n += 1;
        *n <= OFFLINE_EVENTS_PER_HOUR
    }
}

async fn json_response(conn: &mut ClientConn, head_only: bool, status: u16, body: &[u8]) -> bool {
    typed_response(conn, head_only, status, "application/json", body).await
}

async fn typed_response(
    conn: &mut ClientConn,
    head_only: bool,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> bool {
    let mut head = ResponseHead::new(status);
    head.headers.push("Content-Type", content_type);
    head.headers.push("Cache-Control", "no-cache, private");
    if head_only {
        // A HEAD answer carries the GET answer's length but no body.
        head.headers.push("Content-Length", body.len().to_string());
        let mut out = Vec::new();
        head.write_to(&mut out);
        return conn.writer.write_all(&out).await.is_ok() && conn.writer.flush().await.is_ok();
    }
    respond(&mut conn.writer, head, body).await.is_ok()
}

async fn status(conn: &mut ClientConn, head_only: bool, r: Refusal) -> bool {
    if head_only {
        return json_response(conn, true, r.code(), &r.status().to_json()).await;
    }
    refuse(&mut conn.writer, &r, false).await.is_ok()
}

/// The 404 for something the cache has never seen.
async fn not_cached(conn: &mut ClientConn, head_only: bool, what: &str) -> bool {
    status(conn, head_only, Refusal::NotCached(what.to_string())).await
}

fn not_found(ri: &RequestInfo) -> Refusal {
    Refusal::NotFound {
        group: ri.api_group.clone(),
        resource: ri.resource.clone(),
        name: ri.name.clone(),
    }
}

/// Reads the client's request body (bounded); `None` when it is too large or broken.
async fn read_body(conn: &mut ClientConn, framing: Framing) -> Option<Vec<u8>> {
    let mut body = BodyReader::new(framing);
    let mut out = Vec::new();
    loop {
        match body.read(&mut conn.reader, &mut out).await {
            Ok(0) => return Some(out),
            Ok(_) if out.len() > MAX_OFFLINE_BODY => return None,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

impl Local {
    /// Offline answers from `cache`; held watches end when `health` sees the cloud again.
    pub fn new(
        cache: Cache,
        health: std::sync::Arc<Health>,
        min_request_timeout: Duration,
    ) -> Self {
        Self {
            cache,
            health,
            min_request_timeout,
            event_budget: EventBudget::default(),
        }
    }

    /// The objects a list would return offline, and the list's resourceVersion: the view
    /// this exact list filled online, or else the selectors evaluated over every cached object.
    async fn list_objects(&self, t: &Target) -> Listed {
        let cache = self.cache.clone();
        let t = t.clone();
        smol::unblock(move || {
            // A view that missed events (queue overflow) may be partial: it is not served,
            // and neither is a guess from the objects (they may be partial the same way).
            if cache.is_stale(&t.component, &t.resource, &t.view) {
                return Listed::Stale;
            }
            let snapshot = cache.view(&t.component, &t.resource, &t.view);
            let mut items = Vec::new();
            let mut rv = 0u64;
            let mut push = |bytes: Vec<u8>| {
                if let Some(o) = crate::cache::Object::parse(&String::from_utf8_lossy(&bytes), None)
                {
                    rv = rv.max(o.rv);
                }
                items.push(bytes);
            };
            // A view's member, read; one without its file (evicted or collected a moment ago,
            // or a write that failed) would make the answer partial.
            let member = |(ns, name): &(String, String)| {
                cache.get(&ObjectKey {
                    component: t.component.clone(),
                    resource: t.resource.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                })
            };
            // A view only watch events filled does not know its list.
            if let Some(v) = snapshot.filter(|v| !v.unlisted || v.withheld()) {
                if v.too_large {
                    return Listed::TooLarge;
                }
                if v.evicted {
                    return Listed::Evicted;
                }
                for m in &v.members {
                    match member(m) {
                        Some(b) => push(b),
                        None => return Listed::Stale,
                    }
                }
                // A list the cloud answered empty is cached empty, and answered so.
                return Listed::Items(items, rv);
            }
            let (Ok(labels), Ok(fields)) = (
                LabelSelector::parse(&t.view.label_selector),
                FieldSelector::parse(&t.view.field_selector),
            ) else {
                return Listed::NotCached;
            };
            // A cache adopted from upstream YurtHub holds, per type, what upstream had cached
            // under whatever selectors it listed: its lists are answered from that, with their
            // own selectors, as upstream would have answered them (empty ones too).
            let whole = ViewKey::default();
            if let Some(v) = cache
                .view(&t.component, &t.resource, &whole)
                .filter(|v| v.adopted && !v.withheld())
            {
                if cache.is_stale(&t.component, &t.resource, &whole) {
                    return Listed::Stale;
                }
                // Upstream answered a namespace's list only if it had its directory, and
                // PartialObjectMetadata carries no fields but metadata to select on.
                let ns = &t.view.namespace;
                if (!ns.is_empty() && !v.adopted_namespaces.contains(ns))
                    || (t.metadata_only && fields.fields().any(|f| !f.starts_with("metadata.")))
                {
                    return Listed::NotCached;
                }
                for m in v.members.iter().filter(|m| ns.is_empty() || m.0 == *ns) {
                    let Some(bytes) = member(m) else {
                        return Listed::Stale;
                    };
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(v) if selected(&v, &labels, &fields) => push(bytes),
                        Ok(_) => {}
                        Err(_) => return Listed::Stale,
                    }
                }
                return Listed::Items(items, rv);
            }
            // No list with these selectors was seen: the selectors over the objects that were
            // cached (by gets, or by lists with other selectors) answer it, but "nothing" is
            // not an answer: an empty list would tell kube-proxy there are no Services.
            // Objects of a type whose lists were evicted or too large are a partial set.
            if cache.any_withheld(&t.component, &t.resource) {
                return Listed::NotCached;
            }
            let ns = (!t.view.namespace.is_empty()).then_some(t.view.namespace.as_str());
            let Ok(all) = cache.store().list(&t.component, &t.resource, ns) else {
                return Listed::NotCached;
            };
            for (_, bytes) in all {
                let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                if selected(&v, &labels, &fields) {
                    push(bytes);
                }
            }
            if items.is_empty() {
                Listed::NotCached
            } else {
                Listed::Items(items, rv)
            }
        })
        .await
    }

    fn list_body(ri: &RequestInfo, t: &Target, items: &[Vec<u8>], rv: u64) -> Option<Vec<u8>> {
        let kind = match items
            .first()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        {
            Some(v) => v["kind"].as_str().map(str::to_string)?,
            None if t.metadata_only => "PartialObjectMetadata".to_string(),
            None => crate::kube::kind_of(&ri.resource)?.to_string(),
        };
        let api_version = if t.metadata_only {
            "meta.k8s.io/v1".to_string()
        } else {
            api_version(ri)
        };
        let mut out = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
            Value::from(format!("{kind}List")),
            Value::from(api_version)
        )
        .into_bytes();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        Some(out)
    }

    /// Answers a read with the cached object under `key`, if there is one: `None` when it is
    /// not cached (nothing was sent), else whether the connection may carry another request.
    pub async fn object(
        &self,
        conn: &mut ClientConn,
        head_only: bool,
        key: ObjectKey,
    ) -> Option<bool> {
        let cache = self.cache.clone();
        let bytes = smol::unblock(move || cache.get(&key)).await?;
        Some(Self::object_bytes(conn, head_only, &bytes).await)
    }

    /// Answers a read with `object`, which the hub holds already (the answer to its own
    /// patch of it, say, on its way to the cache); whether the connection may carry another
    /// request.
    pub async fn object_bytes(conn: &mut ClientConn, head_only: bool, object: &[u8]) -> bool {
        json_response(conn, head_only, 200, object).await
    }

    /// Answers one request from the cache. Returns whether the connection may carry another.
    pub async fn serve(
        &self,
        conn: &mut ClientConn,
        head: &RequestHead,
        framing: Framing,
        ri: &RequestInfo,
        component: Option<&str>,
        target: Result<Target, NotCached>,
    ) -> bool {
        let head_only = head.method == "HEAD";
        // Whatever the answer, the request's body must be consumed, or it would be read as
        // the next request (kubelet's lease PUTs are answered here even online).
        if ri.verb != "create"
            && framing != Framing::Empty
            && read_body(conn, framing).await.is_none()
        {
            return false;
        }
        if !ri.is_resource_request {
            if head.method == "GET" || head_only {
                if let Some(file) = cache::cached_path_file(&ri.path) {
                    let cache = self.cache.clone();
                    let name = file.to_string();
                    return match smol::unblock(move || cache.get_raw(&name)).await {
                        Some(b) => json_response(conn, head_only, 200, &b).await,
                        None => not_cached(conn, head_only, &ri.path).await,
                    };
                }
            }
            return status(
                conn,
                head_only,
                Refusal::Unsupported {
                    verb: ri.verb.clone(),
                    path: ri.path.clone(),
                },
            )
            .await;
        }
        match ri.verb.as_str() {
            "delete" | "deletecollection" => {
                return status(
                    conn,
                    head_only,
                    Refusal::DeleteOffline {
                        group: ri.api_group.clone(),
                        resource: ri.resource.clone(),
                        name: ri.name.clone(),
                    },
                )
                .await
            }
            "create" if is_review(ri) => {
                // A review asks the cloud to decide (may this user do that? who holds this
                // token?): no cached answer would be true, so, as upstream does for kubelet's
                // SubjectAccessReviews, none is given.
                return status(conn, head_only, Refusal::ReviewOffline).await;
            }
            "create" => {
                return self
                    .create(conn, head, framing, ri, component, target.ok())
                    .await
            }
            _ => {}
        }
        let t = match target {
            Ok(t) => t,
            Err(why) => {
                log::debug!("offline {} {}: not cacheable: {why}", ri.verb, ri.resource);
                return status(
                    conn,
                    head_only,
                    Refusal::NotCacheable {
                        component: component.unwrap_or("").to_string(),
                        verb: ri.verb.clone(),
                        resource: ri.resource.clone(),
                        target: head.target.clone(),
                    },
                )
                .await;
            }
        };
        match t.shape {
            Shape::Object => {
                let cache = self.cache.clone();
                let key = t.object_key(&ri.name);
                match smol::unblock(move || cache.get(&key)).await {
                    Some(b) => json_response(conn, head_only, 200, &b).await,
                    None => status(conn, head_only, not_found(ri)).await,
                }
            }
            Shape::List { .. } => {
                let (items, rv) = match self.list_objects(&t).await.items(&ri.resource) {
                    Ok(listed) => listed,
                    Err(r) => return status(conn, head_only, r).await,
                };
                // An empty pod list would make kubelet stop every pod: upstream answers 404.
                if items.is_empty() && t.component == "kubelet" && ri.resource == "pods" {
                    return status(conn, head_only, Refusal::NoPodsCached).await;
                }
                match Self::list_body(ri, &t, &items, rv) {
                    Some(body) => json_response(conn, head_only, 200, &body).await,
                    None => not_cached(conn, head_only, &ri.resource).await,
                }
            }
            Shape::Watch { watch_list } => self.watch(conn, head, ri, &t, watch_list).await,
        }
    }

    /// Echoes the request body with its own `Content-Type` and 201, as upstream does (so a
    /// protobuf create gets its protobuf back); answers TokenRequests with a fake token; keeps
    /// created Events so that later offline patches find them.
    async fn create(
        &self,
        conn: &mut ClientConn,
        head: &RequestHead,
        framing: Framing,
        ri: &RequestInfo,
        component: Option<&str>,
        target: Option<Target>,
    ) -> bool {
        // Offline, creates are echoed only to the node itself (kubelet registers its node,
        // CSINode and mirror pods, and reports Events), never to a pod with a token, whose
        // body is not even read; TokenRequests are answered to all as before.
        let token_request = ri.resource == "serviceaccounts" && ri.subresource == "token";
        let node_identity = conn.may_use_node_identity() && !head.headers.contains("authorization");
        if !node_identity && !token_request {
            let _ = status(conn, false, Refusal::CreateOffline(ri.resource.clone())).await;
            return false;
        }
        let Some(body) = read_body(conn, framing).await else {
            let _ = status(conn, false, Refusal::BadBody).await;
            return false;
        };
        let content_type = head
            .headers
            .get_str("content-type")
            .unwrap_or("application/json");
        if token_request {
            return match TokenRequestSpec::from_body(&body, Some(content_type)) {
                Ok(spec) => {
                    let out = token::answer(&ri.namespace, &ri.name, &spec);
                    json_response(conn, false, 201, &out).await
                }
                Err(e) => status(conn, false, Refusal::BadTokenRequest(e.to_string())).await,
            };
        }
        // Of the node's creates, only small Events are stored, within an hourly share, so no
        // client fills the disk.
        if ri.resource == "events" {
            if body.len() > MAX_OFFLINE_EVENT_BYTES {
                return status(conn, false, Refusal::EventTooLargeOffline).await;
            }
            if let (Some(t), Some(_)) = (&target, component) {
                // Stored so that later offline patches (count bumps) find the event; past
                // the hour's share it is answered but not kept (Events are best effort).
                if self.event_budget.take() {
                    self.cache.put(&t.component, &t.resource, body.clone());
                }
            }
        }
        typed_response(conn, false, 201, content_type, &body).await
    }

    async fn watch(
        &self,
        conn: &mut ClientConn,
        head: &RequestHead,
        ri: &RequestInfo,
        t: &Target,
        watch_list: bool,
    ) -> bool {
        // A watch-list's initial events are the list: nothing known is no answer either.
        let initial = if watch_list {
            match self.list_objects(t).await.items(&ri.resource) {
                Ok(listed) => Some(listed),
                Err(r) => return status(conn, false, r).await,
            }
        } else {
            None
        };
        let mut rhead = ResponseHead::new(200);
        rhead.headers.push("Content-Type", "application/json");
        rhead.headers.push("Cache-Control", "no-cache, private");
        rhead.headers.push("Transfer-Encoding", "chunked");
        let mut out = Vec::new();
        rhead.write_to(&mut out);
        if let Some((items, rv)) = initial {
            for item in &items {
                let mut ev = b"{\"type\":\"ADDED\",\"object\":".to_vec();
                ev.extend_from_slice(item);
                ev.extend_from_slice(b"}\n");
                chunk(&mut out, &ev);
            }
            let kind = items
                .first()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["kind"].as_str().map(str::to_string))
                .or_else(|| crate::kube::kind_of(&ri.resource).map(str::to_string))
                .unwrap_or_default();
            let bookmark = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version(ri),
                "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
            let mut ev = serde_json::to_vec(&bookmark).unwrap_or_default();
            ev.push(b'\n');
            chunk(&mut out, &ev);
        }
        if conn.writer.write_all(&out).await.is_err() || conn.writer.flush().await.is_err() {
            return false;
        }
        let query = Query::parse(head.query());
        let hold = match query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => Duration::from_secs(s),
            None => crate::kube::time::watch_timeout(self.min_request_timeout),
        };
        enum End {
            Timeout,
            CloudBack,
            ClientGone,
        }
        let end = smol::future::or(
            async {
                async_io::Timer::after(hold).await;
                End::Timeout
            },
            smol::future::or(
                async {
                    // A returning cloud or a shutdown ends the watch cleanly: clients re-watch.
                    smol::future::or(self.health.wait_healthy(), crate::runtime::shutting_down())
                        .await;
                    End::CloudBack
                },
                async {
                    conn.reader.closed().await;
                    End::ClientGone
                },
            ),
        )
        .await;
        if matches!(end, End::ClientGone) {
            return false;
        }
        if matches!(end, End::CloudBack) {
            log::debug!("offline watch of {} ended: the cloud is back", ri.resource);
        }
        conn.writer.write_all(b"0\r\n\r\n").await.is_ok() && conn.writer.flush().await.is_ok()
    }
}

/// The review resources (`SubjectAccessReview`, `TokenReview`, ...): questions only the cloud
/// can answer.
fn is_review(ri: &RequestInfo) -> bool {
    matches!(
        ri.api_group.as_str(),
        "authorization.k8s.io" | "authentication.k8s.io"
    ) && ri.resource.ends_with("reviews")
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Whether an object matches label and field selectors (fields: any dotted path; those
/// kube-apiserver indexes are `metadata.name`, `metadata.namespace`, `spec.nodeName`).
pub fn selected(obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches_object(obj) && fields.matches_object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_over_stored_objects() {
        let pod = json!({"metadata": {"name": "p", "namespace": "a", "labels": {"app": "web"}}, "spec": {"nodeName": "n1"}});
        let l = LabelSelector::parse("app in (web,db)").unwrap();
        let f = FieldSelector::parse("spec.nodeName=n1,metadata.namespace=a").unwrap();
        assert!(selected(&pod, &l, &f));
        assert!(!selected(
            &pod,
            &l,
            &FieldSelector::parse("spec.nodeName=n2").unwrap()
        ));
    }

    #[test]
    fn field_selectors_see_booleans_and_numbers_as_the_apiserver_does() {
        let all = LabelSelector::parse("").unwrap();
        let sel = |s: &str| FieldSelector::parse(s).unwrap();
        let plain = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let host =
            json!({"metadata": {"name": "h"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        assert!(selected(&plain, &all, &sel("spec.hostNetwork=false")));
        assert!(selected(&plain, &all, &sel("spec.hostNetwork!=true")));
        assert!(!selected(&plain, &all, &sel("spec.hostNetwork=true")));
        assert!(selected(
            &host,
            &all,
            &sel("spec.hostNetwork=true,spec.nodeName=n1")
        ));
        assert!(!selected(&host, &all, &sel("spec.hostNetwork=false")));
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(selected(&node, &all, &sel("spec.unschedulable=false")));
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod"}});
        assert!(selected(&event, &all, &sel("involvedObject.kind=Pod")));
    }
}

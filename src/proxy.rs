//! The routing of one request: classify it, send it to the cloud, and stream the answer back,
//! or tunnel it when it switches protocols.
//!
//! Responses are streamed piece by piece as they arrive (every watch event and log line is
//! flushed at once) while the client's side is watched: a client that goes away closes the
//! upstream request.

pub mod autonomy;
mod filtered;
mod leader;
mod multiplexed;
pub mod route;
mod tee;
mod tunnel;

pub use multiplexed::BOOKMARK_EVERY;
pub use tee::Tee;

use smol::io::AsyncWriteExt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::cache::owners::Owner;
use crate::cache::tokens::Tokens;
use crate::cache::{self, Agents, Cache, NotCached, Shape, Target};
use crate::filter::Filters;
use crate::health::Health;
use crate::http::gzip::GzipDecoder;
use crate::http::url::Query;
use crate::http::{BodyReader, BodyWriter, Framing, RequestHead};
use crate::kube::{self, RequestInfo};
use crate::local::Local;
use crate::log_repeats::Repeats;
use crate::metrics::{Metrics, RefusalReason, RequestLabels};
use crate::multiplexer::{Multiplexer, Resource};
use crate::server::{self, ClientConn, Gate, Refusal};
use crate::upstream::{
    self, Body, Identity, Leaders, Negotiated, Response, Upstream, UpstreamError,
};

pub use leader::Followers;
use route::{Facts, Route};

/// Requests that found no cloud: the first of a kind is logged, its repeats once a minute (the
/// cloud's state change has a line of its own, from [`health`](crate::health)).
static UNREACHABLE: Repeats = Repeats::new(std::time::Duration::from_secs(60));

/// Failed updates of the node's `Autonomy` condition: kubelet reads its Node every 10 s.
static AUTONOMY_FAILED: Repeats = Repeats::new(std::time::Duration::from_secs(600));

/// Request bodies up to this size are read before sending, so another server can be tried.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// The most bytes gathered, or unpacked from gzip, per write to the client.
const RELAY_PIECE: usize = 64 * 1024;

/// The request identity: a pod's bearer token travels as it is, without the node certificate.
fn identity_of(head: &RequestHead) -> Identity {
    let bearer = head
        .headers
        .get("authorization")
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "));
    if bearer {
        Identity::Bearer
    } else {
        Identity::Node
    }
}

/// `work`, unless `moved` comes first: then `cut`. The multiplexer's own watch (from the
/// cloud, a leader or the disk) ends when the leader hubs that answer change (or, read
/// elsewhere than from a leader that answers, after a while), and its informer watches
/// again, from its last version, where it should read now.
async fn unless_moved<T>(
    work: impl std::future::Future<Output = T>,
    moved: Option<impl std::future::Future<Output = ()>>,
    path: &str,
    cut: T,
) -> T {
    let Some(moved) = moved else {
        return work.await;
    };
    smol::future::or(work, async {
        moved.await;
        log::info!("multiplexer {path}: watching again, where the leader hubs say now");
        cut
    })
    .await
}

/// Answers from the cache; the multiplexer's own watch ends when `moved` comes (see
/// [`unless_moved`]). Whether the connection may carry another request.
async fn serve_locally(
    edge: &Edge,
    conn: &mut ClientConn,
    head: &RequestHead,
    framing: Framing,
    ctx: &RequestContext,
    target: Result<Target, NotCached>,
    moved: Option<impl std::future::Future<Output = ()>>,
) -> bool {
    let serve = Box::pin(edge.local.serve(
        conn,
        head,
        framing,
        &ctx.info,
        ctx.component.as_deref(),
        target,
    ));
    unless_moved(serve, moved, &ctx.info.path, false).await
}

/// Whether a header name begins with `prefix`, ignoring ASCII case.
fn starts_with_ci(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Answers a request the hub will not serve with `status`, before reading any body; the
/// connection carries on only when `reusable` (kept alive, and no body left unread).
async fn refuse(conn: &mut ClientConn, refusal: &Refusal, reusable: bool) -> bool {
    server::refuse(&mut conn.writer, refusal, !reusable)
        .await
        .is_ok()
        && reusable
}

/// What a request is, for routing and logs.
pub struct RequestContext {
    /// The classification.
    pub info: RequestInfo,
    /// The component (User-Agent head), if any.
    pub component: Option<String>,
    /// What the client asked for before negotiation.
    pub negotiated: Negotiated,
    /// The labels of the request metrics (resource requests only).
    pub labels: Option<RequestLabels>,
    /// The request travels with the node's identity (its metrics are never folded).
    pub node_identity: bool,
    /// The request's method (`HEAD` answers carry no body).
    pub method: String,
    /// The client lets its connection carry another request.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0 (no chunked bodies).
    pub http10: bool,
    started: Instant,
}

impl RequestContext {
    fn log(&self, status: u16, what: &str) {
        log::debug!(
            "{} {} {}{}{} -> {status} {what} in {:?}",
            self.component.as_deref().unwrap_or("-"),
            if self.info.verb.is_empty() {
                "-"
            } else {
                &self.info.verb
            },
            if self.info.is_resource_request {
                &self.info.resource
            } else {
                &self.info.path
            },
            if self.info.subresource.is_empty() {
                ""
            } else {
                "/"
            },
            self.info.subresource,
            self.started.elapsed()
        );
    }
}

impl crate::server::Service for Proxy {
    async fn serve(&self, conn: &mut ClientConn, head: RequestHead) -> bool {
        self.answer(conn, head).await
    }
}

/// What an edge-mode hub adds to the plain proxy: the cache, cloud health, offline answers.
pub struct Edge {
    /// The cache the responses are teed into.
    pub cache: Cache,
    /// Cloud health per server.
    pub health: Arc<Health>,
    /// Offline answers.
    pub local: Local,
    /// Who is cached (live from yurt-hub-cfg).
    pub agents: Arc<RwLock<Agents>>,
    /// The bearer tokens the cloud accepted: offline, the only ones honoured.
    pub tokens: Arc<Tokens>,
    /// The node's own Node object, and whether kubelet's watch of it keeps the cache current.
    pub own_node: OwnNode,
}

/// kubelet's reads of its own Node: answered from the cache, as upstream YurtHub answers
/// them, while kubelet's watch of that Node streams through the hub (its events, and the
/// answers to kubelet's status patches, keep the cached copy as fresh as the apiserver's
/// watch cache would be).
///
/// Its reads also keep the Node's `Autonomy` condition current ([`autonomy`]).
#[derive(Debug, Default)]
pub struct OwnNode {
    /// The node's name.
    pub name: String,
    /// kubelet's node watches relayed right now.
    watches: std::sync::atomic::AtomicUsize,
    /// The `Autonomy` condition's evaluations.
    autonomy: autonomy::Autonomy,
    /// How long the hub's own status patch may take (`--heartbeat-timeout-seconds`).
    timeout: std::time::Duration,
}

impl OwnNode {
    /// For the node `name`; the hub's own requests about it wait `timeout` at most.
    pub fn new(name: &str, timeout: std::time::Duration) -> Self {
        Self {
            name: name.to_string(),
            watches: Default::default(),
            autonomy: Default::default(),
            timeout,
        }
    }

    /// Whether `ri` is kubelet's GET of its own Node (any version).
    fn is_own_get(&self, ri: &RequestInfo, component: Option<&str>) -> bool {
        self.is_own(ri, component) && ri.verb == "get" && ri.name == self.name
    }

    /// Whether `ri` is kubelet's read of its own Node.
    fn is_own(&self, ri: &RequestInfo, component: Option<&str>) -> bool {
        component == Some("kubelet")
            && ri.is_resource_request
            && ri.api_group.is_empty()
            && ri.resource == "nodes"
            && ri.subresource.is_empty()
            && !self.name.is_empty()
    }

    /// Whether a GET may be answered from the cache: kubelet's own Node, asked with
    /// `resourceVersion=0` (any version, as the apiserver's cache has it; kubelet's retries
    /// and other reads ask for the latest and go to the cloud), while its watch runs.
    fn answers(&self, ri: &RequestInfo, component: Option<&str>, query: &Query) -> bool {
        self.is_own_get(ri, component)
            && query.get("resourceVersion") == Some("0")
            && self.watches.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Counts a relayed watch of kubelet's own Node while the guard lives.
    fn watching(&self, ri: &RequestInfo, component: Option<&str>) -> Option<WatchGuard<'_>> {
        let own = self.is_own(ri, component)
            && ri.verb == "watch"
            && (ri.name == self.name
                || ri.field_selector == format!("metadata.name={}", self.name));
        own.then(|| {
            self.watches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            WatchGuard(&self.watches)
        })
    }
}

/// A request the multiplexer's store answers, and whether the cloud was up when that was
/// decided (the one reading of it the answer goes by).
struct StoreAnswer {
    store: Arc<Resource>,
    healthy: bool,
}

/// See [`OwnNode::watching`].
struct WatchGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The token of an `Authorization: Bearer` header, read exactly as kube-apiserver reads it
/// (trimmed, split at single spaces: the second word, if not empty), so that the token the
/// hub remembers or takes a subject from is the one the cloud judged; `Bearer  x` (two
/// spaces) is no token to the apiserver (it serves the request as anonymous), nor here.
fn bearer_token(head: &RequestHead) -> Option<&str> {
    let v = head.headers.get_str("authorization")?.trim();
    let mut words = v.splitn(3, ' ');
    let (scheme, token) = (words.next()?, words.next()?);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whose cache a request is answered from and filled into ([`cache::owners`]).
fn owner_of(head: &RequestHead, id: Identity) -> Owner {
    match (id, bearer_token(head)) {
        (Identity::Node, _) => Owner::Node,
        (Identity::Bearer, Some(token)) => Owner::of_token(token),
        // Sent without the node's certificate, and with no token the apiserver reads.
        (Identity::Bearer, None) => Owner::anonymous(),
    }
}

impl Edge {
    /// Whether a request may be answered from the cache (the hub cannot ask the cloud
    /// now): the node's own, or one whose token the cloud accepted before; a read only from
    /// what was cached for the same identity.
    fn may_answer(
        &self,
        head: &RequestHead,
        id: Identity,
        verb: &str,
        target: &Result<Target, NotCached>,
    ) -> Result<(), Refusal> {
        let known = id == Identity::Node
            || bearer_token(head)
                .is_some_and(|t| self.tokens.accepted(t, crate::kube::time::now_secs()));
        if !known {
            return Err(Refusal::TokenUnknownOffline);
        }
        match target {
            // Creates are not answered from the cache (offline they are the node's only).
            Ok(t) if verb != "create" => {
                if self.cache.may_read(&t.component, &t.owner) {
                    Ok(())
                } else {
                    Err(Refusal::CacheOfAnother(t.component.clone()))
                }
            }
            _ => Ok(()),
        }
    }

    /// Remembers that the cloud accepted the request's token: it answered with success,
    /// which it does only after authenticating and authorizing (a 403 may be anonymous's, a
    /// 400 may come before any authentication).
    fn note_accepted(&self, head: &RequestHead, id: Identity, status: u16) {
        let accepted = id == Identity::Bearer && (200..300).contains(&status);
        let Some(token) = bearer_token(head).filter(|_| accepted) else {
            return;
        };
        let now = crate::kube::time::now_secs();
        if self.tokens.recorded(token, now) {
            return;
        }
        let (tokens, token) = (self.tokens.clone(), token.to_string());
        smol::unblock(move || tokens.accept(&token, now)).detach();
    }
}

/// Routes requests to the cloud, or to the cache when the cloud is unreachable.
pub struct Proxy {
    upstream: Arc<Upstream>,
    edge: Option<Edge>,
    metrics: Arc<Metrics>,
    filters: Option<Arc<Filters>>,
    readiness: Option<Arc<dyn Gate>>,
    multiplexer: Option<(Arc<Multiplexer>, std::time::Duration)>,
    leaders: Option<Arc<Leaders>>,
    readers: multiplexed::Readers,
}

enum Outcome {
    KeepAlive,
    Close,
}

impl Proxy {
    /// A proxy sending everything to `upstream`; with `edge`, also caching and answering
    /// offline.
    pub fn new(upstream: Arc<Upstream>, edge: Option<Edge>, metrics: Arc<Metrics>) -> Self {
        Self {
            upstream,
            edge,
            metrics,
            filters: None,
            readiness: None,
            multiplexer: None,
            leaders: None,
            readers: Default::default(),
        }
    }

    /// Answers lists and watches of pool-scope resources from `multiplexer`'s stores; a
    /// watch that names no timeout runs a random time in [`min_request_timeout`, twice it).
    pub fn with_multiplexer(
        mut self,
        multiplexer: Arc<Multiplexer>,
        min_request_timeout: std::time::Duration,
    ) -> Self {
        self.multiplexer = Some((multiplexer, min_request_timeout));
        self
    }

    /// Sends the multiplexer's own lists and watches to a leader hub of the pool when
    /// `leaders` has one that answers (the cloud when none does, or a leader refuses).
    pub fn with_leaders(mut self, leaders: Arc<Leaders>) -> Self {
        self.leaders = Some(leaders);
        self
    }

    /// The leader hubs the multiplexer's own list or watch (no body) goes to, if any answer.
    /// Only a request travelling as the node (no token; the route has checked it may) is the
    /// multiplexer's: a User-Agent alone is any pod's to claim, and a leader answers the
    /// node's certificate with every Service of the cluster.
    fn leaders_for(
        &self,
        head: &RequestHead,
        framing: Framing,
        id: Identity,
    ) -> Option<Arc<Upstream>> {
        if framing != Framing::Empty || id != Identity::Node || !self.is_multiplexers_own(head) {
            return None;
        }
        self.leaders.as_ref()?.current()
    }

    /// For the multiplexer's own watch: notified when the leader hubs that answer change.
    fn leaders_moved(
        &self,
        head: &RequestHead,
        ctx: &RequestContext,
        id: Identity,
    ) -> Option<event_listener::EventListener> {
        let leaders = self.leaders.as_ref()?;
        (ctx.info.verb == "watch" && id == Identity::Node && self.is_multiplexers_own(head))
            .then(|| leaders.listen())
    }

    /// A leader's answer to the multiplexer's own request, unless the leader cannot be
    /// reached or will not answer it (it does not lead, or does not know this node as a
    /// follower: 403; its store is not filled: 429; a 5xx): the cloud is asked then.
    async fn ask_leader(
        &self,
        leaders: &Upstream,
        head: &RequestHead,
        ctx: &RequestContext,
    ) -> Option<Response> {
        let path = &ctx.info.path;
        match leaders
            .send::<&[u8]>(head, Body::Empty, Identity::Node)
            .await
        {
            Ok(resp) if matches!(resp.head.status, 403 | 429 | 500..) => {
                let server = leaders.server_urls().nth(resp.server);
                log::info!(
                    "multiplexer {path}: leader hub {} answered {}; asking the cloud",
                    server.map(ToString::to_string).unwrap_or_default(),
                    resp.head.status
                );
                None
            }
            Ok(resp) => Some(resp),
            Err(e) => {
                log::info!("multiplexer {path}: leader hub: {e}; asking the cloud");
                // Checked again now, not at the next round: it may be gone for good.
                if let Some(l) = &self.leaders {
                    l.suspect();
                }
                None
            }
        }
    }

    /// Rewrites the responses `filters` apply to.
    pub fn with_filters(mut self, filters: Arc<Filters>) -> Self {
        self.filters = Some(filters);
        self
    }

    /// Answers 503 to every client but the hub itself until `readiness` holds (reference §1.6).
    pub fn with_readiness(mut self, readiness: Arc<dyn Gate>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// The servers to try, in balancing order: only healthy ones in edge mode.
    fn servers(&self) -> Vec<usize> {
        let order = self.upstream.order();
        match &self.edge {
            Some(e) => order
                .into_iter()
                .filter(|&i| e.health.is_healthy(i))
                .collect(),
            None => order,
        }
    }

    /// Answers one request completely. Returns whether the connection may carry another.
    pub async fn answer(&self, conn: &mut ClientConn, mut head: RequestHead) -> bool {
        let info = match RequestInfo::classify(&head.method, &head.target) {
            Ok(i) => i,
            Err(e) => {
                log::info!("{} {} from {}: {e}", head.method, head.target, conn.peer);
                self.metrics.refused(RefusalReason::BadRequest);
                let _ = server::refuse(&mut conn.writer, &Refusal::BadTarget(e), true).await;
                return false;
            }
        };
        let framing = match Framing::of_request(&head) {
            Ok(f) => f,
            Err(e) => {
                self.metrics.refused(RefusalReason::BadRequest);
                let _ = server::refuse(&mut conn.writer, &Refusal::BadFraming(e), true).await;
                return false;
            }
        };
        let client_keep_alive = head.keep_alive();
        let client_http10 = head.minor_version == 0;
        let user_agent = head.headers.get_str("user-agent");
        let labels = info.is_resource_request.then(|| {
            RequestLabels::new(
                &info.verb,
                &info.resource,
                &info.subresource,
                &user_agent.unwrap_or("").to_lowercase(),
            )
        });
        let mut ctx = RequestContext {
            component: kube::component(user_agent),
            negotiated: Negotiated::default(),
            labels,
            node_identity: false,
            info,
            method: head.method.clone(),
            keep_alive: client_keep_alive,
            http10: client_http10,
            started: Instant::now(),
        };
        if let Some(edge) = &self.edge {
            // Whether the cloud is up is known once the first probe has been answered.
            edge.health.first_probe_done().await;
        }
        let id = identity_of(&head);
        let facts = Facts {
            bearer: id == Identity::Bearer,
            node_identity_allowed: conn.may_use_node_identity(),
            from_hub: user_agent.is_some_and(kube::is_hub),
            cached_path: !ctx.info.is_resource_request
                && cache::cached_path_file(&ctx.info.path).is_some(),
            upgrade: head.is_upgrade(),
            edge: self.edge.is_some(),
            // Only the node's identity is kubelet: a pod naming itself kubelet must not keep
            // a dead node's lease alive (the hub renews it while kubelet's calls come).
            kubelet_lease: ctx.component.as_deref() == Some("kubelet")
                && ctx.info.resource == "leases"
                && id == Identity::Node
                && conn.may_use_node_identity(),
            // A leader hub answers the multiplexer's own reads while the WAN is down.
            cloud_healthy: self.edge.as_ref().is_none_or(|e| e.health.any_healthy())
                || (conn.may_use_node_identity() && self.leaders_for(&head, framing, id).is_some()),
        };
        let route = route::route(&facts, || match &self.readiness {
            Some(r) => r.check(),
            None => Ok(()),
        });
        let reusable = client_keep_alive && framing == Framing::Empty;
        if let Route::Refuse(r) = route {
            if let Refusal::Unauthorized = r {
                // Debug, not info: a misconfigured pod retrying must not flood an SD card.
                log::debug!(
                    "{} {} from {} without a bearer token on {}{}: 401",
                    head.method,
                    head.target,
                    conn.peer,
                    if conn.tls { "https://" } else { "http://" },
                    conn.local
                );
                ctx.log(401, "no token");
                self.metrics.refused(RefusalReason::Unauthorized);
            } else {
                ctx.log(r.code(), "not ready");
                self.metrics.refused(RefusalReason::NotReady);
            }
            return refuse(conn, &r, reusable).await;
        }
        if matches!(route, Route::Tunnel) && framing != Framing::Empty {
            self.metrics.refused(RefusalReason::BadRequest);
            ctx.log(400, "upgrade with a body");
            return refuse(conn, &Refusal::UpgradeWithBody, false).await;
        }
        ctx.node_identity = id == Identity::Node;
        // Set, not appended: a client's own X-Forwarded-For is its claim, not a hop the hub
        // saw, and the apiserver logs it as the source.
        head.headers
            .set("X-Forwarded-For", conn.peer.ip().to_canonical().to_string());
        if id == Identity::Node {
            // The node's certificate speaks for these: no client asks it to be someone else.
            head.headers.remove_where(|name| {
                starts_with_ci(name, b"impersonate-") || starts_with_ci(name, b"x-remote-")
            });
        }
        let query = Query::parse(head.query());
        let target = self.edge.as_ref().map(|e| {
            let agents = e.agents.read().unwrap_or_else(|p| p.into_inner());
            cache::target(
                &ctx.info,
                ctx.component.as_deref(),
                &agents,
                &query,
                head.headers.get_str("accept"),
                owner_of(&head, id),
            )
        });

        if let Some(answer) = self.store_for(&head, &ctx, id, framing, target.as_ref()) {
            return Box::pin(self.serve_from_store(
                conn,
                &mut ctx,
                &query,
                answer,
                target.as_ref(),
            ))
            .await;
        }
        // Only a request the hub serves is recorded (a refused one is only counted): what
        // any pod may send must not grow the metrics.
        let in_flight = ctx
            .labels
            .take()
            .map(|l| self.metrics.request_started(l, ctx.node_identity));
        ctx.labels = in_flight.as_ref().map(|g| g.labels().clone());

        if let Route::Tunnel = route {
            head.headers.strip_hop_by_hop(true);
            Box::pin(tunnel::run(&self.upstream, conn, head, id, &ctx)).await;
            return false;
        }

        // The hub reads the body itself, so it confirms the expectation instead of the
        // apiserver (RFC 9110 §10.1.1 lets an intermediary do so).
        // HTTP/1.0 clients do not know 100 Continue (RFC 9110 §10.1.1).
        if head.headers.has_token("expect", "100-continue")
            && framing != Framing::Empty
            && head.minor_version == 1
        {
            let _ = conn
                .writer
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await;
            let _ = conn.writer.flush().await;
        }
        if let (Route::Local, Some(edge), Some(target)) = (&route, &self.edge, &target) {
            if let Err(r) = edge.may_answer(&head, id, &ctx.info.verb, target) {
                ctx.log(r.code(), "not answered offline");
                return refuse(conn, &r, reusable).await;
            }
            if facts.kubelet_lease {
                edge.health.kubelet_lease_seen();
            }
            let moved = self.leaders_moved(&head, &ctx, id);
            let keep = serve_locally(edge, conn, &head, framing, &ctx, target.clone(), moved).await;
            ctx.log(0, "answered locally");
            return keep && client_keep_alive;
        }
        // kubelet's read of its own Node: its Autonomy condition is made current first, so
        // that the answer carries it (from the cache or the cloud).
        let mut patched = None;
        if let (Some(edge), Some(Ok(t))) = (&self.edge, &target) {
            // A metadata-only read has no status to look at (nor a Node to answer with).
            if id == Identity::Node
                && framing == Framing::Empty
                && !t.metadata_only
                && edge
                    .own_node
                    .is_own_get(&ctx.info, ctx.component.as_deref())
            {
                patched = Box::pin(self.keep_autonomy(edge, t)).await;
            }
        }
        // kubelet's read of its own Node, while its watch keeps the cached copy current.
        if let (Some(edge), Some(Ok(t))) = (&self.edge, &target) {
            if id == Identity::Node
                && framing == Framing::Empty
                && edge
                    .own_node
                    .answers(&ctx.info, ctx.component.as_deref(), &query)
                && edge.cache.may_read(&t.component, &t.owner)
            {
                let key = t.object_key(&ctx.info.name);
                let head_only = head.method == "HEAD";
                if let Some(node) = patched {
                    // The cloud's answer to the patch is newer than what the cache holds
                    // until the writer has stored it.
                    let keep = Local::object_bytes(conn, head_only, &node).await;
                    ctx.log(200, "own node answered with its patched status");
                    return keep && client_keep_alive;
                }
                if let Some(keep) = edge.local.object(conn, head_only, key).await {
                    ctx.log(200, "own node answered from the cache");
                    return keep && client_keep_alive;
                }
            }
        }
        Box::pin(self.forward(conn, head, framing, ctx, target, id)).await
    }

    /// The multiplexer's store that answers this request, if one does: a list or watch of a
    /// pool-scope resource ([`multiplexed::servable`]), not the multiplexer's own (those fill
    /// the store), from the node itself or with a token the cloud has answered a list or
    /// watch of that resource for the same component (cached for that token's owner), within
    /// [`multiplexed::RECONFIRM`] while the cloud is up: the store must not let a pod read
    /// what the cloud would refuse it, nor for long after the cloud has started refusing.
    /// A store not filled yet answers only while the cloud is up and its own list was not
    /// refused for good (429, retry); else the request goes the ordinary way: offline to the
    /// component's own cache (a cache from before the multiplexer), online to the cloud.
    fn store_for(
        &self,
        head: &RequestHead,
        ctx: &RequestContext,
        id: Identity,
        framing: Framing,
        target: Option<&Result<Target, NotCached>>,
    ) -> Option<StoreAnswer> {
        let (m, _) = self.multiplexer.as_ref()?;
        let edge = self.edge.as_ref()?;
        let ri = &ctx.info;
        if framing != Framing::Empty
            || !ri.is_resource_request
            || self.is_multiplexers_own(head)
            || !multiplexed::servable(ri, head)
        {
            return None;
        }
        let store = m.find(&ri.api_group, &ri.api_version, &ri.resource)?;
        let healthy = edge.health.any_healthy();
        let allowed = match id {
            Identity::Node => true,
            // A token asking to be someone else is the cloud's to judge.
            Identity::Bearer
                if head
                    .headers
                    .iter()
                    .any(|(name, _)| starts_with_ci(name.as_bytes(), b"impersonate-")) =>
            {
                false
            }
            Identity::Bearer => {
                let now = kube::time::now_secs();
                bearer_token(head).is_some_and(|t| {
                    edge.tokens.accepted(t, now)
                        && (!healthy || self.readers.confirmed(t, &store.path))
                }) && matches!(target, Some(Ok(t))
                        if edge.cache.may_read(&t.component, &t.owner)
                            && edge.cache.has_view(&t.component, &t.resource, &t.view))
            }
        };
        let unfilled = !store.cache().is_synced();
        if !allowed || (unfilled && (!healthy || store.refused())) {
            return None;
        }
        Some(StoreAnswer {
            store: store.clone(),
            healthy,
        })
    }

    /// Whether the request is the multiplexer's own (it fills a store; it is never
    /// answered from one).
    fn is_multiplexers_own(&self, head: &RequestHead) -> bool {
        self.multiplexer
            .as_ref()
            .is_some_and(|(m, _)| head.headers.get_str("user-agent") == Some(m.user_agent.as_str()))
    }

    /// Remembers that the cloud answered a token's list or watch of a pool-scope resource
    /// (see [`Proxy::store_for`]).
    fn note_reader(&self, head: &RequestHead, ri: &RequestInfo, id: Identity, status: u16) {
        let Some((m, _)) = &self.multiplexer else {
            return;
        };
        if id != Identity::Bearer
            || !(200..300).contains(&status)
            || !matches!(ri.verb.as_str(), "list" | "watch")
        {
            return;
        }
        if let (Some(token), Some(store)) = (
            bearer_token(head),
            m.find(&ri.api_group, &ri.api_version, &ri.resource),
        ) {
            self.readers.confirm(token, &store.path);
        }
    }

    /// Answers a list or watch from the multiplexer's `store`, through the client's own
    /// filters. Returns whether the connection may carry another request.
    async fn serve_from_store(
        &self,
        conn: &mut ClientConn,
        ctx: &mut RequestContext,
        query: &Query,
        answer: StoreAnswer,
        target: Option<&Result<Target, NotCached>>,
    ) -> bool {
        let StoreAnswer { store, healthy } = answer;
        let _in_flight = ctx
            .labels
            .take()
            .map(|l| self.metrics.aggregated_started(l, ctx.node_identity));
        let keep_alive = ctx.keep_alive;
        if !store.cache().is_synced() {
            ctx.log(429, "multiplexer not synced yet");
            return multiplexed::not_synced(conn, keep_alive).await.keep_alive;
        }
        let chain = self.filters.as_ref().and_then(|f| {
            f.chain(
                ctx.component.as_deref()?,
                &ctx.info.verb,
                &ctx.info.resource,
            )
        });
        let req = multiplexed::Request {
            info: &ctx.info,
            query,
            resource: &store,
            chain,
            http10: ctx.http10,
            min_request_timeout: self.multiplexer.as_ref().map(|m| m.1).unwrap_or_default(),
            // Only what the store holds while the cloud is up is the cloud's answer: offline
            // it is no newer than what the component's cache already holds. Made (and the
            // component claimed) only once the answer is a 200, as for the cloud's answers.
            tee: &|| {
                if healthy {
                    self.tee_of(200, ctx, target, false)
                } else {
                    None
                }
            },
        };
        let answered = if ctx.info.verb == "watch" {
            multiplexed::watch(conn, req, keep_alive).await
        } else {
            multiplexed::list(conn, req, keep_alive).await
        };
        ctx.log(answered.status, "answered by the multiplexer");
        answered.keep_alive
    }

    /// Sets the node's `Autonomy` condition in the cloud when its cached copy (what kubelet
    /// read last; the cloud's when none is cached) does not carry the one it should, and
    /// caches the patched Node. Nothing is
    /// sent while the condition holds, nor when no server is healthy; a failure is logged
    /// and tried again at kubelet's next read: kubelet's own answer never waits on it
    /// beyond `--heartbeat-timeout-seconds`, and never turns into an error.
    ///
    /// The patched Node, when there was a patch.
    async fn keep_autonomy(&self, edge: &Edge, t: &Target) -> Option<Vec<u8>> {
        let own = &edge.own_node;
        let server = *self.servers().first()?;
        let key = t.object_key(&own.name);
        let cache = edge.cache.clone();
        let bytes = match smol::unblock(move || cache.get(&key)).await {
            Some(b) => b,
            // Not cached (the first read, or a cache that cannot keep it, which is what
            // the condition is to report): the cloud's copy.
            None => match self
                .upstream
                .fetch_typed(
                    server,
                    "GET",
                    &format!("/api/v1/nodes/{}?resourceVersion=0", own.name),
                    None,
                    "application/json",
                    own.timeout,
                )
                .await
            {
                Ok((200, b)) => b,
                _ => return None,
            },
        };
        let node = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
        let wanted = own.autonomy.wanted(&node, edge.cache.failing().as_deref());
        let now = kube::time::rfc3339(std::time::SystemTime::now());
        let patch = wanted.patch(&node, &now)?;
        let path = format!("/api/v1/nodes/{}/status", own.name);
        let sent = self
            .upstream
            .fetch_typed(
                server,
                "PATCH",
                &path,
                Some((&patch, "application/strategic-merge-patch+json")),
                "application/json",
                own.timeout,
            )
            .await;
        let failure = match sent {
            Ok((200, body)) => {
                log::info!(
                    "node {}: condition {} is {} ({})",
                    own.name,
                    autonomy::CONDITION,
                    wanted.status,
                    wanted.reason
                );
                edge.cache.put(&t.component, &t.resource, body.clone());
                return Some(body);
            }
            Ok((code, _)) => format!("the apiserver answered {code}"),
            Err(e) => e.to_string(),
        };
        if let Some(more) = AUTONOMY_FAILED.allow(&failure) {
            log::warn!(
                "node {}: setting condition {} to {}: {failure}{more}",
                own.name,
                autonomy::CONDITION,
                wanted.status
            );
        }
        None
    }

    /// Sends a request on to the cloud and streams the answer back (filtered, teed into the
    /// cache); a read the cloud cannot answer falls back to the cache. Returns whether the
    /// connection may carry another request.
    async fn forward(
        &self,
        conn: &mut ClientConn,
        mut head: RequestHead,
        framing: Framing,
        mut ctx: RequestContext,
        target: Option<Result<Target, NotCached>>,
        id: Identity,
    ) -> bool {
        let client_keep_alive = ctx.keep_alive;
        head.headers.remove("expect");
        head.headers.strip_hop_by_hop(false);
        // The filters that rewrite this answer, known before sending: a response the hub reads
        // (filters it or caches it) is asked for as JSON; any other keeps the client's format.
        let chain = self.filters.as_ref().and_then(|f| {
            f.chain(
                ctx.component.as_deref()?,
                &ctx.info.verb,
                &ctx.info.resource,
            )
        });
        let cached = matches!(target, Some(Ok(_)));
        ctx.negotiated = upstream::negotiate(&mut head, &ctx.info, cached || chain.is_some());
        head.minor_version = 1;

        let mut client_body = BodyReader::new(framing);
        let mut buffered = Vec::new();
        let body = match framing {
            Framing::Empty => {
                if matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") {
                    head.headers.set("Content-Length", "0");
                }
                Body::Empty
            }
            Framing::Length(n) if n <= MAX_BUFFERED_BODY => {
                loop {
                    match client_body.read(&mut conn.reader, &mut buffered).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            log::info!("request body from {}: {e}", conn.peer);
                            return false;
                        }
                    }
                }
                head.headers
                    .set("Content-Length", buffered.len().to_string());
                Body::Buffered(&buffered)
            }
            Framing::Length(n) => {
                head.headers.set("Content-Length", n.to_string());
                Body::Streamed {
                    body: &mut client_body,
                    source: &mut conn.reader,
                    writer: BodyWriter::Raw,
                }
            }
            Framing::Chunked | Framing::Close => {
                head.headers.set("Transfer-Encoding", "chunked");
                Body::Streamed {
                    body: &mut client_body,
                    source: &mut conn.reader,
                    writer: BodyWriter::Chunked,
                }
            }
        };
        // A silent (blackholed) link is noticed by the health prober, not by TCP: give up the
        // wait then, and let reads fall back to the cache below.
        // Listened to before the source is chosen: a change while the answer is on its way
        // still moves the watch.
        let moved = self.leaders_moved(&head, &ctx, id);
        let leaders = self.leaders_for(&head, framing, id);
        let leader = match leaders.clone().filter(|_| chain.is_none()) {
            Some(l) => Box::pin(self.ask_leader(&l, &head, &ctx))
                .await
                .map(|resp| (l, resp)),
            None => None,
        };
        // Passed over by a leader that answered the last check (it refused, or failed): the
        // leader is asked again a check's time later, not at the end of a 5 to 10 minute
        // watch elsewhere.
        let passed_over = leaders.is_some() && leader.is_none();
        let moved = moved.map(|m| async move {
            if passed_over {
                smol::future::or(m, async {
                    async_io::Timer::after(crate::multiplexer::leaders::CHECK_EVERY).await;
                })
                .await
            } else {
                m.await
            }
        });
        // A leader tried and passed over while the cloud is down: the disk answers, as it
        // would have had no leader answered at the start.
        if let (None, Some(_), Some(edge), Some(Ok(t))) = (&leader, &leaders, &self.edge, &target) {
            if !edge.health.any_healthy() {
                ctx.log(0, "no leader hub nor cloud: answered locally");
                let keep =
                    serve_locally(edge, conn, &head, framing, &ctx, Ok(t.clone()), moved).await;
                return keep && client_keep_alive;
            }
        }
        let (from, sent) = match leader {
            Some((l, resp)) => (l, Ok(resp)),
            None => {
                let sent = smol::future::or(
                    self.upstream.send_via(self.servers(), &head, body, id),
                    async {
                        match &self.edge {
                            Some(e) => e.health.wait_none_healthy().await,
                            None => std::future::pending().await,
                        }
                        Err(UpstreamError::CloudGone)
                    },
                )
                .await;
                (self.upstream.clone(), sent)
            }
        };
        if !client_body.is_done() {
            // Part of the body is still on the wire: the connection cannot carry another request.
            let _ = server::refuse(&mut conn.writer, &Refusal::BodyNotForwarded, true).await;
            return false;
        }
        match sent {
            Ok(resp) => {
                if let Some(edge) = &self.edge {
                    edge.note_accepted(&head, id, resp.head.status);
                }
                self.note_reader(&head, &ctx.info, id, resp.head.status);
                // The multiplexer's own list or watch, counted by server while it runs.
                let _for_multiplexer = self
                    .is_multiplexers_own(&head)
                    .then(|| {
                        let labels = ctx.labels.clone()?;
                        let server = from.server_urls().nth(resp.server)?.to_string();
                        Some(self.metrics.multiplexer_upstream_started(labels, &server))
                    })
                    .flatten();
                // Held while the relay runs: kubelet's watch of its own Node keeps its
                // cached copy current, so its reads of it may be answered from the cache.
                let _watching = self
                    .edge
                    .as_ref()
                    .filter(|_| resp.head.status == 200 && id == Identity::Node)
                    .and_then(|e| e.own_node.watching(&ctx.info, ctx.component.as_deref()));
                if let Some(chain) = chain.filter(|_| resp.head.status == 200) {
                    let tee = self.tee_for(&resp, &ctx, target.as_ref(), Some(false));
                    let f = filtered::Filtered {
                        chain,
                        watch: ctx.info.verb == "watch",
                        tee,
                        ctx: &ctx,
                    };
                    let ok = matches!(f.relay(self, conn, resp).await, Outcome::KeepAlive);
                    return ok && client_keep_alive;
                }
                let tee = self.tee_for(&resp, &ctx, target.as_ref(), None);
                let relay = self.relay(conn, resp, &from, &ctx, tee);
                let relayed = unless_moved(relay, moved, &ctx.info.path, Outcome::Close).await;
                let ok = matches!(relayed, Outcome::KeepAlive);
                ok && client_keep_alive
            }
            Err(UpstreamError::ClientBody(e)) => {
                log::info!("request body from {}: {e}", conn.peer);
                false
            }
            Err(e) => {
                let e = e.to_string();
                if let Some(more) = UNREACHABLE.allow(&e) {
                    log::warn!("{e}{more}");
                }
                if let (Some(edge), Some(Ok(t))) = (&self.edge, &target) {
                    // A cacheable read still gets an answer when the transport fails.
                    if matches!(ctx.info.verb.as_str(), "get" | "list")
                        && edge
                            .may_answer(&head, id, &ctx.info.verb, &Ok(t.clone()))
                            .is_ok()
                    {
                        ctx.log(0, "transport error: answered locally");
                        return edge
                            .local
                            .serve(
                                conn,
                                &head,
                                Framing::Empty,
                                &ctx.info,
                                ctx.component.as_deref(),
                                Ok(t.clone()),
                            )
                            .await
                            && client_keep_alive;
                    }
                }
                ctx.log(502, "no upstream");
                let r = Refusal::Unreachable(e.to_string());
                server::refuse(&mut conn.writer, &r, !client_keep_alive)
                    .await
                    .is_ok()
                    && client_keep_alive
            }
        }
    }

    /// The next piece of an upstream body, appended to `piece`; `None` when the client left
    /// or the hub is shutting down: each ends the relay.
    ///
    /// A probe verdict does not end it (upstream leaves established streams alone): a
    /// flapping link would make every client re-list twice. A stream ends when its own socket
    /// does: closed or reset by the server, or found dead by TCP keepalive
    /// ([`crate::upstream`] sets it on every upstream socket).
    async fn next_piece(
        &self,
        conn: &mut ClientConn,
        resp: &mut Response,
        piece: &mut Vec<u8>,
    ) -> Option<Result<usize, crate::http::BodyError>> {
        smol::future::or(
            async { Some(resp.body.read(&mut resp.conn.reader, piece).await) },
            async {
                smol::future::or(conn.reader.closed(), crate::runtime::shutting_down()).await;
                None
            },
        )
        .await
    }

    /// The cache's copy of a successful response, when there is to be one.
    fn tee_for(
        &self,
        resp: &Response,
        ctx: &RequestContext,
        target: Option<&Result<Target, NotCached>>,
        gzip: Option<bool>,
    ) -> Option<Tee> {
        if !(200..300).contains(&resp.head.status) {
            return None;
        }
        // The copy is gzip when the wire is, unless the caller feeds decompressed bytes.
        let gzip = gzip.unwrap_or_else(|| resp.head.is_gzip());
        self.tee_of(resp.head.status, ctx, target, gzip)
    }

    /// The cache's copy of a successful (`status`) answer to `ctx`'s request, when there is
    /// to be one; `gzip`: the bytes fed to it are.
    fn tee_of(
        &self,
        status: u16,
        ctx: &RequestContext,
        target: Option<&Result<Target, NotCached>>,
        gzip: bool,
    ) -> Option<Tee> {
        let edge = self.edge.as_ref()?;
        if !ctx.info.is_resource_request {
            let file = cache::cached_path_file(&ctx.info.path)?;
            return (ctx.method == "GET" && status == 200)
                .then(|| Tee::raw(&edge.cache, file, gzip));
        }
        let t = target?.as_ref().ok()?.clone();
        // The cloud answered this identity: its answers are cached if the component is its.
        // Only a read claims a component (every account may create a review, say).
        let cached = match ctx.info.verb.as_str() {
            "get" | "list" | "watch" => edge.cache.claim(&t.component, &t.owner),
            _ => edge.cache.owns(&t.component, &t.owner),
        };
        if !cached {
            return None;
        }
        Some(match t.shape {
            Shape::Watch { .. } => Tee::watch(&edge.cache, t, gzip),
            _ => Tee::body(&edge.cache, t, gzip),
        })
    }

    /// Streams an upstream response (from `from`, which takes its connection back) to the
    /// client.
    async fn relay(
        &self,
        conn: &mut ClientConn,
        mut resp: Response,
        from: &Upstream,
        ctx: &RequestContext,
        mut tee: Option<Tee>,
    ) -> Outcome {
        let (method, client_keep_alive, client_http10) =
            (ctx.method.as_str(), ctx.keep_alive, ctx.http10);
        let upstream_reusable = resp.head.keep_alive();
        let up_framing = Framing::of_response(&resp.head, method).unwrap_or(Framing::Close);
        let mut gunzip = (ctx.negotiated.applied
            && resp.head.is_gzip()
            && !ctx.negotiated.client_gzip
            && up_framing != Framing::Empty)
            .then(GzipDecoder::new);

        let mut head = resp.head.relayed(gunzip.is_some());
        let writer = match up_framing {
            Framing::Empty => BodyWriter::Raw,
            Framing::Length(n) if gunzip.is_none() => {
                head.headers.set("Content-Length", n.to_string());
                BodyWriter::Raw
            }
            _ => {
                head.headers.remove("content-length");
                BodyWriter::streaming(&mut head, client_http10)
            }
        };
        let close_after = !client_keep_alive
            || (writer == BodyWriter::Raw
                && !matches!(up_framing, Framing::Empty | Framing::Length(_)))
            || (gunzip.is_some() && writer == BodyWriter::Raw);
        if close_after {
            head.headers.set("Connection", "close");
        }
        // `out` collects what is due to the client: the head, then framed pieces. It is sent
        // before any wait for more upstream data, so a watch event is never held back, and a
        // small body already at hand leaves in the same write as the head.
        let mut out = Vec::with_capacity(1024);
        head.write_to(&mut out);
        let mut piece = Vec::new();
        let mut plain = Vec::new();
        let mut gzip_saved = 0;
        loop {
            piece.clear();
            // What has already arrived joins what is due before it is written (one write, not
            // one per chunk); the relay never waits while holding output.
            let at_hand = if out.len() >= RELAY_PIECE {
                None
            } else {
                smol::future::poll_once(resp.body.read(&mut resp.conn.reader, &mut piece)).await
            };
            let next = match at_hand {
                Some(r) => Some(r),
                None => {
                    if !out.is_empty() {
                        if conn.writer.write_all(&out).await.is_err()
                            || conn.writer.flush().await.is_err()
                        {
                            return Outcome::Close;
                        }
                        out.clear();
                    }
                    self.next_piece(conn, &mut resp, &mut piece).await
                }
            };
            let n = match next {
                None => {
                    // Dropping the upstream connection ends the request there; closing the
                    // client's makes it retry (against the cache, if the cloud is gone).
                    ctx.log(resp.head.status, "client went away or server unreachable");
                    return Outcome::Close;
                }
                Some(Err(e)) => {
                    let e = e.to_string();
                    if let Some(more) = UNREACHABLE.allow(&e) {
                        log::warn!("upstream body broke off: {e}{more}");
                    }
                    ctx.log(resp.head.status, "upstream body broke off");
                    // Closing without the last chunk tells the client the body is incomplete.
                    let _ = conn.writer.write_all(&out).await;
                    return Outcome::Close;
                }
                Some(Ok(n)) => n,
            };
            if let Some(t) = &mut tee {
                t.feed(&piece);
            }
            if let (Some(l), Some(_)) = (&ctx.labels, &ctx.component) {
                self.metrics.add_traffic(l, ctx.node_identity, n as u64);
            }
            if n == 0 {
                if let Some(gz) = &gunzip {
                    if let Err(e) = gz.finish() {
                        log::warn!("upstream gzip body: {e}");
                        let _ = conn.writer.write_all(&out).await;
                        return Outcome::Close;
                    }
                }
                // The cloud's answer is whole: the cache has its copy before the last write to
                // the client, which a client that stops reading may hold up forever. (An answer
                // like the stored one wakes no thread: `Cache::response`.)
                if let Some(t) = tee.take() {
                    t.finish();
                }
                writer.finish(&mut out);
                if conn.writer.write_all(&out).await.is_err() || conn.writer.flush().await.is_err()
                {
                    return Outcome::Close;
                }
                break;
            }
            match &mut gunzip {
                None => writer.encode(&piece, &mut out),
                Some(gz) => {
                    let mut pos = 0;
                    loop {
                        match gz.step(&piece, &mut pos, &mut plain) {
                            Ok(true) => writer.encode(&plain, &mut out),
                            Ok(false) => break,
                            Err(e) => {
                                log::warn!("upstream gzip body: {e}");
                                let _ = conn.writer.write_all(&out).await;
                                return Outcome::Close;
                            }
                        }
                        if out.len() >= RELAY_PIECE {
                            if conn.writer.write_all(&out).await.is_err() {
                                return Outcome::Close;
                            }
                            out.clear();
                        }
                    }
                }
            }
            // What gzip saved on the wire, counted where the hub unpacked the body.
            let totals = gunzip
                .as_ref()
                .map(GzipDecoder::totals)
                .or_else(|| tee.as_ref().and_then(Tee::gzip_totals));
            self.metrics.gzip_saved_so_far(&mut gzip_saved, totals);
        }
        ctx.log(resp.head.status, "");
        if upstream_reusable && up_framing != Framing::Close && resp.body.is_done() {
            from.release(resp.conn);
        }
        if close_after {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }
}

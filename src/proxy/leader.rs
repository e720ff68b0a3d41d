//! What a leader hub answers its NodePool's followers on `<node-ip>:--multiplexer-port`
//! (issue 18; reference §10.1): their multiplexers' lists and watches of the pool-scope
//! resources, from this hub's stores, unfiltered (each follower filters for its own clients)
//! and not cached here.
//!
//! A follower is known by the client certificate the listener verified against the cluster
//! CA: CN `system:node:<name>`, `<name>` a node of this hub's pool as the NodePool's status
//! lists it, asking as that node's multiplexer (`multiplexer-proxy-<name>`). Anything else
//! is 403. Upstream serves its whole proxy on this port to anyone who connects (reference
//! §13.2 item 24); here the port is no way to the cloud with this node's identity, nor to
//! another pool's data.

use std::sync::Arc;
use std::time::Instant;

use super::{multiplexed, refuse, Proxy, Query, RequestContext, StoreAnswer};
use crate::certs::x509::Certificate;
use crate::filter::Topology;
use crate::http::{Framing, RequestHead};
use crate::kube::{self, RequestInfo};
use crate::metrics::RequestLabels;
use crate::multiplexer::leaders::Pool;
use crate::multiplexer::Resource;
use crate::server::{self, ClientConn, Refusal};

/// Refusals logged once a minute per peer address: anyone on the network may knock.
static REFUSED: crate::log_repeats::Repeats =
    crate::log_repeats::Repeats::new(std::time::Duration::from_secs(60));

/// The leader's side of the multiplexer port.
pub struct Followers {
    proxy: Arc<Proxy>,
    node: String,
    pool: Arc<Pool>,
    topology: Option<Arc<Topology>>,
}

impl Followers {
    /// Answers the followers of `pool` for the hub of `node` from `proxy`'s stores, knowing
    /// the pool's nodes from `topology` (without it, no follower is known: all are refused).
    pub fn new(
        proxy: Arc<Proxy>,
        node: &str,
        pool: Arc<Pool>,
        topology: Option<Arc<Topology>>,
    ) -> Self {
        Self {
            proxy,
            node: node.to_string(),
            pool,
            topology,
        }
    }

    /// The follower this request comes from and what it asks for, or why it is refused.
    fn admit(
        &self,
        conn: &ClientConn,
        head: &RequestHead,
    ) -> Result<(String, RequestInfo, Arc<Resource>), String> {
        if !self.pool.leads() {
            return Err(format!(
                "{} does not name {} a leader",
                self.pool.configmap(),
                self.node
            ));
        }
        let cert = conn.client_cert.as_ref().ok_or("no client certificate")?;
        let cert = Certificate::parse(cert).map_err(|e| format!("client certificate: {e}"))?;
        let peer = cert
            .common_name
            .strip_prefix("system:node:")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{:?} is not a node's certificate", cert.common_name))?
            .to_string();
        if peer == self.node {
            return Err(format!("{peer} is this hub's own node"));
        }
        let ua = head.headers.get_str("user-agent").unwrap_or("");
        if ua != kube::multiplexer(&peer) {
            return Err(format!(
                "node {peer} asks as {ua:?}, not as its multiplexer ({})",
                kube::multiplexer(&peer)
            ));
        }
        match self.topology.as_ref().and_then(|t| t.in_pool(&peer)) {
            Some(true) => {}
            Some(false) => return Err(format!("node {peer} is not in this hub's pool")),
            None => return Err("this hub's pool's nodes are not known (yet)".to_string()),
        }
        let info = RequestInfo::classify(&head.method, &head.target)
            .map_err(|e| format!("{} {}: {e}", head.method, head.target))?;
        let store = self
            .proxy
            .multiplexer
            .as_ref()
            .filter(|_| info.is_resource_request && multiplexed::servable(&info, head))
            .and_then(|(m, _)| m.find(&info.api_group, &info.api_version, &info.resource));
        let Some(store) = store else {
            return Err(format!(
                "{} {} is not a list or watch of a pool-scope resource",
                head.method, head.target
            ));
        };
        Ok((peer, info, store))
    }
}

impl server::Service for Followers {
    async fn serve(&self, conn: &mut ClientConn, head: RequestHead) -> bool {
        let keep_alive = head.keep_alive();
        let bodiless = matches!(Framing::of_request(&head), Ok(Framing::Empty));
        let admitted = if bodiless {
            self.admit(conn, &head)
        } else {
            Err("a request with a body".to_string())
        };
        let (peer, info, store) = match admitted {
            Ok(a) => a,
            Err(why) => {
                // Info: a refused follower is a misconfiguration an operator must see; once
                // a minute per address, since anyone who reaches the port can knock.
                if let Some(more) = REFUSED.allow(&conn.peer.ip().to_string()) {
                    log::info!(
                        "multiplexer port: {} {} from {}: {why}: 403{more}",
                        head.method,
                        head.target,
                        conn.peer
                    );
                }
                let r = Refusal::NotAFollower(why);
                return refuse(conn, &r, keep_alive && bodiless).await;
            }
        };
        let proxy = &self.proxy;
        // Cut off from the cloud, this store is the disk's copy: no newer than what the
        // follower has itself, and older than what its cloud may give it.
        if proxy.edge.as_ref().is_some_and(|e| !e.health.any_healthy()) {
            let r = Refusal::Unreachable(
                "this leader hub cannot reach the cloud; read it yourself".to_string(),
            );
            return refuse(conn, &r, keep_alive).await;
        }
        let ua = kube::multiplexer(&peer);
        let mut ctx = RequestContext {
            component: None,
            negotiated: Default::default(),
            labels: Some(RequestLabels::new(
                &info.verb,
                &info.resource,
                &info.subresource,
                &ua,
            )),
            node_identity: false,
            info,
            method: head.method.clone(),
            keep_alive,
            http10: head.minor_version == 0,
            started: Instant::now(),
        };
        let query = Query::parse(head.query());
        // No component (no filters: the follower runs its clients' own) and no target (no
        // copy in this hub's cache: the follower keeps its own).
        let answer = StoreAnswer {
            store,
            healthy: false,
        };
        let keep = Box::pin(proxy.serve_from_store(conn, &mut ctx, &query, answer, None)).await;
        log::debug!(
            "multiplexer port: {} {} for {peer}",
            head.method,
            head.target
        );
        keep
    }
}

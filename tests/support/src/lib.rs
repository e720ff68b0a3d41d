//! An in-memory kube-apiserver for yurthub's tests, examples and benches.
//!
//! It speaks HTTP/1.1 over TLS with the wire behaviour of kube-apiserver 1.36 (see
//! `shared/reference/apiserver-captures`): client-certificate and bearer-token authentication,
//! one global resourceVersion, list with label/field selectors and limit/continue, watch from a
//! resourceVersion with bookmarks, 410 Expired and timeoutSeconds, gzip over 128 KiB, pod logs
//! that follow, an upgrade endpoint that echoes, and fault injection.
//!
//! ```no_run
//! let pki = testapi::Pki::new();
//! let api = testapi::ApiServer::start(&pki);
//! api.create("/api/v1/namespaces/default/pods", serde_json::json!({"metadata": {"name": "p"}}));
//! println!("{}", api.url());
//! ```

mod certificates;
pub mod client;
pub mod envtest;
mod hub;
pub mod middlebox;
mod pki;
mod serve;
pub mod store;
pub mod wire;

pub use certificates::{detached_jws, Approval, CsrRecord};
pub use hub::{cache_cli, command, rss_anon_kib, rss_kib, Hub, TempDir};
pub use middlebox::Middlebox;
pub use pki::{Pki, User};
pub use store::{ApiError, ResourceType, Store};

use async_io::{Async, Timer};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A misbehaviour the server can be told to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Stop listening: connections are refused.
    Refuse,
    /// Accept connections and read requests, but never answer (nor send watch events).
    Blackhole,
    /// Wait this long before answering each request.
    Delay(Duration),
    /// Answer every request with this status (a Status body).
    Status(u16),
    /// Hold the requests whose User-Agent contains the string (unanswered, for as long as
    /// this fault is set; then they are answered); other requests are answered normally.
    Hold(String),
    /// Damage the answers to requests whose path contains the string, as a broken or hostile
    /// server (or a middlebox) would; other requests are answered normally.
    Mangle(String, Mangle),
}

/// How [`Fault::Mangle`] damages an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mangle {
    /// A chunked body cut in the middle of a chunk, then the connection closed.
    TruncatedChunk,
    /// A `Content-Length` 100 bytes longer than the body, then the connection closed.
    LongContentLength,
    /// A `Content-Length` half the body's; the whole body follows and the connection stays open.
    ShortContentLength,
    /// A watch whose stream carries a line that is not JSON between two good events.
    GarbageWatchLine,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Target.
    pub target: String,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    /// The authenticated user, if any.
    pub user: Option<String>,
}

impl Recorded {
    /// The first field called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) types: Mutex<Vec<ResourceType>>,
    pub(crate) tokens: Mutex<HashMap<String, User>>,
    pub(crate) fault: Mutex<Fault>,
    pub(crate) changed: event_listener::Event,
    pub(crate) pki: Pki,
    pub(crate) recorded: Mutex<Vec<Recorded>>,
    pub(crate) bookmark_interval: Mutex<Duration>,
    pub(crate) watch_list_gzip: AtomicBool,
    pub(crate) max_watch_timeout: Mutex<Option<Duration>>,
    pub(crate) conns: Mutex<Vec<TcpStream>>,
    pub(crate) body_bytes: AtomicU64,
    pub(crate) open_watches: Mutex<HashMap<String, usize>>,
    pub(crate) stopped: AtomicBool,
    pub(crate) listening: AtomicBool,
    pub(crate) signer: Mutex<certificates::Signer>,
    pub(crate) bootstrap_tokens: Mutex<Vec<(String, String)>>,
}

impl Shared {
    pub(crate) fn fault(&self) -> Fault {
        self.fault.lock().unwrap().clone()
    }

    pub(crate) fn notify(&self) {
        self.changed.notify(usize::MAX);
    }
}

/// A running fake apiserver; it stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl ApiServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(pki: &Pki) -> ApiServer {
        Self::start_on(pki, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts on `addr` (port 0 picks one).
    pub fn start_on(pki: &Pki, addr: SocketAddr) -> ApiServer {
        let listener = TcpListener::bind(addr).expect("bind the fake apiserver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            types: Mutex::new(store::builtin_types()),
            tokens: Mutex::default(),
            fault: Mutex::new(Fault::None),
            changed: event_listener::Event::new(),
            pki: pki.clone(),
            recorded: Mutex::default(),
            bookmark_interval: Mutex::new(Duration::from_secs(60)),
            watch_list_gzip: AtomicBool::new(false),
            max_watch_timeout: Mutex::new(None),
            conns: Mutex::default(),
            body_bytes: AtomicU64::new(0),
            open_watches: Mutex::default(),
            stopped: AtomicBool::new(false),
            listening: AtomicBool::new(true),
            signer: Mutex::default(),
            bootstrap_tokens: Mutex::default(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("apiserver-{}", addr.port()))
            .spawn(move || {
                let ex = Arc::new(smol::Executor::new());
                let ex2 = ex.clone();
                smol::block_on(ex.run(accept_loop(ex2, s, listener)));
            })
            .expect("spawn the fake apiserver thread");
        let api = ApiServer { shared, addr };
        api.publish_cluster_info();
        api
    }

    /// Writes `kube-public/cluster-info` for the current bootstrap tokens.
    fn publish_cluster_info(&self) {
        let tokens = self.shared.bootstrap_tokens.lock().unwrap().clone();
        let cm = certificates::cluster_info(&self.url(), &self.shared.pki.ca_pem, &tokens);
        let path = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
        if self.get(path).is_some() {
            self.update(path, cm);
        } else {
            self.create("/api/v1/namespaces/kube-public/configmaps", cm);
        }
    }

    /// Adds a bootstrap token `<id>.<secret>` (user `system:bootstrap:<id>` in
    /// `system:bootstrappers`) and signs cluster-info for it, as kubeadm's token controller does.
    pub fn add_bootstrap_token(&self, id: &str, secret: &str) {
        self.add_token(
            &format!("{id}.{secret}"),
            &format!("system:bootstrap:{id}"),
            &["system:bootstrappers", "system:authenticated"],
        );
        self.shared
            .bootstrap_tokens
            .lock()
            .unwrap()
            .push((id.to_string(), secret.to_string()));
        self.publish_cluster_info();
    }

    /// Removes a bootstrap token, as its expiry does: it no longer authenticates and its
    /// signature leaves cluster-info.
    pub fn expire_bootstrap_token(&self, id: &str) {
        let mut tokens = self.shared.bootstrap_tokens.lock().unwrap();
        if let Some(pos) = tokens.iter().position(|(i, _)| i == id) {
            let (id, secret) = tokens.remove(pos);
            self.shared
                .tokens
                .lock()
                .unwrap()
                .remove(&format!("{id}.{secret}"));
        }
        drop(tokens);
        self.publish_cluster_info();
    }

    /// How new CSRs are answered (default [`Approval::Auto`]).
    pub fn set_csr_approval(&self, approval: Approval) {
        self.shared.signer.lock().unwrap().approval = approval;
    }

    /// How long the certificates the signer issues are valid (default one year).
    pub fn set_cert_lifetime(&self, lifetime: Duration) {
        self.shared.signer.lock().unwrap().lifetime = lifetime;
    }

    /// The CSRs created so far, decoded.
    pub fn csrs(&self) -> Vec<CsrRecord> {
        self.shared.signer.lock().unwrap().seen.clone()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `token` authenticate as `user`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.shared.tokens.lock().unwrap().insert(
            token.to_string(),
            User {
                name: user.to_string(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        );
    }

    /// A service account token shaped as the apiserver issues bound ones (a JWT whose `sub`
    /// is `system:serviceaccount:<namespace>:<name>`, with the `kubernetes.io` claim, expiring
    /// in 2100; `n` tells apart tokens
    /// of one account), made to authenticate as that account.
    pub fn add_service_account_token(&self, namespace: &str, name: &str, n: u32) -> String {
        use base64::Engine;
        let b = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let sub = format!("system:serviceaccount:{namespace}:{name}");
        let token = format!(
            "{}.{}.signature{n}",
            b(r#"{"alg":"RS256","kid":"test"}"#.to_string()),
            b(format!(
                r#"{{"aud":["https://kubernetes.default.svc.cluster.local"],"exp":4102444800,"iss":"https://kubernetes.default.svc.cluster.local","jti":"{n}","kubernetes.io":{{"namespace":"{namespace}","serviceaccount":{{"name":"{name}"}}}},"sub":"{sub}"}}"#
            ))
        );
        self.add_token(&token, &sub, &["system:serviceaccounts"]);
        token
    }

    /// Sets (or clears, with [`Fault::None`]) a misbehaviour. [`Fault::Refuse`] returns once
    /// the port is closed, with every open connection shut as a dead server's would be.
    pub fn set_fault(&self, fault: Fault) {
        let refuse = fault == Fault::Refuse;
        *self.shared.fault.lock().unwrap() = fault;
        self.shared.notify();
        if refuse {
            while self.shared.listening.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.reset_connections();
        }
    }

    /// Shuts down every open connection (the peer sees them end mid-stream).
    pub fn reset_connections(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.shared.notify();
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (default 60 s).
    pub fn set_bookmark_interval(&self, d: Duration) {
        *self.shared.bookmark_interval.lock().unwrap() = d;
    }

    /// Compresses watch-list answers for clients that accept gzip, as kube-apiserver 1.37
    /// does by default (feature `WatchListCompression`): `Content-Encoding: gzip`, and each
    /// event one gzip member in its own chunk, so every event can be read as it comes. Off
    /// by default, as in 1.36 (which compresses no watch). A watch-list is a watch with
    /// `sendInitialEvents=true`, or one the apiserver promotes to it (bookmarks allowed,
    /// `resourceVersion` unset or `0`).
    pub fn set_watch_list_gzip(&self, on: bool) {
        self.shared.watch_list_gzip.store(on, Ordering::Relaxed);
    }

    /// Ends every watch after `d` at most, whatever `timeoutSeconds` asks: a bench that runs
    /// the clock fast shortens the watches of a client it cannot configure (an older hub's
    /// fixed 5 minutes) in the same proportion.
    pub fn set_max_watch_timeout(&self, d: Duration) {
        *self.shared.max_watch_timeout.lock().unwrap() = Some(d);
    }

    /// How many changes the watch history keeps (default 1000).
    pub fn set_max_history(&self, n: usize) {
        self.shared.store.lock().unwrap().max_history = n;
    }

    /// Serves an extra resource type (a CRD).
    pub fn register_type(&self, t: ResourceType) {
        self.shared.types.lock().unwrap().push(t);
    }

    /// Stops serving `resource` of `group` (a CRD that is not installed): 404 from then on.
    pub fn unregister_type(&self, group: &str, resource: &str) {
        self.shared
            .types
            .lock()
            .unwrap()
            .retain(|t| !(t.group == group && t.resource == resource));
    }

    fn locate(&self, path: &str) -> (ResourceType, String, Option<String>) {
        let types = self.shared.types.lock().unwrap().clone();
        let r = serve::parse_resource_path(path, &types)
            .unwrap_or_else(|| panic!("not a resource path: {path}"));
        (r.rtype, r.namespace, r.name)
    }

    /// Creates an object under a collection path such as `/api/v1/namespaces/default/pods`.
    pub fn create(&self, collection: &str, obj: Value) -> Value {
        let (t, ns, _) = self.locate(collection);
        let v = self
            .shared
            .store
            .lock()
            .unwrap()
            .create(&t, &ns, obj)
            .expect("create");
        self.shared.notify();
        v
    }

    /// Replaces the object at `path` (`.../pods/<name>`).
    pub fn update(&self, path: &str, obj: Value) -> Value {
        let (t, ns, name) = self.locate(path);
        let v = self
            .shared
            .store
            .lock()
            .unwrap()
            .update(&t, &ns, &name.expect("object path"), obj, false)
            .expect("update");
        self.shared.notify();
        v
    }

    /// Deletes the object at `path`.
    pub fn delete(&self, path: &str) {
        let (t, ns, name) = self.locate(path);
        let _ = self
            .shared
            .store
            .lock()
            .unwrap()
            .delete(&t, &ns, &name.expect("object path"));
        self.shared.notify();
    }

    /// The object at `path`, if it exists.
    pub fn get(&self, path: &str) -> Option<Value> {
        let (t, ns, name) = self.locate(path);
        self.shared.store.lock().unwrap().get(&t, &ns, &name?).ok()
    }

    /// Appends a line to a pod's log (followers receive it at once).
    pub fn append_log(&self, namespace: &str, pod: &str, line: &str) {
        self.shared
            .store
            .lock()
            .unwrap()
            .logs
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push(line.to_string());
        self.shared.notify();
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// The requests received so far, without the hub's own (health probes and informers,
    /// whose User-Agent starts with `yurthub`, and the multiplexer's `multiplexer-proxy-<node>`).
    pub fn client_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                !r.header("user-agent").is_some_and(|ua| {
                    ua.starts_with("yurthub") || ua.starts_with("multiplexer-proxy-")
                })
            })
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.recorded.lock().unwrap().clear();
    }

    /// Response body bytes written so far (after gzip, before chunk framing).
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// Watches being served right now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.lock().unwrap().values().sum()
    }

    /// Watches of `resource` (e.g. `pods`) being served right now.
    pub fn open_watches_on(&self, resource: &str) -> usize {
        self.shared
            .open_watches
            .lock()
            .unwrap()
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().unwrap().rv
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.reset_connections();
    }
}

async fn accept_loop(ex: Arc<smol::Executor<'static>>, shared: Arc<Shared>, listener: TcpListener) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(Async::new(listener).expect("non-blocking listener"));
    let tls = Arc::new(serve::tls_config(&shared.pki));
    loop {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        if shared.fault() == Fault::Refuse {
            listener = None;
            shared.listening.store(false, Ordering::Relaxed);
            Timer::after(Duration::from_millis(10)).await;
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    listener = Some(Async::new(l).expect("non-blocking listener"));
                    shared.listening.store(true, Ordering::Relaxed);
                }
                Err(_) => {
                    Timer::after(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().expect("bound above");
        let accepted = smol::future::or(async { Some(l.accept().await) }, async {
            Timer::after(Duration::from_millis(20)).await;
            None
        })
        .await;
        if let Some(Ok((stream, _))) = accepted {
            if shared.fault() == Fault::Refuse {
                continue;
            }
            // Go sets TCP_NODELAY on every connection; without it Nagle's algorithm and
            // delayed ACKs hold a watch event back by 40 ms.
            let _ = stream.get_ref().set_nodelay(true);
            if let Ok(clone) = stream.get_ref().try_clone() {
                let mut conns = shared.conns.lock().unwrap();
                conns.retain(|c| c.peer_addr().is_ok());
                conns.push(clone);
            }
            ex.spawn(serve::connection(shared.clone(), tls.clone(), stream))
                .detach();
        }
    }
}

/// A test cluster: a CA, one apiserver, and the hub's root and cache directories with a node
/// certificate for `node-1` in place.
pub struct Cluster {
    /// The CA.
    pub pki: Pki,
    /// The apiserver.
    pub api: ApiServer,
    /// `--root-dir`.
    pub root: TempDir,
    /// `--disk-cache-path`.
    pub cache: TempDir,
}

/// The node name every fixture uses.
pub const NODE: &str = "node-1";
/// The id of the bootstrap token of [`Cluster::unjoined`].
pub const BOOTSTRAP_ID: &str = "abcdef";
/// Its secret.
pub const BOOTSTRAP_SECRET: &str = "0123456789abcdef";

impl Cluster {
    /// A CA, an apiserver, and the hub's files.
    pub fn new() -> Cluster {
        let pki = Pki::new();
        let api = ApiServer::start(&pki);
        let root = TempDir::new("root");
        pki.write_hub_files(root.path(), NODE);
        Cluster {
            pki,
            api,
            root,
            cache: TempDir::new("cache"),
        }
    }

    /// A CA and an apiserver with the bootstrap token `abcdef.0123456789abcdef`, and an empty
    /// root directory: a node that has not joined yet.
    pub fn unjoined() -> Cluster {
        let pki = Pki::new();
        let api = ApiServer::start(&pki);
        api.add_bootstrap_token(BOOTSTRAP_ID, BOOTSTRAP_SECRET);
        Cluster {
            pki,
            api,
            root: TempDir::new("root"),
            cache: TempDir::new("cache"),
        }
    }

    /// Flags for a hub in front of `servers`, listening on a free port.
    pub fn hub_args(&self, servers: &[&ApiServer]) -> Vec<String> {
        hub_args_for(servers, NODE, self.root.path(), self.cache.path())
    }

    /// Starts the hub binary `bin` in front of this cluster's apiserver, with `extra` flags.
    pub fn start_hub(&self, bin: &str, extra: &[&str]) -> Hub {
        let mut args = self.hub_args(&[&self.api]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Hub::start(bin, &args)
    }
}

/// Flags for hub `node` in front of `servers`, with its files in `root` and `cache`,
/// listening on free ports (a [`Cluster`]'s, or one of many in a bench).
pub fn hub_args_for(
    servers: &[&ApiServer],
    node: &str,
    root: &std::path::Path,
    cache: &std::path::Path,
) -> Vec<String> {
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    vec![
        format!("--server-addr={}", urls.join(",")),
        format!("--node-name={node}"),
        "--nodepool-name=pool-a".into(),
        format!("--root-dir={}", root.display()),
        format!("--disk-cache-path={}", cache.display()),
        "--bind-proxy-address=127.0.0.1".into(),
        "--proxy-port=0".into(),
        "--bind-address=127.0.0.1".into(),
        "--serve-port=0".into(),
        // The host's network is not the tests' to change (tests/network.rs makes the
        // dummy link in a namespace of its own); the TLS port is any free one.
        "--enable-dummy-if=false".into(),
        "--proxy-secure-port=0".into(),
        "--v=2".into(),
    ]
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// A request as a metered-traffic report names it: `WATCH pods`, `PATCH nodes/status`,
/// `GET leases` (the verb, `WATCH` for watches, and the resource with its subresource).
pub fn request_kind(method: &str, target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resource = match parts.as_slice() {
        ["api", _, "namespaces", _, res, _, sub, ..] => format!("{res}/{sub}"),
        ["api", _, "namespaces", _, res, ..] => res.to_string(),
        ["api", _, res, _, sub, ..] => format!("{res}/{sub}"),
        ["api", _, res, ..] => res.to_string(),
        ["apis", _, _, "namespaces", _, res, _, sub, ..] => format!("{res}/{sub}"),
        ["apis", _, _, "namespaces", _, res, ..] => res.to_string(),
        ["apis", _, _, res, _, sub, ..] => format!("{res}/{sub}"),
        ["apis", _, _, res, ..] => res.to_string(),
        _ => path.to_string(),
    };
    let watch = target.contains("watch=true") || target.contains("watch=1");
    format!("{} {resource}", if watch { "WATCH" } else { method })
}

/// Waits until `done` holds, checking every 20 ms; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names of a list's items, in order; panics on what is no list.
pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A minimal pod bound to `node`.
pub fn pod(name: &str, node: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/pause:3.10"}]},
        "status": {"phase": "Running"}
    })
}

/// Whether the real `kubectl` is on this machine.
pub fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `kubectl` talking to `server` over plain HTTP, with no kubeconfig and its own cache dir.
pub fn kubectl(server: SocketAddr, cache_dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new("kubectl");
    c.env("KUBECONFIG", "/dev/null")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .arg(format!("--server=http://{server}"))
        .arg(format!("--cache-dir={}", cache_dir.display()))
        .arg("--request-timeout=20s");
    c
}

/// Waits until the admin server at `admin` reports ready (for hubs started in-process).
pub fn wait_ready(admin: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if client::request(admin, "GET", "/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub never became ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

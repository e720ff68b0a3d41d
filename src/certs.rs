//! The hub's own identity: the node client certificate it presents to the apiservers, the
//! serving certificate of the TLS proxy, and how both are obtained and kept (reference §7).
//!
//! In `token` mode (the default) the hub generates an ECDSA P-256 key, sends a
//! CertificateSigningRequest and waits for the signed certificate: the first time, and
//! whenever its certificate is missing, corrupt or expired, authenticated by the bootstrap
//! token (from `--bootstrap-file`, or discovered with `--join-token`); afterwards by its own
//! certificate, at a random point between 70 % and 90 % of the lifetime. In
//! `kubeletcertificate` mode it presents the kubelet's client certificate, reloaded when the
//! file changes. The serving certificate always comes from a `kubelet-serving` CSR.
//!
//! Nothing here stops the hub from serving: while the cloud is unreachable, an expired
//! certificate only waits for the cloud to come back (upstream's readiness turns false and
//! even cached answers stop, reference Appendix A item 11; this hub does not copy that).

pub mod client;
pub mod csr;
pub mod discovery;
pub mod kubeconfig;
pub mod pkcs10;
pub mod store;
pub mod x509;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::kube::time::rfc3339;
use crate::upstream::ServerUrl;
use crate::upstream::{client_config, read_certs, read_identity, Tls, TlsError, Upstream};
use client::ApiClient;
use csr::Template;
use discovery::{Token, Trust};
use kubeconfig::Kubeconfig;
use store::{Loaded, PemStore, Stamp};
use x509::Certificate;

/// Where the hub's client certificate comes from (reference §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapMode {
    /// A CSR authenticated by a bootstrap token, then by the certificate itself.
    Token,
    /// The kubelet's client certificate, as it is on disk.
    KubeletCertificate,
}

/// Why a certificate could not be obtained.
#[derive(Debug)]
pub enum CertError {
    /// No apiserver is configured.
    NoServer,
    /// An apiserver could not be reached or did not answer in time.
    Unreachable {
        /// `host:port`.
        server: String,
        /// What happened.
        error: std::io::Error,
    },
    /// The CSR was refused, denied, or not signed in time.
    Csr(csr::CsrError),
    /// Token discovery failed (cluster-info missing, badly signed, or the CA not trusted).
    Discovery(discovery::DiscoveryError),
    /// The bootstrap token is malformed.
    BadToken,
    /// There is neither a valid certificate nor a usable bootstrap kubeconfig.
    NoBootstrap(NoBootstrap),
    /// A key or CSR could not be made.
    Key(pkcs10::KeyError),
    /// TLS material was rejected.
    Tls(TlsError),
    /// A new bootstrap token arrived while a CSR waited (the attempt starts over).
    Superseded,
    /// A file could not be written or read.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// Why there is no way to ask for a client certificate.
#[derive(Debug)]
pub enum NoBootstrap {
    /// No bootstrap kubeconfig and no `--join-token`.
    Nothing(PathBuf),
    /// The bootstrap kubeconfig does not parse.
    Unparsable(PathBuf, kubeconfig::KubeconfigError),
    /// It holds no token.
    NoToken(PathBuf),
    /// It names no certificate authority.
    NoCa(PathBuf),
}

impl fmt::Display for NoBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nothing(file) => write!(
                f,
                "no valid client certificate and no bootstrap kubeconfig at {}: give --join-token, or POST a token to /v1/token",
                file.display()
            ),
            Self::Unparsable(file, e) => write!(f, "{}: {e}", file.display()),
            Self::NoToken(file) => write!(f, "{}: no token", file.display()),
            Self::NoCa(file) => write!(f, "{}: no certificate authority", file.display()),
        }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::NoServer => write!(f, "apiserver unreachable: no server configured"),
            CertError::Unreachable { server, error } => {
                write!(f, "apiserver unreachable: {server}: {error}")
            }
            CertError::Csr(e) => write!(f, "{e}"),
            CertError::Discovery(e) => write!(f, "token discovery: {e}"),
            CertError::BadToken => write!(
                f,
                "bad bootstrap token: a bootstrap token has the form [a-z0-9]{{6}}.[a-z0-9]{{16}}"
            ),
            CertError::NoBootstrap(e) => write!(f, "{e}"),
            CertError::Key(e) => write!(f, "making the key or CSR: {e}"),
            CertError::Tls(e) => write!(f, "{e}"),
            CertError::Superseded => write!(f, "superseded by a new bootstrap token"),
            CertError::File { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for CertError {}

/// Why the hub's client certificate cannot serve (readiness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientUnusable {
    /// There is none yet.
    Missing,
    /// It expired at this time, and the cloud is reachable to renew it.
    Expired(SystemTime),
}

impl fmt::Display for ClientUnusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "no node client certificate"),
            Self::Expired(at) => write!(f, "node client certificate expired at {}", rfc3339(*at)),
        }
    }
}

impl std::error::Error for ClientUnusable {}

/// The serving certificate of the TLS proxy, swapped in place when it is renewed.
#[derive(Debug, Default)]
pub struct ServingKey(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingKey {
    fn set(&self, loaded: &Loaded) -> Result<(), store::LoadError> {
        let key = rustls::crypto::ring::sign::any_supported_type(&loaded.key)
            .map_err(store::LoadError::ServingKey)?;
        let ck = CertifiedKey::new(loaded.certs.clone(), key);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ck));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_set(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl ResolvesServerCert for ServingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A certificate in use.
struct Held {
    info: Certificate,
    stamp: Stamp,
    rotate_at: SystemTime,
}

/// A random point between 70 % and 90 % of the validity (client-go's rotation deadline).
fn jittered_deadline(info: &Certificate) -> SystemTime {
    let mut b = [0u8; 4];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map(|()| f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
        .unwrap_or(0.5);
    info.at_fraction(0.7 + 0.2 * r)
}

/// Back-off between failed attempts: 2 s doubling to 32 s, then every 32 s (upstream's).
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_secs(2u64 << self.0.min(4));
        self.0 = self.0.saturating_add(1);
        d
    }

    /// Logs a failed attempt at `what` and says when to try again.
    fn failed(&mut self, what: &str, e: &CertError, now: SystemTime) -> SystemTime {
        let d = self.next();
        log::warn!("{what} not obtained: {e}; next attempt in {}s", d.as_secs());
        now + d
    }
}

/// How often the files are checked for replacement by someone else.
const RELOAD_CHECK: Duration = Duration::from_secs(10);
/// How often an unknown ClusterIP of default/kubernetes is asked for again.
const CLUSTER_IP_RETRY: Duration = Duration::from_secs(60);
/// How long one CSR may wait for approval (upstream: 15 minutes).
const APPROVAL_WAIT: Duration = Duration::from_secs(15 * 60);

/// The certificate manager.
pub struct Certs {
    mode: BootstrapMode,
    node: String,
    servers: Vec<ServerUrl>,
    pki_dir: PathBuf,
    root_dir: PathBuf,
    client_path: PathBuf,
    ca_path: PathBuf,
    bootstrap_file: PathBuf,
    join_token: Option<String>,
    pins: Vec<[u8; 32]>,
    unsafe_skip: bool,
    organizations: Vec<String>,
    signer: String,
    serving_ips: Vec<IpAddr>,
    client: RwLock<Option<Held>>,
    serving: RwLock<Option<Held>>,
    serving_key: Arc<ServingKey>,
    cluster_ip: Mutex<Option<IpAddr>>,
    wake: event_listener::Event,
    woken: AtomicBool,
    loaded: event_listener::Event,
}

fn file_err(path: &Path, error: std::io::Error) -> CertError {
    CertError::File {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `data` to `path` atomically with `mode` permissions, creating its directory; on a
/// blocking thread, since fsyncs on an SD card can take a while the executor must not wait.
async fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    smol::unblock(move || {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        crate::atomic_file::replace(&path, &[&data], mode).map_err(|e| file_err(&e.path, e.error))
    })
    .await
}

/// Stores an issued pair under `<dir>/<prefix>-*.pem` (on a blocking thread, as `write_file`).
async fn save_pair(
    dir: &Path,
    prefix: &'static str,
    issued: csr::Issued,
) -> Result<PathBuf, CertError> {
    let dir = dir.to_path_buf();
    smol::unblock(move || {
        PemStore::new(dir.clone(), prefix)
            .save(&issued.chain_pem, &issued.key_pem)
            .map_err(|e| file_err(&dir, e))
    })
    .await
}

/// What the certificate manager needs from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the client certificate comes from.
    pub mode: BootstrapMode,
    /// The node's name (`CN=system:node:<node>`).
    pub node: String,
    /// The cloud apiservers.
    pub servers: Vec<ServerUrl>,
    /// `--root-dir`: `pki/` and the kubeconfigs live here.
    pub root_dir: PathBuf,
    /// The kubeconfig with the bootstrap token.
    pub bootstrap_file: PathBuf,
    /// The kubelet's certificate (kubeletcertificate mode).
    pub kubelet_client_certificate: PathBuf,
    /// The kubelet's CA file (kubeletcertificate mode).
    pub kubelet_ca_file: PathBuf,
    /// `--join-token`.
    pub join_token: Option<String>,
    /// `--discovery-token-ca-cert-hash` pins.
    pub pins: Vec<[u8; 32]>,
    /// `--discovery-token-unsafe-skip-ca-verification`.
    pub unsafe_skip_ca_verification: bool,
    /// Extra organizations of the client certificate.
    pub organizations: Vec<String>,
    /// The signer of the client CSR.
    pub signer: String,
    /// The addresses the serving certificate is asked for (unspecified and repeated ones are
    /// dropped).
    pub serving_ips: Vec<IpAddr>,
}

impl Certs {
    /// The manager for `settings`, with whatever certificates are on disk already loaded (no
    /// network yet).
    pub fn new(settings: Settings) -> Arc<Certs> {
        let pki_dir = settings.root_dir.join("pki");
        let (client_path, ca_path) = match settings.mode {
            BootstrapMode::Token => (pki_dir.join("yurthub-current.pem"), pki_dir.join("ca.crt")),
            BootstrapMode::KubeletCertificate => (
                settings.kubelet_client_certificate,
                settings.kubelet_ca_file,
            ),
        };
        let mut unique = Vec::new();
        for ip in settings.serving_ips {
            if !ip.is_unspecified() && !unique.contains(&ip) {
                unique.push(ip);
            }
        }
        let certs = Certs {
            mode: settings.mode,
            node: settings.node,
            servers: settings.servers,
            root_dir: settings.root_dir,
            client_path,
            ca_path,
            bootstrap_file: settings.bootstrap_file,
            join_token: settings.join_token,
            pins: settings.pins,
            unsafe_skip: settings.unsafe_skip_ca_verification,
            organizations: settings.organizations,
            signer: settings.signer,
            serving_ips: unique,
            client: RwLock::new(None),
            serving: RwLock::new(None),
            serving_key: Arc::default(),
            cluster_ip: Mutex::new(None),
            wake: event_listener::Event::new(),
            woken: AtomicBool::new(false),
            loaded: event_listener::Event::new(),
            pki_dir,
        };
        certs.reload(None);
        Arc::new(certs)
    }

    /// The cluster CA file the upstream connections trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The node's certificate and key file.
    pub fn client_path(&self) -> &Path {
        &self.client_path
    }

    /// The TLS proxy's certificate.
    pub fn serving_key(&self) -> Arc<ServingKey> {
        self.serving_key.clone()
    }

    fn serving_path(&self) -> PathBuf {
        self.pki_dir.join("yurthub-server-current.pem")
    }

    /// `Ok` when the hub may serve, else what is missing (for `/v1/readyz`). Without any
    /// client certificate the hub is never ready (a node that never joined has nothing to
    /// serve); an expired one matters only while the cloud is reachable, since only then can
    /// it be renewed. The serving certificate is not a condition: clusters without OpenYurt's
    /// approver never sign it, and the TLS port simply refuses handshakes until it exists.
    pub fn check(&self, cloud_reachable: bool) -> Result<(), ClientUnusable> {
        match &*self.client.read().unwrap_or_else(|e| e.into_inner()) {
            None => Err(ClientUnusable::Missing),
            Some(h) if cloud_reachable && SystemTime::now() >= h.info.not_after => {
                Err(ClientUnusable::Expired(h.info.not_after))
            }
            Some(_) => Ok(()),
        }
    }

    /// Seconds until the client and the serving certificate expire (negative once expired),
    /// for those loaded.
    pub fn expiry_seconds(&self) -> Vec<(&'static str, f64)> {
        let now = SystemTime::now();
        let left = |t: SystemTime| match t.duration_since(now) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let mut out = Vec::new();
        for (name, slot) in [("client", &self.client), ("serving", &self.serving)] {
            if let Some(h) = &*slot.read().unwrap_or_else(|e| e.into_inner()) {
                out.push((name, left(h.info.not_after).floor()));
            }
        }
        out
    }

    /// Loads the files that changed since they were last loaded; tells `upstream` about a new
    /// client certificate.
    fn reload(&self, upstream: Option<&Upstream>) {
        let client_changed =
            self.reload_one(&self.client_path, &self.client, "node client", |_| Ok(()));
        if client_changed {
            if let Some(up) = upstream {
                match Tls::load(&self.ca_path, &self.client_path) {
                    Ok(tls) => up.set_tls(tls),
                    Err(e) => log::warn!("reloading TLS for the cloud: {e}"),
                }
            }
        }
        let key = self.serving_key.clone();
        self.reload_one(&self.serving_path(), &self.serving, "serving", |l| {
            key.set(l)
        });
    }

    /// Reloads one certificate if its file changed; returns whether it did.
    fn reload_one(
        &self,
        path: &Path,
        slot: &RwLock<Option<Held>>,
        what: &str,
        apply: impl FnOnce(&Loaded) -> Result<(), store::LoadError>,
    ) -> bool {
        let now_stamp = store::stamp(path);
        let same = slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.stamp.clone())
            == now_stamp;
        if same {
            return false;
        }
        let held = match store::load(path).and_then(|l| apply(&l).map(|()| l)) {
            Ok(l) => {
                let rotate_at = jittered_deadline(&l.info);
                log::info!(
                    "{what} certificate {} (CN={}) valid until {}, renewal from {}",
                    path.display(),
                    l.info.common_name,
                    rfc3339(l.info.not_after),
                    rfc3339(rotate_at)
                );
                Some(Held {
                    info: l.info,
                    stamp: l.stamp,
                    rotate_at,
                })
            }
            Err(e) => {
                if now_stamp.is_some() {
                    log::warn!("{what} certificate unusable: {e}; a new one will be requested");
                }
                None
            }
        };
        *slot.write().unwrap_or_else(|e| e.into_inner()) = held;
        self.loaded.notify(usize::MAX);
        true
    }

    /// Returns once a client certificate is loaded (at once when one was on disk). The
    /// health prober waits for it: before the first certificate the cloud cannot be asked,
    /// which says nothing about whether it is reachable (upstream waits the same way).
    pub async fn wait_client(&self) {
        loop {
            let listener = self.loaded.listen();
            if self
                .client
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return;
            }
            listener.await;
        }
    }

    fn client_template(&self) -> Template {
        let mut orgs: Vec<String> = if self.signer == "kubernetes.io/kube-apiserver-client-kubelet"
        {
            vec!["system:nodes".into()]
        } else {
            vec!["openyurt:yurthub".into(), "system:nodes".into()]
        };
        for o in &self.organizations {
            if !orgs.contains(o) {
                orgs.push(o.clone());
            }
        }
        Template {
            signer: self.signer.clone(),
            common_name: format!("system:node:{}", self.node),
            organizations: orgs,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usages: &["digital signature", "key encipherment", "client auth"],
        }
    }

    fn serving_template(&self) -> Template {
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(ip) = *self.cluster_ip.lock().unwrap_or_else(|e| e.into_inner()) {
            ips.push(ip);
        }
        for ip in &self.serving_ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        Template {
            signer: "kubernetes.io/kubelet-serving".into(),
            common_name: format!("system:node:{}", self.node),
            organizations: vec!["system:nodes".into()],
            dns_names: [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            ip_addresses: ips,
            usages: &["digital signature", "key encipherment", "server auth"],
        }
    }

    /// When the client certificate is due for renewal (now when missing, expired or not
    /// what the template asks for).
    fn client_due(&self, now: SystemTime) -> SystemTime {
        let t = self.client_template();
        match &*self.client.read().unwrap_or_else(|e| e.into_inner()) {
            Some(h)
                if h.info.common_name == t.common_name
                    && same_set(&h.info.organizations, &t.organizations) =>
            {
                h.rotate_at
            }
            _ => now,
        }
    }

    fn serving_due(&self, now: SystemTime) -> SystemTime {
        let t = self.serving_template();
        match &*self.serving.read().unwrap_or_else(|e| e.into_inner()) {
            Some(h)
                if h.info.common_name == t.common_name
                    && t.ip_addresses
                        .iter()
                        .all(|ip| h.info.ip_addresses.contains(ip)) =>
            {
                h.rotate_at
            }
            _ => now,
        }
    }

    fn client_valid(&self, now: SystemTime) -> bool {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            // Not-after only, as client-go: a node whose clock lags at boot keeps its certificate.
            .is_some_and(|h| now < h.info.not_after)
    }

    /// The CA file's bytes, when it holds a PEM certificate (the file is read once).
    fn ca_pem(&self) -> Option<Vec<u8>> {
        use rustls::pki_types::pem::PemObject;
        let bytes = std::fs::read(&self.ca_path).ok()?;
        let has_cert = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
            .next()
            .is_some_and(|c| c.is_ok());
        has_cert.then_some(bytes)
    }

    /// A client authenticated by the node certificate.
    fn node_client(&self) -> Result<ApiClient, CertError> {
        let ca = read_certs(&self.ca_path).map_err(CertError::Tls)?;
        let identity = read_identity(&self.client_path).map_err(CertError::Tls)?;
        let config = client_config(&ca, Some(identity)).map_err(CertError::Tls)?;
        Ok(ApiClient::new(self.servers.clone(), config, None))
    }

    /// A client authenticated by the bootstrap token; discovers the cluster with
    /// `--join-token` first when there is no bootstrap kubeconfig yet.
    async fn bootstrap_client(&self) -> Result<ApiClient, CertError> {
        if !self.bootstrap_file.exists() {
            match &self.join_token {
                Some(t) => self.write_bootstrap(&Token::parse(t)?).await?,
                None => {
                    return Err(CertError::NoBootstrap(NoBootstrap::Nothing(
                        self.bootstrap_file.clone(),
                    )))
                }
            }
        }
        let text = std::fs::read_to_string(&self.bootstrap_file)
            .map_err(|e| file_err(&self.bootstrap_file, e))?;
        let file = || self.bootstrap_file.clone();
        let k = Kubeconfig::parse(&text)
            .map_err(|e| CertError::NoBootstrap(NoBootstrap::Unparsable(file(), e)))?;
        let token = k
            .token
            .clone()
            .ok_or_else(|| CertError::NoBootstrap(NoBootstrap::NoToken(file())))?;
        if self.ca_pem().is_none() {
            let ca = match (&k.ca_data, &k.ca_file) {
                (Some(d), _) => d.clone(),
                (None, Some(f)) => std::fs::read(f).map_err(|e| file_err(Path::new(f), e))?,
                (None, None) => return Err(CertError::NoBootstrap(NoBootstrap::NoCa(file()))),
            };
            write_file(&self.ca_path, &ca, 0o644).await?;
        }
        let ca = read_certs(&self.ca_path).map_err(CertError::Tls)?;
        let config = client_config(&ca, None).map_err(CertError::Tls)?;
        Ok(ApiClient::new(self.servers.clone(), config, Some(token)))
    }

    /// Discovers the cluster with `token` and writes the bootstrap kubeconfig (and the CA
    /// when there is none yet).
    async fn write_bootstrap(&self, token: &Token) -> Result<(), CertError> {
        let trust = Trust {
            known_ca: self.ca_pem(),
            pins: &self.pins,
            unsafe_skip: self.unsafe_skip,
        };
        let found = discovery::discover(&self.servers, token, &trust).await?;
        if trust.known_ca.is_none() {
            write_file(&self.ca_path, &found.ca_pem, 0o644).await?;
        }
        let yaml = Kubeconfig::bootstrap_yaml(&found.server, &found.ca_pem, &token.expose());
        write_file(&self.bootstrap_file, yaml.as_bytes(), 0o600).await?;
        log::info!(
            "bootstrap token {:?} verified against cluster-info of {}; wrote {}",
            token,
            found.server,
            self.bootstrap_file.display()
        );
        Ok(())
    }

    /// `POST /v1/token`: discovers with the new token, rewrites the bootstrap kubeconfig, and
    /// makes the next attempt (now) use it. A no-op in `kubeletcertificate` mode.
    pub async fn update_token(&self, token: &str) -> Result<(), CertError> {
        if self.mode == BootstrapMode::KubeletCertificate {
            return Ok(());
        }
        self.write_bootstrap(&Token::parse(token)?).await?;
        self.woken.store(true, Ordering::Relaxed);
        self.wake.notify(usize::MAX);
        Ok(())
    }

    async fn renew_client(&self, upstream: &Upstream) -> Result<(), CertError> {
        let now = SystemTime::now();
        let api = if self.client_valid(now) {
            self.node_client()?
        } else {
            log::info!("no valid node client certificate: requesting one with the bootstrap token");
            self.bootstrap_client().await?
        };
        let issued = csr::obtain(&api, &self.client_template(), APPROVAL_WAIT).await?;
        let csr_name = issued.csr_name.clone();
        let path = save_pair(&self.pki_dir, "yurthub", issued).await?;
        log::info!("CSR {csr_name} signed: stored {}", path.display());
        let conf = self.root_dir.join("yurthub.conf");
        if !conf.exists() {
            if let (Some(ca), Some(server)) = (self.ca_pem(), self.servers.first()) {
                let yaml = Kubeconfig::client_yaml(
                    &format!("https://{}", server.authority()),
                    &ca,
                    &self.client_path.display().to_string(),
                );
                write_file(&conf, yaml.as_bytes(), 0o600).await?;
            }
        }
        self.reload(Some(upstream));
        Ok(())
    }

    /// The ClusterIP of default/kubernetes, what pods resolve "kubernetes" to, for the
    /// serving certificate; tried until known.
    async fn learn_cluster_ip(&self) {
        let Ok(api) = self.node_client() else { return };
        match api
            .request(
                "GET",
                "/api/v1/namespaces/default/services/kubernetes",
                None,
            )
            .await
        {
            Ok((200, body)) => {
                let ip = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["spec"]["clusterIP"].as_str()?.parse().ok());
                *self.cluster_ip.lock().unwrap_or_else(|e| e.into_inner()) = ip;
            }
            Ok((status, _)) => log::debug!("default/kubernetes service: {status}"),
            Err(e) => log::debug!("default/kubernetes service: {e}"),
        }
    }

    async fn renew_serving(&self, upstream: &Upstream) -> Result<(), CertError> {
        let api = self.node_client()?;
        let issued = csr::obtain(&api, &self.serving_template(), APPROVAL_WAIT).await?;
        let csr_name = issued.csr_name.clone();
        let path = save_pair(&self.pki_dir, "yurthub-server", issued).await?;
        log::info!("CSR {csr_name} signed: stored {}", path.display());
        self.reload(Some(upstream));
        Ok(())
    }

    /// Keeps both certificates: renews them when due, retries with back-off, and picks up
    /// files replaced on disk. The two certificates have loops of their own, so a CSR waiting
    /// for approval holds up only its own kind. Runs forever.
    pub async fn run(self: Arc<Self>, upstream: Arc<Upstream>) {
        smol::future::zip(self.client_loop(&upstream), self.serving_loop(&upstream)).await;
    }

    async fn client_loop(&self, upstream: &Upstream) {
        let mut backoff = Backoff(0);
        loop {
            let wake = self.wake.listen();
            if self.woken.swap(false, Ordering::Relaxed) {
                backoff = Backoff(0);
            }
            self.reload(Some(upstream));
            let now = SystemTime::now();
            let mut next = now + RELOAD_CHECK;
            let due = self.client_due(now);
            if self.mode == BootstrapMode::Token {
                if due <= now {
                    // A new token (`/v1/token`) abandons a CSR still waiting for approval.
                    let cancel = self.wake.listen();
                    let renewed = smol::future::or(self.renew_client(upstream), async {
                        cancel.await;
                        Err(CertError::Superseded)
                    })
                    .await;
                    match renewed {
                        Ok(()) => {
                            backoff = Backoff(0);
                            continue;
                        }
                        Err(CertError::Superseded) => continue,
                        Err(e) => next = backoff.failed("node client certificate", &e, now),
                    }
                } else {
                    next = next.min(due);
                }
            }
            wait_until(next, wake).await;
        }
    }

    async fn serving_loop(&self, upstream: &Upstream) {
        let mut backoff = Backoff(0);
        let mut cluster_ip_tried: Option<std::time::Instant> = None;
        loop {
            // A new client certificate may let a waiting serving certificate go ahead.
            let wake = self.loaded.listen();
            self.reload(Some(upstream));
            let now = SystemTime::now();
            let mut next = now + RELOAD_CHECK;
            if self.client_valid(now) {
                let unknown = self
                    .cluster_ip
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none();
                if unknown && cluster_ip_tried.is_none_or(|t| t.elapsed() >= CLUSTER_IP_RETRY) {
                    cluster_ip_tried = Some(std::time::Instant::now());
                    self.learn_cluster_ip().await;
                }
                let due = self.serving_due(now);
                if due <= now {
                    match self.renew_serving(upstream).await {
                        Ok(()) => {
                            backoff = Backoff(0);
                            continue;
                        }
                        Err(e) => next = backoff.failed("serving certificate", &e, now),
                    }
                } else {
                    next = next.min(due);
                }
            }
            wait_until(next, wake).await;
        }
    }
}

/// Sleeps until `at`, or until `wake` fires.
async fn wait_until(at: SystemTime, wake: event_listener::EventListener) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    smol::future::or(
        async {
            async_io::Timer::after(wait).await;
        },
        wake,
    )
    .await;
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && b.iter().all(|x| a.contains(x))
}

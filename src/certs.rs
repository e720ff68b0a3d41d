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

mod bootstrap;
pub mod client;
pub mod csr;
pub mod discovery;
mod files;
pub mod kubeconfig;
pub mod pkcs10;
pub mod rebuilt;
mod schedule;
mod serving;
pub mod store;
pub mod x509;
pub mod yaml;

pub use serving::ServingKey;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::kube::time::rfc3339;
use crate::upstream::ServerUrl;
use crate::upstream::{Tls, TlsError, Upstream};
use schedule::jittered_deadline;
use store::{Loaded, Stamp};
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

/// A certificate in use.
struct Held {
    info: Certificate,
    stamp: Stamp,
    rotate_at: SystemTime,
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

    /// Keeps both certificates: renews them when due, retries with back-off, and picks up
    /// files replaced on disk. The two certificates have loops of their own, so a CSR waiting
    /// for approval holds up only its own kind. Runs forever.
    pub async fn run(self: Arc<Self>, upstream: Arc<Upstream>) {
        smol::future::zip(self.client_loop(&upstream), self.serving_loop(&upstream)).await;
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && b.iter().all(|x| a.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(root: &Path) -> Settings {
        Settings {
            mode: BootstrapMode::Token,
            node: "node-1".into(),
            servers: Vec::new(),
            root_dir: root.to_path_buf(),
            bootstrap_file: root.join("bootstrap-hub.conf"),
            kubelet_client_certificate: root.join("kubelet.pem"),
            kubelet_ca_file: root.join("ca.crt"),
            join_token: None,
            pins: Vec::new(),
            unsafe_skip_ca_verification: false,
            organizations: Vec::new(),
            signer: "kubernetes.io/kube-apiserver-client".into(),
            serving_ips: Vec::new(),
        }
    }

    #[test]
    fn a_hub_without_a_certificate_is_not_ready_and_says_why() {
        let root = std::env::temp_dir().join(format!("yurthub-certs-{}", std::process::id()));
        let certs = Certs::new(settings(&root));
        let e = certs.check(true).unwrap_err();
        assert_eq!(e, ClientUnusable::Missing);
        assert_eq!(e.to_string(), "no node client certificate");
        assert_eq!(
            certs.client_path(),
            root.join("pki/yurthub-current.pem").as_path()
        );
        assert!(certs.expiry_seconds().is_empty());
        assert!(!certs.serving_key().is_set());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn errors_say_what_an_operator_can_act_on() {
        let e = CertError::NoBootstrap(NoBootstrap::Nothing(PathBuf::from(
            "/var/lib/yurthub/bootstrap-hub.conf",
        )));
        assert_eq!(
            e.to_string(),
            "no valid client certificate and no bootstrap kubeconfig at /var/lib/yurthub/bootstrap-hub.conf: give --join-token, or POST a token to /v1/token"
        );
        assert_eq!(
            CertError::BadToken.to_string(),
            "bad bootstrap token: a bootstrap token has the form [a-z0-9]{6}.[a-z0-9]{16}"
        );
        let e = CertError::Csr(csr::CsrError::NotApproved {
            name: "csr-abc".into(),
            wait: Duration::from_secs(900),
        });
        assert_eq!(e.to_string(), "CSR csr-abc was not approved within 900s");
        assert!(same_set(
            &["a".into(), "b".into()],
            &["b".into(), "a".into()]
        ));
        assert!(!same_set(&["a".into()], &["a".into(), "b".into()]));
    }
}

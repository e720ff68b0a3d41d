//! A real Kubernetes control plane for tests, the way controller-runtime's envtest runs one:
//! etcd, kube-apiserver and kube-controller-manager from the directory named by
//! `YURTHUB_KUBE_ASSETS` (default `../shared/envtest`, plain binaries or `.xz` ones unpacked
//! into `target/envtest`), a fresh PKI, free ports and temp dirs, and the objects `kubeadm`
//! creates for joining nodes (a bootstrap token, its RBAC, a signed `kube-public/cluster-info`).
//!
//! One control plane serves a whole test binary; [`shared`] hands it to one test at a time
//! (tests may kill the apiserver to play a WAN cut). Its processes die with the test binary,
//! however that ends. Where the binaries are absent, [`shared`] prints [`SKIPPED`] and returns
//! `None`, unless `YURTHUB_REQUIRE_REAL_CLUSTER=1`, which makes absence a failure.
//!
//! ```no_run
//! let Some(cp) = testapi::envtest::shared() else { return };
//! let nodes = cp.admin().get("/api/v1/nodes");
//! assert_eq!(nodes.status, 200);
//! ```

mod hollow;
pub mod process;

pub use hollow::Hollow;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::client::{HttpResponse, Session};

/// What a test prints, once, when it cannot run for want of the binaries.
pub const SKIPPED: &str = "SKIPPED: no Kubernetes binaries (set YURTHUB_KUBE_ASSETS)";
/// The bootstrap token id every control plane has.
pub const TOKEN_ID: &str = "abcdef";
/// Its secret.
pub const TOKEN_SECRET: &str = "0123456789abcdef";
/// The binaries a control plane needs.
const REQUIRED: &[&str] = &["etcd", "kube-apiserver", "kube-controller-manager"];

/// The directory holding runnable Kubernetes binaries, unpacking `.xz` ones first.
#[derive(Clone, Debug)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// Finds (and unpacks) the binaries; `None` when any required one is missing.
    pub fn find() -> Option<Assets> {
        let source = match std::env::var_os("YURTHUB_KUBE_ASSETS") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from("../shared/envtest"),
        };
        let unpacked = target_dir().join("envtest");
        for name in REQUIRED.iter().chain(&["kubemark"]) {
            if let Err(e) = unpack(&source, &unpacked, name) {
                if REQUIRED.contains(name) {
                    eprintln!("envtest: {name}: {e}");
                    return None;
                }
            }
        }
        let a = Assets { dir: unpacked };
        REQUIRED.iter().all(|b| a.has(b)).then_some(a)
    }

    /// The path of binary `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether binary `name` is there.
    pub fn has(&self, name: &str) -> bool {
        self.path(name).is_file()
    }
}

/// `target/` of this build (the test binary lives in `target/<profile>/deps`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Makes `dest/name` a runnable copy of `source/name` or of `source/name.xz`.
fn unpack(source: &Path, dest: &Path, name: &str) -> std::io::Result<()> {
    let plain = source.join(name);
    let xz = source.join(format!("{name}.xz"));
    let out = dest.join(name);
    let newer = |src: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (m(src), m(&out)) {
            (Some(s), Some(o)) => o >= s,
            _ => false,
        }
    };
    std::fs::create_dir_all(dest)?;
    let tmp = dest.join(format!(".{name}.{}", std::process::id()));
    if plain.is_file() {
        if newer(&plain) {
            return Ok(());
        }
        std::fs::copy(&plain, &tmp)?;
    } else if xz.is_file() {
        if newer(&xz) {
            return Ok(());
        }
        let file = std::fs::File::create(&tmp)?;
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .stdout(file)
            .status()
            .map_err(|e| std::io::Error::other(format!("xz (install xz-utils): {e}")))?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(std::io::Error::other(format!(
                "xz -dc {} failed",
                xz.display()
            )));
        }
    } else {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    // Another test binary may unpack the same file at the same time: rename is atomic.
    std::fs::rename(&tmp, &out)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The cluster's certificates and keys, as files and PEM.
struct ClusterPki {
    dir: PathBuf,
    ca_pem: String,
    ca_pin: String,
    admin_pem: String,
}

fn write(path: &Path, data: &str) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl ClusterPki {
    fn new(dir: &Path) -> ClusterPki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("P-256 key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name.push(DnType::CommonName, "kubernetes");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |cn: &str, groups: &[&str], server: bool| -> (String, String) {
            let key = KeyPair::generate().expect("P-256 key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name.push(DnType::CommonName, cn);
            for g in groups {
                p.distinguished_name.push(DnType::OrganizationName, *g);
            }
            if server {
                for dns in [
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ] {
                    p.subject_alt_names
                        .push(SanType::DnsName(dns.try_into().expect("a DNS name")));
                }
                for ip in [[127, 0, 0, 1], [10, 96, 0, 1]] {
                    p.subject_alt_names.push(SanType::IpAddress(ip.into()));
                }
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            } else {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = p.signed_by(&key, &issuer).expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let files = |name: &str, (cert, key): (String, String)| {
            write(&dir.join(format!("{name}.crt")), &cert);
            write(&dir.join(format!("{name}.key")), &key);
            format!("{cert}{key}")
        };
        write(&dir.join("ca.crt"), &ca_cert.pem());
        write(&dir.join("ca.key"), &ca_key.serialize_pem());
        files("apiserver", leaf("kube-apiserver", &[], true));
        let admin_pem = files("admin", leaf("admin", &["system:masters"], false));
        files(
            "controller-manager",
            leaf("system:kube-controller-manager", &["system:masters"], false),
        );
        let sa = KeyPair::generate().expect("P-256 key");
        write(&dir.join("sa.key"), &sa.serialize_pem());
        write(&dir.join("sa.pub"), &sa.public_key_pem());
        use rcgen::PublicKeyData;
        let d = ring::digest::digest(&ring::digest::SHA256, &ca_key.subject_public_key_info());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        ClusterPki {
            dir: dir.to_path_buf(),
            ca_pem: ca_cert.pem(),
            ca_pin: format!("sha256:{hex}"),
            admin_pem,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// One running child with its log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        let child = process::spawn(cmd).unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child, log }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        process::kill(&mut self.child);
    }
}

/// etcd, kube-apiserver and kube-controller-manager, running.
pub struct ControlPlane {
    assets: Assets,
    dir: PathBuf,
    pki: ClusterPki,
    etcd_port: u16,
    api_port: u16,
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
}

/// Waits until `f` returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl ControlPlane {
    /// Starts a control plane from `assets` in a new temp dir.
    pub fn start(assets: Assets) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("yurthub-envtest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("envtest dir");
        process::remove_at_exit(dir.clone());
        let pki = ClusterPki::new(&dir.join("pki"));
        let mut cp = ControlPlane {
            assets,
            pki,
            etcd_port: free_port(),
            api_port: free_port(),
            etcd: None,
            apiserver: None,
            controller_manager: None,
            dir,
        };
        let started = Instant::now();
        cp.start_etcd();
        cp.run_apiserver();
        cp.write_kubeconfigs();
        cp.start_controller_manager();
        cp.bootstrap_objects();
        eprintln!(
            "envtest: control plane at {} ready in {:?} (logs in {})",
            cp.url(),
            started.elapsed(),
            cp.dir.display()
        );
        cp
    }

    fn start_etcd(&mut self) {
        let peer = free_port();
        let metrics = free_port();
        let mut cmd = Command::new(self.assets.path("etcd"));
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{peer}");
        cmd.arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"))
            // A test cluster's data need not survive a power cut; fsyncs cost seconds here.
            .arg("--unsafe-no-fsync");
        self.etcd = Some(Proc::start("etcd", cmd, self.dir.join("etcd.log")));
        let addr: SocketAddr = ([127, 0, 0, 1], self.etcd_port).into();
        self.wait_healthy("etcd", || {
            crate::client::request(addr, "GET", "/health", &[], b"")
                .is_ok_and(|r| r.text().contains("\"health\":\"true\""))
        });
    }

    /// Starts kube-apiserver again after [`ControlPlane::kill_apiserver`], on its port, and
    /// waits until `/readyz` says ok. kube-controller-manager is restarted with it: its
    /// informers would otherwise back off for up to half a minute before they see new CSRs.
    pub fn start_apiserver(&mut self) {
        self.run_apiserver();
        if self.controller_manager.take().is_some() {
            self.start_controller_manager();
        }
    }

    fn run_apiserver(&mut self) {
        let p = &self.pki;
        let mut cmd = Command::new(self.assets.path("kube-apiserver"));
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            self.etcd_port
        ))
        .arg(format!("--secure-port={}", self.api_port))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--client-ca-file={}", p.file("ca.crt")))
        .arg(format!("--tls-cert-file={}", p.file("apiserver.crt")))
        .arg(format!(
            "--tls-private-key-file={}",
            p.file("apiserver.key")
        ))
        .arg(format!("--service-account-key-file={}", p.file("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p.file("sa.key")
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg("--service-cluster-ip-range=10.96.0.0/12")
        .arg("--authorization-mode=Node,RBAC")
        .arg("--enable-bootstrap-token-auth=true")
        .arg("--anonymous-auth=true")
        .arg("--enable-admission-plugins=NodeRestriction")
        .arg(format!(
            "--cert-dir={}",
            self.dir.join("apiserver").display()
        ));
        self.apiserver = Some(Proc::start(
            "kube-apiserver",
            cmd,
            self.dir.join("kube-apiserver.log"),
        ));
        let admin = self.admin();
        self.wait_healthy("kube-apiserver", || {
            admin
                .try_request("GET", "/readyz", &[], b"")
                .is_ok_and(|r| r.status == 200)
        });
    }

    fn wait_healthy(&mut self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if ok() {
                return;
            }
            for p in [
                &mut self.etcd,
                &mut self.apiserver,
                &mut self.controller_manager,
            ]
            .into_iter()
            .flatten()
            {
                assert!(p.running(), "{} exited:\n{}", p.name, p.tail(30));
            }
            assert!(Instant::now() < deadline, "{what} never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A kubeconfig for `user` (files `<user>.crt`/`.key` of the PKI) against the apiserver.
    fn kubeconfig(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: {user}\ncurrent-context: envtest\n",
            self.url(),
            self.pki.file("ca.crt"),
            self.pki.file(&format!("{user}.crt")),
            self.pki.file(&format!("{user}.key")),
        )
    }

    fn write_kubeconfigs(&self) {
        write(&self.dir.join("admin.conf"), &self.kubeconfig("admin"));
        write(
            &self.dir.join("controller-manager.conf"),
            &self.kubeconfig("controller-manager"),
        );
    }

    fn start_controller_manager(&mut self) {
        let p = &self.pki;
        let kc = self
            .dir
            .join("controller-manager.conf")
            .display()
            .to_string();
        let mut cmd = Command::new(self.assets.path("kube-controller-manager"));
        cmd.arg(format!("--kubeconfig={kc}"))
            .arg(format!("--authentication-kubeconfig={kc}"))
            .arg(format!("--authorization-kubeconfig={kc}"))
            .arg(format!("--client-ca-file={}", p.file("ca.crt")))
            .arg(format!("--cluster-signing-cert-file={}", p.file("ca.crt")))
            .arg(format!("--cluster-signing-key-file={}", p.file("ca.key")))
            .arg("--controllers=*,bootstrapsigner,tokencleaner")
            .arg(format!("--root-ca-file={}", p.file("ca.crt")))
            .arg(format!(
                "--service-account-private-key-file={}",
                p.file("sa.key")
            ))
            .arg("--use-service-account-credentials=false")
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()))
            .arg(format!("--cert-dir={}", self.dir.join("kcm").display()));
        self.controller_manager = Some(Proc::start(
            "kube-controller-manager",
            cmd,
            self.dir.join("kube-controller-manager.log"),
        ));
    }

    /// What `kubeadm init` creates for nodes to join: the bootstrap token, the RBAC that lets
    /// bootstrappers and nodes have client certificates signed, and `kube-public/cluster-info`
    /// readable anonymously; waits for the bootstrap signer to sign it.
    fn bootstrap_objects(&mut self) {
        let admin = self.admin();
        admin.create(
            "/api/v1/namespaces/kube-system/secrets",
            &json!({
                "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                "metadata": {"name": format!("bootstrap-token-{TOKEN_ID}"), "namespace": "kube-system"},
                "stringData": {
                    "token-id": TOKEN_ID, "token-secret": TOKEN_SECRET,
                    "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                    "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"
                }
            }),
        );
        for (name, role, group) in [
            (
                "kubeadm:kubelet-bootstrap",
                "system:node-bootstrapper",
                "system:bootstrappers",
            ),
            (
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "system:bootstrappers",
            ),
            (
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "system:nodes",
            ),
        ] {
            admin.create(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                &cluster_role_binding(name, role, "Group", group),
            );
        }
        admin.create(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public/roles",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                           "resourceNames": ["cluster-info"], "verbs": ["get"]}]
            }),
        );
        admin.create(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public/rolebindings",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "kubeadm:bootstrap-signer-clusterinfo"},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"},
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}
                ]
            }),
        );
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\npreferences: {{}}\nusers: null\n",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &self.pki.ca_pem
            ),
            self.url()
        );
        admin.create(
            "/api/v1/namespaces/kube-public/configmaps",
            &json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                "data": {"kubeconfig": kubeconfig}
            }),
        );
        let jws = format!("jws-kubeconfig-{TOKEN_ID}");
        self.wait_healthy("kube-controller-manager signing cluster-info", || {
            let r = admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info");
            r.status == 200 && r.json()["data"][&jws].is_string()
        });
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The apiserver's address.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.api_port).into()
    }

    /// The cluster CA, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// `sha256:<hex>` of the CA's public key, as `--discovery-token-ca-cert-hash` takes it.
    pub fn ca_pin(&self) -> &str {
        &self.pki.ca_pin
    }

    /// `<id>.<secret>` of the bootstrap token.
    pub fn join_token(&self) -> String {
        format!("{TOKEN_ID}.{TOKEN_SECRET}")
    }

    /// Flags for a hub of node `node` (in NodePool `<node>-pool`) that joins this cluster
    /// from the empty `root` dir with the bootstrap token and the CA pin, its client
    /// certificate signed through kube-controller-manager (signer
    /// `kube-apiserver-client-kubelet`); plain proxy on `proxy_port` of 127.0.0.1 (0: any),
    /// the admin and TLS ports on free ones, the host's network left alone.
    pub fn join_args(&self, node: &str, root: &Path, cache: &Path, proxy_port: u16) -> Vec<String> {
        vec![
            format!("--server-addr={}", self.url()),
            format!("--node-name={node}"),
            format!("--nodepool-name={node}-pool"),
            format!("--root-dir={}", root.display()),
            format!("--disk-cache-path={}", cache.display()),
            "--bind-proxy-address=127.0.0.1".into(),
            format!("--proxy-port={proxy_port}"),
            "--bind-address=127.0.0.1".into(),
            "--serve-port=0".into(),
            "--enable-dummy-if=false".into(),
            "--proxy-secure-port=0".into(),
            format!("--join-token={}", self.join_token()),
            format!("--discovery-token-ca-cert-hash={}", self.ca_pin()),
            "--csr-signer-name=kubernetes.io/kube-apiserver-client-kubelet".into(),
        ]
    }

    /// Installs what an OpenYurt installation adds to a cluster (`tests/fixtures/openyurt.yaml`:
    /// the NodePool CRD, the hub's RBAC) once per control plane, with the real kubectl.
    pub fn install_openyurt(&self) {
        let crd =
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/nodepools.apps.openyurt.io";
        if self.admin().get(crd).status == 200 {
            return;
        }
        // Found at run time (cargo sets the variable for the test process: the yurthub
        // package's directory), not where this crate was compiled: a build reused from
        // another checkout (CI's temporary copy) must not point at a deleted tree.
        let fixture = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(|d| Path::new(&d).join("tests/fixtures/openyurt.yaml"))
            .filter(|f| f.is_file())
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/openyurt.yaml")
            });
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run kubectl");
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(self.kubectl().arg("apply").arg("-f").arg(&fixture));
        run(self.kubectl().args([
            "wait",
            "--for=condition=Established",
            "crd/nodepools.apps.openyurt.io",
            "--timeout=60s",
        ]));
    }

    /// A client with the cluster-admin certificate.
    pub fn admin(&self) -> Admin {
        Admin {
            addr: self.addr(),
            ca_pem: self.pki.ca_pem.clone(),
            client_pem: self.pki.admin_pem.clone(),
        }
    }

    /// The path of the admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    /// `kubectl` as cluster admin, straight to the apiserver.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", self.admin_kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ))
            .arg("--request-timeout=20s");
        c
    }

    /// The directory of the control plane's files (PKI, logs, etcd).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The assets the control plane runs from (for [`Hollow`] nodes).
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// Kills kube-apiserver with SIGKILL: the cloud is gone at once, as on a WAN cut (etcd and
    /// the controller manager stay).
    pub fn kill_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Whether kube-apiserver is running.
    pub fn apiserver_running(&mut self) -> bool {
        self.apiserver.as_mut().is_some_and(Proc::running)
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn cluster_role_binding(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]
    })
}

/// A cluster-admin client of the real apiserver (a new TLS connection per request).
#[derive(Clone)]
pub struct Admin {
    addr: SocketAddr,
    ca_pem: String,
    client_pem: String,
}

impl Admin {
    /// Sends one request; transport errors are returned.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let stream = crate::client::tls_connect(self.addr, &self.ca_pem, &self.client_pem)?;
        stream
            .sock
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut all = vec![("User-Agent", "envtest-admin/1.0")];
        all.extend_from_slice(headers);
        Session::new(stream).request(method, path, &all, body)
    }

    /// Sends one request; panics on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[("Accept", "application/json")], b"")
    }

    /// Sends `body` as JSON with `method`.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> HttpResponse {
        self.request(
            method,
            path,
            &[
                ("Accept", "application/json"),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// Creates `obj` under `collection`; panics unless the apiserver answers 201.
    pub fn create(&self, collection: &str, obj: &Value) -> Value {
        let r = self.send_json("POST", collection, obj);
        assert_eq!(r.status, 201, "POST {collection}: {}", r.text());
        r.json()
    }

    /// Waits until `GET path` answers 200 with an object `pred` accepts; returns it.
    pub fn wait_for(&self, path: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.try_request("GET", path, &[("Accept", "application/json")], b"") {
                if r.status == 200 {
                    let v = r.json();
                    if pred(&v) {
                        return v;
                    }
                }
                last = format!("{} {}", r.status, r.text());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on GET {path}; last answer: {last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

static SHARED: OnceLock<Option<Mutex<ControlPlane>>> = OnceLock::new();

/// The control plane of this test binary, for one test at a time; `None` (after printing
/// [`SKIPPED`]) where the binaries are absent, and a panic instead when
/// `YURTHUB_REQUIRE_REAL_CLUSTER=1`. A test that killed the apiserver and failed leaves it to
/// the next, which starts it again.
pub fn shared() -> Option<MutexGuard<'static, ControlPlane>> {
    let cp = SHARED.get_or_init(|| Assets::find().map(|a| Mutex::new(ControlPlane::start(a))));
    let Some(cp) = cp else {
        assert!(
            std::env::var("YURTHUB_REQUIRE_REAL_CLUSTER").as_deref() != Ok("1"),
            "YURTHUB_REQUIRE_REAL_CLUSTER=1 but no Kubernetes binaries were found (set YURTHUB_KUBE_ASSETS)"
        );
        // Straight to stderr: the test harness captures `println!` of passing tests, and
        // a skip must show in the log.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{SKIPPED}");
        return None;
    };
    let mut guard = cp.lock().unwrap_or_else(|p| p.into_inner());
    if !guard.apiserver_running() {
        guard.start_apiserver();
    }
    Some(guard)
}

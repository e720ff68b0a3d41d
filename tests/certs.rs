//! The hub's own identity: token bootstrap from an empty root directory, rotation under
//! load, recovery with `POST /v1/token`, denied CSRs, the kubelet's certificate, and who
//! may use the node identity (the TLS proxy needs a token).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testapi::client::{get, request, tls_connect_anonymous, Session};
use testapi::wait_until;
use testapi::{
    kubectl_available, Approval, Cluster, CsrRecord, Hub, TempDir, BOOTSTRAP_ID, BOOTSTRAP_SECRET,
    NODE,
};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn args(c: &Cluster, extra: &[&str]) -> Vec<String> {
    let mut a = c.hub_args(&[&c.api]);
    a.extend(
        [
            "--enable-dummy-if=false",
            "--proxy-secure-port=0",
            "--heartbeat-interval-seconds=1",
            "--heartbeat-timeout-seconds=1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn join_args(c: &Cluster, extra: &[&str]) -> Vec<String> {
    let token = format!("--join-token={BOOTSTRAP_ID}.{BOOTSTRAP_SECRET}");
    let pin = format!("--discovery-token-ca-cert-hash={}", c.pki.ca_pin());
    let mut all = vec![token.as_str(), pin.as_str()];
    all.extend_from_slice(extra);
    args(c, &all)
}

/// Waits for the hub's serving CSR, which a stock-Kubernetes approver leaves pending: there is
/// no serving certificate.
fn serving_csr_pending(c: &Cluster) {
    wait_until("the serving CSR", Duration::from_secs(30), || {
        c.api
            .csrs()
            .iter()
            .any(|r| r.signer_name == "kubernetes.io/kubelet-serving")
    });
    assert!(!c
        .root
        .path()
        .join("pki/yurthub-server-current.pem")
        .exists());
}

fn link_target(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("{} is no symlink: {e}", p.display()))
        .display()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn set(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn client_csrs(c: &Cluster) -> Vec<CsrRecord> {
    c.api
        .csrs()
        .into_iter()
        .filter(|r| r.signer_name == "kubernetes.io/kube-apiserver-client")
        .collect()
}

#[test]
fn an_empty_root_dir_and_a_join_token_give_both_certificates() {
    let c = Cluster::unjoined();
    let hub = Hub::start(BIN, &join_args(&c, &["--node-ip=192.0.2.10"]));
    let root = c.root.path();

    // Discovery wrote the bootstrap kubeconfig and the CA; the CSRs gave both certificates.
    assert_eq!(
        std::fs::read_to_string(root.join("pki/ca.crt")).unwrap(),
        c.pki.ca_pem
    );
    let bootstrap = std::fs::read_to_string(root.join("bootstrap-hub.conf")).unwrap();
    assert!(bootstrap.contains(&format!("token: {BOOTSTRAP_ID}.{BOOTSTRAP_SECRET}")));
    assert!(bootstrap.contains(&c.api.url()));
    assert_eq!(mode(&root.join("bootstrap-hub.conf")), 0o600);
    let conf = std::fs::read_to_string(root.join("yurthub.conf")).unwrap();
    assert!(conf.contains(&format!(
        "client-certificate: {}",
        root.join("pki/yurthub-current.pem").display()
    )));
    wait_until("the serving certificate", Duration::from_secs(30), || {
        std::fs::read_link(root.join("pki/yurthub-server-current.pem")).is_ok()
    });
    for (link, prefix) in [
        ("pki/yurthub-current.pem", "yurthub-2"),
        ("pki/yurthub-server-current.pem", "yurthub-server-2"),
    ] {
        let target = link_target(&root.join(link));
        assert!(target.starts_with(prefix), "{link} -> {target}");
        assert_eq!(mode(&root.join("pki").join(&target)), 0o600, "{target}");
    }
    assert!(
        !hub.log().join("\n").contains(BOOTSTRAP_SECRET),
        "the token secret was logged"
    );

    // The CSRs, field by field.
    let csrs = c.api.csrs();
    assert_eq!(csrs.len(), 2, "{csrs:#?}");
    let client = &csrs[0];
    assert_eq!(client.signer_name, "kubernetes.io/kube-apiserver-client");
    assert_eq!(client.common_name, format!("system:node:{NODE}"));
    assert_eq!(client.organizations, ["openyurt:yurthub", "system:nodes"]);
    assert_eq!(
        set(&client.usages),
        ["client auth", "digital signature", "key encipherment"]
    );
    assert!(client.dns_names.is_empty() && client.ip_addresses.is_empty());
    assert_eq!(client.username, format!("system:bootstrap:{BOOTSTRAP_ID}"));
    let serving = &csrs[1];
    assert_eq!(serving.signer_name, "kubernetes.io/kubelet-serving");
    assert_eq!(serving.common_name, format!("system:node:{NODE}"));
    assert_eq!(serving.organizations, ["system:nodes"]);
    assert_eq!(
        set(&serving.usages),
        ["digital signature", "key encipherment", "server auth"]
    );
    assert_eq!(
        serving.dns_names,
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"
        ]
    );
    let ips: Vec<IpAddr> = ["127.0.0.1", "192.0.2.10"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(serving.ip_addresses, ips);
    assert_eq!(serving.username, format!("system:node:{NODE}"));

    // The new identity works upstream, and the TLS proxy presents the serving certificate.
    c.api.clear_requests();
    let r = get(hub.proxy_addr, PODS, KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = c.api.client_requests();
    assert_eq!(
        seen.last().unwrap().user.as_deref(),
        Some("system:node:node-1")
    );
    let tls = tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem).unwrap();
    let mut s = Session::new(tls);
    let r = s.get(PODS, KUBELET).unwrap();
    assert_eq!(r.status, 401, "token-less over TLS: {}", r.text());
}

#[test]
fn a_stock_kubernetes_cluster_signs_the_kubelet_signer_and_the_hub_serves() {
    // No yurt-manager: only kube-controller-manager's approver; the serving CSR stays pending.
    let c = Cluster::unjoined();
    c.api.set_csr_approval(Approval::StockKubernetes);
    let hub = Hub::start(
        BIN,
        &join_args(
            &c,
            &["--csr-signer-name=kubernetes.io/kube-apiserver-client-kubelet"],
        ),
    );
    let csrs = c.api.csrs();
    let client = csrs
        .iter()
        .find(|r| r.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
        .expect("a client CSR");
    assert_eq!(client.organizations, ["system:nodes"]);
    assert_eq!(client.common_name, format!("system:node:{NODE}"));
    let r = get(hub.proxy_addr, PODS, KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    serving_csr_pending(&c);
    assert!(
        tls_connect_anonymous(hub.secure_addr(), &c.pki.ca_pem)
            .and_then(|t| Session::new(t).get(PODS, KUBELET))
            .is_err(),
        "no serving certificate: the TLS port refuses the handshake"
    );
}

#[test]
fn thirty_second_certificates_rotate_without_a_failed_request() {
    let c = Cluster::unjoined();
    c.api.set_cert_lifetime(Duration::from_secs(30));
    let hub = Hub::start(BIN, &join_args(&c, &[]));
    let link = c.root.path().join("pki/yurthub-current.pem");
    let first = link_target(&link);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = hub.proxy_addr;
    let looper = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match request(proxy, "GET", PODS, &[("User-Agent", KUBELET)], b"") {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 5 {
                            errors.push(format!("{:?}", other.map(|r| (r.status, r.text()))));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        })
    };
    // Three rotations: the first certificate and three more, each at 70-90 % of 30 s.
    let mut targets = vec![first];
    wait_until("three rotations", Duration::from_secs(150), || {
        let t = link_target(&link);
        if targets.last() != Some(&t) {
            targets.push(t);
        }
        client_csrs(&c).len() >= 4 && targets.len() >= 4
    });
    // Past the third certificate's own first seconds, so requests use it.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let errors = looper.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    // After the first, every renewal was made with the certificate itself, not the token.
    let csrs = client_csrs(&c);
    assert_eq!(csrs[0].username, format!("system:bootstrap:{BOOTSTRAP_ID}"));
    for r in &csrs[1..] {
        assert_eq!(r.username, format!("system:node:{NODE}"), "{r:?}");
    }
    // The serving certificate rotated too, and the newest keeps serving.
    let serving: Vec<_> = c
        .api
        .csrs()
        .into_iter()
        .filter(|r| r.signer_name == "kubernetes.io/kubelet-serving")
        .collect();
    assert!(serving.len() >= 3, "{serving:#?}");
    let names: std::collections::HashSet<_> = targets.iter().collect();
    assert_eq!(
        names.len(),
        targets.len(),
        "each rotation has its own file: {targets:?}"
    );
}

fn post_token(hub: &Hub, body: &str) -> (u16, String) {
    let r = request(
        hub.admin_addr,
        "POST",
        "/v1/token",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    (r.status, r.text())
}

#[test]
fn expired_certificate_and_token_recover_with_post_v1_token() {
    let c = Cluster::new();
    let root = c.root.path();
    let expired = c.pki.expired_client_pem(
        &format!("system:node:{NODE}"),
        &["openyurt:yurthub", "system:nodes"],
    );
    std::fs::write(root.join("pki/yurthub-current.pem"), expired).unwrap();
    // The bootstrap kubeconfig holds a token the cluster no longer knows.
    let stale = bootstrap_conf(&c, "zzzzzz.zzzzzzzzzzzzzzzz");
    std::fs::write(root.join("bootstrap-hub.conf"), stale).unwrap();
    let hub = Hub::spawn(BIN, &args(&c, &[]), &[]);
    hub.wait_for_log(
        "node client certificate not obtained",
        Duration::from_secs(30),
    );
    assert!(
        c.api.csrs().is_empty(),
        "the stale token must not create CSRs"
    );

    // Bad input.
    let (status, text) = post_token(&hub, "{not json");
    assert_eq!(status, 400);
    assert!(text.starts_with("could not decode tokens, "), "{text}");
    assert_eq!(
        post_token(&hub, r#"{"jointoken":""}"#),
        (400, "no join token is set".into())
    );
    assert_eq!(
        post_token(&hub, r#"{"other":"x"}"#),
        (400, "no join token is set".into())
    );
    let (status, text) = post_token(&hub, r#"{"jointoken":"yyyyyy.yyyyyyyyyyyyyyyy"}"#);
    assert_eq!(status, 500);
    assert!(
        text.starts_with("could not update bootstrap token, ") && text.contains("yyyyyy"),
        "{text}"
    );
    let r = request(hub.admin_addr, "GET", "/v1/token", &[], b"").unwrap();
    assert_eq!(r.status, 405);

    // A new token: the hub rewrites the bootstrap kubeconfig and gets a certificate.
    c.api.add_bootstrap_token("newtok", "fedcba9876543210");
    assert_eq!(
        post_token(&hub, r#"{"jointoken":"newtok.fedcba9876543210"}"#),
        (200, "update bootstrap token successfully".into())
    );
    let conf = std::fs::read_to_string(root.join("bootstrap-hub.conf")).unwrap();
    assert!(conf.contains("token: newtok.fedcba9876543210"), "{conf}");
    wait_until(
        "a certificate from the new token",
        Duration::from_secs(30),
        || std::fs::read_link(root.join("pki/yurthub-current.pem")).is_ok(),
    );
    hub.wait_ready(Duration::from_secs(30));
    let csrs = client_csrs(&c);
    assert_eq!(csrs.len(), 1, "{csrs:#?}");
    assert_eq!(csrs[0].username, "system:bootstrap:newtok");
    wait_until(
        "requests with the new certificate",
        Duration::from_secs(30),
        || {
            c.api.clear_requests();
            get(hub.proxy_addr, PODS, KUBELET).status == 200
                && c.api.client_requests().last().and_then(|r| r.user.clone())
                    == Some(format!("system:node:{NODE}"))
        },
    );

    // The operator FAQ's form, `curl -d "jointoken:xxx"`, is taken as well.
    c.api.add_bootstrap_token("faqtok", "0123456789faqfaq");
    assert_eq!(
        post_token(&hub, "jointoken:faqtok.0123456789faqfaq"),
        (200, "update bootstrap token successfully".into())
    );
    let conf = std::fs::read_to_string(root.join("bootstrap-hub.conf")).unwrap();
    assert!(conf.contains("token: faqtok.0123456789faqfaq"), "{conf}");
    assert_eq!(
        post_token(&hub, "jointoken:"),
        (400, "no join token is set".into())
    );
}

/// A bootstrap kubeconfig for `token`, as an operator would write it.
fn bootstrap_conf(c: &Cluster, token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&c.pki.ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {b64}\n    server: {}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: token-bootstrap-client\n  name: default\ncurrent-context: default\nusers:\n- name: token-bootstrap-client\n  user:\n    token: {token}\n",
        c.api.url()
    )
}

#[test]
fn a_denied_csr_is_retried_with_backoff_not_in_a_loop() {
    let c = Cluster::unjoined();
    c.api.set_csr_approval(Approval::Deny);
    let hub = Hub::spawn(BIN, &join_args(&c, &[]), &[]);
    wait_until("a second, denied CSR", Duration::from_secs(30), || {
        client_csrs(&c).len() >= 2
    });
    let line = hub.wait_for_log("Denied: TestDenied", Duration::from_secs(5));
    assert!(line.contains("next attempt in"), "{line}");
    let r = request(hub.admin_addr, "GET", "/v1/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("no node client certificate"),
        "{}",
        r.text()
    );
    // Back-off, not a loop: 2 s, then 4 s between attempts.
    let started = Instant::now();
    c.api.set_csr_approval(Approval::Auto);
    hub.wait_ready(Duration::from_secs(30));
    let attempts = client_csrs(&c).len();
    assert!(
        attempts <= 4,
        "{attempts} client CSRs in {:?}",
        started.elapsed()
    );
}

#[test]
fn the_kubelets_certificate_is_used_and_reloaded_when_replaced() {
    let c = Cluster::new();
    let dir = TempDir::new("kubelet-pki");
    let cert = dir.path().join("kubelet-client-current.pem");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &c.pki.ca_pem).unwrap();
    let groups = ["system:nodes"];
    std::fs::write(
        &cert,
        c.pki.client_pem(&format!("system:node:{NODE}"), &groups),
    )
    .unwrap();
    // Without the hub's own client certificate: it must not be needed in this mode.
    std::fs::remove_file(c.root.path().join("pki/yurthub-current.pem")).unwrap();
    let hub = Hub::start(
        BIN,
        &args(
            &c,
            &[
                "--bootstrap-mode=kubeletcertificate",
                &format!("--kubelet-client-certificate={}", cert.display()),
                &format!("--kubelet-ca-file={}", ca.display()),
            ],
        ),
    );
    c.api.clear_requests();
    assert_eq!(get(hub.proxy_addr, PODS, KUBELET).status, 200);
    assert_eq!(
        c.api.client_requests().last().unwrap().user.as_deref(),
        Some("system:node:node-1")
    );
    // The kubelet rotates its certificate: the hub follows (the test apiserver tells the
    // two apart by a different user name for the new one).
    let new = c.pki.client_pem(&format!("system:node:{NODE}"), &groups);
    c.pki.register(&new, "kubelet-rotated", &groups);
    let tmp = dir.path().join("new.pem");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, &cert).unwrap();
    wait_until("the replaced certificate", Duration::from_secs(30), || {
        c.api.clear_requests();
        get(hub.proxy_addr, PODS, KUBELET).status == 200
            && c.api.client_requests().last().and_then(|r| r.user.clone())
                == Some("kubelet-rotated".into())
    });
    assert_eq!(
        client_csrs(&c).len(),
        0,
        "no CSR in kubeletcertificate mode"
    );
    let (status, _) = post_token(&hub, r#"{"jointoken":"abcdef.0123456789abcdef"}"#);
    assert_eq!(status, 200, "/v1/token is a no-op here");
}

#[test]
fn kubectl_over_the_tls_proxy_needs_a_token_loopback_http_does_not() {
    assert!(kubectl_available(), "these tests need the real kubectl");
    let c = Cluster::new();
    c.api.add_token(
        "sa-token-1",
        "system:serviceaccount:default:app",
        &["system:serviceaccounts"],
    );
    c.api.create(PODS, testapi::pod("web-1", NODE));
    let hub = Hub::start(BIN, &args(&c, &[]));
    let secure = hub.secure_addr();
    let kdir = TempDir::new("kubectl");
    let ca = kdir.path().join("ca.crt");
    std::fs::write(&ca, &c.pki.ca_pem).unwrap();
    let kubectl_cmd = |server: &str| {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.env("KUBECONFIG", "/dev/null")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg(format!("--server={server}"))
            .arg(format!(
                "--cache-dir={}",
                kdir.path().join("cache").display()
            ))
            .arg("--request-timeout=20s");
        if server.starts_with("https") {
            cmd.arg(format!("--certificate-authority={}", ca.display()));
        }
        cmd
    };
    let get_pods = |mut cmd: std::process::Command| {
        cmd.args(["get", "pods", "-n", "default", "-o", "name"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let kubectl = |server: String, token: Option<&str>| {
        let mut cmd = kubectl_cmd(&server);
        if let Some(t) = token {
            cmd.arg(format!("--token={t}"));
        }
        get_pods(cmd)
    };
    let kubectl_basic = |server: String| {
        let mut cmd = kubectl_cmd(&server);
        cmd.args(["--username=admin", "--password=secret"]);
        get_pods(cmd)
    };
    c.api.clear_requests();
    let out = kubectl(format!("https://{secure}"), Some("sa-token-1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/web-1");
    assert!(c
        .api
        .client_requests()
        .iter()
        .any(|r| r.target.starts_with(PODS)
            && r.user.as_deref() == Some("system:serviceaccount:default:app")));

    // Without a token: kubectl would prompt for a user name over https, so the request goes
    // raw; and kubectl with only a user name and password (no bearer token) is refused too.
    let tls = tls_connect_anonymous(secure, &c.pki.ca_pem).unwrap();
    let r = Session::new(tls).get(PODS, "kubectl/v1.36.2").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "Unauthorized");
    let out = kubectl_basic(format!("https://{secure}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");

    let out = kubectl(format!("http://{}", hub.proxy_addr), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/web-1");
}

/// A plain connection to `to` from the source address `from` (any port).
fn connect_from(from: IpAddr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn token_less_requests_from_elsewhere_than_the_node_get_401() {
    // The plain proxy bound to every address. A connection whose source is not the address it
    // reached (as a pod's is not) must not travel as the node without a token; the node's own
    // processes (loopback, or the node's address calling itself) may.
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback IPv4 address on this machine; nothing to test");
        return;
    };
    let c = Cluster::new();
    let mut a = args(&c, &[]);
    a.retain(|f| !f.starts_with("--bind-proxy-address"));
    a.push("--bind-proxy-address=0.0.0.0".into());
    let hub = Hub::start(BIN, &a);
    let to = std::net::SocketAddr::new(ip, hub.proxy_addr.port());
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let r = Session::new(connect_from(loopback, to))
        .get(PODS, KUBELET)
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "Unauthorized");
    let r = Session::new(connect_from(ip, to))
        .get(PODS, KUBELET)
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "the node calling its own address: {}",
        r.text()
    );
    let local = get(
        std::net::SocketAddr::new(loopback, to.port()),
        PODS,
        KUBELET,
    );
    assert_eq!(local.status, 200);
    c.api
        .add_token("sa-token-2", "system:serviceaccount:default:app", &[]);
    let mut s = Session::new(connect_from(loopback, to));
    s.write_raw(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\nUser-Agent: {KUBELET}\r\nAuthorization: Bearer sa-token-2\r\n\r\n").as_bytes()).unwrap();
    let with_token = s.read_response().unwrap();
    assert_eq!(with_token.status, 200, "{}", with_token.text());
    assert_eq!(
        c.api.client_requests().last().unwrap().user.as_deref(),
        Some("system:serviceaccount:default:app")
    );
}

/// An address of this machine other than loopback (the source of a UDP socket "connected"
/// to a documentation address; no packet is sent).
fn non_loopback_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_manually_approved_csr_with_the_real_kubectl_gives_the_certificate() {
    assert!(kubectl_available(), "these tests need the real kubectl");
    let c = Cluster::unjoined();
    c.api.set_csr_approval(Approval::Manual);
    c.api.add_token("admin-token", "admin", &["system:masters"]);
    let hub = Hub::spawn(BIN, &join_args(&c, &[]), &[]);
    wait_until("a pending client CSR", Duration::from_secs(30), || {
        !client_csrs(&c).is_empty()
    });
    let name = client_csrs(&c)[0].name.clone();
    let kdir = TempDir::new("kubectl");
    let ca = kdir.path().join("ca.crt");
    std::fs::write(&ca, &c.pki.ca_pem).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .env("KUBECONFIG", "/dev/null")
            .arg(format!("--server={}", c.api.url()))
            .arg(format!("--certificate-authority={}", ca.display()))
            .arg("--token=admin-token")
            .arg(format!(
                "--cache-dir={}",
                kdir.path().join("cache").display()
            ))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // `kubectl certificate approve` sends protobuf, which the test apiserver does not speak;
    // the same approval as JSON through the approval subresource:
    let mut csr: serde_json::Value = serde_json::from_str(&kubectl(&[
        "get",
        "certificatesigningrequests",
        &name,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client"
    );
    csr["status"]["conditions"] = serde_json::json!([{"type": "Approved", "status": "True",
        "reason": "KubectlApprove", "message": "approved by the test"}]);
    let file = kdir.path().join("approval.json");
    std::fs::write(&file, csr.to_string()).unwrap();
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval");
    kubectl(&["replace", "--raw", &path, "-f", &file.display().to_string()]);
    // The client certificate arrives (the serving CSR stays pending: not a readiness matter).
    wait_until("the client certificate", Duration::from_secs(30), || {
        std::fs::read_link(c.root.path().join("pki/yurthub-current.pem")).is_ok()
    });
    hub.wait_ready(Duration::from_secs(30));
    assert_eq!(client_csrs(&c).len(), 1, "one CSR, approved once");
}

#[test]
fn an_expired_certificate_does_not_stop_serving_the_cache_while_the_cloud_is_away() {
    let c = Cluster::new();
    c.api.create(PODS, testapi::pod("web-1", NODE));
    {
        let hub = c.start_hub(BIN, &[]);
        assert_eq!(get(hub.proxy_addr, PODS, KUBELET).status, 200);
        let file = c.cache.path().join("kubelet/pods.v1.core/default/web-1");
        wait_until("the cached pod", Duration::from_secs(10), || file.is_file());
    }
    let expired = c.pki.expired_client_pem(
        &format!("system:node:{NODE}"),
        &["openyurt:yurthub", "system:nodes"],
    );
    std::fs::write(c.root.path().join("pki/yurthub-current.pem"), expired).unwrap();
    c.api.set_fault(testapi::Fault::Refuse);
    let hub = Hub::start(BIN, &args(&c, &[]));
    let r = get(hub.proxy_addr, PODS, KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"][0]["metadata"]["name"], "web-1");
}

/// The kubernetes Service kubelet lists, as the cloud has it.
fn kubernetes_service_of(c: &Cluster) {
    c.api.create(
        "/api/v1/namespaces/default/services",
        serde_json::json!({"metadata": {"name": "kubernetes"}, "spec": {"type": "ClusterIP",
            "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
    );
}

/// `default/kubernetes` as kubelet sees it through the hub: (clusterIP, https port).
fn kubernetes_as_kubelet_sees_it(hub: &Hub) -> (String, u64) {
    let r = get(hub.proxy_addr, "/api/v1/services", KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let svc = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == "kubernetes")
        .expect("default/kubernetes")
        .clone();
    (
        svc["spec"]["clusterIP"].as_str().unwrap().to_string(),
        svc["spec"]["ports"][0]["port"].as_u64().unwrap(),
    )
}

/// Pods must not be sent to a TLS port that cannot complete a handshake: until the serving
/// certificate exists, masterservice (and the other filters that point at the TLS listener)
/// leave objects as the cloud sent them, and say so; once it exists, they rewrite.
#[test]
fn without_a_serving_certificate_pods_are_not_sent_to_the_tls_port() {
    let c = Cluster::unjoined();
    c.api.set_csr_approval(Approval::StockKubernetes);
    kubernetes_service_of(&c);
    let hub = Hub::start(
        BIN,
        &join_args(
            &c,
            &["--csr-signer-name=kubernetes.io/kube-apiserver-client-kubelet"],
        ),
    );
    serving_csr_pending(&c);
    assert_eq!(
        kubernetes_as_kubelet_sees_it(&hub),
        ("10.96.0.1".to_string(), 443),
        "no serving certificate: default/kubernetes as the cloud sent it"
    );
    let ready = request(hub.admin_addr, "GET", "/v1/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 200);
    assert!(
        ready.text().contains("no serving certificate") && ready.text().contains("masterservice"),
        "{}",
        ready.text()
    );
    let metrics = request(hub.admin_addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    assert!(
        metrics.contains("yurthub_filter_fail_open{filter=\"masterservice\"} 1"),
        "{metrics}"
    );
    hub.wait_for_log(
        "no serving certificate for the TLS listener yet",
        Duration::from_secs(5),
    );

    // The operator approves it, as the log and the FAQ say.
    let name = c
        .api
        .csrs()
        .into_iter()
        .find(|r| r.signer_name == "kubernetes.io/kubelet-serving")
        .unwrap()
        .name;
    let approval = serde_json::json!({"status": {"conditions": [{"type": "Approved", "status": "True",
        "reason": "KubectlApprove", "message": "approved by the operator"}]}});
    let r = request(
        hub.proxy_addr,
        "PUT",
        &format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval"),
        &[
            ("User-Agent", "kubectl/v1.36.2"),
            ("Content-Type", "application/json"),
        ],
        approval.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("the serving certificate", Duration::from_secs(30), || {
        c.root
            .path()
            .join("pki/yurthub-server-current.pem")
            .exists()
            && request(hub.admin_addr, "GET", "/v1/readyz", &[], b"")
                .is_ok_and(|r| r.text() == "OK")
    });
    assert_eq!(
        kubernetes_as_kubelet_sees_it(&hub),
        ("127.0.0.1".to_string(), u64::from(hub.secure_addr().port())),
        "with the certificate, default/kubernetes leads to the hub's TLS port"
    );
    let metrics = request(hub.admin_addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    assert!(
        metrics.contains("yurthub_filter_fail_open{filter=\"masterservice\"} 0"),
        "{metrics}"
    );
}

/// The copies an identity move left beside `path`.
fn moved_aside(path: &Path) -> Vec<std::path::PathBuf> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut out: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.stale-"))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Waits until kubelet's pod list through `hub` is answered by `c` with the node's identity,
/// and returns the pod names.
fn pods_as_the_node(hub: &Hub, c: &Cluster) -> Vec<String> {
    let mut names = Vec::new();
    wait_until("requests as the node", Duration::from_secs(30), || {
        c.api.clear_requests();
        let r = get(hub.proxy_addr, PODS, KUBELET);
        if r.status != 200
            || c.api.client_requests().last().and_then(|r| r.user.clone())
                != Some(format!("system:node:{NODE}"))
        {
            return false;
        }
        names = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        true
    });
    names
}

#[test]
fn a_node_of_a_rebuilt_cluster_moves_its_old_identity_aside_and_joins_afresh() {
    let a = Cluster::unjoined();
    a.api
        .create(PODS, testapi::pod("from-the-old-cluster", NODE));
    let root = a.root.path().to_path_buf();
    let cache = a.cache.path().to_path_buf();
    let dirs = [
        format!("--root-dir={}", root.display()),
        format!("--disk-cache-path={}", cache.display()),
    ];
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let old_pod = cache.join("kubelet/pods.v1.core/default/from-the-old-cluster");
    {
        let hub = Hub::start(BIN, &join_args(&a, &[]));
        assert_eq!(pods_as_the_node(&hub, &a), ["from-the-old-cluster"]);
        wait_until("the old pod cached", Duration::from_secs(10), || {
            old_pod.is_file()
        });
        hub.kill();
    }

    // Rebuilt, joined again with a new pin: the old CA is not the pinned one.
    let b = Cluster::unjoined();
    b.api
        .create(PODS, testapi::pod("from-the-new-cluster", NODE));
    let hub = Hub::start(BIN, &join_args(&b, &dirs));
    let line = hub.wait_for_log("cluster was rebuilt", Duration::from_secs(10));
    assert!(
        line.contains("pki/ca.crt matches none of --discovery-token-ca-cert-hash"),
        "{line}"
    );
    assert_eq!(pods_as_the_node(&hub, &b), ["from-the-new-cluster"]);
    let old_pki = moved_aside(&root.join("pki"));
    assert_eq!(old_pki.len(), 1, "{old_pki:?}");
    assert_eq!(
        std::fs::read_to_string(old_pki[0].join("ca.crt")).unwrap(),
        a.pki.ca_pem,
        "the old CA is kept, aside"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("pki/ca.crt")).unwrap(),
        b.pki.ca_pem
    );
    // The old cache went into the cache's quarantine (under systemd only the cache directory
    // itself is writable), which is never served.
    let old_cache: Vec<_> = std::fs::read_dir(cache.join("_quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(old_cache.len(), 1, "{old_cache:?}");
    assert!(old_cache[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("rebuilt-"));
    assert!(old_cache[0]
        .join("kubelet/pods.v1.core/default/from-the-old-cluster")
        .is_file());
    assert!(!old_pod.exists(), "the old cluster's pod is not served");
    assert_eq!(moved_aside(&root.join("yurthub.conf")).len(), 1);
    // The old bootstrap kubeconfig (the old CA) went aside; discovery wrote a new one.
    assert_eq!(moved_aside(&root.join("bootstrap-hub.conf")).len(), 1);
    assert!(std::fs::read_to_string(root.join("bootstrap-hub.conf"))
        .unwrap()
        .contains(&b.api.url()));
    hub.kill();

    // The same cluster again: nothing moves.
    let hub = Hub::start(BIN, &join_args(&b, &dirs));
    assert_eq!(pods_as_the_node(&hub, &b), ["from-the-new-cluster"]);
    assert!(!hub.log().iter().any(|l| l.contains("cluster was rebuilt")));
    assert_eq!(moved_aside(&root.join("pki")).len(), 1);
    hub.kill();

    // Rebuilt again; the operator writes the new bootstrap kubeconfig (as yurtadm join does).
    let c = Cluster::unjoined();
    std::fs::write(
        root.join("bootstrap-hub.conf"),
        bootstrap_conf(&c, &format!("{BOOTSTRAP_ID}.{BOOTSTRAP_SECRET}")),
    )
    .unwrap();
    let hub = Hub::start(BIN, &args(&c, &dirs));
    let line = hub.wait_for_log("cluster was rebuilt", Duration::from_secs(10));
    assert!(
        line.contains("bootstrap-hub.conf is not the one in pki/ca.crt"),
        "{line}"
    );
    assert_eq!(pods_as_the_node(&hub, &c), Vec::<String>::new());
    assert_eq!(moved_aside(&root.join("pki")).len(), 2);
    // The new bootstrap kubeconfig stays where it is.
    assert_eq!(moved_aside(&root.join("bootstrap-hub.conf")).len(), 1);
    hub.kill();

    // Rebuilt once more, joined with a new token and no pin: only the cluster can say.
    let d = Cluster::unjoined();
    d.api.add_bootstrap_token("d0d0d0", "0123456789d0d0d0");
    let mut flags = vec![
        "--join-token=d0d0d0.0123456789d0d0d0",
        "--discovery-token-unsafe-skip-ca-verification",
    ];
    flags.extend_from_slice(&dirs);
    let hub = Hub::start(BIN, &args(&d, &flags));
    let line = hub.wait_for_log("cluster was rebuilt", Duration::from_secs(10));
    assert!(
        line.contains("signed by --join-token, names a CA other than pki/ca.crt"),
        "{line}"
    );
    assert_eq!(pods_as_the_node(&hub, &d), Vec::<String>::new());
    assert_eq!(moved_aside(&root.join("pki")).len(), 3);
    assert_eq!(
        std::fs::read_to_string(root.join("pki/ca.crt")).unwrap(),
        d.pki.ca_pem
    );
    hub.kill();
}

/// Runs `yurthub reset <args>` with `answer` on its standard input: exit status, stdout, stderr.
fn reset(args: &[String], answer: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = testapi::command(BIN)
        .arg("reset")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn yurthub_reset_removes_what_the_hub_keeps_and_never_under_a_running_hub() {
    let c = Cluster::new();
    let root = c.root.path().to_path_buf();
    let cache = c.cache.path().to_path_buf();
    // The hub's own command line, with a dummy link that does not exist on this machine.
    let hub_args = args(&c, &[]);
    let mut reset_args = hub_args.clone();
    reset_args.extend([
        "--enable-dummy-if=true".to_string(),
        "--dummy-if-name=yh-none0".to_string(),
    ]);
    std::fs::write(
        root.join("bootstrap-hub.conf"),
        bootstrap_conf(&c, &format!("{BOOTSTRAP_ID}.{BOOTSTRAP_SECRET}")),
    )
    .unwrap();
    let hub = Hub::start(BIN, &hub_args);
    hub.wait_ready(Duration::from_secs(30));
    assert_eq!(get(hub.proxy_addr, PODS, KUBELET).status, 200);
    wait_until("kubelet's cache", Duration::from_secs(10), || {
        cache.join("kubelet").is_dir()
    });

    // A second hub on the same directories refuses to start.
    let second = testapi::command(BIN).args(&hub_args).output().unwrap();
    let refusal = format!(
        "a yurthub (pid {}) is running on {}",
        hub.pid(),
        root.display()
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(said.contains(&refusal), "{said}");

    // Nor does reset run under it, even forced.
    let mut forced = reset_args.clone();
    forced.push("--force".into());
    let (code, _, err) = reset(&forced, "");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&refusal) && err.contains("stop it first"),
        "{err}"
    );
    assert!(root.join("pki/ca.crt").is_file());
    hub.kill();

    // Asked, and not confirmed: nothing removed; everything named.
    let (code, out, err) = reset(&reset_args, "n\n");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing removed"), "{err}");
    let listed = [
        root.join("pki"),
        root.join("bootstrap-hub.conf"),
        cache.join("kubelet"),
        cache.join("_internal/views"),
    ];
    for p in &listed {
        assert!(
            out.contains(&format!("  {}\n", p.display())),
            "{p:?} in {out}"
        );
        assert!(p.exists(), "{p:?} removed without a yes");
    }
    assert!(!out.contains("dummy link"), "{out}");
    assert!(out.ends_with("Remove them? [y/N] "), "{out}");

    // Confirmed: gone (the cache directory stays, empty: under systemd it is a mount point;
    // the root's lock file stays too), and a second run has nothing to do.
    let (code, out, err) = reset(&reset_args, "y\n");
    assert_eq!(code, 0, "{out}{err}");
    for p in &listed {
        assert!(!p.exists(), "{p:?} left: {out}");
        assert!(out.contains(&format!("removed {}\n", p.display())), "{out}");
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "{out}");
    let (code, out, _) = reset(&forced, "");
    assert_eq!((code, out.as_str()), (0, "nothing to reset\n"));

    // A mistyped cache directory is not emptied: one no hub has locked (even with a
    // directory named like an agent's, as /var/lib holds kubelet/), or one holding the root.
    let elsewhere = TempDir::new("not-a-cache");
    std::fs::write(elsewhere.path().join("notes.txt"), "mine").unwrap();
    std::fs::create_dir(elsewhere.path().join("kubelet")).unwrap();
    for dir in [elsewhere.path(), root.parent().unwrap()] {
        let mut wrong = forced.clone();
        wrong.push(format!("--disk-cache-path={}", dir.display()));
        let (code, out, _) = reset(&wrong, "");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("is not a yurthub cache"), "{out}");
    }
    assert!(elsewhere.path().join("notes.txt").is_file());
    assert!(root.is_dir());
}

/// A bootstrap kubeconfig as an operator or a tool may write it, which kubectl reads: flow
/// style, a CA file relative to the kubeconfig, the token in a `tokenFile`. The hub joins
/// with it.
#[test]
fn a_bootstrap_kubeconfig_in_any_form_kubectl_reads_joins_the_node() {
    let c = Cluster::unjoined();
    let root = c.root.path();
    std::fs::create_dir_all(root.join("join")).unwrap();
    std::fs::write(root.join("join/ca.crt"), &c.pki.ca_pem).unwrap();
    std::fs::write(
        root.join("join/token"),
        format!("{BOOTSTRAP_ID}.{BOOTSTRAP_SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("bootstrap-hub.conf"),
        format!(
            "# written by hand\napiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {{server: \"{}\", certificate-authority: join/ca.crt}}\nusers: [{{name: b, user: {{tokenFile: join/token}}}}]\ncontexts:\n- {{name: c, context: {{cluster: k, user: b}}}}\ncurrent-context: c\n",
            c.api.url()
        ),
    )
    .unwrap();
    let hub = Hub::start(BIN, &args(&c, &[]));
    assert!(root.join("pki/yurthub-current.pem").is_file());
    assert_eq!(
        std::fs::read_to_string(root.join("pki/ca.crt")).unwrap(),
        c.pki.ca_pem
    );
    hub.kill();
}

//! The hub against a real control plane (kube-apiserver and kube-controller-manager 1.36,
//! etcd; `testapi::envtest`), and a real kubelet (kubemark's hollow node) through the hub.
//!
//! Each test takes the shared control plane in turn, joins a hub of its own node to it with
//! the bootstrap token and plays the node's components. Without the binaries every test prints
//! `SKIPPED: ...` and passes (`YURTHUB_REQUIRE_REAL_CLUSTER=1` turns that into a failure).

use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use testapi::client::{self, HttpResponse};
use testapi::envtest::{self, wait_for, Admin, ControlPlane};
use testapi::{Hub, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/amd64) kubernetes/98b3519";
const KUBE_PROXY: &str = "kube-proxy/v1.36.2 (linux/amd64) kubernetes/98b3519";
const COREDNS: &str = "coredns/v1.12.0 (linux/amd64) kubernetes";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf,application/json";
/// What kubelet 1.36 adds to a watch to have it begin with the current objects.
const WATCH_LIST: &str =
    "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";

/// Emulated runs (qemu) are many times slower.
fn slow() -> u32 {
    if std::env::var_os("YURTHUB_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        10
    } else {
        1
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n * slow() as u64)
}

/// One edge node's hub, joined with the bootstrap token.
struct Node {
    name: String,
    hub: Hub,
    args: Vec<String>,
    root: TempDir,
    cache: TempDir,
}

impl Node {
    /// A hub for node `name` from an empty root dir, joined with the bootstrap token and the CA
    /// pin; its client certificate signed through kube-controller-manager (signer
    /// `kube-apiserver-client-kubelet`), its serving certificate approved as yurt-manager would.
    fn join(cp: &ControlPlane, name: &str, extra: &[&str]) -> Node {
        cp.install_openyurt();
        let root = TempDir::new("real-root");
        let cache = TempDir::new("real-cache");
        // A proxy port of its own, kept across restarts: kubelet's kubeconfig names it.
        let mut args = cp.join_args(name, root.path(), cache.path(), envtest::free_port());
        args.extend(
            [
                "--heartbeat-interval-seconds=1",
                "--heartbeat-timeout-seconds=2",
                "--v=2",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let hub = Hub::spawn(BIN, &args, &[]);
        hub.wait_ready(secs(60));
        Node {
            name: name.to_string(),
            hub,
            args,
            root,
            cache,
        }
    }

    /// Restarts the hub with the same flags (the join token is no longer needed, but harmless).
    fn restart(&mut self) {
        self.hub.stop();
        self.hub = Hub::spawn(BIN, &self.args, &[]);
    }

    fn get(&self, path: &str, ua: &str) -> HttpResponse {
        client::get(self.hub.proxy_addr, path, ua)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        ua: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut all = vec![("User-Agent", ua)];
        all.extend_from_slice(headers);
        client::request(self.hub.proxy_addr, method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The real kubectl through the hub's TLS port with a pod's bearer token (kubectl sends
    /// no token over plain HTTP).
    fn kubectl_tls(&self, kcache: &Path, token: &str) -> std::process::Command {
        let mut c = std::process::Command::new("kubectl");
        c.env("KUBECONFIG", "/dev/null")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg(format!("--server=https://{}", self.hub.secure_addr()))
            .arg(format!(
                "--certificate-authority={}",
                self.root.path().join("pki/ca.crt").display()
            ))
            .arg(format!("--token={token}"))
            .arg(format!("--cache-dir={}", kcache.display()))
            .arg("--request-timeout=20s");
        c
    }

    /// Has the serving certificate approved (as yurt-manager would) and waits until the TLS
    /// port presents it.
    fn serve_tls(&self, cp: &ControlPlane) {
        approve_serving_csr(&cp.admin(), &self.name);
        let tls = self.hub.secure_addr();
        wait_for("a TLS handshake with the proxy", secs(30), || {
            let s = client::tls_connect_anonymous(tls, cp.ca_pem()).ok()?;
            client::Session::new(s).get("/version", "curl/8").ok()
        });
    }

    fn log(&self) -> String {
        self.hub.log().join("\n")
    }

    /// kubelet's watch of its pods through the hub, with `more` query parameters.
    fn watch_pods(&self, more: &str) -> client::ResponseStream {
        client::watch(
            self.hub.proxy_addr,
            &format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&watch=true{more}",
                self.name
            ),
            KUBELET,
        )
    }

    /// Waits until the hub counts the cloud (its one server) unreachable.
    fn wait_offline(&self) {
        wait_for("the hub to see the cloud gone", secs(30), || {
            let text = client::get(self.hub.admin_addr, "/metrics", "curl/8").text();
            text.lines()
                .any(|l| l.starts_with("node_yurthub_server_healthy_status{") && l.ends_with(" 0"))
                .then_some(())
        });
    }
}

/// Approves the pending `kubelet-serving` CSR of `node` through the approval subresource, as
/// yurt-manager's approver does; returns its name.
fn approve_serving_csr(admin: &Admin, node: &str) -> String {
    let user = format!("system:node:{node}");
    let csr = wait_for("the hub's serving CSR", secs(30), || {
        let list = admin
            .get("/apis/certificates.k8s.io/v1/certificatesigningrequests")
            .json();
        list["items"]
            .as_array()?
            .iter()
            .find(|c| {
                c["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    && c["spec"]["username"] == user.as_str()
                    && c["status"]["conditions"].is_null()
            })
            .cloned()
    });
    let name = csr["metadata"]["name"].as_str().unwrap().to_string();
    let mut approved = csr.clone();
    approved["status"]["conditions"] = json!([{
        "type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": "approved by the test, as yurt-manager's csrapprover would"
    }]);
    let r = admin.send_json(
        "PUT",
        &format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval"),
        &approved,
    );
    assert_eq!(r.status, 200, "approve {name}: {}", r.text());
    name
}

fn items(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_hub_joins_with_a_token_and_gets_both_certificates() {
    let Some(cp) = envtest::shared() else { return };
    let admin = cp.admin();
    let node = Node::join(&cp, "edge-join", &[]);
    let pki = node.root.path().join("pki");
    assert!(node.root.path().join("bootstrap-hub.conf").is_file());
    assert_eq!(
        std::fs::read_to_string(pki.join("ca.crt")).unwrap().trim(),
        cp.ca_pem().trim()
    );
    assert!(pki.join("yurthub-current.pem").is_file());
    // The client CSR was approved by kube-controller-manager itself.
    let csrs = admin
        .get("/apis/certificates.k8s.io/v1/certificatesigningrequests")
        .json();
    let client_csr = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
                && c["spec"]["username"] == format!("system:bootstrap:{}", envtest::TOKEN_ID)
                && c["status"]["certificate"].is_string()
        })
        .expect("an issued client CSR of the bootstrap token");
    assert_eq!(
        client_csr["status"]["conditions"][0]["reason"],
        "AutoApproved"
    );
    // The serving CSR waits for an approver; the test plays yurt-manager's.
    node.serve_tls(&cp);
    assert!(pki.join("yurthub-server-current.pem").is_file());
    // The TLS proxy now presents a certificate the cluster CA vouches for.
    let tls = node.hub.secure_addr();
    let s = client::tls_connect_anonymous(tls, cp.ca_pem()).unwrap();
    let stream = client::Session::new(s).get("/version", "curl/8").unwrap();
    // Without a token the TLS port refuses to lend the node's identity.
    assert_eq!(stream.status, 401, "{}", stream.text());
    // And the node's identity works on the plain port.
    let me = node.get(&format!("/api/v1/nodes/{}", node.name), KUBELET);
    assert_eq!(me.status, 404, "{}", me.text());
    assert!(
        !node.log().contains("token-secret") && !node.log().contains(envtest::TOKEN_SECRET),
        "the token secret leaked into the log"
    );
}

/// Whether the Node's Ready condition is True and was heard after `since`.
fn node_ready_since(node: &Value, since: Option<&str>) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && since.is_none_or(|s| c["lastHeartbeatTime"].as_str().is_some_and(|t| t > s))
        })
    })
}

fn rfc3339_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_real_kubelet_restarted_offline_keeps_its_pod_and_catches_up_when_the_cloud_returns() {
    // kubelet and kube-proxy are kubemark's hollow node: the real code, a fake runtime.
    let Some(mut cp) = envtest::shared() else {
        return;
    };
    let admin = cp.admin();
    // Upstream's pool-scope resources: the real kube-proxy's and kubelet's Services and
    // EndpointSlices come from the multiplexer's stores, online and offline.
    let mut node = Node::join(
        &cp,
        "edge-kubelet",
        &["--pool-scope-resources=/v1/services,discovery.k8s.io/v1/endpointslices"],
    );
    let server = format!("http://{}", node.hub.proxy_addr);
    let Some(mut kubelet) = envtest::Hollow::start(cp.assets(), "kubelet", &node.name, &server)
    else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no kubemark among the Kubernetes binaries"
        );
        return;
    };
    let mut proxy = envtest::Hollow::start(cp.assets(), "proxy", &node.name, &server).unwrap();
    let node_path = format!("/api/v1/nodes/{}", node.name);
    admin.wait_for(&node_path, secs(60), |n| node_ready_since(n, None));
    proxy_synced(&mut proxy);
    // kube-proxy's and kubelet's watches of Services (and kube-proxy's of EndpointSlices)
    // are the multiplexer's to answer.
    let served = client::get(node.hub.admin_addr, "/metrics", "curl/8")
        .text()
        .lines()
        .filter(|l| l.starts_with("node_yurthub_aggregated_in_flight_requests_collector{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(served >= 2.0, "watches served by the multiplexer: {served}");
    admin.create(
        "/api/v1/namespaces/default/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "web-config"}, "data": {"index.html": "hello"}}),
    );
    admin.create(
        "/api/v1/namespaces/default/pods",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "nodeName": node.name,
                "containers": [{"name": "nginx", "image": "registry.example/nginx:1.27",
                                "volumeMounts": [{"name": "config", "mountPath": "/usr/share/nginx/html"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]
            }
        }),
    );
    let pod_path = "/api/v1/namespaces/default/pods/web";
    admin.wait_for(pod_path, secs(60), |p| p["status"]["phase"] == "Running");
    // What kubelet needs after a restart is on disk once it has run the pod.
    let cached = node.cache.path().join("kubelet");
    wait_for("kubelet's objects in the cache", secs(30), || {
        let pod = std::fs::read_to_string(cached.join("pods.v1.core/default/web")).ok()?;
        (pod.contains("\"Running\"")
            && cached
                .join(format!("nodes.v1.core/{}", node.name))
                .is_file()
            && cached
                .join(format!("csinodes.v1.storage.k8s.io/{}", node.name))
                .is_file()
            && cached
                .join("configmaps.v1.core/default/web-config")
                .is_file())
        .then_some(())
    });

    // The WAN link goes: the apiserver dies at once.
    cp.kill_apiserver();
    node.wait_offline();
    // All three restart while the cloud is away (a reboot of the node).
    drop(kubelet);
    drop(proxy);
    node.restart();
    node.hub.wait_ready(secs(30));
    let restarted_at = rfc3339_now();
    kubelet = envtest::Hollow::start(cp.assets(), "kubelet", &node.name, &server).unwrap();
    proxy = envtest::Hollow::start(cp.assets(), "proxy", &node.name, &server).unwrap();
    // kube-proxy syncs its Services and EndpointSlices from the hub's cache: not an empty
    // set, which would make it flush every rule.
    proxy_synced(&mut proxy);
    kubelet.wait_for_log("SyncLoop ADD", secs(60));
    // Start-up may race its own informers (a node lookup before the node watch delivered);
    // after it, nothing may go wrong again. Long enough for every step kubelet retries
    // (CSINode, registration, tokens); kubelet runs natively even when the hub is emulated,
    // so this is not scaled.
    std::thread::sleep(Duration::from_secs(10));
    let settled = kubelet.log_len();
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        kubelet.is_running(),
        "kubelet exited offline:\n{}",
        tail(&kubelet.log(), 40)
    );
    let log = kubelet.log();
    for fatal in [
        "Failed to initialize CSINode",
        "Unable to register node",
        "Expiration seconds was nil",
        "json parse error",
    ] {
        assert!(
            !log.contains(fatal),
            "kubelet logged {fatal:?} offline:\n{}",
            grep(&log, fatal)
        );
    }
    // Once settled, nothing went wrong but what the fake runtime cannot do (no cgroups, no
    // image fs, no container logs): no failed call, no parse error, no pod killed.
    const FAKE_RUNTIME: &[&str] = &[
        "not implemented",
        "unimplemented testing mock",
        "imagefs device is not found",
        "imageFs information is unavailable",
        "PLEG is not healthy",
    ];
    let late = kubelet.log_since(settled);
    let trouble: Vec<&str> = late
        .lines()
        .filter(|l| l.starts_with('E') || l.starts_with('W') || l.starts_with('F'))
        .filter(|l| !FAKE_RUNTIME.iter().any(|f| l.contains(f)))
        .collect();
    assert!(
        trouble.is_empty(),
        "kubelet complained offline:\n{}",
        trouble.join("\n")
    );
    for bad in ["Killing container", "SyncLoop REMOVE", "SyncLoop DELETE"] {
        assert!(
            !log.contains(bad),
            "kubelet logged {bad:?} offline:\n{}",
            grep(&log, bad)
        );
    }
    assert!(proxy.is_running(), "kube-proxy exited offline");
    let proxy_trouble: Vec<String> = proxy
        .log()
        .lines()
        .filter(|l| l.starts_with('E') || l.starts_with('F'))
        .map(str::to_string)
        .collect();
    assert!(
        proxy_trouble.is_empty(),
        "kube-proxy complained offline:\n{}",
        proxy_trouble.join("\n")
    );
    // Its node, lease and pod status calls were answered locally, successfully.
    let calls = kubelet.responses_since(0);
    if std::env::var_os("YURTHUB_TEST_LOG").is_some() {
        for c in &calls {
            eprintln!("kubelet offline: {c:?}");
        }
    }
    let status_calls: Vec<_> = calls
        .iter()
        .filter(|(_, path, _)| {
            path.contains("/leases/") || path.contains("/status") || path.contains("/csinodes")
        })
        .collect();
    assert!(
        !status_calls.is_empty(),
        "kubelet made no status calls offline"
    );
    let failed: Vec<_> = status_calls.iter().filter(|(_, _, s)| *s >= 400).collect();
    assert!(failed.is_empty(), "failed offline status calls: {failed:?}");
    // kubelet still runs the pod.
    let pods = client::get(
        ([127, 0, 0, 1], kubelet.read_only_port).into(),
        "/pods",
        "curl/8",
    );
    assert_eq!(pods.status, 200);
    assert_eq!(items(&pods.json()), vec!["web".to_string()]);

    // The cloud returns: the node is Ready and heard from again, the lease renewed, and the
    // pod's status is the restarted kubelet's.
    let back_at = rfc3339_now();
    cp.start_apiserver();
    admin.wait_for(&node_path, secs(90), |n| {
        node_ready_since(n, Some(&back_at))
    });
    admin.wait_for(
        &format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            node.name
        ),
        secs(60),
        |l| {
            l["spec"]["renewTime"]
                .as_str()
                .is_some_and(|t| t[..19] >= back_at[..19])
        },
    );
    admin.wait_for(pod_path, secs(90), |p| {
        p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                .as_str()
                .is_some_and(|t| t >= restarted_at.as_str())
    });
    assert!(kubelet.is_running());
    let _ = admin.request(
        "DELETE",
        &format!("{pod_path}?gracePeriodSeconds=0"),
        &[],
        b"",
    );
}

/// Waits until a hollow kube-proxy has synced Services, EndpointSlices and ServiceCIDRs and
/// seen the `default/kubernetes` Service.
fn proxy_synced(proxy: &mut envtest::Hollow) {
    for controller in [
        "service config",
        "endpoint slice config",
        "serviceCIDR config",
    ] {
        proxy.wait_for_log(
            &format!("\"Caches are synced\" controller=\"{controller}\""),
            secs(60),
        );
    }
    proxy.wait_for_log("Calling handler.OnServiceAdd", secs(10));
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn grep(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A service-account token with cluster-admin rights, as an operator's pod would hold one.
fn admin_token(admin: &Admin) -> String {
    let sa = "/api/v1/namespaces/default/serviceaccounts";
    if admin.get(&format!("{sa}/e2e-admin")).status == 404 {
        admin.create(
            sa,
            &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "e2e-admin"}}),
        );
        admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "e2e-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "e2e-admin", "namespace": "default"}]
            }),
        );
    }
    let tr = admin.create(
        &format!("{sa}/e2e-admin/token"),
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
    );
    tr["status"]["token"].as_str().unwrap().to_string()
}

/// Creates this node's Node object through the hub, as kubelet registers itself.
fn register_node(node: &Node) {
    let r = node.request(
        "POST",
        "/api/v1/nodes",
        KUBELET,
        &[("Content-Type", "application/json")],
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A pod bound to `node` using a ConfigMap and a Secret, as kubelet must read them.
fn create_pod_with_config(admin: &Admin, name: &str, node: &str) {
    admin.create(
        "/api/v1/namespaces/default/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{name}-config")}, "data": {"k": "v"}}),
    );
    admin.create(
        "/api/v1/namespaces/default/secrets",
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("{name}-secret")}, "stringData": {"password": "s3cret"}}),
    );
    admin.create(
        "/api/v1/namespaces/default/pods",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "registry.example/app:1",
                    "envFrom": [{"configMapRef": {"name": format!("{name}-config")}}],
                    "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                "volumes": [{"name": "s", "secret": {"secretName": format!("{name}-secret")}}]
            }
        }),
    );
}

/// What kubelet, kube-proxy and coredns read at start-up, through the hub.
struct NodeReads {
    pods: HttpResponse,
    node: HttpResponse,
    config: HttpResponse,
    secret: HttpResponse,
    proxy_services: HttpResponse,
    proxy_slices: HttpResponse,
    dns_services: HttpResponse,
}

fn node_reads(node: &Node, pod: &str) -> NodeReads {
    NodeReads {
        pods: node.get(
            &format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&limit=500",
                node.name
            ),
            KUBELET,
        ),
        node: node.get(&format!("/api/v1/nodes/{}", node.name), KUBELET),
        config: node.get(
            &format!("/api/v1/namespaces/default/configmaps/{pod}-config"),
            KUBELET,
        ),
        secret: node.get(
            &format!("/api/v1/namespaces/default/secrets/{pod}-secret"),
            KUBELET,
        ),
        proxy_services: node.get(
            "/api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0",
            KUBE_PROXY,
        ),
        proxy_slices: node.get(
            "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0",
            KUBE_PROXY,
        ),
        dns_services: node.get("/api/v1/services?limit=500&resourceVersion=0", COREDNS),
    }
}

impl NodeReads {
    fn assert_ok(&self, pod: &str) {
        for (what, r) in [
            ("pods", &self.pods),
            ("node", &self.node),
            ("configmap", &self.config),
            ("secret", &self.secret),
            ("kube-proxy services", &self.proxy_services),
            ("kube-proxy endpointslices", &self.proxy_slices),
            ("coredns services", &self.dns_services),
        ] {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
        }
        assert_eq!(items(&self.pods.json()), vec![pod.to_string()]);
        assert_eq!(self.config.json()["data"]["k"], "v");
        assert_eq!(self.secret.json()["data"]["password"], "czNjcmV0");
        assert!(items(&self.proxy_services.json()).contains(&"kubernetes".to_string()));
        assert!(items(&self.dns_services.json()).contains(&"kubernetes".to_string()));
    }

    /// The same objects, whoever answered (names and resourceVersions).
    fn assert_same(&self, other: &NodeReads) {
        let ids = |r: &HttpResponse| -> Vec<(String, String)> {
            let v = r.json();
            let list = v["items"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![v.clone()]);
            let mut ids: Vec<_> = list
                .iter()
                .map(|i| {
                    (
                        i["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        i["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect();
            ids.sort();
            ids
        };
        for (what, a, b) in [
            ("pods", &self.pods, &other.pods),
            ("node", &self.node, &other.node),
            ("configmap", &self.config, &other.config),
            ("secret", &self.secret, &other.secret),
            (
                "kube-proxy services",
                &self.proxy_services,
                &other.proxy_services,
            ),
            (
                "kube-proxy endpointslices",
                &self.proxy_slices,
                &other.proxy_slices,
            ),
            ("coredns services", &self.dns_services, &other.dns_services),
        ] {
            assert_eq!(ids(a), ids(b), "{what} differ");
        }
    }
}

#[test]
fn node_components_read_write_and_kubectl_through_the_hub_online() {
    let Some(cp) = envtest::shared() else { return };
    let admin = cp.admin();
    let node = Node::join(&cp, "edge-online", &[]);
    register_node(&node);
    create_pod_with_config(&admin, "online-app", &node.name);
    let reads = node_reads(&node, "online-app");
    reads.assert_ok("online-app");
    assert_eq!(reads.node.json()["metadata"]["name"], node.name.as_str());

    // The Node's Autonomy condition, set by the hub as kubelet reads its Node, with the
    // node's certificate (NodeRestriction lets a node patch its own status).
    let node_path = format!("/api/v1/nodes/{}", node.name);
    let r = admin.request(
        "PATCH",
        &node_path,
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"metadata":{"annotations":{"node.openyurt.io/autonomy-duration":"0"}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let autonomy = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Autonomy"))
            .map(|c| c["status"].as_str().unwrap_or("").to_string())
    };
    wait_for("the Autonomy condition in the cloud", secs(30), || {
        let read = node.get(&node_path, KUBELET);
        assert_eq!(read.status, 200, "{}", read.text());
        (autonomy(&admin.get(&node_path).json()).as_deref() == Some("True")).then_some(())
    });
    assert_eq!(
        autonomy(&node.get(&node_path, KUBELET).json()).as_deref(),
        Some("True")
    );

    // kubelet's watch-list of its pods: the initial events, then the end bookmark.
    let mut watch = node.watch_pods(&format!("{WATCH_LIST}&timeoutSeconds=60"));
    assert_eq!(watch.status, 200);
    let first: Value = serde_json::from_str(&watch.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "online-app");
    let end: Value = serde_json::from_str(&watch.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // A change made in the cloud arrives through the held watch.
    let r = admin.request(
        "PATCH",
        "/api/v1/namespaces/default/pods/online-app",
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"metadata":{"labels":{"rev":"2"}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let changed = loop {
        let ev: Value = serde_json::from_str(&watch.next_line().unwrap().unwrap()).unwrap();
        if ev["type"] == "MODIFIED" {
            break ev;
        }
    };
    assert_eq!(changed["object"]["metadata"]["labels"]["rev"], "2");
    drop(watch);

    // Writes as kubelet: a strategic-merge patch of the node status, a JSON merge patch of
    // a label; both answers cached as the node's latest state.
    let status = node.request(
        "PATCH",
        &format!("/api/v1/nodes/{}/status", node.name),
        KUBELET,
        &[("Content-Type", "application/strategic-merge-patch+json")],
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "e2e", "lastHeartbeatTime": rfc3339_now(), "lastTransitionTime": rfc3339_now()}]}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status.status, 200, "{}", status.text());
    let labelled = node.request(
        "PATCH",
        &format!("/api/v1/nodes/{}", node.name),
        KUBELET,
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"metadata":{"labels":{"example.com/role":"edge"}}}"#,
    );
    assert_eq!(labelled.status, 200, "{}", labelled.text());
    let rv = labelled.json()["metadata"]["resourceVersion"].clone();
    let file = node
        .cache
        .path()
        .join(format!("kubelet/nodes.v1.core/{}", node.name));
    wait_for("the patched node in the cache", secs(10), || {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        (v["metadata"]["resourceVersion"] == rv
            && v["metadata"]["labels"]["example.com/role"] == "edge"
            && v["status"]["conditions"][0]["message"] == "e2e")
            .then_some(())
    });

    // A pod's own token passes through to the cloud: create, server-side apply, patch.
    let token = admin_token(&admin);
    let bearer = format!("Bearer {token}");
    let auth = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let cm = "/api/v1/namespaces/default/configmaps";
    let created = node.request(
        "POST",
        cm,
        "operator/1.0",
        &auth,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"via-hub"},"data":{"a":"1"}}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let applied = node.request(
        "PATCH",
        &format!("{cm}/via-hub?fieldManager=e2e&force=true"),
        "operator/1.0",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/apply-patch+yaml"),
        ],
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: via-hub\ndata:\n  b: \"2\"\n",
    );
    assert_eq!(applied.status, 200, "{}", applied.text());
    let merged = node.request(
        "PATCH",
        &format!("{cm}/via-hub"),
        "operator/1.0",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/strategic-merge-patch+json"),
        ],
        br#"{"data":{"c":"3"}}"#,
    );
    assert_eq!(merged.status, 200, "{}", merged.text());
    let now = admin.get(&format!("{cm}/via-hub")).json();
    assert_eq!(now["data"], json!({"a": "1", "b": "2", "c": "3"}));

    // The real kubectl through the hub's TLS port with that token: get, apply, watch, delete.
    node.serve_tls(&cp);
    let kcache = TempDir::new("real-kubectl");
    let kubectl = |args: &[&str]| -> Output {
        node.kubectl_tls(kcache.path(), &token)
            .args(args)
            .output()
            .expect("run kubectl")
    };
    let ok = |args: &[&str]| -> String {
        let out = kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\nhub log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pods = ok(&["get", "pods", "-n", "default", "-o", "name"]);
    assert!(pods.lines().any(|l| l == "pod/online-app"), "{pods}");
    let mut watcher = node
        .kubectl_tls(kcache.path(), &token)
        .args(["get", "configmaps", "-n", "default", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl -w");
    let manifest = kcache.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied-via-hub\n  namespace: default\ndata:\n  x: \"1\"\n",
    )
    .unwrap();
    let out = ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.contains("configmap/applied-via-hub created"), "{out}");
    let out = ok(&["delete", "configmap", "applied-via-hub", "-n", "default"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        admin
            .get("/api/v1/namespaces/default/configmaps/applied-via-hub")
            .status,
        404
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = watcher.kill();
    let seen = watcher.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.lines()
            .filter(|l| *l == "configmap/applied-via-hub")
            .count()
            >= 2,
        "kubectl -w did not see the ConfigMap come and go:\n{seen}"
    );
}

#[test]
fn offline_the_node_reads_what_it_read_online_and_watches_end_when_the_cloud_returns() {
    let Some(mut cp) = envtest::shared() else {
        return;
    };
    let admin = cp.admin();
    let mut node = Node::join(&cp, "edge-offline", &[]);
    register_node(&node);
    create_pod_with_config(&admin, "offline-app", &node.name);
    let online = node_reads(&node, "offline-app");
    online.assert_ok("offline-app");
    let lease_path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
        node.name
    );
    admin.wait_for(&lease_path, secs(30), |l| {
        l["spec"]["holderIdentity"] == node.name.as_str()
    });
    // The cache writer runs behind the answers; it has settled when every object is on disk.
    wait_for("the reads in the cache", secs(10), || {
        let k = node.cache.path().join("kubelet");
        (k.join("secrets.v1.core/default/offline-app-secret")
            .is_file()
            && k.join("configmaps.v1.core/default/offline-app-config")
                .is_file()
            && k.join("pods.v1.core/default/offline-app").is_file())
        .then_some(())
    });
    let online_watch = node.watch_pods(&format!(
        "&resourceVersion={}",
        online.pods.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
    ));
    assert_eq!(online_watch.status, 200);

    cp.kill_apiserver();
    node.wait_offline();
    let offline = node_reads(&node, "offline-app");
    offline.assert_ok("offline-app");
    offline.assert_same(&online);

    // A watch offline is held open without events; a watch-list replays what is cached.
    let mut held = node.watch_pods("");
    assert_eq!(held.status, 200);
    held.set_timeout(Duration::from_millis(1500));
    assert!(held.next_line().is_err(), "an offline watch sent an event");
    let mut list_watch = node.watch_pods(WATCH_LIST);
    let added: Value = serde_json::from_str(&list_watch.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(added["object"]["metadata"]["name"], "offline-app");
    let end: Value = serde_json::from_str(&list_watch.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    drop(list_watch);
    drop(online_watch);

    // A reboot of the node while the cloud is away.
    drop(held);
    node.restart();
    node.hub.wait_ready(secs(30));
    let after_restart = node_reads(&node, "offline-app");
    after_restart.assert_ok("offline-app");
    after_restart.assert_same(&online);
    let mut held = node.watch_pods("");
    assert_eq!(held.status, 200);

    // The cloud returns: the held watch ends (clients re-list from the cloud) and the hub
    // renews the node's lease in the real cluster again.
    let back_at = rfc3339_now();
    cp.start_apiserver();
    held.set_timeout(secs(30));
    let started = Instant::now();
    assert!(
        matches!(held.next_line(), Ok(None)),
        "the held watch did not end cleanly"
    );
    assert!(started.elapsed() < secs(30));
    admin.wait_for(&lease_path, secs(60), |l| {
        l["spec"]["renewTime"]
            .as_str()
            .is_some_and(|t| t[..19] >= back_at[..19])
    });
    let back = node_reads(&node, "offline-app");
    back.assert_ok("offline-app");
}

/// A Service with the topology annotation and its EndpointSlice with one endpoint on each of
/// `nodes` (10.0.0.1, 10.0.0.2, ...).
fn service_with_endpoints(admin: &Admin, name: &str, topology: &str, nodes: &[&str]) {
    admin.create(
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "annotations": {"openyurt.io/topologyKeys": topology}},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "selector": {"app": name}}}),
    );
    let endpoints: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"addresses": [format!("10.0.0.{}", i + 1)], "nodeName": n,
                             "conditions": {"ready": true}})
        })
        .collect();
    admin.create(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
    );
}

fn endpoint_nodes(list: &Value, slice: &str) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == slice)
        .unwrap_or_else(|| panic!("no slice {slice} in {list}"))["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["nodeName"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn filters_rewrite_real_objects_for_the_node() {
    let Some(cp) = envtest::shared() else { return };
    cp.install_openyurt();
    let admin = cp.admin();
    let me = "edge-filters";
    // The node's pool (the NodePool CRD from the fixture), with a peer in it.
    admin.create(
        "/apis/apps.openyurt.io/v1beta2/nodepools",
        &json!({"apiVersion": "apps.openyurt.io/v1beta2", "kind": "NodePool",
                "metadata": {"name": format!("{me}-pool")}, "spec": {"type": "Edge"}}),
    );
    let pool_path = format!("/apis/apps.openyurt.io/v1beta2/nodepools/{me}-pool");
    let mut pool = admin.get(&pool_path).json();
    pool["status"] = json!({"nodes": [me, "edge-filters-peer"]});
    let r = admin.send_json("PUT", &format!("{pool_path}/status"), &pool);
    assert_eq!(r.status, 200, "{}", r.text());
    service_with_endpoints(
        &admin,
        "topo-pool",
        "openyurt.io/nodepool",
        &[me, "edge-filters-peer", "elsewhere"],
    );
    service_with_endpoints(
        &admin,
        "topo-host",
        "kubernetes.io/hostname",
        &[me, "edge-filters-peer", "elsewhere"],
    );
    let node = Node::join(&cp, me, &[]);
    node.serve_tls(&cp);
    let secure_port = node.hub.secure_addr().port();

    // masterservice: kubelet sees default/kubernetes at the hub's TLS port, kube-proxy as is.
    let kubelet_view = node.get("/api/v1/services", KUBELET).json();
    let kubernetes = kubelet_view["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == "kubernetes" && s["metadata"]["namespace"] == "default")
        .expect("default/kubernetes")
        .clone();
    assert_eq!(kubernetes["spec"]["clusterIP"], "127.0.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], secure_port);
    let cloud = admin
        .get("/api/v1/namespaces/default/services/kubernetes")
        .json();
    assert_eq!(cloud["spec"]["clusterIP"], "10.96.0.1");
    let proxy_view = node.get("/api/v1/namespaces/default/services/kubernetes", KUBE_PROXY);
    assert_eq!(proxy_view.json()["spec"]["clusterIP"], "10.96.0.1");

    // servicetopology: kube-proxy and coredns keep this pool's or this node's endpoints.
    for ua in [KUBE_PROXY, COREDNS] {
        let slices = node.get("/apis/discovery.k8s.io/v1/endpointslices", ua);
        assert_eq!(slices.status, 200, "{}", slices.text());
        let slices = slices.json();
        assert_eq!(
            endpoint_nodes(&slices, "topo-pool-1"),
            vec![me, "edge-filters-peer"]
        );
        assert_eq!(endpoint_nodes(&slices, "topo-host-1"), vec![me]);
    }
    // kubelet is not filtered.
    let all = node
        .get("/apis/discovery.k8s.io/v1/endpointslices", KUBELET)
        .json();
    assert_eq!(endpoint_nodes(&all, "topo-pool-1").len(), 3);

    // A change in the cloud reaches a watch already filtered.
    let list = node.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        KUBE_PROXY,
    );
    let rv = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = client::watch(
        node.hub.proxy_addr,
        &format!("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=true&resourceVersion={rv}"),
        KUBE_PROXY,
    );
    let slice_path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/topo-pool-1";
    let mut slice = admin.get(slice_path).json();
    slice["endpoints"].as_array_mut().unwrap().push(
        json!({"addresses": ["10.0.0.9"], "nodeName": "far-away", "conditions": {"ready": true}}),
    );
    slice["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"addresses": ["10.0.0.8"], "nodeName": "edge-filters-peer", "conditions": {"ready": true}}));
    let r = admin.send_json("PUT", slice_path, &slice);
    assert_eq!(r.status, 200, "{}", r.text());
    watch.set_timeout(secs(20));
    let ev: Value = serde_json::from_str(&watch.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    let addrs: Vec<&str> = ev["object"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(addrs, vec!["10.0.0.1", "10.0.0.2", "10.0.0.8"]);
}

#[test]
fn protobuf_clients_get_true_answers_online_and_offline() {
    let Some(mut cp) = envtest::shared() else {
        return;
    };
    let admin = cp.admin();
    let node = Node::join(&cp, "edge-protobuf", &[]);
    register_node(&node);
    create_pod_with_config(&admin, "pb-app", &node.name);
    let pod_path = "/api/v1/namespaces/default/pods/pb-app";
    let pb = [("Accept", PROTOBUF)];

    // Online, a request the hub neither caches nor filters keeps protobuf: the very bytes the
    // apiserver sends.
    let direct = admin.request("GET", pod_path, &pb, b"");
    assert_eq!(direct.header("content-type"), Some(protobuf_type()));
    assert!(direct.body.starts_with(b"k8s\0"));
    let relayed = node.request("GET", pod_path, "operator/1.0", &pb, b"");
    assert_eq!(relayed.status, 200);
    assert_eq!(relayed.header("content-type"), Some(protobuf_type()));
    assert_eq!(
        relayed.body, direct.body,
        "protobuf was not passed through untouched"
    );
    // kubelet's reads are cached: the hub asked JSON, which client-go accepts just as well.
    let kubelet = node.request("GET", pod_path, KUBELET, &pb, b"");
    assert_eq!(kubelet.status, 200);
    assert_eq!(kubelet.header("content-type"), Some("application/json"));
    let json_direct = admin.get(pod_path).json();
    assert_eq!(kubelet.json(), json_direct);
    // Real protobuf bytes for the offline requests below: a Node and a TokenRequest.
    let node_pb = admin.request("GET", &format!("/api/v1/nodes/{}", node.name), &pb, b"");
    assert!(node_pb.body.starts_with(b"k8s\0"));
    let token_pb = admin.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &[
            ("Accept", protobuf_type()),
            ("Content-Type", "application/json"),
        ],
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": ["aud-x"], "expirationSeconds": 3607,
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "pb-app",
                                           "uid": json_direct["metadata"]["uid"]}}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(token_pb.status, 201, "{}", token_pb.text());
    assert!(token_pb.body.starts_with(b"k8s\0"));
    // A SubjectAccessReview is the cloud's to answer.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                     "spec": {"user": "system:node:edge-protobuf",
                              "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}})
    .to_string();
    let sar_path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let json_ct = [("Content-Type", "application/json")];
    let online_sar = node.request("POST", sar_path, KUBELET, &json_ct, sar.as_bytes());
    assert_eq!(online_sar.status, 201, "{}", online_sar.text());
    assert!(online_sar.json()["status"]["allowed"].is_boolean());
    wait_for("the pod in the cache", secs(10), || {
        node.cache
            .path()
            .join("kubelet/pods.v1.core/default/pb-app")
            .is_file()
            .then_some(())
    });

    cp.kill_apiserver();
    node.wait_offline();
    // Offline, protobuf clients get JSON, which decodes to the object they had online.
    let offline = node.request("GET", pod_path, KUBELET, &pb, b"");
    assert_eq!(offline.status, 200, "{}", offline.text());
    assert_eq!(offline.header("content-type"), Some("application/json"));
    assert_eq!(offline.json(), json_direct);
    // An offline create echoes the request: its bytes and its Content-Type.
    let echoed = node.request(
        "POST",
        "/api/v1/nodes",
        KUBELET,
        &[("Content-Type", protobuf_type()), ("Accept", PROTOBUF)],
        &node_pb.body,
    );
    assert_eq!(echoed.status, 201);
    assert_eq!(echoed.header("content-type"), Some(protobuf_type()));
    assert_eq!(echoed.body, node_pb.body);
    // The offline TokenRequest reads the protobuf request: audiences, bound pod, and a
    // lifetime it grants (one minute, said in the spec as kubelet needs).
    let token = node.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        KUBELET,
        &[("Content-Type", protobuf_type()), ("Accept", PROTOBUF)],
        &token_pb.body,
    );
    assert_eq!(token.status, 201, "{}", token.text());
    let t = token.json();
    assert_eq!(t["kind"], "TokenRequest");
    assert_eq!(t["spec"]["audiences"], json!(["aud-x"]));
    assert_eq!(t["spec"]["expirationSeconds"], 60);
    assert_eq!(t["spec"]["boundObjectRef"]["name"], "pb-app");
    assert_eq!(
        t["spec"]["boundObjectRef"]["uid"],
        json_direct["metadata"]["uid"]
    );
    assert_eq!(t["status"]["token"].as_str().unwrap().split('.').count(), 3);
    let offline_sar = node.request("POST", sar_path, KUBELET, &json_ct, sar.as_bytes());
    assert_eq!(offline_sar.status, 502, "{}", offline_sar.text());
    assert_eq!(
        offline_sar.json()["message"],
        "no healthy backends available."
    );
}

fn protobuf_type() -> &'static str {
    "application/vnd.kubernetes.protobuf"
}

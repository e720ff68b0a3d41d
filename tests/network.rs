//! The dummy interface and the listeners pods use (reference §10.2, seed FAQ item 5), with the
//! hub's default ports and addresses, in a network namespace of the test's own joined to the
//! test apiserver by a veth pair. Needs root and iproute2 (CI has both); says so and skips
//! otherwise.

use serde_json::{json, Value};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use testapi::{ApiServer, Hub, Pki, TempDir, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");

/// A network namespace with a veth link to the host; removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: IpAddr,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 200 + 20;
        let ns = Netns {
            name: format!("yh-test-{n}"),
            host_if: format!("yh{n}h"),
            host_ip: format!("10.253.{n}.1").parse().unwrap(),
        };
        let _ = ip(&["netns", "del", &ns.name]);
        ip(&["netns", "add", &ns.name])?;
        let peer = format!("yh{n}n");
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("10.253.{n}.1/30"),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ns.exec_ip(&["addr", "add", &format!("10.253.{n}.2/30"), "dev", &peer])?;
        ns.exec_ip(&["link", "set", &peer, "up"])?;
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `curl` inside the namespace: (status, body).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-s", "-m", "10"])
            .args(args)
            .args(["-w", "\n%{http_code}"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

#[test]
fn the_dummy_address_carries_both_proxy_ports_and_leaves_with_the_hub() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!(
                "SKIPPED: network namespaces unavailable here (needs root and iproute2): {e}"
            );
            return;
        }
    };
    let pki = Pki::for_addresses(&[ns.host_ip]);
    let api = ApiServer::start_on(&pki, std::net::SocketAddr::new(ns.host_ip, 0));
    api.create(
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "kubernetes"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
            "clusterIPs": ["10.96.0.1"], "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
    );
    api.add_token("sa-token", "system:serviceaccount:default:app", &[]);
    let root = TempDir::new("root");
    let cache = TempDir::new("cache");
    pki.write_hub_files(root.path(), NODE);
    let ca = root.path().join("pki/ca.crt");
    // Every port and address at its default: 127.0.0.1:10261/10267, 169.254.2.1:10261/10268.
    let args: Vec<String> = vec![
        format!("--server-addr={}", api.url()),
        format!("--node-name={NODE}"),
        "--nodepool-name=pool-a".into(),
        format!("--root-dir={}", root.path().display()),
        format!("--disk-cache-path={}", cache.path().display()),
        "--heartbeat-interval-seconds=1".into(),
        "--v=2".into(),
    ];
    let mut hub = Hub::spawn_in(&["ip", "netns", "exec", &ns.name], BIN, &args, &[]);
    hub.wait_for_log(
        "serving proxy for pods on http://169.254.2.1:10261",
        Duration::from_secs(30),
    );
    let secure = hub.secure_addr();
    assert_eq!(secure.to_string(), "169.254.2.1:10268");
    let addrs = ns.exec_ip(&["-br", "addr"]).unwrap();
    assert!(addrs.contains("169.254.2.1/32"), "{addrs}");
    let links = ns.exec_ip(&["-br", "link"]).unwrap();
    if !links.contains("hub-dummy0") {
        // Kernels without dummy links get the address on lo; the log says so.
        hub.wait_for_log("put on lo instead of hub-dummy0", Duration::from_secs(5));
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while ns.curl(&["http://127.0.0.1:10267/v1/readyz"]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            hub.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Seed FAQ item 5: through the hub kubelet sees default/kubernetes at the hub's address.
    let (code, body) = ns.curl(&[
        "-A",
        "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519",
        "http://169.254.2.1:10261/api/v1/services",
    ]);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let k8s = &list["items"][0];
    assert_eq!(k8s["spec"]["clusterIP"], "169.254.2.1");
    assert_eq!(k8s["spec"]["ports"][0]["port"], 10268);
    // A pod on the TLS port: the serving certificate verifies for 169.254.2.1, a token is
    // needed, and with one the request reaches the cloud as the pod.
    let url = "https://169.254.2.1:10268/api/v1/namespaces/default/services/kubernetes";
    let cacert = ca.display().to_string();
    let (code, body) = ns.curl(&["--cacert", &cacert, url]);
    assert_eq!(code, 401, "{body}");
    let (code, body) = ns.curl(&[
        "--cacert",
        &cacert,
        "-H",
        "Authorization: Bearer sa-token",
        url,
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        api.client_requests().last().unwrap().user.as_deref(),
        Some("system:serviceaccount:default:app")
    );

    // SIGTERM: the hub goes, and so does what it added to the namespace.
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(10)), Some(0));
    let addrs = ns.exec_ip(&["-br", "addr"]).unwrap();
    assert!(!addrs.contains("169.254.2.1"), "{addrs}");
    assert!(!ns.exec_ip(&["-br", "link"]).unwrap().contains("hub-dummy0"));
}

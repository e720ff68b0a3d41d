//! The real `kubectl` through the hub against the test apiserver.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testapi::{kubectl, kubectl_available, pod, Cluster, Hub, TempDir, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");

struct Setup {
    c: Cluster,
    hub: Hub,
    kcache: TempDir,
}

fn setup() -> Setup {
    assert!(
        kubectl_available(),
        "kubectl is not installed: these tests need the real kubectl (install it; .ci/run stops without it)"
    );
    let c = Cluster::new();
    let hub = c.start_hub(
        BIN,
        &[
            "--heartbeat-interval-seconds=1",
            "--heartbeat-timeout-seconds=1",
        ],
    );
    Setup {
        c,
        hub,
        kcache: TempDir::new("kubectl"),
    }
}

impl Setup {
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let out = kubectl(self.hub.proxy_addr, self.kcache.path())
            .args(args)
            .output()
            .expect("run kubectl");
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nhub log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.hub.log().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = kubectl(self.hub.proxy_addr, self.kcache.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line containing {needle:?} within 20 s"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn kubectl_gets_and_lists_through_the_hub() {
    let s = setup();
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("web-1", NODE));
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("web-2", NODE));
    let names = s.ok(&["get", "pods", "-n", "default", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        vec!["pod/web-1", "pod/web-2"]
    );
    let one = s.ok(&["get", "pod", "web-2", "-n", "default", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v["spec"]["nodeName"], NODE);
    let table = s.ok(&["get", "pods", "-n", "default"]);
    assert!(
        table.contains("web-1") && table.contains("web-2"),
        "{table}"
    );
    let missing = s.kubectl(&["get", "pod", "nope", "-n", "default"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[test]
fn kubectl_watch_receives_a_pod_created_after_the_watch_began() {
    let s = setup();
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("before", NODE));
    let (mut child, rx) = s.spawn(&["get", "pods", "-n", "default", "-w", "-o", "name"]);
    wait_line(&rx, "pod/before");
    // The watch is established once the apiserver serves it; create only then.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.c.api.open_watches_on("pods") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never reached the apiserver"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("after", NODE));
    wait_line(&rx, "pod/after");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_logs_follow_streams_each_line() {
    let s = setup();
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("logger", NODE));
    s.c.api.append_log("default", "logger", "line one");
    let (mut child, rx) = s.spawn(&["logs", "-f", "logger", "-n", "default"]);
    wait_line(&rx, "line one");
    for i in 2..=4 {
        s.c.api
            .append_log("default", "logger", &format!("line {i} after follow began"));
        wait_line(&rx, &format!("line {i} after follow began"));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_creates_applies_and_deletes_a_configmap() {
    let s = setup();
    let dir = TempDir::new("manifests");
    let file = dir.path().join("cm.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: edge\n").unwrap();
    // The test apiserver serves no OpenAPI schema, so client-side validation is off.
    s.ok(&["create", "--validate=false", "-f", file.to_str().unwrap()]);
    assert_eq!(
        s.c.api
            .get("/api/v1/namespaces/default/configmaps/settings")
            .unwrap()["data"]["mode"],
        "edge"
    );

    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: offline-first\n").unwrap();
    s.ok(&["apply", "--validate=false", "-f", file.to_str().unwrap()]);
    assert_eq!(
        s.c.api
            .get("/api/v1/namespaces/default/configmaps/settings")
            .unwrap()["data"]["mode"],
        "offline-first"
    );
    let got = s.ok(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(got, "offline-first");

    s.ok(&["delete", "configmap", "settings", "-n", "default"]);
    assert!(s
        .c
        .api
        .get("/api/v1/namespaces/default/configmaps/settings")
        .is_none());
}

#[test]
fn kubectl_is_cached_once_yurt_hub_cfg_names_it_and_reads_work_offline() {
    let s = setup();
    s.c.api
        .create("/api/v1/namespaces/default/pods", pod("app-1", NODE));
    let cache = s.c.cache.path().to_path_buf();
    s.ok(&["get", "pods", "-n", "default", "-o", "name"]);
    assert!(
        !cache.join("kubectl").exists(),
        "kubectl is not a cache agent by default"
    );

    s.c.api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        serde_json::json!({"metadata": {"name": "yurt-hub-cfg"}, "data": {"cache_agents": " kubectl , foo"}}),
    );
    s.hub
        .wait_for_log("cache_agents now", Duration::from_secs(10));
    s.ok(&["get", "pods", "-n", "default", "-o", "name"]);
    s.ok(&["get", "pod", "app-1", "-n", "default", "-o", "name"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cache.join("kubectl/pods.v1.core/default/app-1").is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl's reads were not cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The hub's own reads of yurt-hub-cfg are cached too.
    assert!(cache
        .join("yurthub/configmaps.v1.core/kube-system/yurt-hub-cfg")
        .is_file());

    s.c.api.set_fault(testapi::Fault::Refuse);
    s.hub
        .wait_for_log("is now unhealthy", Duration::from_secs(30));
    assert_eq!(
        s.ok(&["get", "pods", "-n", "default", "-o", "name"]).trim(),
        "pod/app-1"
    );
    let one = s.ok(&[
        "get",
        "pod",
        "app-1",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    assert_eq!(one, NODE);
    // The default table output asks for as=Table first; offline it gets the plain list.
    let table = s.ok(&["get", "pods", "-n", "default"]);
    assert!(table.contains("app-1"), "{table}");
}

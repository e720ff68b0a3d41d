//! The cache's lifecycle against the test apiserver: garbage collection of pods and Events,
//! the byte budget and its eviction order, and Secrets sealed at rest.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testapi::client::{get, request};
use testapi::wait_until;
use testapi::{cache_cli, command, pod, Cluster, Fault, Hub, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";
const FAST: &[&str] = &[
    "--heartbeat-interval-seconds=1",
    "--heartbeat-timeout-seconds=1",
    "--heartbeat-healthy-threshold=1",
];

/// Without the multiplexer, kube-proxy's Services are answered and cached as its own
/// (with it, they come from the store the hub fills as itself, `multiplexer-proxy-<node>`).
const NO_MULTIPLEXER: &str = "--pool-scope-resources=";

fn start(c: &Cluster, extra: &[&str]) -> Hub {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend_from_slice(extra);
    c.start_hub(BIN, &args)
}

fn post(hub: &Hub, path: &str, body: &Value) -> u16 {
    let body = serde_json::to_vec(body).unwrap();
    request(
        hub.proxy_addr,
        "POST",
        path,
        &[
            ("User-Agent", KUBELET),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .unwrap()
    .status
}

fn core_event(name: &str, last: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1"},
        "reason": "Started", "message": "Started container c", "type": "Normal", "count": 1,
        "firstTimestamp": last, "lastTimestamp": last,
        "source": {"component": "kubelet", "host": NODE}})
}

fn v1_event(name: &str, at: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": at, "reportingController": "kubelet", "reportingInstance": NODE,
        "action": "Started", "reason": "Started", "type": "Normal",
        "regarding": {"kind": "Pod", "namespace": "default", "name": "web-1"}})
}

fn rfc3339_ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    testapi::store::rfc3339(now - secs)
}

#[test]
fn gc_removes_deleted_pods_and_expired_or_gone_events_but_never_every_pod() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/nodes", json!({"metadata": {"name": NODE}}));
    for name in ["web-1", "web-2", "db-1"] {
        c.api
            .create("/api/v1/namespaces/default/pods", pod(name, NODE));
    }
    let root = c.cache.path().to_path_buf();
    let file = |rel: &str| root.join(rel);
    {
        let hub = start(&c, &[]);
        let list = get(
            hub.proxy_addr,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
            KUBELET,
        );
        assert_eq!(list.json()["items"].as_array().unwrap().len(), 3);
        // kubelet posts its Events through the hub, in both API groups.
        let two_hours_ago = rfc3339_ago(2 * 3600);
        let now = rfc3339_ago(0);
        for (name, at) in [("old", &two_hours_ago), ("fresh", &now)] {
            assert_eq!(
                post(
                    &hub,
                    "/api/v1/namespaces/default/events",
                    &core_event(name, at)
                ),
                201
            );
        }
        let micro = format!("{}.000000Z", now.trim_end_matches('Z'));
        for name in ["gone", "kept"] {
            assert_eq!(
                post(
                    &hub,
                    "/apis/events.k8s.io/v1/namespaces/default/events",
                    &v1_event(name, &micro)
                ),
                201
            );
        }
        wait_until("the events to be cached", Duration::from_secs(10), || {
            file("kubelet/events.v1.core/default/old").is_file()
                && file("kubelet/events.v1.events.k8s.io/default/kept").is_file()
        });
        hub.kill();
    }
    // Meanwhile in the cloud: one pod and one Event are deleted.
    c.api.delete("/api/v1/namespaces/default/pods/web-2");
    c.api
        .delete("/apis/events.k8s.io/v1/namespaces/default/events/gone");

    let hub = start(&c, &["--gc-frequency=1s", "--event-ttl=1h"]);
    wait_until("garbage collection", Duration::from_secs(20), || {
        !file("kubelet/pods.v1.core/default/web-2").exists()
            && !file("kubelet/events.v1.core/default/old").exists()
            && !file("kubelet/events.v1.events.k8s.io/default/gone").exists()
    });
    for kept in [
        "kubelet/pods.v1.core/default/web-1",
        "kubelet/pods.v1.core/default/db-1",
        "kubelet/events.v1.core/default/fresh",
        "kubelet/events.v1.events.k8s.io/default/kept",
    ] {
        assert!(file(kept).is_file(), "{kept} must stay");
    }
    hub.wait_for_log(
        "gc: pod default/web-2 is gone from the cloud",
        Duration::from_secs(5),
    );
    assert!(hub.metric("yurthub_cache_gc_removed_total") >= 3.0);
    // The removed pod left the list view too: offline, the list no longer has it.
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let offline = get(
        hub.proxy_addr,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
        KUBELET,
    );
    assert_eq!(offline.status, 200);
    let mut names: Vec<String> = offline.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["db-1", "web-1"]);
    hub.kill();

    // A cloud that answers zero pods (a wrong node name, an emptied etcd) wipes nothing.
    c.api.set_fault(Fault::None);
    c.api.delete("/api/v1/namespaces/default/pods/web-1");
    c.api.delete("/api/v1/namespaces/default/pods/db-1");
    let hub = start(&c, &["--gc-frequency=1s"]);
    hub.wait_for_log("keeping them (never all at once)", Duration::from_secs(20));
    assert!(file("kubelet/pods.v1.core/default/web-1").is_file());
    assert!(file("kubelet/pods.v1.core/default/db-1").is_file());
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn bytes_below(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .filter(|p| !p.starts_with(dir.join("_quarantine")))
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// kubelet's restart set: its node, its pods, and what they reference.
const RESTART_SET: &[&str] = &[
    "kubelet/nodes.v1.core/node-1",
    "kubelet/pods.v1.core/default/web-1",
    "kubelet/configmaps.v1.core/default/web-config",
    "kubelet/secrets.v1.core/default/web-secret",
];

#[test]
fn over_budget_events_go_first_and_kubelets_restart_set_stays() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/nodes", json!({"metadata": {"name": NODE}}));
    let mut web = pod("web-1", NODE);
    web["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "web-config"}}]);
    web["spec"]["containers"][0]["env"] =
        json!([{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "pw"}}}]);
    c.api.create("/api/v1/namespaces/default/pods", web);
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "web-config"}, "data": {"a": "1"}}),
    );
    c.api.create(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "web-secret"}, "data": {"pw": "aHVudGVyMg=="}}),
    );
    c.api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        json!({"metadata": {"name": "yurt-hub-cfg"}, "data": {"cache_agents": "my-operator"}}),
    );
    for i in 0..5 {
        c.api.create(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("op-{i}")}, "data": {"x": "y".repeat(1000)}}),
        );
    }
    let root = c.cache.path().to_path_buf();
    let kubelet_reads = |hub: &Hub| {
        for path in [
            "/api/v1/nodes/node-1",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
            "/api/v1/namespaces/default/configmaps/web-config",
            "/api/v1/namespaces/default/secrets/web-secret",
        ] {
            assert_eq!(get(hub.proxy_addr, path, KUBELET).status, 200, "{path}");
        }
    };
    // First without a budget: how big is the cache with kubelet's set and an operator's list?
    let before = {
        let hub = start(&c, &[]);
        kubelet_reads(&hub);
        wait_until("yurt-hub-cfg to be read", Duration::from_secs(10), || {
            hub.log().iter().any(|l| l.contains("cache_agents now"))
        });
        let list = get(
            hub.proxy_addr,
            "/api/v1/namespaces/default/configmaps",
            "my-operator/1.0",
        );
        assert_eq!(list.status, 200);
        wait_until("the caches to be written", Duration::from_secs(10), || {
            RESTART_SET.iter().all(|f| root.join(f).is_file())
                && root
                    .join("my-operator/configmaps.v1.core/default/op-4")
                    .is_file()
        });
        hub.kill();
        bytes_below(&root)
    };
    // Then with a budget 24 KiB above that, and kubelet posting 60 Events of ~1.5 KiB.
    let budget = before + 24 * 1024;
    let hub = start(&c, &[&format!("--cache-max-bytes={budget}")]);
    for i in 0..60 {
        let mut e = core_event(&format!("ev-{i:03}"), &rfc3339_ago(0));
        e["message"] = json!(format!("{i} {}", "m".repeat(1400)));
        assert_eq!(post(&hub, "/api/v1/namespaces/default/events", &e), 201);
    }
    wait_until(
        "the newest event to be cached",
        Duration::from_secs(10),
        || root.join("kubelet/events.v1.core/default/ev-059").is_file(),
    );
    hub.wait_for_log("exceed --cache-max-bytes", Duration::from_secs(10));
    let evicted = hub.metric("yurthub_cache_evictions_total");
    assert!(evicted > 0.0, "nothing evicted");
    assert!(
        bytes_below(&root) <= budget,
        "{} > {budget}",
        bytes_below(&root)
    );
    // Events went, oldest first; the operator's objects were not needed.
    assert!(!root.join("kubelet/events.v1.core/default/ev-000").exists());
    for f in RESTART_SET {
        assert!(root.join(f).is_file(), "{f} evicted");
    }
    assert!(root
        .join("my-operator/configmaps.v1.core/default/op-0")
        .is_file());
    hub.kill();

    // A budget smaller than everything: the operator's objects go too, never the restart set.
    let hub = start(&c, &["--cache-max-bytes=1024"]);
    let mut e = core_event("trigger", &rfc3339_ago(0));
    e["message"] = json!("x".repeat(2000));
    assert_eq!(post(&hub, "/api/v1/namespaces/default/events", &e), 201);
    hub.wait_for_log("which are never evicted", Duration::from_secs(10));
    assert!(!root
        .join("my-operator/configmaps.v1.core/default/op-0")
        .exists());
    for f in RESTART_SET {
        assert!(root.join(f).is_file(), "{f} evicted");
    }
    hub.kill();

    // Offline restart still works from what is left.
    c.api.set_fault(Fault::Refuse);
    let hub = start(&c, &["--cache-max-bytes=1024"]);
    kubelet_reads(&hub);
    let secret = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/secrets/web-secret",
        KUBELET,
    );
    assert_eq!(secret.json()["data"]["pw"], "aHVudGVyMg==");
}

#[test]
fn an_agents_list_is_evicted_whole_and_then_refused_offline_never_partial() {
    const KUBE_PROXY: &str = "kube-proxy/v1.36.2 (linux/arm64) kubernetes/98b3519";
    let c = Cluster::new();
    for i in 0..10 {
        c.api.create(
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": format!("svc-{i}"), "annotations": {"pad": "p".repeat(1000)}},
                   "spec": {"clusterIP": format!("10.96.0.{}", 10 + i), "ports": [{"port": 80}]}}),
        );
    }
    let root = c.cache.path().to_path_buf();
    let services = root.join("kube-proxy/services.v1.core");
    // The view file is written after its members: until it says whole, a hub killed then
    // rightly refuses the list offline.
    let view = root.join("_internal/views/kube-proxy/services.v1.core");
    let whole_on_disk = || {
        files_below(&services).len() == 10
            && files_below(&view).iter().any(|f| {
                std::fs::read(f)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|v| {
                        v.get("evicted").is_none()
                            && v["members"].as_array().is_some_and(|m| m.len() == 10)
                    })
            })
    };
    let listed = |hub: &Hub| {
        let r = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().unwrap().len()
    };
    // Without a budget: kube-proxy's list is cached whole.
    let before = {
        let hub = start(&c, &[NO_MULTIPLEXER]);
        assert_eq!(listed(&hub), 10);
        wait_until(
            "the list to be cached",
            Duration::from_secs(10),
            whole_on_disk,
        );
        // The hub's own Services informer caches them too: the budget below counts its copy,
        // so it must be on disk before the measure (a busy machine may be slower to it).
        let own = root.join("_internal/views/yurthub/services.v1.core");
        wait_until("the hub's own list", Duration::from_secs(10), || {
            files_below(&own).len() == 1
                && files_below(&root.join("yurthub/services.v1.core")).len() == 10
        });
        hub.kill();
        bytes_below(&root)
    };
    // A budget that forces a third of the list out: the list goes whole, never a part of it.
    let budget = before - bytes_below(&services) / 3;
    let hub = start(
        &c,
        &[NO_MULTIPLEXER, &format!("--cache-max-bytes={budget}")],
    );
    let line = hub.wait_for_log("exceed --cache-max-bytes", Duration::from_secs(10));
    assert!(
        line.contains("dropped 1 whole lists")
            && line.contains("kube-proxy services.v1.core list (10 objects)"),
        "{line}"
    );
    assert_eq!(hub.metric("yurthub_cache_evicted_lists_total"), 1.0);
    assert!(
        files_below(&services).is_empty(),
        "{:?}",
        files_below(&services)
    );
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let offline = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!(offline.status, 404, "{}", offline.text());
    assert!(
        offline.json()["message"]
            .as_str()
            .unwrap()
            .contains("evicted to keep the cache within --cache-max-bytes"),
        "{}",
        offline.text()
    );
    hub.kill();
    // Still refused after a restart (the mark is on disk), and answered whole once the
    // cloud has listed it again.
    let hub = start(&c, &[NO_MULTIPLEXER]);
    let offline = get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY);
    assert_eq!(offline.status, 404, "{}", offline.text());
    hub.kill();
    c.api.set_fault(Fault::None);
    let hub = start(&c, &[NO_MULTIPLEXER]);
    // Until its first probe the hub may answer from the cache: 404, as above.
    wait_until(
        "the cloud to answer the list",
        Duration::from_secs(10),
        || get(hub.proxy_addr, "/api/v1/services", KUBE_PROXY).status == 200,
    );
    assert_eq!(listed(&hub), 10);
    wait_until(
        "the list's view to be whole on disk",
        Duration::from_secs(10),
        whole_on_disk,
    );
    hub.kill();
    c.api.set_fault(Fault::Refuse);
    let hub = start(&c, &[NO_MULTIPLEXER]);
    assert_eq!(listed(&hub), 10);
}

#[test]
fn sealed_secrets_hold_no_value_on_disk_and_still_serve_offline() {
    let c = Cluster::new();
    // The value and its base64 form, as a Secret carries it.
    let value = "correct horse battery staple";
    let encoded = "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==";
    c.api.create(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "db-pass"}, "data": {"password": encoded}}),
    );
    c.api.create(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "older"}, "data": {"token": encoded}}),
    );
    let keys = testapi::TempDir::new("keys");
    let key_file = keys.path().join("cache.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let key_flag = format!("--encrypt-secrets-key-file={}", key_file.display());
    let root = c.cache.path().to_path_buf();
    let sealed = root.join("kubelet/secrets.v1.core/default/db-pass");
    let older = root.join("kubelet/secrets.v1.core/default/older");

    // One Secret cached in the clear by a hub without the key...
    {
        let hub = start(&c, &[]);
        assert_eq!(
            get(
                hub.proxy_addr,
                "/api/v1/namespaces/default/secrets/older",
                KUBELET
            )
            .status,
            200
        );
        wait_until("the secret to be cached", Duration::from_secs(10), || {
            older.is_file()
        });
        assert!(String::from_utf8_lossy(&std::fs::read(&older).unwrap()).contains(encoded));
        hub.kill();
    }
    // ...is sealed when the key is configured; new ones are sealed as they are written.
    let hub = start(&c, &[&key_flag]);
    let online = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/secrets/db-pass",
        KUBELET,
    );
    assert_eq!(online.json()["data"]["password"], encoded);
    wait_until("the secret to be cached", Duration::from_secs(10), || {
        sealed.is_file()
    });
    for f in [&sealed, &older] {
        let disk = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&disk);
        assert!(!text.contains(encoded) && !text.contains(value), "{text}");
        assert!(
            text.starts_with("{\"yurthubSealed\":\"chacha20-poly1305\""),
            "{text}"
        );
    }
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    for f in files_below(&root) {
        let disk = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&disk).contains(key_text.trim()),
            "key in {}",
            f.display()
        );
    }

    // A list of Secrets keeps its view in the clear (names only, no data), readable at restart.
    let by_name = "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ddb-pass";
    assert_eq!(get(hub.proxy_addr, by_name, KUBELET).status, 200);
    let views = root.join("_internal/views/kubelet/secrets.v1.core");
    wait_until("the secret list's view", Duration::from_secs(10), || {
        std::fs::read_dir(&views).is_ok_and(|d| d.count() == 1)
    });
    let view = std::fs::read_dir(&views)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&view).unwrap();
    assert!(
        text.contains("\"members\"") && !text.contains("yurthubSealed"),
        "{text}"
    );

    // Offline the hub opens them.
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    for name in ["db-pass", "older"] {
        let r = get(
            hub.proxy_addr,
            &format!("/api/v1/namespaces/default/secrets/{name}"),
            KUBELET,
        );
        assert_eq!(r.status, 200, "{name}");
        let v = r.json();
        assert_eq!(v["metadata"]["name"], name);
        assert!(
            v["data"]
                .as_object()
                .unwrap()
                .values()
                .all(|d| d == encoded),
            "{v}"
        );
    }
    hub.kill();

    // `cache get` needs the key; `verify` with it opens every sealed file.
    let rel = "kubelet/secrets.v1.core/default/db-pass";
    let (code, text) = cache_cli(BIN, c.cache.path(), &["get", rel]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("needs --encrypt-secrets-key-file"), "{text}");
    let (code, text) = cache_cli(BIN, c.cache.path(), &["get", rel, &key_flag]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(encoded), "{text}");
    assert_eq!(cache_cli(BIN, c.cache.path(), &["verify", &key_flag]).0, 0);
    let wrong = keys.path().join("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    let (code, text) = cache_cli(
        BIN,
        c.cache.path(),
        &[
            "verify",
            &format!("--encrypt-secrets-key-file={}", wrong.display()),
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(rel), "{text}");

    // A hub without the key (or with another) never serves the envelope.
    let hub = start(&c, &[]);
    let r = get(
        hub.proxy_addr,
        "/api/v1/namespaces/default/secrets/db-pass",
        KUBELET,
    );
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("yurthubSealed"));
    hub.kill();

    // A key kept inside the cache directory is refused at start.
    let inside = root.join("key");
    std::fs::copy(&key_file, &inside).unwrap();
    let out = command(BIN)
        .args(c.hub_args(&[&c.api]))
        .arg(format!("--encrypt-secrets-key-file={}", inside.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is inside the cache directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_closed_log_pipe_never_takes_the_hub_down() {
    use std::io::BufRead;
    let c = Cluster::new();
    let mut args = c.hub_args(&[&c.api]);
    args.extend(FAST.iter().map(|s| s.to_string()));
    // A debug line for every request.
    args.push("--v=4".into());
    let mut child = command(BIN)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("the hub's log").unwrap();
        if let Some(rest) = line.split("serving proxy on http://").nth(1) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    // The reading end goes away, as `yurthub … | head` does: every later line meets EPIPE.
    drop(lines);
    wait_until("the hub to answer", Duration::from_secs(10), || {
        get(addr, "/api/v1/namespaces/default/pods", KUBELET).status == 200
    });
    for _ in 0..20 {
        assert_eq!(
            get(addr, "/api/v1/namespaces/default/pods", KUBELET).status,
            200
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the hub exited");
    // And it still stops cleanly.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

//! `yurthub cache ...` on the files a running hub wrote.

use std::time::{Duration, Instant};
use testapi::client::get;
use testapi::{pod, Cluster, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";

fn cache(c: &Cluster, args: &[&str]) -> (i32, String) {
    testapi::cache_cli(BIN, c.cache.path(), args)
}

#[test]
fn ls_get_stats_and_verify_on_what_the_hub_cached() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("web-1", NODE));
    c.api
        .create("/api/v1/namespaces/default/pods", pod("web-2", NODE));
    let hub = c.start_hub(BIN, &[]);
    assert_eq!(
        get(hub.proxy_addr, "/api/v1/namespaces/default/pods", KUBELET).status,
        200
    );
    let file = c.cache.path().join("kubelet/pods.v1.core/default/web-2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.is_file() {
        assert!(Instant::now() < deadline, "not cached");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (code, text) = cache(&c, &["ls"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("kubelet ")), "{text}");
    let (code, text) = cache(&c, &["ls", "kubelet/pods.v1.core/default", "--json"]);
    assert_eq!(code, 0, "{text}");
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    let (code, text) = cache(&c, &["get", "kubelet/pods.v1.core/default/web-1"]);
    assert_eq!(code, 0, "{text}");
    let pod: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pod["metadata"]["name"], "web-1");
    let (code, text) = cache(&c, &["stats", "--json"]);
    assert_eq!(code, 0, "{text}");
    let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(stats["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["component"] == "kubelet"
            && r["resource"] == "pods.v1.core"
            && r["objects"] == 2));
    assert_eq!(cache(&c, &["verify"]).0, 0);

    // A torn file (a disk that lied about a write): verify names it and fails.
    drop(hub);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text) = cache(&c, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("unparsable: kubelet/pods.v1.core/default/web-2"),
        "{text}"
    );
    assert_eq!(cache(&c, &["nonsense"]).0, 2);
}

fn json_of(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, text) = cache(c, &all);
    assert_eq!(code, 0, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn why_agrees_with_what_the_hub_cached_and_evict_removes_it() {
    let c = Cluster::new();
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        let mut p = pod(name, NODE);
        p["metadata"]["labels"] = serde_json::json!({ "app": app });
        c.api.create("/api/v1/namespaces/default/pods", p);
    }
    let hub = c.start_hub(BIN, &[]);
    let one = "/api/v1/namespaces/default/pods/db-1";
    let list = "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb";
    assert_eq!(get(hub.proxy_addr, one, KUBELET).status, 200);
    assert_eq!(
        get(hub.proxy_addr, list, KUBELET).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let view_dir = c.cache.path().join("_internal/views/kubelet/pods.v1.core");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !view_dir.is_dir()
        || !c
            .cache
            .path()
            .join("kubelet/pods.v1.core/default/db-1")
            .is_file()
    {
        assert!(Instant::now() < deadline, "not cached");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A get: the key `why` names is the file the hub wrote.
    let url = format!("http://{}{one}", hub.proxy_addr);
    let w = json_of(&c, &["why", &url, "--user-agent", KUBELET]);
    assert_eq!(w["cached"], true, "{w}");
    assert_eq!(w["component"], "kubelet");
    assert_eq!(w["key"], "kubelet/pods.v1.core/default/db-1");
    assert_eq!(w["exists"], true, "{w}");
    let on_disk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.cache.path().join(w["key"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["metadata"]["name"], "db-1");

    // A list: the view `why` names is the one on disk, with the list's members.
    let w = json_of(&c, &["why", list, "--user-agent", KUBELET]);
    assert_eq!(w["view"]["exists"], true, "{w}");
    assert_eq!(w["view"]["members"], 2, "{w}");
    assert_eq!(w["view"]["labelSelector"], "app=web");
    assert!(
        c.cache
            .path()
            .join(w["view"]["file"].as_str().unwrap())
            .is_file(),
        "{w}"
    );
    assert!(w["offline"].as_str().unwrap().contains("2 members"), "{w}");
    // Another selector has no view yet: offline it is evaluated over the objects.
    let w = json_of(
        &c,
        &[
            "why",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Ddb",
            "--user-agent",
            KUBELET,
        ],
    );
    assert_eq!(w["view"]["exists"], false, "{w}");
    // A component that is no cache agent: the hub cached nothing for it, and why says so.
    let curl = get(hub.proxy_addr, one, "curl/8.5.0");
    assert_eq!(curl.status, 200);
    let w = json_of(&c, &["why", one, "--user-agent", "curl/8.5.0"]);
    assert_eq!(w["cached"], false, "{w}");
    assert_eq!(w["reason"], "component is not a cache agent");
    assert!(!c.cache.path().join("curl").exists());
    let (code, text) = cache(&c, &["why", one, "--user-agent", KUBELET]);
    assert_eq!(code, 0);
    assert!(
        text.contains("key:        kubelet/pods.v1.core/default/db-1 (on disk)"),
        "{text}"
    );

    // evict: the objects and the views of that resource go.
    drop(hub);
    let e = json_of(&c, &["evict", "kubelet/pods.v1.core"]);
    assert_eq!(e["objects"], 3, "{e}");
    assert!(!c.cache.path().join("kubelet/pods.v1.core").exists());
    assert!(!view_dir.exists());
    assert_eq!(cache(&c, &["evict", "../etc"]).0, 1);
    assert_eq!(
        cache(&c, &["evict", "kubelet/pods.v1.core"]).0,
        1,
        "nothing left to evict"
    );
}

//! `yurthub cache ...` on the files a running hub wrote.

use std::time::{Duration, Instant};
use testapi::client::get;
use testapi::{command, pod, Cluster, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";

fn cache(c: &Cluster, args: &[&str]) -> (i32, String) {
    let out = command(BIN)
        .arg("cache")
        .args(args)
        .arg(format!("--disk-cache-path={}", c.cache.path().display()))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
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

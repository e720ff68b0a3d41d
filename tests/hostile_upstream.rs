//! A broken or hostile apiserver: truncated chunks, lying `Content-Length`s, invalid JSON in
//! a watch stream, a list larger than `--max-cached-list-bytes`. The hub answers or closes
//! cleanly, never caches garbage, never reuses a connection with stray bytes on it, and its
//! memory does not grow with the size of a response.

use serde_json::{json, Value};
use std::time::Duration;
use testapi::client::{get, request, watch};
use testapi::wait_until;
use testapi::{cache_cli, pod, rss_kib, Cluster, Fault, Hub, Mangle, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";

fn cached_value(c: &Cluster) -> String {
    let file = c
        .cache
        .path()
        .join("kubelet/configmaps.v1.core/default/settings");
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["data"]["v"].as_str().unwrap().to_string()
}

/// Whether a read through the hub failed as a client would notice: the connection ended
/// early, or the body is not the JSON object it claims to be.
fn broken_read(hub: &Hub, path: &str) -> bool {
    match request(hub.proxy_addr, "GET", path, &[("User-Agent", KUBELET)], b"") {
        Err(_) => true,
        Ok(r) => r.status != 200 || serde_json::from_slice::<Value>(&r.body).is_err(),
    }
}

#[test]
fn truncated_chunks_and_lying_lengths_are_never_cached_and_the_hub_goes_on() {
    let c = Cluster::new();
    c.api.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "settings"}, "data": {"v": "1", "pad": "p".repeat(3000)}}),
    );
    c.api
        .create("/api/v1/namespaces/default/pods", pod("web-1", NODE));
    let hub = c.start_hub(BIN, &[]);
    let one = "/api/v1/namespaces/default/configmaps/settings";
    let all = "/api/v1/namespaces/default/configmaps";
    assert_eq!(get(hub.proxy_addr, one, KUBELET).status, 200);
    assert_eq!(get(hub.proxy_addr, all, KUBELET).status, 200);
    let view = c
        .cache
        .path()
        .join("_internal/views/kubelet/configmaps.v1.core");
    wait_until("the reads to be cached", Duration::from_secs(10), || {
        view.is_dir()
            && c.cache
                .path()
                .join("kubelet/configmaps.v1.core/default/settings")
                .is_file()
    });
    // The cloud's copy changes; every damaged answer carrying it must leave the cache alone.
    c.api.update(
        one,
        json!({"metadata": {"name": "settings"}, "data": {"v": "2", "pad": "p".repeat(3000)}}),
    );
    for how in [
        Mangle::TruncatedChunk,
        Mangle::LongContentLength,
        Mangle::ShortContentLength,
    ] {
        c.api.set_fault(Fault::Mangle("/configmaps".into(), how));
        assert!(
            broken_read(&hub, one),
            "{how:?}: a damaged object read as whole"
        );
        assert!(
            broken_read(&hub, all),
            "{how:?}: a damaged list read as whole"
        );
        // Other requests go on, on connections without stray bytes.
        for _ in 0..10 {
            let r = get(
                hub.proxy_addr,
                "/api/v1/namespaces/default/pods/web-1",
                KUBELET,
            );
            assert_eq!(r.status, 200, "{how:?}");
            assert_eq!(r.json()["metadata"]["name"], "web-1", "{how:?}");
        }
        c.api.set_fault(Fault::None);
        assert_eq!(
            cached_value(&c),
            "1",
            "{how:?}: a damaged answer reached the cache"
        );
        let (code, text) = cache_cli(BIN, c.cache.path(), &["verify"]);
        assert_eq!(code, 0, "{how:?}: {text}");
    }
    // Healed: the real answer is served and cached.
    assert_eq!(get(hub.proxy_addr, one, KUBELET).json()["data"]["v"], "2");
    wait_until(
        "the healed read to be cached",
        Duration::from_secs(10),
        || cached_value(&c) == "2",
    );
    assert!(hub.log().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn invalid_json_in_a_watch_stream_is_never_cached() {
    let c = Cluster::new();
    for name in ["a-1", "b-2", "c-3"] {
        c.api
            .create("/api/v1/namespaces/default/pods", pod(name, NODE));
    }
    let hub = c.start_hub(BIN, &[]);
    c.api
        .set_fault(Fault::Mangle("/pods".into(), Mangle::GarbageWatchLine));
    let mut w = watch(
        hub.proxy_addr,
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion=0",
        KUBELET,
    );
    w.set_timeout(Duration::from_secs(20));
    let mut events = Vec::new();
    // The stream ends (the server closed it) or is closed by the hub: either way it ends.
    while let Ok(Some(line)) = w.next_line() {
        if !line.trim().is_empty() {
            events.push(line);
        }
    }
    c.api.set_fault(Fault::None);
    // Whatever reached the client, the good events are among it, whole.
    let good: Vec<Value> = events
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let names: Vec<&str> = good
        .iter()
        .filter_map(|e| e["object"]["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a-1", "b-2", "c-3"], "{events:?}");
    let dir = c.cache.path().join("kubelet/pods.v1.core/default");
    wait_until(
        "the good events to be cached",
        Duration::from_secs(10),
        || ["a-1", "b-2", "c-3"].iter().all(|n| dir.join(n).is_file()),
    );
    let (code, text) = cache_cli(BIN, c.cache.path(), &["verify"]);
    assert_eq!(code, 0, "{text}");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("not json"));
    }
    assert_eq!(
        get(
            hub.proxy_addr,
            "/api/v1/namespaces/default/pods/a-1",
            KUBELET
        )
        .status,
        200
    );
}

#[test]
fn a_list_over_max_cached_list_bytes_is_streamed_whole_not_cached_and_memory_stays_flat() {
    let c = Cluster::new();
    // 40 ConfigMaps of 512 KiB: a 20 MiB list (gzipped by the apiserver, unpacked by the hub).
    for i in 0..40 {
        c.api.create(
            "/api/v1/namespaces/big/configmaps",
            json!({"metadata": {"name": format!("blob-{i:02}")}, "data": {"x": format!("{i}").repeat(512 * 1024)}}),
        );
    }
    c.api.create(
        "/api/v1/namespaces/small/configmaps",
        json!({"metadata": {"name": "tiny"}, "data": {"x": "1"}}),
    );
    let hub = c.start_hub(BIN, &["--max-cached-list-bytes=1Mi"]);
    let rss_before = rss_kib(hub.pid());
    for _ in 0..3 {
        let r = get(hub.proxy_addr, "/api/v1/namespaces/big/configmaps", KUBELET);
        assert_eq!(r.status, 200);
        let v = r.json();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 40);
        assert_eq!(
            items[39]["data"]["x"].as_str().unwrap().len(),
            2 * 512 * 1024
        );
    }
    let rss_after = rss_kib(hub.pid());
    eprintln!(
        "a 20 MiB list streamed 3 times: hub RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    if std::env::var_os("YURTHUB_TEST_RUNNER").is_none() {
        assert!(
            rss_after.saturating_sub(rss_before) < 8 * 1024,
            "memory grew by {} KiB",
            rss_after - rss_before
        );
    }
    hub.wait_for_log(
        "larger than --max-cached-list-bytes=1048576: streamed, not cached",
        Duration::from_secs(5),
    );
    // A small list is cached as usual; the big one left nothing.
    assert_eq!(
        get(
            hub.proxy_addr,
            "/api/v1/namespaces/small/configmaps",
            KUBELET
        )
        .status,
        200
    );
    let root = c.cache.path();
    wait_until(
        "the small list to be cached",
        Duration::from_secs(10),
        || root.join("kubelet/configmaps.v1.core/small/tiny").is_file(),
    );
    assert!(!root.join("kubelet/configmaps.v1.core/big").exists());
}

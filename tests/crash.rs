//! Crash safety: a hub killed with SIGKILL at random moments (1,000 times) while a watch
//! floods updates never leaves an unparsable cache file (each restart would quarantine one:
//! none is), and a restart leaves no temporary files.

use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testapi::{client, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
/// Kill cycles: 1,000 natively; 200 under an emulator (`YURTHUB_TEST_RUNNER`), where one
/// costs ~0.4 s instead of ~20 ms.
fn cycles() -> usize {
    if std::env::var_os("YURTHUB_TEST_RUNNER").is_some() {
        200
    } else {
        1000
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn sigkill_during_a_watch_flood_never_leaves_garbage_in_the_cache() {
    let c = Cluster::new();
    for i in 0..20 {
        c.api.create(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"v": "0"}}),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let updates = std::thread::scope(|scope| {
        let api = &c.api;
        let stop_flood = stop.clone();
        let flood = scope.spawn(move || {
            let mut n = 0u64;
            while !stop_flood.load(Ordering::Relaxed) {
                let path = format!("/api/v1/namespaces/default/configmaps/cm-{}", n % 20);
                if let Some(mut cm) = api.get(&path) {
                    cm["data"]["v"] = json!(n.to_string());
                    cm["data"]["pad"] = json!("x".repeat((n % 7) as usize * 500));
                    api.update(&path, cm);
                }
                n += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            n
        });
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..cycles() {
            let hub = c.start_hub(BIN, &[]);
            let list = client::get(
                hub.proxy_addr,
                "/api/v1/namespaces/default/configmaps",
                KUBELET,
            );
            let rv = list.json()["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            let mut w = client::watch(
                hub.proxy_addr,
                &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
                KUBELET,
            );
            // Kill after a random number of events, i.e. at a random point of the writes.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            for _ in 0..1 + rng % 40 {
                if w.next_line().ok().flatten().is_none() {
                    break;
                }
            }
            hub.kill();
        }
        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap()
    });
    assert!(updates > 200, "the flood produced updates ({updates})");

    let mut files = Vec::new();
    walk(c.cache.path(), &mut files);
    let cached: Vec<_> = files
        .iter()
        .filter(|p| !p.to_string_lossy().contains(".tmp-"))
        .collect();
    let objects = c.cache.path().join("kubelet/configmaps.v1.core/default");
    // Kills land mid-list, so not every object need be on disk yet; some must be.
    assert!(
        cached.iter().any(|p| p.starts_with(&objects)),
        "nothing was cached before the kills"
    );
    for f in &cached {
        assert!(
            !f.starts_with(c.cache.path().join("_quarantine")),
            "a file needed quarantining: {}",
            f.display()
        );
        let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap())
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", f.display()));
        assert!(v.is_object(), "{}", f.display());
    }

    // A restart removes the leftovers of interrupted writes, and the cache works on.
    let hub = c.start_hub(BIN, &[]);
    let mut after = Vec::new();
    walk(c.cache.path(), &mut after);
    // Temporary files are named `.tmp-<pid>-<n>`; the new process may be mid-write itself.
    let own = format!(".tmp-{}-", hub.pid());
    let leftovers: Vec<_> = after
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(".tmp-") && !name.starts_with(&own)
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left after restart: {leftovers:?}"
    );
    assert_eq!(
        client::get(
            hub.proxy_addr,
            "/api/v1/namespaces/default/configmaps",
            KUBELET
        )
        .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&objects).map(|d| d.count()).unwrap_or(0) < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the list after the restart was not cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

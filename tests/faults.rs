//! Hostile conditions on the node itself: a cache disk that fills up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testapi::client::get;
use testapi::{pod, Cluster, Fault, Hub, TempDir, NODE};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");
const KUBELET: &str = "kubelet/v1.36.2 (linux/arm64) kubernetes/98b3519";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// A size-limited tmpfs, unmounted when dropped.
struct SmallFs {
    path: PathBuf,
    // Removed after the unmount (fields drop after `drop`).
    _dir: TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> Result<SmallFs, String> {
        let dir = TempDir::new("smallfs");
        let path = dir.path().join("cache");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallFs { path, _dir: dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_full_cache_disk_pauses_caching_while_proxying_and_offline_reads_go_on() {
    let fs = match SmallFs::mount(256 * 1024) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root): {e}");
            return;
        }
    };
    let c = Cluster::new();
    // 200 pods of about 3 KiB each: about 600 KiB, more than the disk holds.
    for i in 0..200 {
        let mut p = pod(&format!("p-{i:03}"), NODE);
        p["metadata"]["annotations"] = serde_json::json!({"note": "y".repeat(3000)});
        c.api.create(PODS, p);
    }
    let mut args = c.hub_args(&[&c.api]);
    args.retain(|a| !a.starts_with("--disk-cache-path"));
    args.push(format!("--disk-cache-path={}", fs.path.display()));
    args.push("--heartbeat-interval-seconds=1".into());
    args.push("--heartbeat-timeout-seconds=1".into());
    let hub = Hub::start(BIN, &args);

    // Proxying goes on: the whole list comes through.
    let list = get(hub.proxy_addr, PODS, KUBELET);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hub.metric("yurthub_cache_write_errors_total") < 1.0 {
        assert!(Instant::now() < deadline, "no write error counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    hub.wait_for_log("disk full, caching paused", Duration::from_secs(5));
    // And it goes on for the next request too.
    let one = get(hub.proxy_addr, &format!("{PODS}/p-199"), KUBELET);
    assert_eq!(one.status, 200);

    // Nothing half-written remains once the writer has settled (a slow machine may still be
    // in the middle of one write when the answer arrives), and what is on disk parses.
    let is_temp = |f: &PathBuf| {
        f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let mut all = Vec::new();
        files(&fs.path, &mut all);
        if !all.iter().any(is_temp) || Instant::now() >= deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        all.iter().all(|f| !f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")),
        "{all:?}"
    );
    let cached: Vec<&PathBuf> = all
        .iter()
        .filter(|f| {
            f.parent()
                .is_some_and(|d| d.ends_with("kubelet/pods.v1.core/default"))
        })
        .collect();
    assert!(
        !cached.is_empty() && cached.len() < 200,
        "{} pods cached",
        cached.len()
    );
    for f in &cached {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(v["kind"], "Pod");
    }

    // Offline, what made it to disk is still served.
    c.api.set_fault(Fault::Refuse);
    hub.wait_for_log("is now unhealthy", Duration::from_secs(10));
    let name = cached[0].file_name().unwrap().to_string_lossy().to_string();
    let r = get(hub.proxy_addr, &format!("{PODS}/{name}"), KUBELET);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], name.as_str());
}

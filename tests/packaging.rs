//! What systemd sees of the hub: the notification protocol (READY, WATCHDOG, STOPPING) over a
//! socket the test binds, and a clean exit on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testapi::{Cluster, Hub, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");

#[test]
fn the_hub_speaks_sd_notify_and_exits_cleanly_on_sigterm() {
    let c = Cluster::new();
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut hub = Hub::start_with_env(
        BIN,
        &c.hub_args(&[&c.api]),
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    while seen.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 2
        || !seen.contains(&"READY=1".to_string())
    {
        seen.push(recv());
    }
    assert_eq!(seen[0], "READY=1", "ready comes first: {seen:?}");
    hub.signal("TERM");
    loop {
        let m = recv();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert_eq!(hub.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn sigterm_during_twenty_watches_exits_zero_within_five_seconds_leaving_no_temp_files() {
    let c = Cluster::new();
    for i in 0..5 {
        c.api.create(
            "/api/v1/namespaces/default/pods",
            testapi::pod(&format!("p{i}"), testapi::NODE),
        );
    }
    let mut hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    let kubelet = "kubelet/v1.32.0 (linux/arm64)";
    let rv = c.api.resource_version();
    let watches: Vec<_> = (0..20)
        .map(|_| {
            testapi::client::watch(
                hub.proxy_addr,
                &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
                kubelet,
            )
        })
        .collect();
    // Keep the writer busy while the signal arrives.
    for i in 0..50 {
        let path = format!("/api/v1/namespaces/default/pods/p{}", i % 5);
        let mut p = c.api.get(&path).unwrap();
        p["metadata"]["labels"] = serde_json::json!({"n": i.to_string()});
        c.api.update(&path, p);
    }
    let t = std::time::Instant::now();
    hub.signal("TERM");
    assert_eq!(
        hub.wait_exit(Duration::from_secs(5)),
        Some(0),
        "exit within 5 s"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(watches);
    let mut stack = vec![c.cache.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "temporary file left: {}",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(hub.log().iter().any(|l| l.contains("stopped")));
}

#[test]
fn sigusr1_logs_a_state_dump() {
    let c = Cluster::new();
    let hub = Hub::start(BIN, &c.hub_args(&[&c.api]));
    hub.signal("USR1");
    hub.wait_for_log(
        "state: node_yurthub_server_healthy_status",
        Duration::from_secs(10),
    );
}

/// yurthub.service's ExecCondition and the package's postinst both ask
/// `yurthub-configured`: the unit starts once /etc/default/yurthub names a server, in either of
/// the hub's flag forms, and is skipped (not failed) before.
#[test]
fn the_unit_starts_once_a_server_is_named_in_either_flag_form() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("targets/systemd/yurthub.service")).unwrap();
    let condition = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecCondition="))
        .expect("the unit has an ExecCondition");
    let script = root.join("targets/systemd/yurthub-configured");
    assert_eq!(condition, "/usr/lib/yurthub/yurthub-configured");
    let postinst = std::fs::read_to_string(root.join("targets/deb/postinst")).unwrap();
    assert!(postinst.contains("/usr/lib/yurthub/yurthub-configured /etc/default/yurthub"));
    let dir = TempDir::new("defaults");
    let cases: &[(&str, bool)] = &[
        ("", false),
        ("--node-name=pi-1 --v=2", false),
        (
            "--server-addr=https://10.0.0.1:6443 --nodepool-name=edge",
            true,
        ),
        (
            "--nodepool-name=edge --server-addr https://10.0.0.1:6443",
            true,
        ),
        ("--v=2 --server-addr\t10.0.0.1", true),
        ("--server-addr= --nodepool-name=edge", false),
        ("--server-addr --nodepool-name=edge", false),
        ("--not-server-addr=x", false),
    ];
    for (args, configured) in cases {
        // As systemd runs it: the variable from the EnvironmentFile, in the environment.
        let by_env = Command::new(&script)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("YURTHUB_ARGS", args)
            .output()
            .unwrap();
        assert_eq!(by_env.status.success(), *configured, "{args:?}: {by_env:?}");
        if !configured {
            assert!(
                String::from_utf8_lossy(&by_env.stderr).contains("names no --server-addr"),
                "{by_env:?}"
            );
            assert_eq!(by_env.status.code(), Some(1), "skipped, not failed");
        }
        // As postinst reads it: the file as the operator wrote it, quotes and all.
        let file = dir.path().join("yurthub");
        std::fs::write(
            &file,
            format!("# a comment --server-addr=x\nYURTHUB_ARGS=\"{args}\"\n"),
        )
        .unwrap();
        let by_file = Command::new(&script)
            .arg(&file)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(
            by_file.status.success(),
            *configured,
            "{args:?} in a file: {by_file:?}"
        );
    }
}

/// The package promises a static binary: the test build (dynamically linked natively, or
/// for another machine under qemu) is refused, with why.
#[test]
fn the_package_refuses_a_binary_that_is_not_static_for_its_architecture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("targets/deb/build.sh"))
        .args(["amd64", BIN])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is dynamically linked") || err.contains("not amd64"),
        "{err}"
    );
}

/// Every flag of upstream YurtHub's options (the behaviour reference §1.2, older releases'
/// coordinator and leader-election flags, and klog's), as a unit or static-pod manifest written
/// for upstream passes them: the hub starts, and names each flag that has no effect here once.
const UPSTREAM: &[&str] = &[
    "--server-addr=https://10.0.0.1:6443",
    "--node-name=pi-1",
    "--nodepool-name=edge",
    "--node-ip=127.0.0.1",
    "--namespace=kube-system",
    "--working-mode=edge",
    "--host-control-plane-address=10.0.0.1:6443",
    "--bootstrap-mode=token",
    "--bootstrap-file=/nonexistent/bootstrap-hub.conf",
    "--discovery-token-unsafe-skip-ca-verification=true",
    "--hub-cert-organizations=",
    "--root-dir=/var/lib/yurthub",
    "--disk-cache-path=/etc/kubernetes/cache/",
    "--gc-frequency=120",
    "--min-request-timeout=30m",
    "--heartbeat-interval-seconds=10",
    "--heartbeat-timeout-seconds=2",
    "--heartbeat-failed-retry=3",
    "--heartbeat-healthy-threshold=2",
    "--kubelet-health-grace-period=40s",
    "--lb-mode=rr",
    "--enable-resource-filter=true",
    "--disabled-resource-filters=",
    "--enable-pool-service-topology=false",
    "--enable-node-pool=true",
    "--bind-address=127.0.0.1",
    "--serve-port=10267",
    "--bind-proxy-address=127.0.0.1",
    "--proxy-port=10261",
    "--proxy-secure-port=10268",
    "--multiplexer-port=10269",
    "--enable-dummy-if=true",
    "--dummy-if-ip=169.254.2.1",
    "--dummy-if-name=hub-dummy0",
    "--enable-iptables=false",
    "--pool-scope-resources=/v1/services,discovery.k8s.io/v1/endpointslices",
    "--profiling=true",
    "--max-requests-in-flight=250",
    "--kubeconfig=/etc/kubernetes/kubelet.conf",
    "--access-server-through-hub=true",
    "--cert-mgr-mode=hubself",
    "--enable-coordinator=false",
    "--coordinator-server-addr=https://10.0.0.2:443",
    "--coordinator-storage-prefix=/registry",
    "--coordinator-storage-addr=10.0.0.2:2379",
    "--leader-elect=false",
    "--leader-elect-lease-duration=15s",
    "--leader-elect-renew-deadline=10s",
    "--leader-elect-retry-period=2s",
    "--leader-elect-resource-lock=leases",
    "--leader-elect-resource-name=yurthub",
    "--leader-elect-resource-namespace=kube-system",
    "--v=2",
    "--vmodule=proxy=4",
    "--logtostderr",
    "--alsologtostderr=false",
    "--log_dir=/var/log",
    "--log-file=/var/log/yurthub.log",
    "--log-file-max-size=1800",
    "--log-flush-frequency=5s",
    "--skip-headers",
    "--skip-log-headers=true",
    "--add-dir-header",
    "--one-output",
    "--stderrthreshold=2",
    "--log_backtrace_at=:0",
];

/// Flags of `UPSTREAM` that do something here (the harness gives its own values for most).
const ACTED_ON: &[&str] = &[
    "server-addr",
    "node-name",
    "nodepool-name",
    "node-ip",
    "multiplexer-port",
    "namespace",
    "working-mode",
    "bootstrap-mode",
    "bootstrap-file",
    "discovery-token-unsafe-skip-ca-verification",
    "hub-cert-organizations",
    "root-dir",
    "disk-cache-path",
    "gc-frequency",
    "min-request-timeout",
    "heartbeat-interval-seconds",
    "heartbeat-timeout-seconds",
    "heartbeat-failed-retry",
    "heartbeat-healthy-threshold",
    "kubelet-health-grace-period",
    "lb-mode",
    "enable-resource-filter",
    "disabled-resource-filters",
    "pool-scope-resources",
    "bind-address",
    "serve-port",
    "bind-proxy-address",
    "proxy-port",
    "proxy-secure-port",
    "enable-dummy-if",
    "dummy-if-ip",
    "dummy-if-name",
    "v",
];

#[test]
fn a_command_line_written_for_upstream_yurthub_starts_the_hub() {
    let c = Cluster::new();
    // The harness's own values (free ports, temp dirs, no dummy link) come last and win.
    let mut args: Vec<String> = UPSTREAM.iter().map(|s| s.to_string()).collect();
    // The join flags, pinned to this cluster's CA (another CA would be a rebuilt cluster).
    args.push("--join-token=abcdef.0123456789abcdef".into());
    args.push(format!("--discovery-token-ca-cert-hash={}", c.pki.ca_pin()));
    args.extend(c.hub_args(&[&c.api]));
    let hub = Hub::start(BIN, &args);
    let said: Vec<String> = hub
        .log()
        .into_iter()
        .filter(|l| l.contains(": accepted for upstream YurtHub's command line, no effect here: "))
        .collect();
    let inert: Vec<String> = UPSTREAM
        .iter()
        .map(|f| {
            let name = f.trim_start_matches('-').split('=').next().unwrap();
            name.replace('_', "-")
        })
        .filter(|n| !ACTED_ON.contains(&n.as_str()))
        .collect();
    for name in &inert {
        let needle = format!("--{name}: accepted");
        assert_eq!(
            said.iter().filter(|l| l.contains(&needle)).count(),
            1,
            "{name}: {said:#?}"
        );
    }
    assert_eq!(said.len(), inert.len(), "{said:#?}");
}

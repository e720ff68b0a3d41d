//! Kubernetes' hollow node (kubemark): the real kubelet or kube-proxy code with a fake
//! container runtime, speaking protobuf to whatever server its kubeconfig names, logging every
//! request it makes (`--v=6`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, process, Assets};
use crate::TempDir;

/// The version the hollow binaries report, for their User-Agent.
const UA_SUFFIX: &str = "/v1.36.2 (linux/amd64) kubernetes/98b3519";

/// A running hollow kubelet or kube-proxy; killed when dropped.
pub struct Hollow {
    child: Child,
    dir: TempDir,
    log: PathBuf,
    /// `--kubelet-read-only-port` (kubelet only): `GET /pods` lists the pods it runs.
    pub read_only_port: u16,
}

impl Hollow {
    /// Starts `kubemark --morph=<morph>` (`kubelet` or `proxy`) as node `node`, talking to
    /// `server` (e.g. a hub's plain port) without credentials. `None` when kubemark is absent.
    pub fn start(assets: &Assets, morph: &str, node: &str, server: &str) -> Option<Hollow> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: hub\n  cluster:\n    server: {server}\nusers:\n- name: node\n  user: {{}}\ncontexts:\n- name: hub\n  context:\n    cluster: hub\n    user: node\ncurrent-context: hub\n"
        );
        Self::start_with(assets, morph, node, &kubeconfig)
    }

    /// Starts it with the kubeconfig `kubeconfig` (its text): another server, credentials.
    pub fn start_with(
        assets: &Assets,
        morph: &str,
        node: &str,
        kubeconfig: &str,
    ) -> Option<Hollow> {
        if !assets.has("kubemark") {
            return None;
        }
        let dir = TempDir::new(&format!("hollow-{morph}"));
        let text = kubeconfig;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, text).expect("write the hollow node's kubeconfig");
        let log = dir.path().join(format!("{morph}.log"));
        let read_only_port = free_port();
        let mut cmd = Command::new(assets.path("kubemark"));
        cmd.arg(format!("--morph={morph}"))
            .arg(format!("--name={node}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--v=6")
            .env(
                "KM_UA",
                format!(
                    "{}{UA_SUFFIX}",
                    if morph == "proxy" {
                        "kube-proxy"
                    } else {
                        "kubelet"
                    }
                ),
            );
        if morph == "kubelet" {
            cmd.arg(format!("--kubelet-port={}", free_port()))
                .arg(format!("--kubelet-read-only-port={read_only_port}"))
                .arg("--use-host-image-service=false");
        }
        let out = std::fs::File::create(&log).expect("hollow log");
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("hollow log"))
            .stderr(out);
        let child = process::spawn(cmd).expect("start kubemark");
        Some(Hollow {
            child,
            dir,
            log,
            read_only_port,
        })
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines logged after byte `from` of the log (see [`Hollow::log_len`]).
    pub fn log_since(&self, from: usize) -> String {
        let all = self.log();
        all.get(from..).unwrap_or("").to_string()
    }

    /// How many bytes it has logged (a mark for [`Hollow::log_since`]).
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// Waits for a log line containing `needle`; panics with the log's tail after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            let exited = !self.is_running();
            if exited || Instant::now() >= deadline {
                let lines: Vec<&str> = log.lines().collect();
                panic!(
                    "hollow node {} {needle:?}; log tail:\n{}",
                    if exited {
                        "exited before logging"
                    } else {
                        "never logged"
                    },
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The requests it made (`verb`, URL path with query, status code) from its `--v=6`
    /// response lines, after byte `from` of the log.
    pub fn responses_since(&self, from: usize) -> Vec<(String, String, u16)> {
        let field = |line: &str, name: &str| -> Option<String> {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')?;
            Some(line[start..start + end].to_string())
        };
        self.log_since(from)
            .lines()
            .filter(|l| l.contains("\"Response\""))
            .filter_map(|l| {
                let verb = field(l, "verb")?;
                let url = field(l, "url")?;
                let path = url
                    .splitn(4, '/')
                    .nth(3)
                    .map(|p| format!("/{p}"))
                    .unwrap_or(url);
                let status = field(l, "status")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((verb, path, status))
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The directory of its files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        process::kill(&mut self.child);
        // kubemark puts its root dir and runtime socket under /tmp whatever TMPDIR says;
        // its log names both.
        let log = self.log();
        let after = |marker: &str| -> Option<String> {
            let line = log.lines().find(|l| l.contains(marker))?;
            let start = line.find("/tmp/")?;
            let path: String = line[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\\')
                .collect();
            Some(path)
        };
        if let Some(root) = after("as root dir for hollow-kubelet") {
            if root.starts_with("/tmp/hollow-kubelet.") {
                let _ = std::fs::remove_dir_all(root);
            }
        }
        if let Some(sock) = after("Connecting to runtime service") {
            if sock.starts_with("/tmp/kubelet_remote_") {
                let _ = std::fs::remove_file(sock);
            }
        }
    }
}

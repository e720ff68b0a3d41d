//! Running the real `yurthub` binary from tests, also under an emulator (`YURTHUB_TEST_RUNNER`,
//! e.g. `qemu-aarch64`, because an emulated test cannot exec an ARM child directly).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, ...); 0 when unreadable. Under
/// an emulator the figure is the emulator's.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident set of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The anonymous part of the resident set (heap, stacks), KiB.
pub fn rss_anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon")
}

/// Runs `bin cache <args> --disk-cache-path=<dir>`: the exit status and stdout+stderr.
pub fn cache_cli(bin: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = command(bin)
        .arg("cache")
        .args(args)
        .arg(format!("--disk-cache-path={}", dir.display()))
        .output()
        .expect("run yurthub cache");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "yurthub-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command that runs `bin`, prefixed by `YURTHUB_TEST_RUNNER` when set.
pub fn command(bin: &str) -> Command {
    match std::env::var("YURTHUB_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().expect("non-empty runner"));
            c.args(parts).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running hub process; killed when dropped.
pub struct Hub {
    child: Child,
    lines: Lines,
    /// The plain proxy address it reported.
    pub proxy_addr: SocketAddr,
    /// The admin server address it reported.
    pub admin_addr: SocketAddr,
}

impl Hub {
    /// Starts `bin` with `args` and waits until it reports its proxy address.
    pub fn start(bin: &str, args: &[String]) -> Hub {
        Self::start_with_env(bin, args, &[])
    }

    /// Like [`Hub::start`], with extra environment variables.
    pub fn start_with_env(bin: &str, args: &[String], env: &[(&str, &str)]) -> Hub {
        let hub = Self::spawn(bin, args, env);
        hub.wait_ready(Duration::from_secs(30));
        hub
    }

    /// Starts the hub and waits for its listeners, not for readiness.
    pub fn spawn(bin: &str, args: &[String], env: &[(&str, &str)]) -> Hub {
        Self::spawn_in(&[], bin, args, env)
    }

    /// Like [`Hub::spawn`], with the command run by `prefix` (e.g. `ip netns exec <name>`).
    pub fn spawn_in(prefix: &[&str], bin: &str, args: &[String], env: &[(&str, &str)]) -> Hub {
        let inner = command(bin);
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(inner.get_program()).args(inner.get_args());
                c
            }
            None => inner,
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn yurthub");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines: Lines = Arc::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("YURTHUB_TEST_LOG").is_some() {
                    eprintln!("hub: {line}");
                }
                l.0.lock().unwrap().push(line);
                l.1.notify_all();
            }
            l.0.lock().unwrap().push("<exited>".into());
            l.1.notify_all();
        });
        let mut hub = Hub {
            child,
            lines,
            proxy_addr: "0.0.0.0:0".parse().unwrap(),
            admin_addr: "0.0.0.0:0".parse().unwrap(),
        };
        let addr_after = |hub: &Hub, what: &str| -> SocketAddr {
            let line = hub.wait_for_log(what, Duration::from_secs(30));
            line.split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
        };
        hub.admin_addr = addr_after(&hub, "serving admin on http://");
        hub.proxy_addr = addr_after(&hub, "serving proxy on http://");
        hub
    }

    /// The TLS proxy's address, once the hub has reported it.
    pub fn secure_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("serving TLS proxy on https://", Duration::from_secs(30));
        line.split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Waits until `/v1/readyz` answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = crate::client::request(self.admin_addr, "GET", "/v1/readyz", &[], b"") {
                if r.status == 200 {
                    return;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "hub not ready: {}\nlog:\n{}",
                        r.text(),
                        self.log().join("\n")
                    );
                }
            }
            assert!(Instant::now() < deadline, "admin server never answered");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a log line containing `needle`; panics with the log on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline || lines.last().is_some_and(|l| l == "<exited>") {
                panic!("hub never logged {needle:?}; log:\n{}", lines.join("\n"));
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// The value of a one-sample metric on the admin port (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        crate::client::get(self.admin_addr, "/metrics", "curl/8")
            .text()
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `USR1`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or `None` if it runs on.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.stop();
    }

    /// Kills the process with SIGKILL and reaps it, keeping the handle (its log stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Child processes that never outlive the test binary: every one is started from one thread
//! that lives as long as the process, with `PR_SET_PDEATHSIG` (the kernel kills the child when
//! that thread, hence the test binary, goes away, however it ends), and is also killed by an
//! `atexit` handler on a normal exit, before the temp directories are removed.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Request = (Command, Sender<std::io::Result<Child>>);

/// The pids still running and the directories to remove at exit.
#[derive(Default)]
struct Registry {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});
static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

extern "C" fn at_exit() {
    let reg = match REGISTRY.try_lock() {
        Ok(r) => r,
        // A thread died holding it; its contents are still the best list there is.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for &pid in &reg.pids {
        // SAFETY: kill(2) with a pid this module spawned and a valid signal number has no
        // memory effects; a pid that already exited (and was reaped) yields ESRCH at worst.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    for d in &reg.dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn spawner() -> &'static Mutex<Sender<Request>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("envtest-spawner".into())
            .spawn(move || {
                // This thread never returns while the process lives (it owns `rx` and the
                // sender stays in the static), so the death signal fires only at exit.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd));
                }
            })
            .expect("spawn the envtest spawner thread");
        // SAFETY: `at_exit` is an `extern "C" fn()` with no arguments that never unwinds
        // (it only locks without blocking, sends signals and removes files).
        unsafe {
            libc::atexit(at_exit);
        }
        Mutex::new(tx)
    })
}

fn spawn_here(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe, allocates nothing and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pids
        .push(child.id());
    Ok(child)
}

/// Starts `cmd` as a child that dies with the test binary.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the envtest spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the envtest spawner thread is gone"))?
}

/// Kills `child` (SIGKILL) and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    let pid = child.id();
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pids
        .retain(|&p| p != pid);
}

/// Removes `dir` when the test binary exits.
pub fn remove_at_exit(dir: PathBuf) {
    spawner();
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .dirs
        .push(dir);
}

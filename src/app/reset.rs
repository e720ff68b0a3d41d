//! What the hub keeps on a node, and the two ways it is put away: moved aside when the node's
//! cluster was rebuilt ([`HubFiles::move_aside`], at start-up), and removed by
//! `yurthub reset` (what `yurtadm reset` does for the hub).
//!
//! ```text
//! yurthub reset [--force] [the hub's own flags: --root-dir, --disk-cache-path,
//!               --bootstrap-file, --dummy-if-name, --enable-dummy-if, …]
//! ```
//!
//! `reset` removes `--root-dir`'s certificates and kubeconfigs, the identity copies an
//! earlier rebuild moved aside, the cache's contents (with what a rebuild moved into its
//! quarantine), and the dummy link; it asks first unless `--force` is given. It holds the
//! hub's locks while it works, so it refuses while a hub runs on the same directories and no
//! hub can start under it. It accepts every flag the hub takes, so the hub's own command line
//! (`yurthub reset $YURTHUB_ARGS`) names the same directories.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::config::{read_flags, Config, FlagError};
use super::flags;
use super::lock::{DirLock, LockError, LOCK_FILE};
use crate::cache::store::{INTERNAL_DIR, QUARANTINE_DIR};
use crate::certs::rebuilt::Evidence;
use crate::network::DummyIf;

/// What a hub keeps on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubFiles {
    /// `--root-dir`: `pki/`, `yurthub.conf` and, by default, the bootstrap kubeconfig.
    pub root_dir: PathBuf,
    /// The bootstrap kubeconfig.
    pub bootstrap_file: PathBuf,
    /// `--disk-cache-path`.
    pub cache_dir: PathBuf,
    /// The dummy link, when the hub makes one.
    pub dummy_if: Option<String>,
}

/// The suffix of an identity file moved aside, before its time stamp.
const STALE: &str = ".stale-";

/// Why `yurthub reset` stopped.
#[derive(Debug)]
pub enum ResetError {
    /// A flag could not be accepted.
    Flag(FlagError),
    /// A hub runs on these directories.
    Running(LockError),
    /// The operator did not confirm.
    NotConfirmed,
    /// Some paths could not be removed (each was reported as it failed).
    Incomplete(usize),
    /// The output could not be written, or the answer read.
    Terminal(std::io::Error),
}

impl fmt::Display for ResetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(e) => write!(f, "{e}"),
            Self::Running(e) => write!(f, "{e}: stop it first (systemctl stop yurthub)"),
            Self::NotConfirmed => write!(f, "nothing removed"),
            Self::Incomplete(n) => write!(f, "{n} paths could not be removed"),
            Self::Terminal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ResetError {}

/// The `<name>.stale-<time>` path next to `path` that is free.
fn aside_path(path: &Path, stamp: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = path.with_file_name(format!("{name}{STALE}{stamp}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        candidate = PathBuf::from(format!("{}.{n}", base.display()));
        n += 1;
    }
    candidate
}

/// The siblings of `path` that an earlier [`HubFiles::move_aside`] made.
fn stale_copies(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}{STALE}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The entries of `dir` but `except`.
fn entries_but(dir: &Path, except: &[&str]) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| !except.iter().any(|x| n == *x))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `path`: a directory with all it holds, anything else (a symlink too) by itself.
fn remove(path: &Path) -> std::io::Result<()> {
    let is_dir = path.symlink_metadata()?.is_dir();
    if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

impl HubFiles {
    /// What the hub with `config` keeps.
    pub fn of(config: &Config) -> HubFiles {
        HubFiles {
            root_dir: config.root_dir.clone(),
            bootstrap_file: config.bootstrap_file(),
            cache_dir: config.disk_cache_path.clone(),
            dummy_if: config.enable_dummy_if.then(|| config.dummy_if_name.clone()),
        }
    }

    /// What a hub with these flags keeps, and whether `--force` was given: `yurthub reset`
    /// takes every flag the hub takes (so the hub's own command line names the same
    /// directories) and reads only those that name files and the link.
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
    ) -> Result<(HubFiles, bool), FlagError> {
        let mut force = false;
        let mut rest = Vec::new();
        for a in args {
            match a.as_str() {
                "--force" | "-force" | "--force=true" | "-f" => force = true,
                "--force=false" => force = false,
                _ => rest.push(a),
            }
        }
        let v = read_flags(rest)?;
        let root_dir = flags::path(&v, "root-dir")?;
        let files = HubFiles {
            bootstrap_file: flags::optional_path(&v, "bootstrap-file")?
                .unwrap_or_else(|| root_dir.join("bootstrap-hub.conf")),
            cache_dir: flags::path(&v, "disk-cache-path")?,
            dummy_if: if flags::boolean(&v, "enable-dummy-if")? {
                Some(flags::interface(&v, "dummy-if-name")?)
            } else {
                None
            },
            root_dir,
        };
        Ok((files, force))
    }

    /// The cache directory, without a trailing slash.
    fn cache(&self) -> PathBuf {
        self.cache_dir.components().collect()
    }

    /// The directory whose lock file says the cache is in use.
    pub fn cache_lock_dir(&self) -> PathBuf {
        self.cache().join(INTERNAL_DIR)
    }

    /// The identity's files under the root directory.
    fn identity(&self) -> [PathBuf; 2] {
        [
            self.root_dir.join("pki"),
            self.root_dir.join("yurthub.conf"),
        ]
    }

    /// Whether the cache directory is a hub's: one that a hub has locked (every hub takes
    /// `_internal/yurthub.lock`), neither `/` nor a directory holding the root directory, so
    /// that a mistyped `--disk-cache-path` never has `reset` empty an unrelated directory.
    fn cache_is_a_hubs(&self) -> bool {
        let cache = match self.cache().canonicalize() {
            Ok(c) => c,
            Err(_) => return false,
        };
        let root = self
            .root_dir
            .canonicalize()
            .unwrap_or_else(|_| self.root_dir.clone());
        cache.parent().is_some()
            && !root.starts_with(&cache)
            && cache.join(INTERNAL_DIR).join(LOCK_FILE).is_file()
    }

    /// Moves the old identity, the cache's contents (when `with_cache`) and the bootstrap
    /// kubeconfig (when `with_bootstrap`, i.e. it names the old cluster's CA) aside; nothing
    /// is deleted. The identity's files go to `<name>.stale-<time>` beside each; the cache's
    /// contents to `<cache>/_quarantine/rebuilt-<time>/`, inside the cache directory, because
    /// under the systemd unit only the cache directory itself is writable (it is a mount
    /// point that cannot be renamed); the hub never serves or counts what is in quarantine,
    /// and the lock the caller holds stays where it is. When the identity cannot be moved,
    /// nothing else is: the hub goes on as before rather than throw away a cache it keeps
    /// serving. Logs one line with what moved where and why.
    pub fn move_aside(&self, why: &Evidence, with_bootstrap: bool, with_cache: bool) {
        let stamp = crate::kube::time::rfc3339(std::time::SystemTime::now());
        let mut moved = Vec::new();
        let mut failed = Vec::new();
        let mut rename = |from: PathBuf, to: PathBuf, failed: &mut Vec<String>| {
            match std::fs::rename(&from, &to) {
                Ok(()) => moved.push(format!("{} -> {}", from.display(), to.display())),
                Err(e) => failed.push(format!("{}: {e}", from.display())),
            }
        };
        for p in self.identity() {
            if p.symlink_metadata().is_ok() {
                let to = aside_path(&p, &stamp);
                rename(p, to, &mut failed);
            }
        }
        let identity_moved = failed.is_empty();
        if identity_moved && with_bootstrap && self.bootstrap_file.exists() {
            rename(
                self.bootstrap_file.clone(),
                aside_path(&self.bootstrap_file, &stamp),
                &mut failed,
            );
        }
        if identity_moved && with_cache {
            let cache = self.cache();
            let to = cache.join(QUARANTINE_DIR).join(format!("rebuilt-{stamp}"));
            let top = entries_but(&cache, &[QUARANTINE_DIR, INTERNAL_DIR]);
            let internal = entries_but(&cache.join(INTERNAL_DIR), &[LOCK_FILE]);
            if !top.is_empty() || !internal.is_empty() {
                match std::fs::create_dir_all(to.join(INTERNAL_DIR)) {
                    Ok(()) => {
                        for n in top {
                            rename(cache.join(&n), to.join(&n), &mut failed);
                        }
                        for n in internal {
                            rename(
                                cache.join(INTERNAL_DIR).join(&n),
                                to.join(INTERNAL_DIR).join(&n),
                                &mut failed,
                            );
                        }
                    }
                    Err(e) => failed.push(format!("{}: {e}", to.display())),
                }
            }
        }
        let outcome = if !identity_moved {
            format!(
                "could not move {}: nothing else moved, the old identity stays",
                failed.join(", ")
            )
        } else if failed.is_empty() {
            format!(
                "moved aside {}; bootstrapping afresh (yurthub reset removes the old copies)",
                moved.join(", ")
            )
        } else {
            format!(
                "moved aside {}, could not move {}; bootstrapping afresh",
                moved.join(", "),
                failed.join(", ")
            )
        };
        log::warn!("identity: this node's cluster was rebuilt ({why}): {outcome}");
    }

    /// What `reset` would remove, existing paths only, and what it leaves alone and why.
    fn removable(&self) -> (Vec<PathBuf>, Vec<String>) {
        let mut paths = Vec::new();
        let mut skipped = Vec::new();
        let mut add = |p: PathBuf| {
            if p.symlink_metadata().is_ok() && !paths.contains(&p) {
                paths.push(p);
            }
        };
        for p in self.identity() {
            add(p.clone());
            stale_copies(&p).into_iter().for_each(&mut add);
        }
        add(self.bootstrap_file.clone());
        stale_copies(&self.bootstrap_file)
            .into_iter()
            .for_each(&mut add);
        let cache = self.cache();
        if self.cache_is_a_hubs() {
            // Its contents: the directory itself may be a mount point (the systemd unit's),
            // and the lock goes last, by the lock's holder.
            for n in entries_but(&cache, &[INTERNAL_DIR]) {
                add(cache.join(n));
            }
            for n in entries_but(&cache.join(INTERNAL_DIR), &[LOCK_FILE]) {
                add(cache.join(INTERNAL_DIR).join(n));
            }
        } else if !entries_but(&cache, &[]).is_empty() {
            skipped.push(format!(
                "{} is not a yurthub cache (no {INTERNAL_DIR}/{LOCK_FILE}, or it holds {}): left alone",
                cache.display(),
                self.root_dir.display()
            ));
        }
        (paths, skipped)
    }

    /// The dummy link to remove, if there is one; what stands in the way is written to `out`.
    fn link(&self, out: &mut dyn Write) -> std::io::Result<Option<String>> {
        let Some(name) = &self.dummy_if else {
            return Ok(None);
        };
        match DummyIf::kind_of(name) {
            Ok(Some(kind)) if kind == "dummy" => Ok(Some(name.clone())),
            Ok(Some(kind)) => {
                let kind = if kind.is_empty() { "physical" } else { &kind };
                writeln!(
                    out,
                    "{name} is a {kind} link, not a dummy one: left alone (check --dummy-if-name)"
                )?;
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => {
                writeln!(out, "dummy link {name}: {e}")?;
                Ok(None)
            }
        }
    }

    /// `yurthub reset`: see the module documentation.
    pub fn reset(
        &self,
        force: bool,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
    ) -> Result<(), ResetError> {
        let term = ResetError::Terminal;
        // Held to the end: a hub started meanwhile stops at them.
        let mut locks = Vec::new();
        for dir in [self.root_dir.clone(), self.cache_lock_dir()] {
            if dir.join(LOCK_FILE).exists() {
                locks.push(DirLock::acquire(&dir).map_err(ResetError::Running)?);
            }
        }
        let (paths, skipped) = self.removable();
        for s in &skipped {
            writeln!(out, "{s}").map_err(term)?;
        }
        let link = self.link(out).map_err(term)?;
        if paths.is_empty() && link.is_none() {
            writeln!(out, "nothing to reset").map_err(term)?;
            return Ok(());
        }
        writeln!(out, "yurthub reset removes:").map_err(term)?;
        for p in &paths {
            writeln!(out, "  {}", p.display()).map_err(term)?;
        }
        if let Some(l) = &link {
            writeln!(out, "  the dummy link {l}").map_err(term)?;
        }
        if !force {
            write!(out, "Remove them? [y/N] ").map_err(term)?;
            out.flush().map_err(term)?;
            let mut answer = String::new();
            input.read_line(&mut answer).map_err(term)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                return Err(ResetError::NotConfirmed);
            }
        }
        let mut failed = 0;
        for p in &paths {
            match remove(p) {
                Ok(()) => writeln!(out, "removed {}", p.display()).map_err(term)?,
                Err(e) => {
                    failed += 1;
                    writeln!(out, "could not remove {}: {e}", p.display()).map_err(term)?;
                }
            }
        }
        if let Some(l) = link {
            match DummyIf::new(&l, std::net::Ipv4Addr::UNSPECIFIED.into()).remove_link() {
                Ok(()) => writeln!(out, "removed the dummy link {l}").map_err(term)?,
                Err(e) => {
                    failed += 1;
                    writeln!(out, "could not remove the dummy link {l}: {e}").map_err(term)?;
                }
            }
        }
        // The cache's lock file goes with its holder's last act; the root directory's stays
        // (removing a held lock file would let a new hub lock a new one beside it).
        let cache_lock = self.cache_lock_dir().join(LOCK_FILE);
        if paths.iter().any(|p| p.starts_with(self.cache())) && cache_lock.exists() {
            let _ = std::fs::remove_file(&cache_lock);
            let _ = std::fs::remove_dir(self.cache_lock_dir());
        }
        drop(locks);
        if failed > 0 {
            return Err(ResetError::Incomplete(failed));
        }
        Ok(())
    }
}

/// `yurthub reset [flags]`: the exit status (0 done or nothing to do, 1 refused or failed,
/// 2 bad flags).
pub fn main(
    args: impl IntoIterator<Item = String>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (files, force) = match HubFiles::from_args(args) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(err, "yurthub reset: {}", ResetError::Flag(e));
            return 2;
        }
    };
    match files.reset(force, input, out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "yurthub reset: {e}");
            1
        }
    }
}

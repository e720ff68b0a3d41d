//! What the hub keeps on a node, and the two ways it is put away: moved aside when the node's
//! cluster was rebuilt ([`HubFiles::move_aside`], at start-up), and removed by
//! `yurthub reset` (what `yurtadm reset` does for the hub).
//!
//! ```text
//! yurthub reset [--force] [the hub's own flags: --root-dir, --disk-cache-path,
//!               --bootstrap-file, --dummy-if-name, --enable-dummy-if, …]
//! ```
//!
//! `reset` removes `--root-dir`'s certificates and kubeconfigs, the cache (with what an
//! earlier rebuild moved into its quarantine), the copies of the identity an earlier rebuild
//! moved aside, and the dummy link; it asks first unless `--force` is given,
//! and refuses while a hub runs on the same directories. It accepts every flag the hub
//! takes, so the hub's own command line (`yurthub reset $YURTHUB_ARGS`) names the same
//! directories.

use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::config::{Config, FlagError};
use super::lock::{DirLock, LockError, LOCK_FILE};
use crate::cache::store::{INTERNAL_DIR, QUARANTINE_DIR};
use crate::cache::BUILTIN_AGENTS;
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

/// The suffix of a copy moved aside, before its time stamp.
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

/// Whether `dir` looks like a hub's cache (so that a mistyped `--disk-cache-path` never
/// has `reset` empty an unrelated directory): its internal directory or a built-in agent's.
fn is_cache(dir: &Path) -> bool {
    dir.parent().is_some()
        && [INTERNAL_DIR, QUARANTINE_DIR]
            .iter()
            .chain(BUILTIN_AGENTS)
            .any(|d| dir.join(d).is_dir())
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

impl HubFiles {
    /// The cache directory, without a trailing slash (its name is needed to move it).
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

    /// Moves the old identity, the cache and (when `with_bootstrap`, i.e. it names the old
    /// cluster's CA) the bootstrap kubeconfig aside; nothing is deleted. The identity's files
    /// go to `<name>.stale-<time>` beside each; the cache's contents to
    /// `<cache>/_quarantine/rebuilt-<time>/`, inside the cache directory, because under the
    /// systemd unit only the cache directory itself is writable (and it is a mount point that
    /// cannot be renamed); the hub never serves or counts what is in quarantine. Logs one line
    /// with what moved where and why, naming what could not be moved; the hub bootstraps
    /// afresh either way.
    pub fn move_aside(&self, why: &Evidence, with_bootstrap: bool) {
        let stamp = crate::kube::time::rfc3339(std::time::SystemTime::now());
        let mut paths = self.identity().to_vec();
        if with_bootstrap {
            paths.push(self.bootstrap_file.clone());
        }
        let mut moved = Vec::new();
        let mut failed = Vec::new();
        for p in paths {
            if p.symlink_metadata().is_err() {
                continue;
            }
            let to = aside_path(&p, &stamp);
            match std::fs::rename(&p, &to) {
                Ok(()) => moved.push(format!("{} -> {}", p.display(), to.display())),
                Err(e) => failed.push(format!("{}: {e}", p.display())),
            }
        }
        let cache = self.cache();
        let to = cache.join(QUARANTINE_DIR).join(format!("rebuilt-{stamp}"));
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|n| n != QUARANTINE_DIR)
            .collect();
        if !entries.is_empty() {
            match std::fs::create_dir_all(&to) {
                Ok(()) => {
                    let mut all = true;
                    for name in entries {
                        if let Err(e) = std::fs::rename(cache.join(&name), to.join(&name)) {
                            all = false;
                            failed.push(format!("{}: {e}", cache.join(&name).display()));
                        }
                    }
                    if all {
                        moved.push(format!("the cache {} -> {}", cache.display(), to.display()));
                    }
                }
                Err(e) => failed.push(format!("{}: {e}", to.display())),
            }
        }
        let failed = if failed.is_empty() {
            String::new()
        } else {
            format!("; could not move {}", failed.join(", "))
        };
        log::warn!(
            "identity: this node's cluster was rebuilt ({why}): moved aside {}{failed}; bootstrapping afresh (yurthub reset removes the old copies)",
            moved.join(", ")
        );
    }

    /// What `reset` would remove, existing paths only.
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
        add(self.root_dir.join(LOCK_FILE));
        let cache = self.cache();
        if is_cache(&cache) {
            add(cache.clone());
        } else if cache.exists() {
            skipped.push(format!(
                "{} is not a yurthub cache (no {INTERNAL_DIR}/, {QUARANTINE_DIR}/ nor an agent's directory): left alone",
                cache.display()
            ));
        }
        (paths, skipped)
    }

    /// `yurthub reset`: see the module documentation.
    pub fn reset(
        &self,
        force: bool,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
    ) -> Result<(), ResetError> {
        let term = ResetError::Terminal;
        DirLock::check(&self.root_dir).map_err(ResetError::Running)?;
        DirLock::check(&self.cache_lock_dir()).map_err(ResetError::Running)?;
        let (paths, skipped) = self.removable();
        for s in &skipped {
            writeln!(out, "{s}").map_err(term)?;
        }
        let link = match &self.dummy_if {
            Some(name) => match DummyIf::exists(name) {
                Ok(true) => Some(name.clone()),
                Ok(false) => None,
                Err(e) => {
                    writeln!(out, "dummy link {name}: {e}").map_err(term)?;
                    None
                }
            },
            None => None,
        };
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
            let result = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            match result {
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
    let (files, force) = match Config::reset_args(args) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(err, "yurthub reset: {e}");
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

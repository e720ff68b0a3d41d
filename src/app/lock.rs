//! One hub per set of directories: a running hub holds an advisory lock on a file in its
//! root directory and in its cache directory, so that a second hub (whose writer would tear
//! the first one's files) and `yurthub reset` (which would pull the files from under it)
//! both refuse with the first hub's pid. The kernel drops the lock when the process dies,
//! however it dies, so a stale lock file never blocks anyone.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The lock file's name in each directory.
pub const LOCK_FILE: &str = "yurthub.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why a directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Held { dir, pid } => {
                write!(f, "a yurthub")?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(f, " is running on {}", dir.display())
            }
            Self::Io { path, error } => {
                write!(f, "locking {}: {error}", path.display())?;
                if error.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
                    // yurthub.service's ProtectSystem=strict: only its ReadWritePaths= are
                    // writable, and a --root-dir or --disk-cache-path elsewhere is not among them.
                    write!(
                        f,
                        " (under systemd, add it to the unit's ReadWritePaths=: systemctl edit yurthub, then [Service] ReadWritePaths={})",
                        path.parent().unwrap_or(path).display()
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LockError {}

impl DirLock {
    /// Locks `dir` (created if missing) for this process and writes its pid in the lock file.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        // 0700 like the cache's and the certificates' own directories: a lock taken before
        // they exist must not leave them listable by everyone.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // flock(2) on Linux: the lock belongs to the open file and dies with the process.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["pid"].as_u64())
                        .and_then(|p| u32::try_from(p).ok()),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Only the holder writes: the pid is for the message another process prints. JSON,
        // as every file in the cache directory is (the cache's recovery quarantines the rest).
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{{\"pid\":{}}}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_directory_names_the_units_read_write_paths() {
        // EROFS, as ProtectSystem=strict makes a directory outside ReadWritePaths=.
        let e = LockError::Io {
            path: PathBuf::from("/srv/hub/yurthub.lock"),
            error: std::io::Error::from_raw_os_error(30),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("locking /srv/hub/yurthub.lock: Read-only file system")
                && text.ends_with("[Service] ReadWritePaths=/srv/hub)"),
            "{text}"
        );
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("yurthub-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = DirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file: a second open in the same process conflicts
        // as another process's would.
        let e = DirLock::acquire(&dir).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "a yurthub (pid {}) is running on {}",
                std::process::id(),
                dir.display()
            )
        );
        drop(held);
        DirLock::acquire(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

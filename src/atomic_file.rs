//! Files replaced whole or not at all, and durably: the one way the hub writes a file it must
//! find intact after a power cut (cached objects, views, certificates, kubeconfigs).
//!
//! The bytes go to a temporary file in the same directory, which is fsynced, renamed over the
//! target, and the directory is fsynced so that the rename itself survives. A reader sees the
//! old file or the new one, never a part; an interrupted write leaves a temporary file whose
//! name [`is_temp`] recognises, which readers skip and sweeps remove.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("atomic-file-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("ca.crt");
//! yurthub::atomic_file::replace(&path, &[b"-----BEGIN ", b"CERTIFICATE-----\n"], 0o644).unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"-----BEGIN CERTIFICATE-----\n");
//! assert!(!yurthub::atomic_file::is_temp(&path));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The name prefix of temporary files; no cached name can start so (names never start with `.`).
const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A write that did not complete.
#[derive(Debug)]
pub struct Error {
    /// The file the step failed on (the temporary file, the target or its directory).
    pub path: PathBuf,
    /// What the system said.
    pub error: io::Error,
    /// The new bytes are in place (only the directory's fsync failed): readers see them now,
    /// but a power cut may still bring the old file back.
    pub in_place: bool,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |error| Error {
        path: path.to_path_buf(),
        error,
        in_place: false,
    }
}

/// Whether `path` names the temporary file of a write under way or interrupted.
pub fn is_temp(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes()))
}

/// A fresh temporary name beside `path`: short and unique whatever the target's name (object
/// names may be 253 bytes long), so that two writers never share one.
fn temp_beside(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Fsyncs a directory, so that the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Replaces `path` with the concatenation of `parts`, created with `mode` permissions. The
/// directory must exist.
pub fn replace(path: &Path, parts: &[&[u8]], mode: u32) -> Result<(), Error> {
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(at(&tmp))?;
        for part in parts {
            f.write_all(part).map_err(at(&tmp))?;
        }
        f.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(|e| Error {
        in_place: true,
        ..e
    })
}

/// Points the symbolic link `path` at `target`, replacing whatever `path` was.
pub fn symlink(target: &Path, path: &Path) -> Result<(), Error> {
    let tmp = temp_beside(path);
    std::os::unix::fs::symlink(target, &tmp).map_err(at(&tmp))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(at(path)(e));
    }
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(|e| Error {
        in_place: true,
        ..e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("yurthub-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_replaced_file_has_the_new_bytes_and_mode_and_no_temporary_is_left() {
        let d = dir("replace");
        let p = d.join("kubelet.conf");
        fs::write(&p, b"old").unwrap();
        replace(&p, &[b"new ", b"bytes"], 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new bytes");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(&d), vec!["kubelet.conf"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let d = dir("fail");
        let p = d.join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"x").unwrap();
        // A non-empty directory cannot be renamed over.
        let e = replace(&p, &[b"bytes"], 0o600).unwrap_err();
        assert!(!e.in_place);
        assert!(e.to_string().contains("target"), "{e}");
        assert_eq!(names(&d), vec!["target"]);
        let e = replace(&d.join("missing/dir/file"), &[b"x"], 0o600).unwrap_err();
        assert_eq!(e.error.kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_link_is_replaced_in_one_step() {
        let d = dir("link");
        let link = d.join("current.pem");
        symlink(Path::new("a.pem"), &link).unwrap();
        symlink(Path::new("b.pem"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("b.pem"));
        assert_eq!(names(&d), vec!["current.pem"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temporary_names_are_recognised() {
        let d = dir("temp");
        let t = temp_beside(&d.join("x"));
        assert!(is_temp(&t));
        assert!(!is_temp(&d.join("tmp-1")));
        assert!(!is_temp(&d.join("app.tmp-1")));
        fs::remove_dir_all(&d).unwrap();
    }
}

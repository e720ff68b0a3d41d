//! Certificate files as client-go's file store lays them out: `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem`
//! (chain and key, 0600) and the symlink `<prefix>-current.pem` switched atomically.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::x509::Certificate;
use crate::atomic_file;
use crate::upstream::read_identity;

/// A certificate with its key, as loaded from a PEM file.
pub struct Loaded {
    /// What the hub reads from the leaf certificate.
    pub info: Certificate,
    /// The chain.
    pub certs: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
    /// The file the link resolved to and its modification time, to notice a replacement.
    pub stamp: Stamp,
}

/// Which file a path resolved to, and when it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(PathBuf, Option<SystemTime>);

/// The stamp of `path` now (`None` when it does not exist).
pub fn stamp(path: &Path) -> Option<Stamp> {
    let target = std::fs::canonicalize(path).ok()?;
    let modified = std::fs::metadata(&target).and_then(|m| m.modified()).ok();
    Some(Stamp(target, modified))
}

/// Why a certificate file is unusable.
#[derive(Debug)]
pub enum LoadError {
    /// There is no such file.
    Missing(PathBuf),
    /// Its PEM holds no usable chain and key.
    Identity(crate::upstream::TlsError),
    /// Its certificate does not parse.
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: super::x509::ParseError,
    },
    /// Its key cannot sign as a TLS server.
    ServingKey(rustls::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(path) => write!(f, "{}: no such file", path.display()),
            Self::Identity(e) => write!(f, "{e}"),
            Self::Certificate { path, error } => write!(f, "{}: {error}", path.display()),
            Self::ServingKey(e) => write!(f, "serving key: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads a chain and key from one PEM file; `Err` says why it is unusable.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let stamp = stamp(path).ok_or_else(|| LoadError::Missing(path.to_path_buf()))?;
    let (certs, key) = read_identity(path).map_err(LoadError::Identity)?;
    let info = Certificate::parse(&certs[0]).map_err(|error| LoadError::Certificate {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(Loaded {
        info,
        certs,
        key,
        stamp,
    })
}

/// The file store of one kind of certificate in a directory.
pub struct PemStore {
    dir: PathBuf,
    prefix: &'static str,
}

fn timestamp(now: SystemTime) -> String {
    crate::kube::time::rfc3339(now)
        .trim_end_matches('Z')
        .replace([':', 'T'], "-")
}

impl PemStore {
    /// `<dir>/<prefix>-*.pem`.
    pub fn new(dir: PathBuf, prefix: &'static str) -> Self {
        Self { dir, prefix }
    }

    /// `<dir>/<prefix>-current.pem`.
    pub fn current(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// Writes a new pair and points the current link at it; keeps the previous file (a
    /// client may still be reading it) and removes older ones.
    pub fn save(&self, chain_pem: &str, key_pem: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        let name = format!("{}-{}.pem", self.prefix, timestamp(SystemTime::now()));
        let path = self.dir.join(&name);
        let newline: &[u8] = if chain_pem.ends_with('\n') {
            b""
        } else {
            b"\n"
        };
        atomic_file::replace(
            &path,
            &[chain_pem.as_bytes(), newline, key_pem.as_bytes()],
            0o600,
        )?;
        atomic_file::symlink(Path::new(&name), &self.current())?;
        self.prune(&path);
        Ok(path)
    }

    /// Removes the store's files but the newest two.
    fn prune(&self, newest: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{}-", self.prefix);
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&prefix)
                        && n.ends_with(".pem")
                        && !n.ends_with("-current.pem")
                        // yurthub-server-* files are not yurthub-* timestamps.
                        && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
                })
            })
            .collect();
        files.sort();
        let keep = files.len().saturating_sub(2);
        for old in &files[..keep] {
            if old != newest {
                let _ = std::fs::remove_file(old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_client_go() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_954_506);
        assert_eq!(timestamp(t), "2026-11-29-12-15-06");
    }

    #[test]
    fn save_switches_the_link_and_prunes() {
        let dir = std::env::temp_dir().join(format!("yurthub-pemstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let client = PemStore::new(dir.clone(), "yurthub");
        let server = PemStore::new(dir.clone(), "yurthub-server");
        let first = client.save("CERT1\n", "KEY1\n").unwrap();
        server.save("S", "K").unwrap();
        assert_eq!(
            std::fs::read_to_string(client.current()).unwrap(),
            "CERT1\nKEY1\n"
        );
        assert_eq!(std::fs::read_to_string(server.current()).unwrap(), "S\nK");
        let mode = std::fs::metadata(&first).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Two older client files: after the next save only the newest two client files
        // survive (whether or not both saves fell in the same second and share a name);
        // the server's are untouched.
        for name in [
            "yurthub-2020-01-01-00-00-00.pem",
            "yurthub-2020-01-02-00-00-00.pem",
        ] {
            std::fs::write(dir.join(name), "old").unwrap();
        }
        let second = client.save("CERT2\n", "KEY2\n").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let client_files: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("yurthub-2"))
            .collect();
        assert_eq!(client_files.len(), 2, "{names:?}");
        let newest = second.file_name().unwrap().to_string_lossy().to_string();
        assert!(client_files.contains(&&newest), "{names:?}");
        assert!(
            !names.contains(&"yurthub-2020-01-01-00-00-00.pem".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"yurthub-current.pem".to_string())
                && names.contains(&"yurthub-server-current.pem".to_string())
                && names.iter().any(|n| n.starts_with("yurthub-server-2")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        assert_eq!(
            std::fs::read_to_string(client.current()).unwrap(),
            "CERT2\nKEY2\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The certificate manager's files (the CA, the bootstrap kubeconfig, yurthub.conf, issued
//! pairs), written whole and durably on a blocking thread.

use std::path::{Path, PathBuf};

use super::csr;
use super::store::PemStore;
use super::CertError;

pub(super) fn file_err(path: &Path, error: std::io::Error) -> CertError {
    CertError::File {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `data` to `path` atomically with `mode` permissions, creating its directory; on a
/// blocking thread, since fsyncs on an SD card can take a while the executor must not wait.
pub(super) async fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    smol::unblock(move || {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        crate::atomic_file::replace(&path, &[&data], mode).map_err(|e| file_err(&e.path, e.error))
    })
    .await
}

/// Stores an issued pair under `<dir>/<prefix>-*.pem` (on a blocking thread, as `write_file`).
pub(super) async fn save_pair(
    dir: &Path,
    prefix: &'static str,
    issued: csr::Issued,
) -> Result<PathBuf, CertError> {
    let dir = dir.to_path_buf();
    smol::unblock(move || {
        PemStore::new(dir.clone(), prefix)
            .save(&issued.chain_pem, &issued.key_pem)
            .map_err(|e| file_err(&dir, e))
    })
    .await
}

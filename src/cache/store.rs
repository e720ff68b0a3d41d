//! Flat files on disk, one JSON object per file, written crash-safely.
//!
//! Layout (reference §3.3): `<root>/<component>/<resource>.<version>.<group>/[<ns>/]<name>`,
//! `core` for the legacy group. Every write goes to a temporary file in the same directory,
//! is fsynced, renamed over the target and the directory fsynced, so a crash leaves either the
//! old or the new object, never half of one. Identical bytes are not rewritten (SD cards wear
//! out). At open, leftover temporary files are removed and files that do not parse as a JSON
//! object are moved to `<root>/_quarantine/`, so nothing unparsable is ever served.
//!
//! This module knows files and JSON, nothing of HTTP. It blocks: call it from the cache writer
//! thread or through `smol::unblock`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use crate::atomic_file;
pub use crate::atomic_file::is_temp;

use super::seal::{is_sealed, is_sealed_path, Sealer};

/// Where internal state (views, non-resource responses) lives under the root.
pub const INTERNAL_DIR: &str = "_internal";
/// Where unparsable files are moved.
pub const QUARANTINE_DIR: &str = "_quarantine";

/// A cache failure, with the file concerned.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O error on `path`.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// A key part that cannot be a file name (empty, `.`, `..`, a `/`, a NUL, a leading `.`).
    BadKey(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StoreError::BadKey(k) => write!(f, "invalid cache key part {k:?}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether the disk is full (caching pauses, proxying goes on).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { error, .. } if error.raw_os_error() == Some(28))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Whether `part` may be one path component of the cache.
pub fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && !part.contains('/')
        && !part.contains('\0')
        && part.len() <= 253
}

/// Where one object lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The component (User-Agent head).
    pub component: String,
    /// `<resource>.<version>.<group>`, e.g. `pods.v1.core`.
    pub resource: String,
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// `component/resource/namespace/name` (no namespace part for cluster-scoped objects), as
/// under the cache directory.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.component, self.resource)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        f.write_str(&self.name)
    }
}

impl ObjectKey {
    /// The file path of the key, relative to the root; fails on parts that are not file names.
    pub fn rel_path(&self) -> Result<PathBuf, StoreError> {
        let mut p = PathBuf::new();
        // The component may carry the metadata tree below it: `kubelet/partialobject…`.
        for part in self
            .component
            .split('/')
            .chain(std::iter::once(self.resource.as_str()))
        {
            check(part)?;
            p.push(part);
        }
        if !self.namespace.is_empty() {
            check(&self.namespace)?;
            p.push(&self.namespace);
        }
        check(&self.name)?;
        p.push(&self.name);
        Ok(p)
    }
}

fn check(part: &str) -> Result<(), StoreError> {
    if valid_part(part) {
        Ok(())
    } else {
        Err(StoreError::BadKey(part.to_string()))
    }
}

/// What [`Store::open`] cleaned up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary files of interrupted writes, removed.
    pub removed_temp_files: usize,
    /// Unparsable files moved to `_quarantine/`.
    pub quarantined: usize,
}

/// The file tree.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    sealer: Option<Arc<Sealer>>,
    /// Bytes of every file below the root but quarantined ones, kept current by each write
    /// and removal so the disk budget is checked without walking the tree.
    bytes: AtomicU64,
    /// Fingerprints of the objects this process wrote (or found unchanged), cleared by every
    /// removal and quarantine: an answer byte for byte like the stored object is then known
    /// without reading the file (kubelet re-reads its pods and node all the time).
    written: Mutex<HashMap<PathBuf, u64>>,
    /// SipHash under a key drawn at start-up: nobody who writes objects into the cluster can
    /// make a changed object look unchanged.
    sums: std::hash::RandomState,
}

/// Creates `path` and its missing parents (mode 0700), fsyncing each new directory's parent so
/// the new entries survive a power loss.
pub(super) fn mkdirs(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdirs(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => fsync_dir(path.parent().unwrap_or(path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replaces the hub's own record at `path` (tokens, owners) in one step, mode 0600, creating
/// its directory first.
pub(super) fn write_record(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        mkdirs(dir)?;
    }
    atomic_file::replace(path, &[bytes], 0o600).map_err(StoreError::from)
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    atomic_file::sync_dir(dir).map_err(StoreError::from)
}

impl From<atomic_file::Error> for StoreError {
    fn from(e: atomic_file::Error) -> Self {
        StoreError::Io {
            path: e.path,
            error: e.error,
        }
    }
}

/// Every regular file below `dir`, temporary files aside, in name order. Symbolic links are
/// not followed (the hub never makes any; one pointing out of the cache must not be walked).
pub fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(PathBuf, fs::FileType)> = entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, ft) in found {
        if ft.is_dir() {
            files_below(&p, out);
        } else if ft.is_file() && !is_temp(&p) {
            out.push(p);
        }
    }
}

/// The number and total size of `files`.
fn tally(files: &[PathBuf]) -> (u64, u64) {
    let bytes = files
        .iter()
        .map(|f| fs::symlink_metadata(f).map_or(0, |m| m.len()))
        .sum();
    (files.len() as u64, bytes)
}

/// The most a cached file may hold: no object the apiserver stores comes near it (etcd takes
/// requests up to 1.5 MiB), and a larger file would cost its size in memory on each read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a file in the cache was not read.
#[derive(Debug)]
pub enum ReadError {
    /// The file or a directory on the way is a symbolic link (it could lead anywhere).
    Link(PathBuf),
    /// Not a regular file (a FIFO would block the reader, a device could be anything).
    NotRegular(PathBuf),
    /// Larger than [`MAX_FILE_BYTES`].
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The system refused.
    Io(PathBuf, io::Error),
}

impl ReadError {
    /// The entry at fault (the link itself for a linked directory: never what it points at).
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Link(p) | ReadError::NotRegular(p) | ReadError::Io(p, _) => p,
            ReadError::TooLarge { path, .. } => path,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Link(p) => write!(f, "{} is a symbolic link", p.display()),
            ReadError::NotRegular(p) => write!(f, "{} is not a regular file", p.display()),
            ReadError::TooLarge { path, len } => write!(
                f,
                "{} holds {len} bytes, more than the {MAX_FILE_BYTES} a cached file may",
                path.display()
            ),
            ReadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads the file `rel` below `root` (`Ok(None)` when it is absent) only if it is a regular
/// file of at most [`MAX_FILE_BYTES`] reached without a symbolic link: whoever could write
/// into the cache directory must not make the hub serve, or hang on, anything else.
pub fn read_regular(root: &Path, rel: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut at = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            break;
        }
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(ReadError::Link(at)),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ReadError::Io(at, e)),
        }
    }
    let path = root.join(rel);
    // No following the last link, and no waiting for a FIFO's writer.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(ReadError::Link(path))
        }
        Err(e) => return Err(ReadError::Io(path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ReadError::Io(path.clone(), e))?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(path));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            path,
            len: meta.len(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Io(path.clone(), e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let len = bytes.len() as u64;
        return Err(ReadError::TooLarge { path, len });
    }
    Ok(Some(bytes))
}

/// Whether `bytes` is one JSON object, the only thing the cache serves.
pub fn is_json_object(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&serde_json::value::RawValue>(bytes)
        .is_ok_and(|raw| raw.get().trim_start().starts_with('{'))
}

/// Moves the file at `path` (below the cache `root`) to `<root>/_quarantine/`, named after
/// its path and the time, so an operator can see what it was and nothing serves it; returns
/// where it went.
pub fn move_to_quarantine(root: &Path, path: &Path) -> Result<PathBuf, StoreError> {
    let qdir = root.join(QUARANTINE_DIR);
    mkdirs(&qdir)?;
    let rel = path.strip_prefix(root).unwrap_or(path);
    let flat = rel.to_string_lossy().replace('/', "_");
    let base = format!(
        "{flat}.{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    // Flattened names can meet (`a/b_c` and `a_b/c`, names that are not UTF-8): a numbered
    // name then, so that nothing quarantined replaces anything quarantined before.
    let mut target = qdir.join(&base);
    let mut n = 1;
    while fs::symlink_metadata(&target).is_ok() {
        target = qdir.join(format!("{base}.{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(io_err(path))?;
    Ok(target)
}

impl Store {
    /// Opens the cache at `root` (creating it, mode 0700) and recovers from a crash: removes
    /// temporary files and quarantines unparsable objects.
    pub fn open(root: &Path) -> Result<(Store, Recovery), StoreError> {
        Store::open_sealed(root, None)
    }

    /// [`Store::open`], sealing Secrets with `sealer` when given; Secrets cached in the clear
    /// before the key was configured are sealed now.
    pub fn open_sealed(
        root: &Path,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<(Store, Recovery), StoreError> {
        mkdirs(root)?;
        let store = Store {
            root: root.to_path_buf(),
            sealer,
            bytes: AtomicU64::new(0),
            written: Mutex::default(),
            sums: std::hash::RandomState::new(),
        };
        let mut rec = Recovery::default();
        let mut clear = Vec::new();
        store.recover_dir(root, 0, &mut rec, &mut clear)?;
        // Sealed after the walk: a file renamed into a directory being read may be listed again.
        for rel in clear {
            if let Some(bytes) = store.read_file(&rel)? {
                if let Err(e) = store.write_file(&rel, &bytes) {
                    log::warn!("cache: sealing {}: {e}", rel.display());
                }
            }
        }
        Ok((store, rec))
    }

    /// Bytes of every file in the cache (objects, views, non-resource answers), as counted
    /// by the hub's own writes and removals since it opened the cache.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Counts the bytes on disk afresh (blocking; a walk of the tree): files removed behind
    /// the hub's back (`yurthub cache evict`, an operator) must not leave the count high.
    pub fn recount_bytes(&self) -> u64 {
        let mut files = Vec::new();
        files_below(&self.root, &mut files);
        let quarantine = self.root.join(QUARANTINE_DIR);
        files.retain(|f| !f.starts_with(&quarantine));
        let (_, sum) = tally(&files);
        self.bytes.store(sum, Ordering::Relaxed);
        sum
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn recover_dir(
        &self,
        dir: &Path,
        depth: usize,
        rec: &mut Recovery,
        clear: &mut Vec<PathBuf>,
    ) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if depth == 0 && name == QUARANTINE_DIR {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if is_temp(&path) {
                let _ = fs::remove_file(&path);
                rec.removed_temp_files += 1;
                log::info!(
                    "cache recovery: removed unfinished write {}",
                    path.display()
                );
                continue;
            }
            if ft.is_dir() {
                self.recover_dir(&path, depth + 1, rec, clear)?;
            } else if !ft.is_file() {
                // A link or a FIFO is never served; moved aside (the link itself).
                let why = format!("{} is not a regular file", path.display());
                self.quarantine(&path, &why)?;
                rec.quarantined += 1;
            } else {
                let len = entry.metadata().map_or(0, |m| m.len());
                self.bytes.fetch_add(len, Ordering::Relaxed);
                let rel = path.strip_prefix(&self.root).unwrap_or(&path);
                let bytes = match read_regular(&self.root, rel) {
                    Ok(Some(b)) if is_json_object(&b) => b,
                    Ok(None) => continue,
                    Ok(Some(_)) => {
                        let why = format!("{} does not parse as a JSON object", path.display());
                        self.quarantine(&path, &why)?;
                        rec.quarantined += 1;
                        continue;
                    }
                    Err(e) => {
                        self.quarantine(e.path(), &e.to_string())?;
                        rec.quarantined += 1;
                        continue;
                    }
                };
                if self.sealer.is_some() && is_sealed_path(rel) && !is_sealed(&bytes) {
                    clear.push(rel.to_path_buf());
                }
            }
        }
        Ok(())
    }

    /// The component directories (internal and quarantine directories aside).
    pub fn components(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| valid_part(n) && n != INTERNAL_DIR && n != QUARANTINE_DIR)
            .collect();
        out.sort();
        out
    }

    /// Objects and bytes on disk per component (`<root>/<component>/...`), by walking the
    /// tree (blocking; for /metrics). Internal views and quarantined files do not count.
    pub fn usage(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        self.components()
            .into_iter()
            .map(|name| {
                let mut files = Vec::new();
                files_below(&self.root.join(&name), &mut files);
                (name, tally(&files))
            })
            .collect()
    }

    /// Moves a file the cache must not serve out of the served tree; `why` is logged.
    pub fn quarantine(&self, path: &Path, why: &str) -> Result<(), StoreError> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        self.written_sums().remove(rel);
        let meta = fs::symlink_metadata(path);
        // Only regular files were counted (a link's target never was).
        let len = meta.map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        let target = move_to_quarantine(&self.root, path)?;
        self.account(len, 0);
        log::warn!("cache: {why}; moved to {}", target.display());
        Ok(())
    }

    /// Writes `bytes` at the relative path `rel`, crash-safely; returns false when the file
    /// already held exactly these bytes (nothing is written then).
    pub fn write_file(&self, rel: &Path, bytes: &[u8]) -> Result<bool, StoreError> {
        let path = self.root.join(rel);
        let old = fs::read(&path).ok();
        let old_len = old.as_ref().map_or(0, |o| o.len() as u64);
        let sealer = self.sealer.as_ref().filter(|_| is_sealed_path(rel));
        let sealed;
        let bytes = match sealer {
            Some(s) => {
                let same = old
                    .as_ref()
                    .filter(|o| is_sealed(o))
                    .and_then(|o| s.open(rel, o).ok());
                if same.as_deref() == Some(bytes) {
                    return Ok(false);
                }
                sealed = s.seal(rel, bytes).map_err(|e| StoreError::Io {
                    path: path.clone(),
                    error: io::Error::other(e.to_string()),
                })?;
                &sealed[..]
            }
            None if old.as_deref() == Some(bytes) => return Ok(false),
            None => bytes,
        };
        mkdirs(path.parent().unwrap_or(&self.root))?;
        match atomic_file::replace(&path, &[bytes], 0o600) {
            Ok(()) => {
                self.account(old_len, bytes.len() as u64);
                Ok(true)
            }
            Err(e) => {
                // Renamed: the new bytes are in place whatever the directory fsync says.
                if e.in_place {
                    self.account(old_len, bytes.len() as u64);
                }
                Err(e.into())
            }
        }
    }

    fn account(&self, old: u64, new: u64) {
        if new >= old {
            self.bytes.fetch_add(new - old, Ordering::Relaxed);
        } else {
            // Saturating: files changed behind the hub's back may make the count drift low.
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(old - new))
                });
        }
    }

    /// Reads the file at the relative path `rel`; `None` when absent. A sealed Secret is
    /// opened; one that does not open (no key, another key) reads as absent, logged, and
    /// stays on disk for the right key.
    pub fn read_file(&self, rel: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = match read_regular(&self.root, rel) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(ReadError::Io(path, error)) => return Err(StoreError::Io { path, error }),
            Err(e) => {
                // Not served, and moved aside (a link itself, never what it points at).
                self.quarantine(e.path(), &e.to_string())?;
                return Ok(None);
            }
        };
        if !(is_sealed_path(rel) && is_sealed(&bytes)) {
            return Ok(Some(bytes));
        }
        let opened = match &self.sealer {
            Some(s) => s.open(rel, &bytes),
            None => Err(super::seal::SealError::NoKey),
        };
        match opened {
            Ok(plain) => Ok(Some(plain)),
            Err(e) => {
                log::warn!("cache: {}: {e}; not served", rel.display());
                Ok(None)
            }
        }
    }

    /// Removes the file at `rel` durably (the directory is fsynced, so a deleted object does
    /// not come back after a power loss); false when it was not there.
    pub fn remove_file(&self, rel: &Path) -> Result<bool, StoreError> {
        self.written_sums().remove(rel);
        let path = self.root.join(rel);
        let len = fs::symlink_metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => {
                self.account(len, 0);
                fsync_dir(path.parent().unwrap_or(&self.root))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes an object; see [`Store::write_file`].
    pub fn write(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool, StoreError> {
        let rel = key.rel_path()?;
        let written = self.write_file(&rel, bytes)?;
        let sum = self.fingerprint(bytes);
        self.written_sums().insert(rel, sum);
        Ok(written)
    }

    fn fingerprint(&self, bytes: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.sums.build_hasher();
        h.write(bytes);
        h.finish()
    }

    fn written_sums(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, u64>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this process last wrote exactly `bytes` as `key` and has not removed it since;
    /// no file is read. Only `yurthub cache evict` run beside the hub removes files behind
    /// its back: such an object comes back at its next change, list or watch.
    pub fn holds(&self, key: &ObjectKey, bytes: &[u8]) -> bool {
        let Ok(rel) = key.rel_path() else {
            return false;
        };
        let sum = self.fingerprint(bytes);
        self.written_sums().get(&rel) == Some(&sum)
    }

    /// Reads an object. A file that no longer parses is quarantined and reads as absent.
    pub fn read(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        let rel = key.rel_path()?;
        match self.read_file(&rel)? {
            Some(b) if is_json_object(&b) => Ok(Some(b)),
            Some(_) => {
                let path = self.root.join(&rel);
                let why = format!("{} does not parse as a JSON object", path.display());
                self.quarantine(&path, &why)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Removes an object.
    pub fn remove(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        self.remove_file(&key.rel_path()?)
    }

    /// Every object of `component`/`resource`, in one namespace or (with `None`) all of them
    /// including cluster-scoped ones, sorted by namespace and name.
    pub fn list(
        &self,
        component: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<(ObjectKey, Vec<u8>)>, StoreError> {
        for part in component.split('/') {
            check(part)?;
        }
        check(resource)?;
        let base = self.root.join(component).join(resource);
        let mut out = Vec::new();
        let mut visit = |dir: &Path, ns: &str| -> Result<(), StoreError> {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(dir)(e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !valid_part(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                let key = ObjectKey {
                    component: component.to_string(),
                    resource: resource.to_string(),
                    namespace: ns.to_string(),
                    name,
                };
                if let Some(bytes) = self.read(&key)? {
                    out.push((key, bytes));
                }
            }
            Ok(())
        };
        match namespace {
            Some(ns) if !ns.is_empty() => {
                check(ns)?;
                visit(&base.join(ns), ns)?;
            }
            _ => {
                visit(&base, "")?;
                if let Ok(entries) = fs::read_dir(&base) {
                    for entry in entries.flatten() {
                        let ns = entry.file_name().to_string_lossy().into_owned();
                        if valid_part(&ns) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                            visit(&entry.path(), &ns)?;
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("yurthub-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            component: "kubelet".into(),
            resource: "pods.v1.core".into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn writes_read_back_with_the_documented_layout_and_modes() {
        let root = temp("layout");
        let (s, rec) = Store::open(&root).unwrap();
        assert_eq!(rec, Recovery::default());
        assert!(s.write(&key("kube-system", "p"), br#"{"a":1}"#).unwrap());
        assert!(
            !s.write(&key("kube-system", "p"), br#"{"a":1}"#).unwrap(),
            "identical bytes are not rewritten"
        );
        let file = root.join("kubelet/pods.v1.core/kube-system/p");
        assert_eq!(fs::read(&file).unwrap(), br#"{"a":1}"#);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            s.read(&key("kube-system", "p")).unwrap().unwrap(),
            br#"{"a":1}"#
        );
        s.write(&key("", "cluster-wide"), b"{}").unwrap();
        let all = s.list("kubelet", "pods.v1.core", None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            s.list("kubelet", "pods.v1.core", Some("kube-system"))
                .unwrap()
                .len(),
            1
        );
        assert!(s.remove(&key("kube-system", "p")).unwrap());
        assert!(s.read(&key("kube-system", "p")).unwrap().is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recovery_removes_temp_files_and_quarantines_garbage() {
        let root = temp("recovery");
        let dir = root.join("kubelet/pods.v1.core/default");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("good"), b"{\"ok\":true}").unwrap();
        fs::write(dir.join("truncated"), b"{\"ok\":tr").unwrap();
        fs::write(dir.join(".tmp-1-1"), b"{\"half").unwrap();
        // A real object whose name merely contains the marker stays.
        fs::write(dir.join("app.tmp-1"), b"{}").unwrap();
        let (s, rec) = Store::open(&root).unwrap();
        assert_eq!(
            rec,
            Recovery {
                removed_temp_files: 1,
                quarantined: 1
            }
        );
        let names: Vec<_> = s
            .list("kubelet", "pods.v1.core", None)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.name)
            .collect();
        assert_eq!(names, vec!["app.tmp-1", "good"]);
        assert_eq!(fs::read_dir(root.join(QUARANTINE_DIR)).unwrap().count(), 1);
        // Garbage written later is caught on read and never served.
        fs::write(dir.join("later"), b"not json").unwrap();
        assert!(s.read(&key("default", "later")).unwrap().is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn keys_that_are_not_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", ".hidden", "x\0y"] {
            assert!(key("default", bad).rel_path().is_err(), "{bad:?}");
        }
    }
}

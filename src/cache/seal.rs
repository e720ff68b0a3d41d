//! Secrets at rest: cached Secrets sealed with ChaCha20-Poly1305 under a 256-bit key that
//! lives outside the cache directory (`--encrypt-secrets-key-file`).
//!
//! A sealed file is still one JSON object, so crash recovery treats it like any other:
//!
//! ```text
//! {"yurthubSealed":"chacha20-poly1305","nonce":"<base64, 12 bytes>","data":"<base64>"}
//! ```
//!
//! The file's path inside the cache is the additional authenticated data: a sealed Secret
//! moved to another name no longer opens, so a writable cache directory cannot swap one
//! Secret for another. Nonces are random (96 bits; a node writes far fewer than 2^32 Secrets
//! under one key).
//!
//! ```
//! use yurthub::cache::seal::Sealer;
//! let sealer = Sealer::from_key(&[7u8; 32]).unwrap();
//! let rel = std::path::Path::new("kubelet/secrets.v1.core/default/token");
//! let sealed = sealer.seal(rel, br#"{"data":{"k":"czNjcjN0"}}"#).unwrap();
//! assert!(!String::from_utf8_lossy(&sealed).contains("czNjcjN0"));
//! assert_eq!(sealer.open(rel, &sealed).unwrap(), br#"{"data":{"k":"czNjcjN0"}}"#);
//! ```

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::{Path, PathBuf};

/// The resource directory whose objects are sealed.
pub const SEALED_RESOURCE: &str = "secrets.v1.core";
/// The algorithm the envelope names.
const ALGORITHM: &str = "chacha20-poly1305";

/// Why a key could not be loaded or a file not be sealed or opened.
#[derive(Debug)]
pub enum SealError {
    /// The key file could not be read.
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The key file holds neither 32 raw bytes, 64 hex digits nor base64 of 32 bytes.
    KeyFormat(PathBuf),
    /// The key file lies inside the cache directory it would protect.
    KeyInCache(PathBuf),
    /// The file is sealed but no key was given.
    NoKey,
    /// The envelope is damaged, or the key or the file's place is not the one it was sealed with.
    Open(&'static str),
    /// The system's random source failed.
    Random,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::KeyFile { path, error } => write!(f, "key file {}: {error}", path.display()),
            SealError::KeyFormat(p) => write!(
                f,
                "key file {}: expected 32 bytes, 64 hex digits or base64 of 32 bytes",
                p.display()
            ),
            SealError::KeyInCache(p) => write!(
                f,
                "key file {} is inside the cache directory; keep it elsewhere",
                p.display()
            ),
            SealError::NoKey => write!(f, "sealed Secret: needs --encrypt-secrets-key-file"),
            SealError::Open(why) => write!(f, "sealed Secret does not open: {why}"),
            SealError::Random => write!(f, "no randomness for a nonce"),
        }
    }
}

impl std::error::Error for SealError {}

/// Whether the file at `rel` (relative to the cache root) holds a Secret: an object file,
/// not the hub's own files under `_internal/` (list views hold names, no data).
pub fn is_sealed_path(rel: &Path) -> bool {
    let mut parts = rel.components().map(|c| c.as_os_str());
    parts
        .next()
        .is_some_and(|first| !first.to_string_lossy().starts_with('_'))
        && parts.any(|c| c == std::ffi::OsStr::new(SEALED_RESOURCE))
}

/// Whether `bytes` is a sealed envelope (whatever the key).
pub fn is_sealed(bytes: &[u8]) -> bool {
    // Cheap test first: every envelope starts with its marker, as `seal` writes it.
    bytes.starts_with(b"{\"yurthubSealed\"")
}

/// Seals and opens cached Secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    #[serde(rename = "yurthubSealed")]
    algorithm: String,
    nonce: String,
    data: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decode_key(raw: &[u8]) -> Option<[u8; 32]> {
    if raw.len() == 32 {
        return raw.try_into().ok();
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        return Some(key);
    }
    b64().decode(text).ok()?.try_into().ok()
}

impl Sealer {
    /// A sealer for a 256-bit key.
    pub fn from_key(key: &[u8; 32]) -> Result<Sealer, SealError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| SealError::Open("unusable key"))?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// Reads the key from `path` (32 raw bytes, 64 hex digits, or base64), refusing a key
    /// kept inside `cache_root`: a copy of the cache must not carry its own key.
    pub fn from_key_file(path: &Path, cache_root: Option<&Path>) -> Result<Sealer, SealError> {
        let raw = std::fs::read(path).map_err(|error| SealError::KeyFile {
            path: path.to_path_buf(),
            error,
        })?;
        if let Some(root) = cache_root {
            let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
            if key.starts_with(&root) {
                return Err(SealError::KeyInCache(path.to_path_buf()));
            }
        }
        let key = decode_key(&raw).ok_or_else(|| SealError::KeyFormat(path.to_path_buf()))?;
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            log::warn!(
                "key file {} is readable by others than its owner (chmod 600 it)",
                path.display()
            );
        }
        Sealer::from_key(&key)
    }

    /// `plain` sealed for the file at `rel`.
    pub fn seal(&self, rel: &Path, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(rel.as_os_str().as_encoded_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Open("sealing failed"))?;
        let env = Envelope {
            algorithm: ALGORITHM.into(),
            nonce: b64().encode(nonce),
            data: b64().encode(data),
        };
        serde_json::to_vec(&env).map_err(|_| SealError::Open("unencodable"))
    }

    /// The plain bytes of the sealed file at `rel`.
    pub fn open(&self, rel: &Path, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let env: Envelope =
            serde_json::from_slice(sealed).map_err(|_| SealError::Open("not an envelope"))?;
        if env.algorithm != ALGORITHM {
            return Err(SealError::Open("unknown algorithm"));
        }
        let nonce: [u8; NONCE_LEN] = b64()
            .decode(&env.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SealError::Open("bad nonce"))?;
        let mut data = b64()
            .decode(&env.data)
            .map_err(|_| SealError::Open("bad data"))?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(rel.as_os_str().as_encoded_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Open("wrong key, moved file or damaged data"))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_three_spellings_and_refusals() {
        let dir = std::env::temp_dir().join(format!("yurthub-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let key = [0xabu8; 32];
        let rel = Path::new("kubelet/secrets.v1.core/ns/s");
        let sealed = Sealer::from_key(&key).unwrap().seal(rel, b"{}").unwrap();
        assert!(is_sealed(&sealed));
        for (name, body) in [
            ("raw", key.to_vec()),
            ("hex", format!("{}\n", "ab".repeat(32)).into_bytes()),
            ("b64", b64().encode(key).into_bytes()),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            let s = Sealer::from_key_file(&p, Some(&dir.join("cache"))).unwrap();
            assert_eq!(s.open(rel, &sealed).unwrap(), b"{}", "{name}");
        }
        std::fs::write(dir.join("short"), b"abc").unwrap();
        assert!(matches!(
            Sealer::from_key_file(&dir.join("short"), None),
            Err(SealError::KeyFormat(_))
        ));
        std::fs::write(dir.join("cache/key"), key).unwrap();
        assert!(matches!(
            Sealer::from_key_file(&dir.join("cache/key"), Some(&dir.join("cache"))),
            Err(SealError::KeyInCache(_))
        ));
        // Another key, another place, or a flipped byte: nothing opens.
        let other = Sealer::from_key(&[1u8; 32]).unwrap();
        assert!(other.open(rel, &sealed).is_err());
        let s = Sealer::from_key(&key).unwrap();
        assert!(s
            .open(Path::new("kubelet/secrets.v1.core/ns/other"), &sealed)
            .is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let mut data = b64().decode(v["data"].as_str().unwrap()).unwrap();
        data[0] ^= 1;
        v["data"] = b64().encode(data).into();
        assert!(s.open(rel, &serde_json::to_vec(&v).unwrap()).is_err());
        assert!(s.open(rel, b"{\"yurthubSealed\":1}").is_err());
        assert!(is_sealed_path(rel) && !is_sealed_path(Path::new("kubelet/pods.v1.core/a/b")));
        assert!(!is_sealed_path(Path::new(
            "_internal/views/kubelet/secrets.v1.core/0123.json"
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

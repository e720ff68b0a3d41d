//! The bearer tokens the cloud accepted, so that offline a token is honoured only if the
//! cloud honoured it before and it has not expired since: without the cloud the hub cannot
//! check a token, and a pod's made-up one must not read what the cache holds.
//!
//! Only a SHA-256 of each token is kept, with its expiry: the JWT's `exp`, or
//! [`OPAQUE_TOKEN_LIFETIME`] after it was last accepted for a token that is no JWT. The set
//! is bounded ([`MAX_TOKENS`], the soonest to expire go first) and persisted in
//! `_internal/tokens.json` (mode 0600) so that it survives a restart offline.
//!
//! ```
//! use yurthub::cache::tokens::Tokens;
//! let dir = std::env::temp_dir().join(format!("tokens-doc-{}", std::process::id()));
//! let tokens = Tokens::open(&dir);
//! assert!(!tokens.accepted("opaque-token", 1_000));
//! tokens.accept("opaque-token", 1_000);
//! assert!(tokens.accepted("opaque-token", 1_000 + 60));
//! assert!(!tokens.accepted("opaque-token", 1_000 + 3 * 3600));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use base64::Engine as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::store::{read_regular, write_record, INTERNAL_DIR};

/// How long a token that is no JWT (no `exp` to read) is honoured after the cloud last
/// accepted it.
pub const OPAQUE_TOKEN_LIFETIME: u64 = 3600;
/// The most tokens remembered.
pub const MAX_TOKENS: usize = 1024;
/// The file, under [`INTERNAL_DIR`].
const FILE: &str = "tokens.json";

/// The accepted tokens (see the module docs).
pub struct Tokens {
    file: PathBuf,
    /// Hex SHA-256 of the token → expiry (Unix seconds).
    known: Mutex<HashMap<String, u64>>,
}

fn digest(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The claims of a JWT (`header.payload.signature`, base64url), if `token` is one.
fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `exp` of a JWT, if `token` is one.
fn jwt_expiry(token: &str) -> Option<u64> {
    jwt_claims(token)?["exp"].as_u64()
}

/// Who `token` stands for: a service account token's `sub`
/// (`system:serviceaccount:<ns>:<name>`), another JWT's `<iss>#<sub>` (two issuers may use
/// one `sub`), else `token:` and the start of its digest. Only meaningful for a token the
/// cloud accepted: the hub checks no signature, the cloud did.
pub fn subject(token: &str) -> String {
    let claims = jwt_claims(token);
    let claims = claims.as_ref();
    let sub = claims.and_then(|c| c["sub"].as_str());
    let iss = claims.and_then(|c| c["iss"].as_str()).unwrap_or("");
    let service_account = iss == "kubernetes/serviceaccount"
        || claims.is_some_and(|c| c["kubernetes.io"].is_object());
    match sub {
        Some(sub) if service_account || iss.is_empty() => sub.to_string(),
        Some(sub) => format!("{iss}#{sub}"),
        None => format!("token:{}", &digest(token)[..16]),
    }
}

impl Tokens {
    /// The tokens remembered in the cache at `root` (none if the file is absent or broken).
    pub fn open(root: &Path) -> Tokens {
        let rel = Path::new(INTERNAL_DIR).join(FILE);
        let known = read_regular(root, &rel)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<HashMap<String, u64>>(&b).ok())
            .unwrap_or_default();
        Tokens {
            file: root.join(rel),
            known: Mutex::new(known),
        }
    }

    /// Records that the cloud accepted `token` (answered anything but 401) at `now`.
    pub fn accept(&self, token: &str, now: u64) {
        let expiry = jwt_expiry(token).unwrap_or(now + OPAQUE_TOKEN_LIFETIME);
        if expiry <= now {
            return;
        }
        let key = digest(token);
        let snapshot = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            // An opaque token's lifetime is renewed at most every tenth of it: not a file
            // write per request.
            if known
                .get(&key)
                .is_some_and(|&e| e + OPAQUE_TOKEN_LIFETIME / 10 > expiry)
            {
                return;
            }
            known.retain(|_, &mut e| e > now);
            while known.len() >= MAX_TOKENS {
                let soonest = known
                    .iter()
                    .min_by_key(|(_, e)| **e)
                    .map(|(k, _)| k.clone());
                match soonest {
                    Some(k) => known.remove(&k),
                    None => break,
                };
            }
            known.insert(key, expiry);
            serde_json::to_vec(&*known).unwrap_or_default()
        };
        if let Err(e) = write_record(&self.file, &snapshot) {
            log::warn!("cache: remembering an accepted token: {e}");
        }
    }

    /// Whether [`Tokens::accept`] would change nothing now (the proxy then spares itself
    /// the work of recording it on a blocking thread).
    pub fn recorded(&self, token: &str, now: u64) -> bool {
        let expiry = jwt_expiry(token).unwrap_or(now + OPAQUE_TOKEN_LIFETIME);
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        expiry <= now
            || known
                .get(&digest(token))
                .is_some_and(|&e| e + OPAQUE_TOKEN_LIFETIME / 10 > expiry)
    }

    /// Whether the cloud accepted `token` before and it has not expired at `now`.
    pub fn accepted(&self, token: &str, now: u64) -> bool {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&digest(token)).is_some_and(|&e| e > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b(r#"{"alg":"RS256"}"#),
            b(&format!(
                r#"{{"sub":"system:serviceaccount:a:b","exp":{exp}}}"#
            ))
        )
    }

    #[test]
    fn a_jwt_lives_until_its_exp_and_the_set_survives_a_restart_without_the_tokens() {
        let dir = std::env::temp_dir().join(format!("yurthub-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = Tokens::open(&dir);
        let token = jwt(5_000);
        t.accept(&token, 1_000);
        t.accept(&jwt(900), 1_000);
        assert!(t.accepted(&token, 4_999));
        assert!(!t.accepted(&token, 5_000));
        assert!(
            !t.accepted(&jwt(900), 800),
            "already expired when the cloud saw it"
        );
        let again = Tokens::open(&dir);
        assert!(again.accepted(&token, 2_000));
        let file = std::fs::read_to_string(dir.join("_internal/tokens.json")).unwrap();
        assert!(!file.contains(&token) && !file.contains("sig"), "{file}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

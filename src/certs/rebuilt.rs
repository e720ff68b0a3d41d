//! A node whose cluster was rebuilt (seed FAQ item 10): the hub still holds the old cluster's
//! CA and certificates, every request to the new cluster fails its TLS check, and the old
//! cache would be served as if it were the node's. [`offline_evidence`] and
//! [`discovered_evidence`] say, before anything is loaded, whether the operator has pointed
//! the hub at a different cluster; the caller then moves the old identity and cache aside
//! and the hub bootstraps afresh.
//!
//! Only what the operator gave counts as evidence: a bootstrap kubeconfig, pins, or a join
//! token whose cluster-info, trusted by pin or by the operator's explicit skip, names a CA.
//! A failed TLS handshake alone never does (a middlebox could cause one), and neither does a
//! changed server address (a load balancer in front of the same cluster is not a rebuild;
//! when a token is at hand, a changed address is checked against the cluster's CA instead).
//! "Different" means sharing no certificate with `pki/ca.crt`, so a CA bundle mid-rotation
//! is never mistaken for a new cluster.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::client::ApiClient;
use super::discovery::{self, pin_of, Token, Trust};
use super::files::write_file;
use super::kubeconfig::Kubeconfig;
use super::x509::Certificate;
use super::{BootstrapMode, Settings};
use crate::upstream::{client_config, read_certs, read_identity, ServerUrl};

/// How long the start-up discovery may take before the hub starts without its verdict.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// Why the hub's identity belongs to another cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The bootstrap kubeconfig's CA shares no certificate with `pki/ca.crt`.
    BootstrapCa(PathBuf),
    /// `pki/ca.crt`'s public key matches none of `--discovery-token-ca-cert-hash`.
    Pins,
    /// cluster-info, signed by `--join-token`, carries a CA that shares no certificate with
    /// `pki/ca.crt`.
    Discovered {
        /// The server that answered.
        server: String,
    },
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BootstrapCa(file) => write!(
                f,
                "the CA of {} is not the one in pki/ca.crt",
                file.display()
            ),
            Self::Pins => write!(
                f,
                "pki/ca.crt matches none of --discovery-token-ca-cert-hash"
            ),
            Self::Discovered { server } => write!(
                f,
                "cluster-info of {server}, signed by --join-token, names a CA other than pki/ca.crt"
            ),
        }
    }
}

/// Whether the cloud still accepts this node's identity as it is: a TLS handshake verified
/// by `pki/ca.crt` and a request with the node's certificate that is not refused as
/// unauthenticated. The operator's evidence is then outweighed (a CA bundle written
/// differently, an address that reaches the same cluster): nothing is moved. `false` also
/// when the cloud cannot be reached or there is no certificate.
pub async fn identity_still_works(s: &Settings) -> bool {
    let root = s.root_dir.join("pki");
    let (Ok(ca), Ok(identity)) = (
        read_certs(&root.join("ca.crt")),
        read_identity(&root.join("yurthub-current.pem")),
    ) else {
        return false;
    };
    let Ok(config) = client_config(&ca, Some(identity)) else {
        return false;
    };
    let api = ApiClient::new(s.servers.clone(), config, None);
    let path = format!("/api/v1/nodes/{}", s.node);
    matches!(api.request("GET", &path, None).await, Ok((status, _)) if status != 401)
}

/// The certificates of a PEM bundle, as DER; empty when it holds none.
fn certs_of(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// Whether two CA bundles, both non-empty, share no certificate.
pub fn disjoint(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (certs_of(a), certs_of(b));
    !a.is_empty() && !b.is_empty() && !a.iter().any(|c| b.contains(c))
}

/// The CA the hub trusts today (`pki/ca.crt`), when it holds a certificate.
fn current_ca(s: &Settings) -> Option<Vec<u8>> {
    let bytes = std::fs::read(s.root_dir.join("pki").join("ca.crt")).ok()?;
    (!certs_of(&bytes).is_empty()).then_some(bytes)
}

/// The bootstrap kubeconfig, when it parses.
fn bootstrap(s: &Settings) -> Option<Kubeconfig> {
    Kubeconfig::read(&s.bootstrap_file).ok()
}

/// The CA a kubeconfig names (inline, or in a file).
fn ca_of(k: &Kubeconfig) -> Option<Vec<u8>> {
    match (&k.ca_data, &k.ca_file) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(f)) => std::fs::read(f).ok(),
        (None, None) => None,
    }
}

/// Whether the bootstrap kubeconfig belongs to the cluster of `ca` (its CA shares a
/// certificate with it): when the identity is moved aside, such a kubeconfig goes too.
pub fn bootstrap_of_ca(s: &Settings, ca: &[u8]) -> bool {
    bootstrap(s)
        .and_then(|k| ca_of(&k))
        .is_some_and(|b| !disjoint(&b, ca) && !certs_of(&b).is_empty())
}

/// The CA the identity was made with (`pki/ca.crt`), read once for all the checks; `None` in
/// `kubeletcertificate` mode (the kubelet's files are not the hub's to move) and when there
/// is no CA yet (nothing to compare).
pub fn old_ca(s: &Settings) -> Option<Vec<u8>> {
    (s.mode == BootstrapMode::Token)
        .then(|| current_ca(s))
        .flatten()
}

/// What the files and flags alone say (no network): the bootstrap kubeconfig's CA, or the
/// pins, disagree with `ca`, the hub's [`old_ca`].
pub fn offline_evidence(s: &Settings, ca: &[u8]) -> Option<Evidence> {
    // A bootstrap kubeconfig older than pki/ca.crt is the one the identity was made with
    // (the CA is copied from it): only a newer one, as a new join writes, is read, which
    // keeps its parser out of every ordinary start.
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newer = match (
        modified(&s.bootstrap_file),
        modified(&s.root_dir.join("pki").join("ca.crt")),
    ) {
        (Some(b), Some(c)) => b > c,
        (b, _) => b.is_some(),
    };
    if newer {
        if let Some(b) = bootstrap(s).and_then(|k| ca_of(&k)) {
            if disjoint(&b, ca) {
                return Some(Evidence::BootstrapCa(s.bootstrap_file.clone()));
            }
        }
    }
    if s.join_token.is_some() && !s.pins.is_empty() {
        // Evidence only when every certificate could be read: failing to prove a match is
        // not proof of a mismatch.
        let parsed: Result<Vec<Certificate>, _> =
            certs_of(ca).iter().map(|d| Certificate::parse(d)).collect();
        if let Ok(parsed) = parsed {
            if !parsed.iter().any(|c| s.pins.contains(&pin_of(c))) {
                return Some(Evidence::Pins);
            }
        }
    }
    None
}

/// Asks the cluster, with `--join-token`, which CA it has, when the flags point somewhere
/// the bootstrap kubeconfig does not (another token, or a server address it does not name).
/// Trust comes from the pins or the explicit unsafe skip, never from `pki/ca.crt` (which is
/// what is in question). A cluster with the same CA gets the bootstrap kubeconfig rewritten
/// for the new token and address, so the next start asks nothing. `None` when nothing
/// differs, nothing could be learnt (the cloud unreachable, the token unknown), or the CA is
/// the same.
pub async fn discovered_evidence(s: &Settings, ca: &[u8]) -> Option<Evidence> {
    let token = Token::parse(s.join_token.as_deref()?).ok()?;
    let current = bootstrap(s);
    let same_token = current
        .as_ref()
        .and_then(|k| k.token.as_deref())
        .is_some_and(|t| t == token.expose());
    let named = current.as_ref().and_then(|k| ServerUrl::parse(&k.server));
    let same_server = named.is_some_and(|n| s.servers.contains(&n));
    if same_token && same_server {
        return None;
    }
    let trust = Trust {
        known_ca: None,
        pins: &s.pins,
        unsafe_skip: s.unsafe_skip_ca_verification,
    };
    let found = match discovery::discover(&s.servers, &token, &trust).await {
        Ok(f) => f,
        Err(e) => {
            log::info!(
                "identity: checking the cluster's CA with --join-token: {e}; pki/ca.crt kept"
            );
            return None;
        }
    };
    if disjoint(&found.ca_pem, ca) {
        return Some(Evidence::Discovered {
            server: found.server,
        });
    }
    let yaml = Kubeconfig::bootstrap_yaml(&found.server, &found.ca_pem, &token.expose());
    match write_file(&s.bootstrap_file, yaml.as_bytes(), 0o600).await {
        Ok(()) => log::info!(
            "identity: the cluster's CA is unchanged; {} rewritten for token {:?} and {}",
            s.bootstrap_file.display(),
            token,
            found.server
        ),
        Err(e) => log::warn!("identity: {e}"),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_that_share_a_certificate_are_the_same_cluster() {
        let pem = |b: &[u8]| {
            use base64::Engine;
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        };
        let (a, b) = (pem(b"old ca"), pem(b"new ca"));
        let both = format!("{a}{b}");
        assert!(disjoint(a.as_bytes(), b.as_bytes()));
        assert!(!disjoint(a.as_bytes(), both.as_bytes()));
        assert!(!disjoint(a.as_bytes(), a.as_bytes()));
        // Nothing to compare is no evidence.
        assert!(!disjoint(a.as_bytes(), b"not pem"));
        assert!(!disjoint(b"", b.as_bytes()));
    }
}

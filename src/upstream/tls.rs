//! The two client TLS configurations: node identity and CA-only.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Identity;

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Why the TLS material could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the expected kind.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the material.
    Rejected(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Rejected(e) => write!(f, "TLS configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The client configurations for both identities; each load gets a new generation, so pooled
/// connections made with an older one are not reused.
pub struct Tls {
    node: Arc<ClientConfig>,
    bearer: Arc<ClientConfig>,
    generation: u64,
    has_client_cert: bool,
}

fn file_err(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in file"));
    }
    Ok(certs)
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
}

impl Tls {
    /// Loads the cluster CA from `ca` and the node's certificate chain and key from
    /// `client_pem` (one PEM file, as `yurthub-current.pem` is). A missing or unreadable client
    /// file leaves the node identity without a certificate: the apiserver then answers 401,
    /// which is clearer than refusing to start.
    pub fn load(ca: &Path, client_pem: &Path) -> Result<Tls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let client = read_certs(client_pem).and_then(|certs| {
            let key =
                PrivateKeyDer::from_pem_file(client_pem).map_err(|e| file_err(client_pem, e))?;
            Ok((certs, key))
        });
        let mut node = match client {
            Ok((certs, key)) => builder()
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rejected(e.to_string()))?,
            Err(e) => {
                log::warn!("node client certificate unavailable ({e}); requests without a token will be anonymous");
                builder()
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth()
            }
        };
        let has_client_cert = node.client_auth_cert_resolver.has_certs();
        let mut bearer = builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        for c in [&mut node, &mut bearer] {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(Tls {
            node: Arc::new(node),
            bearer: Arc::new(bearer),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            has_client_cert,
        })
    }

    /// The configuration for `id`.
    pub fn config(&self, id: Identity) -> Arc<ClientConfig> {
        match id {
            Identity::Node => self.node.clone(),
            Identity::Bearer => self.bearer.clone(),
        }
    }

    /// Which load this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the node identity presents a client certificate.
    pub fn has_client_cert(&self) -> bool {
        self.has_client_cert
    }
}

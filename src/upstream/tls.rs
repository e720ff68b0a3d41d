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

/// A client configuration trusting only `ca` (PEM certificates), presenting `identity` (a
/// certificate chain and its key) when given; ALPN http/1.1.
pub fn client_config(
    ca: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::Rejected(format!("not a usable CA certificate: {e}")))?;
    }
    let b = builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((certs, key)) => b
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Rejected(e.to_string()))?,
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate: only for the one request of token discovery that fetches
/// the CA itself, whose answer is then authenticated by the token's signature (and the CA
/// pins), as kubeadm does.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that does not verify the server (see `AnyServer`).
pub fn insecure_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Reads a certificate chain and its private key from one PEM file.
pub fn read_identity(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = read_certs(path)?;
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))?;
    Ok((certs, key))
}

impl Tls {
    /// Loads the cluster CA from `ca` and the node's certificate chain and key from
    /// `client_pem` (one PEM file, as `yurthub-current.pem` is). A missing or unreadable client
    /// file leaves the node identity without a certificate: the apiserver then answers 401,
    /// which is clearer than refusing to start. A missing CA (before the first bootstrap)
    /// leaves nothing trusted: every connection fails until the certificates are in place.
    pub fn load(ca: &Path, client_pem: &Path) -> Result<Tls, TlsError> {
        let roots = match read_certs(ca) {
            Ok(r) => r,
            Err(e) if !ca.exists() => {
                log::warn!("no cluster CA yet ({e}); the cloud is unreachable until bootstrap");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let node = match read_identity(client_pem) {
            Ok(identity) => client_config(&roots, Some(identity))?,
            Err(e) => {
                log::warn!("node client certificate unavailable ({e}); requests without a token will be anonymous");
                client_config(&roots, None)?
            }
        };
        let has_client_cert = node.client_auth_cert_resolver.has_certs();
        let bearer = client_config(&roots, None)?;
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

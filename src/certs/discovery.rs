//! kubeadm-style token discovery: learn the cluster's CA from `kube-public/cluster-info`,
//! trusting it because the bootstrap token signed it (a detached JWS, HS256 keyed by the
//! token secret) and, when given, because its public key matches a pinned hash.

use base64::Engine;
use serde_json::Value;

use super::client::ApiClient;
use super::kubeconfig::Kubeconfig;
use super::x509::Certificate;
use super::CertError;
use crate::upstream::ServerUrl;
use crate::upstream::{client_config, insecure_config};

/// Why the cluster's CA could not be learnt or trusted.
#[derive(Debug)]
pub enum DiscoveryError {
    /// `GET kube-public/cluster-info` answered this status.
    Status(u16),
    /// cluster-info is not JSON.
    NotJson(serde_json::Error),
    /// cluster-info has no `kubeconfig` key.
    NoKubeconfig,
    /// cluster-info is not signed by this token (unknown or expired).
    NotSignedBy(String),
    /// The signature is unusable or does not match: why.
    Signature(&'static str),
    /// The kubeconfig in cluster-info does not parse.
    Kubeconfig(super::kubeconfig::KubeconfigError),
    /// cluster-info carries no CA.
    NoCa,
    /// The CA is not PEM.
    CaNotPem(rustls::pki_types::pem::Error),
    /// The CA certificate does not parse.
    Ca(super::x509::ParseError),
    /// The CA's public key matches none of the pins.
    PinMismatch,
    /// The verified fetch differs from the first.
    Changed,
    /// Neither a pin nor the unsafe skip was given.
    NoTrust,
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "GET kube-public/cluster-info answered {s}"),
            Self::NotJson(e) => write!(f, "cluster-info is not JSON: {e}"),
            Self::NoKubeconfig => write!(f, "cluster-info has no kubeconfig"),
            Self::NotSignedBy(id) => write!(
                f,
                "cluster-info is not signed by token {id:?} (unknown or expired token)"
            ),
            Self::Signature(why) => write!(f, "the cluster-info signature {why}"),
            Self::Kubeconfig(e) => write!(f, "{e}"),
            Self::NoCa => write!(f, "cluster-info carries no CA"),
            Self::CaNotPem(e) => write!(f, "the cluster CA is not PEM: {e}"),
            Self::Ca(e) => write!(f, "the cluster CA: {e}"),
            Self::PinMismatch => write!(
                f,
                "the cluster CA matches none of --discovery-token-ca-cert-hash"
            ),
            Self::Changed => write!(
                f,
                "cluster-info changed between the insecure and the verified fetch"
            ),
            Self::NoTrust => write!(
                f,
                "no CA to verify against: give --discovery-token-ca-cert-hash or --discovery-token-unsafe-skip-ca-verification"
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

impl From<DiscoveryError> for CertError {
    fn from(e: DiscoveryError) -> Self {
        CertError::Discovery(e)
    }
}

const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// A bootstrap token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The public part.
    pub id: String,
    secret: String,
}

// The secret never reaches a log line.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.<secret>", self.id)
    }
}

impl Token {
    /// Checks the token's form.
    pub fn parse(s: &str) -> Result<Token, CertError> {
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(Token {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(CertError::BadToken),
        }
    }

    /// `<id>.<secret>`, as it is sent.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// A `sha256:<hex>` pin of a CA's SubjectPublicKeyInfo.
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let hex = s.trim().strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The pin of a CA certificate.
pub fn pin_of(ca: &Certificate) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, &ca.spki);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Verifies `jws` (`<header>..<signature>`) over `payload` for `token`.
pub fn verify_detached(jws: &str, payload: &str, token: &Token) -> Result<(), CertError> {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bad = |why: &'static str| CertError::Discovery(DiscoveryError::Signature(why));
    let mut parts = jws.split('.');
    let (Some(header), Some(""), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("is not a detached JWS"));
    };
    let h: Value = url
        .decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("has an unreadable header"))?;
    if h["alg"] != "HS256" || h["kid"].as_str().is_some_and(|k| k != token.id) {
        return Err(bad("is not HS256 by this token"));
    }
    let sig = url.decode(sig).map_err(|_| bad("is not base64url"))?;
    let input = format!("{header}.{}", url.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.secret.as_bytes());
    ring::hmac::verify(&key, input.as_bytes(), &sig)
        .map_err(|_| bad("does not match the token (wrong or expired token?)"))
}

/// What discovery found.
pub struct Discovered {
    /// The server it talked to (`https://host:port`), for the bootstrap kubeconfig.
    pub server: String,
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
}

/// How discovery may trust the CA it fetches.
pub struct Trust<'a> {
    /// A CA the hub already trusts (`pki/ca.crt`): the fetch is verified against it.
    pub known_ca: Option<Vec<u8>>,
    /// `--discovery-token-ca-cert-hash` values.
    pub pins: &'a [[u8; 32]],
    /// `--discovery-token-unsafe-skip-ca-verification`.
    pub unsafe_skip: bool,
}

fn ca_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CertError> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(DiscoveryError::CaNotPem)?;
    if certs.is_empty() {
        return Err(DiscoveryError::NoCa.into());
    }
    Ok(certs)
}

async fn fetch(client: &ApiClient) -> Result<Value, CertError> {
    let (status, body) = client.request("GET", CLUSTER_INFO, None).await?;
    if status != 200 {
        return Err(DiscoveryError::Status(status).into());
    }
    Ok(serde_json::from_slice(&body).map_err(DiscoveryError::NotJson)?)
}

/// Fetches and authenticates the cluster CA with `token` from the first answering server.
pub async fn discover(
    servers: &[ServerUrl],
    token: &Token,
    trust: &Trust<'_>,
) -> Result<Discovered, CertError> {
    let mut last = CertError::NoServer;
    for url in servers {
        let verified = match &trust.known_ca {
            Some(ca) => client_config(&ca_certs(ca)?, None).map_err(CertError::Tls)?,
            None => insecure_config(),
        };
        let client = ApiClient::new(vec![url.clone()], verified, None);
        let cm = match fetch(&client).await {
            Ok(cm) => cm,
            Err(e @ CertError::Unreachable { .. }) => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        let payload = cm["data"]["kubeconfig"]
            .as_str()
            .ok_or(DiscoveryError::NoKubeconfig)?;
        let jws = cm["data"][format!("jws-kubeconfig-{}", token.id)]
            .as_str()
            .ok_or_else(|| DiscoveryError::NotSignedBy(token.id.clone()))?;
        verify_detached(jws, payload, token)?;
        let k = Kubeconfig::parse(payload).map_err(DiscoveryError::Kubeconfig)?;
        let ca_pem = k.ca_data.ok_or(DiscoveryError::NoCa)?;
        let certs = ca_certs(&ca_pem)?;
        if !trust.pins.is_empty() {
            let ca = Certificate::parse(&certs[0]).map_err(DiscoveryError::Ca)?;
            if !trust.pins.contains(&pin_of(&ca)) {
                return Err(DiscoveryError::PinMismatch.into());
            }
            if trust.known_ca.is_none() {
                // Now that the CA is trusted, the same answer must come over a verified
                // connection (kubeadm does the same).
                let config = client_config(&certs, None).map_err(CertError::Tls)?;
                let again = fetch(&ApiClient::new(vec![url.clone()], config, None)).await?;
                if again["data"]["kubeconfig"].as_str() != Some(payload) {
                    return Err(DiscoveryError::Changed.into());
                }
            }
        } else if trust.known_ca.is_none() && !trust.unsafe_skip {
            return Err(DiscoveryError::NoTrust.into());
        }
        return Ok(Discovered {
            server: format!("https://{}{}", url.authority(), url.path_prefix),
            ca_pem,
        });
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_pins() {
        assert!(Token::parse("abcdef.0123456789abcdef").is_ok());
        for bad in [
            "",
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "abcdef.<secret>");
        assert_eq!(
            parse_pin(&format!("sha256:{}", "0a".repeat(32))),
            Some([10; 32])
        );
        assert_eq!(parse_pin("sha256:0a"), None);
        assert_eq!(parse_pin(&format!("md5:{}", "0a".repeat(32))), None);
    }

    #[test]
    fn detached_signatures() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = url.encode(r#"{"alg":"HS256","kid":"abcdef"}"#);
        let payload = "apiVersion: v1\n";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef");
        let sig = ring::hmac::sign(&key, format!("{header}.{}", url.encode(payload)).as_bytes());
        let jws = format!("{header}..{}", url.encode(sig.as_ref()));
        assert!(verify_detached(&jws, payload, &t).is_ok());
        assert!(verify_detached(&jws, "apiVersion: v2\n", &t).is_err());
        let other = Token::parse("abcdef.fedcba9876543210").unwrap();
        assert!(verify_detached(&jws, payload, &other).is_err());
        assert!(verify_detached("a.b.c", payload, &t).is_err());
        assert!(verify_detached("", payload, &t).is_err());
    }
}

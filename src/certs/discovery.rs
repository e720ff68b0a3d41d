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
            _ => Err(CertError::BadToken(
                "a bootstrap token has the form [a-z0-9]{6}.[a-z0-9]{16}".into(),
            )),
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
    let bad = |why: &str| CertError::Discovery(format!("the cluster-info signature {why}"));
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
        .map_err(|e| CertError::Discovery(format!("the cluster CA is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Discovery("cluster-info carries no CA".into()));
    }
    Ok(certs)
}

async fn fetch(client: &ApiClient) -> Result<Value, CertError> {
    let (status, body) = client.request("GET", CLUSTER_INFO, None).await?;
    if status != 200 {
        return Err(CertError::Discovery(format!(
            "GET kube-public/cluster-info answered {status}"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| CertError::Discovery(format!("cluster-info is not JSON: {e}")))
}

/// Fetches and authenticates the cluster CA with `token` from the first answering server.
pub async fn discover(
    servers: &[ServerUrl],
    token: &Token,
    trust: &Trust<'_>,
) -> Result<Discovered, CertError> {
    let mut last = CertError::Unreachable("no server configured".into());
    for url in servers {
        let verified = match &trust.known_ca {
            Some(ca) => client_config(&ca_certs(ca)?, None).map_err(CertError::Tls)?,
            None => insecure_config(),
        };
        let client = ApiClient::new(vec![url.clone()], verified, None);
        let cm = match fetch(&client).await {
            Ok(cm) => cm,
            Err(e @ CertError::Unreachable(_)) => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        let payload = cm["data"]["kubeconfig"]
            .as_str()
            .ok_or_else(|| CertError::Discovery("cluster-info has no kubeconfig".into()))?;
        let jws = cm["data"][format!("jws-kubeconfig-{}", token.id)]
            .as_str()
            .ok_or_else(|| {
                CertError::Discovery(format!(
                    "cluster-info is not signed by token {:?} (unknown or expired token)",
                    token.id
                ))
            })?;
        verify_detached(jws, payload, token)?;
        let k = Kubeconfig::parse(payload).map_err(|e| CertError::Discovery(e.to_string()))?;
        let ca_pem = k
            .ca_data
            .ok_or_else(|| CertError::Discovery("cluster-info carries no CA".into()))?;
        let certs = ca_certs(&ca_pem)?;
        if !trust.pins.is_empty() {
            let ca = Certificate::parse(&certs[0])
                .map_err(|e| CertError::Discovery(format!("the cluster CA: {e}")))?;
            if !trust.pins.contains(&pin_of(&ca)) {
                return Err(CertError::Discovery(
                    "the cluster CA matches none of --discovery-token-ca-cert-hash".into(),
                ));
            }
            if trust.known_ca.is_none() {
                // Now that the CA is trusted, the same answer must come over a verified
                // connection (kubeadm does the same).
                let config = client_config(&certs, None).map_err(CertError::Tls)?;
                let again = fetch(&ApiClient::new(vec![url.clone()], config, None)).await?;
                if again["data"]["kubeconfig"].as_str() != Some(payload) {
                    return Err(CertError::Discovery(
                        "cluster-info changed between the insecure and the verified fetch".into(),
                    ));
                }
            }
        } else if trust.known_ca.is_none() && !trust.unsafe_skip {
            return Err(CertError::Discovery(
                "no CA to verify against: give --discovery-token-ca-cert-hash or --discovery-token-unsafe-skip-ca-verification".into(),
            ));
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

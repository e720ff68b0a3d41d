//! A new key, its `certificates.k8s.io/v1` CertificateSigningRequest, and the wait for the
//! cluster to approve and sign it.

use base64::Engine;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::client::ApiClient;
use super::pkcs10::{KeyPair, Subject};
use super::x509::Certificate;
use super::CertError;

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
/// How long a CSR may wait before the log tells the operator how to approve it (clusters
/// without OpenYurt's approver never approve the serving certificate's).
const APPROVAL_HINT: Duration = Duration::from_secs(3 * 60);

/// Why a CSR did not give a certificate.
#[derive(Debug)]
pub enum CsrError {
    /// The apiserver answered a request about the CSR with an error.
    Status {
        /// The request (`creating the CSR`, `reading CSR csr-x`).
        what: String,
        /// Its status code.
        status: u16,
        /// The `metav1.Status` message, or the start of the body.
        message: String,
    },
    /// An answer that is not a CSR object.
    NotJson {
        /// Which answer.
        what: String,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// The created CSR has no name.
    NoName,
    /// The CSR was denied or failed: its condition, reason and message.
    Refused {
        /// The CSR.
        name: String,
        /// `Denied: <reason>: <message>`.
        why: String,
    },
    /// Nobody approved it in time.
    NotApproved {
        /// The CSR.
        name: String,
        /// How long the hub waited.
        wait: Duration,
    },
    /// The issued certificate is unusable.
    BadCertificate {
        /// The CSR.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The issued certificate does not parse.
    Certificate {
        /// The CSR.
        name: String,
        /// The parser's complaint.
        error: super::x509::ParseError,
    },
}

impl std::fmt::Display for CsrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status {
                what,
                status,
                message,
            } => write!(f, "{what}: {status} {message}"),
            Self::NotJson { what, error } => write!(f, "{what} is not JSON: {error}"),
            Self::NoName => write!(f, "the created CSR has no name"),
            Self::Refused { name, why } => write!(f, "CSR {name} {why}"),
            Self::NotApproved { name, wait } => {
                write!(f, "CSR {name} was not approved within {wait:?}")
            }
            Self::BadCertificate { name, why } => write!(f, "CSR {name}: {why}"),
            Self::Certificate { name, error } => write!(f, "CSR {name}: {error}"),
        }
    }
}

impl std::error::Error for CsrError {}

/// What a certificate is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// `spec.signerName`.
    pub signer: String,
    /// Subject CN.
    pub common_name: String,
    /// Subject O values, in order.
    pub organizations: Vec<String>,
    /// DNS alternative names.
    pub dns_names: Vec<String>,
    /// IP alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// `spec.usages`.
    pub usages: &'static [&'static str],
}

/// A signed certificate and its key.
pub struct Issued {
    /// The certificate chain, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The CSR's name, for the log.
    pub csr_name: String,
}

fn csr_pem(template: &Template, key: &KeyPair) -> Result<String, CertError> {
    key.request_pem(&Subject {
        common_name: template.common_name.clone(),
        organizations: template.organizations.clone(),
        dns_names: template.dns_names.clone(),
        ip_addresses: template.ip_addresses.clone(),
    })
    .map_err(CertError::Key)
}

/// What a CSR object says about its fate.
enum Fate {
    Pending,
    Issued(String),
    Refused(String),
}

fn fate(csr: &Value) -> Fate {
    for c in csr["status"]["conditions"].as_array().into_iter().flatten() {
        let kind = c["type"].as_str().unwrap_or("");
        if (kind == "Denied" || kind == "Failed") && c["status"] != "False" {
            return Fate::Refused(format!(
                "{kind}: {}: {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ));
        }
    }
    match csr["status"]["certificate"].as_str() {
        Some(c) if !c.is_empty() => Fate::Issued(c.to_string()),
        _ => Fate::Pending,
    }
}

fn status_error(what: &str, status: u16, body: &[u8]) -> CertError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    CertError::Csr(CsrError::Status {
        what: what.to_string(),
        status,
        message,
    })
}

/// Creates a key and a CSR for `template`, and waits up to `wait` for the signed
/// certificate (upstream waits 15 minutes for an approval).
pub async fn obtain(
    client: &ApiClient,
    template: &Template,
    wait: Duration,
) -> Result<Issued, CertError> {
    let key = KeyPair::generate().map_err(CertError::Key)?;
    let pem = csr_pem(template, &key)?;
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": template.signer,
            "usages": template.usages,
        }
    });
    let body = body.to_string().into_bytes();
    let (status, answer) = client.request("POST", CSRS, Some(&body)).await?;
    if status != 201 {
        return Err(status_error("creating the CSR", status, &answer));
    }
    let created: Value = serde_json::from_slice(&answer).map_err(|error| {
        CertError::Csr(CsrError::NotJson {
            what: "the created CSR".into(),
            error,
        })
    })?;
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(CertError::Csr(CsrError::NoName));
    }
    log::info!(
        "created CSR {name} (signer {}, subject CN={})",
        template.signer,
        template.common_name
    );
    let created_at = Instant::now();
    let deadline = created_at + wait;
    let mut hinted = false;
    let mut csr = created;
    loop {
        match fate(&csr) {
            Fate::Issued(b64) => {
                let chain = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        CertError::Csr(CsrError::BadCertificate {
                            name: name.clone(),
                            why: "the certificate is not base64 PEM",
                        })
                    })?;
                check_issued(&chain, &key, &name)?;
                return Ok(Issued {
                    chain_pem: chain,
                    key_pem: key.private_key_pem(),
                    csr_name: name,
                });
            }
            Fate::Refused(why) => {
                return Err(CertError::Csr(CsrError::Refused { name, why }));
            }
            Fate::Pending => {
                if !hinted && created_at.elapsed() >= APPROVAL_HINT {
                    hinted = true;
                    log::warn!(
                        "CSR {name} (signer {}) has waited {} minutes for approval: approve it with `kubectl certificate approve {name}`",
                        template.signer,
                        created_at.elapsed().as_secs() / 60
                    );
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CertError::Csr(CsrError::NotApproved { name, wait }));
        }
        // Watch the CSR until it changes (or a minute passes), then read it again.
        let rv = csr["metadata"]["resourceVersion"].as_str().unwrap_or("");
        let secs = left.as_secs().clamp(1, 60);
        let watch = format!(
            "{CSRS}?fieldSelector=metadata.name%3D{name}&resourceVersion={rv}&timeoutSeconds={secs}&watch=true"
        );
        let started = Instant::now();
        let watched = client
            .stream("GET", &watch, None, Duration::from_secs(secs + 5), |seen| {
                seen.contains(&b'\n') || seen.ends_with(b"}")
            })
            .await;
        log::debug!(
            "CSR {name}: watch ended: {:?}",
            watched.map(|(s, b)| (s, b.len()))
        );
        if started.elapsed() < Duration::from_secs(1) {
            // A watch refused or cut at once must not turn into a tight loop of requests.
            async_io::Timer::after(Duration::from_secs(1)).await;
        }
        let (status, body) = client
            .request("GET", &format!("{CSRS}/{name}"), None)
            .await?;
        if status != 200 {
            return Err(status_error(&format!("reading CSR {name}"), status, &body));
        }
        csr = serde_json::from_slice(&body).map_err(|error| {
            CertError::Csr(CsrError::NotJson {
                what: format!("CSR {name}"),
                error,
            })
        })?;
    }
}

fn bad(name: &str, why: &'static str) -> CertError {
    CertError::Csr(CsrError::BadCertificate {
        name: name.to_string(),
        why,
    })
}

/// The certificate must be for our key and valid now.
fn check_issued(chain: &str, key: &KeyPair, name: &str) -> Result<(), CertError> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| bad(name, "no certificate in the answer"))?;
    let info = Certificate::parse(&leaf).map_err(|error| {
        CertError::Csr(CsrError::Certificate {
            name: name.to_string(),
            error,
        })
    })?;
    if info.spki != key.spki() {
        return Err(bad(name, "the certificate is not for the requested key"));
    }
    if !info.valid_at(std::time::SystemTime::now()) {
        return Err(bad(name, "the certificate is not valid now (clock skew?)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates() {
        assert!(matches!(fate(&json!({"status": {}})), Fate::Pending));
        assert!(matches!(
            fate(&json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}})),
            Fate::Pending
        ));
        assert!(matches!(
            fate(&json!({"status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "QQ=="}})),
            Fate::Issued(c) if c == "QQ=="
        ));
        assert!(matches!(
            fate(&json!({"status": {"conditions": [{"type": "Denied", "status": "True", "reason": "R", "message": "M"}]}})),
            Fate::Refused(w) if w == "Denied: R: M"
        ));
    }

    #[test]
    fn the_request_carries_the_subject() {
        let key = KeyPair::generate().unwrap();
        let t = Template {
            signer: "kubernetes.io/kubelet-serving".into(),
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["kubernetes".into()],
            ip_addresses: vec![IpAddr::from([169, 254, 2, 1])],
            usages: &["digital signature"],
        };
        let pem = csr_pem(&t, &key).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"system:node:n1"));
        assert!(contains(b"system:nodes"));
        assert!(contains(&[169, 254, 2, 1]));
    }
}

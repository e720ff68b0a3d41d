//! The certificates side of the fake apiserver: bootstrap tokens, the `kube-public/cluster-info`
//! ConfigMap with its detached JWS per token, and a CSR approver and signer.
//!
//! Approval follows the approvers a real OpenYurt cluster runs (reference §7.2, §7.3:
//! yurt-manager's `csrapprover`; and kube-controller-manager's for
//! `kubernetes.io/kube-apiserver-client-kubelet` requests of bootstrappers and of the node
//! itself); anything else stays pending, as it would in a cluster without a matching approver.

use base64::Engine;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::store::{now_rfc3339, ApiError};
use crate::{Pki, User};

/// How the cluster answers new CSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Approve what the cluster's approvers would approve; leave the rest pending.
    Auto,
    /// Leave every CSR pending (approve with `kubectl certificate approve`).
    Manual,
    /// Deny every CSR.
    Deny,
    /// Only kube-controller-manager's approver, as in a cluster without OpenYurt's
    /// yurt-manager: node client certificates of `kube-apiserver-client-kubelet` only.
    StockKubernetes,
}

/// The approver and signer settings.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    pub(crate) approval: Approval,
    pub(crate) lifetime: Duration,
    pub(crate) seen: Vec<CsrRecord>,
}

impl Default for Signer {
    fn default() -> Self {
        Signer {
            approval: Approval::Auto,
            lifetime: Duration::from_secs(365 * 24 * 3600),
            seen: Vec::new(),
        }
    }
}

/// A CSR as the apiserver received it, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrRecord {
    /// `metadata.name`.
    pub name: String,
    /// `spec.signerName`.
    pub signer_name: String,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// Who created it.
    pub username: String,
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations, in order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

/// A CSR's DER, decoded.
pub(crate) struct Parsed {
    der: Vec<u8>,
}

impl Parsed {
    fn request(&self) -> x509_parser::certification_request::X509CertificationRequest<'_> {
        x509_parser::certification_request::X509CertificationRequest::from_der(&self.der)
            .expect("checked in decode")
            .1
    }
}

/// Decodes `spec.request` and checks what kube-apiserver checks on create: PEM, a valid
/// PKCS#10 request whose signature verifies, and a signer name.
pub(crate) fn decode(obj: &Value) -> Result<(Parsed, CsrRecord), ApiError> {
    use rustls::pki_types::pem::PemObject;
    let spec = &obj["spec"];
    let pem = spec["request"]
        .as_str()
        .and_then(|s| b64().decode(s).ok())
        .ok_or_else(|| invalid("spec.request: Invalid value: not base64-encoded PEM"))?;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(&pem)
        .map_err(|e| invalid(format!("spec.request: Invalid value: []byte{{...}}: {e}")))?
        .as_ref()
        .to_vec();
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| invalid(format!("spec.request: Invalid value: []byte{{...}}: {e}")))?;
    csr.verify_signature()
        .map_err(|e| invalid(format!("spec.request: Invalid value: signature: {e}")))?;
    let signer_name = spec["signerName"].as_str().unwrap_or("").to_string();
    if signer_name.is_empty() {
        return Err(invalid("spec.signerName: Required value"));
    }
    let info = &csr.certification_request_info;
    let text =
        |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().unwrap_or("").to_string();
    let mut record = CsrRecord {
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
        signer_name,
        usages: spec["usages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        username: spec["username"].as_str().unwrap_or("").to_string(),
        common_name: info
            .subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: info.subject.iter_organization().map(text).collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => record.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => record
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                        16 => record
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                        _ => return Err(invalid("spec.request: Invalid value: bad IP address")),
                    },
                    _ => {}
                }
            }
        }
    }
    Ok((Parsed { der }, record))
}

fn same_set(have: &[String], want: &[&str]) -> bool {
    have.len() == want.len() && want.iter().all(|w| have.iter().any(|h| h == w))
}

/// Whether one of the cluster's approvers approves `r` created by `user`.
fn approvable(r: &CsrRecord, user: &User) -> Option<&'static str> {
    let node_cn = r.common_name.starts_with("system:node:");
    match r.signer_name.as_str() {
        // yurt-manager csrapprover: the hub's client certificate.
        "kubernetes.io/kube-apiserver-client"
            if node_cn
                && r.organizations.len() >= 2
                && r.organizations.iter().all(|o| {
                    o == "openyurt:yurthub"
                        || o == "system:nodes"
                        || o.starts_with("openyurt:tenant:")
                })
                && same_set(
                    &r.usages,
                    &["digital signature", "key encipherment", "client auth"],
                ) =>
        {
            Some("Auto approving yurthub client certificate")
        }
        // yurt-manager csrapprover: the hub's serving certificate.
        "kubernetes.io/kubelet-serving"
            if node_cn
                && r.organizations == ["system:nodes"]
                && (!r.dns_names.is_empty() || !r.ip_addresses.is_empty())
                && same_set(
                    &r.usages,
                    &["digital signature", "key encipherment", "server auth"],
                ) =>
        {
            Some("Auto approving yurt TLS server certificate")
        }
        // kube-controller-manager: node client certificates of bootstrappers and self-renewals.
        "kubernetes.io/kube-apiserver-client-kubelet"
            if node_cn
                && r.organizations == ["system:nodes"]
                && (same_set(&r.usages, &["digital signature", "client auth"])
                    || same_set(
                        &r.usages,
                        &["digital signature", "key encipherment", "client auth"],
                    ))
                && (user.groups.iter().any(|g| g == "system:bootstrappers")
                    || user.name == r.common_name) =>
        {
            Some("Auto approving kubelet client certificate after SubjectAccessReview.")
        }
        _ => None,
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastUpdateTime": now, "lastTransitionTime": now})
}

/// Fills what kube-apiserver fills on create: the requesting user.
pub(crate) fn on_create(obj: &mut Value, user: &User) {
    obj["spec"]["username"] = json!(user.name);
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    obj["spec"]["groups"] = json!(groups);
    obj["status"] = json!({});
}

/// The status the approver gives a new CSR (none: it stays pending).
pub(crate) fn decide(signer: &Signer, record: &CsrRecord, user: &User) -> Option<Value> {
    match signer.approval {
        Approval::Manual => None,
        Approval::Deny => Some(
            json!({"conditions": [condition("Denied", "TestDenied", "denied by the test cluster's policy")]}),
        ),
        Approval::Auto => approvable(record, user)
            .map(|m| json!({"conditions": [condition("Approved", "AutoApproved", m)]})),
        Approval::StockKubernetes => approvable(record, user)
            .filter(|_| record.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
            .map(|m| json!({"conditions": [condition("Approved", "AutoApproved", m)]})),
    }
}

/// Whether `status` carries an `Approved` condition and no `Denied` one.
pub(crate) fn is_approved(status: &Value) -> bool {
    let conds = status["conditions"].as_array().cloned().unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    has("Approved") && !has("Denied") && !has("Failed")
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn utc_time(t: SystemTime) -> Vec<u8> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let rfc = crate::store::rfc3339(secs); // 2026-11-29T09:30:00Z
    let digits: String = rfc.chars().filter(|c| c.is_ascii_digit()).collect();
    tlv(0x17, format!("{}Z", &digits[2..14]).as_bytes())
}

const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// Issues the certificate an approved CSR asked for, as kube-controller-manager's signer
/// does: the request's subject and key, alternative names, key usages from `spec.usages`,
/// not a CA. Returns `status.certificate`.
pub(crate) fn sign(
    pki: &Pki,
    lifetime: Duration,
    parsed: &Parsed,
    record: &CsrRecord,
) -> Result<String, String> {
    let csr = parsed.request();
    let info = &csr.certification_request_info;
    let now = SystemTime::now();
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|e| e.to_string())?;
    serial[0] &= 0x7f;
    serial[0] |= 0x40;
    // keyUsage: digitalSignature (bit 0), keyEncipherment (bit 2).
    let ku = if record.usages.iter().any(|u| u == "key encipherment") {
        [0x05, 0xa0]
    } else {
        [0x07, 0x80]
    };
    let mut ekus = Vec::new();
    if record.usages.iter().any(|u| u == "server auth") {
        ekus.extend(tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]));
    }
    if record.usages.iter().any(|u| u == "client auth") {
        ekus.extend(tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]));
    }
    let critical = tlv(0x01, &[0xff]);
    let mut exts = vec![
        seq(&[
            &tlv(0x06, &[0x55, 0x1d, 0x0f]),
            &critical,
            &tlv(0x04, &tlv(0x03, &ku)),
        ]),
        seq(&[
            &tlv(0x06, &[0x55, 0x1d, 0x25]),
            &tlv(0x04, &tlv(0x30, &ekus)),
        ]),
        seq(&[
            &tlv(0x06, &[0x55, 0x1d, 0x13]),
            &critical,
            &tlv(0x04, &seq(&[])),
        ]),
    ];
    let mut names = Vec::new();
    for d in &record.dns_names {
        names.extend(tlv(0x82, d.as_bytes()));
    }
    for ip in &record.ip_addresses {
        match ip {
            IpAddr::V4(a) => names.extend(tlv(0x87, &a.octets())),
            IpAddr::V6(a) => names.extend(tlv(0x87, &a.octets())),
        }
    }
    if !names.is_empty() {
        exts.push(seq(&[
            &tlv(0x06, &[0x55, 0x1d, 0x11]),
            &tlv(0x04, &tlv(0x30, &names)),
        ]));
    }
    let exts: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let tbs = seq(&[
        &tlv(0xa0, &tlv(0x02, &[2])),
        &tlv(0x02, &serial),
        &seq(&[ECDSA_SHA256]),
        &pki.ca_subject_der(),
        &seq(&[
            &utc_time(now - Duration::from_secs(1)),
            &utc_time(now + lifetime),
        ]),
        info.subject.as_raw(),
        info.subject_pki.raw,
        &tlv(0xa3, &seq(&exts)),
    ]);
    let sig = pki.ca_sign(&tbs);
    let mut bits = vec![0u8];
    bits.extend(sig);
    let der = seq(&[&tbs, &seq(&[ECDSA_SHA256]), &tlv(0x03, &bits)]);
    let body = b64().encode(&der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let groups: Vec<&str> = record.organizations.iter().map(String::as_str).collect();
    pki.register(&pem, &record.common_name, &groups);
    Ok(b64().encode(pem))
}

/// The `kube-public/cluster-info` ConfigMap kubeadm publishes: the cluster's address and CA as
/// a kubeconfig, and one detached JWS per bootstrap token.
pub(crate) fn cluster_info(server: &str, ca_pem: &str, tokens: &[(String, String)]) -> Value {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts: null\nusers: null\ncurrent-context: \"\"\npreferences: {{}}\n",
        b64().encode(ca_pem)
    );
    let mut data = serde_json::Map::new();
    for (id, secret) in tokens {
        data.insert(
            format!("jws-kubeconfig-{id}"),
            json!(detached_jws(&kubeconfig, id, secret)),
        );
    }
    data.insert("kubeconfig".into(), json!(kubeconfig));
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "cluster-info", "namespace": "kube-public"}, "data": data})
}

/// `header..signature`: HS256 keyed by the token secret over `payload`, as
/// `k8s.io/cluster-bootstrap/token/jws` computes it.
pub fn detached_jws(payload: &str, token_id: &str, secret: &str) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = url.encode(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#));
    let input = format!("{header}.{}", url.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("{header}..{}", url.encode(sig.as_ref()))
}

/// Creates a CSR (`POST`) or changes its approval (`PUT .../approval`), approving and signing
/// as the cluster would. `None`: not such a request.
pub(crate) fn handle(
    shared: &crate::Shared,
    req: &crate::wire::Request,
    rp: &crate::serve::ResourcePath,
    user: &User,
) -> Option<Result<(u16, Value), ApiError>> {
    if rp.rtype.resource != "certificatesigningrequests" {
        return None;
    }
    let body = || crate::serve::json_body(req);
    let t = &rp.rtype;
    match (req.method.as_str(), rp.name.as_deref(), rp.sub.as_deref()) {
        ("POST", None, None) => Some((|| {
            let mut obj = body()?;
            on_create(&mut obj, user);
            let (params, _) = decode(&obj)?;
            let created = shared.store.lock().unwrap().create(t, "", obj)?;
            let (_, record) = decode(&created)?;
            let mut signer = shared.signer.lock().unwrap();
            signer.seen.push(record.clone());
            let Some(status) = decide(&signer, &record, user) else {
                return Ok((201, created));
            };
            let (approval, lifetime) = (status, signer.lifetime);
            drop(signer);
            settle(shared, &record.name, approval, Some(params), lifetime)?;
            Ok((201, created))
        })()),
        ("PUT", Some(name), Some("approval")) => Some((|| {
            let obj = body()?;
            let lifetime = shared.signer.lock().unwrap().lifetime;
            let conditions = json!({"conditions": obj["status"]["conditions"].clone()});
            let updated = settle(shared, name, conditions, None, lifetime)?;
            Ok((200, updated))
        })()),
        _ => None,
    }
}

/// Writes an approval decision and, for an approval, the signed certificate.
fn settle(
    shared: &crate::Shared,
    name: &str,
    mut status: Value,
    params: Option<Parsed>,
    lifetime: Duration,
) -> Result<Value, ApiError> {
    let t = crate::store::builtin_types()
        .into_iter()
        .find(|t| t.resource == "certificatesigningrequests")
        .expect("a built-in type");
    let mut store = shared.store.lock().unwrap();
    let current = store.get(&t, "", name)?;
    let (parsed, record) = decode(&current)?;
    let approved = is_approved(&status);
    let mut obj = current.clone();
    obj["status"] = status.clone();
    obj["metadata"]["resourceVersion"] = json!("");
    let mut updated = store.update(&t, "", name, obj, true)?;
    if approved {
        // The signer controller acts on the approved object, as a separate write.
        match sign(
            &shared.pki,
            lifetime,
            params.as_ref().unwrap_or(&parsed),
            &record,
        ) {
            Ok(cert) => status["certificate"] = json!(cert),
            Err(e) => {
                status["conditions"]
                    .as_array_mut()
                    .expect("conditions set above")
                    .push(condition("Failed", "SignerValidationFailure", &e));
            }
        }
        let mut obj = updated.clone();
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!("");
        updated = store.update(&t, "", name, obj, true)?;
    }
    drop(store);
    shared.notify();
    Ok(updated)
}

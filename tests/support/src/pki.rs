//! A throw-away cluster CA, the apiserver's serving certificate, and client certificates whose
//! users the apiserver recognises.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Who a request authenticates as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name (certificate CN, or the token's user).
    pub name: String,
    /// The groups (certificate O values).
    pub groups: Vec<String>,
}

/// The cluster CA and the users it has issued certificates to.
#[derive(Clone)]
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    ca_key: Arc<KeyPair>,
    ca_params: Arc<CertificateParams>,
    /// The apiserver's certificate and key, PEM.
    pub server_cert_pem: String,
    /// The apiserver's key, PEM.
    pub server_key_pem: String,
    users: Arc<Mutex<HashMap<Vec<u8>, User>>>,
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("rcgen wrote a PEM certificate")
        .to_vec()
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A new CA and a serving certificate for `127.0.0.1`, `::1` and `localhost`.
    pub fn new() -> Pki {
        Self::for_addresses(&[])
    }

    /// Like [`Pki::new`], the apiserver's certificate also valid for `extra` addresses.
    pub fn for_addresses(extra: &[std::net::IpAddr]) -> Pki {
        let ca_key = KeyPair::generate().expect("P-256 key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test-cluster-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let mut pki = Pki {
            ca_pem: ca_cert.pem(),
            ca_key: Arc::new(ca_key),
            ca_params: Arc::new(ca_params),
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            users: Arc::default(),
        };
        let key = KeyPair::generate().expect("P-256 key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        for ip in extra {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &pki.issuer()).expect("server cert");
        pki.server_cert_pem = cert.pem();
        pki.server_key_pem = key.serialize_pem();
        pki
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.ca_params, &*self.ca_key)
    }

    /// Issues a client certificate for `cn` in `groups`, valid from `not_before` to
    /// `not_after`; returns the certificate and key in one PEM, as the hub stores them.
    fn client_pem_between(
        &self,
        cn: &str,
        groups: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> String {
        let key = KeyPair::generate().expect("P-256 key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer()).expect("client cert");
        self.register(&cert.pem(), cn, groups);
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    /// Issues a client certificate for `cn` in `groups`, valid for `lifetime`; returns the
    /// certificate and key in one PEM, as the hub stores them.
    pub fn client_pem_valid_for(&self, cn: &str, groups: &[&str], lifetime: Duration) -> String {
        let now = SystemTime::now();
        self.client_pem_between(cn, groups, now - Duration::from_secs(60), now + lifetime)
    }

    /// The CA's subject, DER (the issuer of what it signs).
    pub(crate) fn ca_subject_der(&self) -> Vec<u8> {
        use x509_parser::prelude::FromDer;
        let der = pem_to_der(&self.ca_pem);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .expect("rcgen wrote a parsable CA");
        cert.tbs_certificate.subject.as_raw().to_vec()
    }

    /// An ECDSA-SHA256 signature by the CA key over `message`.
    pub(crate) fn ca_sign(&self, message: &[u8]) -> Vec<u8> {
        use rcgen::SigningKey;
        self.ca_key.sign(message).expect("the CA key signs")
    }

    /// A serving certificate for the hub (`system:node:<node>`, for `169.254.2.1` and
    /// `127.0.0.1`), valid for
    /// `lifetime`, certificate and key in one PEM.
    pub fn serving_pem(&self, node: &str, lifetime: Duration) -> String {
        let key = KeyPair::generate().expect("P-256 key");
        let mut params = CertificateParams::new(vec!["kubernetes".to_string()]).expect("params");
        // The addresses a hub with default flags asks for: its dummy and loopback ones.
        for ip in [[169, 254, 2, 1], [127, 0, 0, 1]] {
            params.subject_alt_names.push(SanType::IpAddress(ip.into()));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, format!("system:node:{node}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + lifetime).into();
        let cert = params
            .signed_by(&key, &self.issuer())
            .expect("serving cert");
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    /// `sha256:<hex>` of the CA's public key, as `--discovery-token-ca-cert-hash` takes it.
    pub fn ca_pin(&self) -> String {
        use rcgen::PublicKeyData;
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            &self.ca_key.subject_public_key_info(),
        );
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// A client certificate for `cn` in `groups` that expired an hour ago.
    pub fn expired_client_pem(&self, cn: &str, groups: &[&str]) -> String {
        let now = SystemTime::now();
        self.client_pem_between(
            cn,
            groups,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
    }

    /// A one-year client certificate for `cn` in `groups`.
    pub fn client_pem(&self, cn: &str, groups: &[&str]) -> String {
        self.client_pem_valid_for(cn, groups, Duration::from_secs(365 * 24 * 3600))
    }

    /// Makes the apiserver recognise the holder of `cert_pem` as `cn` in `groups`.
    pub fn register(&self, cert_pem: &str, cn: &str, groups: &[&str]) {
        let user = User {
            name: cn.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        self.users
            .lock()
            .unwrap()
            .insert(pem_to_der(cert_pem), user);
    }

    /// The user a presented certificate (DER) was issued to.
    pub fn user_of(&self, der: &[u8]) -> Option<User> {
        self.users.lock().unwrap().get(der).cloned()
    }

    /// Writes what the hub needs under `root_dir`: `pki/ca.crt`, `pki/yurthub-current.pem`
    /// (a node client certificate for `node`) and `pki/yurthub-server-current.pem`.
    pub fn write_hub_files(&self, root_dir: &Path, node: &str) {
        let pki = root_dir.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        std::fs::write(pki.join("ca.crt"), &self.ca_pem).unwrap();
        let pem = self.client_pem(
            &format!("system:node:{node}"),
            &["system:nodes", "openyurt:yurthub"],
        );
        std::fs::write(pki.join("yurthub-current.pem"), pem).unwrap();
        let serving = self.serving_pem(node, Duration::from_secs(365 * 24 * 3600));
        std::fs::write(pki.join("yurthub-server-current.pem"), serving).unwrap();
    }
}

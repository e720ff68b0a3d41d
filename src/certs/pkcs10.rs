//! An ECDSA P-256 key (ring) and its PKCS#10 certificate request, DER-encoded by hand.
//!
//! The hub's client certificate needs two organizations (`openyurt:yurthub`,
//! `system:nodes`) in its subject; certificate libraries that model a subject as one value per
//! attribute type cannot express that, and a CSR is a small, fixed structure (RFC 2986).
//!
//! ```
//! use yurthub::certs::pkcs10::{KeyPair, Subject};
//! let key = KeyPair::generate().unwrap();
//! let subject = Subject { common_name: "system:node:pi-1".into(), organizations: vec!["system:nodes".into()],
//!                         dns_names: vec![], ip_addresses: vec![] };
//! let pem = key.request_pem(&subject).unwrap();
//! assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
//! ```

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::net::IpAddr;

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// Who a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// CN.
    pub common_name: String,
    /// O values, in order.
    pub organizations: Vec<String>,
    /// DNS alternative names.
    pub dns_names: Vec<String>,
    /// IP alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

/// A P-256 key pair.
pub struct KeyPair {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

/// One DER element.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(o: &[u8]) -> Vec<u8> {
    tlv(0x06, o)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Why a key or a request could not be made.
#[derive(Debug)]
pub enum KeyError {
    /// The system's random source failed.
    Generate(ring::error::Unspecified),
    /// The new key did not load back.
    Load(ring::error::KeyRejected),
    /// The request could not be signed.
    Sign(ring::error::Unspecified),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Generate(e) => write!(f, "generating a P-256 key: {e}"),
            Self::Load(e) => write!(f, "loading the new key: {e}"),
            Self::Sign(e) => write!(f, "signing the request: {e}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl KeyPair {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<KeyPair, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(KeyError::Generate)?;
        let pkcs8 = doc.as_ref().to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
            .map_err(KeyError::Load)?;
        Ok(KeyPair { pkcs8, pair })
    }

    /// The private key as PKCS#8 PEM (`PRIVATE KEY`).
    pub fn private_key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> Vec<u8> {
        seq(&[
            &seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_P256)]),
            &bit_string(self.pair.public_key().as_ref()),
        ])
    }

    /// The signed PKCS#10 request for `subject`, DER.
    pub fn request_der(&self, subject: &Subject) -> Result<Vec<u8>, KeyError> {
        let mut rdns = Vec::new();
        // Go's crypto/x509 order: O before CN.
        for o in &subject.organizations {
            rdns.extend(tlv(0x31, &seq(&[&oid(OID_O), &tlv(0x0c, o.as_bytes())])));
        }
        rdns.extend(tlv(
            0x31,
            &seq(&[&oid(OID_CN), &tlv(0x0c, subject.common_name.as_bytes())]),
        ));
        let name = tlv(0x30, &rdns);
        let mut general_names = Vec::new();
        for d in &subject.dns_names {
            general_names.extend(tlv(0x82, d.as_bytes()));
        }
        for ip in &subject.ip_addresses {
            match ip {
                IpAddr::V4(a) => general_names.extend(tlv(0x87, &a.octets())),
                IpAddr::V6(a) => general_names.extend(tlv(0x87, &a.octets())),
            }
        }
        let attributes = if general_names.is_empty() {
            tlv(0xa0, &[])
        } else {
            let san = seq(&[&oid(OID_SAN), &tlv(0x04, &tlv(0x30, &general_names))]);
            let extensions = seq(&[&san]);
            tlv(
                0xa0,
                &seq(&[&oid(OID_EXTENSION_REQUEST), &tlv(0x31, &extensions)]),
            )
        };
        let info = seq(&[&tlv(0x02, &[0]), &name, &self.spki(), &attributes]);
        let sig = self
            .pair
            .sign(&SystemRandom::new(), &info)
            .map_err(KeyError::Sign)?;
        Ok(seq(&[
            &info,
            &seq(&[&oid(OID_ECDSA_SHA256)]),
            &bit_string(sig.as_ref()),
        ]))
    }

    /// The signed request as PEM (`CERTIFICATE REQUEST`).
    pub fn request_pem(&self, subject: &Subject) -> Result<String, KeyError> {
        Ok(pem("CERTIFICATE REQUEST", &self.request_der(subject)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn the_request_verifies_and_carries_every_organization() {
        let key = KeyPair::generate().unwrap();
        let s = Subject {
            common_name: "system:node:n1".into(),
            organizations: vec!["openyurt:yurthub".into(), "system:nodes".into()],
            dns_names: vec!["kubernetes".into()],
            ip_addresses: vec![IpAddr::from([169, 254, 2, 1])],
        };
        let der = key.request_der(&s).unwrap();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"openyurt:yurthub") && contains(b"system:nodes"));
        assert!(contains(b"system:node:n1") && contains(b"kubernetes"));
        assert!(contains(&[0x87, 4, 169, 254, 2, 1]));
        // The signature over the CertificationRequestInfo verifies with the public key.
        let mut outer = super::super::x509::Der(&der);
        let mut csr = super::super::x509::Der(outer.expect(0x30, "csr").unwrap());
        let info = csr.raw().unwrap();
        csr.expect(0x30, "algorithm").unwrap();
        let sig = &csr.expect(0x03, "signature").unwrap()[1..];
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.pair.public_key().as_ref(),
        );
        public.verify(info, sig).unwrap();
        assert!(key
            .private_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }
}

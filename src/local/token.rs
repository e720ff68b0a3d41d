//! The offline answer to a TokenRequest (`POST serviceaccounts/<name>/token`), which kubelet
//! sends for every pod's projected service-account token: a short-lived token upstream
//! YurtHub's way (reference §4), for the audiences and bound object the request names, in JSON
//! or protobuf (kubelet speaks protobuf).
//!
//! The token is signed with the literal key `openyurt`, so no real apiserver accepts it; it
//! lives one minute, so that once the cloud is back kubelet fetches a real one within a minute.
//! The answer's `spec.expirationSeconds` says so: kubelet plans its refresh from it (and
//! refuses an answer without it).

use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;

use crate::kube::protobuf::{self, Field, ProtobufError};

/// How long an offline token lives, at most.
pub const FAKE_TOKEN_SECONDS: i64 = 60;

/// The object a token is bound to (a pod, usually).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct BoundObjectRef {
    /// `Pod` or `Secret`.
    #[serde(default)]
    pub kind: String,
    /// Its API version.
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// What a TokenRequest asks for.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TokenRequestSpec {
    /// The audiences; empty means the apiserver's own.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The validity asked for, in seconds.
    #[serde(default, rename = "expirationSeconds")]
    pub expiration_seconds: Option<i64>,
    /// The object the token is bound to.
    #[serde(default, rename = "boundObjectRef")]
    pub bound_object_ref: Option<BoundObjectRef>,
}

/// Why a TokenRequest body could not be read.
#[derive(Debug)]
pub enum TokenRequestError {
    /// A protobuf body that is not a well-formed TokenRequest.
    Protobuf(ProtobufError),
    /// A protobuf envelope around something else.
    NotATokenRequest(String),
}

impl fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protobuf(e) => write!(f, "TokenRequest body: {e}"),
            Self::NotATokenRequest(kind) => {
                write!(
                    f,
                    "TokenRequest body: the object is a {kind:?}, not a TokenRequest"
                )
            }
        }
    }
}

impl std::error::Error for TokenRequestError {}

impl From<ProtobufError> for TokenRequestError {
    fn from(e: ProtobufError) -> Self {
        Self::Protobuf(e)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl TokenRequestSpec {
    /// Reads the spec of a request body in the encoding its `Content-Type` names. A JSON body
    /// that is no object, or has no usable spec, asks for nothing in particular (upstream
    /// answers those too).
    pub fn from_body(body: &[u8], content_type: Option<&str>) -> Result<Self, TokenRequestError> {
        if protobuf::is_protobuf(content_type) || body.starts_with(protobuf::MAGIC) {
            return Self::from_protobuf(body);
        }
        #[derive(Deserialize)]
        struct Request {
            spec: Option<TokenRequestSpec>,
        }
        Ok(serde_json::from_slice::<Request>(body)
            .ok()
            .and_then(|r| r.spec)
            .unwrap_or_default())
    }

    /// `TokenRequest{metadata=1, spec=2{audiences=1, boundObjectRef=3{kind=1, apiVersion=2,
    /// name=3, uid=4}, expirationSeconds=4}}` in its envelope.
    fn from_protobuf(body: &[u8]) -> Result<Self, TokenRequestError> {
        let object = protobuf::unwrap(body)?;
        if !object.kind.is_empty() && object.kind != b"TokenRequest" {
            return Err(TokenRequestError::NotATokenRequest(text(object.kind)));
        }
        let mut spec = TokenRequestSpec::default();
        for f in protobuf::fields(object.raw) {
            let (2, Field::Bytes(raw_spec)) = f? else {
                continue;
            };
            for g in protobuf::fields(raw_spec) {
                match g? {
                    (1, Field::Bytes(a)) => spec.audiences.push(text(a)),
                    (4, Field::Varint(s)) => spec.expiration_seconds = Some(s as i64),
                    (3, Field::Bytes(r)) => {
                        let mut bound = BoundObjectRef::default();
                        for h in protobuf::fields(r) {
                            match h? {
                                (1, Field::Bytes(v)) => bound.kind = text(v),
                                (2, Field::Bytes(v)) => bound.api_version = text(v),
                                (3, Field::Bytes(v)) => bound.name = text(v),
                                (4, Field::Bytes(v)) => bound.uid = text(v),
                                _ => {}
                            }
                        }
                        spec.bound_object_ref = Some(bound);
                    }
                    _ => {}
                }
            }
        }
        Ok(spec)
    }
}

fn base64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A token for `system:serviceaccount:<namespace>:<name>` as upstream makes them offline:
/// HS256 over the key `openyurt`, issuer `openyurt`, valid `lifetime` seconds from now; and
/// its expiry as RFC 3339.
pub fn fake_token(
    namespace: &str,
    name: &str,
    audiences: &[String],
    lifetime: i64,
) -> (String, String) {
    let now = crate::kube::time::now_secs();
    let exp = now + lifetime.max(0) as u64;
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut claims = json!({"iss": "openyurt", "sub": format!("system:serviceaccount:{namespace}:{name}"),
               "iat": now, "nbf": now, "exp": exp});
    if !audiences.is_empty() {
        claims["aud"] = json!(audiences);
    }
    let signing_input = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"openyurt");
    let sig = ring::hmac::sign(&key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", base64url(sig.as_ref()));
    (token, crate::kube::time::format(exp, None))
}

/// The JSON TokenRequest answered for `spec` on service account `namespace/name`: the spec as
/// granted (at most [`FAKE_TOKEN_SECONDS`]) and a status with the token.
pub fn answer(namespace: &str, name: &str, spec: &TokenRequestSpec) -> Vec<u8> {
    let lifetime = spec
        .expiration_seconds
        .map_or(FAKE_TOKEN_SECONDS, |s| s.clamp(0, FAKE_TOKEN_SECONDS));
    let (token, expires) = fake_token(namespace, name, &spec.audiences, lifetime);
    let mut granted = json!({"audiences": spec.audiences, "expirationSeconds": lifetime});
    if let Some(b) = &spec.bound_object_ref {
        granted["boundObjectRef"] = json!({"kind": b.kind, "apiVersion": b.api_version,
                                           "name": b.name, "uid": b.uid});
    }
    let body: Value = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": crate::kube::time::format(crate::kube::time::now_secs(), None)},
        "spec": granted,
        "status": {"token": token, "expirationTimestamp": expires}
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TokenRequest as kube-apiserver 1.36 encodes it in protobuf: its answer to a request
    /// for audiences `aud-x`, `aud-y`, 3607 s, bound to pod `web-1`, with the status (the
    /// token) taken out.
    const REAL: &[u8] = include_bytes!("testdata/tokenrequest-1.36.pb");

    #[test]
    fn a_protobuf_request_is_read_like_a_json_one() {
        let pb = TokenRequestSpec::from_body(REAL, Some(protobuf::MEDIA_TYPE)).unwrap();
        let js = TokenRequestSpec::from_body(
            br#"{"spec":{"audiences":["aud-x","aud-y"],"expirationSeconds":3607,
                "boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"web-1",
                "uid":"1aff0896-baed-4294-8935-4b5ee7b55907"}}}"#,
            Some("application/json"),
        )
        .unwrap();
        assert_eq!(pb, js);
        assert_eq!(pb.expiration_seconds, Some(3607));
        assert_eq!(pb.bound_object_ref.as_ref().unwrap().name, "web-1");
    }

    #[test]
    fn the_answer_grants_a_minute_and_names_its_audiences() {
        let spec = TokenRequestSpec::from_body(REAL, None).unwrap();
        let v: Value = serde_json::from_slice(&answer("default", "default", &spec)).unwrap();
        assert_eq!(v["spec"]["expirationSeconds"], 60);
        assert_eq!(v["spec"]["audiences"], json!(["aud-x", "aud-y"]));
        assert_eq!(
            v["spec"]["boundObjectRef"]["uid"],
            "1aff0896-baed-4294-8935-4b5ee7b55907"
        );
        let token = v["status"]["token"].as_str().unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"openyurt");
        let sig = ring::hmac::sign(&key, format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(parts[2], base64url(sig.as_ref()));
        use base64::Engine;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], json!(["aud-x", "aud-y"]));
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
    }

    #[test]
    fn damaged_protobuf_is_refused_and_odd_json_asks_for_nothing() {
        let cut = &REAL[..REAL.len() - 20];
        assert!(TokenRequestSpec::from_body(cut, Some(protobuf::MEDIA_TYPE)).is_err());
        let pod = b"k8s\0\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00";
        assert!(matches!(
            TokenRequestSpec::from_body(pod, None),
            Err(TokenRequestError::NotATokenRequest(_))
        ));
        for odd in [&b"[]"[..], b"7", b"{\"spec\":3}", b""] {
            assert_eq!(
                TokenRequestSpec::from_body(odd, Some("application/json")).unwrap(),
                TokenRequestSpec::default()
            );
        }
    }
}

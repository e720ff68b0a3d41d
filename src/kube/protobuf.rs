//! Just enough of Kubernetes' protobuf encoding to read a few fields of a body the hub must
//! answer itself (kubelet's offline TokenRequest): the `k8s\0` envelope around a
//! `runtime.Unknown`, and protobuf's wire format. Everything else in protobuf passes through
//! the hub untouched, so nothing here encodes.
//!
//! ```
//! use yurthub::kube::protobuf::{self, Field};
//! // A TokenRequestSpec { expirationSeconds: 600 } inside an envelope.
//! let body = b"k8s\0\x0a\x00\x12\x05\x12\x03\x20\xd8\x04";
//! let object = protobuf::unwrap(body).unwrap();
//! let spec = protobuf::fields(object.raw).find_map(|f| match f {
//!     Ok((2, Field::Bytes(b))) => Some(b),
//!     _ => None,
//! });
//! let seconds = protobuf::fields(spec.unwrap()).find_map(|f| match f {
//!     Ok((4, Field::Varint(v))) => Some(v),
//!     _ => None,
//! });
//! assert_eq!(seconds, Some(600));
//! ```

use std::fmt;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a body could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtobufError {
    /// The body does not start with [`MAGIC`].
    NoMagic,
    /// A varint runs past the end or past ten bytes.
    BadVarint,
    /// A length-delimited field claims more bytes than there are.
    Truncated,
    /// A wire type protobuf 3 does not use (groups, or 6 and 7).
    BadWireType(u8),
    /// The envelope carries no `raw` object.
    NoObject,
}

impl fmt::Display for ProtobufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMagic => write!(f, "not a Kubernetes protobuf body (no k8s\\0 prefix)"),
            Self::BadVarint => write!(f, "malformed protobuf varint"),
            Self::Truncated => write!(f, "protobuf field runs past the end of the body"),
            Self::BadWireType(t) => write!(f, "unsupported protobuf wire type {t}"),
            Self::NoObject => write!(f, "protobuf envelope without an object"),
        }
    }
}

impl std::error::Error for ProtobufError {}

/// One field's value as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// Wire type 0: integers and booleans.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: strings, bytes and embedded messages.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// The fields of one message in wire order; a malformed field yields an error and ends it.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates over the fields of the message `buf`.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(ProtobufError::BadVarint)?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::BadVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self.pos.checked_add(n).ok_or(ProtobufError::Truncated)?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtobufError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn field(&mut self) -> Result<(u64, Field<'a>), ProtobufError> {
        let key = self.varint()?;
        let value = match (key & 7) as u8 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("eight bytes"),
            )),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Truncated)?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("four bytes"),
            )),
            t => return Err(ProtobufError::BadWireType(t)),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let f = self.field();
        self.failed = f.is_err();
        Some(f)
    }
}

/// The object inside an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown<'a> {
    /// `typeMeta.apiVersion`.
    pub api_version: &'a [u8],
    /// `typeMeta.kind`.
    pub kind: &'a [u8],
    /// The object's own message.
    pub raw: &'a [u8],
}

/// Opens the `k8s\0` envelope (`runtime.Unknown{typeMeta=1{apiVersion=1, kind=2}, raw=2}`).
pub fn unwrap(body: &[u8]) -> Result<Unknown<'_>, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut out = Unknown {
        api_version: b"",
        kind: b"",
        raw: b"",
    };
    let mut has_raw = false;
    for f in fields(rest) {
        match f? {
            (1, Field::Bytes(type_meta)) => {
                for t in fields(type_meta) {
                    match t? {
                        (1, Field::Bytes(v)) => out.api_version = v,
                        (2, Field::Bytes(k)) => out.kind = k,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(raw)) => {
                out.raw = raw;
                has_raw = true;
            }
            _ => {}
        }
    }
    if has_raw {
        Ok(out)
    } else {
        Err(ProtobufError::NoObject)
    }
}

/// Whether a `Content-Type` value names the protobuf encoding.
pub fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_stops_at_damage() {
        // 1: varint 300, 2: "hi", 3: fixed64 7, 4: fixed32 9
        let msg = b"\x08\xac\x02\x12\x02hi\x19\x07\0\0\0\0\0\0\0\x25\x09\0\0\0";
        let all: Vec<_> = fields(msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            all,
            vec![
                (1, Field::Varint(300)),
                (2, Field::Bytes(b"hi")),
                (3, Field::Fixed64(7)),
                (4, Field::Fixed32(9)),
            ]
        );
        // A length past the end, a varint that never ends, a group: one error, then nothing.
        for bad in [&b"\x12\x05hi"[..], b"\x08\xff\xff", b"\x0b", &[0x08; 1][..]] {
            let got: Vec<_> = fields(bad).collect();
            assert_eq!(got.len(), 1, "{bad:?}");
            assert!(got[0].is_err(), "{bad:?}");
        }
        let huge = b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
        assert_eq!(fields(huge).next(), Some(Err(ProtobufError::Truncated)));
    }

    #[test]
    fn the_envelope_of_a_real_apiserver_answer() {
        // The first bytes of kube-apiserver 1.36's protobuf PodList (apiserver-captures
        // 03-negotiation), its raw object cut to an empty message.
        let body = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07PodList\x12\x00\x1a\x00\x22\x00";
        let u = unwrap(body).unwrap();
        assert_eq!(
            (u.api_version, u.kind, u.raw),
            (&b"v1"[..], &b"PodList"[..], &b""[..])
        );
        assert_eq!(unwrap(b"{}"), Err(ProtobufError::NoMagic));
        assert_eq!(unwrap(b"k8s\0\x0a\x00"), Err(ProtobufError::NoObject));
        assert!(is_protobuf(Some("application/vnd.kubernetes.protobuf")));
        assert!(is_protobuf(Some(
            "Application/Vnd.Kubernetes.Protobuf; x=y"
        )));
        assert!(!is_protobuf(Some("application/json")));
        assert!(!is_protobuf(None));
    }
}

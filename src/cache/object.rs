//! Peeking into Kubernetes JSON: the metadata the cache needs, without building a tree of the
//! whole object; lists and watch events are split into their items one by one.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct Peek<'a> {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    metadata: Option<Meta>,
    /// Read in the same pass as the rest (only pods' `nodeName` matters).
    spec: Option<SpecPeek>,
    #[serde(skip)]
    _borrowed: std::marker::PhantomData<&'a ()>,
}

/// `spec.nodeName` when `spec` is an object with a string there; whatever else `spec` is
/// (some kinds have none, a broken one may be a string) reads as nothing, never an error.
#[derive(Default)]
struct SpecPeek {
    node_name: Option<String>,
}

impl<'de> Deserialize<'de> for SpecPeek {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SpecPeek;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<SpecPeek, A::Error> {
                use serde::de::IgnoredAny;
                let mut out = SpecPeek::default();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    if k == "nodeName" {
                        out.node_name = m
                            .next_value::<Option<IgnoredOr<String>>>()?
                            .and_then(IgnoredOr::get);
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<SpecPeek, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(SpecPeek::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
            fn visit_unit<E>(self) -> Result<SpecPeek, E> {
                Ok(SpecPeek::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or anything else read and dropped.
enum IgnoredOr<T> {
    Value(T),
    Ignored,
}

impl<T> IgnoredOr<T> {
    fn get(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Ignored => None,
        }
    }
}

impl<'de> Deserialize<'de> for IgnoredOr<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = IgnoredOr<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Value(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(IgnoredOr::Ignored)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(IgnoredOr::Ignored)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Ignored)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Ignored)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Ignored)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Ignored)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(IgnoredOr::Ignored)
            }
        }
        d.deserialize_any(V)
    }
}

/// One object ready to be stored: its bytes (with `apiVersion` and `kind` set) and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The object's namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// `metadata.resourceVersion` as a number (0 when absent or not numeric, as upstream).
    pub rv: u64,
    /// The kind.
    pub kind: String,
    /// For pods: `spec.nodeName` (pods without one are never cached).
    pub node_name: Option<String>,
    /// The JSON bytes.
    pub bytes: Vec<u8>,
}

/// Parses a resourceVersion the way the cache compares them (reference §13.2 item 4).
pub fn parse_rv(rv: Option<&str>) -> u64 {
    rv.and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Object {
    /// Reads one object; `type_of_list` gives `(apiVersion, kind)` for list items, which come
    /// without them and get them added.
    pub fn parse(raw: &str, type_of_list: Option<(&str, &str)>) -> Option<Object> {
        let p: Peek<'_> = serde_json::from_str(raw).ok()?;
        let meta = p.metadata?;
        let name = meta.name.filter(|n| !n.is_empty())?;
        let mut bytes = raw.trim().as_bytes().to_vec();
        let kind = match (&p.kind, type_of_list) {
            (Some(k), _) => k.clone(),
            (None, Some((api_version, kind))) => {
                if p.api_version.is_none() && bytes.first() == Some(&b'{') {
                    let head = format!(
                        "{{\"apiVersion\":{},\"kind\":{}",
                        serde_json::Value::from(api_version),
                        serde_json::Value::from(kind)
                    );
                    let rest = &bytes[1..];
                    let sep = if rest.trim_ascii_start().first() == Some(&b'}') {
                        ""
                    } else {
                        ","
                    };
                    let mut out = head.into_bytes();
                    out.extend_from_slice(sep.as_bytes());
                    out.extend_from_slice(rest);
                    bytes = out;
                }
                kind.to_string()
            }
            (None, None) => String::new(),
        };
        let node_name = if kind == "Pod" {
            Some(p.spec.and_then(|s| s.node_name).unwrap_or_default())
        } else {
            None
        };
        Some(Object {
            namespace: meta.namespace.unwrap_or_default(),
            name,
            rv: parse_rv(meta.resource_version.as_deref()),
            kind,
            node_name,
            bytes,
        })
    }

    /// Whether the object may be stored: pods must be bound to a node (reference §3.2).
    pub fn storable(&self) -> bool {
        self.node_name.as_deref() != Some("")
    }
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    cont: Option<String>,
}

#[derive(Deserialize)]
struct ListPeek<'a> {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    metadata: Option<ListMeta>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// A list response, split.
#[derive(Debug)]
pub struct List {
    /// The items, each with `apiVersion`/`kind` set.
    pub items: Vec<Object>,
    /// The list's resourceVersion.
    pub rv: u64,
    /// Whether more pages follow.
    pub more: bool,
}

/// Splits a list body; `None` for anything that is not a `…List` with items (and, unless
/// `metadata_only`, for PartialObjectMetadataList; never for a Table).
pub fn parse_list(body: &[u8], metadata_only: bool) -> Option<List> {
    let text = std::str::from_utf8(body).ok()?;
    let l: ListPeek<'_> = serde_json::from_str(text).ok()?;
    let list_kind = l.kind?;
    let kind = list_kind.strip_suffix("List")?;
    if kind.is_empty() || kind == "Table" || (kind == "PartialObjectMetadata") != metadata_only {
        return None;
    }
    let api_version = l.api_version.unwrap_or_default();
    let meta = l.metadata?;
    let items = l
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|raw| Object::parse(raw.get(), Some((&api_version, kind))))
        .collect();
    Some(List {
        items,
        rv: parse_rv(meta.resource_version.as_deref()),
        more: meta.cont.is_some_and(|c| !c.is_empty()),
    })
}

#[derive(Deserialize)]
struct EventPeek<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    object: &'a RawValue,
}

/// One watch event.
#[derive(Debug)]
pub enum Event {
    /// ADDED or MODIFIED.
    Upsert(Object),
    /// DELETED.
    Deleted(Object),
    /// A BOOKMARK; `initial_end` when it closes the initial events of a watch-list.
    Bookmark {
        /// `k8s.io/initial-events-end: "true"`.
        initial_end: bool,
        /// The bookmark's resourceVersion.
        rv: u64,
    },
    /// ERROR or anything unknown: never stored.
    Other,
}

/// Reads one watch event line.
pub fn parse_event(line: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(line).ok()?;
    let e: EventPeek<'_> = serde_json::from_str(text).ok()?;
    Some(match e.kind.as_str() {
        "ADDED" | "MODIFIED" => Event::Upsert(Object::parse(e.object.get(), None)?),
        "DELETED" => Event::Deleted(Object::parse(e.object.get(), None)?),
        "BOOKMARK" => Event::Bookmark {
            initial_end: e
                .object
                .get()
                .contains("\"k8s.io/initial-events-end\":\"true\""),
            rv: serde_json::from_str::<Peek<'_>>(e.object.get())
                .ok()
                .and_then(|p| p.metadata)
                .map(|m| parse_rv(m.resource_version.as_deref()))
                .unwrap_or(0),
        },
        _ => Event::Other,
    })
}

/// Whether a single-object body is something to store (not a Status, a Table or a list; a
/// PartialObjectMetadata only in the metadata tree).
pub fn storable_kind(kind: &str, metadata_only: bool) -> bool {
    !matches!(kind, "" | "Status" | "Table")
        && !kind.ends_with("List")
        && (kind == "PartialObjectMetadata") == metadata_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_get_their_type_and_pods_their_node() {
        let body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42","continue":"x"},"items":[
            {"metadata":{"name":"a","namespace":"ns","resourceVersion":"40"},"spec":{"nodeName":"n1"}},
            {"metadata":{"name":"b","namespace":"ns","resourceVersion":"41"},"spec":{}},
            {"metadata":{}}]}"#;
        let l = parse_list(body, false).unwrap();
        assert_eq!((l.rv, l.more, l.items.len()), (42, true, 2));
        let a = &l.items[0];
        assert!(a.storable() && !l.items[1].storable());
        let v: serde_json::Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["apiVersion"].as_str()),
            (Some("Pod"), Some("v1"))
        );
        assert_eq!(v["spec"]["nodeName"], "n1");
        let meta = br#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"3"},"items":[{"metadata":{"name":"a","namespace":"ns"}}]}"#;
        assert!(parse_list(meta, false).is_none());
        assert_eq!(parse_list(meta, true).unwrap().items.len(), 1);
        assert!(parse_list(
            br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"rows":[]}"#,
            false
        )
        .is_none());
    }

    #[test]
    fn events() {
        let e = parse_event(br#"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"d","resourceVersion":"7"}}}"#).unwrap();
        assert!(matches!(e, Event::Upsert(o) if o.rv == 7 && o.name == "c"));
        let b = parse_event(br#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}}"#).unwrap();
        assert!(matches!(
            b,
            Event::Bookmark {
                initial_end: true,
                rv: 9
            }
        ));
        assert!(matches!(
            parse_event(br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#),
            Some(Event::Other)
        ));
        assert!(parse_event(b"garbage").is_none());
    }
}

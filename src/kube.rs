//! Kubernetes knowledge the proxy needs, without any I/O: request classification
//! ([`RequestInfo`]), the client component and the hub's own identity, selectors, and
//! `metav1.Status` errors.

mod component;
mod fields;
mod kinds;
mod labels;
mod lines;
pub mod protobuf;
mod request_info;
mod status;
pub mod time;

pub use component::{component, is_hub, multiplexer, HUB_USER_AGENT};
pub use fields::{escape_value, field_value, unescape_value, FieldSelector, FieldsError};
pub use kinds::kind_of;
pub use labels::{is_dns1123_subdomain, LabelSelector, LabelsError};
pub use lines::{LineTooLong, Lines};
pub use request_info::{ClassifyError, RequestInfo};
pub use status::{reason_for, Status, StatusDetails};

/// `obj[key]` as a map to write into, made when absent or null; `None` when `obj` is no
/// object or `obj[key]` is something else. Objects from the network are written through this,
/// never with `obj["a"]["b"] = ..`, which panics when `obj["a"]` is, say, a string.
pub fn object_at<'a>(
    obj: &'a mut serde_json::Value,
    key: &str,
) -> Option<&'a mut serde_json::Map<String, serde_json::Value>> {
    let slot = obj
        .as_object_mut()?
        .entry(key)
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if slot.is_null() {
        *slot = serde_json::Value::Object(Default::default());
    }
    slot.as_object_mut()
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_at_writes_into_maps_only() {
        use serde_json::json;
        let mut v = json!({"spec": null, "odd": "text"});
        super::object_at(&mut v, "spec")
            .unwrap()
            .insert("a".into(), json!(1));
        super::object_at(&mut v, "new")
            .unwrap()
            .insert("b".into(), json!(2));
        assert!(super::object_at(&mut v, "odd").is_none());
        assert!(super::object_at(&mut json!([1]), "spec").is_none());
        assert_eq!(v, json!({"spec": {"a": 1}, "new": {"b": 2}, "odd": "text"}));
    }
}

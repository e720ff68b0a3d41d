//! `metav1.Status`: the body of every error the hub answers a Kubernetes client with.

use serde::Serialize;

/// The object a failed Status names.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatusDetails {
    /// The object's name, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (kube-apiserver puts the resource, not the Kind, here).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// When to try again, in seconds (429, and 504 for a version not reached yet).
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// A failure `metav1.Status`, serialised compactly in kube-apiserver's field order.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    /// A human-readable description.
    pub message: String,
    /// The machine-readable reason (`NotFound`, `ServiceUnavailable`, ...); omitted when empty.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    /// The object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    pub code: u16,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
struct Empty {}

impl Status {
    /// A failure with `code`, the reason kube-apiserver uses for it, and `message`.
    pub fn failure(code: u16, message: impl Into<String>) -> Self {
        Self {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason: reason_for(code),
            details: None,
            code,
        }
    }

    /// Adds the object the failure is about.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `metav1.StatusReason` kube-apiserver pairs with a status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_apiserver_shape() {
        let s = Status::failure(404, "pods \"x\" not found").with_details(StatusDetails {
            name: "x".into(),
            kind: "pods".into(),
            ..Default::default()
        });
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
    }
}

//! Kubernetes knowledge the proxy needs, without any I/O: request classification
//! ([`RequestInfo`]), the client component, selectors, and `metav1.Status` errors.

mod fields;
mod labels;
mod request_info;
mod status;
pub mod time;

pub use fields::{escape_value, unescape_value, FieldSelector, FieldsError};
pub use labels::{LabelSelector, LabelsError};
pub use request_info::{ClassifyError, RequestInfo};
pub use status::{reason_for, Status, StatusDetails};

/// The component a request comes from: the lower-cased User-Agent up to its first `/`
/// (reference §2.2), e.g. `kubelet` for `kubelet/v1.32.0 (linux/arm64) kubernetes/abc`.
/// `None` without a User-Agent: such requests are proxied but never cached or filtered.
pub fn component(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent?.trim();
    let head = ua.split('/').next().unwrap_or("").to_lowercase();
    (!head.is_empty()).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::component;

    #[test]
    fn component_is_the_lowercased_user_agent_head() {
        assert_eq!(
            component(Some("kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9")).as_deref(),
            Some("kubelet")
        );
        assert_eq!(
            component(Some("Kube-Proxy/v1.30")).as_deref(),
            Some("kube-proxy")
        );
        assert_eq!(component(Some("coredns")).as_deref(), Some("coredns"));
        assert_eq!(component(Some("")), None);
        assert_eq!(component(Some("/v1")), None);
        assert_eq!(component(None), None);
    }
}

//! Who sends a request: the component its User-Agent names (reference §2.2), and whether it
//! is the hub itself.
//!
//! ```
//! use yurthub::kube::{component, is_hub, HUB_USER_AGENT};
//! assert_eq!(component(Some("kubelet/v1.36.2 (linux/arm64)")).as_deref(), Some("kubelet"));
//! assert!(is_hub(HUB_USER_AGENT));
//! assert!(!is_hub("kubelet/v1.36.2"));
//! ```

/// The User-Agent of the hub's own requests, to the cloud and through its own proxy: it
/// starts with `yurthub`, so they are cached and pass the readiness gate like upstream's
/// (reference §13.2 item 13).
pub const HUB_USER_AGENT: &str = concat!("yurthub/v", env!("CARGO_PKG_VERSION"));

/// The prefix of the multiplexer's User-Agent, `multiplexer-proxy-<node>`.
const MULTIPLEXER_PREFIX: &str = "multiplexer-proxy-";

/// The component a request comes from: the lower-cased User-Agent up to its first `/`
/// (reference §2.2), e.g. `kubelet` for `kubelet/v1.32.0 (linux/arm64) kubernetes/abc`.
/// `None` without a User-Agent: such requests are proxied but never cached or filtered.
pub fn component(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent?.trim();
    let head = ua.split('/').next().unwrap_or("").to_lowercase();
    (!head.is_empty()).then_some(head)
}

/// The component name of node `node`'s multiplexer, one of the hub's own (reference §10.1).
pub fn multiplexer(node: &str) -> String {
    format!("{MULTIPLEXER_PREFIX}{node}")
}

/// Whether a User-Agent (or a component) is the hub's own: the hub itself or a multiplexer.
/// Its requests are never held up by readiness nor rewritten by filters.
pub fn is_hub(user_agent: &str) -> bool {
    user_agent.starts_with("yurthub") || user_agent.starts_with(MULTIPLEXER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_hub_and_its_multiplexer_are_the_hub() {
        assert!(is_hub(HUB_USER_AGENT));
        assert!(is_hub(&multiplexer("n1")));
        assert!(!is_hub("kube-proxy/v1.30"));
    }
}

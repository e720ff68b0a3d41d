//! discardcloudservice (kube-proxy's services): cloud-only services are not proxied on the node.

use serde_json::Value;

use super::named;

/// Drops cloud-only services from kube-proxy's view.
pub(super) fn apply(obj: &mut Value) -> bool {
    if named(obj, "kube-system", "x-tunnel-server-internal-svc") {
        return false;
    }
    !(obj["spec"]["type"] == "LoadBalancer"
        && obj["metadata"]["annotations"]["svc.openyurt.io/discard"] == "true")
}

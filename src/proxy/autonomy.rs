//! The node's `Autonomy` condition (reference §10.7): whether the node is set to run on its
//! own when the cloud is gone, and whether the hub's cache can carry it. Upstream YurtHub
//! keeps it current when kubelet reads its own Node; so does the hub ([`super::Proxy`]),
//! with one patch of `status.conditions` when the condition changes, and none otherwise.
//!
//! ```
//! use yurthub::proxy::autonomy::{Autonomy, Wanted};
//! let node = serde_json::json!({"metadata": {"name": "edge-1",
//!     "annotations": {"node.openyurt.io/autonomy-duration": "0"}}});
//! let a = Autonomy::default();
//! let wanted = a.wanted(&node, None);
//! assert_eq!(wanted.status, "True");
//! // The node does not carry it yet: a patch sets it.
//! assert!(wanted.patch(&node, "2026-12-01T00:00:00Z").is_some());
//! ```

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};

/// The condition's type.
pub const CONDITION: &str = "Autonomy";
/// The older annotation that turns autonomy on (`"true"`).
pub const BETA_ANNOTATION: &str = "node.beta.openyurt.io/autonomy";
/// The newer annotation: how long the node's pods stay bound while it is cut off (a Go
/// duration, `0` for ever); its presence turns autonomy on.
pub const DURATION_ANNOTATION: &str = "node.openyurt.io/autonomy-duration";
/// The label that marks a node as no edge node when `"false"`.
pub const EDGE_WORKER_LABEL: &str = "openyurt.io/is-edge-worker";
/// How many evaluations in a row must see the cache failing before the condition says so
/// (upstream's value): one failed write that the next one mends is no news for the cloud.
const FAILING_EVALUATIONS: u32 = 3;

/// The condition a node should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// Upstream's reasons: `autonomy enabled successfully`, `autonomy disabled`,
    /// `cache failed`.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

/// Whether the node's annotations and labels ask for autonomy.
pub fn enabled(node: &Value) -> bool {
    let meta = &node["metadata"];
    let edge = meta["labels"][EDGE_WORKER_LABEL].as_str() != Some("false");
    let annotations = &meta["annotations"];
    let beta = annotations[BETA_ANNOTATION].as_str() == Some("true");
    let duration = annotations[DURATION_ANNOTATION]
        .as_str()
        .is_some_and(|d| crate::kube::time::parse_go_duration(d).is_some());
    edge && (beta || duration)
}

/// The condition's evaluations, one per read of kubelet's own Node.
#[derive(Debug, Default)]
pub struct Autonomy {
    failing_evaluations: AtomicU32,
}

impl Autonomy {
    /// The condition `node` should carry now; `cache_failing` is why the cache fails, if it
    /// does (counted as one evaluation).
    pub fn wanted(&self, node: &Value, cache_failing: Option<&str>) -> Wanted {
        let failing_for = match cache_failing {
            Some(_) => self.failing_evaluations.fetch_add(1, Ordering::Relaxed) + 1,
            None => {
                self.failing_evaluations.store(0, Ordering::Relaxed);
                0
            }
        };
        if !enabled(node) {
            return Wanted {
                status: "False",
                reason: "autonomy disabled",
                message: format!(
                    "neither {BETA_ANNOTATION}=true nor a valid {DURATION_ANNOTATION} is set, or {EDGE_WORKER_LABEL}=false"
                ),
            };
        }
        match cache_failing {
            Some(why) if failing_for > FAILING_EVALUATIONS => Wanted {
                status: "Unknown",
                reason: "cache failed",
                message: why.to_string(),
            },
            _ => Wanted {
                status: "True",
                reason: "autonomy enabled successfully",
                message: "the hub caches what the node reads and answers it while the cloud is unreachable".into(),
            },
        }
    }
}

impl Wanted {
    /// The strategic merge patch of the Node's status that sets this condition (conditions
    /// merge by type, so kubelet's own stay as they are), or `None` when `node` carries it
    /// already. The transition time moves only when the status does.
    pub fn patch(&self, node: &Value, now: &str) -> Option<Vec<u8>> {
        let current = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == CONDITION));
        let transition = match current {
            Some(c)
                if c["status"] == self.status
                    && c["reason"] == self.reason
                    && c["message"] == self.message.as_str() =>
            {
                return None
            }
            Some(c) if c["status"] == self.status => {
                c["lastTransitionTime"].as_str().unwrap_or(now).to_string()
            }
            _ => now.to_string(),
        };
        let patch = json!({"status": {"conditions": [{
            "type": CONDITION,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition,
        }]}});
        serde_json::to_vec(&patch).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: Value, labels: Value, conditions: Value) -> Value {
        json!({"metadata": {"name": "n", "annotations": annotations, "labels": labels},
               "status": {"conditions": conditions}})
    }

    #[test]
    fn either_annotation_turns_it_on_and_the_edge_worker_label_off() {
        let none = json!({});
        assert!(!enabled(&node(none.clone(), none.clone(), json!([]))));
        assert!(enabled(&node(
            json!({BETA_ANNOTATION: "true"}),
            none.clone(),
            json!([])
        )));
        assert!(!enabled(&node(
            json!({BETA_ANNOTATION: "false"}),
            none.clone(),
            json!([])
        )));
        for d in ["0", "10m", "1h30m"] {
            assert!(enabled(&node(
                json!({DURATION_ANNOTATION: d}),
                none.clone(),
                json!([])
            )));
        }
        assert!(!enabled(&node(
            json!({DURATION_ANNOTATION: "ever"}),
            none.clone(),
            json!([])
        )));
        assert!(!enabled(&node(
            json!({BETA_ANNOTATION: "true"}),
            json!({EDGE_WORKER_LABEL: "false"}),
            json!([])
        )));
    }

    #[test]
    fn a_failing_cache_shows_only_after_more_than_three_evaluations() {
        let a = Autonomy::default();
        let n = node(json!({BETA_ANNOTATION: "true"}), json!({}), json!([]));
        for _ in 0..3 {
            assert_eq!(a.wanted(&n, Some("disk full")).status, "True");
        }
        let w = a.wanted(&n, Some("disk full"));
        assert_eq!((w.status, w.message.as_str()), ("Unknown", "disk full"));
        assert_eq!(a.wanted(&n, None).status, "True");
        assert_eq!(a.wanted(&n, Some("disk full")).status, "True");
    }

    #[test]
    fn a_patch_only_for_a_change_and_the_transition_time_only_when_the_status_moves() {
        let a = Autonomy::default();
        let on = json!({BETA_ANNOTATION: "true"});
        let w = a.wanted(&node(on.clone(), json!({}), json!([])), None);
        let p: Value = serde_json::from_slice(
            &w.patch(&node(on.clone(), json!({}), json!([])), "T1")
                .unwrap(),
        )
        .unwrap();
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["type"], "Autonomy");
        assert_eq!(c["status"], "True");
        assert_eq!(c["lastTransitionTime"], "T1");
        // Carried already (heartbeat times aside): nothing to send.
        let mut carried = c.clone();
        carried["lastHeartbeatTime"] = "T0".into();
        let n = node(on.clone(), json!({}), json!([{"type": "Ready"}, carried]));
        assert_eq!(w.patch(&n, "T2"), None);
        // The same status with another message keeps its transition time.
        let mut reworded = c.clone();
        reworded["message"] = "old words".into();
        let n = node(on, json!({}), json!([reworded]));
        let p: Value = serde_json::from_slice(&w.patch(&n, "T3").unwrap()).unwrap();
        assert_eq!(p["status"]["conditions"][0]["lastTransitionTime"], "T1");
        // Turned off: False, transition now.
        let off = node(json!({}), json!({}), json!([c.clone()]));
        let w = a.wanted(&off, None);
        assert_eq!(w.status, "False");
        let p: Value = serde_json::from_slice(&w.patch(&off, "T4").unwrap()).unwrap();
        assert_eq!(p["status"]["conditions"][0]["lastTransitionTime"], "T4");
    }
}

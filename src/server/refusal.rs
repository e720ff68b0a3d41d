//! Why the hub refuses a request, and the one place a refusal becomes a `metav1.Status`.
//!
//! Every handler says *why* with a [`Refusal`]; [`Refusal::status`] turns it into what the
//! apiserver would have answered (code, reason, message, details), so that the same refusal
//! reads the same from every room that gives it.

use std::fmt;

use super::NotReady;
use crate::http::{BodyError, HeadError};
use crate::kube::{ClassifyError, Status, StatusDetails};

/// Why a request gets no answer from the cloud or the cache.
#[derive(Debug)]
pub enum Refusal {
    /// The request head is malformed or too large.
    BadHead(HeadError),
    /// The whole head did not arrive in time (`--request-head-timeout`).
    HeadTimeout,
    /// The target cannot be classified as an API request.
    BadTarget(ClassifyError),
    /// The body's framing is not understood.
    BadFraming(BodyError),
    /// A request that would travel with the node's identity came where only a pod's own
    /// token may be used.
    Unauthorized,
    /// The hub does not serve its clients yet.
    NotReady(NotReady),
    /// Part of the request body could not be sent on.
    BodyNotForwarded,
    /// No server could be reached; what the last attempt said.
    Unreachable(String),
    /// Offline: nothing is cached for this (a non-resource path, a list, a resource).
    NotCached(String),
    /// Offline: the cloud's last answer to this list was too large to cache.
    ListTooLarge(String),
    /// Offline: this list was dropped from the cache to keep it within its byte budget.
    ListEvicted(String),
    /// Offline: the cached list is incomplete (updates dropped on a full cache queue since it
    /// was listed, or members missing from disk).
    ListIncomplete(String),
    /// Offline: the object is not in the cache.
    NotFound {
        /// The API group (empty for the core group).
        group: String,
        /// The resource.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// Offline: a non-resource request the hub cannot answer.
    Unsupported {
        /// The verb.
        verb: String,
        /// The path.
        path: String,
    },
    /// Offline: deletes wait for the cloud.
    DeleteOffline {
        /// The API group.
        group: String,
        /// The resource.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// Offline: reviews (access, tokens) are decided by the cloud only.
    ReviewOffline,
    /// Offline: the request is not one the cache could hold.
    NotCacheable {
        /// The component, if any.
        component: String,
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The request target.
        target: String,
    },
    /// Offline: kubelet's pod list was never cached (an empty one would stop every pod).
    NoPodsCached,
    /// Offline: the request body could not be read or is too large.
    BadBody,
    /// Offline: a TokenRequest body that does not parse.
    BadTokenRequest(String),
    /// Offline: a bearer token the cloud never accepted, or one expired since.
    TokenUnknownOffline,
    /// Offline: the component's cache was filled for another identity (the node, or another
    /// token's subject) than the request's.
    CacheOfAnother(String),
    /// Offline: a create from another identity than the node's waits for the cloud.
    CreateOffline(String),
    /// Offline: an Event larger than the hub stores.
    EventTooLargeOffline,
    /// A protocol upgrade (exec, attach, port-forward) that carries a body: the apiserver
    /// would wait for it before answering, and the hub relays none.
    UpgradeWithBody,
    /// On a leader hub's multiplexer port: not a follower of its pool asking for what a
    /// follower reads (why, in words).
    NotAFollower(String),
}

impl Refusal {
    /// The status code.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadHead(e) => e.status(),
            Self::HeadTimeout => 408,
            Self::BadTarget(e) => e.status(),
            Self::BadFraming(_)
            | Self::Unsupported { .. }
            | Self::NotCacheable { .. }
            | Self::BadBody
            | Self::BadTokenRequest(_)
            | Self::UpgradeWithBody => 400,
            Self::Unauthorized | Self::TokenUnknownOffline => 401,
            Self::DeleteOffline { .. }
            | Self::CreateOffline(_)
            | Self::CacheOfAnother(_)
            | Self::NotAFollower(_) => 403,
            Self::EventTooLargeOffline => 413,
            Self::NotCached(_)
            | Self::ListTooLarge(_)
            | Self::ListEvicted(_)
            | Self::ListIncomplete(_)
            | Self::NotFound { .. }
            | Self::NoPodsCached => 404,
            Self::BodyNotForwarded | Self::Unreachable(_) | Self::ReviewOffline => 502,
            Self::NotReady(_) => 503,
        }
    }

    /// The `metav1.Status` the client gets.
    pub fn status(&self) -> Status {
        let s = Status::failure(self.code(), self.to_string());
        match self {
            Self::NotFound { resource, name, .. } => s.with_details(StatusDetails {
                name: name.clone(),
                kind: resource.clone(),
                ..Default::default()
            }),
            Self::DeleteOffline {
                group,
                resource,
                name,
            } => s.with_details(StatusDetails {
                name: name.clone(),
                group: group.clone(),
                kind: resource.clone(),
                ..Default::default()
            }),
            _ => s,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHead(e) => write!(f, "{e}"),
            Self::HeadTimeout => write!(f, "request head not received in time"),
            Self::BadTarget(e) => write!(f, "{e}"),
            Self::BadFraming(e) => write!(f, "{e}"),
            Self::Unauthorized => write!(f, "Unauthorized"),
            Self::NotReady(why) => write!(f, "yurthub is not ready: {why}"),
            Self::BodyNotForwarded => write!(f, "the request body could not be forwarded"),
            Self::Unreachable(why) => write!(f, "{why}"),
            Self::NotCached(what) => write!(f, "{what} is not cached"),
            Self::ListTooLarge(what) => write!(
                f,
                "the {what} list was larger than --max-cached-list-bytes: not cached, not answered offline"
            ),
            Self::ListEvicted(what) => write!(
                f,
                "the {what} list was evicted to keep the cache within --cache-max-bytes: not answered offline until the cloud lists it again"
            ),
            Self::ListIncomplete(what) => write!(
                f,
                "the {what} list is incomplete in the cache (updates dropped on a full cache queue, or objects missing from disk): not answered offline until the cloud lists it again"
            ),
            Self::NotFound {
                group,
                resource,
                name,
            } => {
                // The apiserver's wording: `pods "web" not found`, `leases.coordination.k8s.io …`.
                if group.is_empty() {
                    write!(f, "{resource} \"{name}\" not found")
                } else {
                    write!(f, "{resource}.{group} \"{name}\" not found")
                }
            }
            Self::Unsupported { verb, path } => write!(
                f,
                "local proxy does not support request({verb}), path: {path}"
            ),
            Self::DeleteOffline { .. } => {
                write!(f, "delete request is not supported in local cache")
            }
            // Upstream's words, which clients may match.
            Self::ReviewOffline => write!(f, "no healthy backends available."),
            Self::NotCacheable {
                component,
                verb,
                resource,
                target,
            } => write!(
                f,
                "can not cache for {component} {verb} {resource}: {target}"
            ),
            Self::NoPodsCached => write!(f, "no pods cached for kubelet"),
            Self::BadBody => write!(f, "request body unreadable or too large"),
            Self::BadTokenRequest(e) => write!(f, "{e}"),
            Self::UpgradeWithBody => write!(f, "an upgrade request must not carry a body"),
            Self::TokenUnknownOffline => write!(
                f,
                "Unauthorized: the cloud is unreachable, and offline the hub honours only tokens the cloud accepted before, until they expire"
            ),
            Self::CacheOfAnother(component) => write!(
                f,
                "the cloud is unreachable: offline, what was cached for {component} is read only by the identity it was cached for"
            ),
            Self::NotAFollower(why) => write!(
                f,
                "forbidden: this port answers only the pool's follower hubs' lists and watches of pool-scope resources: {why}"
            ),
            Self::CreateOffline(resource) => write!(
                f,
                "the cloud is unreachable: offline, {resource} are created only by the node itself"
            ),
            Self::EventTooLargeOffline => write!(
                f,
                "the cloud is unreachable: offline, Events of at most 16 KiB are taken"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_apiserver_would_answer() {
        let cases: Vec<(Refusal, u16, &str, &str)> = vec![
            (Refusal::Unauthorized, 401, "Unauthorized", "Unauthorized"),
            (
                Refusal::NotReady(NotReady::HubConfig),
                503,
                "ServiceUnavailable",
                "yurthub is not ready: yurt-hub-cfg not synced yet",
            ),
            (
                Refusal::NotFound {
                    group: String::new(),
                    resource: "pods".into(),
                    name: "web".into(),
                },
                404,
                "NotFound",
                "pods \"web\" not found",
            ),
            (
                Refusal::NotFound {
                    group: "coordination.k8s.io".into(),
                    resource: "leases".into(),
                    name: "n1".into(),
                },
                404,
                "NotFound",
                "leases.coordination.k8s.io \"n1\" not found",
            ),
            (
                Refusal::ReviewOffline,
                502,
                "",
                "no healthy backends available.",
            ),
            (
                Refusal::HeadTimeout,
                408,
                "",
                "request head not received in time",
            ),
        ];
        for (refusal, code, reason, message) in cases {
            let v: serde_json::Value = serde_json::from_slice(&refusal.status().to_json()).unwrap();
            assert_eq!(v["code"], code, "{refusal:?}");
            assert_eq!(v["message"], message, "{refusal:?}");
            assert_eq!(v["reason"].as_str().unwrap_or(""), reason, "{refusal:?}");
            assert_eq!(v["kind"], "Status");
            assert_eq!(v["status"], "Failure");
        }
        let v: serde_json::Value = serde_json::from_slice(
            &Refusal::DeleteOffline {
                group: "apps".into(),
                resource: "deployments".into(),
                name: "d".into(),
            }
            .status()
            .to_json(),
        )
        .unwrap();
        assert_eq!(v["code"], 403);
        assert_eq!(v["details"]["group"], "apps");
        assert_eq!(v["details"]["kind"], "deployments");
        assert_eq!(v["details"]["name"], "d");
    }
}

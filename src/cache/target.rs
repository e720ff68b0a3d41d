//! Which responses are kept, and where: the cache agents, a request's [`Target`] (its
//! component, resource, object or list view), or why it is [`NotCached`] (reference §3.1).

use std::collections::BTreeSet;
use std::fmt;

use super::owners::Owner;
use super::store::{self, ObjectKey};
use crate::kube::{FieldSelector, LabelSelector, RequestInfo};

/// The components cached without configuration (reference §3.1).
pub const BUILTIN_AGENTS: &[&str] = &[
    "kubelet",
    "kube-proxy",
    "flanneld",
    "coredns",
    "raven-agent-ds",
    "yurttunnel-agent",
    "yurthub",
];

/// Which components' responses are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agents {
    extra: BTreeSet<String>,
    all: bool,
    multiplexer: String,
}

impl Agents {
    /// The built-in agents for `node`, plus the comma-separated `cache_agents` value of
    /// yurt-hub-cfg (trimmed; `*` means every component that sends a User-Agent).
    pub fn new(node: &str, cache_agents: &str) -> Self {
        let mut extra = BTreeSet::new();
        let mut all = false;
        for a in cache_agents
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            if a == "*" {
                all = true;
            } else {
                extra.insert(a.to_lowercase());
            }
        }
        Self {
            extra,
            all,
            multiplexer: crate::kube::multiplexer(node),
        }
    }

    /// Whether `component`'s responses are cached.
    pub fn allows(&self, component: &str) -> bool {
        self.all
            || BUILTIN_AGENTS.contains(&component)
            || component == self.multiplexer
            || self.extra.contains(component)
    }
}

/// The list a list or watch request belongs to: one namespace (or all) and its selectors in
/// canonical form. Each distinct view keeps its own membership, so different selectors never
/// corrupt each other's offline answers (upstream refuses to cache them instead).
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ViewKey {
    /// The namespace, empty for all namespaces or cluster-scoped resources.
    pub namespace: String,
    /// Canonical label selector.
    pub label_selector: String,
    /// Canonical field selector.
    pub field_selector: String,
}

impl ViewKey {
    /// A stable file name for the view (FNV-1a of its parts).
    pub fn id(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [&self.namespace, &self.label_selector, &self.field_selector] {
            for b in part.bytes().chain(std::iter::once(0)) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }
}

/// What kind of response a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One object: get, create, update, patch.
    Object,
    /// A list; `paged` when it asked for a `limit`, `continued` when it carried a `continue`.
    List {
        /// `limit` was set.
        paged: bool,
        /// `continue` was set.
        continued: bool,
    },
    /// A watch; `watch_list` when it asked for `sendInitialEvents=true`.
    Watch {
        /// The initial events up to the end bookmark stand for a list.
        watch_list: bool,
    },
}

/// The tree of PartialObjectMetadata answers, apart from full objects (reference §3.3).
pub const METADATA_TREE: &str = "partialobjectmetadatas.v1.meta.k8s.io";

/// Whether the first `Accept` clause asks for PartialObjectMetadata(List) of `meta.k8s.io/v1`
/// (the test upstream applies, reference §2.3 item 4).
pub fn wants_metadata(accept: Option<&str>) -> bool {
    let Some(first) = accept.and_then(|a| a.split(',').next()) else {
        return false;
    };
    let params: Vec<(&str, &str)> = first
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .collect();
    let has = |k: &str, f: &dyn Fn(&str) -> bool| params.iter().any(|(pk, v)| *pk == k && f(v));
    has("as", &|v| {
        v == "PartialObjectMetadata" || v == "PartialObjectMetadataList"
    }) && has("g", &|v| v == "meta.k8s.io")
        && has("v", &|v| v == "v1")
}

/// Where a cacheable response goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The component directory; `<component>/partialobjectmetadatas.v1.meta.k8s.io` for
    /// metadata-only answers.
    pub component: String,
    /// `<resource>.<version>.<group>`.
    pub resource: String,
    /// The request's namespace (empty for cluster-scoped and all-namespace requests).
    pub namespace: String,
    /// The request's name (for get/update/patch; from `metadata.name=` for lists).
    pub name: String,
    /// The view of a list or watch.
    pub view: ViewKey,
    /// The response shape.
    pub shape: Shape,
    /// The answers are PartialObjectMetadata, kept in their own tree.
    pub metadata_only: bool,
    /// Who the answers are for ([`super::owners`]): only its owner's are cached.
    pub owner: Owner,
}

impl Target {
    /// The key of the request's own object (get/update/patch).
    pub fn object_key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            component: self.component.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }
}

/// Why a request's answer is not cached (reference §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCached {
    /// The request has no User-Agent, so no component.
    NoUserAgent,
    /// The component is not among the cache agents.
    NotAnAgent,
    /// The component cannot be a directory name.
    UnusableComponent,
    /// A non-resource path (`/healthz`, `/version` are cached apart).
    NotAResource,
    /// `dryRun`: the answer is what the object would be, not what it is.
    DryRun,
    /// delete, deletecollection, proxy.
    Verb,
    /// A subresource other than `status` (logs, exec, tokens, evictions).
    Subresource,
    /// CSRs and SubjectAccessReviews.
    Resource,
    /// A label selector that does not parse.
    LabelSelector,
    /// A field selector that does not parse.
    FieldSelector,
}

impl fmt::Display for NotCached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoUserAgent => "no User-Agent",
            Self::NotAnAgent => "component is not a cache agent",
            Self::UnusableComponent => "component is not a usable directory name",
            Self::NotAResource => "not a resource request",
            Self::DryRun => "dry-run requests are never cached",
            Self::Verb => "verb is never cached",
            Self::Subresource => "subresource is never cached",
            Self::Resource => "resource is never cached",
            Self::LabelSelector => "unparsable label selector",
            Self::FieldSelector => "unparsable field selector",
        })
    }
}

impl std::error::Error for NotCached {}

/// The non-resource paths answered from the cache (reference §10.6), with their file names.
pub const CACHED_PATHS: &[(&str, &str)] = &[
    ("/version", "version"),
    ("/apis/discovery.k8s.io/v1", "_apis_discovery.k8s.io_v1"),
    (
        "/apis/discovery.k8s.io/v1beta1",
        "_apis_discovery.k8s.io_v1beta1",
    ),
    (
        "/apis/raven.openyurt.io/v1alpha1",
        "_apis_raven.openyurt.io_v1alpha1",
    ),
    (
        "/apis/raven.openyurt.io/v1beta1",
        "_apis_raven.openyurt.io_v1beta1",
    ),
];

/// The cache file of a cached non-resource path.
pub fn cached_path_file(path: &str) -> Option<&'static str> {
    CACHED_PATHS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, f)| *f)
}

/// `<resource>.<version>.<group>` with `core` for the legacy group.
pub fn resource_dir(ri: &RequestInfo) -> String {
    let group = if ri.api_group.is_empty() {
        "core"
    } else {
        &ri.api_group
    };
    format!("{}.{}.{}", ri.resource, ri.api_version, group)
}

/// Where the response of a request is cached, or why it is not (reference §3.1 rules 1–5).
///
/// Requests asking for an `as=` transformation (Table, PartialObjectMetadata) qualify: their
/// answers are recognised by kind and never stored as objects, and offline they get the plain
/// list their next Accept clause allows, as kube-apiserver's negotiation would give.
pub fn target(
    ri: &RequestInfo,
    component: Option<&str>,
    agents: &Agents,
    query: &crate::http::url::Query,
    accept: Option<&str>,
    owner: Owner,
) -> Result<Target, NotCached> {
    let component = component.ok_or(NotCached::NoUserAgent)?;
    if !agents.allows(component) {
        return Err(NotCached::NotAnAgent);
    }
    if !store::valid_part(component) || component.starts_with('_') {
        return Err(NotCached::UnusableComponent);
    }
    if !ri.is_resource_request {
        return Err(NotCached::NotAResource);
    }
    // A dry run's answer is what the object would be, not what it is.
    if query.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(NotCached::DryRun);
    }
    let shape = match ri.verb.as_str() {
        "get" | "create" | "update" | "patch" => Shape::Object,
        "list" => Shape::List {
            paged: query
                .get("limit")
                .is_some_and(|l| l != "0" && !l.is_empty()),
            continued: query.get("continue").is_some_and(|c| !c.is_empty()),
        },
        "watch" => Shape::Watch {
            watch_list: query.get("sendInitialEvents") == Some("true"),
        },
        _ => return Err(NotCached::Verb),
    };
    if !(ri.subresource.is_empty() || ri.subresource == "status") {
        return Err(NotCached::Subresource);
    }
    if matches!(
        ri.resource.as_str(),
        "certificatesigningrequests" | "subjectaccessreviews"
    ) {
        return Err(NotCached::Resource);
    }
    let namespace = if ri.resource == "namespaces" {
        String::new()
    } else {
        ri.namespace.clone()
    };
    // From the query: Kubernetes' request info leaves the selectors of a legacy
    // `/watch/` path out (its verb does not come from the method), yet the apiserver
    // applies them, so a view keyed without them would stand for the whole collection.
    let (labels, fields) = match shape {
        Shape::List { .. } | Shape::Watch { .. } => (
            query.get("labelSelector").unwrap_or(""),
            query.get("fieldSelector").unwrap_or(""),
        ),
        _ => (ri.label_selector.as_str(), ri.field_selector.as_str()),
    };
    let view = ViewKey {
        namespace: namespace.clone(),
        label_selector: LabelSelector::parse(labels)
            .map_err(|_| NotCached::LabelSelector)?
            .to_string(),
        field_selector: FieldSelector::parse(fields)
            .map_err(|_| NotCached::FieldSelector)?
            .to_string(),
    };
    let metadata_only = wants_metadata(accept);
    Ok(Target {
        component: if metadata_only {
            format!("{component}/{METADATA_TREE}")
        } else {
            component.to_string()
        },
        metadata_only,
        resource: resource_dir(ri),
        namespace,
        name: ri.name.clone(),
        view,
        shape,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::url::Query;

    fn t(method: &str, target_url: &str, ua: &str, agents: &Agents) -> Result<Target, NotCached> {
        let ri = RequestInfo::classify(method, target_url).unwrap();
        let q = Query::parse(target_url.split_once('?').map(|x| x.1).unwrap_or(""));
        target(
            &ri,
            crate::kube::component(Some(ua)).as_deref(),
            agents,
            &q,
            None,
            Owner::Node,
        )
    }

    #[test]
    fn who_and_what_is_cached() {
        let a = Agents::new("n1", " kubectl , foo ");
        let ok = t(
            "GET",
            "/api/v1/namespaces/kube-system/pods?labelSelector=b%3D2,a%3D1",
            "kubelet/v1.32",
            &a,
        )
        .unwrap();
        assert_eq!(ok.resource, "pods.v1.core");
        assert_eq!(ok.view.label_selector, "a=1,b=2");
        // A legacy /watch/ path's selectors key its view as the apiserver applies them.
        let legacy = t(
            "GET",
            "/api/v1/watch/namespaces/kube-system/pods?labelSelector=a%3D1&fieldSelector=spec.nodeName%3Dn1",
            "kubelet/v1.32",
            &a,
        )
        .unwrap();
        assert!(matches!(legacy.shape, Shape::Watch { .. }));
        assert_eq!(
            (
                legacy.view.label_selector.as_str(),
                legacy.view.field_selector.as_str()
            ),
            ("a=1", "spec.nodeName=n1")
        );
        assert!(matches!(
            ok.shape,
            Shape::List {
                paged: false,
                continued: false
            }
        ));
        assert!(t("GET", "/api/v1/pods", "kubectl/v1.32", &a).is_ok());
        assert!(t("GET", "/api/v1/pods", "multiplexer-proxy-n1", &a).is_ok());
        assert!(t("GET", "/api/v1/pods", "curl/8", &a).is_err());
        assert!(t("DELETE", "/api/v1/namespaces/a/pods/p", "kubelet/1", &a).is_err());
        assert!(t(
            "PATCH",
            "/api/v1/nodes/n1/status?dryRun=All",
            "kubelet/1",
            &a
        )
        .is_err());
        assert!(t(
            "POST",
            "/api/v1/namespaces/a/pods?dryRun=All",
            "kubelet/1",
            &a
        )
        .is_err());
        assert!(t("GET", "/api/v1/namespaces/a/pods/p/log", "kubelet/1", &a).is_err());
        assert!(t("GET", "/api/v1/namespaces/a/pods/p/status", "kubelet/1", &a).is_ok());
        assert!(t(
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            "kubelet/1",
            &a
        )
        .is_err());
        assert!(t("GET", "/healthz", "kubelet/1", &a).is_err());
        let ns = t("GET", "/api/v1/namespaces/kube-system", "kubelet/1", &a).unwrap();
        assert_eq!(
            (ns.namespace.as_str(), ns.name.as_str()),
            ("", "kube-system")
        );
        let star = Agents::new("n1", "*");
        assert!(t("GET", "/api/v1/pods", "anything/1", &star).is_ok());
        assert!(t("GET", "/api/v1/pods", "", &star).is_err());
        let ri = RequestInfo::classify("GET", "/api/v1/pods").unwrap();
        let meta =
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        let m = target(
            &ri,
            Some("kubelet"),
            &a,
            &Query::default(),
            Some(meta),
            Owner::Node,
        )
        .unwrap();
        assert_eq!(m.component, "kubelet/partialobjectmetadatas.v1.meta.k8s.io");
        assert!(!wants_metadata(Some(
            "application/json;as=Table;g=meta.k8s.io;v=v1"
        )));
    }
}

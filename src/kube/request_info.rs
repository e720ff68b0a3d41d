//! What a request is about, resolved with kube-apiserver's own rules (reference §2.1):
//! `k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory` with the prefixes `api`
//! (group-less) and `apis`, and the selector fields of `AuthorizeWithSelectors`.
//!
//! ```
//! use yurthub::kube::RequestInfo;
//! let ri = RequestInfo::classify("GET", "/api/v1/namespaces/kube-system/pods?watch=true").unwrap();
//! assert_eq!((ri.verb.as_str(), ri.resource.as_str(), ri.namespace.as_str()),
//!            ("watch", "pods", "kube-system"));
//! ```

use std::fmt;

use super::{FieldSelector, LabelSelector};
use crate::http::url::{split_target, Query, UrlError};

/// Why a request cannot be classified.
#[derive(Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// The request target itself is invalid (kube-apiserver's HTTP server answers 400).
    InvalidTarget(UrlError),
    /// The path cannot be resolved, e.g. `/api/v1/watch` (kube-apiserver answers 500).
    Unresolvable(String),
}

impl ClassifyError {
    /// The status kube-apiserver answers with.
    pub fn status(&self) -> u16 {
        match self {
            ClassifyError::InvalidTarget(_) => 400,
            ClassifyError::Unresolvable(_) => 500,
        }
    }
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassifyError::InvalidTarget(e) => write!(f, "invalid request target: {e}"),
            ClassifyError::Unresolvable(path) => {
                write!(f, "unable to determine kind and namespace from url, {path}")
            }
        }
    }
}

impl std::error::Error for ClassifyError {}

/// The resolved request; field for field what kube-apiserver's `RequestInfo` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names an API resource (as opposed to `/healthz`, `/version`, ...).
    pub is_resource_request: bool,
    /// The percent-decoded path.
    pub path: String,
    /// A Kubernetes verb for resource requests (`""` for unmapped methods), else the
    /// lower-cased method.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// The API group, `""` for the legacy core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace; for `namespaces/<ns>` objects the object's own name.
    pub namespace: String,
    /// The resource, e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `status` or `log`.
    pub subresource: String,
    /// The object name; for list/watch also taken from a `metadata.name=` field selector.
    pub name: String,
    /// The path segments from the resource on.
    pub parts: Vec<String>,
    /// The raw first `fieldSelector` of a list, watch or deletecollection.
    pub field_selector: String,
    /// The raw first `labelSelector` of a list, watch or deletecollection.
    pub label_selector: String,
}

/// Whether `name` can be a path segment (`k8s.io/apimachinery/pkg/api/validation/path`).
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// Decodes the list options the way `metainternalversionscheme.ParameterCodec` does; on any
/// error kube-apiserver forgets them all but the `watch` flag.
fn list_options(q: &Query) -> Option<(bool, Option<FieldSelector>)> {
    let watch = is_watch(q);
    if let Some(ls) = q.get("labelSelector") {
        LabelSelector::parse(ls).ok()?;
    }
    let fields = match q.get("fieldSelector") {
        Some(fs) => Some(FieldSelector::parse(fs).ok()?),
        None => None,
    };
    for numeric in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.get(numeric) {
            v.parse::<i64>().ok()?;
        }
    }
    Some((watch, fields))
}

/// `watch=<anything>` means watch unless it is `false` or `0`, in any case.
fn is_watch(q: &Query) -> bool {
    match q.get("watch") {
        None => false,
        Some(v) => !(v.eq_ignore_ascii_case("false") || v == "0"),
    }
}

impl RequestInfo {
    /// Resolves `method` and request `target` (path and query).
    pub fn classify(method: &str, target: &str) -> Result<RequestInfo, ClassifyError> {
        let (path, raw_query) = split_target(target).map_err(ClassifyError::InvalidTarget)?;
        let mut ri = RequestInfo {
            path,
            verb: method.to_lowercase(),
            ..RequestInfo::default()
        };
        let trimmed = ri.path.trim_matches('/');
        let mut parts: Vec<String> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').map(str::to_string).collect()
        };
        if parts.len() < 3 || (parts[0] != "api" && parts[0] != "apis") {
            return Ok(ri);
        }
        ri.api_prefix = parts.remove(0);
        if ri.api_prefix == "apis" {
            if parts.len() < 3 {
                return Ok(ri);
            }
            ri.api_group = parts.remove(0);
        }
        ri.is_resource_request = true;
        ri.api_version = parts.remove(0);

        let verb_via_method = !(parts[0] == "watch" || parts[0] == "proxy");
        if verb_via_method {
            ri.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        } else {
            if parts.len() < 2 {
                return Err(ClassifyError::Unresolvable(ri.path));
            }
            ri.verb = parts.remove(0);
        }

        if parts[0] == "namespaces" && parts.len() > 1 {
            ri.namespace = parts[1].clone();
            if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
                parts.drain(..2);
            }
        }

        if parts.len() >= 3 && ri.verb != "proxy" {
            ri.subresource = parts[2].clone();
        }
        if parts.len() >= 2 {
            ri.name = parts[1].clone();
        }
        ri.resource = parts[0].clone();
        ri.parts = parts;

        let query = Query::parse(raw_query);
        if ri.name.is_empty() && ri.verb == "get" {
            let (watch, fields) = list_options(&query).unwrap_or_else(|| (is_watch(&query), None));
            ri.verb = if watch { "watch" } else { "list" }.to_string();
            if let Some(name) = fields
                .as_ref()
                .and_then(|f| f.requires_exact_match("metadata.name"))
            {
                if is_valid_path_segment_name(name) {
                    ri.name = name.to_string();
                }
            }
        }
        if ri.name.is_empty() && ri.verb == "delete" {
            ri.verb = "deletecollection".to_string();
        }
        if verb_via_method && matches!(ri.verb.as_str(), "list" | "watch" | "deletecollection") {
            ri.field_selector = query.get("fieldSelector").unwrap_or("").to_string();
            ri.label_selector = query.get("labelSelector").unwrap_or("").to_string();
        }
        Ok(ri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn field<'a>(e: &'a Value, k: &str) -> &'a str {
        e[k].as_str().unwrap_or_else(|| panic!("field {k}"))
    }

    /// All of Kubernetes' own answers, case for case (tests/golden/requestinfo.json).
    #[test]
    fn golden_request_info() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/requestinfo.json");
        let text = std::fs::read_to_string(path).expect("golden requestinfo.json is readable");
        let g: Value = serde_json::from_str(&text).unwrap();
        let cases = g["cases"].as_array().unwrap();
        assert!(cases.len() >= 300);
        for c in cases {
            let method = field(c, "method");
            let url = field(c, "url");
            let exp = &c["expected"];
            let got = RequestInfo::classify(method, url);
            if exp.get("invalidRequest").is_some() {
                assert_eq!(got.map_err(|e| e.status()), Err(400), "{method} {url}");
                continue;
            }
            if exp.get("error").is_some() {
                assert_eq!(got.map_err(|e| e.status()), Err(500), "{method} {url}");
                continue;
            }
            let ri = got.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let parts: Vec<String> = serde_json::from_value(exp["parts"].clone()).unwrap();
            let want = RequestInfo {
                is_resource_request: exp["isResourceRequest"].as_bool().unwrap(),
                path: field(exp, "path").into(),
                verb: field(exp, "verb").into(),
                api_prefix: field(exp, "apiPrefix").into(),
                api_group: field(exp, "apiGroup").into(),
                api_version: field(exp, "apiVersion").into(),
                namespace: field(exp, "namespace").into(),
                resource: field(exp, "resource").into(),
                subresource: field(exp, "subresource").into(),
                name: field(exp, "name").into(),
                parts,
                field_selector: field(exp, "fieldSelector").into(),
                label_selector: field(exp, "labelSelector").into(),
            };
            assert_eq!(ri, want, "{method} {url}");
        }
    }

    /// The shapes the hub depends on most, spelled out (reference §2.1).
    #[test]
    fn table_of_common_requests() {
        let table: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
            // method, target, verb, namespace, resource, subresource, name
            ("GET", "/api/v1/pods", "list", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/pods?watch=true",
                "watch",
                "",
                "pods",
                "",
                "",
            ),
            ("GET", "/api/v1/watch/pods", "watch", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p",
                "get",
                "a",
                "pods",
                "",
                "p",
            ),
            (
                "GET",
                "/api/v1/namespaces/a",
                "get",
                "a",
                "namespaces",
                "",
                "a",
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/status",
                "update",
                "a",
                "namespaces",
                "status",
                "a",
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/finalize",
                "update",
                "a",
                "namespaces",
                "finalize",
                "a",
            ),
            (
                "PATCH",
                "/api/v1/nodes/n1/status",
                "patch",
                "",
                "nodes",
                "status",
                "n1",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods",
                "deletecollection",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods/p",
                "delete",
                "a",
                "pods",
                "",
                "p",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods",
                "create",
                "a",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/log?follow=true",
                "get",
                "a",
                "pods",
                "log",
                "p",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/p/exec",
                "create",
                "a",
                "pods",
                "exec",
                "p",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dc",
                "list",
                "a",
                "configmaps",
                "",
                "c",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dc&watch=1",
                "watch",
                "a",
                "configmaps",
                "",
                "c",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                "get",
                "kube-node-lease",
                "leases",
                "",
                "n1",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                "update",
                "kube-node-lease",
                "leases",
                "",
                "n1",
            ),
            (
                "GET",
                "/apis/discovery.k8s.io/v1/endpointslices?watch=true",
                "watch",
                "",
                "endpointslices",
                "",
                "",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/s/token",
                "create",
                "a",
                "serviceaccounts",
                "token",
                "s",
            ),
            (
                "GET",
                "/api/v1/proxy/nodes/n1",
                "proxy",
                "",
                "nodes",
                "",
                "n1",
            ),
            (
                "GET",
                "/api/v1/nodes/n1/proxy/x",
                "get",
                "",
                "nodes",
                "proxy",
                "n1",
            ),
        ];
        for (method, target, verb, ns, res, sub, name) in table {
            let ri = RequestInfo::classify(method, target).unwrap();
            assert!(ri.is_resource_request, "{target}");
            assert_eq!(
                (
                    ri.verb.as_str(),
                    ri.namespace.as_str(),
                    ri.resource.as_str(),
                    ri.subresource.as_str(),
                    ri.name.as_str()
                ),
                (*verb, *ns, *res, *sub, *name),
                "{method} {target}"
            );
        }
        for target in ["/healthz", "/version", "/api", "/apis/apps/v1", "/api/v1"] {
            assert!(
                !RequestInfo::classify("GET", target)
                    .unwrap()
                    .is_resource_request
            );
        }
    }
}

//! The object store: every object under one global resourceVersion counter, with a bounded
//! event history for watches, as etcd plus the watch cache give kube-apiserver.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

/// A resource type the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub resource: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.api_version(), self.resource)
    }
}

/// The built-in types (plus OpenYurt's NodePool), as discovery lists them.
pub fn builtin_types() -> Vec<ResourceType> {
    let t = |g: &str, v: &str, r: &str, k: &str, ns: bool| ResourceType {
        group: g.into(),
        version: v.into(),
        resource: r.into(),
        kind: k.into(),
        namespaced: ns,
    };
    vec![
        t("", "v1", "pods", "Pod", true),
        t("", "v1", "configmaps", "ConfigMap", true),
        t("", "v1", "secrets", "Secret", true),
        t("", "v1", "services", "Service", true),
        t("", "v1", "endpoints", "Endpoints", true),
        t("", "v1", "events", "Event", true),
        t("", "v1", "serviceaccounts", "ServiceAccount", true),
        t("", "v1", "nodes", "Node", false),
        t("", "v1", "namespaces", "Namespace", false),
        t("", "v1", "persistentvolumes", "PersistentVolume", false),
        t(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
        ),
        t("coordination.k8s.io", "v1", "leases", "Lease", true),
        t(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        t("events.k8s.io", "v1", "events", "Event", true),
        t("apps", "v1", "deployments", "Deployment", true),
        t("apps", "v1", "daemonsets", "DaemonSet", true),
        t(
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            "CertificateSigningRequest",
            false,
        ),
        t("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", false),
        t("storage.k8s.io", "v1", "csidrivers", "CSIDriver", false),
        t("storage.k8s.io", "v1", "csinodes", "CSINode", false),
        t(
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        t(
            "apps.openyurt.io",
            "v1beta2",
            "nodepools",
            "NodePool",
            false,
        ),
    ]
}

/// A failure the API answers with a Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// Status reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
    /// details.name.
    pub name: String,
    /// details.kind.
    pub kind: String,
}

impl ApiError {
    /// A Status error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            name: String::new(),
            kind: String::new(),
        }
    }

    fn about(mut self, name: &str, kind: &str) -> Self {
        self.name = name.into();
        self.kind = kind.into();
        self
    }

    /// The Status body.
    pub fn to_json(&self) -> Value {
        let mut details = Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), json!(self.name));
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), json!(self.kind));
        }
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason,
        });
        if !details.is_empty() || self.code == 404 {
            v["details"] = Value::Object(details);
        }
        v["code"] = json!(self.code);
        v
    }
}

/// One change, kept for watches.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    type_key: String,
    /// The object's namespace.
    pub namespace: String,
    /// ADDED, MODIFIED or DELETED.
    pub kind: &'static str,
    /// The object after the change (for DELETED: as it was, with the new RV).
    pub object: Value,
    /// The object before the change.
    pub old: Option<Value>,
}

/// Objects, the RV counter, history and pod logs.
#[derive(Clone)]
pub struct Store {
    /// The last resourceVersion handed out.
    pub rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: VecDeque<Change>,
    /// How many changes the history keeps; older watch RVs get 410.
    pub max_history: usize,
    /// Pod logs by (namespace, pod).
    pub logs: HashMap<(String, String), Vec<String>>,
    seed: u64,
}

/// RFC 3339 UTC time, seconds precision.
pub fn now_rfc3339() -> String {
    rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// `secs` since the epoch in RFC 3339, seconds precision.
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Store {
    /// An empty store whose first object gets RV 100.
    pub fn new() -> Self {
        Self {
            rv: 99,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            max_history: 1000,
            logs: HashMap::new(),
            seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
                | 1,
        }
    }

    fn random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// A fresh opaque token (for TokenRequests).
    pub fn new_token(&mut self) -> String {
        format!("test-token-{:016x}{:016x}", self.random(), self.random())
    }

    fn uid(&mut self) -> String {
        let a = self.random();
        let b = self.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// The oldest RV a watch can still start from.
    pub fn oldest_rv(&self) -> u64 {
        self.history.front().map(|c| c.rv - 1).unwrap_or(self.rv)
    }

    fn record(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        kind: &'static str,
        object: Value,
        old: Option<Value>,
    ) {
        self.history.push_back(Change {
            rv: self.rv,
            type_key: t.key(),
            namespace: namespace.to_string(),
            kind,
            object,
            old,
        });
        while self.history.len() > self.max_history {
            self.history.pop_front();
        }
    }

    fn stamp(&mut self, t: &ResourceType, obj: &mut Value) {
        self.rv += 1;
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    /// Creates an object; fills name (from generateName), uid, timestamps and RV.
    pub fn create(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() || !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
                const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let suffix: String = (0..5)
                    .map(|_| ALNUM[(self.random() % ALNUM.len() as u64) as usize] as char)
                    .collect();
                name = format!("{prefix}{suffix}");
            }
        }
        if name.is_empty() {
            return Err(ApiError::new(422, "Invalid", format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", t.kind)));
        }
        let ns = if t.namespaced { namespace } else { "" };
        if t.namespaced {
            if let Some(body_ns) = obj["metadata"]["namespace"].as_str() {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::new(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"));
                }
            }
            obj["metadata"]["namespace"] = json!(ns);
        }
        let key = (t.key(), ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", t.resource),
            )
            .about(&name, &t.resource));
        }
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["uid"] = json!(self.uid());
        obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        self.stamp(t, &mut obj);
        self.objects.insert(key, obj.clone());
        self.record(t, ns, "ADDED", obj.clone(), None);
        Ok(obj)
    }

    /// The object, if it exists.
    pub fn get(&self, t: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let ns = if t.namespaced { namespace } else { "" };
        self.objects
            .get(&(t.key(), ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(t, name))
    }

    /// Replaces an object (or only its status); a stale resourceVersion in the body is a
    /// conflict, and an update that changes nothing keeps the RV (no write).
    pub fn update(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(t, namespace, name)?;
        let ns = if t.namespaced { namespace } else { "" };
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", t.resource)).about(name, &t.resource));
            }
        }
        let mut new = if status_only {
            let mut n = old.clone();
            n["status"] = obj["status"].take();
            n
        } else {
            let mut n = obj;
            if !n.get("metadata").is_some_and(Value::is_object) {
                n["metadata"] = json!({});
            }
            for k in ["uid", "creationTimestamp", "name", "namespace"] {
                n["metadata"][k] = old["metadata"][k].clone();
            }
            if !t.namespaced {
                if let Some(m) = n["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
            n
        };
        new["apiVersion"] = json!(t.api_version());
        new["kind"] = json!(t.kind);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == old {
            return Ok(old);
        }
        self.stamp(t, &mut new);
        self.objects
            .insert((t.key(), ns.to_string(), name.to_string()), new.clone());
        self.record(t, ns, "MODIFIED", new.clone(), Some(old));
        Ok(new)
    }

    /// Applies a JSON merge patch (RFC 7386).
    pub fn merge_patch(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        self.patch_with(merge, t, namespace, name, patch, status_only)
    }

    /// Applies a strategic-merge patch (also how this apiserver approximates a server-side
    /// apply: the fields given are set, the others left alone).
    pub fn strategic_patch(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        self.patch_with(strategic_merge, t, namespace, name, patch, status_only)
    }

    fn patch_with(
        &mut self,
        apply: fn(&mut Value, &Value),
        t: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let mut obj = self.get(t, namespace, name)?;
        apply(&mut obj, patch);
        if patch["metadata"]["resourceVersion"].is_null() {
            obj["metadata"]["resourceVersion"] = json!("");
        }
        self.update(t, namespace, name, obj, status_only)
    }

    /// Deletes an object.
    pub fn delete(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let ns = if t.namespaced { namespace } else { "" };
        let mut obj = self
            .objects
            .remove(&(t.key(), ns.to_string(), name.to_string()))
            .ok_or_else(|| not_found(t, name))?;
        let old = obj.clone();
        self.stamp(t, &mut obj);
        self.record(t, ns, "DELETED", obj.clone(), Some(old));
        Ok(obj)
    }

    /// The objects of a type, in one namespace or all, in key order.
    pub fn list(&self, t: &ResourceType, namespace: &str) -> Vec<Value> {
        let key = t.key();
        self.objects
            .range((key.clone(), String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == key)
            .filter(|((_, ns, _), _)| namespace.is_empty() || ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes of a type after `rv` (in a namespace or all); `Err(oldest)` when `rv` is older
    /// than the history reaches.
    pub fn changes_since(
        &self,
        t: &ResourceType,
        namespace: &str,
        rv: u64,
    ) -> Result<Vec<Change>, u64> {
        if rv < self.oldest_rv() {
            return Err(self.oldest_rv());
        }
        let key = t.key();
        Ok(self
            .history
            .iter()
            .filter(|c| {
                c.rv > rv && c.type_key == key && (namespace.is_empty() || c.namespace == namespace)
            })
            .cloned()
            .collect())
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(t: &ResourceType, name: &str) -> ApiError {
    let what = if t.group.is_empty() {
        t.resource.clone()
    } else {
        format!("{}.{}", t.resource, t.group)
    };
    ApiError::new(404, "NotFound", format!("{what} \"{name}\" not found")).about(name, &t.resource)
}

/// RFC 7386 merge.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of a list a strategic-merge patch merges item by item (the `patchMergeKey`
/// tags of k8s.io/api, by field name); `None` for lists a patch replaces.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses"
        | "ephemeralContainerStatuses"
        | "resourceClaims" => "name",
        "conditions" | "addresses" => "type",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        // Container ports merge on containerPort, Service ports on port.
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// The patch without its directives (`$patch`, `$setElementOrder/..`, `$retainKeys`, ...).
fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic-merge patch as kube-apiserver does for built-in types: maps merge
/// (`null` deletes), lists with a merge key merge item by item (`$patch: delete` removes
/// one), `finalizers` merge as a set, other lists are replaced; `$patch: replace` replaces a
/// map, `$deleteFromPrimitiveList/<f>` removes values, `$setElementOrder` and `$retainKeys`
/// are read and dropped.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(gone)) = (t.get_mut(field), v.as_array()) {
                cur.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic_merge(cur, v),
            (Some(Value::Array(cur)), Value::Array(items)) => match merge_key(k, items) {
                Some(key) => {
                    for item in items {
                        let id = &item[key];
                        if item["$patch"] == "delete" {
                            cur.retain(|x| &x[key] != id);
                        } else if let Some(old) = cur.iter_mut().find(|x| &x[key] == id) {
                            strategic_merge(old, item);
                        } else {
                            cur.push(without_directives(item));
                        }
                    }
                }
                None if k == "finalizers" => {
                    for item in items {
                        if !cur.contains(item) {
                            cur.push(item.clone());
                        }
                    }
                }
                None => {
                    *cur = without_directives(v)
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                }
            },
            _ => {
                t.insert(k.clone(), without_directives(v));
            }
        }
    }
}

/// The value at a dotted field path, as a string (what field selectors compare).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A field selector of `a=b`, `a==b`, `a!=b` terms, evaluated on dotted paths.
pub fn field_matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            field_value(obj, k) != v
        } else if let Some((k, v)) = term.split_once('=') {
            field_value(obj, k) == v.trim_start_matches('=')
        } else {
            false
        }
    })
}

/// Splits a label selector into requirements on commas outside parentheses.
fn label_terms(selector: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `selector` is a label selector this server understands.
pub fn label_selector_valid(selector: &str) -> bool {
    label_terms(selector).iter().all(|t| {
        let t = t.trim_start_matches('!');
        !t.is_empty() && !t.starts_with('=') && !t.ends_with("==")
    })
}

/// Equality- and set-based label selectors.
pub fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels[k].as_str().map(str::to_string);
    label_terms(selector).iter().all(|term| {
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        };
        if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            get(k.trim()).is_none_or(|v| !set(rest).contains(&v))
        } else if let Some((k, rest)) = term.split_once(" in ") {
            get(k.trim()).is_some_and(|v| set(rest).contains(&v))
        } else if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()) != Some(v.trim().to_string())
        } else if let Some((k, v)) = term.split_once('=') {
            get(k.trim()) == Some(v.trim_start_matches('=').trim().to_string())
        } else {
            get(term).is_some()
        }
    })
}

//! Connection handling and the API routes of the fake apiserver.

use async_io::{Async, Timer};
use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};
use smol::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{
    field_matches, label_selector_valid, labels_match, ApiError, Change, ResourceType,
};
use crate::wire::{chunk, head_bytes, write_response, Conn, Request, Response};
use crate::{Fault, Mangle, Pki, Recorded, Shared, User};

type Tls = futures_rustls::server::TlsStream<Async<TcpStream>>;
type Reader = Conn<ReadHalf<Tls>>;
type Writer = WriteHalf<Tls>;

const VERSION: &str = r#"{
  "major": "1",
  "minor": "36",
  "emulationMajor": "1",
  "emulationMinor": "36",
  "minCompatibilityMajor": "1",
  "minCompatibilityMinor": "35",
  "gitVersion": "v1.36.2",
  "gitCommit": "98b35193b2ac7a23a673325f5e9b830ecd5ba406",
  "gitTreeState": "clean",
  "buildDate": "2026-11-29T08:12:39Z",
  "goVersion": "go1.26.6",
  "compiler": "gc",
  "platform": "linux/amd64"
}"#;

pub(crate) fn tls_config(pki: &Pki) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let certs = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

/// A resource request's target.
pub(crate) struct ResourcePath {
    pub(crate) rtype: ResourceType,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
    pub(crate) legacy_watch: bool,
}

pub(crate) fn parse_resource_path(path: &str, types: &[ResourceType]) -> Option<ResourcePath> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest.to_vec()),
        _ => return None,
    };
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest.remove(0);
    }
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && rest[2] != "status"
        && rest[2] != "finalize"
    {
        namespace = rest[1].to_string();
        rest.drain(..2);
    }
    let resource = *rest.first()?;
    let rtype = types
        .iter()
        .find(|t| t.group == group && t.version == version && t.resource == resource)?
        .clone();
    Some(ResourcePath {
        rtype,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        legacy_watch,
    })
}

fn std_headers(content_type: &str) -> Vec<(String, String)> {
    vec![
        (
            "Audit-Id".into(),
            format!("{:x}", Instant::now().elapsed().as_nanos() ^ 0x5eed),
        ),
        ("Cache-Control".into(), "no-cache, private".into()),
        ("Content-Type".into(), content_type.into()),
        (
            "X-Kubernetes-Pf-Flowschema-Uid".into(),
            "959ba61c-0eae-4252-8f0f-281b81b3c947".into(),
        ),
        (
            "X-Kubernetes-Pf-Prioritylevel-Uid".into(),
            "d1e95908-65ec-41aa-8edd-f361ac487bd2".into(),
        ),
    ]
}

/// The request body as JSON, or the apiserver's 400.
pub(crate) fn json_body(req: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("error decoding request body: {e}"),
        )
    })
}

fn json_response(status: u16, body: &Value) -> Response {
    Response {
        status,
        headers: std_headers("application/json"),
        body: serde_json::to_vec(body).unwrap(),
    }
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_json())
}

pub(crate) async fn connection(
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    stream: Async<TcpStream>,
) {
    if shared.fault() == Fault::Blackhole {
        hang_while_blackholed(&shared).await;
        return;
    }
    let Ok(tls_stream) = TlsAcceptor::from(tls).accept(stream).await else {
        return;
    };
    let cert_user = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| shared.pki.user_of(der.as_ref()));
    let (r, w) = smol::io::split(tls_stream);
    let mut reader = Conn::new(r);
    let mut writer = w;
    loop {
        let req = match reader.read_request().await {
            Ok(Some(r)) => r,
            _ => return,
        };
        // As kube-apiserver's bearer authenticator: the header trimmed and split at single
        // spaces, the second word the token if not empty; anything else is no token.
        let bearer = req.header("authorization").and_then(|a| {
            let mut words = a.trim().splitn(3, ' ');
            let (scheme, token) = (words.next()?, words.next()?);
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
        });
        let user = match bearer {
            Some(token) => match lookup_token(&shared, token) {
                Some(u) => Some(u),
                None => {
                    record(&shared, &req, None);
                    let e = ApiError::new(401, "Unauthorized", "Unauthorized");
                    let mut v = e.to_json();
                    v.as_object_mut().unwrap().remove("details");
                    let _ = write_response(&mut writer, json_response(401, &v), false, false).await;
                    continue;
                }
            },
            None => cert_user.clone(),
        };
        record(&shared, &req, user.as_ref());
        match shared.fault() {
            Fault::Blackhole => {
                hang_while_blackholed(&shared).await;
                return;
            }
            Fault::Delay(d) => {
                Timer::after(d).await;
            }
            Fault::Hold(who) if req.header("user-agent").is_some_and(|ua| ua.contains(&who)) => {
                let held = Fault::Hold(who);
                while shared.fault() == held && !shared.stopped.load(Ordering::Relaxed) {
                    Timer::after(Duration::from_millis(20)).await;
                }
            }
            Fault::Mangle(part, how) if req.path.contains(&part) => {
                if !mangled(&shared, &mut writer, &req, how).await {
                    return;
                }
                continue;
            }
            Fault::Status(code) => {
                let e = ApiError::new(code, "InternalError", "injected failure");
                if write_response(&mut writer, error_response(&e), false, false)
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            _ => {}
        }
        if !route(&shared, &mut reader, &mut writer, req, user).await {
            return;
        }
    }
}

/// Answers a GET (an object, a list or a watch) with `how`'s damage; false when the
/// connection must end.
async fn mangled(shared: &Shared, w: &mut Writer, req: &Request, how: Mangle) -> bool {
    let types = shared.types.lock().unwrap().clone();
    let Some(rp) = parse_resource_path(&req.path, &types) else {
        return false;
    };
    let body = if how == Mangle::GarbageWatchLine {
        let objects = shared.store.lock().unwrap().list(&rp.rtype, &rp.namespace);
        let mut events = Vec::new();
        for (i, o) in objects.iter().filter(|o| selected(o, req)).enumerate() {
            if i == 1 {
                events.extend_from_slice(b"{\"type\":\"ADDED\",\"object\":{not json at all\n");
            }
            events.extend_from_slice(&event_json("ADDED", o));
        }
        events
    } else if rp.name.is_none() {
        list(shared, req, &rp).body
    } else {
        mutate(shared, req, &rp).body
    };
    let mut headers = std_headers("application/json");
    let mut out;
    let keep = match how {
        Mangle::TruncatedChunk | Mangle::GarbageWatchLine => {
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            out = head_bytes(200, &headers);
            if how == Mangle::TruncatedChunk {
                let half = body.len() / 2;
                out.extend_from_slice(&chunk(&body[..half]));
                out.extend_from_slice(format!("{:x}\r\n", body.len() - half).as_bytes());
                out.extend_from_slice(&body[half..half + (body.len() - half) / 2]);
            } else {
                out.extend_from_slice(&chunk(&body));
                out.extend_from_slice(b"0\r\n\r\n");
            }
            false
        }
        Mangle::LongContentLength => {
            headers.push(("Content-Length".into(), (body.len() + 100).to_string()));
            out = head_bytes(200, &headers);
            out.extend_from_slice(&body);
            false
        }
        Mangle::ShortContentLength => {
            headers.push(("Content-Length".into(), (body.len() / 2).to_string()));
            out = head_bytes(200, &headers);
            out.extend_from_slice(&body);
            true
        }
    };
    let sent = w.write_all(&out).await.is_ok() && w.flush().await.is_ok();
    if !keep {
        // Really closed: the connection list keeps a clone of the socket for resets.
        let _ = w.close().await;
    }
    sent && keep
}

fn lookup_token(shared: &Shared, token: &str) -> Option<User> {
    shared.tokens.lock().unwrap().get(token.trim()).cloned()
}

async fn hang_while_blackholed(shared: &Shared) {
    while shared.fault() == Fault::Blackhole && !shared.stopped.load(Ordering::Relaxed) {
        Timer::after(Duration::from_millis(20)).await;
    }
    // Once blackholed, a connection stays dead, as after a real network partition.
    Timer::after(Duration::from_secs(3600)).await;
}

fn record(shared: &Shared, req: &Request, user: Option<&User>) {
    let mut rec = shared.recorded.lock().unwrap();
    if rec.len() > 10_000 {
        rec.drain(..5_000);
    }
    rec.push(Recorded {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        user: user.map(|u| u.name.clone()),
    });
}

/// Writes a simple response; false when the connection is done.
async fn send(shared: &Shared, w: &mut Writer, req: &Request, resp: Response) -> bool {
    match write_response(w, resp, req.accepts_gzip(), req.method == "HEAD").await {
        Ok(n) => {
            shared.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

fn anonymous_allowed(path: &str) -> bool {
    matches!(
        path,
        "/version"
            | "/healthz"
            | "/readyz"
            | "/livez"
            | "/api/v1/namespaces/kube-public/configmaps/cluster-info"
    )
}

async fn route(
    shared: &Arc<Shared>,
    r: &mut Reader,
    w: &mut Writer,
    req: Request,
    user: Option<User>,
) -> bool {
    let path = req.path.clone();
    if user.is_none() && !anonymous_allowed(&path) {
        let e = ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"system:anonymous\" cannot {} path \"{path}\"",
                req.method.to_lowercase()
            ),
        );
        return send(shared, w, &req, error_response(&e)).await;
    }
    match path.as_str() {
        "/version" => {
            return send(
                shared,
                w,
                &req,
                Response {
                    status: 200,
                    headers: std_headers("application/json"),
                    body: VERSION.as_bytes().to_vec(),
                },
            )
            .await
        }
        "/healthz" | "/readyz" | "/livez" => {
            let mut h = std_headers("text/plain; charset=utf-8");
            h.push(("X-Content-Type-Options".into(), "nosniff".into()));
            return send(
                shared,
                w,
                &req,
                Response {
                    status: 200,
                    headers: h,
                    body: b"ok".to_vec(),
                },
            )
            .await;
        }
        _ => {}
    }
    let types = shared.types.lock().unwrap().clone();
    if let Some(body) = discovery(&path, &types) {
        return send(shared, w, &req, json_response(200, &body)).await;
    }
    let Some(rp) = parse_resource_path(&path, &types) else {
        let e = ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        return send(shared, w, &req, error_response(&e)).await;
    };
    let upgrade = req
        .header("connection")
        .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade"));
    match (req.method.as_str(), rp.name.as_deref(), rp.sub.as_deref()) {
        (_, Some(_), Some("exec" | "attach" | "portforward")) if upgrade => {
            echo_tunnel(r, w, &req).await
        }
        ("GET", Some(name), Some("log")) => logs(shared, r, w, &req, &rp, name).await,
        ("GET", None, None) if rp.legacy_watch || req.flag("watch") => {
            watch(shared, r, w, &req, &rp).await
        }
        ("GET", None, None) => {
            let resp = list(shared, &req, &rp);
            send(shared, w, &req, resp).await
        }
        _ => {
            let csr = user
                .as_ref()
                .and_then(|u| crate::certificates::handle(shared, &req, &rp, u));
            let resp = match csr {
                Some(Ok((code, v))) => json_response(code, &v),
                Some(Err(e)) => error_response(&e),
                None if req.method == "POST"
                    && rp.rtype.resource == "serviceaccounts"
                    && rp.sub.as_deref() == Some("token") =>
                {
                    token_request(shared, &req, &rp)
                }
                None if req.method == "POST" && rp.rtype.resource == "subjectaccessreviews" => {
                    subject_access_review(&req)
                }
                None => mutate(shared, &req, &rp),
            };
            send(shared, w, &req, resp).await
        }
    }
}

fn discovery(path: &str, types: &[ResourceType]) -> Option<Value> {
    let resources = |group: &str, version: &str| -> Value {
        let mut out = Vec::new();
        for t in types
            .iter()
            .filter(|t| t.group == group && t.version == version)
        {
            out.push(json!({"name": t.resource, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced, "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}));
            out.push(json!({"name": format!("{}/status", t.resource), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
            if t.resource == "pods" {
                for sub in ["log", "exec", "attach", "portforward"] {
                    out.push(json!({"name": format!("pods/{sub}"), "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "create"]}));
                }
            }
        }
        json!({"kind": "APIResourceList", "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }, "resources": out})
    };
    let mut groups: Vec<(String, String)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        if !groups.contains(&(t.group.clone(), t.version.clone())) {
            groups.push((t.group.clone(), t.version.clone()));
        }
    }
    let group_json = |g: &str, v: &str| json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}], "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}});
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] => Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        ["api", "v1"] => Some(resources("", "v1")),
        ["apis"] => Some(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>()}),
        ),
        ["apis", g] => groups.iter().find(|(gg, _)| gg == g).map(|(g, v)| {
            let mut j = group_json(g, v);
            j["kind"] = json!("APIGroup");
            j["apiVersion"] = json!("v1");
            j
        }),
        ["apis", g, v] if groups.iter().any(|(gg, vv)| gg == g && vv == v) => Some(resources(g, v)),
        _ => None,
    }
}

fn strip_type(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

fn selected(obj: &Value, req: &Request) -> bool {
    req.query("labelSelector")
        .is_none_or(|s| labels_match(obj, s))
        && req
            .query("fieldSelector")
            .is_none_or(|s| field_matches(obj, s))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

fn bad_selector(req: &Request) -> Option<ApiError> {
    let ls = req.query("labelSelector")?;
    (!label_selector_valid(ls)).then(|| {
        ApiError::new(
            400,
            "BadRequest",
            format!("unable to parse requirement: found '{ls}'"),
        )
    })
}

fn list(shared: &Shared, req: &Request, rp: &ResourcePath) -> Response {
    if let Some(e) = bad_selector(req) {
        return error_response(&e);
    }
    let store = shared.store.lock().unwrap();
    let mut rv = store.rv;
    let mut items: Vec<Value> = store
        .list(&rp.rtype, &rp.namespace)
        .into_iter()
        .filter(|o| selected(o, req))
        .collect();
    drop(store);
    if let Some(token) = req.query("continue").filter(|t| !t.is_empty()) {
        let Some((token_rv, after)) = unhex(token).and_then(|t| {
            t.split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        }) else {
            return error_response(&ApiError::new(
                400,
                "BadRequest",
                "continue key is not valid",
            ));
        };
        rv = token_rv.parse().unwrap_or(rv);
        items.retain(|o| {
            let key = format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            key > after
        });
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = req
        .query("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
    {
        if items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().expect("limit > 0");
            let key = format!(
                "{}/{}",
                last["metadata"]["namespace"].as_str().unwrap_or(""),
                last["metadata"]["name"].as_str().unwrap_or("")
            );
            metadata["continue"] = json!(hex(&format!("{rv}/{key}")));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if wants_metadata(req) {
        let body = json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(|i| json!({"metadata": i["metadata"]})).collect::<Vec<_>>(),
        });
        return json_response(200, &body);
    }
    let body = json!({
        "kind": format!("{}List", rp.rtype.kind),
        "apiVersion": rp.rtype.api_version(),
        "metadata": metadata,
        "items": items.into_iter().map(strip_type).collect::<Vec<_>>(),
    });
    json_response(200, &body)
}

/// Whether the first Accept clause asks for the metadata-only transformation.
fn wants_metadata(req: &Request) -> bool {
    req.header("accept")
        .and_then(|a| a.split(',').next())
        .is_some_and(|c| c.contains("as=PartialObjectMetadata"))
}

/// `POST .../serviceaccounts/<name>/token`, answered as kube-apiserver does (the spec as
/// granted, the token and its expiry); the token authenticates as the service account here
/// from then on.
fn token_request(shared: &Shared, req: &Request, rp: &ResourcePath) -> Response {
    let name = rp.name.clone().unwrap_or_default();
    let spec = match json_body(req) {
        Ok(v) => v["spec"].clone(),
        Err(e) => return error_response(&e),
    };
    let mut store = shared.store.lock().unwrap();
    if let Err(e) = store.get(&rp.rtype, &rp.namespace, &name) {
        return error_response(&e);
    }
    let seconds = spec["expirationSeconds"].as_u64().unwrap_or(3600);
    if seconds < 600 {
        return error_response(&ApiError::new(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    let audiences = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!(["https://kubernetes.default.svc"]),
    };
    let token = store.new_token();
    drop(store);
    let ns = rp.namespace.clone();
    shared.tokens.lock().unwrap().insert(
        token.clone(),
        crate::User {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        },
    );
    let now = crate::store::now_rfc3339();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + seconds;
    json_response(
        201,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now},
            "spec": {"audiences": audiences, "expirationSeconds": seconds,
                     "boundObjectRef": spec["boundObjectRef"].clone()},
            "status": {"token": token, "expirationTimestamp": crate::store::rfc3339(exp)}
        }),
    )
}

/// `POST subjectaccessreviews`: this apiserver authorizes every authenticated request, and
/// says so, as kube-apiserver answers with its authorizers' verdict.
fn subject_access_review(req: &Request) -> Response {
    match json_body(req) {
        Ok(mut v) if v.is_object() => {
            v["status"] = json!({"allowed": true, "reason": "the test apiserver allows every authenticated request"});
            json_response(201, &v)
        }
        Ok(_) => error_response(&ApiError::new(
            400,
            "BadRequest",
            "the body is not a SubjectAccessReview",
        )),
        Err(e) => error_response(&e),
    }
}

fn mutate(shared: &Shared, req: &Request, rp: &ResourcePath) -> Response {
    let t = &rp.rtype;
    let ns = if t.resource == "namespaces" {
        ""
    } else {
        rp.namespace.as_str()
    };
    let name = rp.name.clone().unwrap_or_default();
    let status_only = rp.sub.as_deref() == Some("status");
    if rp.sub.is_some() && !status_only {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let body = || json_body(req);
    let result = {
        let mut store = shared.store.lock().unwrap();
        // `dryRun=All`: the answer is what the write would give; nothing is stored, as
        // kube-apiserver does.
        let dry_run = req.query("dryRun") == Some("All")
            && matches!(req.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        let before = dry_run.then(|| store.clone());
        let result = match (req.method.as_str(), rp.name.is_some()) {
            ("GET" | "HEAD", true) => store.get(t, ns, &name).map(|v| {
                if wants_metadata(req) {
                    (200, json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]}))
                } else {
                    (200, v)
                }
            }),
            ("POST", false) => body().and_then(|b| store.create(t, ns, b)).map(|v| (201, v)),
            ("PUT", true) => body().and_then(|b| store.update(t, ns, &name, b, status_only)).map(|v| (200, v)),
            ("PATCH", true) => {
                let ct = req.header("content-type").unwrap_or("");
                let media = ct.split(';').next().unwrap_or("").trim();
                match media {
                    "application/merge-patch+json" => body().and_then(|b| store.merge_patch(t, ns, &name, &b, status_only)).map(|v| (200, v)),
                    "application/strategic-merge-patch+json" => body().and_then(|b| store.strategic_patch(t, ns, &name, &b, status_only)).map(|v| (200, v)),
                    // Server-side apply, as kube-apiserver answers it for a JSON body (what
                    // client-go and kubectl send): the manager is required, a missing object
                    // is created, the fields given are set.
                    "application/apply-patch+yaml" => match req.query("fieldManager").filter(|m| !m.is_empty()) {
                        None => Err(ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")),
                        Some(_) => body().and_then(|b| match store.get(t, ns, &name) {
                            Ok(_) => store.strategic_patch(t, ns, &name, &b, status_only).map(|v| (200, v)),
                            Err(_) => store.create(t, ns, b).map(|v| (201, v)),
                        }),
                    },
                    _ => Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"))),
                }
            }
            ("DELETE", true) => store.delete(t, ns, &name).map(|v| {
                (200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "kind": t.resource, "uid": v["metadata"]["uid"]}}))
            }),
            ("DELETE", false) => {
                let victims: Vec<Value> = store.list(t, ns).into_iter().filter(|o| selected(o, req)).collect();
                for v in &victims {
                    let _ = store.delete(t, v["metadata"]["namespace"].as_str().unwrap_or(""), v["metadata"]["name"].as_str().unwrap_or(""));
                }
                Ok((200, json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(), "metadata": {"resourceVersion": store.rv.to_string()}, "items": victims.into_iter().map(strip_type).collect::<Vec<_>>()})))
            }
            _ => Err(ApiError::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource"))),
        };
        if let Some(before) = before {
            *store = before;
        }
        result
    };
    shared.notify();
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// Writes one chunk; false when the client is gone.
async fn write_chunk(shared: &Shared, w: &mut Writer, data: &[u8]) -> bool {
    shared
        .body_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    w.write_all(&chunk(data)).await.is_ok() && w.flush().await.is_ok()
}

/// Writes one watch event as its own chunk, compressed as its own gzip member when `gzip`
/// (as kube-apiserver 1.37 closes the gzip stream at every flush); false when the client is
/// gone.
async fn write_event(shared: &Shared, w: &mut Writer, gzip: bool, event: &[u8]) -> bool {
    if !gzip {
        return write_chunk(shared, w, event).await;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let member = std::io::Write::write_all(&mut enc, event).and_then(|()| enc.finish());
    match member {
        Ok(m) => write_chunk(shared, w, &m).await,
        Err(_) => false,
    }
}

fn event_json(kind: &str, obj: &Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
    v.push(b'\n');
    v
}

/// The event a watcher with `req`'s selectors sees for a change, if any.
fn visible(change: &Change, req: &Request) -> Option<(&'static str, Value)> {
    let now = selected(&change.object, req);
    let before = change.old.as_ref().is_some_and(|o| selected(o, req));
    match (change.kind, before, now) {
        ("DELETED", true, _) => Some(("DELETED", change.object.clone())),
        ("DELETED", false, _) => None,
        (_, false, true) => Some(("ADDED", change.object.clone())),
        (_, true, true) => Some(("MODIFIED", change.object.clone())),
        (_, true, false) => Some(("DELETED", change.object.clone())),
        _ => None,
    }
}

struct WatchGuard<'a>(&'a Shared, String);
impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0.open_watches.lock().unwrap().get_mut(&self.1) {
            *n -= 1;
        }
    }
}

async fn watch(
    shared: &Arc<Shared>,
    r: &mut Reader,
    w: &mut Writer,
    req: &Request,
    rp: &ResourcePath,
) -> bool {
    if let Some(e) = bad_selector(req) {
        return send(shared, w, req, error_response(&e)).await;
    }
    let t = &rp.rtype;
    let bookmarks = req.flag("allowWatchBookmarks");
    let rv_param = req.query("resourceVersion").unwrap_or("");
    // kube-apiserver (1.36 measured) turns a watch that allows bookmarks from "any" or no
    // resourceVersion into a watch-list: the initial events end with a bookmark annotated
    // `k8s.io/initial-events-end`.
    let watch_list = req.flag("sendInitialEvents")
        || (req.query("sendInitialEvents").is_none()
            && req.query("resourceVersionMatch").is_none()
            && bookmarks
            && (rv_param.is_empty() || rv_param == "0"));
    let gzip = watch_list && req.accepts_gzip() && shared.watch_list_gzip.load(Ordering::Relaxed);
    let mut headers = std_headers("application/json");
    if gzip {
        headers.push(("Content-Encoding".into(), "gzip".into()));
        headers.push(("Vary".into(), "Accept-Encoding".into()));
    }
    headers.push(("Transfer-Encoding".into(), "chunked".into()));
    if w.write_all(&head_bytes(200, &headers)).await.is_err() || w.flush().await.is_err() {
        return false;
    }
    *shared
        .open_watches
        .lock()
        .unwrap()
        .entry(t.resource.clone())
        .or_default() += 1;
    let _guard = WatchGuard(shared, t.resource.clone());
    let timeout = req
        .query("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let timeout = match *shared.max_watch_timeout.lock().unwrap() {
        Some(max) => timeout.min(max),
        None => timeout,
    };
    let deadline = Instant::now() + timeout;
    let initial = req.flag("sendInitialEvents") || rv_param.is_empty() || rv_param == "0";
    let bookmark = |rv: u64, end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_json(
            "BOOKMARK",
            &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": meta}),
        )
    };
    let mut last = if initial {
        let (objects, rv) = {
            let store = shared.store.lock().unwrap();
            (store.list(t, &rp.namespace), store.rv)
        };
        for o in objects.iter().filter(|o| selected(o, req)) {
            if !write_event(shared, w, gzip, &event_json("ADDED", o)).await {
                return false;
            }
        }
        if watch_list && bookmarks && !write_event(shared, w, gzip, &bookmark(rv, true)).await {
            return false;
        }
        rv
    } else {
        match rv_param.parse::<u64>() {
            Ok(rv) => rv,
            Err(_) => {
                let e = ApiError::new(
                    400,
                    "BadRequest",
                    format!("invalid resource version: {rv_param}"),
                );
                let _ = write_event(shared, w, gzip, &event_json("ERROR", &e.to_json())).await;
                let _ = w.write_all(b"0\r\n\r\n").await;
                return true;
            }
        }
    };
    let mut next_bookmark = Instant::now() + *shared.bookmark_interval.lock().unwrap();
    loop {
        let listener = shared.changed.listen();
        if shared.fault() == Fault::Blackhole {
            hang_while_blackholed(shared).await;
            return false;
        }
        let changes = shared
            .store
            .lock()
            .unwrap()
            .changes_since(t, &rp.namespace, last);
        match changes {
            Err(oldest) => {
                let e = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {last} ({oldest})"),
                );
                let mut v = e.to_json();
                v.as_object_mut().unwrap().remove("details");
                let _ = write_event(shared, w, gzip, &event_json("ERROR", &v)).await;
                let _ = w.write_all(b"0\r\n\r\n").await;
                let _ = w.flush().await;
                return true;
            }
            Ok(changes) => {
                for c in changes {
                    last = c.rv;
                    if let Some((kind, obj)) = visible(&c, req) {
                        if !write_event(shared, w, gzip, &event_json(kind, &obj)).await {
                            return false;
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = w.write_all(b"0\r\n\r\n").await;
            let _ = w.flush().await;
            return true;
        }
        if bookmarks && now >= next_bookmark {
            let rv = shared.store.lock().unwrap().rv;
            if !write_event(shared, w, gzip, &bookmark(rv, false)).await {
                return false;
            }
            next_bookmark = now + *shared.bookmark_interval.lock().unwrap();
        }
        let wake = if bookmarks {
            deadline.min(next_bookmark)
        } else {
            deadline
        };
        let closed = smol::future::or(
            async {
                listener.await;
                false
            },
            smol::future::or(
                async {
                    Timer::at(wake).await;
                    false
                },
                client_closed(r),
            ),
        )
        .await;
        if closed {
            return false;
        }
    }
}

/// Resolves to true when the client closes its side (or sends something unexpected).
async fn client_closed(r: &mut Reader) -> bool {
    let mut b = [0u8; 1];
    let _ = r.stream.read(&mut b).await;
    true
}

async fn logs(
    shared: &Arc<Shared>,
    r: &mut Reader,
    w: &mut Writer,
    req: &Request,
    rp: &ResourcePath,
    name: &str,
) -> bool {
    let found = shared
        .store
        .lock()
        .unwrap()
        .get(&rp.rtype, &rp.namespace, name);
    if let Err(e) = found {
        return send(shared, w, req, error_response(&e)).await;
    }
    let key = (rp.namespace.clone(), name.to_string());
    let lines = |from: usize| -> (Vec<String>, usize) {
        let store = shared.store.lock().unwrap();
        let all = store.logs.get(&key).cloned().unwrap_or_default();
        let n = all.len();
        (all.into_iter().skip(from).collect(), n)
    };
    if !req.flag("follow") {
        let (all, _) = lines(0);
        let body: String = all.iter().map(|l| format!("{l}\n")).collect();
        let resp = Response {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.into_bytes(),
        };
        return send(shared, w, req, resp).await;
    }
    let head = head_bytes(
        200,
        &[
            ("Content-Type".into(), "text/plain".into()),
            ("Transfer-Encoding".into(), "chunked".into()),
        ],
    );
    if w.write_all(&head).await.is_err() || w.flush().await.is_err() {
        return false;
    }
    let mut sent = 0;
    loop {
        let listener = shared.changed.listen();
        let (new, n) = lines(sent);
        sent = n;
        for l in new {
            if !write_chunk(shared, w, format!("{l}\n").as_bytes()).await {
                return false;
            }
        }
        let closed = smol::future::or(
            async {
                listener.await;
                false
            },
            client_closed(r),
        )
        .await;
        if closed || shared.stopped.load(Ordering::Relaxed) {
            return false;
        }
    }
}

/// Answers an upgrade with 101 and echoes every byte until the client closes its side.
async fn echo_tunnel(r: &mut Reader, w: &mut Writer, req: &Request) -> bool {
    let mut headers = vec![
        ("Connection".to_string(), "Upgrade".to_string()),
        (
            "Upgrade".to_string(),
            req.header("upgrade").unwrap_or("SPDY/3.1").to_string(),
        ),
    ];
    if let Some(p) = req.header("x-stream-protocol-version") {
        headers.push((
            "X-Stream-Protocol-Version".into(),
            p.split(',').next().unwrap_or(p).trim().to_string(),
        ));
    }
    if w.write_all(&head_bytes(101, &headers)).await.is_err() {
        return false;
    }
    let pending = r.take_buffered();
    if !pending.is_empty() && w.write_all(&pending).await.is_err() {
        return false;
    }
    let _ = w.flush().await;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.close().await;
    false
}

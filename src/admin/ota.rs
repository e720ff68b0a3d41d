//! Over-the-air updates of the node's pods, asked for on the admin port (reference §10.3):
//! `POST /openyurt.io/v1/namespaces/{ns}/pods/{pod}/imagepull` and `…/upgrade`.
//!
//! A DaemonSet with OpenYurt's OTA strategy leaves each pod running until the node says so.
//! yurt-manager marks a pod `PodNeedUpgrade=True` with `controllerrevision: <hash>`; an
//! operator on the node (or a tool there) then asks the hub to pre-pull the new image
//! (`PodImageReady=False` for that hash, which the image-pull controller turns True) and to
//! upgrade: a DaemonSet pod is deleted (its `OnDelete` strategy makes the new one), a static
//! pod of a YurtStaticSet gets the manifest of ConfigMap `yurt-static-set-<name>`. Every step
//! asks the cloud with the node's identity, so both answer 503 while it is unreachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::health::Health;
use crate::upstream::Upstream;

/// The condition yurt-manager sets on a pod that has a newer revision to go to.
const NEED_UPGRADE: &str = "PodNeedUpgrade";
/// The condition of the new revision's image on the node.
const IMAGE_READY: &str = "PodImageReady";
/// How a revision is named in those conditions' messages.
const REVISION_PREFIX: &str = "controllerrevision: ";
/// Every request to the cloud gets this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where static pods' manifests are, and where an upgrade stages the new one.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node.
    pub node: String,
    /// kubelet's static pod directory (`--pod-manifest-path`).
    pub manifests: PathBuf,
    /// Where the new manifest and the old one's backup are kept.
    pub staging: PathBuf,
}

/// What an OTA request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pre-pull the new revision's image.
    ImagePull,
    /// Move the pod to the new revision.
    Upgrade,
}

/// An OTA path's namespace, pod and action; `None` for any other path.
pub fn route(path: &str) -> Option<(&str, &str, Action)> {
    let rest = path.strip_prefix("/openyurt.io/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, pods, pod, action) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || pods != "pods" || ns.is_empty() || pod.is_empty() {
        return None;
    }
    let action = match action {
        "imagepull" => Action::ImagePull,
        "upgrade" => Action::Upgrade,
        _ => return None,
    };
    Some((ns, pod, action))
}

/// An answer: status and plain text (a success's text goes out as upstream's, JSON-typed).
pub type Answer = (u16, String);

/// Runs `action` on pod `ns/pod`.
pub async fn run(
    upstream: &Upstream,
    health: Option<&Health>,
    settings: &Settings,
    ns: &str,
    pod: &str,
    action: Action,
) -> Answer {
    // Names go into paths: only what Kubernetes allows a name to be.
    if !crate::kube::is_dns1123_subdomain(ns) || !crate::kube::is_dns1123_subdomain(pod) {
        return (400, format!("{ns}/{pod}: not a namespace and pod name"));
    }
    // Edge: the first server believed reachable; cloud (no prober): any.
    let server = match health {
        Some(h) => (0..upstream.len()).find(|&i| h.is_healthy(i)),
        None => Some(0),
    };
    let Some(server) = server else {
        log::info!("ota: {ns}/{pod}: refused, the cloud is unreachable");
        return (
            503,
            "OTA upgrade is not allowed when node is disconnected to cloud".into(),
        );
    };
    let cloud = Cloud { upstream, server };
    let object = match cloud
        .get(&format!("/api/v1/namespaces/{ns}/pods/{pod}"))
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return (500, format!("Get pod failed, pods \"{pod}\" not found")),
        Err(e) => return (500, format!("Get pod failed, {e}")),
    };
    if let Err(why) = updatable(&object, &settings.node) {
        return (
            403,
            format!("Failed to check pod {ns}/{pod} status, error: {why}"),
        );
    }
    let answer = match action {
        Action::ImagePull => image_pull(&cloud, &object, ns, pod).await,
        Action::Upgrade => upgrade(&cloud, &object, settings, ns, pod).await,
    };
    log::info!("ota: {action:?} {ns}/{pod}: {} {}", answer.0, answer.1);
    answer
}

struct Cloud<'a> {
    upstream: &'a Upstream,
    server: usize,
}

impl Cloud<'_> {
    /// GET `path`: the object, `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, String> {
        match self
            .upstream
            .fetch(self.server, "GET", path, None, TIMEOUT)
            .await
        {
            Ok((200, body)) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("the answer is not JSON: {e}")),
            Ok((404, _)) => Ok(None),
            Ok((code, body)) => Err(status_text(code, &body)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
    ) -> Result<(), String> {
        match self
            .upstream
            .fetch_typed(self.server, method, path, body, "application/json", TIMEOUT)
            .await
        {
            Ok((200..=299, _)) => Ok(()),
            Ok((code, body)) => Err(status_text(code, &body)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A failed answer's status and its `metav1.Status` message, when it has one.
fn status_text(code: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string));
    match message {
        Some(m) => format!("status {code}: {m}"),
        None => format!("status {code}"),
    }
}

fn condition<'v>(pod: &'v Value, kind: &str) -> Option<&'v Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The revision `PodNeedUpgrade` names.
fn next_revision(pod: &Value) -> &str {
    condition(pod, NEED_UPGRADE)
        .and_then(|c| c["message"].as_str())
        .map(|m| m.strip_prefix(REVISION_PREFIX).unwrap_or(m))
        .unwrap_or("")
}

/// Not being deleted, on this node, and marked `PodNeedUpgrade=True`.
fn updatable(pod: &Value, node: &str) -> Result<(), String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Err(format!("Pod {name} is deleting, can not be updated"));
    }
    let on = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if on != node {
        return Err(format!("Pod {name} is running on {on:?}, not on {node}"));
    }
    let needs = condition(pod, NEED_UPGRADE).is_some_and(|c| c["status"] == "True");
    if !needs {
        return Err(format!("Pod {name} has no {NEED_UPGRADE}=True condition"));
    }
    Ok(())
}

/// `PodImageReady=False` for the new revision: the image-pull controller pulls it.
async fn image_pull(cloud: &Cloud<'_>, pod: &Value, ns: &str, name: &str) -> Answer {
    let wanted = json!({
        "type": IMAGE_READY,
        "status": "False",
        "message": format!("{REVISION_PREFIX}{}", next_revision(pod)),
        "lastTransitionTime": crate::kube::time::rfc3339(std::time::SystemTime::now()),
    });
    // A merge patch replaces the list whole: every other condition goes back as it was.
    let mut conditions: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != IMAGE_READY)
        .collect();
    conditions.push(wanted);
    let patch = json!({"status": {"conditions": conditions}}).to_string();
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status?fieldManager=yurthub-ota");
    let body = Some((patch.as_bytes(), "application/merge-patch+json"));
    match cloud.send("PATCH", &path, body).await {
        Ok(()) => (200, format!("Image pre-pull requested for pod {ns}/{name}")),
        Err(e) => (500, format!("Patch pod status for imagepull failed, {e}")),
    }
}

async fn upgrade(
    cloud: &Cloud<'_>,
    pod: &Value,
    settings: &Settings,
    ns: &str,
    name: &str,
) -> Answer {
    // A pre-pulled image must be the new revision's, and pulled.
    if let Some(ready) = condition(pod, IMAGE_READY) {
        let message = ready["message"].as_str().unwrap_or("");
        let revision = message.strip_prefix(REVISION_PREFIX).unwrap_or(message);
        if ready["status"] != "True" || revision != next_revision(pod) {
            return (
                403,
                format!(
                    "Pre check update pod failed, Pod {ns}/{name} image is not ready, message: {message}"
                ),
            );
        }
    }
    let owner = pod["metadata"]["ownerReferences"][0]["kind"]
        .as_str()
        .unwrap_or("");
    match owner {
        "DaemonSet" => {
            // The OnDelete strategy makes the new revision's pod.
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
            match cloud.send("DELETE", &path, None).await {
                Ok(()) => (200, format!("Start updating pod {ns}/{name}")),
                Err(e) => (500, format!("Apply update failed, {e}")),
            }
        }
        "Node" => {
            let Some(static_name) = name
                .strip_suffix(settings.node.as_str())
                .and_then(|n| n.strip_suffix('-'))
                .filter(|n| !n.is_empty())
            else {
                return (
                    403,
                    format!("static pod {name} is not named <name>-{}", settings.node),
                );
            };
            let cm = format!("/api/v1/namespaces/{ns}/configmaps/yurt-static-set-{static_name}");
            let manifest = match cloud.get(&cm).await {
                Ok(Some(cm)) => cm,
                Ok(None) => return (403, "Configmap for static pod does not exist".into()),
                Err(e) => return (500, format!("Static pod pre-check failed, {e}")),
            };
            let entry = manifest["data"]
                .as_object()
                .and_then(|d| d.iter().next())
                .and_then(|(file, text)| Some((file.clone(), text.as_str()?.to_string())));
            let Some((file, text)) = entry.filter(|(_, t)| !t.is_empty()) else {
                return (
                    500,
                    format!("Apply update failed, empty manifest in configmap yurt-static-set-{static_name}"),
                );
            };
            let settings = settings.clone();
            match smol::unblock(move || stage_manifest(&settings, &file, &text)).await {
                Ok(()) => (200, format!("Start updating pod {ns}/{name}")),
                Err(e) => (500, format!("Apply update failed, {e}")),
            }
        }
        other => (400, format!("Not support ota upgrade pod type {other}")),
    }
}

/// Stages the new manifest and the old one's backup (`<name>.upgrade`, `<name>.bak`, as
/// upstream names them), then puts it in kubelet's static pod directory as `<name>.yaml`
/// (kubelet restarts the pod when the file changes). `name` is the ConfigMap's data key, which
/// the YurtStaticSet controller sets to the manifest's name.
fn stage_manifest(settings: &Settings, name: &str, text: &str) -> Result<(), String> {
    // The key names a file: one name, nothing that climbs out.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("{name:?}: not a manifest name"));
    }
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    std::fs::create_dir_all(&settings.staging).map_err(|e| io("making", &settings.staging, e))?;
    // Each file is replaced by a rename, never written through: a link planted in the staging
    // directory is replaced, not followed.
    let put = |path: &Path, bytes: &[u8]| {
        crate::atomic_file::replace(path, &[bytes], 0o600).map_err(|e| e.to_string())
    };
    put(
        &settings.staging.join(format!("{name}.upgrade")),
        text.as_bytes(),
    )?;
    let current = settings.manifests.join(format!("{name}.yaml"));
    match std::fs::read(&current) {
        Ok(old) => put(&settings.staging.join(format!("{name}.bak")), &old)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", &current, e)),
    }
    put(&current, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_ota_paths_route() {
        assert_eq!(
            route("/openyurt.io/v1/namespaces/default/pods/web-1/upgrade"),
            Some(("default", "web-1", Action::Upgrade))
        );
        assert_eq!(
            route("/openyurt.io/v1/namespaces/kube-system/pods/p/imagepull"),
            Some(("kube-system", "p", Action::ImagePull))
        );
        for other in [
            "/openyurt.io/v1/namespaces/default/pods/web-1",
            "/openyurt.io/v1/namespaces/default/pods/web-1/upgrade/x",
            "/openyurt.io/v1/namespaces//pods/p/upgrade",
            "/openyurt.io/v1/namespaces/d/configmaps/p/upgrade",
            "/openyurt.io/v1/namespaces/d/pods/p/reboot",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }

    #[test]
    fn a_pod_is_updatable_on_this_node_when_marked_and_not_deleting() {
        let pod = |node: &str, need: &str, deleting: bool| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": {"nodeName": node},
                "status": {"conditions": [{"type": NEED_UPGRADE, "status": need,
                                           "message": "controllerrevision: abc"}]}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            p
        };
        assert_eq!(updatable(&pod("n", "True", false), "n"), Ok(()));
        assert_eq!(next_revision(&pod("n", "True", false)), "abc");
        assert!(updatable(&pod("other", "True", false), "n").is_err());
        assert!(updatable(&pod("n", "False", false), "n").is_err());
        assert!(updatable(&pod("n", "True", true), "n").is_err());
    }
}

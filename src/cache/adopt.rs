//! A cache that upstream YurtHub wrote, made this hub's at the first start on it.
//!
//! A node moved from upstream YurtHub keeps `/etc/kubernetes/cache` as upstream left it
//! (reference §3.3): objects in the current `<component>/<resource>.<version>.<group>/…`
//! layout or in the older `<component>/<resource>/…` one, `tmp_` backups of writes a crash
//! interrupted, directories of mode 0755, and no list views. If the node was swapped while
//! offline, that tree is all its pods have. [`adopt`] runs before the store opens and, once:
//!
//! 1. renames every `tmp_<name>` backup back over `<name>`, as upstream's own recovery does
//!    (the backup is the state before the interrupted write, the other file may be half of one);
//! 2. moves the older layout's objects to `<resource>.<version>.<group>`, the version and
//!    group read from each object's own `apiVersion` (an empty directory, a list that was
//!    answered empty, from the table of the types nodes list);
//! 3. keeps an object only if its file is one JSON object of a kind the cache stores whose
//!    name and namespace are those its path says; anything else goes to `_quarantine/`;
//! 4. gives each component's type a view marked [`ViewSnapshot::adopted`] holding every
//!    object kept, so that offline its lists are answered as upstream would have answered
//!    them (upstream kept no record of its lists' selectors) until the cloud lists that type
//!    for that component again;
//! 5. makes the directories 0700 and the files 0600 (Secrets are cached here).
//!
//! A marker, `_internal/layout`, then says the tree is this hub's. A tree without it but
//! with views is an older version of this hub's and only gets the marker; so does an empty
//! one. A crash during adoption leaves no marker and no views (they are built aside and
//! renamed into place), so the next start adopts again; every step is idempotent.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::object::{storable_kind, Object};
use super::store::{
    files_below, is_temp, mkdirs, move_to_quarantine, read_regular, valid_part, StoreError,
    INTERNAL_DIR, QUARANTINE_DIR,
};
use super::views::{self, ViewId, ViewSnapshot};
use super::{ViewKey, METADATA_TREE};
use crate::atomic_file;

/// The marker file under [`INTERNAL_DIR`].
const LAYOUT_FILE: &str = "layout";
/// Its content: what the tree is, for an operator who opens it (a JSON object, as every
/// file of the cache is).
const LAYOUT: &[u8] = br#"{"layout":1,"objects":"<component>/<resource>.<version>.<group>/[<namespace>/]<name>","views":"_internal/views"}
"#;
/// Where the views are built before they are renamed into place.
const VIEWS_STAGE: &str = "views.adopting";
/// Upstream's prefix for the backup of a file or directory being rewritten.
const BACKUP_PREFIX: &str = "tmp_";
/// How many quarantined files are named in the log; the rest are counted.
const NAMED: usize = 5;

/// The version and group of the types nodes list, for an older-layout directory that holds
/// no object to read them from (a list the cloud answered empty).
const OLDER_LAYOUT_TYPES: &[(&str, &str)] = &[
    ("configmaps", "v1.core"),
    ("endpoints", "v1.core"),
    ("events", "v1.core"),
    ("namespaces", "v1.core"),
    ("nodes", "v1.core"),
    ("persistentvolumeclaims", "v1.core"),
    ("persistentvolumes", "v1.core"),
    ("pods", "v1.core"),
    ("secrets", "v1.core"),
    ("serviceaccounts", "v1.core"),
    ("services", "v1.core"),
    ("endpointslices", "v1.discovery.k8s.io"),
    ("leases", "v1.coordination.k8s.io"),
    ("csidrivers", "v1.storage.k8s.io"),
    ("csinodes", "v1.storage.k8s.io"),
    ("storageclasses", "v1.storage.k8s.io"),
    ("volumeattachments", "v1.storage.k8s.io"),
    ("runtimeclasses", "v1.node.k8s.io"),
    ("ingresses", "v1.networking.k8s.io"),
    ("networkpolicies", "v1.networking.k8s.io"),
];

/// What one adoption did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// Objects kept and served.
    pub objects: usize,
    /// Views built: one per component and type.
    pub views: usize,
    /// Objects moved from the older layout.
    pub moved: usize,
    /// Backups of interrupted writes put back.
    pub restored: usize,
    /// Files moved to `_quarantine/`.
    pub quarantined: usize,
}

/// Makes the cache at `root` this hub's if upstream YurtHub wrote it (see the module docs);
/// `None` when it already was this hub's, or held nothing.
pub fn adopt(root: &Path) -> Result<Option<Adoption>, StoreError> {
    let internal = root.join(INTERNAL_DIR);
    let marker = internal.join(LAYOUT_FILE);
    if marker.is_file() {
        return Ok(None);
    }
    let ours = root.join(views::dir_rel(Path::new(""))).is_dir();
    let adoption = if ours || component_dirs(root).is_empty() {
        None
    } else {
        let mut a = Adopter {
            root,
            done: Adoption::default(),
        };
        a.run()?;
        Some(a.done)
    };
    mkdirs(&internal)?;
    atomic_file::replace(&marker, &[LAYOUT], 0o600)?;
    Ok(adoption)
}

/// The directories of `dir` that can be components, in name order.
fn component_dirs(dir: &Path) -> Vec<String> {
    subdirs(dir)
        .into_iter()
        .filter(|n| valid_part(n) && n != INTERNAL_DIR && n != QUARANTINE_DIR)
        .collect()
}

/// The names of the directories in `dir` (not links to one), in name order.
fn subdirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

struct Adopter<'a> {
    root: &'a Path,
    done: Adoption,
}

impl Adopter<'_> {
    fn run(&mut self) -> Result<(), StoreError> {
        self.restore_backups(self.root)?;
        let stage = self.root.join(INTERNAL_DIR).join(VIEWS_STAGE);
        if stage.exists() {
            fs::remove_dir_all(&stage).map_err(io_at(&stage))?;
        }
        let mut components = 0;
        for component in component_dirs(self.root) {
            let dir = self.root.join(&component);
            let before = self.done.views;
            self.adopt_component(&component, &dir, &stage)?;
            if dir.join(METADATA_TREE).is_dir() {
                let tree = format!("{component}/{METADATA_TREE}");
                self.adopt_component(&tree, &self.root.join(&tree), &stage)?;
            }
            components += usize::from(self.done.views > before);
            restrict(&dir);
        }
        if stage.is_dir() {
            let target = self.root.join(views::dir_rel(Path::new("")));
            fs::rename(&stage, &target).map_err(io_at(&stage))?;
            atomic_file::sync_dir(&self.root.join(INTERNAL_DIR))?;
        }
        let a = &self.done;
        log::info!(
            "cache: adopted upstream YurtHub's cache in {}: {} objects of {} types for {components} components ({} moved from the older layout, {} interrupted writes undone, {} files quarantined in {QUARANTINE_DIR}/); offline, their lists are answered as upstream would until the cloud lists them again",
            self.root.display(),
            a.objects,
            a.views,
            a.moved,
            a.restored,
            a.quarantined
        );
        Ok(())
    }

    /// Puts every `tmp_<name>` below `dir` back over `<name>`.
    fn restore_backups(&mut self, dir: &Path) -> Result<(), StoreError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        let mut found: Vec<(String, fs::FileType)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in found {
            if dir == self.root && name == QUARANTINE_DIR {
                continue;
            }
            let mut path = dir.join(&name);
            if let Some(original) = name.strip_prefix(BACKUP_PREFIX).filter(|o| valid_part(o)) {
                let target = dir.join(original);
                if ft.is_dir() {
                    // The rewritten directory may be partial: the backup is the whole list.
                    match fs::symlink_metadata(&target) {
                        Ok(m) if m.is_dir() => {
                            fs::remove_dir_all(&target).map_err(io_at(&target))?
                        }
                        Ok(_) => fs::remove_file(&target).map_err(io_at(&target))?,
                        Err(_) => {}
                    }
                } else if !ft.is_file() {
                    continue;
                }
                fs::rename(&path, &target).map_err(io_at(&path))?;
                self.done.restored += 1;
                path = target;
            }
            if ft.is_dir() {
                self.restore_backups(&path)?;
            }
        }
        Ok(())
    }

    /// Adopts the types of one component (or of its metadata tree).
    fn adopt_component(
        &mut self,
        component: &str,
        dir: &Path,
        stage: &Path,
    ) -> Result<(), StoreError> {
        for resource in subdirs(dir) {
            if !resource.contains('.') {
                self.move_older_layout(dir, &resource)?;
            }
        }
        let metadata_only = component.ends_with(METADATA_TREE);
        for resource in subdirs(dir) {
            if resource == METADATA_TREE || resource.split('.').count() < 3 {
                continue;
            }
            let mut view = ViewSnapshot {
                adopted: true,
                ..ViewSnapshot::default()
            };
            let rdir = dir.join(&resource);
            self.collect(&rdir, "", metadata_only, &mut view)?;
            let id = ViewId::new(component, &resource, &ViewKey::default());
            let rel = Path::new(component)
                .join(&resource)
                .join(format!("{}.json", id.id));
            let path = stage.join(rel);
            mkdirs(path.parent().unwrap_or(stage))?;
            let bytes = serde_json::to_vec(&view).unwrap_or_default();
            atomic_file::replace(&path, &[&bytes], 0o600)?;
            self.done.views += 1;
        }
        Ok(())
    }

    /// Moves `<dir>/<resource>/…` (the older layout) to `<dir>/<resource>.<version>.<group>/…`.
    fn move_older_layout(&mut self, dir: &Path, resource: &str) -> Result<(), StoreError> {
        let from = dir.join(resource);
        let mut files = Vec::new();
        files_below(&from, &mut files);
        if files.is_empty() {
            match OLDER_LAYOUT_TYPES.iter().find(|(r, _)| *r == resource) {
                Some((_, vg)) => mkdirs(&dir.join(format!("{resource}.{vg}")))?,
                None => log::warn!(
                    "cache: {} is empty and of a type this hub cannot name a version for; removed",
                    from.display()
                ),
            }
        }
        for file in files {
            let Ok(rel) = file.strip_prefix(&from).map(Path::to_path_buf) else {
                continue;
            };
            let version_group =
                read_regular(self.root, file.strip_prefix(self.root).unwrap_or(&file))
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<ApiVersion>(&b).ok())
                    .and_then(|o| {
                        let (group, version) = o
                            .api_version
                            .split_once('/')
                            .unwrap_or(("core", &o.api_version));
                        (valid_part(group) && valid_part(version))
                            .then(|| format!("{version}.{group}"))
                    });
            let Some(vg) = version_group else {
                self.quarantine(&file, "it has no apiVersion")?;
                continue;
            };
            let target = dir.join(format!("{resource}.{vg}")).join(&rel);
            if fs::symlink_metadata(&target).is_ok() {
                self.quarantine(&file, "the current layout holds the same object")?;
                continue;
            }
            mkdirs(target.parent().unwrap_or(dir))?;
            fs::rename(&file, &target).map_err(io_at(&file))?;
            self.done.moved += 1;
        }
        remove_empty_dirs(&from);
        Ok(())
    }

    /// Verifies the objects of one type directory (`namespace` empty at its top, a namespace
    /// one level down) and makes the kept ones members of `view`.
    fn collect(
        &mut self,
        dir: &Path,
        namespace: &str,
        metadata_only: bool,
        view: &mut ViewSnapshot,
    ) -> Result<(), StoreError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        let mut found: Vec<(PathBuf, String, fs::FileType)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                Some((e.path(), name, e.file_type().ok()?))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, name, ft) in found {
            if is_temp(&path) {
                continue;
            }
            if ft.is_dir() && namespace.is_empty() && valid_part(&name) {
                self.collect(&path, &name, metadata_only, view)?;
            } else if ft.is_dir() {
                let mut files = Vec::new();
                files_below(&path, &mut files);
                for f in files {
                    self.quarantine(&f, "it is deeper than <namespace>/<name>")?;
                }
                remove_empty_dirs(&path);
            } else if !ft.is_file() {
                self.quarantine(&path, "it is not a regular file")?;
            } else {
                match read_object(self.root, &path, metadata_only) {
                    Some(o) if o.name == name && o.namespace == namespace => {
                        view.rv = view.rv.max(o.rv);
                        view.members.insert((o.namespace, o.name));
                        self.done.objects += 1;
                    }
                    Some(o) => {
                        let why = format!(
                            "it holds {}/{}, not the object its path names",
                            o.namespace, o.name
                        );
                        self.quarantine(&path, &why)?;
                    }
                    None => {
                        self.quarantine(&path, "it is not one cached object")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn quarantine(&mut self, path: &Path, why: &str) -> Result<(), StoreError> {
        let to = move_to_quarantine(self.root, path)?;
        self.done.quarantined += 1;
        if self.done.quarantined <= NAMED {
            log::warn!(
                "cache: adopting upstream's cache: {} moved to {}: {why}",
                path.display(),
                to.display()
            );
        }
        Ok(())
    }
}

/// Only the field an older-layout object's new place depends on.
#[derive(serde::Deserialize)]
struct ApiVersion {
    #[serde(rename = "apiVersion")]
    api_version: String,
}

/// The object in `path` (below `root`), if the file is one the cache can serve.
fn read_object(root: &Path, path: &Path, metadata_only: bool) -> Option<Object> {
    let bytes = read_regular(root, path.strip_prefix(root).ok()?).ok()??;
    let o = Object::parse(std::str::from_utf8(&bytes).ok()?, None)?;
    storable_kind(&o.kind, metadata_only).then_some(o)
}

/// Removes `dir` and the directories below it that hold nothing (never a file).
fn remove_empty_dirs(dir: &Path) {
    for sub in subdirs(dir) {
        remove_empty_dirs(&dir.join(sub));
    }
    let _ = fs::remove_dir(dir);
}

/// Directories 0700 and files 0600 below `dir` (upstream made its directories 0755, which
/// lets every local user list the names of the node's cached Secrets).
fn restrict(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for sub in subdirs(dir) {
        restrict(&dir.join(sub));
    }
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            files.push(e.path());
        }
    }
    for f in files {
        if fs::metadata(&f).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            let _ = fs::set_permissions(&f, fs::Permissions::from_mode(0o600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("yurthub-adopt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn object(kind: &str, api_version: &str, ns: &str, name: &str, rv: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": kind, "apiVersion": api_version,
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string()}}))
        .unwrap()
    }

    fn view(root: &Path, component: &str, resource: &str) -> Option<ViewSnapshot> {
        let id = ViewId::new(component, resource, &ViewKey::default());
        let bytes = fs::read(root.join(id.rel_path())).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn an_empty_tree_or_one_of_this_hub_only_gets_the_marker() {
        let fresh = temp("fresh");
        assert_eq!(adopt(&fresh).unwrap(), None);
        assert!(fresh.join("_internal/layout").is_file());
        let ours = temp("ours");
        put(
            &ours,
            "kubelet/pods.v1.core/default/p",
            &object("Pod", "v1", "default", "p", 1),
        );
        put(
            &ours,
            "_internal/views/kubelet/pods.v1.core/0123.json",
            b"{}",
        );
        put(&ours, "kubelet/pods.v1.core/default/tmp_p", b"{}");
        assert_eq!(adopt(&ours).unwrap(), None);
        assert!(ours.join("kubelet/pods.v1.core/default/tmp_p").is_file());
        assert_eq!(view(&ours, "kubelet", "pods.v1.core"), None);
        // Once marked, a tree is never adopted again, whatever it holds.
        fs::remove_dir_all(ours.join("_internal/views")).unwrap();
        assert_eq!(adopt(&ours).unwrap(), None);
        for d in [fresh, ours] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_list_whose_rewrite_was_cut_short_comes_back_whole() {
        let root = temp("dir-backup");
        let slices = "kube-proxy/endpointslices.v1.discovery.k8s.io";
        for name in ["a", "b"] {
            let o = object("EndpointSlice", "discovery.k8s.io/v1", "default", name, 3);
            put(&root, &format!("{slices}/tmp_default/{name}"), &o);
        }
        // The replacement had written one file of the new list when the power went.
        let half = object("EndpointSlice", "discovery.k8s.io/v1", "default", "c", 4);
        put(&root, &format!("{slices}/default/c"), &half);
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!((a.restored, a.objects, a.views), (1, 2, 1));
        let v = view(&root, "kube-proxy", "endpointslices.v1.discovery.k8s.io").unwrap();
        let names: Vec<&str> = v.members.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(v.adopted && v.rv == 3);
        assert!(!root.join(slices).join("default/c").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn metadata_trees_and_odd_files_are_adopted_or_quarantined_and_a_crash_adopts_again() {
        let root = temp("tree");
        let tree = format!("kubelet/{METADATA_TREE}/pods.v1.core");
        put(
            &root,
            &format!("{tree}/default/p"),
            &object("PartialObjectMetadata", "meta.k8s.io/v1", "default", "p", 7),
        );
        // A full object in the metadata tree, a list, and a file below a name.
        put(
            &root,
            &format!("{tree}/default/q"),
            &object("Pod", "v1", "default", "q", 7),
        );
        put(
            &root,
            "kubelet/pods.v1.core/default/l",
            br#"{"kind":"PodList","apiVersion":"v1","metadata":{"name":"l"},"items":[]}"#,
        );
        put(
            &root,
            "kubelet/pods.v1.core/default/x/y",
            &object("Pod", "v1", "default", "y", 1),
        );
        // The older layout beside the current one, holding the same object.
        put(
            &root,
            "kubelet/pods.v1.core/default/p",
            &object("Pod", "v1", "default", "p", 8),
        );
        put(
            &root,
            "kubelet/pods/default/p",
            &object("Pod", "v1", "default", "p", 6),
        );
        // A crash left views staged but not in place, and no marker.
        put(
            &root,
            "_internal/views.adopting/kubelet/x.v1.core/1.json",
            b"{}",
        );
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!((a.objects, a.views, a.quarantined, a.moved), (2, 2, 4, 0));
        assert!(!root.join("_internal/views.adopting").exists());
        assert!(!root.join("kubelet/pods").exists());
        let meta = view(&root, &format!("kubelet/{METADATA_TREE}"), "pods.v1.core").unwrap();
        assert_eq!(meta.members.len(), 1);
        let pods = view(&root, "kubelet", "pods.v1.core").unwrap();
        assert_eq!(pods.rv, 8);
        let kept = fs::read(root.join("kubelet/pods.v1.core/default/p")).unwrap();
        assert!(String::from_utf8_lossy(&kept).contains("\"8\""));
        assert_eq!(fs::read_dir(root.join(QUARANTINE_DIR)).unwrap().count(), 4);
        fs::remove_dir_all(root).unwrap();
    }
}

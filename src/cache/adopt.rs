//! A cache that upstream YurtHub wrote, made this hub's at the first start on it.
//!
//! A node moved from upstream YurtHub keeps `/etc/kubernetes/cache` as upstream left it
//! (reference §3.3): objects in the current `<component>/<resource>.<version>.<group>/…`
//! layout or in the older `<component>/<resource>/…` one, `tmp_` copies of writes a crash
//! interrupted, directories of mode 0755, and no list views. If the node was swapped while
//! offline, that tree is all its pods have. [`adopt`] runs before the store opens and, once:
//!
//! 1. settles every `tmp_<name>` left by an interrupted write: releases differ on whether it
//!    holds the old or the new object, so of it and `<name>` the one that holds the object
//!    its name says is kept, the newer resourceVersion when both do, and the other is
//!    quarantined; a `tmp_` directory (a list being replaced) is merged the same way, file
//!    by file, so no object is lost;
//! 2. moves the older layout's objects to `<resource>.<version>.<group>`, the version and
//!    group read from each object's own `apiVersion` (for an empty directory, a list that was
//!    answered empty, and in a PartialObjectMetadata tree, from the table of the types nodes
//!    list); where both layouts hold an object, the newer copy is kept;
//! 3. keeps an object only if its file is one JSON object of a kind the cache stores whose
//!    name and namespace are those its path says; anything else goes to `_quarantine/`;
//! 4. gives each component's type a view marked [`ViewSnapshot::adopted`] holding every
//!    object kept and naming the namespaces upstream had a directory for, so that offline its
//!    lists are answered as upstream would have answered them (upstream kept no record of its
//!    lists' selectors) until the cloud lists that type for that component again;
//! 5. makes the directories 0700 and the files 0600 (Secrets are cached here).
//!
//! The tree is upstream's if it has upstream's CRD kind map (`_internal/restmapper`, which
//! every release with the current layout writes at start) or a resource directory of the
//! older layout; this hub writes neither. A marker, `_internal/layout`, then says the tree is
//! this hub's. Anything the steps cannot handle (an odd entry, a failed rename) is logged and
//! left for the store's own checks, never a reason not to start. The views are built aside
//! and renamed into place after the moves are synced, so a crash before that adopts again at
//! the next start; every step is idempotent.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
/// Upstream's CRD kind map, under [`INTERNAL_DIR`].
const RESTMAPPER_DIR: &str = "restmapper";
/// Upstream's prefix for the other copy of a file or directory being rewritten.
const BACKUP_PREFIX: &str = "tmp_";
/// The start of every PartialObjectMetadata tree's name (this hub serves the v1 one).
const METADATA_PREFIX: &str = "partialobjectmetadatas.";
/// How many problems are named in the log; the rest are counted.
const NAMED: usize = 5;

/// The version and group of the types nodes list, for an older-layout directory that holds
/// no object to read them from (a list the cloud answered empty) and for PartialObjectMetadata,
/// whose objects name `meta.k8s.io`, not their type.
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
    /// Copies of interrupted writes settled.
    pub restored: usize,
    /// Files moved to `_quarantine/`.
    pub quarantined: usize,
}

/// Makes the cache at `root` this hub's if upstream YurtHub wrote it (see the module docs);
/// `None` when it already was this hub's, or held nothing of upstream's.
pub fn adopt(root: &Path) -> Result<Option<Adoption>, StoreError> {
    make_room(root);
    let internal = root.join(INTERNAL_DIR);
    let marker = internal.join(LAYOUT_FILE);
    if marker.is_file() {
        return Ok(None);
    }
    let ours = root.join(views::dir_rel(Path::new(""))).is_dir();
    let adoption = if ours || !written_by_upstream(root) {
        None
    } else {
        let mut a = Adopter {
            root,
            done: Adoption::default(),
            problems: 0,
        };
        a.run()?;
        Some(a.done)
    };
    mkdirs(&internal)?;
    atomic_file::replace(&marker, &[LAYOUT], 0o600)?;
    Ok(adoption)
}

/// Whether upstream YurtHub wrote the tree at `root` (see the module docs).
fn written_by_upstream(root: &Path) -> bool {
    is_real_dir(&root.join(INTERNAL_DIR).join(RESTMAPPER_DIR))
        || component_dirs(root)
            .iter()
            .any(|c| subdirs(&root.join(c)).iter().any(|r| !r.contains('.')))
}

/// The hub's own directories must be directories: a link there would send quarantined files
/// or views wherever it points. A link is removed (its target untouched); a file is moved
/// aside beside it.
fn make_room(root: &Path) {
    for rel in [
        QUARANTINE_DIR,
        INTERNAL_DIR,
        "_internal/views",
        "_internal/views.adopting",
    ] {
        let path = root.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let done = if meta.file_type().is_symlink() {
            fs::remove_file(&path).map(|()| "removed".to_string())
        } else {
            let aside = unused(root, &format!("{}.moved-aside", rel.replace('/', "_")));
            fs::rename(&path, &aside).map(|()| format!("moved to {}", aside.display()))
        };
        match done {
            Ok(what) => log::warn!(
                "cache: {} is not a directory, where the hub keeps one; {what}",
                path.display()
            ),
            Err(e) => log::warn!("cache: {} is not a directory: {e}", path.display()),
        }
    }
}

/// `dir/name`, or `dir/name.<n>` for the first `n` no entry has.
fn unused(dir: &Path, name: &str) -> PathBuf {
    let mut path = dir.join(name);
    let mut n = 1;
    while fs::symlink_metadata(&path).is_ok() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    path
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The directories of `dir` that can be components, in name order.
fn component_dirs(dir: &Path) -> Vec<String> {
    subdirs(dir)
        .into_iter()
        .filter(|n| valid_part(n) && n != INTERNAL_DIR && n != QUARANTINE_DIR)
        .collect()
}

/// The names of the directories in `dir` (not links to one), in name order; names that are
/// not UTF-8 are no Kubernetes names and are left alone.
fn subdirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// The object in `path` (below `root`), if the file is one the cache could serve.
fn read_object(root: &Path, path: &Path) -> Option<Object> {
    let bytes = read_regular(root, path.strip_prefix(root).ok()?).ok()??;
    let o = Object::parse(std::str::from_utf8(&bytes).ok()?, None)?;
    (storable_kind(&o.kind, false) || storable_kind(&o.kind, true)).then_some(o)
}

struct Adopter<'a> {
    root: &'a Path,
    done: Adoption,
    /// Steps that failed (logged, skipped).
    problems: usize,
}

impl Adopter<'_> {
    fn run(&mut self) -> Result<(), StoreError> {
        self.restore_backups(self.root);
        let stage = self.root.join(INTERNAL_DIR).join(VIEWS_STAGE);
        if stage.exists() {
            fs::remove_dir_all(&stage).map_err(io_at(&stage))?;
        }
        let mut components = 0;
        for component in component_dirs(self.root) {
            let dir = self.root.join(&component);
            let before = self.done.views;
            self.adopt_component(&component, &dir, &stage, false)?;
            let tree = dir.join(METADATA_TREE);
            if is_real_dir(&tree) {
                let name = format!("{component}/{METADATA_TREE}");
                self.adopt_component(&name, &tree, &stage, true)?;
            }
            components += usize::from(self.done.views > before);
            restrict(&dir);
        }
        let _ = fs::set_permissions(self.root, fs::Permissions::from_mode(0o700));
        // Every move and rename reaches the disk before the views say what they did.
        if let Ok(dir) = fs::File::open(self.root) {
            let _ = rustix::fs::syncfs(&dir);
        }
        if stage.is_dir() {
            let target = self.root.join(views::dir_rel(Path::new("")));
            fs::rename(&stage, &target).map_err(io_at(&stage))?;
            atomic_file::sync_dir(&self.root.join(INTERNAL_DIR))?;
        }
        let a = &self.done;
        log::info!(
            "cache: adopted upstream YurtHub's cache in {}: {} objects of {} types for {components} components ({} moved from the older layout, {} interrupted writes settled, {} files quarantined in {QUARANTINE_DIR}/, {} steps failed); offline, their lists are answered as upstream would until the cloud lists them again",
            self.root.display(),
            a.objects,
            a.views,
            a.moved,
            a.restored,
            a.quarantined,
            self.problems
        );
        Ok(())
    }

    /// Logs a step that failed; adoption goes on without it.
    fn failed(&mut self, what: &str, path: &Path, e: &dyn std::fmt::Display) {
        self.problems += 1;
        if self.problems <= NAMED {
            log::warn!(
                "cache: adopting upstream's cache: {what} {}: {e}",
                path.display()
            );
        }
    }

    fn rename(&mut self, from: &Path, to: &Path) -> bool {
        let made = match to.parent() {
            Some(parent) => mkdirs(parent).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        match made.and_then(|()| fs::rename(from, to).map_err(|e| e.to_string())) {
            Ok(()) => true,
            Err(e) => {
                self.failed("moving", from, &e);
                false
            }
        }
    }

    fn quarantine(&mut self, path: &Path, why: &str) {
        match move_to_quarantine(self.root, path) {
            Ok(to) => {
                self.done.quarantined += 1;
                if self.done.quarantined <= NAMED {
                    log::warn!(
                        "cache: adopting upstream's cache: {} moved to {}: {why}",
                        path.display(),
                        to.display()
                    );
                }
            }
            Err(e) => self.failed("quarantining", path, &e),
        }
    }

    /// Two files for one object: `at`, where it belongs, and `other`. Keeps at `at` the one
    /// that holds the object its name says (the newer resourceVersion when both do) and
    /// quarantines the other.
    fn settle(&mut self, at: &Path, other: &Path) {
        let name = at.file_name().map(|n| n.to_string_lossy().into_owned());
        let rv = |p: &Path| {
            read_object(self.root, p)
                .filter(|o| Some(&o.name) == name.as_ref())
                .map(|o| o.rv)
        };
        match (rv(at), rv(other)) {
            (Some(a), Some(b)) if b > a => {
                self.quarantine(at, "an older copy of the object");
                self.rename(other, at);
            }
            (None, Some(_)) => {
                self.quarantine(at, "not the whole object (a write a crash cut short)");
                self.rename(other, at);
            }
            (Some(_), _) => self.quarantine(other, "another copy of the object, not newer"),
            (None, None) => {
                self.quarantine(at, "not the whole object");
                self.quarantine(other, "not the whole object");
            }
        }
    }

    /// Settles every `tmp_<name>` below `dir` with `<name>` (see the module docs).
    fn restore_backups(&mut self, dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut found: Vec<(String, fs::FileType)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in found {
            if dir == self.root && (name == QUARANTINE_DIR || name == INTERNAL_DIR) {
                continue;
            }
            let path = dir.join(&name);
            let Some(original) = name.strip_prefix(BACKUP_PREFIX).filter(|o| valid_part(o)) else {
                if ft.is_dir() {
                    self.restore_backups(&path);
                }
                continue;
            };
            let target = dir.join(original);
            let there = fs::symlink_metadata(&target).ok();
            match (ft.is_dir(), there) {
                (_, None) if ft.is_dir() || ft.is_file() => {
                    self.rename(&path, &target);
                }
                (false, Some(m)) if ft.is_file() && m.is_file() => self.settle(&target, &path),
                (true, Some(m)) if m.is_dir() => self.merge(&path, &target),
                _ => {
                    self.failed("settling", &path, &"not of the kind of what it copies");
                    continue;
                }
            }
            self.done.restored += 1;
            if is_real_dir(&target) {
                self.restore_backups(&target);
            }
        }
    }

    /// Merges the directory `from` into `into`, file by file ([`Self::settle`]).
    fn merge(&mut self, from: &Path, into: &Path) {
        let mut files = Vec::new();
        files_below(from, &mut files);
        for file in files {
            let Ok(rel) = file.strip_prefix(from) else {
                continue;
            };
            let target = into.join(rel);
            match fs::symlink_metadata(&target) {
                Err(_) => {
                    self.rename(&file, &target);
                }
                Ok(m) if m.is_file() => self.settle(&target, &file),
                Ok(_) => self.quarantine(&file, "where it belongs is no file"),
            }
        }
        // Empty namespace directories still say a list was made.
        for sub in subdirs(from) {
            let _ = mkdirs(&into.join(sub));
        }
        remove_empty_dirs(from);
    }

    /// Adopts the types of one component (or of its PartialObjectMetadata tree).
    fn adopt_component(
        &mut self,
        component: &str,
        dir: &Path,
        stage: &Path,
        metadata_tree: bool,
    ) -> Result<(), StoreError> {
        for resource in subdirs(dir) {
            if !resource.contains('.') {
                self.move_older_layout(dir, &resource, metadata_tree);
            }
        }
        for resource in subdirs(dir) {
            if resource.starts_with(METADATA_PREFIX) || resource.split('.').count() < 3 {
                continue;
            }
            let mut view = ViewSnapshot {
                adopted: true,
                ..ViewSnapshot::default()
            };
            let rdir = dir.join(&resource);
            self.collect(&rdir, "", metadata_tree, &mut view);
            let id = ViewId::new(component, &resource, &ViewKey::default());
            let path = stage
                .join(component)
                .join(&resource)
                .join(format!("{}.json", id.id));
            mkdirs(path.parent().unwrap_or(stage))?;
            let bytes = serde_json::to_vec(&view).unwrap_or_default();
            atomic_file::replace(&path, &[&bytes], 0o600)?;
            self.done.views += 1;
        }
        Ok(())
    }

    /// The `<version>.<group>` an older-layout object names in its `apiVersion`.
    fn version_group_of(&self, file: &Path) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct ApiVersion {
            #[serde(rename = "apiVersion")]
            api_version: String,
        }
        let bytes = read_regular(self.root, file.strip_prefix(self.root).ok()?).ok()??;
        let o: ApiVersion = serde_json::from_slice(&bytes).ok()?;
        let (group, version) = o
            .api_version
            .split_once('/')
            .unwrap_or(("core", &o.api_version));
        (valid_part(group) && valid_part(version)).then(|| format!("{version}.{group}"))
    }

    /// Moves `<dir>/<resource>/…` (the older layout) to `<dir>/<resource>.<version>.<group>/…`.
    fn move_older_layout(&mut self, dir: &Path, resource: &str, metadata_tree: bool) {
        let from = dir.join(resource);
        let known = OLDER_LAYOUT_TYPES
            .iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, vg)| vg.to_string());
        let mut files = Vec::new();
        files_below(&from, &mut files);
        let dir_vg = known
            .clone()
            .or_else(|| files.iter().find_map(|f| self.version_group_of(f)));
        match &dir_vg {
            // Its directories, empty ones too: a list made in a namespace that held nothing.
            Some(vg) => {
                let to = dir.join(format!("{resource}.{vg}"));
                let _ = mkdirs(&to);
                for ns in subdirs(&from).into_iter().filter(|n| valid_part(n)) {
                    let _ = mkdirs(&to.join(ns));
                }
            }
            None => log::warn!(
                "cache: {} holds no object and is of a type this hub cannot name a version for; removed",
                from.display()
            ),
        }
        for file in files {
            let Ok(rel) = file.strip_prefix(&from).map(Path::to_path_buf) else {
                continue;
            };
            // PartialObjectMetadata names meta.k8s.io, not the type it describes.
            let vg = if metadata_tree {
                known.clone()
            } else {
                self.version_group_of(&file)
            };
            let Some(vg) = vg else {
                self.quarantine(&file, "no apiVersion to place it by");
                continue;
            };
            let target = dir.join(format!("{resource}.{vg}")).join(&rel);
            match fs::symlink_metadata(&target) {
                Err(_) => {
                    if self.rename(&file, &target) {
                        self.done.moved += 1;
                    }
                }
                // Both layouts hold it: the newer copy stays.
                Ok(m) if m.is_file() => self.settle(&target, &file),
                Ok(_) => self.quarantine(&file, "where it belongs is no file"),
            }
        }
        remove_empty_dirs(&from);
    }

    /// Verifies the objects of one type directory (`namespace` empty at its top, a namespace
    /// one level down) and makes the kept ones members of `view`.
    fn collect(
        &mut self,
        dir: &Path,
        namespace: &str,
        metadata_only: bool,
        view: &mut ViewSnapshot,
    ) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
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
                view.adopted_namespaces.insert(name.clone());
                self.collect(&path, &name, metadata_only, view);
            } else if ft.is_dir() {
                let mut files = Vec::new();
                files_below(&path, &mut files);
                for f in files {
                    self.quarantine(&f, "it is deeper than <namespace>/<name>");
                }
                remove_empty_dirs(&path);
            } else if !ft.is_file() {
                self.quarantine(&path, "it is not a regular file");
            } else {
                match read_object(self.root, &path) {
                    Some(o)
                        if o.name == name
                            && o.namespace == namespace
                            && storable_kind(&o.kind, metadata_only) =>
                    {
                        view.rv = view.rv.max(o.rv);
                        view.members.insert((o.namespace, o.name));
                        self.done.objects += 1;
                    }
                    Some(o) => {
                        let why = format!(
                            "it holds {} {}/{}, not the object its path names",
                            o.kind, o.namespace, o.name
                        );
                        self.quarantine(&path, &why);
                    }
                    None => self.quarantine(&path, "it is not one cached object"),
                }
            }
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Removes `dir` and the directories below it that hold nothing (never a file).
fn remove_empty_dirs(dir: &Path) {
    for sub in subdirs(dir) {
        remove_empty_dirs(&dir.join(sub));
    }
    let _ = fs::remove_dir(dir);
}

/// Directories 0700 and files 0600 below `dir` (upstream made its directories 0755, which
/// lets every local user list the names of the node's cached Secrets). A file with other
/// hard links is left alone: its mode is also another name's.
fn restrict(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            restrict(&e.path());
        } else if meta.is_file() && meta.nlink() == 1 && meta.permissions().mode() & 0o077 != 0 {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o600));
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

    /// A tree upstream's current releases wrote: its CRD kind map, then `files`.
    fn upstream_tree(tag: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let root = temp(tag);
        put(
            &root,
            "_internal/restmapper/cache-crd-restmapper.conf",
            b"{}",
        );
        for (rel, bytes) in files {
            put(&root, rel, bytes);
        }
        root
    }

    fn object(kind: &str, api_version: &str, ns: &str, name: &str, rv: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": kind, "apiVersion": api_version,
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string()}}))
        .unwrap()
    }

    fn pod(name: &str, rv: u64) -> Vec<u8> {
        object("Pod", "v1", "default", name, rv)
    }

    fn view(root: &Path, component: &str, resource: &str) -> Option<ViewSnapshot> {
        let id = ViewId::new(component, resource, &ViewKey::default());
        let bytes = fs::read(root.join(id.rel_path())).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn rv_at(root: &Path, rel: &str) -> Option<u64> {
        read_object(root, &root.join(rel)).map(|o| o.rv)
    }

    fn quarantined(root: &Path) -> usize {
        fs::read_dir(root.join(QUARANTINE_DIR)).map_or(0, |d| d.count())
    }

    #[test]
    fn an_empty_tree_or_one_of_this_hub_only_gets_the_marker() {
        let fresh = temp("fresh");
        assert_eq!(adopt(&fresh).unwrap(), None);
        assert!(fresh.join("_internal/layout").is_file());
        // This hub's tree from before the marker, with no list view yet: not upstream's.
        let ours = temp("ours");
        put(&ours, "kubelet/pods.v1.core/default/p", &pod("p", 1));
        put(&ours, "kubelet/pods.v1.core/default/tmp_p", &pod("p", 2));
        assert_eq!(adopt(&ours).unwrap(), None);
        assert!(ours.join("kubelet/pods.v1.core/default/tmp_p").is_file());
        assert_eq!(view(&ours, "kubelet", "pods.v1.core"), None);
        // Once marked, a tree is never adopted again, whatever it holds.
        put(
            &ours,
            "_internal/restmapper/cache-crd-restmapper.conf",
            b"{}",
        );
        assert_eq!(adopt(&ours).unwrap(), None);
        for d in [fresh, ours] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn of_an_object_and_its_interrupted_copy_the_whole_newer_one_stays() {
        let pods = "kubelet/pods.v1.core/default";
        let root = upstream_tree(
            "copies",
            &[
                // Older releases wrote the new object to tmp_ first: cut short, it is a part.
                (&format!("{pods}/a"), pod("a", 5)),
                (
                    &format!("{pods}/tmp_a"),
                    b"{\"kind\":\"Pod\",\"meta".to_vec(),
                ),
                // Current ones move the old object to tmp_: the new one may be cut short...
                (&format!("{pods}/b"), b"{\"kind\":\"Po".to_vec()),
                (&format!("{pods}/tmp_b"), pod("b", 5)),
                // ... or whole, the crash coming before the copy was deleted.
                (&format!("{pods}/c"), pod("c", 7)),
                (&format!("{pods}/tmp_c"), pod("c", 6)),
                // Only the copy is left.
                (&format!("{pods}/tmp_d"), pod("d", 3)),
            ],
        );
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!((a.restored, a.objects, a.quarantined), (4, 4, 3));
        for (name, rv) in [("a", 5), ("b", 5), ("c", 7), ("d", 3)] {
            assert_eq!(rv_at(&root, &format!("{pods}/{name}")), Some(rv), "{name}");
            assert!(!root.join(pods).join(format!("tmp_{name}")).exists());
        }
        assert_eq!(
            quarantined(&root),
            3,
            "the parts and the older copy, none lost"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_list_whose_rewrite_was_cut_short_loses_no_object() {
        let slices = "kube-proxy/endpointslices.v1.discovery.k8s.io";
        let slice = |name, rv| object("EndpointSlice", "discovery.k8s.io/v1", "default", name, rv);
        let root = upstream_tree(
            "dir-copy",
            &[
                (&format!("{slices}/tmp_default/a"), slice("a", 3)),
                (&format!("{slices}/tmp_default/b"), slice("b", 3)),
                // The replacement had written one newer file when the power went.
                (&format!("{slices}/default/b"), slice("b", 4)),
            ],
        );
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!((a.restored, a.objects, a.views), (1, 2, 1));
        let v = view(&root, "kube-proxy", "endpointslices.v1.discovery.k8s.io").unwrap();
        let names: Vec<&str> = v.members.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(v.adopted && v.rv == 4);
        assert_eq!(rv_at(&root, &format!("{slices}/default/b")), Some(4));
        assert!(!root.join(slices).join("tmp_default").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn both_layouts_keep_the_newer_copy_and_metadata_trees_keep_their_type() {
        let tree = format!("kubelet/{METADATA_TREE}");
        let meta = |name, rv| {
            object(
                "PartialObjectMetadata",
                "meta.k8s.io/v1",
                "default",
                name,
                rv,
            )
        };
        let root = upstream_tree(
            "layouts",
            &[
                ("kubelet/pods.v1.core/default/p", pod("p", 5)),
                ("kubelet/pods/default/p", pod("p", 9)),
                ("kubelet/pods/default/q", pod("q", 2)),
                // The older layout inside a metadata tree: the type comes from the table.
                (&format!("{tree}/pods/default/m"), meta("m", 4)),
                // A full object in the metadata tree, a list, a file below a name.
                (&format!("{tree}/pods.v1.core/default/x"), pod("x", 7)),
                (
                    "kubelet/pods.v1.core/default/l",
                    br#"{"kind":"PodList","apiVersion":"v1","metadata":{"name":"l"},"items":[]}"#
                        .to_vec(),
                ),
                ("kubelet/pods.v1.core/default/y/z", pod("z", 1)),
                // A tree this hub does not serve is left alone.
                (
                    "kubelet/partialobjectmetadatas.v1beta1.meta.k8s.io/pods/default/o",
                    meta("o", 1),
                ),
                // A crash left views staged but not in place, and no marker.
                (
                    "_internal/views.adopting/kubelet/x.v1.core/1.json",
                    b"{}".to_vec(),
                ),
            ],
        );
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!((a.objects, a.views, a.moved), (3, 2, 2), "{a:?}");
        assert_eq!(rv_at(&root, "kubelet/pods.v1.core/default/p"), Some(9));
        assert!(!root.join("kubelet/pods").exists());
        assert!(!root.join("_internal/views.adopting").exists());
        let m = view(&root, &tree, "pods.v1.core").unwrap();
        let names: Vec<&str> = m.members.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(names, ["m"]);
        assert_eq!(
            view(&root, "kubelet", "pods.v1.core")
                .unwrap()
                .members
                .len(),
            2
        );
        assert!(root
            .join("kubelet/partialobjectmetadatas.v1beta1.meta.k8s.io/pods/default/o")
            .is_file());
        // The older p, x, l and z: quarantined, each under a name of its own.
        assert_eq!((a.quarantined, quarantined(&root)), (4, 4));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn links_where_the_hub_keeps_its_directories_are_removed_not_followed() {
        let outside = temp("outside");
        fs::create_dir_all(&outside).unwrap();
        let root = upstream_tree(
            "links",
            &[("kubelet/pods.v1.core/default/bad", b"x".to_vec())],
        );
        std::os::unix::fs::symlink(&outside, root.join(QUARANTINE_DIR)).unwrap();
        fs::write(root.join("_internal/views"), b"not a directory").unwrap();
        let a = adopt(&root).unwrap().unwrap();
        assert_eq!(a.quarantined, 1);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing went out"
        );
        assert!(is_real_dir(&root.join(QUARANTINE_DIR)));
        assert!(root.join("_internal_views.moved-aside").is_file());
        assert!(is_real_dir(&root.join("_internal/views")));
        for d in [root, outside] {
            fs::remove_dir_all(d).unwrap();
        }
    }
}

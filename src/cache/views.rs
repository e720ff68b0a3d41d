//! List views: which objects one list (a component, a resource, a selector) held when the
//! cloud last answered it, so that offline the same list answers with exactly them. Each is
//! persisted as `_internal/views/<component>/<resource>/<id>.json`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::store::INTERNAL_DIR;
use super::{Target, ViewKey};

/// The views' directory under [`INTERNAL_DIR`].
const VIEWS_DIR: &str = "views";

/// A view's membership, as persisted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViewSnapshot {
    /// The view.
    pub key: ViewKey,
    /// The resourceVersion of the list that last replaced it.
    pub rv: u64,
    /// Members as (namespace, name).
    pub members: BTreeSet<(String, String)>,
    /// The last answer to this list was larger than `--max-cached-list-bytes`: the view holds
    /// no members, and offline the list is refused rather than answered empty or partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
    /// The view was dropped whole to keep the cache within `--cache-max-bytes` (its members
    /// are never evicted one by one, which would leave a partial list): it holds no members,
    /// and offline the list is refused until the cloud answers it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evicted: bool,
    /// Built from a cache upstream YurtHub wrote ([`super::adopt`]): the objects it held for
    /// this component and type, under whatever selectors it listed them with (it kept no
    /// record of those). Until the cloud answers a list of this type for this component,
    /// every list of it is answered from these members with its own selectors, as upstream
    /// would have answered it; then the view is retired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// For an adopted view, the namespaces upstream had a directory for (a list of one of
    /// them was made, maybe answered empty); a list of another namespace was never cached.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub adopted_namespaces: BTreeSet<String>,
    /// Only watch events made it (no list with these selectors was seen): it holds what the
    /// events touched, not the list, and is not answered offline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlisted: bool,
}

impl ViewSnapshot {
    /// Whether the view does not know its list (too large, or evicted): it holds no members,
    /// keeps none from watch events, and is not answered offline.
    pub fn withheld(&self) -> bool {
        self.too_large || self.evicted
    }
}

/// Which view: its component, resource, and the id of its selector key ([`ViewKey::id`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewId {
    /// The component whose list it is.
    pub component: String,
    /// `<resource>.<version>.<group>`.
    pub resource: String,
    /// [`ViewKey::id`] of its namespace and selectors.
    pub id: String,
}

impl ViewId {
    /// The view a request's answer belongs to.
    pub fn of(t: &Target) -> ViewId {
        ViewId::new(&t.component, &t.resource, &t.view)
    }

    /// The view of `component`'s lists of `resource` with `key`.
    pub fn new(component: &str, resource: &str, key: &ViewKey) -> ViewId {
        ViewId {
            component: component.to_string(),
            resource: resource.to_string(),
            id: key.id(),
        }
    }

    /// Its file, relative to the cache root.
    pub fn rel_path(&self) -> PathBuf {
        dir_rel(Path::new(&self.component))
            .join(&self.resource)
            .join(format!("{}.json", self.id))
    }
}

/// The directory of the views of `rel` (a component, or `<component>/<resource>`), relative to
/// the cache root.
pub fn dir_rel(rel: &Path) -> PathBuf {
    Path::new(INTERNAL_DIR).join(VIEWS_DIR).join(rel)
}

/// Views by (component, resource), then by id.
pub(super) type ByType = HashMap<(String, String), BTreeMap<String, ViewSnapshot>>;

/// Every persisted view below the cache root `root`, unreadable ones logged and skipped.
pub(super) fn load(root: &Path) -> ByType {
    let mut out = ByType::new();
    let base = root.join(INTERNAL_DIR).join(VIEWS_DIR);
    let Ok(components) = std::fs::read_dir(&base) else {
        return out;
    };
    // (component, its directory): metadata trees add one level below a component.
    let mut dirs: Vec<(String, PathBuf)> = components
        .flatten()
        .map(|c| (c.file_name().to_string_lossy().into_owned(), c.path()))
        .collect();
    for (component, dir) in dirs.clone() {
        let tree = dir.join(super::METADATA_TREE);
        if tree.is_dir() {
            dirs.push((format!("{component}/{}", super::METADATA_TREE), tree));
        }
    }
    for (component, dir) in dirs {
        let Ok(resources) = std::fs::read_dir(&dir) else {
            continue;
        };
        for r in resources.flatten() {
            let resource = r.file_name().to_string_lossy().into_owned();
            if resource == super::METADATA_TREE {
                continue;
            }
            let Ok(files) = std::fs::read_dir(r.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                let rel = f.path();
                let rel = rel.strip_prefix(root).unwrap_or(&rel);
                match super::store::read_regular(root, rel)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<ViewSnapshot>(&b).ok())
                {
                    Some(v) => {
                        out.entry((component.clone(), resource.clone()))
                            .or_default()
                            .insert(id.to_string(), v);
                    }
                    None => log::warn!("cache: view {} unreadable; ignored", f.path().display()),
                }
            }
        }
    }
    out
}

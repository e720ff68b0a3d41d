//! The single ordered writer of the cache.
//!
//! Every mutation goes through one bounded queue to one thread, in arrival order. The writer
//! keeps each list view's membership ([`super::views`]), guards every upsert by resourceVersion
//! (never newer by older), assembles paginated lists and watch-list initial events before they
//! replace a view, and deletes an object's file only when no view refers to it any more.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::evict::{candidates, Candidate, Protected};
use super::handle::{Job, Shared};
use super::object::{self, parse_event, parse_list, Event, Object};
use super::owners::Owner;
use super::store::{ObjectKey, Store, StoreError};
use super::views::{ViewId, ViewSnapshot};
use super::{Shape, Target, ViewKey};
use crate::kube::{FieldSelector, LabelSelector};

/// The most failed writes remembered by name (a full disk fails every write: the first few
/// say why, and the count of the rest is not needed).
const MAX_FAILURES: usize = 64;

/// How many deletions the writer remembers (a few hundred KiB at most): enough for any list
/// still in flight when its objects were deleted.
const MAX_TOMBSTONES: usize = 8192;

/// How many whole lists an eviction's log line names (the rest are counted).
const MAX_LISTS_LOGGED: usize = 8;

/// The one thread that changes the cache.
pub(super) struct Writer {
    store: Arc<Store>,
    shared: Arc<Shared>,
    rvs: HashMap<ObjectKey, u64>,
    /// Pages of a paged list, until its last page replaces the view, with the queue place of
    /// its first page.
    pages: HashMap<ViewId, (u64, Vec<Object>)>,
    /// Watch streams; a watch-list's initial events, until its end bookmark, with the queue
    /// place of its first event.
    streams: HashMap<u64, Option<(u64, Vec<Object>)>>,
    /// Views changed since they were last persisted.
    dirty: HashSet<ViewId>,
    /// Deleted objects and the resourceVersion of their deletion, so that a list answered
    /// before the deletion but applied after it cannot bring them back; the oldest go first.
    tombstones: HashMap<ObjectKey, u64>,
    tombstone_order: VecDeque<ObjectKey>,
    max_bytes: u64,
    /// The bytes left after an eviction that could not get under budget: the next attempt
    /// waits until the cache has grown by 1 % of the budget (a walk per write would be costly).
    over_budget: Option<u64>,
    /// Evicted views and the newest resourceVersion they held or were told of since: an
    /// older list (one in flight when the view was dropped) does not make them whole again.
    evicted_floor: HashMap<ViewId, u64>,
    /// When each view was last touched (a tick of [`Self::clock`]): past the caps, the least
    /// recently used go.
    used: HashMap<ViewId, u64>,
    clock: u64,
}

/// The most list views kept per component and type: kubelet keeps one per ConfigMap and
/// Secret its pods use (a field selector each), far fewer than this.
pub(super) const MAX_VIEWS_PER_TYPE: usize = 1024;
/// The most list views kept in all.
pub(super) const MAX_VIEWS: usize = 4096;

/// Views dropped past the caps: a client making list after list with new selectors.
static VIEWS_DROPPED: crate::log_repeats::Repeats =
    crate::log_repeats::Repeats::new(Duration::from_secs(60));

/// Empties a set filled beside the queue.
fn take_all<T: Eq + std::hash::Hash>(set: &std::sync::Mutex<HashSet<T>>) -> Vec<T> {
    set.lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect()
}

impl Writer {
    /// A writer of `store`, keeping the cache within `max_bytes` (0: no budget).
    pub(super) fn new(store: Arc<Store>, shared: Arc<Shared>, max_bytes: u64) -> Writer {
        Writer {
            store,
            shared,
            rvs: HashMap::new(),
            pages: HashMap::new(),
            streams: HashMap::new(),
            dirty: HashSet::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            max_bytes,
            over_budget: None,
            evicted_floor: HashMap::new(),
            used: HashMap::new(),
            clock: 0,
        }
    }

    /// Applies jobs until the handle stops it or every handle is gone.
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        loop {
            let job = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.persist_views();
                    return;
                }
            };
            let stop = matches!(job, Job::Stop);
            self.apply(job);
            // The budget is checked after every job (one atomic load while under it), so a
            // burst overshoots it by one object at most.
            self.enforce_budget();
            while let Ok(job) = rx.try_recv() {
                if matches!(job, Job::Stop) {
                    self.persist_views();
                    return;
                }
                self.apply(job);
                self.enforce_budget();
            }
            // A burst of events rewrites each touched view file once.
            self.persist_views();
            if stop {
                return;
            }
        }
    }

    /// Records a failed write or delete of `at` (counted; the cache's failures, which the
    /// node's `Autonomy` condition reports, keep it until `at` is written or deleted).
    fn error(&self, what: &str, at: &str, e: &StoreError) {
        self.shared
            .stats
            .write_errors
            .fetch_add(1, Ordering::Relaxed);
        let mut failing = self.shared.stats.failures();
        // A key that cannot be a file name (a name any client may choose) is an object the
        // cache does not take, not a cache that fails; and what the Node's status reports
        // is the error alone, not an object's path or name.
        if let StoreError::Io { error, .. } = e {
            if failing.len() < MAX_FAILURES || failing.contains_key(at) {
                failing.insert(at.to_string(), format!("cache {what}: {error}"));
            }
        }
        drop(failing);
        if e.is_disk_full() {
            log::warn!("cache {what}: disk full, caching paused for this object: {e}");
        } else {
            log::warn!("cache {what}: {e}");
        }
    }

    /// `at` was written or deleted: whatever failed there before does not now.
    fn done(&self, at: &str) {
        let mut failing = self.shared.stats.failures();
        if failing.remove(at).is_some() && failing.is_empty() {
            log::info!("cache: every failed write has succeeded since");
        }
    }

    fn apply(&mut self, job: Job) {
        let bytes = job.bytes();
        self.apply_job(job);
        // The body is dropped now: its bytes no longer wait.
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn apply_job(&mut self, job: Job) {
        self.shared.stats.jobs.fetch_add(1, Ordering::Relaxed);
        // Streams whose end, and components whose removal, could not be queued (a full
        // queue) are handled here.
        for s in take_all(&self.shared.ended) {
            self.streams.remove(&s);
        }
        for c in take_all(&self.shared.taken_over) {
            self.drop_component(&c);
        }
        // Answers queued for an identity that no longer owns the component are not kept.
        let owner_ok =
            |component: &str, owner: &Owner| self.shared.owners.may_cache(component, owner);
        let current = match &job {
            Job::Response { target, .. } | Job::Event { target, .. } | Job::TooLarge(target) => {
                owner_ok(&target.component, &target.owner)
            }
            Job::Put { component, .. } => owner_ok(component, &Owner::Node),
            _ => true,
        };
        if !current {
            return;
        }
        match job {
            Job::Response { target, body, seq } => self.response(&target, &body, seq),
            Job::Event {
                target,
                stream,
                line,
                seq,
            } => self.event(&target, stream, &line, seq),
            Job::EndStream { stream } => {
                self.streams.remove(&stream);
            }
            Job::Put {
                component,
                resource,
                body,
            } => {
                // JSON is UTF-8; anything else is not an object to keep.
                let text = std::str::from_utf8(&body).unwrap_or("");
                if let Some(obj) = Object::parse(text, None) {
                    let key = ObjectKey {
                        component,
                        resource,
                        namespace: obj.namespace.clone(),
                        name: obj.name.clone(),
                    };
                    self.upsert(key, &obj);
                }
            }
            Job::Raw { name, body } => match self.store.write_file(Path::new(&name), &body) {
                Ok(_) => self.done(&name),
                Err(e) => self.error("write", &name, &e),
            },
            Job::Forget(key, up_to) => {
                if self.forget(&key, up_to) {
                    self.shared.stats.collected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Job::DropComponent(c) => self.drop_component(&c),
            Job::TooLarge(t) => {
                // The objects stay (other views may hold them; nothing says they are gone);
                // the view no longer claims to know the list.
                self.with_view(&t, |v| {
                    v.members.clear();
                    v.too_large = true;
                    v.evicted = false;
                });
                self.mark_dirty(&t);
            }
            #[cfg(test)]
            Job::DropView(id) => {
                let protected = Protected::load(&self.store);
                self.drop_view(&id, &protected);
            }
            Job::Flush(done) => {
                self.persist_views();
                let _ = done.send(());
            }
            Job::Stop => {}
        }
    }

    fn stored_rv(&mut self, key: &ObjectKey) -> Option<u64> {
        if let Some(rv) = self.rvs.get(key) {
            return Some(*rv);
        }
        let bytes = self.store.read(key).ok().flatten()?;
        let rv = Object::parse(&String::from_utf8_lossy(&bytes), None)
            .map(|o| o.rv)
            .unwrap_or(0);
        self.rvs.insert(key.clone(), rv);
        Some(rv)
    }

    /// Writes `obj` unless the stored copy is newer (equal is accepted, as upstream).
    /// Remembers that `key` was deleted at resourceVersion `rv`.
    fn bury(&mut self, key: ObjectKey, rv: u64) {
        if self.tombstones.insert(key.clone(), rv).is_none() {
            self.tombstone_order.push_back(key);
        }
        while self.tombstone_order.len() > MAX_TOMBSTONES {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }

    /// Whether `key` at `rv` is a copy from before its deletion.
    fn buried(&self, key: &ObjectKey, rv: u64) -> bool {
        self.tombstones
            .get(key)
            .is_some_and(|deleted| *deleted >= rv)
    }

    /// Stores a listed or watched object of `t`'s view and names it as a member; `None` for
    /// what the cache does not keep and for copies from before a deletion. The RV guard
    /// protects the file's contents; the object belongs to the view whether or not a newer
    /// copy is already on disk.
    fn keep(&mut self, t: &Target, obj: &Object) -> Option<(String, String)> {
        let key = Self::key_of(t, obj);
        if !obj.storable() || self.buried(&key, obj.rv) {
            return None;
        }
        self.upsert(key, obj);
        Some((obj.namespace.clone(), obj.name.clone()))
    }

    fn upsert(&mut self, key: ObjectKey, obj: &Object) -> bool {
        if !obj.storable() || self.buried(&key, obj.rv) {
            return false;
        }
        if self.stored_rv(&key).is_some_and(|old| old > obj.rv) {
            return false;
        }
        if self.unchanged(&key, &obj.bytes) {
            return true;
        }
        match self.store.write(&key, &obj.bytes) {
            Ok(written) => {
                if written {
                    self.shared.stats.writes.fetch_add(1, Ordering::Relaxed);
                }
                self.done(&key.to_string());
                self.rvs.insert(key, obj.rv);
                true
            }
            Err(e) => {
                self.error("write", &key.to_string(), &e);
                false
            }
        }
    }

    /// Whether `key` holds exactly `bytes` (written by this process): the same answer again
    /// needs no reading, writing or parsing.
    fn unchanged(&self, key: &ObjectKey, bytes: &[u8]) -> bool {
        self.store.holds(key, bytes)
    }

    fn key_of(t: &Target, obj: &Object) -> ObjectKey {
        ObjectKey {
            component: t.component.clone(),
            resource: t.resource.clone(),
            namespace: obj.namespace.clone(),
            name: obj.name.clone(),
        }
    }

    /// Whether a view of `key`'s type holds it.
    fn referenced(&self, key: &ObjectKey) -> bool {
        !self.views_holding(key).is_empty()
    }

    /// The views of `key`'s type that hold it.
    fn views_holding(&self, key: &ObjectKey) -> Vec<ViewId> {
        let member = (key.namespace.clone(), key.name.clone());
        let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        views
            .get(&(key.component.clone(), key.resource.clone()))
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.members.contains(&member))
                    .map(|(id, _)| ViewId {
                        component: key.component.clone(),
                        resource: key.resource.clone(),
                        id: id.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes `key`'s file unless a view still holds it; whether a file was removed.
    fn remove_if_unreferenced(&mut self, key: &ObjectKey) -> bool {
        if self.referenced(key) {
            return false;
        }
        match self.store.remove(key) {
            Ok(removed) => {
                self.rvs.remove(key);
                self.done(&key.to_string());
                removed
            }
            Err(e) => {
                self.error("delete", &key.to_string(), &e);
                false
            }
        }
    }

    /// Drops `key` from every view of its type and from disk; whether a file was removed.
    /// With `up_to`, only when the stored object is not newer than that resourceVersion (it
    /// may have been re-created since the decision was made).
    fn forget(&mut self, key: &ObjectKey, up_to: Option<u64>) -> bool {
        if let Some(rv) = up_to {
            if self.stored_rv(key).is_some_and(|stored| stored > rv) {
                return false;
            }
        }
        let member = (key.namespace.clone(), key.name.clone());
        let touched: Vec<String> = {
            let mut views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
            views
                .get_mut(&(key.component.clone(), key.resource.clone()))
                .map(|m| {
                    m.iter_mut()
                        .filter_map(|(id, v)| v.members.remove(&member).then(|| id.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        for id in touched {
            self.dirty.insert(ViewId {
                component: key.component.clone(),
                resource: key.resource.clone(),
                id,
            });
        }
        self.rvs.remove(key);
        match self.store.remove(key) {
            Ok(removed) => {
                self.done(&key.to_string());
                removed
            }
            Err(e) => {
                self.error("delete", &key.to_string(), &e);
                false
            }
        }
    }

    /// Evicts objects, in [`super::evict`]'s order, until the cache is back under 90 % of
    /// its budget (the margin keeps eviction from running after every write). Checked after
    /// every job, so the cache overshoots by one job's objects at most.
    ///
    /// An object a list view holds is never evicted alone, which would leave its list
    /// partial offline: its views are dropped whole (see [`Self::drop_view`]). Inside each
    /// class, objects no view holds go first.
    fn enforce_budget(&mut self) {
        let max = self.max_bytes;
        let goal = max - max / 10;
        let used = self.store.bytes();
        if used <= goal {
            self.over_budget = None;
        }
        if max == 0 || used <= max {
            return;
        }
        if self.over_budget.is_some_and(|left| used < left + max / 100) {
            return;
        }
        // The count may have drifted (files removed behind the hub's back): recount first.
        let used = self.store.recount_bytes();
        if used <= max {
            self.over_budget = None;
            return;
        }
        let protected = Protected::load(&self.store);
        let mut order: Vec<(Candidate, Vec<ViewId>)> = candidates(&self.store, &protected)
            .into_iter()
            .map(|c| {
                let views = self.views_holding(&c.key);
                (c, views)
            })
            .collect();
        // Stable: least recently written first inside (class, held by a view or not).
        order.sort_by_key(|(c, views)| (c.class, !views.is_empty()));
        let mut evicted = 0u64;
        let mut dropped: Vec<String> = Vec::new();
        for (c, views) in order {
            if self.store.bytes() <= goal {
                break;
            }
            if views.is_empty() {
                evicted += u64::from(self.forget(&c.key, None));
                continue;
            }
            // Dropping an earlier view may have removed this object already; the views
            // that hold it now are the ones to drop.
            for id in self.views_holding(&c.key) {
                let (removed, members) = self.drop_view(&id, &protected);
                evicted += removed;
                dropped.push(format!(
                    "{} {} {} ({members} objects)",
                    id.component,
                    id.resource,
                    self.describe_view(&id)
                ));
            }
        }
        let stats = &self.shared.stats;
        stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        stats
            .evicted_lists
            .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        let now = self.store.bytes();
        // One line per episode: with the 10 % margin, episodes are far apart. A few lists
        // are named; the count says how many more.
        let lists = match dropped.len() {
            0 => String::new(),
            n => {
                let shown = dropped.iter().take(MAX_LISTS_LOGGED).cloned();
                let mut named = shown.collect::<Vec<_>>().join(", ");
                if n > MAX_LISTS_LOGGED {
                    named.push_str(&format!(" and {} more", n - MAX_LISTS_LOGGED));
                }
                format!(
                    ", and dropped {n} whole lists (answered 404 offline until the cloud lists them again): {named}"
                )
            }
        };
        let what = format!(
            "cache: {used} bytes exceed --cache-max-bytes={max}: evicted {evicted} objects (Events first, then other components' objects, least recently written first){lists}; {now} bytes now"
        );
        if now > max && self.over_budget.is_none() {
            log::warn!("{what}, still over: what is left is kubelet's restart set and the hub's own, which are never evicted");
        } else if now <= max {
            log::info!("{what}");
        }
        // Short of the goal, the next episode waits for 1 % more growth.
        self.over_budget = (now > goal).then_some(now);
    }

    /// Drops a view whole: it forgets its members and says so ([`ViewSnapshot::evicted`],
    /// so that offline its list is refused, never answered partial), and the members no
    /// other view holds are removed unless `protected` keeps them. Returns the files removed
    /// and the members the view held.
    fn drop_view(&mut self, id: &ViewId, protected: &Protected) -> (u64, usize) {
        let Some(members) = self.with_existing(id, |v| {
            v.evicted = true;
            v.too_large = false;
            std::mem::take(&mut v.members)
        }) else {
            return (0, 0);
        };
        // A list whose pages began before the drop describes what was dropped.
        self.pages.remove(id);
        let held = members.len();
        let mut floor = 0;
        let keys: Vec<ObjectKey> = members
            .iter()
            .map(|m| member_key(&id.component, &id.resource, m))
            .collect();
        for key in &keys {
            floor = floor.max(self.stored_rv(key).unwrap_or(0));
        }
        self.raise_floor(id, floor);
        // The mark is on disk before any file goes: a crash in between must not leave a
        // view naming members whose files are gone.
        if !self.persist_view(id) {
            self.dirty.insert(id.clone());
            return (0, held);
        }
        let mut removed = 0;
        for key in &keys {
            if !protected.keeps(key) {
                removed += u64::from(self.remove_if_unreferenced(key));
            }
        }
        (removed, held)
    }

    /// Raises the resourceVersion a list must reach to make an evicted view whole again.
    fn raise_floor(&mut self, id: &ViewId, rv: u64) {
        let floor = self.evicted_floor.entry(id.clone()).or_insert(0);
        *floor = (*floor).max(rv);
    }

    /// Whether the view exists and does not know its list ([`ViewSnapshot::withheld`]).
    fn withheld(&self, id: &ViewId) -> bool {
        self.with_existing(id, |v| v.withheld()).unwrap_or(false)
    }

    /// `f` on the view `id` names, when it exists (unlike [`Self::with_view`], which makes
    /// one).
    fn with_existing<R>(&self, id: &ViewId, f: impl FnOnce(&mut ViewSnapshot) -> R) -> Option<R> {
        let mut views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        views
            .get_mut(&(id.component.clone(), id.resource.clone()))
            .and_then(|m| m.get_mut(&id.id))
            .map(f)
    }

    /// A view's namespace and selectors, as a log names them.
    fn describe_view(&self, id: &ViewId) -> String {
        let Some(k) = self.with_existing(id, |v| v.key.clone()) else {
            return String::new();
        };
        let mut parts = Vec::new();
        if !k.namespace.is_empty() {
            parts.push(format!("namespace={}", k.namespace));
        }
        if !k.label_selector.is_empty() {
            parts.push(format!("labelSelector={}", k.label_selector));
        }
        if !k.field_selector.is_empty() {
            parts.push(format!("fieldSelector={}", k.field_selector));
        }
        if parts.is_empty() {
            "list".to_string()
        } else {
            format!("list {}", parts.join(" "))
        }
    }

    fn with_view<R>(&self, t: &Target, f: impl FnOnce(&mut ViewSnapshot) -> R) -> R {
        let mut views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        let view = views
            .entry((t.component.clone(), t.resource.clone()))
            .or_default()
            .entry(t.view.id())
            .or_insert_with(|| ViewSnapshot {
                key: t.view.clone(),
                // Until a whole list replaces it (see `replace_view`).
                unlisted: true,
                ..ViewSnapshot::default()
            });
        f(view)
    }

    /// Keeps the view adopted from upstream's cache for `t`'s type current with a watch's
    /// events (a client may watch on from its last resourceVersion without listing again).
    fn touch_adopted(&mut self, t: &Target, member: &(String, String), present: bool) {
        let id = ViewId::new(&t.component, &t.resource, &ViewKey::default());
        if id.id == t.view.id() {
            return;
        }
        let touched = self.with_existing(&id, |v| {
            v.adopted && {
                if present {
                    v.members.insert(member.clone())
                } else {
                    v.members.remove(member)
                }
            }
        });
        if touched == Some(true) {
            self.dirty.insert(id);
        }
    }

    /// The cloud's first whole list of a type for a component ends the view adopted from
    /// upstream YurtHub's cache for it ([`ViewSnapshot::adopted`]): from now on its lists are
    /// answered from what the cloud says. Of the objects it held, those this list selects
    /// (as they were cached) but did not return are gone from the cloud and removed; the
    /// others stay, since another selector may still need them.
    fn retire_adopted(&mut self, t: &Target, listed: &BTreeSet<(String, String)>, list_rv: u64) {
        let key = ViewKey::default();
        if t.view == key {
            return;
        }
        let id = ViewId::new(&t.component, &t.resource, &key);
        if !self.with_existing(&id, |v| v.adopted).unwrap_or(false) {
            return;
        }
        let adopted = self.remove_view(&id).unwrap_or_default();
        let mut removed = 0;
        if let (Ok(labels), Ok(fields)) = (
            LabelSelector::parse(&t.view.label_selector),
            FieldSelector::parse(&t.view.field_selector),
        ) {
            for m in adopted.members.difference(listed) {
                if !t.view.namespace.is_empty() && m.0 != t.view.namespace {
                    continue;
                }
                let key = member_key(&t.component, &t.resource, m);
                // A watch event newer than the list stored it: the list is not evidence.
                if self.stored_rv(&key).is_some_and(|rv| rv > list_rv) {
                    continue;
                }
                let selected = self.store.read(&key).ok().flatten().is_some_and(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .is_ok_and(|o| labels.matches_object(&o) && fields.matches_object(&o))
                });
                if selected && self.remove_if_unreferenced(&key) {
                    removed += 1;
                }
            }
        }
        log::info!(
            "cache: {} {} listed by the cloud: the list adopted from upstream YurtHub's cache is retired ({removed} of its {} objects are gone from the cloud and removed)",
            t.component,
            t.resource,
            adopted.members.len()
        );
    }

    fn mark_dirty(&mut self, t: &Target) {
        let id = ViewId::of(t);
        self.clock += 1;
        self.used.insert(id.clone(), self.clock);
        self.dirty.insert(id.clone());
        self.cap_views(&id);
    }

    /// Keeps the views within [`MAX_VIEWS_PER_TYPE`] and [`MAX_VIEWS`] by dropping the least
    /// recently used (never `keep`, the one just touched, nor an adopted one): every new
    /// selector makes a view, and a client must not grow the hub's memory and disk with them.
    /// A dropped view's list is then one never cached: 404 offline, never partial.
    fn cap_views(&mut self, keep: &ViewId) {
        loop {
            let victim = {
                let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
                let pair = (keep.component.clone(), keep.resource.clone());
                let of_type = views.get(&pair).map_or(0, |m| m.len());
                let total: usize = views.values().map(|m| m.len()).sum();
                let scope: Vec<_> = if of_type > MAX_VIEWS_PER_TYPE {
                    views.get_key_value(&pair).into_iter().collect()
                } else if total > MAX_VIEWS {
                    views.iter().collect()
                } else {
                    Vec::new()
                };
                scope
                    .into_iter()
                    .flat_map(|((c, r), m)| {
                        m.iter().filter(|(_, v)| !v.adopted).map(|(id, _)| ViewId {
                            component: c.clone(),
                            resource: r.clone(),
                            id: id.clone(),
                        })
                    })
                    .filter(|id| id != keep)
                    .min_by_key(|id| self.used.get(id).copied().unwrap_or(0))
            };
            let Some(victim) = victim else {
                return;
            };
            self.drop_lru_view(&victim);
        }
    }

    /// Removes a view whole, from memory and disk; what it held.
    fn remove_view(&mut self, id: &ViewId) -> Option<ViewSnapshot> {
        let removed = {
            let mut views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
            views
                .get_mut(&(id.component.clone(), id.resource.clone()))
                .and_then(|m| m.remove(&id.id))
        };
        self.dirty.remove(id);
        self.used.remove(id);
        let at = id.rel_path().display().to_string();
        match self.store.remove_file(&id.rel_path()) {
            Ok(_) => self.done(&at),
            Err(e) => self.error("view delete", &at, &e),
        }
        removed
    }

    /// Removes everything cached for `component` (its views, its objects, its metadata
    /// tree), in the queue's order: answers applied before are removed with it, and those
    /// after are for its new owner.
    fn drop_component(&mut self, component: &str) {
        let inside = |c: &str| {
            c == component
                || c.strip_prefix(component)
                    .is_some_and(|r| r.starts_with('/'))
        };
        let ids: Vec<ViewId> = {
            let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
            views
                .iter()
                .filter(|((c, _), _)| inside(c))
                .flat_map(|((c, r), m)| {
                    m.keys().map(|id| ViewId {
                        component: c.clone(),
                        resource: r.clone(),
                        id: id.clone(),
                    })
                })
                .collect()
        };
        for id in &ids {
            self.remove_view(id);
            self.pages.remove(id);
            self.evicted_floor.remove(id);
        }
        self.shared
            .stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| !inside(&id.component));
        let mut files = Vec::new();
        super::store::files_below(&self.store.root().join(component), &mut files);
        let mut removed = 0usize;
        for f in &files {
            let Ok(rel) = f.strip_prefix(self.store.root()) else {
                continue;
            };
            let at = rel.display().to_string();
            match self.store.remove_file(rel) {
                Ok(_) => {
                    removed += 1;
                    self.done(&at);
                }
                Err(e) => self.error("delete", &at, &e),
            }
        }
        // Failures of what was there went with it.
        self.shared
            .stats
            .failures()
            .retain(|at, _| !inside(at.split('/').next().unwrap_or("")));
        self.rvs.retain(|k, _| !inside(&k.component));
        self.tombstones.retain(|k, _| !inside(&k.component));
        self.tombstone_order.retain(|k| !inside(&k.component));
        self.shared.owners.dropped(component);
        log::info!(
            "cache: {component}: {} lists and {removed} objects cached for another identity removed",
            ids.len()
        );
    }

    fn drop_lru_view(&mut self, id: &ViewId) {
        let removed = self.remove_view(id);
        self.shared
            .stats
            .views_dropped
            .fetch_add(1, Ordering::Relaxed);
        let members = removed.map(|v| v.members).unwrap_or_default();
        for m in &members {
            self.remove_if_unreferenced(&member_key(&id.component, &id.resource, m));
        }
        let what = format!("{} {}", id.component, id.resource);
        if let Some(more) = VIEWS_DROPPED.allow(&what) {
            log::info!(
                "cache: {what}: more lists than the hub keeps ({MAX_VIEWS_PER_TYPE} per type, {MAX_VIEWS} in all): the least recently used one dropped ({} objects); offline it is 404 until listed again{more}",
                members.len()
            );
        }
    }

    /// Makes a view hold exactly `items`, except members the cache knows newer than the list
    /// (a watch event processed before a late list must not be undone, reference §13.2 #5).
    ///
    /// `since` is the queue place of the first job of this evidence (the list, its first page,
    /// the watch-list's first event): when a job for this view was dropped since, the evidence
    /// may lack objects, so its items are added and nothing is removed, and the view stays
    /// stale until a list queued wholly after the drop replaces it.
    fn replace_view(&mut self, t: &Target, items: Vec<Object>, list_rv: u64, since: u64) {
        let id = ViewId::of(t);
        let dropped = self
            .shared
            .stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied();
        let incomplete = dropped.is_some_and(|d| d >= since);
        if self.withheld(&id) {
            // A view that does not know its list learns it only from a whole list, and for
            // an evicted one a list at least as new as what was dropped.
            let older = self
                .evicted_floor
                .get(&id)
                .is_some_and(|floor| list_rv < *floor);
            if incomplete || older {
                log::info!(
                    "cache: {} {} list arrived {}: the list stays unanswered offline",
                    t.component,
                    t.resource,
                    if incomplete {
                        "incomplete"
                    } else {
                        "older than the evicted one"
                    }
                );
                return;
            }
        }
        let mut members = BTreeSet::new();
        for obj in &items {
            if let Some(m) = self.keep(t, obj) {
                members.insert(m);
            }
        }
        if incomplete {
            log::info!(
                "cache: {} {} list arrived incomplete (jobs dropped while it was queued): its objects kept, nothing removed, the view stays stale",
                t.component,
                t.resource
            );
            self.with_view(t, |v| v.members.extend(members));
            self.mark_dirty(t);
            return;
        }
        self.retire_adopted(t, &members, list_rv);
        let old = self.with_view(t, |v| std::mem::take(&mut v.members));
        let mut gone = Vec::new();
        for m in old {
            if members.contains(&m) {
                continue;
            }
            let key = member_key(&t.component, &t.resource, &m);
            if self.stored_rv(&key).is_some_and(|rv| rv > list_rv) {
                members.insert(m);
            } else {
                gone.push(key);
            }
        }
        self.with_view(t, |v| {
            v.members = members;
            v.rv = list_rv;
            v.too_large = false;
            v.evicted = false;
            v.adopted = false;
            v.unlisted = false;
        });
        self.evicted_floor.remove(&id);
        for key in gone {
            self.remove_if_unreferenced(&key);
        }
        {
            // Only a drop before this evidence began is healed by it (one may have come
            // while the view was being replaced).
            let mut stale = self.shared.stale.lock().unwrap_or_else(|e| e.into_inner());
            if stale.get(&id).is_some_and(|d| *d < since) {
                stale.remove(&id);
            }
        }
        self.mark_dirty(t);
    }

    fn response(&mut self, t: &Target, body: &[u8], seq: u64) {
        match t.shape {
            Shape::Object => {
                // A get names its object: an answer like the last one is not even parsed.
                let bytes = body.trim_ascii();
                if !t.name.is_empty() && self.unchanged(&t.object_key(&t.name), bytes) {
                    return;
                }
                let text = std::str::from_utf8(body).unwrap_or("");
                if let Some(obj) = Object::parse(text, None) {
                    if object::storable_kind(&obj.kind, t.metadata_only) {
                        let key = Self::key_of(t, &obj);
                        self.upsert(key, &obj);
                    }
                }
            }
            Shape::List { paged, continued } => {
                let Some(list) = parse_list(body, t.metadata_only) else {
                    return;
                };
                let page_key = ViewId::of(t);
                if !paged && !continued && !list.more {
                    self.replace_view(t, list.items, list.rv, seq);
                    return;
                }
                // Pages are assembled and replace the view only when the last has arrived.
                let acc = if continued {
                    match self.pages.get_mut(&page_key) {
                        Some(acc) => &mut acc.1,
                        None => return,
                    }
                } else {
                    &mut self
                        .pages
                        .entry(page_key.clone())
                        .insert_entry((seq, Vec::new()))
                        .into_mut()
                        .1
                };
                acc.extend(list.items);
                if !list.more {
                    let (since, items) = self.pages.remove(&page_key).unwrap_or_default();
                    self.replace_view(t, items, list.rv, since);
                }
            }
            Shape::Watch { .. } => {}
        }
    }

    fn event(&mut self, t: &Target, stream: u64, line: &[u8], seq: u64) {
        let Some(ev) = parse_event(line) else {
            return;
        };
        let watch_list = matches!(t.shape, Shape::Watch { watch_list: true });
        let collecting = self
            .streams
            .entry(stream)
            .or_insert_with(|| watch_list.then(|| (seq, Vec::new())));
        match ev {
            Event::Upsert(obj) => {
                if let Some((_, acc)) = collecting {
                    acc.push(obj);
                    return;
                }
                // A view that no longer knows its list gathers no members until it is listed
                // again (they would only fill the disk); objects still on disk (read by
                // name, or held by other views) are kept current.
                let id = ViewId::of(t);
                if self.withheld(&id) {
                    self.raise_floor(&id, obj.rv);
                    let key = Self::key_of(t, &obj);
                    if self.stored_rv(&key).is_some() {
                        self.upsert(key, &obj);
                    }
                    return;
                }
                if let Some(member) = self.keep(t, &obj) {
                    self.touch_adopted(t, &member, true);
                    self.with_view(t, |v| v.members.insert(member));
                    self.mark_dirty(t);
                }
            }
            Event::Deleted(obj) => {
                let key = Self::key_of(t, &obj);
                self.bury(key.clone(), obj.rv);
                let member = (obj.namespace.clone(), obj.name.clone());
                self.touch_adopted(t, &member, false);
                self.with_view(t, |v| v.members.remove(&member));
                self.remove_if_unreferenced(&key);
                self.mark_dirty(t);
            }
            Event::Bookmark {
                initial_end: true,
                rv,
            } => {
                if let Some(Some((since, items))) = self.streams.insert(stream, None) {
                    // The bookmark's RV is the state the initial events describe.
                    let rv = rv.max(items.iter().map(|o| o.rv).max().unwrap_or(0));
                    self.replace_view(t, items, rv, since);
                }
            }
            Event::Bookmark { .. } | Event::Other => {}
        }
    }

    fn persist_views(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            self.persist_view(&id);
        }
    }

    /// Writes one view's file; whether it is on disk.
    fn persist_view(&mut self, id: &ViewId) -> bool {
        let Some(v) = self.with_existing(id, |v| v.clone()) else {
            return false;
        };
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let at = id.rel_path().display().to_string();
        match self.store.write_file(&id.rel_path(), &bytes) {
            Ok(_) => {
                self.done(&at);
                true
            }
            Err(e) => {
                self.error("view write", &at, &e);
                false
            }
        }
    }
}

/// The key of a view's member.
fn member_key(component: &str, resource: &str, member: &(String, String)) -> ObjectKey {
    ObjectKey {
        component: component.to_string(),
        resource: resource.to_string(),
        namespace: member.0.clone(),
        name: member.1.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, ViewKey};
    use serde_json::json;
    use std::path::PathBuf;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("yurthub-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn target(shape: Shape, label: &str, field: &str) -> Target {
        Target {
            owner: Owner::Node,
            component: "kubelet".into(),
            resource: "pods.v1.core".into(),
            namespace: "default".into(),
            name: String::new(),
            view: ViewKey {
                namespace: "default".into(),
                label_selector: label.into(),
                field_selector: field.into(),
            },
            shape,
            metadata_only: false,
        }
    }

    /// kubelet's unselected pod list of namespace default.
    fn plain_list() -> Target {
        target(
            Shape::List {
                paged: false,
                continued: false,
            },
            "",
            "",
        )
    }

    /// A plain watch of the same list.
    fn plain_watch() -> Target {
        target(Shape::Watch { watch_list: false }, "", "")
    }

    fn pod(name: &str, rv: u64, app: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string(), "labels": {"app": app}},
               "spec": {"nodeName": "n1"}})
    }

    fn list(items: Vec<serde_json::Value>, rv: u64, cont: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string(), "continue": cont}, "items": items}))
        .unwrap()
    }

    fn event(kind: &str, mut obj: serde_json::Value) -> Vec<u8> {
        obj["kind"] = json!("Pod");
        obj["apiVersion"] = json!("v1");
        serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap()
    }

    fn stored_rv(c: &Cache, name: &str) -> Option<u64> {
        let key = ObjectKey {
            component: "kubelet".into(),
            resource: "pods.v1.core".into(),
            namespace: "default".into(),
            name: name.into(),
        };
        c.get(&key)
            .and_then(|b| Object::parse(&String::from_utf8_lossy(&b), None))
            .map(|o| o.rv)
    }

    #[test]
    fn a_late_older_list_never_overwrites_a_newer_watched_object() {
        let root = temp("late");
        let (c, _) = Cache::open(&root).unwrap();
        let (lst, w) = (plain_list(), plain_watch());
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 10, "a")], 12, ""),
        );
        let s = c.new_stream();
        c.watch_event(&w, s, event("MODIFIED", pod("p", 20, "a")));
        c.watch_event(&w, s, event("ADDED", pod("r", 21, "a")));
        // A list answered before those events but processed after them.
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 10, "a")], 15, ""),
        );
        c.flush();
        assert_eq!(stored_rv(&c, "p"), Some(20));
        assert_eq!(stored_rv(&c, "r"), Some(21), "newer than the list: kept");
        let v = c.view("kubelet", "pods.v1.core", &lst.view).unwrap();
        assert_eq!(v.members.len(), 3);
        // A DELETED event removes the file; a later list at a newer RV drops q.
        c.watch_event(&w, s, event("DELETED", pod("r", 22, "a")));
        c.response(&lst, list(vec![pod("p", 20, "a")], 30, ""));
        c.flush();
        assert_eq!(stored_rv(&c, "r"), None);
        assert_eq!(stored_rv(&c, "q"), None);
        assert!(root.join("_internal/views/kubelet/pods.v1.core").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_adopted_view_retires_at_the_first_list_and_takes_only_what_the_list_disproves() {
        let root = temp("adopted");
        let dir = root.join("kubelet/pods.v1.core/default");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, app) in [
            ("web", "web"),
            ("db", "db"),
            ("gone", "web"),
            ("dead", "web"),
        ] {
            let mut p = pod(name, 5, app);
            p["kind"] = json!("Pod");
            p["apiVersion"] = json!("v1");
            std::fs::write(dir.join(name), serde_json::to_vec(&p).unwrap()).unwrap();
        }
        // Upstream's mark: its CRD kind map.
        std::fs::create_dir_all(root.join("_internal/restmapper")).unwrap();
        assert!(super::super::adopt::adopt(&root).unwrap().is_some());
        let (c, _) = Cache::open(&root).unwrap();
        let whole = ViewKey::default();
        let adopted = c.view("kubelet", "pods.v1.core", &whole).unwrap();
        assert!(adopted.adopted && adopted.members.len() == 4, "{adopted:?}");
        // A client that watches on from its last resourceVersion, without a list: its
        // events keep the adopted view current, and its own view knows no list.
        let watch = target(Shape::Watch { watch_list: false }, "app=web", "");
        let s = c.new_stream();
        c.watch_event(&watch, s, event("MODIFIED", pod("web", 6, "web")));
        c.watch_event(&watch, s, event("DELETED", pod("dead", 7, "web")));
        c.flush();
        let adopted = c.view("kubelet", "pods.v1.core", &whole).unwrap();
        assert_eq!(adopted.members.len(), 3, "{adopted:?}");
        assert_eq!(stored_rv(&c, "dead"), None);
        assert!(
            c.view("kubelet", "pods.v1.core", &watch.view)
                .unwrap()
                .unlisted
        );
        // The cloud's list of app=web holds web only: gone (app=web as cached) is disproved,
        // db (another selector's) is unknown and stays.
        let web = target(
            Shape::List {
                paged: false,
                continued: false,
            },
            "app=web",
            "",
        );
        c.response(&web, list(vec![pod("web", 9, "web")], 9, ""));
        c.flush();
        assert!(c.view("kubelet", "pods.v1.core", &whole).is_none());
        assert!(!root
            .join(ViewId::new("kubelet", "pods.v1.core", &whole).rel_path())
            .exists());
        assert_eq!(stored_rv(&c, "web"), Some(9));
        assert_eq!(stored_rv(&c, "gone"), None);
        assert_eq!(stored_rv(&c, "db"), Some(5));
        let v = c.view("kubelet", "pods.v1.core", &web.view).unwrap();
        assert!(!v.adopted && !v.unlisted && v.members.len() == 1, "{v:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_list_from_before_a_deletion_does_not_bring_the_object_back() {
        let root = temp("tombstone");
        let (c, _) = Cache::open(&root).unwrap();
        let (lst, w) = (plain_list(), plain_watch());
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 11, "a")], 12, ""),
        );
        let s = c.new_stream();
        c.watch_event(&w, s, event("DELETED", pod("q", 20, "a")));
        // Answered at RV 15, before the deletion, applied after it.
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 11, "a")], 15, ""),
        );
        // And a stale event of another stream.
        c.watch_event(&w, c.new_stream(), event("MODIFIED", pod("q", 18, "a")));
        c.flush();
        assert_eq!(stored_rv(&c, "q"), None, "deleted at 20: stays deleted");
        let v = c.view("kubelet", "pods.v1.core", &lst.view).unwrap();
        assert_eq!(v.members.len(), 1);
        // Created again after the deletion: a new object, kept.
        c.watch_event(&w, s, event("ADDED", pod("q", 25, "a")));
        c.flush();
        assert_eq!(stored_rv(&c, "q"), Some(25));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A list in flight when its view was evicted describes what was dropped: only a list at
    /// least as new as everything the view held or was told of since makes it whole again.
    #[test]
    fn an_evicted_list_is_made_whole_only_by_a_list_as_new_as_what_was_dropped() {
        let root = temp("evicted");
        let (c, _) = Cache::open(&root).unwrap();
        let mut lst = plain_list();
        lst.component = "coredns".into();
        let mut w = plain_watch();
        w.component = "coredns".into();
        let id = ViewId::of(&lst);
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 11, "a")], 12, ""),
        );
        c.drop_view(id.clone());
        c.flush();
        let v = c.view("coredns", "pods.v1.core", &lst.view).unwrap();
        assert!(v.evicted && v.members.is_empty(), "{v:?}");
        assert_eq!(
            c.store()
                .list("coredns", "pods.v1.core", None)
                .unwrap()
                .len(),
            0
        );
        // The view on disk says so before the files went.
        let on_disk: ViewSnapshot =
            serde_json::from_slice(&std::fs::read(root.join(id.rel_path())).unwrap()).unwrap();
        assert!(on_disk.evicted);
        // Events while evicted gather nothing, but raise the bar.
        c.watch_event(&w, c.new_stream(), event("MODIFIED", pod("p", 20, "a")));
        c.response(
            &lst,
            list(vec![pod("p", 10, "a"), pod("q", 11, "a")], 15, ""),
        );
        c.flush();
        let v = c.view("coredns", "pods.v1.core", &lst.view).unwrap();
        assert!(v.evicted && v.members.is_empty(), "an older list: {v:?}");
        assert_eq!(
            c.store()
                .list("coredns", "pods.v1.core", None)
                .unwrap()
                .len(),
            0
        );
        c.response(
            &lst,
            list(vec![pod("p", 20, "a"), pod("q", 11, "a")], 25, ""),
        );
        c.flush();
        let v = c.view("coredns", "pods.v1.core", &lst.view).unwrap();
        assert!(!v.evicted && v.members.len() == 2, "a newer list: {v:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A flood of large watch events on a slow disk: what waits for the writer is bounded in
    /// bytes, the watch's view goes stale, and a single body larger than the bound is still
    /// taken when nothing else waits (a large list must stay cacheable).
    #[test]
    fn the_queue_is_bounded_in_bytes_and_a_dropped_event_makes_the_view_stale() {
        let root = temp("queue-bytes");
        let options = crate::cache::Options {
            queue_bytes: 4096,
            ..Default::default()
        };
        let (c, _) = Cache::open_with(&root, options).unwrap();
        let mut big = pod("big", 1, "x");
        big["data"] = json!("x".repeat(8192));
        c.response(&plain_list(), list(vec![big], 1, ""));
        c.flush();
        assert_eq!(
            stored_rv(&c, "big"),
            Some(1),
            "one body over the bound, alone"
        );
        let w = plain_watch();
        let s = c.new_stream();
        let taken = c.jobs_taken();
        let held = c.hold_writer();
        let mut fat = pod("p", 2, "x");
        fat["data"] = json!("x".repeat(1500));
        c.watch_event(&w, s, event("ADDED", fat.clone()));
        while c.jobs_taken() == taken {
            std::thread::yield_now();
        }
        // The writer holds the first (counted until it is applied); with it, one more of
        // ~1.6 KB fits in 4096 bytes, the next two do not.
        for rv in [3, 4, 5] {
            fat["metadata"]["resourceVersion"] = json!(rv.to_string());
            c.watch_event(&w, s, event("MODIFIED", fat.clone()));
        }
        assert_eq!(c.stats().overflows.load(Ordering::Relaxed), 2);
        assert!(c.is_stale("kubelet", "pods.v1.core", &w.view));
        drop(held);
        c.flush();
        assert_eq!(stored_rv(&c, "p"), Some(3));
        assert_eq!(
            c.shared_queued_bytes(),
            0,
            "every body taken is counted out"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A slow SD card during a start-up burst: the queue overflows while a paged list is on
    /// its way. The list's last page must not replace the view with what survived, and the
    /// objects on the dropped page must keep their files.
    #[test]
    fn a_page_set_with_a_dropped_page_removes_nothing_and_stays_stale() {
        let root = temp("overflow");
        let options = crate::cache::Options {
            queue_jobs: 2,
            ..Default::default()
        };
        let (c, _) = Cache::open_with(&root, options).unwrap();
        let whole = plain_list();
        let names = ["a", "b", "c", "d"];
        let all: Vec<_> = names.iter().map(|n| pod(n, 2, "x")).collect();
        c.response(&whole, list(all, 3, ""));
        c.flush();
        let page = |continued| {
            target(
                Shape::List {
                    paged: true,
                    continued,
                },
                "",
                "",
            )
        };
        let taken = c.jobs_taken();
        let held = c.hold_writer();
        c.response(&page(false), list(vec![pod("a", 2, "x")], 5, "t1"));
        // The writer has taken the first page and waits on the slow disk.
        while c.jobs_taken() == taken {
            std::thread::yield_now();
        }
        c.response(&page(true), list(vec![pod("b", 2, "x")], 5, "t2"));
        c.response(&page(true), list(vec![pod("c", 2, "x")], 5, "t3"));
        // The queue (two jobs) is full: this page is dropped.
        c.response(&page(true), list(vec![pod("d", 2, "x")], 5, "t4"));
        assert_eq!(c.stats().overflows.load(Ordering::Relaxed), 1);
        assert!(c.is_stale("kubelet", "pods.v1.core", &whole.view));
        drop(held);
        // The disk catches up: the queued pages are taken, then the last page arrives.
        while c.jobs_taken() < taken + 3 {
            std::thread::yield_now();
        }
        c.response(&page(true), list(vec![pod("e", 2, "x")], 5, ""));
        c.flush();
        assert_eq!(stored_rv(&c, "d"), Some(2), "d's page was dropped, not d");
        assert_eq!(c.stats().overflows.load(Ordering::Relaxed), 1);
        let v = c.view("kubelet", "pods.v1.core", &whole.view).unwrap();
        assert_eq!(
            v.members.len(),
            5,
            "a to e: the page set's objects were added"
        );
        assert!(c.is_stale("kubelet", "pods.v1.core", &whole.view));
        // A whole list queued after the drop is clean evidence: it replaces the view.
        c.response(
            &whole,
            list(vec![pod("a", 2, "x"), pod("b", 2, "x")], 6, ""),
        );
        c.flush();
        assert!(!c.is_stale("kubelet", "pods.v1.core", &whole.view));
        assert_eq!(stored_rv(&c, "d"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn selectors_keep_separate_views_and_an_empty_name_list_drops_only_that_name() {
        let root = temp("views");
        let (c, _) = Cache::open(&root).unwrap();
        let plain = Shape::List {
            paged: false,
            continued: false,
        };
        let web = target(plain, "app=web", "");
        let db = target(plain, "app=db", "");
        c.response(
            &web,
            list(vec![pod("w1", 5, "web"), pod("w2", 5, "web")], 6, ""),
        );
        c.response(&db, list(vec![pod("d1", 5, "db")], 6, ""));
        let by_name = target(plain, "", "metadata.name=w1");
        c.response(&by_name, list(vec![pod("w1", 5, "web")], 7, ""));
        c.response(&by_name, list(vec![], 9, ""));
        c.flush();
        assert_eq!(
            c.view("kubelet", "pods.v1.core", &web.view)
                .unwrap()
                .members
                .len(),
            2
        );
        assert_eq!(
            c.view("kubelet", "pods.v1.core", &db.view)
                .unwrap()
                .members
                .len(),
            1
        );
        assert!(c
            .view("kubelet", "pods.v1.core", &by_name.view)
            .unwrap()
            .members
            .is_empty());
        assert_eq!(
            stored_rv(&c, "w1"),
            Some(5),
            "still referenced by the app=web view"
        );
        assert_eq!(stored_rv(&c, "d1"), Some(5));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn pages_replace_the_view_only_when_the_last_one_arrives_and_views_survive_restart() {
        let root = temp("pages");
        {
            let (c, _) = Cache::open(&root).unwrap();
            let first = target(
                Shape::List {
                    paged: true,
                    continued: false,
                },
                "",
                "",
            );
            let next = target(
                Shape::List {
                    paged: true,
                    continued: true,
                },
                "",
                "",
            );
            c.response(
                &first,
                list(vec![pod("a", 1, "x"), pod("b", 1, "x")], 3, "tok"),
            );
            c.flush();
            assert!(c.view("kubelet", "pods.v1.core", &first.view).is_none());
            c.response(&next, list(vec![pod("c", 2, "x")], 3, ""));
            c.flush();
            assert_eq!(
                c.view("kubelet", "pods.v1.core", &first.view)
                    .unwrap()
                    .members
                    .len(),
                3
            );
        }
        let (c, _) = Cache::open(&root).unwrap();
        let v = c
            .view(
                "kubelet",
                "pods.v1.core",
                &ViewKey {
                    namespace: "default".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!((v.members.len(), v.rv), (3, 3));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn watch_list_initial_events_replace_the_view_at_the_end_bookmark() {
        let root = temp("watchlist");
        let (c, _) = Cache::open(&root).unwrap();
        let plain = target(
            Shape::List {
                paged: false,
                continued: false,
            },
            "",
            "",
        );
        c.response(&plain, list(vec![pod("old", 1, "x")], 2, ""));
        let wl = target(Shape::Watch { watch_list: true }, "", "");
        let s = c.new_stream();
        c.watch_event(&wl, s, event("ADDED", pod("new", 5, "x")));
        c.flush();
        assert_eq!(
            stored_rv(&c, "new"),
            None,
            "initial events wait for the bookmark"
        );
        let bookmark = br#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"6","annotations":{"k8s.io/initial-events-end":"true"}}}}"#;
        c.watch_event(&wl, s, bookmark.to_vec());
        c.watch_event(&wl, s, event("ADDED", pod("later", 7, "x")));
        c.flush();
        assert_eq!(stored_rv(&c, "new"), Some(5));
        assert_eq!(stored_rv(&c, "later"), Some(7));
        assert_eq!(stored_rv(&c, "old"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

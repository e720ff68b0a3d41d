//! The cache's handle: what the proxy, the offline answers and the collector hold. Writes are
//! queued to the writer thread ([`super::writer`]) without waiting; reads go to the store.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::owners::{self, Claim, Owner, Owners};
use super::seal::Sealer;
use super::store::{ObjectKey, Recovery, Store, StoreError};
use super::views::{self, ByType, ViewId, ViewSnapshot};
use super::writer::Writer;
use super::{Shape, Target, ViewKey};

/// How many jobs may wait for the writer; past that the tee drops and marks the view stale
/// rather than slow the client down.
const QUEUE_JOBS: usize = 4096;
/// How many bytes of bodies may wait for the writer (one body larger than this is taken
/// when nothing else waits, so a list up to `--max-cached-list-bytes` is still cached):
/// a flood of large watch events must not pile up in memory.
const QUEUE_BYTES: u64 = 8 << 20;

/// Answers not cached because another identity owns the component, logged once a minute.
static NOT_OWNER: crate::log_repeats::Repeats =
    crate::log_repeats::Repeats::new(std::time::Duration::from_secs(60));

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Objects written to disk.
    pub writes: AtomicU64,
    /// Failed writes or deletes (a full disk among them).
    pub write_errors: AtomicU64,
    /// Jobs dropped because the queue was full.
    pub overflows: AtomicU64,
    /// Files quarantined, at start-up and since.
    pub quarantined: AtomicU64,
    /// Jobs applied.
    pub jobs: AtomicU64,
    /// Objects evicted to keep the cache within its byte budget.
    pub evictions: AtomicU64,
    /// List views dropped whole to keep the cache within its byte budget.
    pub evicted_lists: AtomicU64,
    /// Objects removed by garbage collection (pods and Events the cloud no longer has).
    pub collected: AtomicU64,
    /// List views dropped, least recently used first, to keep within the caps on views.
    pub views_dropped: AtomicU64,
    /// What the cache could not write or delete, by object (its path in the cache), with
    /// why; an entry goes when the same object is written or deleted. The node's
    /// `Autonomy` condition reports them.
    pub failing: Mutex<std::collections::BTreeMap<String, String>>,
}

impl CacheStats {
    /// The failures, locked (a poisoned lock still holds a usable map).
    pub(super) fn failures(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the cache is kept.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Seals cached Secrets at rest.
    pub sealer: Option<Arc<Sealer>>,
    /// The byte budget of the cache directory; 0 for none.
    pub max_bytes: u64,
    /// The largest response body (a list, mostly) the cache takes; larger ones are only
    /// streamed through, so the hub's memory never grows with a response. 0: 64 MiB.
    pub max_body_bytes: usize,
    /// How many jobs may wait for the writer. 0: 4096.
    pub queue_jobs: usize,
    /// How many bytes of bodies may wait for the writer. 0: 8 MiB.
    pub queue_bytes: u64,
}

/// [`Options::max_body_bytes`] when unset.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What the handle and the writer thread share.
pub(super) struct Shared {
    pub(super) max_body_bytes: usize,
    pub(super) writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) views: Mutex<ByType>,
    /// Views a dropped job left incomplete, with the sequence number of the last drop: a
    /// list replaces such a view (and clears the mark) only when all its evidence was
    /// queued after that drop.
    pub(super) stale: Mutex<HashMap<ViewId, u64>>,
    /// Watch streams whose end could not be queued.
    pub(super) ended: Mutex<HashSet<u64>>,
    /// Bytes of the bodies queued and not yet applied.
    pub(super) queued_bytes: AtomicU64,
    max_queue_bytes: u64,
    pub(super) stats: CacheStats,
    /// Whose each component's cache is.
    pub(super) owners: Owners,
    /// Components the node took over whose [`Job::DropComponent`] could not be queued.
    pub(super) taken_over: Mutex<HashSet<String>>,
}

impl Job {
    /// The body bytes it holds (what the queue's byte bound counts).
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Job::Response { body, .. } | Job::Put { body, .. } | Job::Raw { body, .. } => {
                body.len() as u64
            }
            Job::Event { line, .. } => line.len() as u64,
            _ => 0,
        }
    }
}

/// One mutation for the writer thread, applied in arrival order.
pub(super) enum Job {
    Response {
        target: Target,
        body: Vec<u8>,
        /// Its place in the queue's order (for [`Shared::stale`]).
        seq: u64,
    },
    Event {
        target: Target,
        stream: u64,
        line: Vec<u8>,
        /// Its place in the queue's order.
        seq: u64,
    },
    EndStream {
        stream: u64,
    },
    Put {
        component: String,
        resource: String,
        body: Vec<u8>,
    },
    Raw {
        name: String,
        body: Vec<u8>,
    },
    Forget(ObjectKey, Option<u64>),
    /// Remove everything cached for this component (the node took it over).
    DropComponent(String),
    /// A list answer too large to cache was seen for this view.
    TooLarge(Target),
    /// Drop this view as an eviction would (tests).
    #[cfg(test)]
    DropView(ViewId),
    Flush(SyncSender<()>),
    Stop,
}

/// The cache: a handle to the writer thread and the read side.
#[derive(Clone)]
pub struct Cache {
    store: Arc<Store>,
    shared: Arc<Shared>,
    tx: SyncSender<Job>,
    next_stream: Arc<AtomicU64>,
    next_seq: Arc<AtomicU64>,
}

impl Cache {
    /// Opens the cache at `root` (recovering from a crash) and starts the writer thread.
    pub fn open(root: &Path) -> Result<(Cache, Recovery), StoreError> {
        Cache::open_with(root, Options::default())
    }

    /// [`Cache::open`] with Secrets sealed and a byte budget.
    pub fn open_with(root: &Path, options: Options) -> Result<(Cache, Recovery), StoreError> {
        // Before the store's own recovery: upstream's backups of interrupted writes are
        // objects to it, and would be kept under names no object has.
        let adoption = super::adopt::adopt(root)?;
        let (store, mut recovery) = Store::open_sealed(root, options.sealer)?;
        recovery.quarantined += adoption.map_or(0, |a| a.quarantined);
        let store = Arc::new(store);
        let shared = Arc::new(Shared {
            max_body_bytes: match options.max_body_bytes {
                0 => DEFAULT_MAX_BODY_BYTES,
                n => n,
            },
            writer: Mutex::new(None),
            views: Mutex::new(views::load(root)),
            stale: Mutex::default(),
            ended: Mutex::default(),
            queued_bytes: AtomicU64::new(0),
            max_queue_bytes: match options.queue_bytes {
                0 => QUEUE_BYTES,
                n => n,
            },
            stats: CacheStats::default(),
            owners: Owners::open(root),
            taken_over: Mutex::default(),
        });
        shared
            .stats
            .quarantined
            .store(recovery.quarantined as u64, Ordering::Relaxed);
        let (tx, rx) = sync_channel(match options.queue_jobs {
            0 => QUEUE_JOBS,
            n => n,
        });
        let writer = Writer::new(store.clone(), shared.clone(), options.max_bytes);
        let handle = std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|error| StoreError::Io {
                path: root.to_path_buf(),
                error,
            })?;
        *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        // Removals recorded but not applied before the hub stopped.
        shared
            .taken_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(shared.owners.dropping());
        Ok((
            Cache {
                store,
                shared,
                tx,
                next_stream: Arc::new(AtomicU64::new(1)),
                next_seq: Arc::new(AtomicU64::new(1)),
            },
            recovery,
        ))
    }

    /// The next place in the queue's order.
    fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn submit(&self, job: Job, stale: Option<&Target>) {
        let bytes = job.bytes();
        let before = self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let result = if before > 0 && before + bytes > self.shared.max_queue_bytes {
            Err(TrySendError::Full(job))
        } else {
            self.tx.try_send(job)
        };
        if result.is_err() {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        match result {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.shared.stats.overflows.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = stale {
                    // Jobs that carry no place are dropped now, after all that is queued.
                    let seq = match job {
                        Job::Response { seq, .. } | Job::Event { seq, .. } => seq,
                        _ => self.seq(),
                    };
                    log::warn!(
                        "cache queue full (jobs or bytes): {} {} view marked stale until the next list",
                        t.component,
                        t.resource
                    );
                    let mut stale = self.shared.stale.lock().unwrap_or_else(|e| e.into_inner());
                    let last = stale.entry(ViewId::of(t)).or_insert(seq);
                    *last = (*last).max(seq);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                log::error!("cache writer is gone; response not cached");
            }
        }
    }

    /// Queues a complete get/create/update/patch/list response body (uncompressed).
    pub fn response(&self, target: &Target, body: Vec<u8>) {
        if !self
            .shared
            .owners
            .may_cache(&target.component, &target.owner)
        {
            return;
        }
        // kubelet reads its pods and node again and again: an answer byte for byte like the
        // stored one is dropped here, before it wakes the writer thread (not while the stored
        // one is to be removed: it was cached for another identity).
        if target.shape == Shape::Object
            && !self.shared.owners.is_dropping(&target.component)
            && !target.name.is_empty()
            && self
                .store
                .holds(&target.object_key(&target.name), body.trim_ascii())
        {
            return;
        }
        self.submit(
            Job::Response {
                target: target.clone(),
                body,
                seq: self.seq(),
            },
            Some(target),
        );
    }

    /// A new watch stream's id, for [`Cache::watch_event`] and [`Cache::end_watch`].
    pub fn new_stream(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues one watch event line.
    pub fn watch_event(&self, target: &Target, stream: u64, line: Vec<u8>) {
        // A watch of an identity that lost the component must not fill the queue (nor mark
        // the new owner's view stale when it overflows).
        if !self
            .shared
            .owners
            .may_cache(&target.component, &target.owner)
        {
            return;
        }
        self.submit(
            Job::Event {
                target: target.clone(),
                stream,
                line,
                seq: self.seq(),
            },
            Some(target),
        );
    }

    /// Tells the writer a watch stream ended (even when the queue is full).
    pub fn end_watch(&self, stream: u64) {
        if self.tx.try_send(Job::EndStream { stream }).is_err() {
            self.shared
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(stream);
        }
    }

    /// Whether `owner`'s answers for `component` are to be cached ([`super::owners`]): yes
    /// for the component's owner, or the first to claim it, or the node, which takes it over
    /// (what another identity cached there is removed first).
    pub fn claim(&self, component: &str, owner: &Owner) -> bool {
        let agent = owners::agent(component);
        let why_not = match self.shared.owners.claim(agent, owner) {
            Claim::Holds => return true,
            Claim::Claimed { drop } => {
                log::info!("cache: {agent} is cached for {owner}, and offline read by it only");
                if drop {
                    self.drop_component(agent);
                }
                return true;
            }
            Claim::TakenOver(before) => {
                log::warn!(
                    "cache: {agent} was cached for {before}; the node's own requests take it over: what was cached for {before} is removed"
                );
                self.drop_component(agent);
                return true;
            }
            Claim::HeldBy(holder) => format!("it is cached for {holder}"),
            Claim::Reserved => {
                "a built-in agent's cache is only the node's or a system service account's"
                    .to_string()
            }
            Claim::NotRecorded => "its owner could not be recorded".to_string(),
        };
        // Keyed by component: a client with ever new tokens must not get a line each.
        if let Some(more) = NOT_OWNER.allow(agent) {
            log::info!(
                "cache: {agent}: answers for {owner} are relayed, not cached: {why_not}{more}"
            );
        }
        false
    }

    /// Whether `component` is `owner`'s (writes are cached only for the owner: only a read
    /// claims a component).
    pub fn owns(&self, component: &str, owner: &Owner) -> bool {
        self.shared.owners.owner(component).as_ref() == Some(owner)
    }

    /// Queues the removal of what `agent` cached (recorded as pending in the owners' record
    /// already), never lost to a full queue: the writer then finds it in `taken_over`.
    fn drop_component(&self, agent: &str) {
        if self
            .tx
            .try_send(Job::DropComponent(agent.to_string()))
            .is_err()
        {
            self.shared
                .taken_over
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(agent.to_string());
        }
    }

    /// Whether `reader` may be answered from `component`'s cache ([`super::owners`]).
    pub fn may_read(&self, component: &str, reader: &Owner) -> bool {
        self.shared.owners.may_read(component, reader)
    }

    /// Stores an object under `component`/`resource` at its own namespace and name (the
    /// renewed Lease as kubelet's, an offline-created Event): the node's, always.
    pub fn put(&self, component: &str, resource: &str, body: Vec<u8>) {
        if !self.claim(component, &Owner::Node) {
            return;
        }
        self.submit(
            Job::Put {
                component: component.into(),
                resource: resource.into(),
                body,
            },
            None,
        );
    }

    /// Stores a non-resource response (`version`, `_apis_discovery.k8s.io_v1`, ...).
    pub fn put_raw(&self, name: &str, body: Vec<u8>) {
        self.submit(
            Job::Raw {
                name: name.into(),
                body,
            },
            None,
        );
    }

    /// Records that the cloud's answer to a list was too large to cache: offline that list
    /// is refused, never answered with what an older, smaller answer held.
    pub fn list_too_large(&self, target: &Target) {
        self.submit(Job::TooLarge(target.clone()), Some(target));
    }

    /// Removes an object from the cache and from every list view holding it (garbage
    /// collection: the cloud no longer has it), unless the stored copy is newer than
    /// resourceVersion `up_to` (re-created since).
    pub fn forget(&self, key: ObjectKey, up_to: u64) {
        self.submit(Job::Forget(key, Some(up_to)), None);
    }

    /// Waits until every job queued before this call has been applied and persisted.
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Applies everything queued, persists the views and stops the writer thread; later jobs
    /// are dropped. Blocks until the thread has ended, so no write is cut short by the exit.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(handle) = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = handle.join();
        }
    }

    /// The largest response body the cache takes (`--max-cached-list-bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.shared.max_body_bytes
    }

    /// Why the cache fails now, if it does: how many objects it could not write or delete
    /// (and has not since), and the errors (no names: the Node's status shows this).
    pub fn failing(&self) -> Option<String> {
        let failing = self.stats().failures();
        if failing.is_empty() {
            return None;
        }
        let mut errors: Vec<&str> = failing.values().map(String::as_str).collect();
        errors.sort_unstable();
        errors.dedup();
        errors.truncate(3);
        let n = failing.len();
        Some(format!(
            "{n} cached object{} could not be written or deleted: {}",
            if n == 1 { "" } else { "s" },
            errors.join("; ")
        ))
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.shared.stats
    }

    /// The store (blocking reads; use from `smol::unblock`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A stored object (blocking).
    pub fn get(&self, key: &ObjectKey) -> Option<Vec<u8>> {
        match self.store.read(key) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("cache read: {e}");
                None
            }
        }
    }

    /// A stored non-resource response (blocking).
    pub fn get_raw(&self, name: &str) -> Option<Vec<u8>> {
        self.store.read_file(Path::new(name)).ok().flatten()
    }

    /// The membership of a view, if that list was ever seen.
    pub fn view(&self, component: &str, resource: &str, key: &ViewKey) -> Option<ViewSnapshot> {
        let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        let id = ViewId::new(component, resource, key);
        views
            .get(&(id.component, id.resource))
            .and_then(|m| m.get(&id.id))
            .cloned()
    }

    /// Whether a list of `resource` with `key` was ever cached for `component` (what
    /// [`Cache::view`] tells, without copying the view).
    pub fn has_view(&self, component: &str, resource: &str, key: &ViewKey) -> bool {
        let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        let id = ViewId::new(component, resource, key);
        views
            .get(&(id.component, id.resource))
            .is_some_and(|m| m.contains_key(&id.id))
    }

    /// How many list views the cache keeps.
    pub fn view_count(&self) -> usize {
        let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        views.values().map(|m| m.len()).sum()
    }

    /// Whether some list of `component`'s `resource` is not known (too large, or evicted):
    /// then the cached objects of that type are not a basis for answering other lists.
    pub fn any_withheld(&self, component: &str, resource: &str) -> bool {
        let views = self.shared.views.lock().unwrap_or_else(|e| e.into_inner());
        views
            .get(&(component.to_string(), resource.to_string()))
            .is_some_and(|m| m.values().any(ViewSnapshot::withheld))
    }

    /// Stops the writer before its next job while the guard lives (tests: a slow disk).
    #[cfg(test)]
    pub(super) fn hold_writer(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.shared.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a view whole, as an eviction under the byte budget does.
    #[cfg(test)]
    pub(super) fn drop_view(&self, id: ViewId) {
        self.submit(Job::DropView(id), None);
    }

    /// Bytes of bodies waiting for the writer.
    #[cfg(test)]
    pub(super) fn shared_queued_bytes(&self) -> u64 {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }

    /// Jobs the writer has taken so far.
    #[cfg(test)]
    pub(super) fn jobs_taken(&self) -> u64 {
        self.shared.stats.jobs.load(Ordering::Relaxed)
    }

    /// Whether a view was marked stale by a queue overflow.
    pub fn is_stale(&self, component: &str, resource: &str, key: &ViewKey) -> bool {
        self.shared
            .stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&ViewId::new(component, resource, key))
    }
}

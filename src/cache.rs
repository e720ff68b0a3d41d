//! The node's memory of the cloud: which responses are kept ([`target()`]), the files they
//! live in ([`store`], written with [`crate::atomic_file`]), the list views that say which
//! objects a list held ([`views`]), the one ordered writer that applies every change, and the
//! handle the rest of the hub holds ([`Cache`]).
//!
//! The proxy tees responses into the cache without ever waiting for it: jobs go through a
//! bounded queue to a single writer thread, so a list replacement and a watch event can never
//! interleave wrongly and the client stream never slows down. On overflow the affected list
//! view is marked stale and a counter bumped.

pub mod adopt;
mod evict;
mod handle;
pub(crate) mod object;
pub mod owners;
pub mod seal;
pub mod store;
mod target;
pub mod tokens;
pub mod views;
mod writer;

pub use handle::{Cache, CacheStats, Options};
pub use object::Object;
pub use store::{ObjectKey, Store, StoreError};
pub use target::{
    cached_path_file, resource_dir, target, wants_metadata, Agents, NotCached, Shape, Target,
    ViewKey, BUILTIN_AGENTS, METADATA_TREE,
};
pub use views::{ViewId, ViewSnapshot};

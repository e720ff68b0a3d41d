//! Shared list/watch of pool-scope resources (issue 18; reference §10.1): one in-memory watch
//! cache per resource (Services, EndpointSlices), filled by one list and watch upstream, from
//! which every local client's lists and watches are answered with kube-apiserver's semantics,
//! instead of each component opening its own cluster-wide watch over the WAN.
//!
//! [`watch_cache`] is the store: objects at a resourceVersion, a window of recent events,
//! lists (any version, an exact one inside the window, pages with continue tokens, label and
//! field selectors) and the start of watches (from any version, from one inside the window,
//! or 410 Gone outside it).

pub mod watch_cache;

pub use watch_cache::{CacheError, EventType, ListPage, ListQuery, WatchCache};

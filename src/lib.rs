//! yurthub: the node-local agent between an edge node's Kubernetes components and the cloud
//! kube-apiserver.
//!
//! A request enters [`server`], is classified ([`kube::RequestInfo`]), routed ([`proxy`]) to the
//! cloud ([`upstream`]), and streamed back. [`config`] holds the flags; [`http`] is the wire; [`certs`] keeps the
//! hub's own identity.

pub mod admin;
pub mod app;
pub mod atomic_file;
pub mod cache;
pub mod certs;
pub mod filter;
/// Not API: the fuzz targets' entry points, for `fuzz/` (feature `fuzzing`) and unit tests.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod gc;
pub mod health;
pub mod http;
pub mod informer;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod network;
pub mod notify;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod upstream;

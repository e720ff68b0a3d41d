//! yurthub: the node-local agent between an edge node's Kubernetes components (kubelet,
//! kube-proxy, coredns, flannel, pods) and the cloud kube-apiserver, which keeps the node's
//! workloads running while the link to the cloud is down.
//!
//! ```
//! use testapi::{client, pod, wait_ready, Cluster, NODE};
//! use yurthub::app::{self, config::{Config, Parsed}};
//!
//! // A stand-in cloud (the test apiserver) and a joined node's files.
//! let cloud = Cluster::new();
//! cloud.api.create("/api/v1/namespaces/default/pods", pod("web", NODE));
//!
//! // The hub, from the binary's own flags, served by an executor thread of its own.
//! let Ok(Parsed::Run(config)) = Config::from_args(cloud.hub_args(&[&cloud.api])) else {
//!     panic!("flags")
//! };
//! let hub = app::start(&config).unwrap();
//! yurthub::runtime::spawn_thread();
//! wait_ready(hub.admin_addr);
//!
//! // kubelet's GET goes to the cloud, and a copy of the answer to the node's disk, from
//! // where it is answered while the cloud is away.
//! let kubelet = "kubelet/v1.32.0 (linux/arm64) kubernetes/70d3cc9";
//! let answer = client::get(hub.proxy_addr, "/api/v1/namespaces/default/pods/web", kubelet);
//! assert_eq!(answer.status, 200);
//! yurthub::runtime::block_on(hub.flush());
//! assert!(cloud.cache.path().join("kubelet/pods.v1.core/default/web").is_file());
//! ```
//!
//! # The request's path, room by room
//!
//! Below [`app`], which only wires, the modules read in the order a request meets them:
//!
//! - [`server`] accepts connections (plain and TLS) and reads request heads; it is the one place
//!   a refusal ([`server::Refusal`]) becomes a `metav1.Status`.
//! - [`kube`] classifies the request ([`kube::RequestInfo`]: verb, resource, namespace, name,
//!   selectors) and names its component ([`kube::component`]).
//! - [`proxy`] decides where it goes ([`proxy::route`]: refused, answered locally, tunnelled,
//!   or sent upstream), then streams the answer back.
//! - [`upstream`] is the cloud side: servers, load balancing, TLS, content negotiation; and
//!   [`health`] says which servers are reachable.
//! - [`local`] answers from the cache while the cloud is away (and kubelet's lease always).
//! - [`filter`] rewrites what some components see, so that pods talk to the hub.
//! - [`cache`] keeps the answers on disk (one file per object, views for lists); [`gc`] and
//!   the cache's budget keep it small; [`atomic_file`] is how every durable file is written.
//! - [`certs`] keeps the hub's own identity (bootstrap, CSRs, renewal); [`informer`] is the
//!   hub's own list-and-watch, through its own proxy; [`multiplexer`] keeps pool-scope
//!   resources in memory to answer many clients' lists and watches from one; [`admin`] serves health, readiness,
//!   metrics ([`metrics`]) and the token endpoint; [`network`] makes the dummy interface.
//! - [`http`] is the wire (heads, bodies, chunking, gzip); [`runtime`] the one executor;
//!   [`notify`] talks to systemd; [`log_repeats`] keeps a failure that repeats to a line a
//!   minute.
//!
//! `tests/layers.rs` keeps this shape: each module imports only from the layers below it.

#![warn(missing_docs)]

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
pub mod log_repeats;
pub mod metrics;
pub mod multiplexer;
pub mod network;
pub mod notify;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod upstream;

//! Where a request goes, decided from what is known before any of its body is read: a pure
//! function of a few facts, so that the whole decision reads, and is tested, as one table.
//!
//! ```
//! use yurthub::proxy::route::{route, Facts, Route};
//! // kube-proxy on the node, the cloud down: its list is answered from the cache.
//! let facts = Facts {
//!     node_identity_allowed: true,
//!     edge: true,
//!     ..Facts::default()
//! };
//! assert!(matches!(route(&facts, || Ok(())), Route::Local));
//! ```

use crate::server::{NotReady, Refusal};

/// What the route depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The request carries a bearer token of its own (else it would travel with the node's
    /// identity).
    pub bearer: bool,
    /// Its connection may use the node's identity (plain HTTP from the node itself).
    pub node_identity_allowed: bool,
    /// It comes from the hub itself (its informers), which readiness never holds back.
    pub from_hub: bool,
    /// A non-resource path the cache keeps (`/version`, …), served even before readiness.
    pub cached_path: bool,
    /// It asks to switch protocols (exec, attach, port-forward).
    pub upgrade: bool,
    /// The hub runs at the edge: with a cache and offline answers.
    pub edge: bool,
    /// It is kubelet's own Lease call, which the hub answers itself.
    pub kubelet_lease: bool,
    /// At least one cloud server is healthy.
    pub cloud_healthy: bool,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route {
    /// Answered with a refusal, its body unread.
    Refuse(Refusal),
    /// Answered by the hub: from the cache while the cloud is away, and kubelet's lease.
    Local,
    /// Switched to a byte tunnel to the cloud.
    Tunnel,
    /// Sent to the cloud and its answer streamed back (filtered, teed into the cache).
    Upstream,
}

/// The route of a request; `ready` is asked only of requests that readiness holds back.
pub fn route(facts: &Facts, ready: impl FnOnce() -> Result<(), NotReady>) -> Route {
    if !facts.bearer && !facts.node_identity_allowed {
        // Pods reach this listener: they must present their own service-account token
        // instead of borrowing the node's identity (reference §13.2 item 24).
        return Route::Refuse(Refusal::Unauthorized);
    }
    if !facts.cached_path && !facts.from_hub {
        if let Err(why) = ready() {
            return Route::Refuse(Refusal::NotReady(why));
        }
    }
    if facts.upgrade {
        return Route::Tunnel;
    }
    // kubelet's own lease calls never leave the node: the hub renews the real lease
    // (reference §2.4, §5).
    if facts.edge && (facts.kubelet_lease || !facts.cloud_healthy) {
        return Route::Local;
    }
    Route::Upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node component on the plain port, the hub ready, the cloud up.
    fn node() -> Facts {
        Facts {
            node_identity_allowed: true,
            edge: true,
            cloud_healthy: true,
            ..Facts::default()
        }
    }

    fn name(r: &Route) -> String {
        match r {
            Route::Refuse(why) => format!("refuse {}", why.code()),
            Route::Local => "local".into(),
            Route::Tunnel => "tunnel".into(),
            Route::Upstream => "upstream".into(),
        }
    }

    #[test]
    fn the_routing_table() {
        let not_ready = || Err(NotReady::HubConfig);
        let ready = || Ok(());
        type Case = (&'static str, Facts, bool, &'static str);
        let cases: &[Case] = &[
            ("node component, cloud up", node(), true, "upstream"),
            (
                "node component, cloud down",
                Facts {
                    cloud_healthy: false,
                    ..node()
                },
                true,
                "local",
            ),
            (
                "kubelet's lease, cloud up",
                Facts {
                    kubelet_lease: true,
                    ..node()
                },
                true,
                "local",
            ),
            (
                "cloud mode (no cache), cloud down",
                Facts {
                    edge: false,
                    cloud_healthy: false,
                    ..node()
                },
                true,
                "upstream",
            ),
            (
                "a pod without a token on the TLS port",
                Facts {
                    node_identity_allowed: false,
                    ..node()
                },
                true,
                "refuse 401",
            ),
            (
                "a pod with its token on the TLS port",
                Facts {
                    node_identity_allowed: false,
                    bearer: true,
                    ..node()
                },
                true,
                "upstream",
            ),
            (
                "401 comes before readiness",
                Facts {
                    node_identity_allowed: false,
                    ..node()
                },
                false,
                "refuse 401",
            ),
            ("not ready", node(), false, "refuse 503"),
            (
                "not ready, the hub's own informer",
                Facts {
                    from_hub: true,
                    ..node()
                },
                false,
                "upstream",
            ),
            (
                "not ready, /version",
                Facts {
                    cached_path: true,
                    ..node()
                },
                false,
                "upstream",
            ),
            (
                "exec",
                Facts {
                    upgrade: true,
                    ..node()
                },
                true,
                "tunnel",
            ),
            (
                "exec with the cloud down still tunnels (and fails there)",
                Facts {
                    upgrade: true,
                    cloud_healthy: false,
                    ..node()
                },
                true,
                "tunnel",
            ),
            (
                "exec when not ready",
                Facts {
                    upgrade: true,
                    ..node()
                },
                false,
                "refuse 503",
            ),
        ];
        for (what, facts, is_ready, want) in cases {
            let got = if *is_ready {
                route(facts, ready)
            } else {
                route(facts, not_ready)
            };
            assert_eq!(name(&got), *want, "{what}");
        }
    }

    #[test]
    fn readiness_is_asked_only_when_it_matters() {
        let mut asked = false;
        let facts = Facts {
            from_hub: true,
            ..node()
        };
        route(&facts, || {
            asked = true;
            Ok(())
        });
        assert!(!asked);
        route(&node(), || {
            asked = true;
            Ok(())
        });
        assert!(asked);
    }
}

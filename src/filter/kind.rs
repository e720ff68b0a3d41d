//! The filters by name: what each one serves by default, and what it looks for.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One of the response filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterKind {
    /// `masterservice`: `default/kubernetes` points at the hub (kubelet's services).
    MasterService,
    /// `inclusterconfig`: kube-proxy's kubeconfig line commented out (kubelet's configmaps).
    InClusterConfig,
    /// `serviceenvupdater`: explicit apiserver addresses in pods' env lead to the hub.
    ServiceEnvUpdater,
    /// `forwardkubesvctraffic`: `default/kubernetes` endpoints lead to the hub (kube-proxy).
    ForwardKubeSvcTraffic,
    /// `servicetopology`: endpoints limited to the node's pool or the node itself.
    ServiceTopology,
    /// `discardcloudservice`: cloud-only services hidden from kube-proxy.
    DiscardCloudService,
    /// `nodeportisolation`: NodePort services only in the pools they name.
    NodePortIsolation,
}

/// A name that is no filter's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFilter(pub String);

impl fmt::Display for UnknownFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown filter {:?} (known: ", self.0)?;
        for (i, k) in FilterKind::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", k.name())?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for UnknownFilter {}

impl FromStr for FilterKind {
    type Err = UnknownFilter;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| UnknownFilter(name.to_string()))
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FilterKind {
    /// Every filter, in the order they run (upstream's order is a set's, i.e. random: A6).
    pub const ALL: [FilterKind; 7] = [
        Self::MasterService,
        Self::InClusterConfig,
        Self::ServiceEnvUpdater,
        Self::ForwardKubeSvcTraffic,
        Self::ServiceTopology,
        Self::DiscardCloudService,
        Self::NodePortIsolation,
    ];

    /// Upstream's name, as in `--disabled-resource-filters` and yurt-hub-cfg's keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::MasterService => "masterservice",
            Self::InClusterConfig => "inclusterconfig",
            Self::ServiceEnvUpdater => "serviceenvupdater",
            Self::ForwardKubeSvcTraffic => "forwardkubesvctraffic",
            Self::ServiceTopology => "servicetopology",
            Self::DiscardCloudService => "discardcloudservice",
            Self::NodePortIsolation => "nodeportisolation",
        }
    }

    /// The components, resource and verbs it serves by default (reference §6.1).
    pub(super) fn defaults(
        self,
    ) -> (
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
    ) {
        const LIST_WATCH: &[&str] = &["list", "watch"];
        match self {
            Self::MasterService => (&["kubelet"], "services", LIST_WATCH),
            Self::InClusterConfig => (&["kubelet"], "configmaps", &["get", "list", "watch"]),
            Self::ServiceEnvUpdater => (&["kubelet"], "pods", &["list", "watch", "get", "patch"]),
            Self::ForwardKubeSvcTraffic => (&["kube-proxy"], "endpointslices", LIST_WATCH),
            Self::ServiceTopology => (
                &["kube-proxy", "coredns", "nginx-ingress-controller"],
                "endpointslices",
                LIST_WATCH,
            ),
            Self::DiscardCloudService => (&["kube-proxy"], "services", LIST_WATCH),
            Self::NodePortIsolation => (&["kube-proxy"], "services", LIST_WATCH),
        }
    }

    /// Strings one of which must appear in an object's JSON for the filter to change or drop
    /// it (kube-apiserver writes them unescaped); `None` when it may act on any object. Most
    /// objects hold none of them and then pass as they came, never parsed.
    pub(super) fn needles(self) -> Option<&'static [&'static str]> {
        match self {
            // Both act on `default/kubernetes` only.
            Self::MasterService | Self::ForwardKubeSvcTraffic => Some(&["\"kubernetes\""]),
            Self::InClusterConfig => Some(&["\"kube-proxy\""]),
            Self::ServiceEnvUpdater => Some(&["KUBERNETES_SERVICE_"]),
            Self::DiscardCloudService => {
                Some(&["x-tunnel-server-internal-svc", "svc.openyurt.io/discard"])
            }
            Self::NodePortIsolation => Some(&["nodeport.openyurt.io/listen"]),
            Self::ServiceTopology => None,
        }
    }

    /// Whether it sends pods to the hub's TLS listener (`default/kubernetes`, the apiserver
    /// address in pods' env, kube-proxy's kubeconfig): pointless, and harmful, while the
    /// listener has no certificate to present.
    pub fn points_at_tls_listener(self) -> bool {
        matches!(
            self,
            Self::MasterService
                | Self::ForwardKubeSvcTraffic
                | Self::ServiceEnvUpdater
                | Self::InClusterConfig
        )
    }

    /// Whether it may drop an object (the others only rewrite).
    pub(super) fn may_drop(self) -> bool {
        matches!(
            self,
            Self::DiscardCloudService | Self::NodePortIsolation | Self::ServiceTopology
        )
    }

    /// `--disabled-resource-filters`: the filters it names (`*` names all), and the names
    /// that are no filter's, for the caller to report.
    pub fn parse_list<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeSet<FilterKind>, Vec<UnknownFilter>) {
        let (mut kinds, mut unknown) = (BTreeSet::new(), Vec::new());
        for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                kinds.extend(Self::ALL);
                continue;
            }
            match name.parse() {
                Ok(k) => {
                    kinds.insert(k);
                }
                Err(e) => unknown.push(e),
            }
        }
        (kinds, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_reported() {
        for k in FilterKind::ALL {
            assert_eq!(k.name().parse::<FilterKind>(), Ok(k));
        }
        let (kinds, unknown) =
            FilterKind::parse_list(["masterservice", " servicetopolgy", "", "nodeportisolation"]);
        assert_eq!(
            kinds,
            BTreeSet::from([FilterKind::MasterService, FilterKind::NodePortIsolation])
        );
        assert_eq!(unknown, vec![UnknownFilter("servicetopolgy".into())]);
        assert!(unknown[0].to_string().starts_with(
            "unknown filter \"servicetopolgy\" (known: masterservice, inclusterconfig,"
        ));
        assert_eq!(FilterKind::parse_list(["*"]).0.len(), FilterKind::ALL.len());
    }
}

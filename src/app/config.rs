//! Command-line flags, with upstream YurtHub's names and defaults (reference §1.2), and the
//! validated [`Config`] built from them.
//!
//! Both `--flag=value` and `--flag value` are accepted; a bare boolean flag means `true`.
//! An unknown flag or a bad value is a [`FlagError`] whose text names the flag and what it
//! expects; `main` prints it on one line and exits with status 2.
//!
//! ```
//! use yurthub::app::config::{Config, Parsed};
//! let args = ["--server-addr=https://10.0.0.1:6443", "--node-name", "pi-1", "--nodepool-name=edge"];
//! let Parsed::Run(cfg) = Config::from_args(args.iter().map(|s| s.to_string())).unwrap() else { panic!() };
//! assert_eq!(cfg.servers[0].authority(), "10.0.0.1:6443");
//! assert_eq!(cfg.proxy_port, 10261);
//! ```

use std::fmt;

use super::flags::{self, flag_table, Flag, NoEffect, Values};
pub use crate::certs::BootstrapMode;
pub use crate::upstream::{LbMode, ServerUrl};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Parses a Go-style duration of one unit: `40s`, `30m`, `1h`, `500ms`, or bare seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses a byte count: `268435456`, or with a suffix `512Ki`, `256Mi`, `1Gi` (powers of
/// 1024) or `500K`, `300M`, `2G` (powers of 1000).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let unit: u64 = match &s[split..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

flag_table! {
    /// Where the client certificate comes from.
    bootstrap_mode: BootstrapMode = flag("bootstrap-mode", "token",
        "how the hub gets its client certificate: token (CSR) or kubeletcertificate",
        flags::bootstrap_mode);
    /// `--bootstrap-file`, when given.
    bootstrap_file: Option<PathBuf> = flag("bootstrap-file", "",
        "bootstrap kubeconfig with a token (default <root-dir>/bootstrap-hub.conf)",
        flags::optional_path);
    /// `--join-token`, when given.
    join_token: Option<String> = flag("join-token", "",
        "bootstrap token <id>.<secret>, for kubeadm-style discovery",
        flags::join_token);
    /// `--discovery-token-ca-cert-hash` pins.
    ca_cert_hashes: Vec<[u8; 32]> = flag("discovery-token-ca-cert-hash", "",
        "comma-separated sha256:<hex> pins of the cluster CA's public key",
        flags::pins);
    /// `--discovery-token-unsafe-skip-ca-verification`.
    unsafe_skip_ca_verification: bool = switch("discovery-token-unsafe-skip-ca-verification", "false",
        "trust the discovered CA without a pin",
        flags::boolean);
    /// `--hub-cert-organizations`.
    hub_cert_organizations: Vec<String> = flag("hub-cert-organizations", "",
        "comma-separated extra organizations of the client certificate",
        flags::names);
    /// `--csr-signer-name`.
    csr_signer_name: String = flag("csr-signer-name", "kubernetes.io/kube-apiserver-client",
        "signer of the client CSR (kubernetes.io/kube-apiserver-client-kubelet: O=system:nodes only)",
        flags::text);
    /// `--kubelet-client-certificate`.
    kubelet_client_certificate: PathBuf = flag("kubelet-client-certificate",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "the kubelet's client certificate and key (kubeletcertificate mode)",
        flags::path);
    /// `--kubelet-ca-file`.
    kubelet_ca_file: PathBuf = flag("kubelet-ca-file", "/etc/kubernetes/pki/ca.crt",
        "the cluster CA (kubeletcertificate mode)",
        flags::path);
    /// `--node-ip`, when given.
    node_ip: Option<IpAddr> = flag("node-ip", "",
        "the node's IP, added to the serving certificate",
        flags::optional_ip);
    /// Whether filters run at all.
    enable_resource_filter: bool = switch("enable-resource-filter", "true",
        "rewrite responses with the filters (false: none)",
        flags::boolean);
    /// Filters turned off (checked by [`Config::filter_settings`]).
    disabled_resource_filters: Vec<String> = flag("disabled-resource-filters", "",
        "comma-separated filter names to disable (* for all)",
        flags::names);
    /// Whether pods reach the hub on the dummy interface's address.
    enable_dummy_if: bool = switch("enable-dummy-if", "true",
        "pods reach the hub at --dummy-if-ip (else at --bind-proxy-address)",
        flags::boolean);
    /// The dummy link's name.
    dummy_if_name: String = flag("dummy-if-name", "hub-dummy0",
        "name of the dummy link carrying --dummy-if-ip (at most 15 characters)",
        flags::interface);
    /// The dummy interface's address.
    dummy_if_ip: IpAddr = flag("dummy-if-ip", "169.254.2.1",
        "the hub's address for pods, inside 169.254.0.0/16",
        flags::dummy_ip);
    /// The cloud apiservers, in flag order.
    servers: Vec<ServerUrl> = flag("server-addr", "",
        "comma-separated addresses of the cloud kube-apiservers, [https://]host[:port] (required)",
        flags::servers);
    /// This node's name.
    node_name: String = flag("node-name", "",
        "the name of this node (default: the host name, lower-cased)",
        flags::node_name);
    /// This node's pool.
    nodepool_name: String = flag("nodepool-name", "",
        "the NodePool this node belongs to (required)",
        flags::required);
    /// Namespace of yurt-hub-cfg.
    namespace: String = flag("namespace", "kube-system",
        "namespace of the yurt-hub-cfg ConfigMap",
        flags::text);
    /// edge or cloud.
    working_mode: WorkingMode = flag("working-mode", "edge",
        "edge (cache and serve offline) or cloud (plain proxy)",
        flags::working_mode);
    /// Admin server address.
    bind_address: IpAddr = flag("bind-address", "127.0.0.1",
        "address of the admin server",
        flags::ip);
    /// Admin server port.
    serve_port: u16 = flag("serve-port", "10267",
        "port of the admin server (/v1/healthz, /metrics, ...)",
        flags::port);
    /// Plain proxy address.
    bind_proxy_address: IpAddr = flag("bind-proxy-address", "127.0.0.1",
        "address of the plain-HTTP proxy",
        flags::ip);
    /// Plain proxy port (0 picks a free one; the bound port is logged).
    proxy_port: u16 = flag("proxy-port", "10261",
        "port of the plain-HTTP proxy",
        flags::port);
    /// TLS proxy port.
    proxy_secure_port: u16 = flag("proxy-secure-port", "10268",
        "port of the TLS proxy",
        flags::port);
    /// `--multiplexer-port`: where a leader hub serves its pool's followers (TLS, on
    /// `--node-ip`), and where a follower reaches its leaders.
    multiplexer_port: u16 = flag("multiplexer-port", "10269",
        "port of a leader hub's TLS listener for its NodePool's follower hubs (on --node-ip)",
        flags::port);
    /// Certificates and kubeconfigs.
    root_dir: PathBuf = flag("root-dir", "/var/lib/yurthub",
        "directory of certificates and kubeconfigs",
        flags::path);
    /// The object cache.
    disk_cache_path: PathBuf = flag("disk-cache-path", "/etc/kubernetes/cache/",
        "directory of the object cache",
        flags::path);
    /// Load-balancing strategy.
    lb_mode: LbMode = flag("lb-mode", "rr",
        "how requests spread over servers: rr or priority",
        flags::lb_mode);
    /// Health probe period.
    heartbeat_interval: Duration = flag("heartbeat-interval-seconds", "10",
        "period of the lease-renewing health probe",
        flags::seconds);
    /// Health probe request timeout.
    heartbeat_timeout: Duration = flag("heartbeat-timeout-seconds", "2",
        "timeout of one health probe request",
        flags::seconds);
    /// Lease updates tried per probe.
    heartbeat_failed_retry: u32 = flag("heartbeat-failed-retry", "3",
        "lease updates tried per probe",
        flags::count);
    /// Successes needed to turn healthy.
    heartbeat_healthy_threshold: u32 = flag("heartbeat-healthy-threshold", "2",
        "successful probes needed to turn healthy again",
        flags::count);
    /// kubelet silence after which the lease is no longer renewed.
    kubelet_health_grace_period: Duration = flag("kubelet-health-grace-period", "40s",
        "stop renewing when kubelet is silent this long",
        flags::duration);
    /// Offline watches without timeoutSeconds are held a random time in [t, 2t).
    min_request_timeout: Duration = flag("min-request-timeout", "30m",
        "offline watches without timeoutSeconds last [t, 2t)",
        flags::duration);
    /// `--informer-min-watch-timeout`: the hub's own watches (yurt-hub-cfg, Services,
    /// NodePools) ask for a random timeout in [t, 2t), then re-watch from where they were.
    informer_min_watch_timeout: Duration = flag("informer-min-watch-timeout", "5m",
        "the hub's own watches last [t, 2t), then resume from their last resourceVersion",
        flags::positive_duration);
    /// `--idle-connection-timeout`.
    idle_connection_timeout: Duration = flag("idle-connection-timeout", "90s",
        "a client connection without a request this long is closed",
        flags::positive_duration);
    /// `--request-head-timeout`.
    request_head_timeout: Duration = flag("request-head-timeout", "10s",
        "a client must send a whole request head (or TLS handshake) within this",
        flags::positive_duration);
    /// `--gc-frequency`: how often cached Events are collected.
    gc_frequency: Duration = flag("gc-frequency", "120",
        "minutes between garbage collections of cached Events (or a duration: 30s, 2h)",
        flags::minutes_or_duration);
    /// `--event-ttl`: cached Events older than this are removed.
    event_ttl: Duration = flag("event-ttl", "1h",
        "cached Events older than this are removed by garbage collection",
        flags::duration);
    /// `--cache-max-bytes`: the cache's byte budget, 0 for none.
    cache_max_bytes: u64 = flag("cache-max-bytes", "256Mi",
        "byte budget of the cache directory (0: none); Events go first when it is exceeded",
        flags::bytes);
    /// `--max-cached-list-bytes`: larger response bodies are not cached.
    max_cached_list_bytes: usize = flag("max-cached-list-bytes", "64Mi",
        "larger responses (lists, mostly) are streamed through, not cached",
        flags::positive_bytes);
    /// `--encrypt-secrets-key-file`: the key that seals cached Secrets.
    encrypt_secrets_key_file: Option<PathBuf> = flag("encrypt-secrets-key-file", "",
        "seal cached Secrets with the 256-bit key in this file (kept outside the cache directory)",
        flags::optional_path);
    /// `--pool-scope-resources`: the resources the multiplexer keeps one store of, from
    /// which every local list and watch of them is answered (empty: none). The default is
    /// upstream's, `multiplexer::DEFAULT_RESOURCES` (a unit test keeps the two the same).
    pool_scope_resources: Vec<crate::multiplexer::Gvr> = flag("pool-scope-resources",
        "/v1/services,discovery.k8s.io/v1/endpointslices",
        "resources (group/version/resource, comma-separated, e.g. /v1/services,discovery.k8s.io/v1/endpointslices) listed and watched once for all local clients; empty for none",
        flags::gvrs);
    /// `--filter-sync-timeout`.
    filter_sync_timeout: Duration = flag("filter-sync-timeout", "30s",
        "servicetopology passes slices unfiltered if its inputs are not synced by then",
        flags::duration);
    /// `--pod-manifest-path`: kubelet's static pod directory, where OTA upgrades of static
    /// pods put the new manifest.
    pod_manifest_path: PathBuf = flag("pod-manifest-path", "/etc/kubernetes/manifests",
        "kubelet's static pod directory (OTA upgrades of YurtStaticSet pods write there)",
        flags::path);
    /// `--ota-staging-dir`: the new manifest and the old one's backup.
    ota_staging_dir: PathBuf = flag("ota-staging-dir", "/tmp/manifests",
        "where an OTA upgrade of a static pod keeps the new manifest and the old one's backup",
        flags::path);
    /// Log verbosity.
    verbosity: u8 = flag("v", "0",
        "log verbosity: 0-1 info, 2-4 debug, 5+ trace",
        flags::verbosity);
    ;
    switch("version", "false", "print the version and exit");
    switch("help", "false", "print this help and exit");
}

/// Upstream YurtHub's flags (v1.2 to v1.7, reference §1.2) and its logging library's that
/// this hub takes and does not act on, with why.
const NO_EFFECT: &[NoEffect] = &{
    const fn b(name: &'static str, why: &'static str) -> NoEffect {
        NoEffect {
            name,
            boolean: true,
            why,
        }
    }
    const fn v(name: &'static str, why: &'static str) -> NoEffect {
        NoEffect {
            name,
            boolean: false,
            why,
        }
    }
    const POOL: &str = "pool topology comes from the NodePool's status (apps.openyurt.io/v1beta2)";
    const COORDINATOR: &str = "no yurt-coordinator here";
    const LOGS: &str =
        "logs go to stderr (the journal under systemd), one line each; --v sets the verbosity";
    [
        b("enable-node-pool", POOL),
        b("enable-pool-service-topology", "NodeBuckets are not read: pool topology comes from the NodePool's status"),
        b("enable-iptables", "deprecated upstream; no iptables rules are made"),
        b("profiling", "no /debug/pprof here; SIGUSR1 logs a state dump"),
        v("max-requests-in-flight", "deprecated and unused upstream too"),
        v("host-control-plane-address", "only the local working mode uses it, which this hub does not have"),
        v("kubeconfig", "the hub's own credentials are in <root-dir>/pki"),
        b("access-server-through-hub", "pods reach the apiserver through the hub while the masterservice and inclusterconfig filters run"),
        v("cert-mgr-mode", "certificates come as --bootstrap-mode says"),
        b("enable-coordinator", COORDINATOR),
        v("coordinator-server-addr", COORDINATOR),
        v("coordinator-storage-prefix", COORDINATOR),
        v("coordinator-storage-addr", COORDINATOR),
        b("leader-elect", COORDINATOR),
        v("leader-elect-lease-duration", COORDINATOR),
        v("leader-elect-renew-deadline", COORDINATOR),
        v("leader-elect-retry-period", COORDINATOR),
        v("leader-elect-resource-lock", COORDINATOR),
        v("leader-elect-resource-name", COORDINATOR),
        v("leader-elect-resource-namespace", COORDINATOR),
        b("logtostderr", LOGS),
        b("alsologtostderr", LOGS),
        v("log-dir", LOGS),
        v("log-file", LOGS),
        v("log-file-max-size", LOGS),
        v("log-flush-frequency", LOGS),
        b("skip-headers", LOGS),
        b("skip-log-headers", LOGS),
        b("add-dir-header", LOGS),
        b("one-output", LOGS),
        v("stderrthreshold", LOGS),
        v("vmodule", LOGS),
        v("log-backtrace-at", LOGS),
    ]
};

/// A flag that could not be accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// No such flag.
    Unknown(String),
    /// The flag needs a value and none followed.
    MissingValue(&'static str),
    /// The value is not what the flag takes.
    Invalid {
        /// The flag's name, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What the flag expects.
        expected: &'static str,
    },
    /// A required flag was not given.
    Required(&'static str),
    /// An argument that is not a flag.
    Unexpected(String),
    /// A flag needs one of others.
    NeedsOneOf {
        /// The flag given.
        flag: &'static str,
        /// What it needs.
        needs: &'static str,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Unknown(name) => write!(f, "unknown flag: --{name}"),
            FlagError::MissingValue(name) => write!(f, "flag needs an argument: --{name}"),
            FlagError::Invalid {
                flag,
                value,
                expected,
            } => write!(
                f,
                "invalid value {value:?} for flag --{flag}: expected {expected}"
            ),
            FlagError::Required(name) => write!(f, "flag --{name} is required"),
            FlagError::Unexpected(arg) => {
                write!(f, "unexpected argument {arg:?}: flags start with --")
            }
            FlagError::NeedsOneOf { flag, needs } => write!(f, "flag --{flag} needs {needs}"),
        }
    }
}

impl std::error::Error for FlagError {}

/// `edge` caches and answers offline; `cloud` only proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkingMode {
    /// Full feature set (reference §1.1).
    Edge,
    /// A plain proxy for nodes in the cloud.
    Cloud,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the hub.
    Run(Box<Config>),
    /// Print the version and exit.
    Version,
    /// Print the usage and exit.
    Help,
}

/// The hub's flags as given, unvalidated: for `yurthub reset`, which takes the hub's own
/// command line and reads only the flags that name files.
pub(super) fn read_flags(args: impl IntoIterator<Item = String>) -> Result<Values, FlagError> {
    Values::read(FLAGS, NO_EFFECT, args)
}

/// The `--help` text, made from the flag table.
pub fn usage() -> String {
    flags::usage(FLAGS, NO_EFFECT)
}

impl Config {
    /// The certificate manager's settings.
    pub fn certs_settings(&self) -> crate::certs::Settings {
        let mut serving_ips = Vec::new();
        if self.enable_dummy_if {
            serving_ips.push(self.dummy_if_ip);
        }
        serving_ips.extend([self.bind_address, self.bind_proxy_address]);
        serving_ips.extend(self.node_ip);
        crate::certs::Settings {
            mode: self.bootstrap_mode,
            node: self.node_name.clone(),
            servers: self.servers.clone(),
            root_dir: self.root_dir.clone(),
            bootstrap_file: self.bootstrap_file(),
            kubelet_client_certificate: self.kubelet_client_certificate.clone(),
            kubelet_ca_file: self.kubelet_ca_file.clone(),
            join_token: self.join_token.clone(),
            pins: self.ca_cert_hashes.clone(),
            unsafe_skip_ca_verification: self.unsafe_skip_ca_verification,
            organizations: self.hub_cert_organizations.clone(),
            signer: self.csr_signer_name.clone(),
            serving_ips,
        }
    }

    /// The filters' settings; names in `--disabled-resource-filters` that are no filter's are
    /// logged.
    pub fn filter_settings(&self) -> crate::filter::Settings {
        let names = self.disabled_resource_filters.iter().map(String::as_str);
        let (disabled, unknown) = crate::filter::FilterKind::parse_list(names);
        for name in unknown {
            // Reported, not fatal: a node may carry the name of a filter an older or newer
            // YurtHub has (a hub that refused to start would take the node offline).
            log::warn!("--disabled-resource-filters: {name}: ignored");
        }
        crate::filter::Settings {
            hub_host: if self.enable_dummy_if {
                self.dummy_if_ip.to_string()
            } else {
                self.bind_proxy_address.to_string()
            },
            hub_port: self.proxy_secure_port,
            nodepool: self.nodepool_name.clone(),
            enabled: self.enable_resource_filter,
            disabled,
        }
    }

    /// The health prober's settings.
    pub fn health_settings(&self) -> crate::health::Settings {
        crate::health::Settings {
            node: self.node_name.clone(),
            timeout: self.heartbeat_timeout,
            retries: self.heartbeat_failed_retry,
            threshold: self.heartbeat_healthy_threshold,
            grace: self.kubelet_health_grace_period,
            interval: self.heartbeat_interval,
        }
    }

    /// The garbage collector's settings.
    pub fn gc_settings(&self) -> crate::gc::Settings {
        crate::gc::Settings {
            node: self.node_name.clone(),
            every: self.gc_frequency,
            event_ttl: self.event_ttl,
            timeout: self.heartbeat_timeout,
        }
    }

    /// Parses the arguments after the program name.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, FlagError> {
        let v = Values::read(FLAGS, NO_EFFECT, args)?;
        if flags::boolean(&v, "help")? {
            return Ok(Parsed::Help);
        }
        if flags::boolean(&v, "version")? {
            return Ok(Parsed::Version);
        }
        let config = Config::build(&v)?;
        // What no single flag can say.
        if config.join_token.is_some()
            && config.ca_cert_hashes.is_empty()
            && !config.unsafe_skip_ca_verification
        {
            return Err(FlagError::NeedsOneOf {
                flag: "join-token",
                needs: "--discovery-token-ca-cert-hash or --discovery-token-unsafe-skip-ca-verification",
            });
        }
        Ok(Parsed::Run(Box::new(config)))
    }

    /// Logs, once each, the flags given that have no effect here.
    pub fn log_no_effect(&self) {
        for (name, why) in &self.no_effect {
            log::info!(
                "--{name}: accepted for upstream YurtHub's command line, no effect here: {why}"
            );
        }
    }

    /// The node client certificate and key, in one PEM file.
    pub fn client_cert_path(&self) -> PathBuf {
        self.root_dir.join("pki").join("yurthub-current.pem")
    }

    /// The cluster CA.
    pub fn ca_path(&self) -> PathBuf {
        self.root_dir.join("pki").join("ca.crt")
    }

    /// The bootstrap kubeconfig: `--bootstrap-file`, else `<root-dir>/bootstrap-hub.conf`.
    pub fn bootstrap_file(&self) -> PathBuf {
        self.bootstrap_file
            .clone()
            .unwrap_or_else(|| self.root_dir.join("bootstrap-hub.conf"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, FlagError> {
        Config::from_args(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> Config {
        match parse(args).unwrap() {
            Parsed::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    const BASE: &[&str] = &[
        "--server-addr=https://a:6443",
        "--node-name=n",
        "--nodepool-name=p",
    ];

    #[test]
    fn defaults_are_upstreams() {
        let c = run(BASE);
        assert_eq!(c.namespace, "kube-system");
        assert_eq!(c.working_mode, WorkingMode::Edge);
        assert_eq!(c.bind_address.to_string(), "127.0.0.1");
        assert_eq!(
            (c.serve_port, c.proxy_port, c.proxy_secure_port),
            (10267, 10261, 10268)
        );
        assert_eq!(c.root_dir, PathBuf::from("/var/lib/yurthub"));
        assert_eq!(c.disk_cache_path, PathBuf::from("/etc/kubernetes/cache/"));
        assert_eq!(c.lb_mode, LbMode::RoundRobin);
        assert_eq!(
            c.pool_scope_resources,
            crate::multiplexer::Gvr::parse_list(crate::multiplexer::DEFAULT_RESOURCES).unwrap()
        );
        let off = run(&[BASE, &["--pool-scope-resources="]].concat());
        assert!(off.pool_scope_resources.is_empty());
        assert_eq!(
            c.client_cert_path(),
            PathBuf::from("/var/lib/yurthub/pki/yurthub-current.pem")
        );
    }

    #[test]
    fn both_value_forms_and_lists() {
        let c = run(&[
            "--server-addr",
            "a:1, https://[fd00::1]:6443/prefix/,b",
            "--node-name",
            "n",
            "--nodepool-name=p",
            "--lb-mode",
            "priority",
            "--proxy-port=0",
            "--v=4",
        ]);
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.servers[0].authority(), "a:1");
        assert_eq!(c.servers[1].authority(), "[fd00::1]:6443");
        assert_eq!(c.servers[1].path_prefix, "/prefix");
        assert_eq!(c.servers[2].port, 443);
        assert_eq!(c.lb_mode, LbMode::Priority);
        assert_eq!(c.proxy_port, 0);
        assert_eq!(c.verbosity, 4);
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--nope=1"], "--nope"),
            (
                &[
                    "--server-addr=http://a",
                    "--node-name=n",
                    "--nodepool-name=p",
                ],
                "--server-addr",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--lb-mode=hash",
                ],
                "--lb-mode",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--working-mode=local",
                ],
                "--working-mode",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--proxy-port=70000",
                ],
                "--proxy-port",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--bind-address=x",
                ],
                "--bind-address",
            ),
            (
                &[
                    "--server-addr=a",
                    "--nodepool-name=p",
                    "--node-name=$(hostname)",
                ],
                "--node-name",
            ),
            (
                &["--server-addr=a", "--nodepool-name=p", "--node-name=Pi_1"],
                "--node-name",
            ),
            (&["--node-name"], "--node-name"),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--dummy-if-ip=169.254.31.5",
                ],
                "--dummy-if-ip",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--dummy-if-ip=10.0.0.1",
                ],
                "--dummy-if-ip",
            ),
            (
                &[
                    "--server-addr=a",
                    "--node-name=n",
                    "--nodepool-name=p",
                    "--enable-dummy-if=maybe",
                ],
                "--enable-dummy-if",
            ),
            (&["stray"], "stray"),
        ];
        for (args, needle) in cases {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn help_and_version_win() {
        for (args, help) in [
            (&["--help"][..], true),
            (&["-h"], true),
            (&["--server-addr=x", "-h"], true),
            (&["--version"], false),
            (&["-V"], false),
        ] {
            let p = parse(args).unwrap();
            assert!(
                if help {
                    matches!(p, Parsed::Help)
                } else {
                    matches!(p, Parsed::Version)
                },
                "{args:?}: {p:?}"
            );
        }
        let text = usage();
        for needle in [
            "--server-addr",
            "cache",
            "why",
            "evict",
            "reset",
            "--enable-node-pool",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn the_node_name_defaults_to_the_host_name() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let c = run(&["--server-addr=a", "--nodepool-name=p"]);
        assert_eq!(c.node_name, host.trim().to_ascii_lowercase());
        let c = run(&["--server-addr=a", "--nodepool-name=p", "--node-name=Pi-1"]);
        assert_eq!(c.node_name, "pi-1");
    }

    #[test]
    fn a_server_without_a_scheme_is_https_and_another_scheme_is_refused() {
        let c = run(&[
            "--server-addr=1.2.3.4",
            "--node-name=n",
            "--nodepool-name=p",
        ]);
        assert_eq!(c.servers[0].authority(), "1.2.3.4:443");
        let err = parse(&[
            "--server-addr=http://1.2.3.4",
            "--node-name=n",
            "--nodepool-name=p",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("https is assumed"), "{err}");
    }

    #[test]
    fn flags_without_effect_are_taken_and_named_once() {
        let c = run(&[
            BASE,
            &[
                "--enable-node-pool",
                "--log_dir=/var/log",
                "--kubeconfig",
                "/etc/kubelet.conf",
            ],
        ]
        .concat());
        let named: Vec<&str> = c.no_effect.iter().map(|(n, _)| *n).collect();
        assert_eq!(named, ["enable-node-pool", "log-dir", "kubeconfig"]);
        // Each once, however often given.
        let twice = [BASE, &["--profiling", "--profiling=false"]].concat();
        assert_eq!(run(&twice).no_effect.len(), 1);
        // A boolean one takes no separate value, a valued one does.
        assert!(matches!(
            parse(&[BASE, &["--kubeconfig"]].concat()),
            Err(FlagError::MissingValue("kubeconfig"))
        ));
    }
}

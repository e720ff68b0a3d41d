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

/// A flag the parser knows, with its default and its line in `--help`.
struct Flag {
    name: &'static str,
    default: &'static str,
    help: &'static str,
    boolean: bool,
}

const fn flag(name: &'static str, default: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        default,
        help,
        boolean: false,
    }
}

const fn switch(name: &'static str, default: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        default,
        help,
        boolean: true,
    }
}

const FLAGS: &[Flag] = &[
    flag(
        "bootstrap-mode",
        "token",
        "how the hub gets its client certificate: token (CSR) or kubeletcertificate",
    ),
    flag(
        "bootstrap-file",
        "",
        "bootstrap kubeconfig with a token (default <root-dir>/bootstrap-hub.conf)",
    ),
    flag(
        "join-token",
        "",
        "bootstrap token <id>.<secret>, for kubeadm-style discovery",
    ),
    flag(
        "discovery-token-ca-cert-hash",
        "",
        "comma-separated sha256:<hex> pins of the cluster CA's public key",
    ),
    switch(
        "discovery-token-unsafe-skip-ca-verification",
        "false",
        "trust the discovered CA without a pin",
    ),
    flag(
        "hub-cert-organizations",
        "",
        "comma-separated extra organizations of the client certificate",
    ),
    flag(
        "csr-signer-name",
        "kubernetes.io/kube-apiserver-client",
        "signer of the client CSR (kubernetes.io/kube-apiserver-client-kubelet: O=system:nodes only)",
    ),
    flag(
        "kubelet-client-certificate",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "the kubelet's client certificate and key (kubeletcertificate mode)",
    ),
    flag(
        "kubelet-ca-file",
        "/etc/kubernetes/pki/ca.crt",
        "the cluster CA (kubeletcertificate mode)",
    ),
    flag(
        "node-ip",
        "",
        "the node's IP, added to the serving certificate",
    ),
    switch(
        "enable-resource-filter",
        "true",
        "rewrite responses with the filters (false: none)",
    ),
    flag(
        "disabled-resource-filters",
        "",
        "comma-separated filter names to disable (* for all)",
    ),
    switch(
        "enable-dummy-if",
        "true",
        "pods reach the hub at --dummy-if-ip (else at --bind-proxy-address)",
    ),
    flag(
        "dummy-if-name",
        "hub-dummy0",
        "name of the dummy link carrying --dummy-if-ip (at most 15 characters)",
    ),
    flag(
        "dummy-if-ip",
        "169.254.2.1",
        "the hub's address for pods, inside 169.254.0.0/16",
    ),
    flag(
        "server-addr",
        "",
        "comma-separated https URLs of the cloud kube-apiservers (required)",
    ),
    flag("node-name", "", "the name of this node (required)"),
    flag(
        "nodepool-name",
        "",
        "the NodePool this node belongs to (required)",
    ),
    flag(
        "namespace",
        "kube-system",
        "namespace of the yurt-hub-cfg ConfigMap",
    ),
    flag(
        "working-mode",
        "edge",
        "edge (cache and serve offline) or cloud (plain proxy)",
    ),
    flag("bind-address", "127.0.0.1", "address of the admin server"),
    flag(
        "serve-port",
        "10267",
        "port of the admin server (/v1/healthz, /metrics, ...)",
    ),
    flag(
        "bind-proxy-address",
        "127.0.0.1",
        "address of the plain-HTTP proxy",
    ),
    flag("proxy-port", "10261", "port of the plain-HTTP proxy"),
    flag("proxy-secure-port", "10268", "port of the TLS proxy"),
    flag(
        "root-dir",
        "/var/lib/yurthub",
        "directory of certificates and kubeconfigs",
    ),
    flag(
        "disk-cache-path",
        "/etc/kubernetes/cache/",
        "directory of the object cache",
    ),
    flag(
        "lb-mode",
        "rr",
        "how requests spread over servers: rr or priority",
    ),
    flag(
        "heartbeat-interval-seconds",
        "10",
        "period of the lease-renewing health probe",
    ),
    flag(
        "heartbeat-timeout-seconds",
        "2",
        "timeout of one health probe request",
    ),
    flag(
        "heartbeat-failed-retry",
        "3",
        "lease updates tried per probe",
    ),
    flag(
        "heartbeat-healthy-threshold",
        "2",
        "successful probes needed to turn healthy again",
    ),
    flag(
        "kubelet-health-grace-period",
        "40s",
        "stop renewing when kubelet is silent this long",
    ),
    flag(
        "min-request-timeout",
        "30m",
        "offline watches without timeoutSeconds last [t, 2t)",
    ),
    flag(
        "idle-connection-timeout",
        "90s",
        "a client connection without a request this long is closed",
    ),
    flag(
        "request-head-timeout",
        "10s",
        "a client must send a whole request head (or TLS handshake) within this",
    ),
    flag(
        "gc-frequency",
        "120",
        "minutes between garbage collections of cached Events (or a duration: 30s, 2h)",
    ),
    flag(
        "event-ttl",
        "1h",
        "cached Events older than this are removed by garbage collection",
    ),
    flag(
        "cache-max-bytes",
        "256Mi",
        "byte budget of the cache directory (0: none); Events go first when it is exceeded",
    ),
    flag(
        "max-cached-list-bytes",
        "64Mi",
        "larger responses (lists, mostly) are streamed through, not cached",
    ),
    flag(
        "encrypt-secrets-key-file",
        "",
        "seal cached Secrets with the 256-bit key in this file (kept outside the cache directory)",
    ),
    flag(
        "filter-sync-timeout",
        "30s",
        "servicetopology passes slices unfiltered if its inputs are not synced by then",
    ),
    flag("v", "0", "log verbosity: 0-1 info, 2-4 debug, 5+ trace"),
    switch("version", "false", "print the version and exit"),
    switch("help", "false", "print this help and exit"),
];

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

/// Everything the hub runs with, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cloud apiservers, in flag order.
    pub servers: Vec<ServerUrl>,
    /// This node's name.
    pub node_name: String,
    /// This node's pool.
    pub nodepool_name: String,
    /// Namespace of yurt-hub-cfg.
    pub namespace: String,
    /// edge or cloud.
    pub working_mode: WorkingMode,
    /// Admin server address.
    pub bind_address: IpAddr,
    /// Admin server port.
    pub serve_port: u16,
    /// Plain proxy address.
    pub bind_proxy_address: IpAddr,
    /// Plain proxy port (0 picks a free one; the bound port is logged).
    pub proxy_port: u16,
    /// TLS proxy port.
    pub proxy_secure_port: u16,
    /// Certificates and kubeconfigs.
    pub root_dir: PathBuf,
    /// The object cache.
    pub disk_cache_path: PathBuf,
    /// Load-balancing strategy.
    pub lb_mode: LbMode,
    /// Log verbosity.
    pub verbosity: u8,
    /// Health probe period.
    pub heartbeat_interval: Duration,
    /// Health probe request timeout.
    pub heartbeat_timeout: Duration,
    /// Lease updates tried per probe.
    pub heartbeat_failed_retry: u32,
    /// Successes needed to turn healthy.
    pub heartbeat_healthy_threshold: u32,
    /// kubelet silence after which the lease is no longer renewed.
    pub kubelet_health_grace_period: Duration,
    /// Offline watches without timeoutSeconds are held a random time in [t, 2t).
    pub min_request_timeout: Duration,
    /// Whether filters run at all.
    pub enable_resource_filter: bool,
    /// Filters turned off.
    pub disabled_resource_filters: Vec<String>,
    /// Whether pods reach the hub on the dummy interface's address.
    pub enable_dummy_if: bool,
    /// The dummy interface's address.
    pub dummy_if_ip: IpAddr,
    /// The dummy link's name.
    pub dummy_if_name: String,
    /// Where the client certificate comes from.
    pub bootstrap_mode: BootstrapMode,
    /// `--bootstrap-file`, when given.
    pub bootstrap_file: Option<PathBuf>,
    /// `--join-token`, when given.
    pub join_token: Option<String>,
    /// `--discovery-token-ca-cert-hash` pins.
    pub ca_cert_hashes: Vec<[u8; 32]>,
    /// `--discovery-token-unsafe-skip-ca-verification`.
    pub unsafe_skip_ca_verification: bool,
    /// `--hub-cert-organizations`.
    pub hub_cert_organizations: Vec<String>,
    /// `--csr-signer-name`.
    pub csr_signer_name: String,
    /// `--kubelet-client-certificate`.
    pub kubelet_client_certificate: PathBuf,
    /// `--kubelet-ca-file`.
    pub kubelet_ca_file: PathBuf,
    /// `--node-ip`, when given.
    pub node_ip: Option<IpAddr>,
    /// `--filter-sync-timeout`.
    pub filter_sync_timeout: Duration,
    /// `--gc-frequency`: how often cached Events are collected.
    pub gc_frequency: Duration,
    /// `--idle-connection-timeout`.
    pub idle_connection_timeout: Duration,
    /// `--request-head-timeout`.
    pub request_head_timeout: Duration,
    /// `--event-ttl`: cached Events older than this are removed.
    pub event_ttl: Duration,
    /// `--cache-max-bytes`: the cache's byte budget, 0 for none.
    pub cache_max_bytes: u64,
    /// `--max-cached-list-bytes`: larger response bodies are not cached.
    pub max_cached_list_bytes: usize,
    /// `--encrypt-secrets-key-file`: the key that seals cached Secrets.
    pub encrypt_secrets_key_file: Option<PathBuf>,
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
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

/// The `--help` text.
pub fn usage() -> String {
    let mut out = String::from(
        "Usage: yurthub [flags]\n       yurthub cache <ls [path] | get <path> | verify | stats> [--disk-cache-path DIR] [--json]\n\nFlags:\n",
    );
    for f in FLAGS {
        let default = if f.default.is_empty() || f.boolean {
            String::new()
        } else {
            format!(" (default {:?})", f.default)
        };
        out.push_str(&format!("  --{:<22} {}{}\n", f.name, f.help, default));
    }
    out
}

struct Values(Vec<(&'static str, String)>);

impl Values {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| FLAGS.iter().find(|f| f.name == name).map(|f| f.default))
            .unwrap_or("")
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<T, FlagError> {
        let v = self.get(name);
        v.parse().map_err(|_| FlagError::Invalid {
            flag: name,
            value: v.to_string(),
            expected,
        })
    }

    fn required(&self, name: &'static str) -> Result<String, FlagError> {
        let v = self.get(name).trim();
        if v.is_empty() {
            return Err(FlagError::Required(name));
        }
        Ok(v.to_string())
    }

    fn duration(&self, name: &'static str) -> Result<Duration, FlagError> {
        parse_duration(self.get(name)).ok_or_else(|| FlagError::Invalid {
            flag: name,
            value: self.get(name).to_string(),
            expected: "a duration such as 40s, 30m or 1h",
        })
    }

    fn positive_duration(&self, name: &'static str) -> Result<Duration, FlagError> {
        let d = self.duration(name)?;
        if d.is_zero() {
            return Err(FlagError::Invalid {
                flag: name,
                value: self.get(name).to_string(),
                expected: "a duration above zero such as 10s",
            });
        }
        Ok(d)
    }

    fn boolean(&self, name: &'static str) -> Result<bool, FlagError> {
        self.parse(name, "true or false")
    }
}

fn read_values(args: impl IntoIterator<Item = String>) -> Result<Values, FlagError> {
    let mut values = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(FlagError::Unexpected(arg));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let spec = FLAGS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FlagError::Unknown(name.to_string()))?;
        let value = match inline {
            Some(v) => v,
            None if spec.boolean => "true".to_string(),
            None => args.next().ok_or(FlagError::MissingValue(spec.name))?,
        };
        values.push((spec.name, value));
    }
    Ok(Values(values))
}

/// The dummy IP: inside 169.254.0.0/16, not in 169.254.31.0/24, not 169.254.1.1
/// (reference §1.2), or any IPv6 address.
fn dummy_ip(v: &Values) -> Result<IpAddr, FlagError> {
    let ip = parse_ip(v, "dummy-if-ip")?;
    let ok = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 169 && o[1] == 254 && o[2] != 31 && a != std::net::Ipv4Addr::new(169, 254, 1, 1)
        }
        IpAddr::V6(_) => true,
    };
    if ok {
        Ok(ip)
    } else {
        Err(FlagError::Invalid {
            flag: "dummy-if-ip",
            value: ip.to_string(),
            expected: "an address in 169.254.0.0/16 outside 169.254.31.0/24, not 169.254.1.1",
        })
    }
}

fn parse_ip(v: &Values, name: &'static str) -> Result<IpAddr, FlagError> {
    v.parse(name, "an IPv4 or IPv6 address")
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
        let v = read_values(args)?;
        if v.boolean("help")? {
            return Ok(Parsed::Help);
        }
        if v.boolean("version")? {
            return Ok(Parsed::Version);
        }
        let servers_raw = v.required("server-addr")?;
        let servers = servers_raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                ServerUrl::parse(s).ok_or(FlagError::Invalid {
                    flag: "server-addr",
                    value: s.to_string(),
                    expected: "comma-separated https://host[:port] URLs",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let working_mode = match v.get("working-mode") {
            "edge" => WorkingMode::Edge,
            "cloud" => WorkingMode::Cloud,
            other => {
                return Err(FlagError::Invalid {
                    flag: "working-mode",
                    value: other.to_string(),
                    expected: "edge or cloud",
                })
            }
        };
        let lb_mode = match v.get("lb-mode") {
            "rr" => LbMode::RoundRobin,
            "priority" => LbMode::Priority,
            other => {
                return Err(FlagError::Invalid {
                    flag: "lb-mode",
                    value: other.to_string(),
                    expected: "rr or priority",
                })
            }
        };
        let bootstrap_mode = match v.get("bootstrap-mode") {
            "token" => BootstrapMode::Token,
            "kubeletcertificate" => BootstrapMode::KubeletCertificate,
            other => {
                return Err(FlagError::Invalid {
                    flag: "bootstrap-mode",
                    value: other.to_string(),
                    expected: "token or kubeletcertificate",
                })
            }
        };
        let join_token = Some(v.get("join-token").trim())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(t) = &join_token {
            if crate::certs::discovery::Token::parse(t).is_err() {
                return Err(FlagError::Invalid {
                    flag: "join-token",
                    value: "<redacted>".into(),
                    expected: "a bootstrap token [a-z0-9]{6}.[a-z0-9]{16}",
                });
            }
        }
        let ca_cert_hashes = list(v.get("discovery-token-ca-cert-hash"))
            .map(|h| {
                crate::certs::discovery::parse_pin(h).ok_or(FlagError::Invalid {
                    flag: "discovery-token-ca-cert-hash",
                    value: h.to_string(),
                    expected: "sha256:<64 hex digits>",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let unsafe_skip = v.boolean("discovery-token-unsafe-skip-ca-verification")?;
        if join_token.is_some() && ca_cert_hashes.is_empty() && !unsafe_skip {
            return Err(FlagError::NeedsOneOf {
                flag: "join-token",
                needs: "--discovery-token-ca-cert-hash or --discovery-token-unsafe-skip-ca-verification",
            });
        }
        let port = |name| v.parse::<u16>(name, "a port number 0-65535");
        Ok(Parsed::Run(Box::new(Config {
            servers,
            node_name: v.required("node-name")?,
            nodepool_name: v.required("nodepool-name")?,
            namespace: v.get("namespace").to_string(),
            working_mode,
            bind_address: parse_ip(&v, "bind-address")?,
            serve_port: port("serve-port")?,
            bind_proxy_address: parse_ip(&v, "bind-proxy-address")?,
            proxy_port: port("proxy-port")?,
            proxy_secure_port: port("proxy-secure-port")?,
            root_dir: PathBuf::from(v.get("root-dir")),
            disk_cache_path: PathBuf::from(v.get("disk-cache-path")),
            lb_mode,
            verbosity: v.parse("v", "a verbosity level 0-10")?,
            heartbeat_interval: Duration::from_secs(
                v.parse::<u64>("heartbeat-interval-seconds", "a number of seconds")?
                    .max(1),
            ),
            heartbeat_timeout: Duration::from_secs(
                v.parse::<u64>("heartbeat-timeout-seconds", "a number of seconds")?
                    .max(1),
            ),
            heartbeat_failed_retry: v.parse::<u32>("heartbeat-failed-retry", "a count")?.max(1),
            heartbeat_healthy_threshold: v
                .parse::<u32>("heartbeat-healthy-threshold", "a count")?
                .max(1),
            kubelet_health_grace_period: v.duration("kubelet-health-grace-period")?,
            min_request_timeout: v.duration("min-request-timeout")?,
            enable_resource_filter: v.boolean("enable-resource-filter")?,
            disabled_resource_filters: v
                .get("disabled-resource-filters")
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
            enable_dummy_if: v.boolean("enable-dummy-if")?,
            dummy_if_ip: dummy_ip(&v)?,
            dummy_if_name: {
                let name = v.get("dummy-if-name");
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                    return Err(FlagError::Invalid {
                        flag: "dummy-if-name",
                        value: name.to_string(),
                        expected: "an interface name of 1 to 15 characters",
                    });
                }
                name.to_string()
            },
            bootstrap_mode,
            bootstrap_file: Some(v.get("bootstrap-file"))
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            join_token,
            ca_cert_hashes,
            unsafe_skip_ca_verification: unsafe_skip,
            hub_cert_organizations: list(v.get("hub-cert-organizations"))
                .map(str::to_string)
                .collect(),
            csr_signer_name: v.get("csr-signer-name").to_string(),
            kubelet_client_certificate: PathBuf::from(v.get("kubelet-client-certificate")),
            kubelet_ca_file: PathBuf::from(v.get("kubelet-ca-file")),
            filter_sync_timeout: v.duration("filter-sync-timeout")?,
            gc_frequency: {
                let raw = v.get("gc-frequency");
                let every = match raw.trim().parse::<u64>() {
                    Ok(minutes) => Some(Duration::from_secs(minutes.saturating_mul(60))),
                    Err(_) => parse_duration(raw),
                };
                every.filter(|d| !d.is_zero()).ok_or(FlagError::Invalid {
                    flag: "gc-frequency",
                    value: raw.to_string(),
                    expected: "minutes (a positive integer) or a duration such as 30s",
                })?
            },
            event_ttl: v.duration("event-ttl")?,
            idle_connection_timeout: v.positive_duration("idle-connection-timeout")?,
            request_head_timeout: v.positive_duration("request-head-timeout")?,
            cache_max_bytes: parse_bytes(v.get("cache-max-bytes")).ok_or(FlagError::Invalid {
                flag: "cache-max-bytes",
                value: v.get("cache-max-bytes").to_string(),
                expected: "a byte count such as 268435456 or 256Mi",
            })?,
            max_cached_list_bytes: parse_bytes(v.get("max-cached-list-bytes"))
                .and_then(|b| usize::try_from(b).ok())
                .filter(|b| *b > 0)
                .ok_or(FlagError::Invalid {
                    flag: "max-cached-list-bytes",
                    value: v.get("max-cached-list-bytes").to_string(),
                    expected: "a positive byte count such as 67108864 or 64Mi",
                })?,
            encrypt_secrets_key_file: Some(v.get("encrypt-secrets-key-file"))
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            node_ip: match v.get("node-ip") {
                "" => None,
                _ => Some(parse_ip(&v, "node-ip")?),
            },
        })))
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
            (&["--server-addr=a", "--nodepool-name=p"], "--node-name"),
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
        assert!(matches!(parse(&["--help"]).unwrap(), Parsed::Help));
        assert!(matches!(parse(&["--version"]).unwrap(), Parsed::Version));
        assert!(usage().contains("--server-addr"));
    }
}

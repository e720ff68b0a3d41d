//! The machinery of the flag table: each flag is written once, in `config.rs`'s `flag_table!`
//! (field, type, name, default, help, parser), and this module turns that one line into the
//! [`super::config::Config`] field, the `--help` line and the parsing. Here too are the
//! parsers the table names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{parse_bytes, parse_duration, FlagError, WorkingMode};
use crate::certs::BootstrapMode;
use crate::upstream::{LbMode, ServerUrl};

/// A flag the parser knows, with its default and its line in `--help`.
pub(super) struct Flag {
    pub(super) name: &'static str,
    pub(super) default: &'static str,
    pub(super) help: &'static str,
    /// A bare `--flag` means `true`.
    pub(super) boolean: bool,
}

/// A flag upstream YurtHub (or its logging library) takes that has no effect here. It is
/// accepted, so a unit or manifest written for upstream starts this hub unchanged, and named
/// once in the log with why.
pub(super) struct NoEffect {
    pub(super) name: &'static str,
    /// A bare `--flag` is complete (upstream's booleans); the others take a value.
    pub(super) boolean: bool,
    pub(super) why: &'static str,
}

/// Declares the flags once: the `Config` struct with a documented field per flag, the table
/// `FLAGS` (`--help` and the parser read it), and `Config::build`, which parses each field
/// with the parser its line names. `switch` marks boolean flags, `flag` the others; flags
/// listed after `;` (help, version) have no field.
macro_rules! flag_table {
    (
        $(
            $(#[doc = $doc:literal])*
            $field:ident : $ty:ty = $kind:ident($name:literal, $default:literal, $help:literal, $parse:path);
        )*
        ; $( $extra_kind:ident($extra:literal, $extra_default:literal, $extra_help:literal); )*
    ) => {
        /// Everything the hub runs with, validated.
        #[derive(Clone, Debug)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            /// Flags given that upstream YurtHub takes and that have no effect here, each
            /// with why: [`Config::log_no_effect`] names them once.
            pub no_effect: Vec<(&'static str, &'static str)>,
        }

        const FLAGS: &[Flag] = &[
            $( Flag {
                name: $name,
                default: $default,
                help: $help,
                boolean: flag_table!(@switch $kind),
            }, )*
            $( Flag {
                name: $extra,
                default: $extra_default,
                help: $extra_help,
                boolean: flag_table!(@switch $extra_kind),
            }, )*
        ];

        impl Config {
            /// Every field from its flag's value (or its default).
            fn build(v: &Values) -> Result<Config, FlagError> {
                Ok(Config {
                    $( $field: $parse(v, $name)?, )*
                    no_effect: v.no_effect.clone(),
                })
            }
        }
    };
    (@switch switch) => { true };
    (@switch flag) => { false };
}

pub(super) use flag_table;

/// The flags given, by name, before parsing; unset ones read as their default.
pub(super) struct Values {
    table: &'static [Flag],
    given: Vec<(&'static str, String)>,
    /// The [`NoEffect`] flags given, with why, each once.
    pub(super) no_effect: Vec<(&'static str, &'static str)>,
}

/// The short forms every command-line user tries first.
const SHORT: &[(&str, &str)] = &[("h", "help"), ("V", "version")];

impl Values {
    /// Reads `--flag=value`, `--flag value` and bare boolean `--flag`s of `table`, and the
    /// `no_effect` flags. As upstream's flag library does, `_` in a name reads as `-`
    /// (`--log_dir` is `--log-dir`), and one dash does as well as two.
    pub(super) fn read(
        table: &'static [Flag],
        no_effect: &'static [NoEffect],
        args: impl IntoIterator<Item = String>,
    ) -> Result<Values, FlagError> {
        let mut given = Vec::new();
        let mut ignored: Vec<(&'static str, &'static str)> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(FlagError::Unexpected(arg));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let name = SHORT
                .iter()
                .find(|(short, _)| *short == name)
                .map_or_else(|| name.replace('_', "-"), |(_, long)| long.to_string());
            let (flag, boolean) = if let Some(spec) = table.iter().find(|f| f.name == name) {
                (spec.name, spec.boolean)
            } else if let Some(n) = no_effect.iter().find(|f| f.name == name) {
                if !ignored.iter().any(|(seen, _)| *seen == n.name) {
                    ignored.push((n.name, n.why));
                }
                (n.name, n.boolean)
            } else {
                return Err(FlagError::Unknown(name));
            };
            let value = match inline {
                Some(v) => v,
                None if boolean => "true".to_string(),
                None => args.next().ok_or(FlagError::MissingValue(flag))?,
            };
            given.push((flag, value));
        }
        Ok(Values {
            table,
            given,
            no_effect: ignored,
        })
    }

    /// The last value given for `name`, or its default.
    pub(super) fn get(&self, name: &str) -> &str {
        self.given
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| {
                self.table
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.default)
            })
            .unwrap_or("")
    }

    fn invalid(&self, name: &'static str, expected: &'static str) -> FlagError {
        FlagError::Invalid {
            flag: name,
            value: self.get(name).to_string(),
            expected,
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<T, FlagError> {
        self.get(name)
            .parse()
            .map_err(|_| self.invalid(name, expected))
    }
}

/// The `--help` text of `table`, then the names of the `no_effect` flags.
pub(super) fn usage(table: &[Flag], no_effect: &[NoEffect]) -> String {
    let mut out = String::from(
        "Usage: yurthub [flags]\n       yurthub cache <ls [path] | get <path> | verify | stats | why <url> | evict <what>> [flags]   (yurthub cache --help)\n       yurthub reset [--force] [the hub's flags]\n\nFlags:\n",
    );
    for f in table {
        let default = if f.default.is_empty() || f.boolean {
            String::new()
        } else {
            format!(" (default {:?})", f.default)
        };
        out.push_str(&format!("  --{:<22} {}{}\n", f.name, f.help, default));
    }
    out.push_str("\nAccepted for upstream YurtHub's command lines, with no effect here (the log says why):\n");
    let mut line = String::from(" ");
    for f in no_effect {
        if line.len() + f.name.len() + 3 > 100 {
            out.push_str(&line);
            out.push('\n');
            line = String::from(" ");
        }
        line.push_str(&format!(" --{}", f.name));
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

// The parsers `flag_table!` lines name: each reads one flag.

/// Text as given.
pub(super) fn text(v: &Values, name: &'static str) -> Result<String, FlagError> {
    Ok(v.get(name).to_string())
}

/// Text that must be given.
pub(super) fn required(v: &Values, name: &'static str) -> Result<String, FlagError> {
    let s = v.get(name).trim();
    if s.is_empty() {
        return Err(FlagError::Required(name));
    }
    Ok(s.to_string())
}

/// A node name: as given, else the host's name, lower-cased either way as kubelet names its
/// node; a Kubernetes object name (an RFC 1123 subdomain), so a literal `$(hostname)` from a
/// file no shell expanded is refused, not registered.
pub(super) fn node_name(v: &Values, name: &'static str) -> Result<String, FlagError> {
    let given = v.get(name).trim();
    let (node, expected) = if given.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if host.is_empty() {
            return Err(FlagError::Required(name));
        }
        (host, "the host name is no node name (lower-case letters, digits, '-' and '.'): give --node-name")
    } else {
        // Lower-cased as kubelet names its node.
        (given.to_ascii_lowercase(), "a node name: letters, digits, '-' and '.', at most 253 (no shell expands $(...) in /etc/default/yurthub)")
    };
    if !crate::kube::is_dns1123_subdomain(&node) {
        return Err(FlagError::Invalid {
            flag: name,
            value: node,
            expected,
        });
    }
    Ok(node)
}

/// A comma-separated list.
pub(super) fn names(v: &Values, name: &'static str) -> Result<Vec<String>, FlagError> {
    Ok(list(v.get(name)).map(str::to_string).collect())
}

/// A path.
pub(super) fn path(v: &Values, name: &'static str) -> Result<PathBuf, FlagError> {
    Ok(PathBuf::from(v.get(name)))
}

/// A path, when given.
pub(super) fn optional_path(v: &Values, name: &'static str) -> Result<Option<PathBuf>, FlagError> {
    Ok(Some(v.get(name))
        .filter(|f| !f.is_empty())
        .map(PathBuf::from))
}

/// Pool-scope resources: `group/version/resource`, comma-separated (empty: none).
pub(super) fn gvrs(
    v: &Values,
    name: &'static str,
) -> Result<Vec<crate::multiplexer::Gvr>, FlagError> {
    crate::multiplexer::Gvr::parse_list(v.get(name)).map_err(|_| {
        v.invalid(
            name,
            "group/version/resource of resources with a known Kind, comma-separated (e.g. /v1/services,discovery.k8s.io/v1/endpointslices)",
        )
    })
}

/// An IP address.
pub(super) fn ip(v: &Values, name: &'static str) -> Result<IpAddr, FlagError> {
    v.parse(name, "an IPv4 or IPv6 address")
}

/// An IP address, when given.
pub(super) fn optional_ip(v: &Values, name: &'static str) -> Result<Option<IpAddr>, FlagError> {
    match v.get(name) {
        "" => Ok(None),
        _ => ip(v, name).map(Some),
    }
}

/// A port number.
pub(super) fn port(v: &Values, name: &'static str) -> Result<u16, FlagError> {
    v.parse(name, "a port number 0-65535")
}

/// `true` or `false`.
pub(super) fn boolean(v: &Values, name: &'static str) -> Result<bool, FlagError> {
    v.parse(name, "true or false")
}

/// A log verbosity.
pub(super) fn verbosity(v: &Values, name: &'static str) -> Result<u8, FlagError> {
    v.parse(name, "a verbosity level 0-10")
}

/// A count, at least 1.
pub(super) fn count(v: &Values, name: &'static str) -> Result<u32, FlagError> {
    Ok(v.parse::<u32>(name, "a count")?.max(1))
}

/// Whole seconds, at least 1.
pub(super) fn seconds(v: &Values, name: &'static str) -> Result<Duration, FlagError> {
    Ok(Duration::from_secs(
        v.parse::<u64>(name, "a number of seconds")?.max(1),
    ))
}

/// A Go-style duration.
pub(super) fn duration(v: &Values, name: &'static str) -> Result<Duration, FlagError> {
    parse_duration(v.get(name)).ok_or_else(|| v.invalid(name, "a duration such as 40s, 30m or 1h"))
}

/// A Go-style duration above zero.
pub(super) fn positive_duration(v: &Values, name: &'static str) -> Result<Duration, FlagError> {
    let d = duration(v, name)?;
    if d.is_zero() {
        return Err(v.invalid(name, "a duration above zero such as 10s"));
    }
    Ok(d)
}

/// Minutes as a bare integer (upstream's form), or a duration; above zero.
pub(super) fn minutes_or_duration(v: &Values, name: &'static str) -> Result<Duration, FlagError> {
    let raw = v.get(name);
    let every = match raw.trim().parse::<u64>() {
        Ok(minutes) => Some(Duration::from_secs(minutes.saturating_mul(60))),
        Err(_) => parse_duration(raw),
    };
    every.filter(|d| !d.is_zero()).ok_or_else(|| {
        v.invalid(
            name,
            "minutes (a positive integer) or a duration such as 30s",
        )
    })
}

/// A byte count, 0 allowed.
pub(super) fn bytes(v: &Values, name: &'static str) -> Result<u64, FlagError> {
    parse_bytes(v.get(name))
        .ok_or_else(|| v.invalid(name, "a byte count such as 268435456 or 256Mi"))
}

/// A byte count above zero.
pub(super) fn positive_bytes(v: &Values, name: &'static str) -> Result<usize, FlagError> {
    parse_bytes(v.get(name))
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| v.invalid(name, "a positive byte count such as 67108864 or 64Mi"))
}

/// Comma-separated `[https://]host[:port]` addresses, at least one: as upstream, the scheme
/// is https when none is given, and any other scheme is refused.
pub(super) fn servers(v: &Values, name: &'static str) -> Result<Vec<ServerUrl>, FlagError> {
    let raw = required(v, name)?;
    list(&raw)
        .map(|s| {
            ServerUrl::parse(s).ok_or(FlagError::Invalid {
                flag: name,
                value: s.to_string(),
                expected: "comma-separated [https://]host[:port][/path] addresses (https is assumed, port 443 unless given)",
            })
        })
        .collect()
}

fn choice<T: Copy>(
    v: &Values,
    name: &'static str,
    choices: &[(&str, T)],
    expected: &'static str,
) -> Result<T, FlagError> {
    let given = v.get(name);
    choices
        .iter()
        .find(|(n, _)| *n == given)
        .map(|(_, c)| *c)
        .ok_or_else(|| v.invalid(name, expected))
}

/// `edge` or `cloud`.
pub(super) fn working_mode(v: &Values, name: &'static str) -> Result<WorkingMode, FlagError> {
    let choices = [("edge", WorkingMode::Edge), ("cloud", WorkingMode::Cloud)];
    choice(v, name, &choices, "edge or cloud")
}

/// `rr` or `priority`.
pub(super) fn lb_mode(v: &Values, name: &'static str) -> Result<LbMode, FlagError> {
    let choices = [("rr", LbMode::RoundRobin), ("priority", LbMode::Priority)];
    choice(v, name, &choices, "rr or priority")
}

/// `token` or `kubeletcertificate`.
pub(super) fn bootstrap_mode(v: &Values, name: &'static str) -> Result<BootstrapMode, FlagError> {
    let choices = [
        ("token", BootstrapMode::Token),
        ("kubeletcertificate", BootstrapMode::KubeletCertificate),
    ];
    choice(v, name, &choices, "token or kubeletcertificate")
}

/// A bootstrap token, when given; never echoed in an error.
pub(super) fn join_token(v: &Values, name: &'static str) -> Result<Option<String>, FlagError> {
    let token = Some(v.get(name).trim())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    if let Some(t) = &token {
        if crate::certs::discovery::Token::parse(t).is_err() {
            return Err(FlagError::Invalid {
                flag: name,
                value: "<redacted>".into(),
                expected: "a bootstrap token [a-z0-9]{6}.[a-z0-9]{16}",
            });
        }
    }
    Ok(token)
}

/// Comma-separated `sha256:<hex>` pins.
pub(super) fn pins(v: &Values, name: &'static str) -> Result<Vec<[u8; 32]>, FlagError> {
    list(v.get(name))
        .map(|h| {
            crate::certs::discovery::parse_pin(h).ok_or(FlagError::Invalid {
                flag: name,
                value: h.to_string(),
                expected: "sha256:<64 hex digits>",
            })
        })
        .collect()
}

/// The dummy IP: inside 169.254.0.0/16, not in 169.254.31.0/24, not 169.254.1.1
/// (reference §1.2), or any IPv6 address.
pub(super) fn dummy_ip(v: &Values, name: &'static str) -> Result<IpAddr, FlagError> {
    let ip = ip(v, name)?;
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
        Err(v.invalid(
            name,
            "an address in 169.254.0.0/16 outside 169.254.31.0/24, not 169.254.1.1",
        ))
    }
}

/// A network interface name (1 to 15 characters).
pub(super) fn interface(v: &Values, name: &'static str) -> Result<String, FlagError> {
    let n = v.get(name);
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
        return Err(v.invalid(name, "an interface name of 1 to 15 characters"));
    }
    Ok(n.to_string())
}

//! Where the cloud is: one apiserver's URL, and how requests are spread over several.

use std::fmt;

/// How requests are spread over several `--server-addr` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbMode {
    /// Round robin, skipping servers that do not answer.
    RoundRobin,
    /// The first server that answers, in flag order.
    Priority,
}

/// One cloud apiserver: `https://host:port[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// A path prefix prepended to every request path (usually empty).
    pub path_prefix: String,
}

impl ServerUrl {
    /// Parses `https://host[:port][/prefix]` or `host[:port]`; any scheme but https is refused,
    /// as upstream does.
    pub fn parse(s: &str) -> Option<ServerUrl> {
        let rest = match s.split_once("://") {
            Some(("https", rest)) => rest,
            Some(_) => return None,
            None => s,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => 443,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            return None;
        }
        Some(ServerUrl {
            host,
            port,
            path_prefix: path.to_string(),
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.path_prefix)
    }
}

//! Kubeconfig files: the bootstrap kubeconfig (a token), `yurthub.conf` (the node's
//! certificate) and the one embedded in `kube-public/cluster-info`.
//!
//! Kubeconfigs are YAML. The hub reads the subset `kubectl config view` and kubeadm write
//! (block mappings and sequences, plain and quoted scalars, `{}`/`[]`, comments) and JSON,
//! without a YAML library; it writes plain block YAML.
//!
//! ```
//! use yurthub::certs::kubeconfig::Kubeconfig;
//! let k = Kubeconfig::parse("clusters:\n- cluster:\n    server: https://10.0.0.1:6443\n  name: k\nusers:\n- name: u\n  user:\n    token: abcdef.0123456789abcdef\n").unwrap();
//! assert_eq!(k.server, "https://10.0.0.1:6443");
//! assert_eq!(k.token.as_deref(), Some("abcdef.0123456789abcdef"));
//! ```

use base64::Engine;
use serde_json::{Map, Value};
use std::fmt;

/// Why a kubeconfig could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigError(pub String);

impl fmt::Display for KubeconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kubeconfig: {}", self.0)
    }
}

impl std::error::Error for KubeconfigError {}

/// What the hub takes from a kubeconfig: the current context's cluster and user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kubeconfig {
    /// `cluster.server`.
    pub server: String,
    /// `cluster.certificate-authority-data`, decoded (PEM).
    pub ca_data: Option<Vec<u8>>,
    /// `cluster.certificate-authority`, a file.
    pub ca_file: Option<String>,
    /// `user.token`.
    pub token: Option<String>,
    /// `user.client-certificate`.
    pub client_certificate: Option<String>,
    /// `user.client-key`.
    pub client_key: Option<String>,
}

fn err(s: impl Into<String>) -> KubeconfigError {
    KubeconfigError(s.into())
}

struct Line<'a> {
    indent: usize,
    text: &'a str,
    number: usize,
}

/// Strips a comment that starts outside quotes.
fn uncomment(s: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => {
                return s[..i].trim_end()
            }
            _ => {}
        }
    }
    s.trim_end()
}

fn scalar(s: &str, number: usize) -> Result<Value, KubeconfigError> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| err(format!("line {number}: unterminated string")))?;
        return serde_json::from_str::<String>(&format!("\"{inner}\""))
            .map(Value::String)
            .map_err(|_| err(format!("line {number}: bad escape in string")));
    }
    if let Some(inner) = s.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| err(format!("line {number}: unterminated string")))?;
        return Ok(Value::String(inner.replace("''", "'")));
    }
    Ok(match s {
        "" | "~" | "null" => Value::Null,
        "{}" => Value::Object(Map::new()),
        "[]" => Value::Array(Vec::new()),
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(s.to_string()),
    })
}

/// Splits `key: value` (the value may be empty); `None` when the line is no mapping entry.
fn key_value(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = rest[end + 1..].strip_prefix(':')?;
        return Some((&rest[..end], after));
    }
    let pos = text
        .find(": ")
        .or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
    Some((&text[..pos], &text[pos + 1..]))
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The node whose lines are indented at least `min` (its first line sets the level).
    fn node(&mut self, min: usize) -> Result<Value, KubeconfigError> {
        let Some(first) = self.lines.get(self.pos) else {
            return Ok(Value::Null);
        };
        if first.indent < min {
            return Ok(Value::Null);
        }
        if first.text.starts_with("- ") || first.text == "-" {
            self.sequence(first.indent)
        } else {
            self.mapping(first.indent)
        }
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, KubeconfigError> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent != indent || !(line.text.starts_with("- ") || line.text == "-") {
                break;
            }
            let rest = line.text[1..].trim_start();
            let number = line.number;
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.node(indent + 1)?);
            } else if key_value(rest).is_some() {
                // "- key: value" opens a mapping whose keys sit where "key" does.
                let inner = indent + (line.text.len() - rest.len());
                self.lines[self.pos] = Line {
                    indent: inner,
                    text: rest,
                    number,
                };
                items.push(self.mapping(inner)?);
            } else {
                self.pos += 1;
                items.push(scalar(rest, number)?);
            }
        }
        Ok(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, KubeconfigError> {
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(err(format!("line {}: unexpected indentation", line.number)));
            }
            let number = line.number;
            let (key, value) = key_value(line.text)
                .ok_or_else(|| err(format!("line {number}: expected `key: value`")))?;
            let key = key.trim().to_string();
            let value = value.trim();
            self.pos += 1;
            let v = if value.is_empty() {
                // A nested block; a sequence may sit at the key's own indentation.
                match self.lines.get(self.pos) {
                    Some(next) if next.indent == indent && next.text.starts_with('-') => {
                        self.sequence(indent)?
                    }
                    _ => self.node(indent + 1)?,
                }
            } else if value == "|" || value.starts_with("|-") || value == ">" {
                return Err(err(format!(
                    "line {number}: block scalars are not supported"
                )));
            } else {
                scalar(value, number)?
            };
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }
}

/// Parses the YAML subset (or JSON) into a JSON value.
pub fn parse_yaml(text: &str) -> Result<Value, KubeconfigError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| err(e.to_string()));
    }
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.contains('\t') && raw.trim_start().len() < raw.len() && raw.starts_with('\t') {
            return Err(err(format!(
                "line {}: tabs are not allowed for indentation",
                i + 1
            )));
        }
        let body = uncomment(raw);
        let t = body.trim_start();
        if t.is_empty() || t == "---" {
            continue;
        }
        lines.push(Line {
            indent: body.len() - t.len(),
            text: t,
            number: i + 1,
        });
    }
    let mut p = Parser { lines, pos: 0 };
    let v = p.node(0)?;
    if let Some(l) = p.lines.get(p.pos) {
        return Err(err(format!("line {}: unexpected content", l.number)));
    }
    Ok(v)
}

/// The entry of a named list (`clusters`, `users`, `contexts`) called `name`, or the first.
fn named<'v>(doc: &'v Value, list: &str, inner: &str, name: Option<&str>) -> Option<&'v Value> {
    let items = doc[list].as_array()?;
    let item = match name {
        Some(n) => items.iter().find(|i| i["name"] == n),
        None => items.first(),
    }?;
    Some(&item[inner])
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

impl Kubeconfig {
    /// Reads the current context's cluster and user (the first of each without one).
    pub fn parse(text_: &str) -> Result<Kubeconfig, KubeconfigError> {
        let doc = parse_yaml(text_)?;
        let context = text(&doc["current-context"])
            .and_then(|c| named(&doc, "contexts", "context", Some(&c)).cloned());
        let cluster_name = context.as_ref().and_then(|c| text(&c["cluster"]));
        let user_name = context.as_ref().and_then(|c| text(&c["user"]));
        let cluster = named(&doc, "clusters", "cluster", cluster_name.as_deref())
            .ok_or_else(|| err("no cluster"))?;
        let server = text(&cluster["server"]).ok_or_else(|| err("the cluster has no server"))?;
        let ca_data = match text(&cluster["certificate-authority-data"]) {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| err(format!("certificate-authority-data: {e}")))?,
            ),
            None => None,
        };
        let null = Value::Null;
        let user = named(&doc, "users", "user", user_name.as_deref()).unwrap_or(&null);
        Ok(Kubeconfig {
            server,
            ca_data,
            ca_file: text(&cluster["certificate-authority"]),
            token: text(&user["token"]),
            client_certificate: text(&user["client-certificate"]),
            client_key: text(&user["client-key"]),
        })
    }

    /// The bootstrap kubeconfig upstream writes: cluster `kubernetes`, user
    /// `token-bootstrap-client`.
    pub fn bootstrap_yaml(server: &str, ca_pem: &[u8], token: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: token-bootstrap-client\n  name: token-bootstrap-client@kubernetes\ncurrent-context: token-bootstrap-client@kubernetes\nusers:\n- name: token-bootstrap-client\n  user:\n    token: {token}\n"
        )
    }

    /// `yurthub.conf`: the node certificate for `server` (reference §7.1).
    pub fn client_yaml(server: &str, ca_pem: &[u8], cert_file: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\nusers:\n- name: default-auth\n  user:\n    client-certificate: {cert_file}\n    client-key: {cert_file}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_kubeconfig() {
        // As kube-apiserver 1.36 serves it in kube-public/cluster-info (captures/13).
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: aGVsbG8=\ncontexts: null\nusers: null\ncurrent-context: \"\"\npreferences: {}\n";
        let k = Kubeconfig::parse(text).unwrap();
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.ca_data.as_deref(), Some(&b"hello"[..]));
        assert_eq!(k.token, None);
    }

    #[test]
    fn written_files_read_back() {
        let b = Kubeconfig::parse(&Kubeconfig::bootstrap_yaml(
            "https://a:6443",
            b"CA",
            "abcdef.0123456789abcdef",
        ))
        .unwrap();
        assert_eq!(b.server, "https://a:6443");
        assert_eq!(b.ca_data.as_deref(), Some(&b"CA"[..]));
        assert_eq!(b.token.as_deref(), Some("abcdef.0123456789abcdef"));
        let c = Kubeconfig::parse(&Kubeconfig::client_yaml(
            "https://a:6443",
            b"CA",
            "/p/yurthub-current.pem",
        ))
        .unwrap();
        assert_eq!(
            c.client_certificate.as_deref(),
            Some("/p/yurthub-current.pem")
        );
        assert_eq!(c.token, None);
    }

    #[test]
    fn current_context_picks_the_user_and_comments_are_ignored() {
        let text = "# written by hand\nclusters:\n  - name: one\n    cluster:\n      server: 'https://one'  # first\n  - name: two\n    cluster: {server: x}\n";
        assert_eq!(Kubeconfig::parse(text).unwrap().server, "https://one");
        let text = "current-context: b\ncontexts:\n- name: a\n  context:\n    cluster: c\n    user: ua\n- name: b\n  context:\n    cluster: c\n    user: ub\nclusters:\n- name: c\n  cluster:\n    server: \"https://c:6443\"\nusers:\n- name: ua\n  user:\n    token: aaaaaa.aaaaaaaaaaaaaaaa\n- name: ub\n  user:\n    token: bbbbbb.bbbbbbbbbbbbbbbb # the one\n";
        let k = Kubeconfig::parse(text).unwrap();
        assert_eq!(k.server, "https://c:6443");
        assert_eq!(k.token.as_deref(), Some("bbbbbb.bbbbbbbbbbbbbbbb"));
    }

    #[test]
    fn json_and_bad_input() {
        let k =
            Kubeconfig::parse(r#"{"clusters":[{"name":"c","cluster":{"server":"https://j"}}]}"#)
                .unwrap();
        assert_eq!(k.server, "https://j");
        for bad in [
            "",
            "clusters: []\n",
            "clusters:\n- cluster:\n    server: \"open\n",
            "a: 1\n  b: 2\n",
            "just text\n",
            "clusters:\n- cluster:\n    certificate-authority-data: '%%%'\n    server: s\n",
        ] {
            assert!(Kubeconfig::parse(bad).is_err(), "{bad:?}");
        }
    }
}

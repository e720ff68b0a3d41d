//! Kubeconfig files: the bootstrap kubeconfig (a token), `yurthub.conf` (the node's
//! certificate) and the one embedded in `kube-public/cluster-info`.
//!
//! Kubeconfigs are YAML (or JSON), read by [`super::yaml`] as kubectl reads them; a file's
//! relative paths (`certificate-authority`, `client-certificate`, `client-key`, `tokenFile`)
//! are relative to its own directory, and `tokenFile`'s token is read from it
//! ([`Kubeconfig::read`]). The hub writes plain block YAML.
//!
//! ```
//! use yurthub::certs::kubeconfig::Kubeconfig;
//! let k = Kubeconfig::parse("clusters:\n- cluster:\n    server: https://10.0.0.1:6443\n  name: k\nusers:\n- name: u\n  user:\n    token: abcdef.0123456789abcdef\n").unwrap();
//! assert_eq!(k.server, "https://10.0.0.1:6443");
//! assert_eq!(k.token.as_deref(), Some("abcdef.0123456789abcdef"));
//! ```

use base64::Engine;
use serde_json::Value;
use std::fmt;
use std::path::Path;

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
    /// `user.token` (or, through [`Kubeconfig::read`], the content of `user.tokenFile`).
    pub token: Option<String>,
    /// `user.tokenFile`.
    pub token_file: Option<String>,
    /// `user.client-certificate`.
    pub client_certificate: Option<String>,
    /// `user.client-key`.
    pub client_key: Option<String>,
}

fn err(s: impl Into<String>) -> KubeconfigError {
    KubeconfigError(s.into())
}

/// Parses a kubeconfig's YAML (or JSON) into a JSON value.
pub fn parse_yaml(text: &str) -> Result<Value, KubeconfigError> {
    super::yaml::parse(text).map_err(|e| err(e.to_string()))
}

/// A token file's token: a regular file of at most 64 KiB (never a FIFO that blocks, or
/// `/dev/zero`), trimmed.
fn read_token(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text)?;
    Ok(text.trim().to_string())
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
    /// Reads the kubeconfig file at `path` as kubectl does: relative paths in it are relative
    /// to its directory, and a `tokenFile` that can be read gives the token (client-go
    /// prefers it to `token`).
    pub fn read(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mut k = Kubeconfig::parse(&text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut Option<String>| {
            if let Some(rel) = p.as_ref().filter(|r| !Path::new(r).is_absolute()) {
                *p = Some(dir.join(rel).to_string_lossy().into_owned());
            }
        };
        resolve(&mut k.ca_file);
        resolve(&mut k.client_certificate);
        resolve(&mut k.client_key);
        resolve(&mut k.token_file);
        if let Some(file) = &k.token_file {
            match read_token(Path::new(file)) {
                Ok(t) if !t.is_empty() => k.token = Some(t),
                Ok(_) => log::warn!("{}: tokenFile {file} is empty", path.display()),
                // The rest of the kubeconfig (its CA) is still good: without the token the
                // caller says what is missing.
                Err(e) => log::warn!("{}: tokenFile {file}: {e}", path.display()),
            }
        }
        Ok(k)
    }

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
            token_file: text(&user["tokenFile"]),
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

    /// A bootstrap kubeconfig kubectl reads, in the forms operators and tools write.
    #[test]
    fn every_form_kubectl_reads() {
        let flow = "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {server: \"https://10.0.0.1:6443\", certificate-authority-data: \"aGVsbG8=\"}\nusers:\n- {name: b, user: {token: 'abcdef.0123456789abcdef'}}\ncontexts: [{name: c, context: {cluster: k, user: b}}]\ncurrent-context: c\n";
        let json = r#"{"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443",
                          "certificate-authority-data": "aGVsbG8="}}],
            "users": [{"name": "b", "user": {"token": "abcdef.0123456789abcdef"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "b"}}],
            "current-context": "c"}"#;
        let folded = "# bootstrap\n---\nclusters:\n  - name: k\n    cluster:\n      server: >-\n        https://10.0.0.1:6443\n      \"certificate-authority-data\": |\n        aGVsbG8=\n    # the user\nusers:\n  - &u\n    name: b\n    user:\n      token: \"abcdef.\\\n        0123456789abcdef\"\n";
        for (what, text) in [("flow", flow), ("json", json), ("folded", folded)] {
            let k = Kubeconfig::parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(k.server, "https://10.0.0.1:6443", "{what}");
            assert_eq!(k.ca_data.as_deref(), Some(&b"hello"[..]), "{what}");
            assert_eq!(
                k.token.as_deref(),
                Some("abcdef.0123456789abcdef"),
                "{what}"
            );
        }
    }

    #[test]
    fn relative_paths_and_token_files_are_the_files_own() {
        let dir = std::env::temp_dir().join(format!("yurthub-kubeconfig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        std::fs::write(dir.join("pki/token"), "abcdef.0123456789abcdef\n").unwrap();
        let conf = dir.join("bootstrap.conf");
        std::fs::write(
            &conf,
            "clusters:\n- cluster:\n    server: https://a:6443\n    certificate-authority: pki/ca.crt\nusers:\n- user:\n    tokenFile: pki/token\n    token: zzzzzz.zzzzzzzzzzzzzzzz\n",
        )
        .unwrap();
        let k = Kubeconfig::read(&conf).unwrap();
        assert_eq!(
            k.ca_file,
            Some(dir.join("pki/ca.crt").to_string_lossy().into_owned())
        );
        assert_eq!(k.token.as_deref(), Some("abcdef.0123456789abcdef"));
        // An unreadable token file leaves the token out, and the rest readable (its CA).
        std::fs::write(&conf, "clusters:\n- cluster:\n    server: https://a:6443\n    certificate-authority-data: aGVsbG8=\nusers:\n- user:\n    tokenFile: /nonexistent/token\n").unwrap();
        let k = Kubeconfig::read(&conf).unwrap();
        assert_eq!((k.token, k.ca_data.as_deref()), (None, Some(&b"hello"[..])));
        std::fs::write(&conf, "clusters:\n- cluster:\n    server: https://a:6443\nusers:\n- user:\n    tokenFile: /dev/zero\n").unwrap();
        assert_eq!(Kubeconfig::read(&conf).unwrap().token, None);
        let _ = std::fs::remove_dir_all(&dir);
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

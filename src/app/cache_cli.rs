//! `yurthub cache <command>`: the cache as an operator inspects it, with the hub running or
//! not. It only reads files, so it is safe beside a running hub.
//!
//! ```text
//! yurthub cache ls [component[/resource[/namespace]]]   objects, bytes, newest write
//! yurthub cache get <component/resource/[namespace/]name>  the object, pretty JSON
//! yurthub cache verify                                  parses every file; exit 1 on damage
//! yurthub cache stats                                   totals per component and resource
//! yurthub cache why <url> --user-agent UA [--method M] [--accept A] [--node-name N]
//!                                                       would it be cached, where, and what
//!                                                       answers it offline
//! yurthub cache evict <component>[/<resource>]          removes those objects and views
//!   [--disk-cache-path DIR] [--json] [--encrypt-secrets-key-file F]
//! ```
//!
//! Only `evict` changes anything; with the hub running, the evicted lists fill again at the
//! components' next list.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::cache::seal::{is_sealed, is_sealed_path, SealError, Sealer};
use crate::cache::store::{
    files_below as walk, is_json_object, is_temp, read_regular, valid_part, INTERNAL_DIR,
    QUARANTINE_DIR,
};
use crate::cache::views::{self, ViewId};
use crate::cache::{Agents, Shape, ViewSnapshot};

const USAGE: &str = "usage: yurthub cache <ls [path] | get <path> | verify | stats | why <url> --user-agent UA | evict <component>[/<resource>]>
       [--disk-cache-path DIR] [--json] [--encrypt-secrets-key-file FILE]
       why also takes [--method GET] [--accept TYPE] [--node-name NODE] [--namespace NS of yurt-hub-cfg]";

/// Why a `yurthub cache` command failed: printed as `yurthub cache: <error>`, exit status 1.
#[derive(Debug)]
pub enum CliError {
    /// A file or directory could not be read or removed.
    Io {
        /// The path.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The output could not be written.
    Output(std::io::Error),
    /// A path given that is not one inside the cache.
    NotInside(String),
    /// A path inside the cache whose link leads out of it.
    LeadsOut(String),
    /// Nothing is cached at that path.
    NothingThere(PathBuf),
    /// The cache directory does not exist.
    NoCache(PathBuf),
    /// `evict` takes `<component>` or `<component>/<resource>`.
    BadEvictTarget(String),
    /// `why` needs `--user-agent`.
    NoUserAgent,
    /// `why` was given a URL that is no API request.
    BadUrl {
        /// The URL.
        url: String,
        /// Why it is none.
        error: crate::kube::ClassifyError,
    },
    /// A sealed file could not be opened (no key, a wrong key, or the key file).
    Seal {
        /// What was being opened.
        what: String,
        /// Why it failed.
        error: SealError,
    },
    /// A cached file the hub would not read either (a link, a FIFO, too large).
    Unreadable(crate::cache::store::ReadError),
    /// A cached file that is not JSON.
    NotJson {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Output(e) => write!(f, "writing the output: {e}"),
            Self::NotInside(rel) => write!(f, "{rel}: not a path inside the cache"),
            Self::LeadsOut(rel) => write!(f, "{rel}: leads out of the cache"),
            Self::NothingThere(rel) => write!(f, "{}: nothing cached there", rel.display()),
            Self::NoCache(root) => write!(
                f,
                "{}: no such cache directory (the hub's --disk-cache-path; give it with --disk-cache-path)",
                root.display()
            ),
            Self::BadEvictTarget(what) => {
                write!(f, "{what}: expected <component> or <component>/<resource>")
            }
            Self::NoUserAgent => write!(
                f,
                "why needs --user-agent (the component is its part before the first '/')"
            ),
            Self::BadUrl { url, error } => write!(f, "{url}: {error}"),
            Self::Seal { what, error } => write!(f, "{what}: {error}"),
            Self::Unreadable(e) => write!(f, "{e}; the hub quarantines such files"),
            Self::NotJson { path, error } => write!(
                f,
                "{}: not JSON ({error}); `yurthub cache verify` lists such files",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    /// Errors of `out`, the one writer every command writes to without a path.
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |error| CliError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The command line, flags apart from the words.
struct Opts {
    root: PathBuf,
    json: bool,
    key_file: Option<PathBuf>,
    user_agent: Option<String>,
    method: String,
    accept: Option<String>,
    node: String,
    namespace: String,
}

impl Opts {
    fn sealer(&self) -> Result<Option<Sealer>, CliError> {
        self.key_file
            .as_ref()
            .map(|k| {
                Sealer::from_key_file(k, None).map_err(|error| CliError::Seal {
                    what: k.display().to_string(),
                    error,
                })
            })
            .transpose()
    }
}

/// Objects, bytes and the newest write below one entry.
#[derive(Default, Clone, Copy)]
struct Tally {
    objects: u64,
    bytes: u64,
    newest: Option<SystemTime>,
}

impl Tally {
    fn add_file(&mut self, path: &Path) {
        if let Ok(m) = fs::symlink_metadata(path) {
            self.objects += 1;
            self.bytes += m.len();
            let t = m.modified().ok();
            if t > self.newest {
                self.newest = t;
            }
        }
    }
}

fn time(t: Option<SystemTime>) -> String {
    t.map(crate::kube::time::rfc3339)
        .unwrap_or_else(|| "-".into())
}

/// A path below the cache root, refusing `..` and absolute paths.
fn below(root: &Path, rel: &str) -> Result<PathBuf, CliError> {
    let p = Path::new(rel.trim_matches('/'));
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(CliError::NotInside(rel.to_string()));
    }
    Ok(root.join(p))
}

fn ls(
    root: &Path,
    rel: Option<&str>,
    json_out: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let dir = below(root, rel.unwrap_or(""))?;
    let entries = fs::read_dir(&dir).map_err(io_at(&dir))?;
    let mut rows = Vec::new();
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if (rel.is_none() && name == INTERNAL_DIR) || is_temp(&p) {
            continue;
        }
        let mut t = Tally::default();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let name = if meta.is_dir() {
            let mut files = Vec::new();
            walk(&p, &mut files);
            files.iter().for_each(|f| t.add_file(f));
            name
        } else {
            t.add_file(&p);
            // At the top, a file is the answer to a path such as /version, not a component.
            if rel.is_none() {
                format!("/{name}")
            } else {
                name
            }
        };
        rows.push((name, t));
    }
    if json_out {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, t)| json!({"name": n, "objects": t.objects, "bytes": t.bytes, "newest": time(t.newest)}))
            .collect();
        writeln!(out, "{}", Value::Array(v))?;
        return Ok(0);
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    let mut text = format!(
        "{:<width$}  {:>8}  {:>12}  NEWEST WRITE\n",
        "NAME", "OBJECTS", "BYTES"
    );
    for (n, t) in &rows {
        text.push_str(&format!(
            "{n:<width$}  {:>8}  {:>12}  {}\n",
            t.objects,
            t.bytes,
            time(t.newest)
        ));
    }
    out.write_all(text.as_bytes())?;
    Ok(0)
}

fn get(opts: &Opts, rel: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let root = &opts.root;
    let path = below(root, rel)?;
    // Through symbolic links a path could leave the cache; it must not.
    let real = fs::canonicalize(&path).map_err(io_at(&path))?;
    let real_root = fs::canonicalize(root).map_err(io_at(root))?;
    if !real.starts_with(&real_root) {
        return Err(CliError::LeadsOut(rel.to_string()));
    }
    // As the hub names it (`a//b` and `a/./b` are `a/b`): the path is sealed into the file.
    let inside: PathBuf = path
        .strip_prefix(root)
        .unwrap_or(&path)
        .components()
        .collect();
    let inside = inside.as_path();
    let mut bytes = match crate::cache::store::read_regular(root, inside) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(CliError::Io {
                path: path.clone(),
                error: std::io::ErrorKind::NotFound.into(),
            })
        }
        Err(crate::cache::store::ReadError::Io(path, error)) => {
            return Err(CliError::Io { path, error })
        }
        Err(e) => return Err(CliError::Unreadable(e)),
    };
    if is_sealed_path(inside) && is_sealed(&bytes) {
        let sealer = opts.sealer()?.ok_or(CliError::Seal {
            what: rel.to_string(),
            error: SealError::NoKey,
        })?;
        bytes = sealer
            .open(inside, &bytes)
            .map_err(|error| CliError::Seal {
                what: rel.to_string(),
                error,
            })?;
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|error| CliError::NotJson {
        path: path.clone(),
        error,
    })?;
    // A Value always serialises.
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
    writeln!(out, "{pretty}")?;
    Ok(0)
}

fn verify(opts: &Opts, out: &mut dyn Write) -> Result<i32, CliError> {
    let (root, json_out) = (&opts.root, opts.json);
    let sealer = opts.sealer()?;
    if !root.is_dir() {
        return Err(CliError::NoCache(root.to_path_buf()));
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    let quarantine = root.join(QUARANTINE_DIR);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !f.starts_with(&quarantine))
        .collect();
    let bad: Vec<String> = files
        .iter()
        // A file deleted meanwhile (the hub runs on) is not damage.
        .filter(
            |f| match read_regular(root, f.strip_prefix(root).unwrap_or(f)) {
                // With the key, a sealed Secret must also open where it lies.
                Ok(Some(b)) => {
                    let inside = f.strip_prefix(root).unwrap_or(f);
                    !is_json_object(&b)
                        || (is_sealed_path(inside) && is_sealed(&b))
                            && sealer.as_ref().is_some_and(|s| {
                                s.open(inside, &b).map_or(true, |p| !is_json_object(&p))
                            })
                }
                Ok(None) => false,
                // A link, a FIFO, a file too large: the hub quarantines what it would not read.
                Err(_) => true,
            },
        )
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    if json_out {
        writeln!(
            out,
            "{}",
            json!({"checked": files.len(), "unparsable": bad})
        )?;
    } else {
        let mut text = format!("{} files checked, {} unparsable\n", files.len(), bad.len());
        for b in &bad {
            text.push_str(&format!("unparsable: {b}\n"));
        }
        out.write_all(text.as_bytes())?;
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

fn stats(root: &Path, json_out: bool, out: &mut dyn Write) -> Result<i32, CliError> {
    let mut per: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut files = Vec::new();
    walk(root, &mut files);
    for f in &files {
        let rel = f.strip_prefix(root).unwrap_or(f);
        let mut parts = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let (Some(component), Some(mut resource)) = (parts.next(), parts.next()) else {
            continue; // top-level files: /version and discovery answers
        };
        if resource == crate::cache::METADATA_TREE {
            // `<component>/partialobjectmetadatas.v1.meta.k8s.io/<resource>/...`
            let Some(inner) = parts.next() else { continue };
            resource = format!("{resource}/{inner}");
        }
        if component == INTERNAL_DIR || component == QUARANTINE_DIR {
            continue;
        }
        per.entry((component, resource)).or_default().add_file(f);
    }
    let total = per.values().fold(Tally::default(), |mut a, t| {
        a.objects += t.objects;
        a.bytes += t.bytes;
        a
    });
    if json_out {
        let v: Vec<Value> = per
            .iter()
            .map(|((c, r), t)| json!({"component": c, "resource": r, "objects": t.objects, "bytes": t.bytes}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"resources": v, "objects": total.objects, "bytes": total.bytes})
        )?;
        return Ok(0);
    }
    let mut text = format!(
        "{:<24}  {:<40}  {:>8}  {:>12}\n",
        "COMPONENT", "RESOURCE", "OBJECTS", "BYTES"
    );
    for ((c, r), t) in &per {
        text.push_str(&format!(
            "{c:<24}  {r:<40}  {:>8}  {:>12}\n",
            t.objects, t.bytes
        ));
    }
    text.push_str(&format!(
        "{:<24}  {:<40}  {:>8}  {:>12}\n",
        "total", "", total.objects, total.bytes
    ));
    out.write_all(text.as_bytes())?;
    Ok(0)
}

/// The `cache_agents` of the yurt-hub-cfg the hub cached for itself (in `namespace`), if any.
fn cached_agents(root: &Path, namespace: &str) -> (String, Option<PathBuf>) {
    let rel = Path::new("yurthub/configmaps.v1.core")
        .join(namespace)
        .join(super::hubcfg::HUB_CONFIGMAP);
    let value = fs::read(root.join(&rel))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["data"]["cache_agents"].as_str().map(str::to_string));
    match value {
        Some(v) => (v, Some(rel)),
        None => (String::new(), None),
    }
}

/// Would `url` be cached for `--user-agent`, under which key, and what answers it offline.
fn why(opts: &Opts, url: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let ua = opts.user_agent.as_deref().ok_or(CliError::NoUserAgent)?;
    // A full URL or a path: what reaches the hub is the path and query.
    let target = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    let ri = crate::kube::RequestInfo::classify(&opts.method, target).map_err(|error| {
        CliError::BadUrl {
            url: url.to_string(),
            error,
        }
    })?;
    let component = crate::kube::component(Some(ua));
    let (agents_value, agents_from) = cached_agents(&opts.root, &opts.namespace);
    let agents = Agents::new(&opts.node, &agents_value);
    let query = crate::http::url::Query::parse(target.split_once('?').map_or("", |(_, q)| q));
    let t = crate::cache::target(
        &ri,
        component.as_deref(),
        &agents,
        &query,
        opts.accept.as_deref(),
        crate::cache::owners::Owner::Node,
    );
    let mut report = json!({
        "request": format!("{} {target}", opts.method),
        "component": component,
        "verb": ri.verb,
        "cacheAgents": {"value": agents_value, "from": agents_from.map(|p| p.display().to_string())},
    });
    let offline;
    match &t {
        Err(reason) => {
            report["cached"] = json!(false);
            report["reason"] = json!(reason.to_string());
            offline = "not answered from the cache: forwarded to the cloud only".to_string();
        }
        Ok(t) => {
            report["cached"] = json!(true);
            report["resource"] = json!(t.resource);
            let dir = Path::new(&t.component).join(&t.resource);
            match t.shape {
                Shape::Object => {
                    let name = if t.name.is_empty() {
                        "<name of the created object>"
                    } else {
                        &t.name
                    };
                    let key = if t.namespace.is_empty() {
                        dir.join(name)
                    } else {
                        dir.join(&t.namespace).join(name)
                    };
                    let file = opts.root.join(&key);
                    let meta = fs::symlink_metadata(&file).ok();
                    report["key"] = json!(key.display().to_string());
                    report["exists"] = json!(meta.is_some());
                    report["written"] = json!(time(meta.and_then(|m| m.modified().ok())));
                    offline = if ri.verb == "get" {
                        format!("answered from {}", key.display())
                    } else {
                        format!(
                            "{} offline is refused; online its answer is stored at {}",
                            ri.verb,
                            key.display()
                        )
                    };
                }
                Shape::List { .. } | Shape::Watch { .. } => {
                    let objects = if t.view.namespace.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(&t.view.namespace)
                    };
                    // Across namespaces, namespaced objects lie one level deeper.
                    let name = if t.view.namespace.is_empty() {
                        "[<namespace>/]<name>"
                    } else {
                        "<name>"
                    };
                    report["key"] = json!(format!("{}/{name}", objects.display()));
                    let vrel = ViewId::of(t).rel_path();
                    let view = fs::read(opts.root.join(&vrel))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<ViewSnapshot>(&b).ok());
                    report["view"] = json!({
                        "file": vrel.display().to_string(),
                        "namespace": t.view.namespace,
                        "labelSelector": t.view.label_selector,
                        "fieldSelector": t.view.field_selector,
                        "exists": view.is_some(),
                        "members": view.as_ref().map(|v| v.members.len()),
                        "resourceVersion": view.as_ref().map(|v| v.rv),
                    });
                    let source = match &view {
                        Some(v) => format!(
                            "the view {} ({} members, resourceVersion {})",
                            vrel.display(),
                            v.members.len(),
                            v.rv
                        ),
                        None => format!(
                            "no view yet: the selectors evaluated over every object in {}",
                            objects.display()
                        ),
                    };
                    offline = if matches!(t.shape, Shape::Watch { .. }) {
                        format!(
                            "held open without events until the cloud returns (its list: {source})"
                        )
                    } else {
                        format!("answered from {source}")
                    };
                }
            }
        }
    }
    report["offline"] = json!(offline);
    if opts.json {
        writeln!(out, "{report}")?;
        return Ok(0);
    }
    let mut text = String::new();
    let field = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    text.push_str(&format!("request:    {}\n", field(&report["request"])));
    text.push_str(&format!("component:  {}\n", field(&report["component"])));
    text.push_str(&format!(
        "agents:     built-in + cache_agents {:?} ({})\n",
        agents_value,
        report["cacheAgents"]["from"]
            .as_str()
            .unwrap_or("no cached yurt-hub-cfg")
    ));
    match &t {
        Err(reason) => text.push_str(&format!("cached:     no ({reason})\n")),
        Ok(_) => {
            text.push_str(&format!("cached:     yes, verb {}\n", ri.verb));
            text.push_str(&format!("key:        {}", field(&report["key"])));
            if let Some(e) = report["exists"].as_bool() {
                text.push_str(if e {
                    " (on disk)"
                } else {
                    " (not on disk yet)"
                });
            }
            text.push('\n');
            if report["view"].is_object() {
                text.push_str(&format!("view:       {}\n", field(&report["view"]["file"])));
            }
        }
    }
    text.push_str(&format!("offline:    {offline}\n"));
    out.write_all(text.as_bytes())?;
    Ok(0)
}

/// Removes `component[/resource]`'s objects and list views.
fn evict(opts: &Opts, what: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let parts: Vec<&str> = what.trim_matches('/').split('/').collect();
    if parts.len() > 2
        || parts.iter().any(|p| !valid_part(p))
        || parts[0] == INTERNAL_DIR
        || parts[0] == QUARANTINE_DIR
    {
        return Err(CliError::BadEvictTarget(what.to_string()));
    }
    let rel: PathBuf = parts.iter().collect();
    let dir = opts.root.join(&rel);
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(CliError::NothingThere(rel));
    }
    // A symbolic link higher up (`<root>/<component>` itself) must not lead out of the cache.
    let real = fs::canonicalize(&dir).map_err(io_at(&dir))?;
    let real_root = fs::canonicalize(&opts.root).map_err(io_at(&opts.root))?;
    if !real.starts_with(&real_root) {
        return Err(CliError::LeadsOut(what.to_string()));
    }
    let mut files = Vec::new();
    walk(&dir, &mut files);
    let mut t = Tally::default();
    files.iter().for_each(|f| t.add_file(f));
    // remove_dir_all removes symbolic links, never what they point to.
    fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
    let views = opts.root.join(views::dir_rel(&rel));
    if views.is_dir() {
        fs::remove_dir_all(&views).map_err(io_at(&views))?;
    }
    // A whole component gone: whoever is answered for it next owns it.
    if parts.len() == 1 {
        crate::cache::owners::Owners::open(&opts.root).forget(parts[0]);
    }
    if opts.json {
        writeln!(
            out,
            "{}",
            json!({"evicted": rel.display().to_string(), "objects": t.objects, "bytes": t.bytes})
        )
    } else {
        writeln!(
            out,
            "evicted {}: {} objects, {} bytes",
            rel.display(),
            t.objects,
            t.bytes
        )
    }?;
    Ok(0)
}

/// Runs `yurthub cache <args>`, writing to `out`; returns the exit status (2 for bad usage,
/// 1 for a failure or, with `verify`, damage).
pub fn main(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut opts = Opts {
        root: PathBuf::from("/etc/kubernetes/cache/"),
        json: false,
        key_file: None,
        user_agent: None,
        method: "GET".into(),
        accept: None,
        node: String::new(),
        namespace: "kube-system".into(),
    };
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--json" {
            opts.json = true;
            continue;
        }
        if ["--help", "-h", "help"].contains(&a.as_str()) {
            return match writeln!(out, "{USAGE}") {
                Ok(()) => 0,
                Err(_) => 1,
            };
        }
        let Some(flag) = a.strip_prefix("--") else {
            words.push(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let known = [
            "disk-cache-path",
            "encrypt-secrets-key-file",
            "user-agent",
            "method",
            "accept",
            "node-name",
            "namespace",
        ];
        if !known.contains(&name.as_str()) {
            let _ = writeln!(err, "yurthub cache: unknown flag {a}\n{USAGE}");
            return 2;
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            let _ = writeln!(err, "yurthub cache: --{name} needs a value");
            return 2;
        };
        match name.as_str() {
            "disk-cache-path" => opts.root = PathBuf::from(value),
            "encrypt-secrets-key-file" => opts.key_file = Some(PathBuf::from(value)),
            "user-agent" => opts.user_agent = Some(value),
            "method" => opts.method = value.to_uppercase(),
            "accept" => opts.accept = Some(value),
            "namespace" => opts.namespace = value,
            _ => opts.node = value,
        }
    }
    let (root, json_out) = (opts.root.clone(), opts.json);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let known = ["ls", "get", "verify", "stats", "why", "evict"];
    match words.first() {
        None => {
            let _ = writeln!(err, "yurthub cache: no command given\n{USAGE}");
            return 2;
        }
        Some(w) if !known.contains(w) => {
            let _ = writeln!(err, "yurthub cache: unknown command {w:?}\n{USAGE}");
            return 2;
        }
        // Every command reads the cache: a missing one is the same error for all.
        Some(_) if !root.is_dir() => {
            let _ = writeln!(err, "yurthub cache: {}", CliError::NoCache(root));
            return 1;
        }
        Some(_) => {}
    }
    let result = match words.as_slice() {
        ["ls"] => ls(&root, None, json_out, out),
        ["ls", path] => ls(&root, Some(path), json_out, out),
        ["get", path] => get(&opts, path, out),
        ["verify"] => verify(&opts, out),
        ["stats"] => stats(&root, json_out, out),
        ["why", url] => why(&opts, url, out),
        ["evict", what] => evict(&opts, what, out),
        _ => {
            let command = words.first().copied().unwrap_or_default();
            let _ = writeln!(
                err,
                "yurthub cache: {command}: wrong number of arguments\n{USAGE}"
            );
            return 2;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "yurthub cache: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(root: &Path, args: &[&str]) -> (i32, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push(format!("--disk-cache-path={}", root.display()));
        let code = main(all, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err),
        )
    }

    #[test]
    fn usage_errors_say_what_was_wrong_and_a_missing_cache_is_one_error() {
        let root = std::env::temp_dir().join(format!("yurthub-usage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("version"), br#"{"major":"1"}"#).unwrap();
        fs::create_dir_all(root.join("kubelet/pods.v1.core/default")).unwrap();
        for help in ["--help", "-h"] {
            let (code, text) = run(&root, &[help]);
            assert_eq!(code, 0, "{text}");
            assert!(text.starts_with("usage: yurthub cache"), "{text}");
        }
        let (code, text) = run(&root, &["frob"]);
        assert_eq!(code, 2);
        assert!(
            text.starts_with("yurthub cache: unknown command \"frob\"\n"),
            "{text}"
        );
        let (code, text) = run(&root, &[]);
        assert_eq!(code, 2);
        assert!(
            text.starts_with("yurthub cache: no command given"),
            "{text}"
        );
        let (code, text) = run(&root, &["get"]);
        assert_eq!(code, 2);
        assert!(text.contains("get: wrong number of arguments"), "{text}");
        // A file at the top is an answer to a path, never listed as a component.
        let (_, text) = run(&root, &["ls"]);
        assert!(
            text.contains("\n/version ") && text.contains("\nkubelet "),
            "{text}"
        );
        let missing = root.join("nope");
        for args in [
            &["ls"][..],
            &["verify"],
            &["stats"],
            &["get", "a/b"],
            &["evict", "kubelet"],
        ] {
            let (code, text) = run(&missing, args);
            assert_eq!(code, 1, "{args:?}: {text}");
            assert!(text.contains("no such cache directory"), "{args:?}: {text}");
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn ls_get_stats_and_verify() {
        let root = std::env::temp_dir().join(format!("yurthub-inspect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let pods = root.join("kubelet/pods.v1.core/default");
        fs::create_dir_all(&pods).unwrap();
        fs::write(
            pods.join("web-1"),
            br#"{"kind":"Pod","metadata":{"name":"web-1"}}"#,
        )
        .unwrap();
        fs::write(pods.join(".tmp-1-2"), b"{half").unwrap();
        fs::create_dir_all(root.join("_internal/views")).unwrap();
        let (code, text) = run(&root, &["ls"]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("kubelet") && !text.contains("_internal"),
            "{text}"
        );
        let (_, text) = run(&root, &["ls", "kubelet/pods.v1.core", "--json"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["name"], "default");
        assert_eq!(v[0]["objects"], 1);
        let (code, text) = run(&root, &["get", "kubelet/pods.v1.core/default/web-1"]);
        assert_eq!(code, 0);
        assert!(text.contains("\"name\": \"web-1\""), "{text}");
        assert_eq!(run(&root, &["get", "../etc/passwd"]).0, 1);
        let (code, text) = run(&root, &["stats"]);
        assert_eq!(code, 0);
        assert!(
            text.contains("pods.v1.core") && text.contains("total"),
            "{text}"
        );
        assert_eq!(run(&root, &["verify"]).0, 0);
        fs::write(pods.join("web-2"), br#"{"kind":"Pod","meta"#).unwrap();
        let (code, text) = run(&root, &["verify"]);
        assert_eq!(code, 1);
        assert!(
            text.contains("unparsable: kubelet/pods.v1.core/default/web-2"),
            "{text}"
        );
        assert_eq!(run(&root, &["frobnicate"]).0, 2);
        std::os::unix::fs::symlink("/etc", root.join("kubelet/out")).unwrap();
        let (_, text) = run(&root, &["stats"]);
        assert!(!text.contains("out"), "{text}");
        let (code, text) = run(&root, &["get", "kubelet/out/passwd"]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("leads out of the cache"), "{text}");
        fs::remove_dir_all(&root).unwrap();
    }
}

//! `yurthub cache <command>`: the cache as an operator inspects it, with the hub running or
//! not. It only reads files, so it is safe beside a running hub.
//!
//! ```text
//! yurthub cache ls [component[/resource[/namespace]]]   objects, bytes, newest write
//! yurthub cache get <component/resource/[namespace/]name>  the object, pretty JSON
//! yurthub cache verify                                  parses every file; exit 1 on damage
//! yurthub cache stats                                   totals per component and resource
//!   [--disk-cache-path DIR] [--json]
//! ```

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::store::{is_json_object, INTERNAL_DIR, QUARANTINE_DIR};

const USAGE: &str = "usage: yurthub cache <ls [path] | get <path> | verify | stats> [--disk-cache-path DIR] [--json]";

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

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

/// Every regular file below `dir`, temp files aside, in name order. Symbolic links are not
/// followed (the hub never makes any; one pointing out of the cache must not be walked).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(PathBuf, fs::FileType)> = entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, ft) in found {
        if ft.is_dir() {
            walk(&p, out);
        } else if ft.is_file() && !is_temp(&p) {
            out.push(p);
        }
    }
}

fn time(t: Option<SystemTime>) -> String {
    t.map(crate::kube::time::rfc3339)
        .unwrap_or_else(|| "-".into())
}

/// A path below the cache root, refusing `..` and absolute paths.
fn below(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel.trim_matches('/'));
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("{rel}: not a path inside the cache"));
    }
    Ok(root.join(p))
}

fn ls(root: &Path, rel: Option<&str>, json_out: bool, out: &mut dyn Write) -> Result<i32, String> {
    let dir = below(root, rel.unwrap_or(""))?;
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(&p, &mut files);
            files.iter().for_each(|f| t.add_file(f));
        } else {
            t.add_file(&p);
        }
        rows.push((name, t));
    }
    if json_out {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, t)| json!({"name": n, "objects": t.objects, "bytes": t.bytes, "newest": time(t.newest)}))
            .collect();
        writeln!(out, "{}", Value::Array(v)).map_err(|e| e.to_string())?;
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
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(0)
}

fn get(root: &Path, rel: &str, out: &mut dyn Write) -> Result<i32, String> {
    let path = below(root, rel)?;
    // Through symbolic links a path could leave the cache; it must not.
    let real = fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let real_root = fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !real.starts_with(&real_root) {
        return Err(format!("{rel}: leads out of the cache"));
    }
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: not JSON ({e}); `yurthub cache verify` lists such files",
            path.display()
        )
    })?;
    let pretty = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
    writeln!(out, "{pretty}").map_err(|e| e.to_string())?;
    Ok(0)
}

fn verify(root: &Path, json_out: bool, out: &mut dyn Write) -> Result<i32, String> {
    if !root.is_dir() {
        return Err(format!("{}: no such cache directory", root.display()));
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
        .filter(|f| match fs::read(f) {
            Ok(b) => !is_json_object(&b),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        })
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    if json_out {
        writeln!(
            out,
            "{}",
            json!({"checked": files.len(), "unparsable": bad})
        )
        .map_err(|e| e.to_string())?;
    } else {
        let mut text = format!("{} files checked, {} unparsable\n", files.len(), bad.len());
        for b in &bad {
            text.push_str(&format!("unparsable: {b}\n"));
        }
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

fn stats(root: &Path, json_out: bool, out: &mut dyn Write) -> Result<i32, String> {
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
        if resource == super::METADATA_TREE {
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
        )
        .map_err(|e| e.to_string())?;
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
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(0)
}

/// Runs `yurthub cache <args>`, writing to `out`; returns the exit status (2 for bad usage,
/// 1 for a failure or, with `verify`, damage).
pub fn main(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut root = PathBuf::from("/etc/kubernetes/cache/");
    let mut json_out = false;
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json_out = true,
            "--disk-cache-path" => match args.next() {
                Some(d) => root = PathBuf::from(d),
                None => {
                    let _ = writeln!(err, "yurthub cache: --disk-cache-path needs a directory");
                    return 2;
                }
            },
            _ if a.starts_with("--disk-cache-path=") => {
                root = PathBuf::from(&a["--disk-cache-path=".len()..]);
            }
            _ if a.starts_with("--") => {
                let _ = writeln!(err, "yurthub cache: unknown flag {a}\n{USAGE}");
                return 2;
            }
            _ => words.push(a),
        }
    }
    let result = match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["ls"] => ls(&root, None, json_out, out),
        ["ls", path] => ls(&root, Some(path), json_out, out),
        ["get", path] => get(&root, path, out),
        ["verify"] => verify(&root, json_out, out),
        ["stats"] => stats(&root, json_out, out),
        _ => {
            let _ = writeln!(err, "{USAGE}");
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

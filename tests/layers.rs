//! The shape of the crate, kept: every top-level module sits in a layer and imports only from
//! layers below its own, so there is no import cycle and no upward import; and the few rooms
//! that must not reach the cloud (`filter`, `local`) do not.
//!
//! Read from the sources (`use crate::…` and `crate::…` paths outside comments and unit
//! tests), so that a forbidden import fails here with the file that makes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module's layer: the request's path reads upwards from the wire.
const LAYERS: &[(&str, u8)] = &[
    // The wire, the executor, and things that know nothing of Kubernetes.
    ("http", 0),
    ("runtime", 0),
    ("notify", 0),
    ("metrics", 0),
    ("atomic_file", 0),
    ("log_repeats", 0),
    // Kubernetes knowledge without I/O.
    ("kube", 1),
    // The cloud side, the cache's storage, the hub's own list-and-watch, the dummy link.
    ("upstream", 2),
    ("cache", 2),
    ("informer", 2),
    ("multiplexer", 3),
    ("network", 2),
    // What the proxy uses: filters, the hub's identity, cloud health, the connection loop.
    ("filter", 3),
    ("certs", 3),
    ("health", 3),
    ("server", 3),
    // Offline answers, garbage collection.
    ("local", 4),
    ("gc", 4),
    // The two listeners' services, and the fuzzing entry points.
    ("proxy", 5),
    ("admin", 5),
    ("fuzz", 5),
    // Wiring.
    ("app", 6),
];

/// Imports forbidden even downwards.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "filter",
        "upstream",
        "filters rewrite answers; they never talk to the cloud",
    ),
    (
        "local",
        "upstream",
        "offline answers never talk to the cloud",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a source file names, outside comments and its unit tests.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c}`.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    found.push(item.trim().split("::").next().unwrap_or("").to_string());
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
    }
    found.retain(|n| !n.is_empty());
    found
}

/// The top-level module of a file under `src/` (`None` for `main.rs` and `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "main" && name != "lib").then_some(name)
}

/// Every import that breaks the rules: `(file, from, to, why)`.
fn violations(src: &Path) -> Vec<(String, String, String, String)> {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let shown = file
            .strip_prefix(src)
            .unwrap_or(&file)
            .display()
            .to_string();
        let Some(&own) = layers.get(from.as_str()) else {
            bad.push((
                shown,
                from.clone(),
                String::new(),
                "module has no layer in tests/layers.rs".into(),
            ));
            continue;
        };
        for to in imports(&text) {
            if to == from || to == "self" || to == "super" {
                continue;
            }
            let Some(&theirs) = layers.get(to.as_str()) else {
                continue;
            };
            if theirs >= own {
                let why = format!(
                    "layer {own} may only import from layers below it; `{to}` is layer {theirs}"
                );
                bad.push((shown.clone(), from.clone(), to.clone(), why));
            } else if let Some((_, _, why)) =
                FORBIDDEN.iter().find(|(f, t, _)| *f == from && *t == to)
            {
                bad.push((shown.clone(), from.clone(), to.clone(), why.to_string()));
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.iter()
            .map(|(file, from, to, why)| format!("  src/{file}: {from} -> {to}: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_reader_sees_what_a_forbidden_import_looks_like() {
    // The checker itself, on a made-up tree: an upward import, a cloud call from a filter,
    // and what it must not count (comments, unit tests, a module's own paths).
    let dir = std::env::temp_dir().join(format!("yurthub-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    std::fs::create_dir_all(dir.join("filter")).unwrap();
    std::fs::write(
        dir.join("cache/store.rs"),
        "use crate::kube::Status;\nuse crate::{http::Reader, upstream::Upstream};\n// crate::proxy in a comment\n#[cfg(test)]\nmod tests { use crate::proxy::Proxy; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("filter/service_topology.rs"),
        "fn f() { crate::upstream::dial(); crate::filter::x(); }\n",
    )
    .unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod app; use crate::app::x;\n").unwrap();
    let bad = violations(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let pairs: Vec<(&str, &str)> = bad
        .iter()
        .map(|(_, from, to, _)| (from.as_str(), to.as_str()))
        .collect();
    assert_eq!(pairs, vec![("cache", "upstream"), ("filter", "upstream")]);
}

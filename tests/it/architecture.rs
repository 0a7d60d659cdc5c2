//! docs/ARCHITECTURE.md holds for the tree as it is: every file under `src/` is named there,
//! folders import only from the layers below them (so no two import each other, even round a
//! circle), `judge/` and `http/` keep their invariants, and no file outgrows one sitting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap()
}

/// Every file under `src/`, as its path below `src/` with `/` separators.
fn sources() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    let src = root().join("src");
    walk(&src, &src, &mut out);
    out.sort();
    out
}

/// A file's code without its test module (tests may use what the code must not).
fn code(rel: &str) -> String {
    let text = std::fs::read_to_string(root().join("src").join(rel)).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The folder (or top-level file) a source file belongs to: `server/h1/mod.rs` -> `server`.
fn unit(rel: &str) -> String {
    let first = rel.split('/').next().unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// The crate's top-level modules a file's code names (`crate::x`), other than its own.
fn imports(rel: &str) -> BTreeSet<String> {
    let own = unit(rel);
    let text = code(rel);
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        // `canary_proxy::` in docs and examples is not an import of this crate's code.
        let name: String = text[at + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name != own {
            out.insert(name);
        }
    }
    out
}

/// The layers table of ARCHITECTURE.md: unit -> its layer's rank (0 lowest).
fn layers() -> BTreeMap<String, usize> {
    let doc = architecture();
    let table = doc
        .split("| layer | folders |")
        .nth(1)
        .expect("ARCHITECTURE.md has the layers table");
    let mut out = BTreeMap::new();
    let rows = table.lines().skip(2).take_while(|l| l.starts_with('|'));
    for (rank, row) in rows.enumerate() {
        let folders = row.split('|').nth(2).unwrap();
        for name in folders.split(',') {
            let name = name.trim().trim_matches('`').trim_end_matches('/');
            out.insert(name.trim_end_matches(".rs").to_string(), rank);
        }
    }
    out
}

#[test]
fn every_source_file_is_named_in_the_architecture_page() {
    let doc = architecture();
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|rel| !doc.contains(&format!("`{rel}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name these files under src/ (add each to its folder's section): {missing:?}"
    );
}

#[test]
fn folders_import_only_from_the_layers_below_them() {
    let layers = layers();
    let mut wrong = Vec::new();
    for rel in sources().iter().filter(|r| r.ends_with(".rs")) {
        let from = unit(rel);
        let Some(&rank) = layers.get(&from) else {
            wrong.push(format!("{rel}: `{from}` is in no layer of the table"));
            continue;
        };
        for to in imports(rel) {
            match layers.get(&to) {
                Some(&below) if below < rank => {}
                Some(_) => wrong.push(format!(
                    "{rel} imports crate::{to}, not in a layer below `{from}`"
                )),
                None => wrong.push(format!("{rel} imports crate::{to}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_judge_does_no_io_reads_no_clock_and_builds_no_json() {
    const FORBIDDEN: [&str; 10] = [
        "tokio",
        "hyper",
        "std::fs",
        "std::net",
        "std::io",
        "serde_json",
        "Instant",
        "SystemTime::now",
        "tracing",
        "redis",
    ];
    let allowed: BTreeSet<&str> = ["cohort", "config"].into();
    let mut wrong = Vec::new();
    for rel in sources().iter().filter(|r| r.starts_with("judge/")) {
        let text = code(rel);
        for word in FORBIDDEN {
            if text.contains(word) {
                wrong.push(format!("{rel} uses {word}"));
            }
        }
        for to in imports(rel) {
            if !allowed.contains(to.as_str()) {
                wrong.push(format!("{rel} imports crate::{to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "judge/ breaks its invariant:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn http_knows_nothing_else_of_the_crate() {
    let wrong: Vec<String> = sources()
        .iter()
        .filter(|r| r.starts_with("http/"))
        .flat_map(|rel| {
            imports(rel)
                .into_iter()
                .map(move |to| format!("{rel} imports crate::{to}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "http/ breaks its invariant:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_server_knows_nothing_of_canaries() {
    let forbidden: BTreeSet<&str> = [
        "proxy", "upstream", "control", "judge", "cohort", "fleet", "admin",
    ]
    .into();
    let wrong: Vec<String> = sources()
        .iter()
        .filter(|r| r.starts_with("server/"))
        .flat_map(|rel| {
            imports(rel)
                .into_iter()
                .filter(|to| forbidden.contains(to.as_str()))
                .map(move |to| format!("{rel} imports crate::{to}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "server/ breaks its invariant:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_outgrows_one_sitting() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|r| r.ends_with(".rs"))
        .filter_map(|rel| {
            let n = std::fs::read_to_string(root().join("src").join(rel))
                .unwrap()
                .lines()
                .count();
            (n > 400).then(|| format!("{rel}: {n} lines"))
        })
        .collect();
    assert!(long.is_empty(), "split these by concept: {long:?}");
}

#[test]
fn the_checks_would_catch_what_they_look_for() {
    // The readers themselves, on text made to break each rule: a check that cannot fail is none.
    let layers = layers();
    assert!(layers["http"] < layers["proxy"] && layers["judge"] < layers["control"]);
    assert_eq!(unit("server/h1/mod.rs"), "server");
    assert_eq!(unit("cohort.rs"), "cohort");
    let names: BTreeSet<String> = imports("proxy/mod.rs");
    assert!(
        names.contains("control") && names.contains("upstream"),
        "{names:?}"
    );
    assert!(
        !names.contains("proxy"),
        "a folder's own paths are not imports"
    );
}

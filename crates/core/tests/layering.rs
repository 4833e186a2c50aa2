//! The source trees' layering, checked: no import circle between the top-level modules of the
//! core crate or of the extension (`src/`), and no wildcard arm where a job kind is matched (a new
//! kind must fail to compile wherever kinds are matched, not fall into `_ =>`). Reads the sources
//! as text: a `crate::name` path anywhere in a module's code (a `use` or inline; not comments) is
//! an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Top-level module of a file under `root` (`a.rs` and `a/...` are `a`).
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// Names that follow `crate::` directly, or inside `crate::{...}` groups.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

fn graph(root: &Path, skip: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(root);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(root, file);
        if me == "lib" || me == "main" || skip.contains(&me.as_str()) {
            continue;
        }
        // Comments (doc links such as [`crate::adopt`]) are not imports.
        let text: String = fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for target in crate_paths(&text) {
            if target != me && modules.contains(&target) && !skip.contains(&target.as_str()) {
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// A circle through `from`, as the list of modules, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in edges.get(last).into_iter().flatten() {
            if next == from {
                let mut found = path.clone();
                found.push(from.to_string());
                return Some(found);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

fn assert_no_circle(root: &Path, skip: &[&str]) {
    let edges = graph(root, skip);
    assert!(edges.len() > 3, "{} was read ({} modules import others)", root.display(), edges.len());
    for module in edges.keys() {
        if let Some(found) = circle(&edges, module) {
            panic!("import circle in {}: {}", root.display(), found.join(" -> "));
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_core_crate_has_no_import_circle() {
    assert_no_circle(&workspace().join("crates/core/src"), &[]);
}

#[test]
fn the_extension_has_no_import_circle() {
    // The pgrx tests reach into everything by design.
    assert_no_circle(&workspace().join("src"), &["pgrx_tests"]);
}

#[test]
fn a_circle_is_found() {
    let mut edges = BTreeMap::new();
    edges.insert("jobs".to_string(), BTreeSet::from(["snapshots".to_string()]));
    edges.insert("snapshots".to_string(), BTreeSet::from(["jobs".to_string()]));
    assert_eq!(circle(&edges, "jobs").unwrap(), ["jobs", "snapshots", "jobs"]);
    assert_eq!(
        crate_paths("use crate::{gucs, io::block_on};\nlet x = crate::jobs::job(k);"),
        BTreeSet::from(["gucs".to_string(), "io".to_string(), "jobs".to_string()])
    );
}

#[test]
fn no_wildcard_arm_where_a_job_kind_is_matched() {
    let root = workspace();
    for dir in ["src", "crates/core/src", "crates/cli/src"] {
        for file in rust_files(&root.join(dir)) {
            let text = fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                assert!(
                    !(line.contains("_ =>") && line.to_lowercase().contains("kind")),
                    "{}:{}: a wildcard arm on a kind: {line}",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

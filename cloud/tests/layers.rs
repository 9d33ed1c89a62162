//! The cloud's layers, checked from the source: every `crate::…` (and `super::…`) path a module
//! names must lead to its own layer or one below it, and the handlers in `http` hold no SQL. The
//! diagram is in `docs/ARCHITECTURE.md`; the ranks below are the same picture as data.
//!
//! Ranks are matched on the longest module prefix. Within `domain` every module has its own rank,
//! so two domain modules can never import each other (a cycle would need one of them to reach up).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use paths of its own prefix or of a lower rank.
const RANKS: &[(&str, u32)] = &[
    // The infrastructure edges. They may use each other but nothing above.
    ("infra", 0),
    // The domain, lowest first (`domain` itself only declares its modules).
    ("domain", 9),
    ("domain::audit", 10),
    ("domain::clinic", 11),
    ("domain::access", 12),
    ("domain::policy", 13),
    ("domain::relays", 14),
    ("domain::commands", 15),
    ("domain::compliance", 16),
    ("domain::fleet", 17),
    ("domain::notifications", 18),
    ("domain::alerts", 19),
    ("domain::notifications::delivery", 20),
    ("domain::enrolment", 21),
    ("domain::ingest", 22),
    ("domain::seed", 23),
    ("domain::admin", 24),
    ("domain::evidence", 25),
    // What every handler can reach.
    ("state", 30),
    // The REST API: extract, call the domain, map.
    ("http", 40),
    // The composition root; only `main` (and tests) use it.
    ("startup", 50),
];

/// Modules that share a rank-group and may use each other freely (the infrastructure edges, and the
/// handlers, which share the error type, pagination and the caller extractor).
const OPEN_GROUPS: &[&str] = &["infra", "http"];

fn rank_of(path: &str) -> Option<(&'static str, u32)> {
    RANKS
        .iter()
        .filter(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, rank)| (*prefix, *rank))
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `domain/access/mod.rs` → `domain::access`; `http/fleet.rs` → `http::fleet`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(source_root()).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments (line comments and doc comments), so that a doc link to a
/// higher layer is not counted as a dependency.
fn code_lines(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands every `crate::a::b::{c, d::{e}}` and `super::x` in `code` into full module paths
/// (relative to the crate root), `module` being the module the code is in.
fn referenced_paths(code: &str, module: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]);
        if at_word_start && rest.starts_with("crate::") {
            let (tree, used) = parse_tree(&rest["crate::".len()..]);
            for path in tree {
                paths.insert(path);
            }
            i += "crate::".len() + used;
        } else if at_word_start && rest.starts_with("super::") {
            // `super` of `a::b` is `a`, whether `b` is b.rs or b/mod.rs.
            let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
            let (tree, used) = parse_tree(&rest["super::".len()..]);
            for path in tree {
                paths.insert(if parent.is_empty() {
                    path
                } else {
                    format!("{parent}::{path}")
                });
            }
            i += "super::".len() + used;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    paths
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses `a::b::{c, d::e}` (a path or use tree) and returns the full paths and the bytes read.
fn parse_tree(text: &str) -> (Vec<String>, usize) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut segments: Vec<&str> = Vec::new();
    loop {
        if bytes.get(i) == Some(&b'{') {
            let mut out = Vec::new();
            i += 1;
            loop {
                while bytes
                    .get(i)
                    .is_some_and(|b| b.is_ascii_whitespace() || *b == b',')
                {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'}') || i >= bytes.len() {
                    i += 1;
                    break;
                }
                let (inner, used) = parse_tree(&text[i..]);
                for path in inner {
                    out.push(join(&segments, &path));
                }
                i += used.max(1);
            }
            return (out, i);
        }
        let start = i;
        while bytes.get(i).is_some_and(|b| is_ident(*b)) {
            i += 1;
        }
        if start == i {
            // `*` or something that ends the path.
            if bytes.get(i) == Some(&b'*') {
                i += 1;
            }
            break;
        }
        segments.push(&text[start..i]);
        if text[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    let segments: Vec<&str> = segments.into_iter().filter(|s| *s != "self").collect();
    (vec![segments.join("::")], i)
}

fn join(prefix: &[&str], path: &str) -> String {
    let mut all: Vec<&str> = prefix.to_vec();
    if !path.is_empty() && path != "self" {
        all.push(path);
    }
    all.join("::")
}

struct Module {
    name: String,
    code: String,
    uses: BTreeSet<String>,
}

fn modules() -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(&source_root(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| !f.ends_with("main.rs") && !f.ends_with("lib.rs"))
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read source");
            let code = code_lines(&text);
            let name = module_of(&file);
            let uses = referenced_paths(&code, &name);
            Module { name, code, uses }
        })
        .collect()
}

fn upward_imports() -> Vec<String> {
    let mut violations = Vec::new();
    for module in modules() {
        let (own_prefix, own_rank) =
            rank_of(&module.name).unwrap_or_else(|| panic!("{} has no layer", module.name));
        for used in &module.uses {
            let Some((prefix, rank)) = rank_of(used) else {
                continue;
            };
            let same_group = prefix == own_prefix
                || OPEN_GROUPS
                    .iter()
                    .any(|g| own_prefix.starts_with(g) && prefix.starts_with(g));
            if rank > own_rank && !same_group {
                violations.push(format!("{} (layer {own_prefix}) uses {used}", module.name));
            }
        }
    }
    violations
}

#[test]
fn no_module_imports_a_higher_layer() {
    let violations = upward_imports();
    assert!(
        violations.is_empty(),
        "upward dependencies:\n{}",
        violations.join("\n")
    );
}

#[test]
fn nothing_below_the_composition_root_imports_http_or_startup() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|m| !m.name.starts_with("http") && m.name != "startup")
        .flat_map(|m| {
            m.uses
                .iter()
                .filter(|u| u.starts_with("http") || u.starts_with("startup"))
                .map(|u| format!("{} uses {u}", m.name))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn http_handlers_hold_no_sql() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|m| m.name.starts_with("http"))
        .filter(|m| {
            [
                "sqlx::query",
                "query_as(",
                "query_scalar(",
                "fetch_one(",
                "fetch_all(",
            ]
            .iter()
            .any(|needle| m.code.contains(needle))
        })
        .map(|m| m.name)
        .collect();
    assert!(
        offenders.is_empty(),
        "handlers with SQL (move it into the domain): {}",
        offenders.join(", ")
    );
}

#[test]
fn the_checker_sees_through_use_trees_and_super() {
    let uses = referenced_paths(
        "use crate::domain::{alerts::{self, apply}, audit};\nlet x = super::queue(1);",
        "domain::notifications::delivery",
    );
    let expected: BTreeSet<String> = [
        "domain::alerts",
        "domain::alerts::apply",
        "domain::audit",
        "domain::notifications::queue",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(uses, expected);
}

#[test]
fn a_lower_layer_reaching_up_is_caught() {
    let uses = referenced_paths("use crate::http::error::ApiFailure;", "domain::seed");
    let (_, own) = rank_of("domain::seed").expect("rank");
    assert!(
        uses.iter()
            .any(|u| rank_of(u).is_some_and(|(_, rank)| rank > own))
    );
    let (_, alerts) = rank_of("domain::alerts").expect("rank");
    let (_, routing) = rank_of("domain::notifications::enqueue").expect("rank");
    let (_, delivery) = rank_of("domain::notifications::delivery::dispatch_once").expect("rank");
    assert!(routing < alerts && alerts < delivery);
}

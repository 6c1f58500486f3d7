//! The manual stays true: every repository path that README.md, BENCHMARKS.md and
//! docs/*.md name in backquotes (the recipes in docs/architecture.md above all) exists, and
//! the list of event sets is the catalog's.

use std::path::{Path, PathBuf};

/// Where a path the manual names starts: the repository's own top-level places.
const TOP: &[&str] = &[
    "crates/",
    "scripts/",
    "bench/",
    "deploy/",
    "docs/",
    ".ci/",
    "README.md",
    "BENCHMARKS.md",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The backquoted spans of `text` that are repository paths, with what follows white space (a
/// command's arguments) or a colon (a line or an item) cut off.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| {
            span.split(|c: char| c.is_whitespace() || c == ':')
                .next()
                .unwrap_or_default()
        })
        .filter(|path| TOP.iter().any(|top| path.starts_with(top)))
        // Patterns and placeholders name no one file.
        .filter(|path| {
            !path.contains(['*', '<']) && !path.contains("NAME") && !path.contains("ID.")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_path_the_manual_names_exists() {
    let root = root();
    let mut pages = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut missing = Vec::new();
    let mut named = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for path in named_paths(&text) {
            named += 1;
            if !Path::new(&root).join(path.trim_end_matches('/')).exists() {
                missing.push(format!(
                    "{}: {path}",
                    page.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not in the repository:\n{}",
        missing.join("\n")
    );
    // The recipes alone name more than this: the check did read them.
    assert!(named > 40, "only {named} paths found");
}

#[test]
fn named_paths_are_cut_at_arguments_and_skip_patterns() {
    let text = "run `scripts/build-bpf`, then `cargo run -- docs docs/events` or \
                `crates/mmtrace/tests/serve.rs:42` and `docs/events/NAME.md`, `docs/*.md`";
    assert_eq!(
        named_paths(text),
        ["scripts/build-bpf", "crates/mmtrace/tests/serve.rs"]
    );
}

#[test]
fn the_manual_lists_every_set_the_catalog_has() {
    let usage = std::fs::read_to_string(root().join("docs/usage.md")).unwrap();
    let line = usage
        .lines()
        .find(|l| l.starts_with("Sets: "))
        .expect("docs/usage.md lists the sets");
    let listed: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    let mut sets = mmtrace_events::catalog::sets();
    sets.sort();
    assert_eq!(listed_sorted, sets, "{line}");
}

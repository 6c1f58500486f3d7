//! Tracee's own Go types read every captured example line: a consumer built on `trace.Event`
//! of Tracee v0.24.1 (types/trace, with its `Argument.UnmarshalJSON`) must parse each event
//! mmtrace writes. Tracee's source comes from a git mirror at test time and is never committed;
//! Go 1.24 comes from scripts/install-go. Without either the test skips with the reason, except
//! under CI, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mmtrace_events::catalog::{self, RAISED};
use mmtrace_events::CATALOG;
use serde_json::Value;

const TRACEE_TAG: &str = "v0.24.1";
const MIRROR: &str = "/work/.mirror/aquasecurity+tracee/repo";
const GO: &str = "/usr/lib/go-1.24/bin/go";

/// Reads each line of the file named by its argument into a trace.Event and prints, per line,
/// either `ok EVENTID EVENTNAME` followed by `NAME:GOTYPE` for each argument, or `error: ...`.
const PROGRAM: &str = r#"package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aquasecurity/tracee/types/trace"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	lines := bufio.NewScanner(f)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		var e trace.Event
		if err := json.Unmarshal(lines.Bytes(), &e); err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("ok %d %s", e.EventID, e.EventName)
		for _, a := range e.Args {
			fmt.Printf(" %s:%T", a.Name, a.Value)
		}
		fmt.Println()
	}
	if err := lines.Err(); err != nil {
		fmt.Println("error:", err)
	}
}
"#;

/// Where a prerequisite is missing: skip outside CI, fail under it.
fn missing(what: &str) {
    let why = format!("{what}; run scripts/install-go and fetch github:aquasecurity/tracee");
    if std::env::var_os("CI").is_some() {
        panic!("under CI this test must run: {why}");
    }
    eprintln!("skipped: {why}");
}

/// The go binary: MMTRACE_GO, or where scripts/install-go puts it.
fn go() -> PathBuf {
    std::env::var_os("MMTRACE_GO").map_or_else(|| PathBuf::from(GO), PathBuf::from)
}

/// Tracee's git mirror: TRACEE_MIRROR, or where the fetch tool puts it.
fn mirror() -> PathBuf {
    std::env::var_os("TRACEE_MIRROR").map_or_else(|| PathBuf::from(MIRROR), PathBuf::from)
}

fn has_tag(mirror: &Path) -> bool {
    Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{TRACEE_TAG}^{{commit}}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Extracts Tracee's types/trace and types/protocol at the tag into `dir` as a module of their
/// own, without the tests (they need testify, which is not fetched).
fn extract_types(mirror: &Path, dir: &Path) {
    let tar = dir.join("types.tar");
    let archived = Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["archive", "--format=tar", "-o"])
        .arg(&tar)
        .args([TRACEE_TAG, "types/trace", "types/protocol"])
        .status()
        .expect("git runs");
    assert!(archived.success(), "git archive of Tracee's types failed");
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar runs");
    assert!(untar.success(), "extracting Tracee's types failed");
    let types = dir.join("types");
    for pkg in ["trace", "protocol"] {
        for f in std::fs::read_dir(types.join(pkg)).unwrap() {
            let path = f.unwrap().path();
            if path.to_string_lossy().ends_with("_test.go") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    std::fs::write(
        types.join("go.mod"),
        "module github.com/aquasecurity/tracee/types\n\ngo 1.24\n",
    )
    .unwrap();
    std::fs::create_dir_all(types.join("check")).unwrap();
    std::fs::write(types.join("check/main.go"), PROGRAM).unwrap();
}

/// The Go type `UnmarshalJSON` gives a value of each Tracee type name, as mmtrace writes
/// values: pointers are "0x..." strings, as Tracee prints them with parse-arguments.
fn go_type(tracee_type: &str) -> &'static str {
    match tracee_type {
        "trace.Pointer" | "string" => "string",
        "bool" => "bool",
        "int32" => "int32",
        "uint32" => "uint32",
        "int64" => "int64",
        "uint64" => "uint64",
        other => panic!("no Go type known for {other}"),
    }
}

#[test]
fn tracee_event_type_parses_every_example_line() {
    let (go, mirror) = (go(), mirror());
    if !go.is_file() {
        return missing(&format!("no Go 1.24 at {} (set MMTRACE_GO)", go.display()));
    }
    if !has_tag(&mirror) {
        return missing(&format!(
            "no Tracee git mirror with tag {TRACEE_TAG} at {} (set TRACEE_MIRROR)",
            mirror.display()
        ));
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tracee-types-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    extract_types(&mirror, &dir);

    let examples =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events/examples.jsonl");
    let out = Command::new(&go)
        .args(["run", "./check"])
        .arg(&examples)
        .current_dir(dir.join("types"))
        // Only the local toolchain and the extracted source: nothing is downloaded.
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOWORK", "off")
        // Kept between runs: building the standard library takes minutes on a busy machine.
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .output()
        .expect("go runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go run failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&examples).unwrap();
    let results: Vec<&str> = stdout.lines().collect();
    assert_eq!(results.len(), text.lines().count(), "{stdout}");

    let mut parsed = BTreeMap::new();
    for (line, result) in text.lines().zip(&results) {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["eventName"].as_str().unwrap();
        let fields: Vec<&str> = result.split(' ').collect();
        assert_eq!(
            fields[0], "ok",
            "{name}: Tracee's types reject the line: {result}"
        );
        assert_eq!(fields[2], name, "{result}");
        // Go read eventId as Tracee's number, the catalog's id for the event.
        let event_id = CATALOG
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.event_id)
            .or_else(|| catalog::raised(name).map(|e| e.event_id))
            .unwrap_or_else(|| panic!("{name} is not in the catalog"));
        assert_eq!(fields[1], event_id.to_string(), "{name}");
        // Every argument kept its name, and got the Go type its Tracee type names.
        let expected: Vec<String> = v["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let ty = a["type"].as_str().unwrap();
                format!("{}:{}", a["name"].as_str().unwrap(), go_type(ty))
            })
            .collect();
        assert_eq!(fields[3..], expected, "{name}");
        parsed.insert(name.to_string(), event_id);
    }
    // One of each event: every captured hooked event, and the raised ones.
    for name in RAISED.iter().map(|e| e.name) {
        assert!(parsed.contains_key(name), "no example line of {name}");
    }
    assert!(parsed.len() > CATALOG.len() / 2, "{parsed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

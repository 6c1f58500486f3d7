//! Tracee's own Go code against what mmtrace writes: a consumer built on `trace.Event` of
//! Tracee v0.24.1 (types/trace, with its `Argument.UnmarshalJSON`) must parse each captured
//! example line, and Tracee's `HashTaskID` must give the entity ids the lines carry. Tracee's
//! source comes from a git mirror at test time and is never committed; Go 1.24 comes from
//! scripts/install-go. Without either the tests skip with the reason, except under CI, where
//! they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mmtrace_events::catalog::{self, RAISED};
use mmtrace_events::event::entity_id;
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

/// Prints Tracee's `HashTaskID` of each `PID START` line on standard input, one a line.
const HASH_PROGRAM: &str = r#"package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/aquasecurity/tracee/pkg/datastores/process"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var pid uint32
		var start uint64
		if _, err := fmt.Sscan(in.Text(), &pid, &start); err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(process.HashTaskID(pid, start))
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

/// Go and Tracee's mirror, or None (after saying why) when the test must skip.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let (go, mirror) = (go(), mirror());
    if !go.is_file() {
        missing(&format!("no Go 1.24 at {} (set MMTRACE_GO)", go.display()));
        return None;
    }
    if !has_tag(&mirror) {
        missing(&format!(
            "no Tracee git mirror with tag {TRACEE_TAG} at {} (set TRACEE_MIRROR)",
            mirror.display()
        ));
        return None;
    }
    Some((go, mirror))
}

/// A fresh folder for one test's Go module.
fn workdir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tracee-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Extracts `paths` of Tracee's source at the tag into `dir`.
fn extract(mirror: &Path, dir: &Path, paths: &[&str]) {
    let tar = dir.join("tracee.tar");
    let archived = Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["archive", "--format=tar", "-o"])
        .arg(&tar)
        .arg(TRACEE_TAG)
        .args(paths)
        .status()
        .expect("git runs");
    assert!(
        archived.success(),
        "git archive of Tracee's {paths:?} failed"
    );
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar runs");
    assert!(untar.success(), "extracting Tracee's {paths:?} failed");
}

/// `go run ./PROGRAM` in the module at `dir`, with only the local toolchain and the
/// extracted source: nothing is downloaded. Returns its standard output.
fn go_run(go: &Path, dir: &Path, program: &str, args: &[&Path], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(go)
        .args(["run", &format!("./{program}")])
        .args(args)
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOWORK", "off")
        // Kept between runs: building the standard library takes minutes on a busy machine.
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("go runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go run failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Extracts Tracee's types/trace and types/protocol at the tag into `dir` as a module of their
/// own, without the tests (they need testify, which is not fetched).
fn extract_types(mirror: &Path, dir: &Path) {
    extract(mirror, dir, &["types/trace", "types/protocol"]);
    let types = dir.join("types");
    for pkg in ["trace", "protocol"] {
        for f in std::fs::read_dir(types.join(pkg)).unwrap() {
            let path = f.unwrap().path();
            if path.to_string_lossy().ends_with("_test.go") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    make_module(
        &types,
        "github.com/aquasecurity/tracee/types",
        "check",
        PROGRAM,
    );
}

/// Makes `dir` the Go module `module`, with `source` as its program `./program`.
fn make_module(dir: &Path, module: &str, program: &str, source: &str) {
    std::fs::write(dir.join("go.mod"), format!("module {module}\n\ngo 1.24\n")).unwrap();
    std::fs::create_dir_all(dir.join(program)).unwrap();
    std::fs::write(dir.join(program).join("main.go"), source).unwrap();
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

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events/examples.jsonl")
}

#[test]
fn tracee_event_type_parses_every_example_line() {
    let Some((go, mirror)) = prerequisites() else {
        return;
    };
    let dir = workdir("types");
    extract_types(&mirror, &dir);

    let examples = examples();
    let stdout = go_run(&go, &dir.join("types"), "check", &[&examples], "");
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

/// The entity ids of every example line are what Tracee's own `HashTaskID` gives for the
/// line's thread and process (host id, start), and mmtrace's hash is Tracee's on inputs
/// across the whole range besides.
#[test]
fn entity_ids_are_tracees_own() {
    let Some((go, mirror)) = prerequisites() else {
        return;
    };
    let dir = workdir("taskid");
    // HashTaskID and the hash under it, as a module of their own: the rest of Tracee's
    // packages need dependencies that are not fetched.
    extract(
        &mirror,
        &dir,
        &[
            "common/murmur/murmur.go",
            "pkg/datastores/process/taskid.go",
        ],
    );
    make_module(&dir, "github.com/aquasecurity/tracee", "hash", HASH_PROGRAM);

    // (pid, start, the id mmtrace gave it, where it came from)
    let mut cases: Vec<(u64, u64, u64, String)> = Vec::new();
    let text = std::fs::read_to_string(examples()).unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["eventName"].as_str().unwrap();
        for (pid, start, id) in [
            ("hostThreadId", "threadStartTime", "threadEntityId"),
            ("hostProcessId", "processStartTime", "processEntityId"),
        ] {
            let n = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{name}: {key}"));
            cases.push((n(pid), n(start), n(id), format!("{name} {id}")));
        }
    }
    // Pseudo-random (xorshift), so a failure can be replayed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (pid, start) = (x >> 32, x.rotate_left(29));
        let id = entity_id(pid as u32, start).into();
        cases.push((pid, start, id, format!("entity_id({pid}, {start})")));
    }
    let input: String = cases.iter().map(|c| format!("{} {}\n", c.0, c.1)).collect();
    let stdout = go_run(&go, &dir, "hash", &[], &input);
    let tracee: Vec<&str> = stdout.lines().collect();
    assert_eq!(tracee.len(), cases.len(), "{stdout}");
    for (case, tracee) in cases.iter().zip(tracee) {
        assert_eq!(case.2.to_string(), tracee, "{}", case.3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Tracee's own Go code against what mmtrace writes: a consumer built on `trace.Event` of
//! Tracee v0.24.1 (types/trace, with its `Argument.UnmarshalJSON`) must parse every kind of
//! line mmtrace writes, in the captured examples and in a fresh recording with a kill and its
//! pressure, lost events and an alert; and Tracee's `HashTaskID` must give the entity ids the
//! lines carry. Tracee's modules come through Go's module system (tests/tracee-go), Go 1.24 and
//! the modules from scripts/test-deps; without them the tests skip (mmtrace_testkit::skip).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mmtrace_events::catalog::{self, IN_BAND, RAISED};
use mmtrace_events::event::entity_id;
use mmtrace_events::CATALOG;
use mmtrace_testkit::{bpf_allowed, skip, TEST_DEPS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
/// Where Debian's golang-1.24-go (scripts/install-go) puts it.
const GO: &str = "/usr/lib/go-1.24/bin/go";

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

/// The Go module that requires Tracee's types module, with the consumer `./check`.
fn consumer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tracee-go")
}

/// The go binary: MMTRACE_GO, or where scripts/install-go puts it.
fn go() -> PathBuf {
    std::env::var_os("MMTRACE_GO").map_or_else(|| PathBuf::from(GO), PathBuf::from)
}

/// `go ARGS` in `dir`, with the local toolchain, no workspace, and go.mod and go.sum as they
/// are: a module comes from Go's module cache, or from the module proxy where it answers.
fn go_command(go: &Path, dir: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off")
        // Kept between runs: building the standard library takes minutes on a busy machine.
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        );
    command
}

/// The folders of Tracee's modules in Go's module cache, in the order asked: MODULE@VERSION
/// where the cache has it already (outside a module with a go.sum that names it, `go mod
/// download` would ask the checksum database again), else after `go mod download` in `dir`;
/// the error's last line when a module can be had neither from the cache nor from the proxy.
fn download(go: &Path, dir: &Path, modules: &[&str]) -> Result<Vec<PathBuf>, String> {
    let cache = go_command(go, dir)
        .args(["env", "GOMODCACHE"])
        .output()
        .expect("go runs");
    let cache = PathBuf::from(String::from_utf8_lossy(&cache.stdout).trim());
    // Tracee's module paths have no capitals, which the cache's paths would escape.
    let cached: Vec<PathBuf> = modules.iter().map(|m| cache.join(m)).collect();
    if modules.iter().all(|m| m.contains('@')) && cached.iter().all(|d| d.is_dir()) {
        return Ok(cached);
    }
    let out = go_command(go, dir)
        .args(["mod", "download", "-json"])
        .args(modules)
        .output()
        .expect("go runs");
    let infos: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("go mod download -json: {e}"))?;
    let failed = infos.iter().find_map(|i| i["Error"].as_str());
    match (failed, out.status.success()) {
        (None, true) => Ok(infos
            .iter()
            .map(|i| PathBuf::from(i["Dir"].as_str().unwrap()))
            .collect()),
        (why, _) => Err(why.map_or_else(
            || {
                let err = String::from_utf8_lossy(&out.stderr);
                err.lines().last().unwrap_or_default().to_string()
            },
            str::to_string,
        )),
    }
}

/// Go, or None after skipping.
fn go_present() -> Option<PathBuf> {
    let go = go();
    if go.is_file() {
        return Some(go);
    }
    skip(
        &format!("no Go 1.24 at {} (MMTRACE_GO names another)", go.display()),
        TEST_DEPS,
    );
    None
}

/// Where the proxy does not answer, the modules come from a clone.
const FETCH: &str = "scripts/test-deps (with --tracee DIR, a clone of \
                     github.com/aquasecurity/tracee, where the Go module proxy does not answer)";

/// Go, with Tracee's types module at hand, or None after skipping.
fn types_prerequisites() -> Option<PathBuf> {
    let go = go_present()?;
    match download(&go, &consumer(), &["github.com/aquasecurity/tracee/types"]) {
        Ok(_) => Some(go),
        Err(why) => {
            skip(&format!("Tracee's types module: {why}"), FETCH);
            None
        }
    }
}

/// A fresh folder for one test's files.
fn workdir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tracee-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `go run ./PROGRAM ARGS` in the module at `dir`, `stdin` on its standard input; its
/// standard output.
fn go_run(go: &Path, dir: &Path, program: &str, args: &[&Path], stdin: &str) -> String {
    let mut child = go_command(go, dir)
        .args(["run", &format!("./{program}")])
        .args(args)
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

/// Makes `dir` the Go module `module`, with `source` as its program `./program`.
fn make_module(dir: &Path, module: &str, program: &str, source: &str) {
    std::fs::write(dir.join("go.mod"), format!("module {module}\n\ngo 1.24\n")).unwrap();
    std::fs::create_dir_all(dir.join(program)).unwrap();
    std::fs::write(dir.join(program).join("main.go"), source).unwrap();
}

/// The Go type `UnmarshalJSON` gives a value of each Tracee type name, as mmtrace writes
/// values: pointers are "0x..." strings, as Tracee prints them with parse-arguments.
fn go_type(tracee_type: &str, value: &Value) -> &'static str {
    if value.is_null() {
        return "<nil>";
    }
    match tracee_type {
        "trace.Pointer" | "string" => "string",
        "bool" => "bool",
        "int32" => "int32",
        "uint32" => "uint32",
        "int64" => "int64",
        "uint64" => "uint64",
        "float64" => "float64",
        other => panic!("no Go type known for {other}"),
    }
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events/examples.jsonl")
}

/// The eventId the catalog gives the line kind `name`: a hooked, raised or in-band one.
fn catalog_event_id(name: &str) -> u16 {
    CATALOG
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.event_id)
        .or_else(|| catalog::raised(name).map(|e| e.event_id))
        .or_else(|| IN_BAND.iter().find(|l| l.name == name).map(|l| l.event_id))
        .unwrap_or_else(|| panic!("{name} is not in the catalog"))
}

/// Reads every line of `file` with Tracee's `trace.Event`: each must parse, with the
/// catalog's eventId as Tracee's number, and every argument its name and the Go type its
/// Tracee type names. Returns how many lines of each kind there were.
fn tracee_reads(go: &Path, file: &Path) -> BTreeMap<String, usize> {
    let stdout = go_run(go, &consumer(), "check", &[file], "");
    let text = std::fs::read_to_string(file).unwrap();
    let results: Vec<&str> = stdout.lines().collect();
    assert_eq!(results.len(), text.lines().count(), "{stdout}");

    let mut kinds = BTreeMap::new();
    for (line, result) in text.lines().zip(&results) {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["eventName"].as_str().unwrap();
        let fields: Vec<&str> = result.split(' ').collect();
        assert_eq!(
            fields[0], "ok",
            "{name}: Tracee's types reject the line: {result}\n{line}"
        );
        assert_eq!(fields[2], name, "{result}");
        assert_eq!(fields[1], catalog_event_id(name).to_string(), "{name}");
        let expected: Vec<String> = v["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let ty = a["type"].as_str().unwrap();
                format!(
                    "{}:{}",
                    a["name"].as_str().unwrap(),
                    go_type(ty, &a["value"])
                )
            })
            .collect();
        assert_eq!(fields[3..], expected, "{name}");
        *kinds.entry(name.to_string()).or_default() += 1;
    }
    kinds
}

#[test]
fn tracee_event_type_parses_every_example_line() {
    let Some(go) = types_prerequisites() else {
        return;
    };
    let kinds = tracee_reads(&go, &examples());
    // One of each event: every captured hooked event, and the raised ones.
    for name in RAISED.iter().map(|e| e.name) {
        assert!(kinds.contains_key(name), "no example line of {name}");
    }
    assert!(kinds.len() > CATALOG.len() / 2, "{kinds:?}");
}

/// The environment variable that makes `helper_makes_every_line_kind` act.
const HELPER: &str = "MMTRACE_TEST_EVERY_LINE_KIND";

/// Run as the traced command of `tracee_event_type_parses_a_recording_of_every_line_kind`:
/// memory made writable and executable (an alert), a child killed (a kill, and the pressure
/// mmtrace reads then), and more munmap calls than a 4 KiB ring holds (lost events).
#[test]
fn helper_makes_every_line_kind() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    unsafe {
        let wx = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(wx, libc::MAP_FAILED);
    }
    // Each step once the ring, which is small, has been read: a full ring would lose it.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(300));
    pause();
    // A child that only waits, so that it adds no calls of its own.
    let child = match unsafe { libc::fork() } {
        0 => loop {
            unsafe { libc::pause() };
        },
        pid => pid,
    };
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    assert_eq!(
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) },
        child
    );
    pause();
    for _ in 0..300_000 {
        unsafe { libc::munmap(0x10000 as *mut libc::c_void, 4096) };
    }
}

/// A real recording holds every kind of line besides the events: `mem_prot_alert`,
/// `mmtrace_pressure` after a kill, `mmtrace_lost` after a full ring. A Tracee consumer reads
/// each of them.
#[test]
fn tracee_event_type_parses_a_recording_of_every_line_kind() {
    if !bpf_allowed() {
        return;
    }
    let Some(go) = types_prerequisites() else {
        return;
    };
    let dir = workdir("recording");
    let recording = dir.join("every-kind.json");
    // The command exits with the helper's status; what both say goes to the test's stderr.
    let traced = Command::new(BIN)
        .args(["trace", "-e", "mmap,munmap,kill,mem_prot_alert"])
        .args(["--buffer-size", "4K", "-o"])
        .arg(format!("json:{}", recording.display()))
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "helper_makes_every_line_kind", "--nocapture"])
        .env(HELPER, "1")
        .status()
        .unwrap();
    assert!(traced.success(), "mmtrace trace: {traced}");
    let kinds = tracee_reads(&go, &recording);
    for kind in ["mem_prot_alert", "kill", "mmtrace_pressure", "mmtrace_lost"] {
        assert!(kinds.contains_key(kind), "no {kind} line: {kinds:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A test that cannot run says so in the skip report, with the reason and the fix, and fails
/// under CI: the examples test with its Go hidden.
#[test]
fn a_missing_prerequisite_is_reported_and_fails_under_ci() {
    if std::env::var_os("MMTRACE_GO").is_some() {
        return; // the run below, or a Go named on purpose
    }
    let dir = workdir("skip");
    let report = dir.join("skipped.tsv");
    let run = |ci: bool| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "tracee_event_type_parses_every_example_line"])
            .env("MMTRACE_GO", dir.join("no-go"))
            .env("MMTRACE_SKIP_REPORT", &report)
            .env_remove("CI");
        if ci {
            command.env("CI", "true");
        }
        command.output().unwrap()
    };
    let out = run(false);
    assert!(out.status.success(), "{out:?}");
    let lines = std::fs::read_to_string(&report).unwrap();
    let fields: Vec<&str> = lines.trim_end().split('\t').collect();
    assert_eq!(
        fields,
        [
            "tracee_types::tracee_event_type_parses_every_example_line",
            &format!(
                "no Go 1.24 at {} (MMTRACE_GO names another)",
                dir.join("no-go").display()
            ),
            TEST_DEPS,
        ]
    );
    let out = run(true);
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("under CI this test must run: no Go 1.24"),
        "{stdout}"
    );
    // Under CI nothing is recorded: the failure says it.
    assert_eq!(std::fs::read_to_string(&report).unwrap(), lines);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The entity ids of every example line are what Tracee's own `HashTaskID` gives for the
/// line's thread and process (host id, start), and mmtrace's hash is Tracee's on inputs
/// across the whole range besides.
#[test]
fn entity_ids_are_tracees_own() {
    let Some(go) = go_present() else {
        return;
    };
    let dir = workdir("taskid");
    // HashTaskID and the hash under it, copied from Tracee's modules in Go's module cache
    // into a module of their own: the rest of Tracee's packages need dependencies it lacks.
    let modules = std::fs::read_to_string(consumer().join("hash-modules")).unwrap();
    let modules: Vec<&str> = modules.lines().collect();
    let dirs = match download(&go, &dir, &modules) {
        Ok(dirs) => dirs,
        Err(why) => {
            skip(&format!("Tracee's modules {modules:?}: {why}"), FETCH);
            return;
        }
    };
    for (from, to) in [
        (
            dirs[0].join("pkg/datastores/process/taskid.go"),
            "pkg/datastores/process",
        ),
        (dirs[1].join("murmur/murmur.go"), "common/murmur"),
    ] {
        std::fs::create_dir_all(dir.join(to)).unwrap();
        std::fs::copy(&from, dir.join(to).join(from.file_name().unwrap())).unwrap();
    }
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

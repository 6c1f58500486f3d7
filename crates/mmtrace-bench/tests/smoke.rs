//! bench/run end to end: one tiny round of every installed configuration, and a row for each.
//! No timings are checked: they belong to BENCHMARKS.md, not to a test on a shared machine.

use std::path::Path;
use std::process::Command;

use mmtrace_testkit::bpf_allowed;

#[test]
fn every_installed_configuration_gets_a_row() {
    if !bpf_allowed() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The test's own target dir is locked by the cargo running it, so the script's release
    // build goes to a dir of its own beside it: target/debug/deps/smoke-* is three levels down.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("bench");
    let out = Command::new(root.join("bench/run"))
        .args(["--quick", "--no-install"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/run failed:\n{stdout}\n{stderr}"
    );

    let mut configs = vec![
        "none",
        "floor",
        "mmtrace-count",
        "mmtrace-core",
        "mmtrace-json",
        "mmtrace-table",
        "mmtrace-stack",
        "out-of-scope",
    ];
    for (tool, peers) in [
        (
            "bpftrace",
            &["bpftrace-empty", "bpftrace-count", "bpftrace-print"][..],
        ),
        ("strace", &["strace"]),
        ("perf", &["perf-trace"]),
    ] {
        if installed(tool) {
            configs.extend(peers);
        } else {
            assert!(
                stdout.contains(&format!("skipped: {tool} is not installed")),
                "{stdout}"
            );
        }
    }
    for workload in ["munmap", "mlock", "mmap", "getppid", "munmap-2threads"] {
        for config in &configs {
            let row = stdout.lines().find(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.len() == 13 && words[0] == workload && words[1] == *config
            });
            assert!(row.is_some(), "no row for {workload} {config}:\n{stdout}");
        }
    }
    assert!(stdout.contains("first event ms"), "{stdout}");
}

fn installed(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

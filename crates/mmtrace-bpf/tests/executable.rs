//! The caller's executable, read in the kernel, against what /proc says and what the test
//! ran: this process's own, two processes each with its own, and one process across an exec.
//! Needs root: see common::bpf_allowed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{events_of, map_and_unmap_a_page, tid, trace, trace_with};
use mmtrace_events::Event;

/// Set in a child run of this binary: the program it execs once it has made its calls.
const EXEC_NEXT: &str = "MMTRACE_TEST_EXEC_NEXT";

fn exe_of(e: &Event) -> Option<String> {
    e.ctx
        .executable
        .as_ref()
        .map(|p| p.to_str_lossy().into_owned())
}

#[test]
fn own_calls_carry_this_binary() {
    let Some(mut t) = trace("mmap,munmap") else {
        return;
    };
    let own = std::fs::read_link("/proc/self/exe").unwrap();
    for _ in 0..3 {
        map_and_unmap_a_page();
    }
    let got = events_of(&mut t, tid());
    assert_eq!(got.len(), 6, "{got:#?}");
    for e in &got {
        assert_eq!(exe_of(e).as_deref(), own.to_str(), "{e:#?}");
    }
}

/// Not a test of its own: the body of a child run of this binary (see `spawn_waiting`), which
/// maps and unmaps a page once told to go on, then execs what EXEC_NEXT names. Run by
/// itself, it does nothing.
#[test]
fn child_maps_then_execs() {
    let Ok(next) = std::env::var(EXEC_NEXT) else {
        return;
    };
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    map_and_unmap_a_page();
    use std::os::unix::process::CommandExt;
    panic!("exec {next}: {}", Command::new(&next).exec());
}

/// A copy of `from` named `name` in `dir`, executable.
fn copy_to(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to.canonicalize().unwrap()
}

/// `exe` (a copy of this binary) run as `child_maps_then_execs`, waiting on its stdin.
fn spawn_waiting(exe: &Path, next: &Path) -> Child {
    Command::new(exe)
        .args(["--exact", "child_maps_then_execs", "--test-threads=1", "-q"])
        .env(EXEC_NEXT, next)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn each_process_carries_its_own_executable_and_a_new_one_after_exec() {
    if !common::bpf_allowed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mmtrace-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let me = std::env::current_exe().unwrap();
    let first = copy_to(&me, &dir, "first");
    let second = copy_to(&me, &dir, "second");
    let after = copy_to(Path::new("/bin/true"), &dir, "after-exec");
    let mut a = spawn_waiting(&first, &after);
    let mut b = spawn_waiting(&second, &after);
    let pids = [a.id(), b.id()];
    // What the kernel says each runs, before either execs. spawn can return a moment before
    // the child's new mm, and so its exe, is in place (exec wakes the parent as it lets go of
    // the old mm): a window the emulated arm64 guests made wide enough to hit.
    let proc_exe = pids.map(|p| {
        let read = || std::fs::read_link(format!("/proc/{p}/exe")).unwrap();
        for _ in 0..100 {
            if read() != me {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        read()
    });
    assert_eq!(proc_exe, [first.clone(), second.clone()]);

    // The privilege was checked before the children were started: a return here would leave
    // them waiting for ever.
    let mut t = trace_with("mmap,munmap", |o| {
        o.scope = Default::default();
        o.roots = pids.to_vec();
    })
    .expect("BPF was allowed above");
    // One after the other: the second's calls come after all of the first's.
    let mut events = Vec::new();
    for child in [&mut a, &mut b] {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success());
        t.drain(|e| events.push(e));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let [first, second, after] = [first, second, after].map(|p| p.display().to_string());
    // Each maps a page, then the loader maps the program it execs: the calls before the exec
    // carry the process's own executable, all those after it the new one.
    for (pid, before) in [(pids[0], first), (pids[1], second)] {
        let paths: Vec<Option<String>> = events
            .iter()
            .filter(|e| e.ctx.host_pid == pid)
            .map(exe_of)
            .collect();
        let switch = paths
            .iter()
            .position(|p| p.as_ref() != Some(&before))
            .unwrap_or(paths.len());
        assert!(switch >= 2, "{pid}: no calls with {before}: {paths:?}");
        assert!(
            switch < paths.len() && paths[switch..].iter().all(|p| p.as_ref() == Some(&after)),
            "{pid}: the calls after the exec must carry {after}: {paths:?}"
        );
    }
}

//! The example lines of the event reference are real calls, captured through mmtrace.

use std::path::PathBuf;
use std::process::Stdio;

use mmtrace_events::catalog;
use mmtrace_testkit::{bpf_allowed, kernel_has_syscall, Memcg, Trace};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const PAGE: u64 = 4096;
const UPDATE: &str = "MMTRACE_UPDATE_EXAMPLES";
/// The executable the examples show: the callers run this test's binary, whose path names the
/// machine that captured them (its checkout, its build's hash); the examples show it as the
/// program the caller names itself, installed.
const SHOWN_EXECUTABLE: &str = "/usr/local/bin/mmtrace-example";
/// Where a table row shows `event`: a call as ` name(`, a raised event as ` name: `.
fn row_marker(event: &str) -> String {
    match catalog::raised(event) {
        Some(_) => format!(" {event}: "),
        None => format!(" {event}("),
    }
}

/// Kernel events no test can provoke safely; the catalog's docs say why.
fn not_captured(event: &str) -> bool {
    catalog::doc(event).is_some_and(|d| d.no_example.is_some())
}

/// Stops a trace of the examples; it must have ended cleanly.
fn stop(trace: Trace) {
    let (code, stderr) = trace.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Forks a process that makes one call of every catalog event and nothing else, so both
/// traces see the very same calls; returns its pid.
fn spawn_caller() -> i32 {
    match unsafe { libc::fork() } {
        0 => unsafe { libc::_exit(make_calls()) },
        pid => {
            assert!(pid > 0);
            pid
        }
    }
}

unsafe fn sys(nr: libc::c_long, a: [u64; 6]) -> i64 {
    libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) as i64
}

/// The calls, in the forked child: raw system calls only, no allocation, because the test
/// process has other threads. Returns 0, or the number of the step that went wrong.
unsafe fn make_calls() -> i32 {
    use libc::*;
    let none = u64::MAX;
    let rw = (PROT_READ | PROT_WRITE) as u64;
    let anon = (MAP_PRIVATE | MAP_ANONYMOUS) as u64;
    prctl(PR_SET_NAME, c"mmtrace-example".as_ptr());
    // Writable and executable at once: Tracee's mem_prot_alert. Before the example mmap, which
    // must be the last one.
    let rwx = (PROT_READ | PROT_WRITE | PROT_EXEC) as u64;
    if sys(SYS_mmap, [0, PAGE, rwx, anon, none, 0]) == -1 {
        return 24;
    }
    // Mapped first, so that the example mmap below is the last one.
    let sealed = sys(SYS_mmap, [0, PAGE, PROT_READ as u64, anon, none, 0]);
    if sealed == -1 {
        return 1;
    }
    let a = sys(SYS_mmap, [0, 2 * PAGE, rw, anon, none, 0]);
    if a == -1 {
        return 2;
    }
    let a = a as u64;
    // pkey_mprotect undoes the mprotect, so the two pages are one mapping again for mremap.
    if sys(SYS_mprotect, [a, PAGE, PROT_READ as u64, 0, 0, 0]) != 0 {
        return 3;
    }
    if sys(SYS_pkey_mprotect, [a, PAGE, rw, none, 0, 0]) != 0 {
        // An arm64 kernel before 6.12 has none (kernel_gaps() leaves its example out): the
        // second page is made read-only too, by an mprotect the same as the example's.
        if *__errno_location() != ENOSYS
            || sys(SYS_mprotect, [a + PAGE, PAGE, PROT_READ as u64, 0, 0, 0]) != 0
        {
            return 4;
        }
    }
    if sys(SYS_madvise, [a, 2 * PAGE, MADV_DONTNEED as u64, 0, 0, 0]) != 0 {
        return 5;
    }
    let b = sys(
        SYS_mremap,
        [a, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE as u64, 0, 0],
    );
    if b == -1 {
        return 6;
    }
    let b = b as u64;
    if sys(SYS_mlock, [b, PAGE, 0, 0, 0, 0]) != 0 {
        return 7;
    }
    if sys(SYS_munlock, [b, PAGE, 0, 0, 0, 0]) != 0 {
        return 8;
    }
    if sys(SYS_mlock2, [b, PAGE, MLOCK_ONFAULT as u64, 0, 0, 0]) != 0 {
        return 9;
    }
    if sys(SYS_munmap, [b, 4 * PAGE, 0, 0, 0, 0]) != 0 {
        return 10;
    }
    if sys(SYS_brk, [0; 6]) <= 0 {
        return 11;
    }
    // Before 6.10 there is no mseal; kernel_gaps() leaves its example out.
    if sys(SYS_mseal, [sealed as u64, PAGE, 0, 0, 0, 0]) != 0 && *__errno_location() != ENOSYS {
        return 12;
    }
    // Off unless the kernel was booted with secretmem.enable=1 (Debian's 6.1): kernel_gaps()
    // leaves its example out.
    let secret = sys(SYS_memfd_secret, [O_CLOEXEC as u64, 0, 0, 0, 0, 0]);
    if secret == -1 && *__errno_location() != ENOSYS {
        return 13;
    }
    if secret >= 0 {
        close(secret as i32);
    }
    let me = sys(SYS_pidfd_open, [getpid() as u64, 0, 0, 0, 0, 0]);
    if me == -1 {
        return 14;
    }
    let iov = iovec {
        iov_base: sealed as *mut c_void,
        iov_len: PAGE as usize,
    };
    let iov_addr = &iov as *const iovec as u64;
    let advised = sys(
        SYS_process_madvise,
        [me as u64, iov_addr, 1, MADV_COLD as u64, 0, 0],
    );
    if advised != PAGE as i64 {
        return 15;
    }
    close(me as i32);
    if sys(
        SYS_mlockall,
        [(MCL_CURRENT | MCL_ONFAULT) as u64, 0, 0, 0, 0, 0],
    ) != 0
    {
        return 16;
    }
    if sys(SYS_munlockall, [0; 6]) != 0 {
        return 17;
    }
    // Signal 0: a probe of our own process, the way monitors poll.
    if sys(SYS_kill, [getpid() as u64, 0, 0, 0, 0, 0]) != 0 {
        return 23;
    }
    kill_and_reap()
}

/// A userspace OOM killer's sequence on a fresh victim: pidfd_open, SIGKILL, process_mrelease.
/// The victim may run its own exit first (ESRCH), so a few victims are tried; the example is
/// the last, successful attempt.
unsafe fn kill_and_reap() -> i32 {
    use libc::*;
    for _ in 0..20 {
        let victim = fork();
        if victim == 0 {
            loop {
                pause();
            }
        }
        if victim < 0 {
            return 18;
        }
        let fd = sys(SYS_pidfd_open, [victim as u64, 0, 0, 0, 0, 0]);
        if fd == -1 {
            return 19;
        }
        let kill = sys(
            SYS_pidfd_send_signal,
            [fd as u64, SIGKILL as u64, 0, 0, 0, 0],
        );
        if kill != 0 {
            return 20;
        }
        let reaped = sys(SYS_process_mrelease, [fd as u64, 0, 0, 0, 0, 0]);
        let errno = *__errno_location();
        waitpid(victim, std::ptr::null_mut(), 0);
        close(fd as i32);
        match (reaped, errno) {
            (0, _) => return 0,
            (_, ESRCH) => continue,
            _ => return 21,
        }
    }
    22
}

/// Where the committed examples live.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/events")
        .join(name)
}

/// The caller's lines from both outputs, paired: the table header, then (event, JSON line,
/// table line) in the order the calls were made.
/// The traced lines of the caller's calls and of the OOM victim's kernel events, as JSON
/// lines and table rows in the same order.
fn traced_lines(
    json: &str,
    table: &str,
    caller: i32,
    victim: i32,
) -> (String, Vec<(String, String, String)>) {
    // Calls come from the caller; kernel events concern the victim.
    let kernel = |name: &str| {
        name.starts_with("oom_") || name == "sched_process_exit" || name == "exit_mmap"
    };
    let mine = |v: &Value| match v["eventName"].as_str() {
        Some(n) if kernel(n) => v["hostProcessId"] == victim || v["args"][0]["value"] == victim,
        _ => v["hostProcessId"] == caller,
    };
    let json: Vec<(String, &str)> = json
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            mine(&v).then(|| (v["eventName"].as_str().unwrap().to_string(), l))
        })
        .collect();
    let mut table = table.lines();
    let header = table.next().expect("a table header").to_string();
    let is_kernel_row = |l: &str| {
        l.contains("  oom_") || l.contains("  sched_process_exit(") || l.contains("  exit_mmap(")
    };
    let rows: Vec<&str> = table
        .filter(|l| match is_kernel_row(l) {
            true => l.contains(&format!(" {victim} ")) || l.contains(&format!("(pid={victim}")),
            false => l.contains(&format!(" {caller} ")),
        })
        .collect();
    assert_eq!(json.len(), rows.len(), "both outputs show the same calls");
    let pairs = json
        .into_iter()
        .zip(rows)
        .map(|((name, j), t)| {
            assert!(t.contains(&row_marker(&name)), "{t} is not {name}");
            (name, j.to_string(), t.to_string())
        })
        .collect();
    (header, pairs)
}

/// Outgrows a small memory cgroup, so the kernel's OOM killer kills it; returns its pid.
fn oom_victim() -> i32 {
    let memcg = Memcg::new("examples", 32 << 20);
    let victim = memcg.spawn_hog(64 << 20);
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(victim, &mut status, 0) }, victim);
    assert!(
        libc::WIFSIGNALED(status),
        "the OOM killer killed it: {status:#x}"
    );
    victim
}

/// The decoded arguments of the JSON line that the table row lacks, unless the row says it
/// left arguments out to fit its width.
fn decoded_missing_from(line: &str, row: &str) -> Vec<String> {
    if row.contains("...)") {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(line).unwrap();
    v["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| {
            let d = a.get("decoded")?;
            Some(format!("{}={}", a["name"].as_str()?, d.as_str()?))
        })
        .filter(|d| !row.contains(d.as_str()))
        .collect()
}

/// What must not change between captures: the event, its arguments' names, types and
/// decoded values, and the outcome; pids, addresses and times do.
/// What this kernel lacks, read from tracefs (and, for memfd_secret, a call) rather than from
/// mmtrace: the events it does not have, and those whose lines leave fields out. The committed examples come from a kernel
/// with every event whole; on others the missing are not examined and the partial are
/// checked for the arguments they have.
fn kernel_gaps() -> (Vec<&'static str>, Vec<&'static str>) {
    let tracefs = "/sys/kernel/tracing/events";
    let has_field = |event: &str, field: &str| {
        std::fs::read_to_string(format!("{tracefs}/{event}/format"))
            .is_ok_and(|f| f.contains(&format!(" {field};")))
    };
    let mut missing: Vec<&str> = ["mseal", "pkey_mprotect"]
        .into_iter()
        .filter(|e| !kernel_has_syscall(e))
        .collect();
    // The syscall is there but says ENOSYS when secretmem is off: only a call tells.
    let secret = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    match secret {
        -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) => {
            missing.push("memfd_secret")
        }
        -1 => {}
        fd => unsafe {
            libc::close(fd as i32);
        },
    }
    let mut partial = Vec::new();
    if !has_field("sched/sched_process_exit", "group_dead") {
        partial.push("sched_process_exit");
    }
    if !has_field("oom/mark_victim", "total_vm") {
        partial.push("oom_mark_victim");
    }
    (missing, partial)
}

/// Whether `fresh` is `committed` with some arguments left out.
fn is_part_of(fresh: &Value, committed: &Value) -> bool {
    let args = |v: &Value| v["args"].as_array().cloned().unwrap_or_default();
    let all = args(committed);
    let mut rest = fresh.clone();
    rest["args"] = committed["args"].clone();
    rest == *committed && args(fresh).iter().all(|a| all.contains(a))
}

fn shape(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap();
    let args: Vec<Value> = v["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!([a["name"], a["type"], a.get("decoded")]))
        .collect();
    json!({
        "eventName": v["eventName"],
        "args": args,
        "returnSign": v["returnValue"].as_i64().unwrap().signum(),
        "returnError": v.get("returnError"),
    })
}

/// Makes one call of every catalog event, traces it with one `mmtrace trace` writing both JSON
/// lines and a table (so each pair of lines is one event, down to its duration), and checks the lines committed in docs/events/ against the fresh capture; with
/// MMTRACE_UPDATE_EXAMPLES=1 it rewrites them instead. Loading BPF needs root: without it the
/// test skips, except under CI.
#[test]
fn example_lines_are_real_calls() {
    if !bpf_allowed() {
        return;
    }
    let dir = format!(
        "{}/examples-{}",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let (json_path, table_path) = (format!("{dir}/out.json"), format!("{dir}/out.txt"));
    // Only this test's own processes: a storm elsewhere on the machine could fill the ring.
    let tree = format!("tree={}", std::process::id());
    let trace = Trace::start(
        BIN,
        &[
            "-s",
            &tree,
            "-o",
            &format!("json:{json_path}"),
            "-o",
            &format!("table:{table_path}"),
        ],
        Stdio::null(),
    );
    let pid = spawn_caller();
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "step {} of the example calls failed",
        libc::WEXITSTATUS(status)
    );
    let victim = oom_victim();
    stop(trace);
    let (header, lines) = traced_lines(
        &std::fs::read_to_string(&json_path).unwrap(),
        &std::fs::read_to_string(&table_path).unwrap(),
        pid,
        victim,
    );
    // The last call of each event is its example: the successful process_mrelease, the
    // pidfd_open of its victim.
    let (missing, partial) = kernel_gaps();
    let examined: Vec<&str> = catalog::names()
        .filter(|e| !not_captured(e) && !missing.contains(e))
        .collect();
    let fresh: Vec<(&str, &str)> = examined
        .iter()
        .map(|&e| {
            let (_, j, t) = lines
                .iter()
                .rev()
                .find(|(name, _, _)| name == e)
                .unwrap_or_else(|| panic!("no {e} was traced"));
            (j.as_str(), t.as_str())
        })
        .collect();

    if std::env::var_os(UPDATE).is_some() {
        assert!(
            missing.is_empty() && partial.is_empty(),
            "this kernel lacks {missing:?} and leaves fields of {partial:?} out: capture the \
             examples on one with every event whole"
        );
        let exe = std::env::current_exe().unwrap();
        let exe = serde_json::to_string(exe.to_str().unwrap()).unwrap();
        let shown = serde_json::to_string(SHOWN_EXECUTABLE).unwrap();
        let jsonl: String = fresh
            .iter()
            .map(|(j, _)| format!("{}\n", j.replace(&exe, &shown)))
            .collect();
        let table: String = fresh.iter().map(|(_, t)| format!("{t}\n")).collect();
        std::fs::write(fixture("examples.jsonl"), jsonl).unwrap();
        std::fs::write(fixture("examples.table"), format!("{header}\n{table}")).unwrap();
        eprintln!("rewrote the examples; regenerate the pages with: cargo run -- docs docs/events");
        return;
    }
    let stale = format!("run `{UPDATE}=1 cargo test -p mmtrace --test examples` as root, then `cargo run -- docs docs/events`");
    let committed = std::fs::read_to_string(fixture("examples.jsonl")).unwrap();
    let committed_table = std::fs::read_to_string(fixture("examples.table")).unwrap();
    assert_eq!(
        committed.lines().count(),
        fresh.len() + missing.len(),
        "{stale}"
    );
    for (e, (line, table_line)) in examined.iter().zip(&fresh) {
        let old = committed
            .lines()
            .find(|l| l.contains(&format!("\"eventName\":\"{e}\"")))
            .unwrap_or_else(|| panic!("no committed example of {e}: {stale}"));
        if partial.contains(e) {
            assert!(is_part_of(&shape(line), &shape(old)), "{e}: {line}");
        } else {
            assert_eq!(shape(old), shape(line), "{e}: {stale}");
        }
        let old_row = committed_table
            .lines()
            .find(|l| l.contains(&row_marker(e)))
            .unwrap_or_else(|| panic!("no committed table line of {e}: {stale}"));
        // Table rows differ only where addresses, descriptors, pids and times do. A raised
        // event's row holds only its alert text.
        if catalog::raised(e).is_some() {
            continue;
        }
        assert_eq!(decoded_missing_from(line, table_line), Vec::<String>::new());
        assert!(
            table_line.len() <= 120,
            "a table in a file is 120 columns wide: {table_line}"
        );
        let missing = decoded_missing_from(line, old_row);
        assert!(
            missing.is_empty(),
            "{e}: {old_row} lacks {missing:?}: {stale}"
        );
    }
}

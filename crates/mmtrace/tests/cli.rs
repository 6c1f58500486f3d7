//! The mmtrace binary end to end: outputs, summary and one-line errors. The tracing tests
//! load BPF programs, which needs root; without it they skip, except under CI.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");

use mmtrace_testkit::{bpf_allowed, summary_count, summary_row, tid, Trace};

fn bad_mlock2() {
    unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
}

const TRACEE_KEYS: [&str; 32] = [
    "timestamp",
    "threadStartTime",
    "processorId",
    "processId",
    "cgroupId",
    "threadId",
    "parentProcessId",
    "hostProcessId",
    "hostThreadId",
    "hostParentProcessId",
    "userId",
    "mountNamespace",
    "pidNamespace",
    "processName",
    "executable",
    "hostName",
    "containerId",
    "container",
    "kubernetes",
    "eventId",
    "eventName",
    "matchedPolicies",
    "argsNum",
    "returnValue",
    "syscall",
    "stackAddresses",
    "contextFlags",
    "threadEntityId",
    "processEntityId",
    "parentEntityId",
    "args",
    "duration",
];

#[test]
fn json_lines_follow_tracee_and_are_flushed_on_sigterm() {
    if !bpf_allowed() {
        return;
    }
    let dir = tempdir();
    let path = format!("{dir}/out.json");
    let file = std::fs::File::create(&path).unwrap();
    let run = Trace::start(BIN, &["-e", "mlock2", "-o", "json"], Stdio::from(file));
    bad_mlock2();
    let (code, stderr) = run.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "last line must be complete");
    let me = tid();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"hostThreadId\":{me},")))
        .expect("our call is in the output");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    // The test runs outside any container: those keys are left out rather than empty.
    let container_keys = ["containerId", "container", "kubernetes"];
    let tracee_keys: Vec<&str> = TRACEE_KEYS
        .into_iter()
        .filter(|k| !container_keys.contains(k))
        .collect();
    assert_eq!(&keys[..tracee_keys.len()], tracee_keys, "key order");
    assert_eq!(
        keys[tracee_keys.len()..],
        ["processStartTime", "returnError", "locked"]
    );
    assert_eq!(v["locked"]["capIpcLock"], true, "root holds CAP_IPC_LOCK");
    assert_eq!(v["eventName"], "mlock2");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(v["hostName"], hostname.trim_end());
    // Tracee's id: the syscall number of the machine's architecture (325 on x86_64).
    let mlock2 = mmtrace_events::by_name("mlock2").unwrap();
    assert_eq!(v["eventId"], mlock2.event_id.to_string());
    assert_eq!(v["returnValue"], -22);
    assert_eq!(v["returnError"], "EINVAL");
    assert_eq!(v["processId"], std::process::id());
    assert_eq!(v["argsNum"], 3);
    assert_eq!(
        v["args"],
        serde_json::json!([
            {"name": "addr", "type": "trace.Pointer", "value": "0x10000"},
            {"name": "len", "type": "uint64", "value": 4096},
            {"name": "flags", "type": "int32", "value": 8, "decoded": "0x8"},
        ])
    );
    assert!(v["duration"].as_u64().unwrap() > 0);
    // The summary counts what was seen and what was lost.
    assert!(summary_count(&stderr, "mlock2", "calls") >= 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "mlock2", "lost"), 0, "{stderr}");
    assert!(
        stderr.contains("mmtrace: 1 event type traced in "),
        "{stderr}"
    );
}

#[test]
fn table_output_to_a_file_on_ctrl_c() {
    if !bpf_allowed() {
        return;
    }
    let dir = tempdir();
    let path = format!("{dir}/out.txt");
    let run = Trace::start(
        BIN,
        &["-e", "mlock2", "-o", &format!("table:{path}")],
        Stdio::null(),
    );
    bad_mlock2();
    let (code, _) = run.stop(libc::SIGINT);
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&path).unwrap();
    let header = text.lines().next().unwrap();
    // The date heads the time column, whose rows hold the time of day.
    let date = header.split_whitespace().next().unwrap();
    assert!(
        date.len() == 10 && date.bytes().filter(|&b| b == b'-').count() == 2,
        "{header}"
    );
    for col in ["COMM", "PID/TID", "DURATION", "CALL"] {
        assert!(header.contains(col), "{header}");
    }
    let pid_tid = format!(" {}/{} ", std::process::id(), tid());
    let row = text.lines().find(|l| l.contains(&pid_tid)).expect(&text);
    assert!(row.contains(" mlock2("), "{row}");
    assert!(
        row.contains("flags=0x8") && row.contains(") = -22 EINVAL"),
        "the flags that failed and the error stay: {row}"
    );
    for line in text.lines() {
        assert!(
            line.len() <= 120,
            "a file gets rows of 120 columns at most: {line}"
        );
    }
}

fn run_err(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn unknown_event_suggests_close_names() {
    let (code, err) = run_err(&["trace", "-e", "munmapp"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mmtrace: error: unknown event 'munmapp' (did you mean 'munmap'?)"),
        "{err}"
    );
}

#[test]
fn unwritable_output_fails_before_tracing() {
    let (code, err) = run_err(&["trace", "-o", "json:/nonexistent/dir/out.json"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write output file /nonexistent/dir/out.json"),
        "{err}"
    );
}

#[test]
fn bad_options_are_one_line_errors() {
    for (args, needle) in [
        (&["trace", "-o", "yaml"][..], "unknown output format 'yaml'"),
        (&["trace", "--buffer-size", "3M"][..], "not a power of two"),
        (
            &["trace", "-e", "tag=nosuch"][..],
            "unknown event set 'nosuch'",
        ),
    ] {
        let (code, err) = run_err(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn without_privileges_says_what_to_do() {
    // Drop to nobody with no capabilities; as an unprivileged user we already are there.
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .args(["trace", "-o", "none"])
        .output()
        .expect("setpriv (util-linux) is needed");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root, or the CAP_BPF and CAP_PERFMON capabilities"),
        "{err}"
    );
}

#[test]
fn list_shows_every_catalog_event() {
    let out = Command::new(BIN).arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Columns line up: the SETS column starts at the same place on every line of the table,
    // which ends at the first blank line (notes on partial events may follow).
    let sets_at: Vec<_> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.find("  yes ")
                .or(l.find("  no "))
                .or(l.find("  partial "))
                .or(l.find("  unknown "))
                .or(l.find("  AVAILABLE "))
        })
        .collect();
    assert!(
        sets_at.iter().all(|&at| at.is_some() && at == sets_at[0]),
        "{text}"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .expect(name)
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    for e in mmtrace_events::CATALOG {
        let row = row(e.name);
        assert!(
            row[1] == e.event_id.to_string() && row[3].split(',').eq(e.sets.iter().copied()),
            "{row:?}"
        );
    }
    // Tracee's ids where Tracee has the event (a syscall's is its number on the machine's
    // architecture), the extended range for mmtrace's own.
    let mmap = if cfg!(target_arch = "aarch64") {
        "222"
    } else {
        "9"
    };
    for (name, id) in [
        ("mmap", mmap),
        ("sched_process_exit", "716"),
        ("mem_prot_alert", "724"),
        ("oom_mark_victim", "1500"),
        ("mseal", "1504"),
    ] {
        assert_eq!(row(name)[1], id, "{name}");
    }
    // And the in-band lines, with the eventId their JSON lines carry; explain knows them.
    for l in mmtrace_events::catalog::IN_BAND {
        assert_eq!(row(l.name)[1], l.event_id.to_string(), "{text}");
        let out = Command::new(BIN)
            .args(["explain", l.name])
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && page.contains(l.summary), "{page}");
    }
}

/// Run as the grandchild in `command_and_its_descendants_only`: mlocks one page when asked.
#[test]
fn mlock_helper_for_command_test() {
    if std::env::var_os("MMTRACE_TEST_MLOCK").is_none() {
        return;
    }
    let page = vec![0u8; 8192];
    let addr = (page.as_ptr() as usize + 4095) & !4095;
    assert_eq!(unsafe { libc::mlock(addr as *const _, 4096) }, 0);
}

#[test]
fn command_and_its_descendants_only() {
    if !bpf_allowed() {
        return;
    }
    // A noisy neighbour: this process keeps making the same call the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                unsafe { libc::mlock(std::ptr::null(), 4096) };
            }
        })
    };
    let dir = tempdir();
    let path = format!("{dir}/cmd.json");
    let me = std::env::current_exe().unwrap();
    let out = Command::new(BIN)
        .args([
            "trace",
            "-e",
            "mlock",
            "-o",
            &format!("json:{path}"),
            "--",
            "sh",
            "-c",
        ])
        .arg("\"$0\" --exact mlock_helper_for_command_test --test-threads=1 >/dev/null; exit 7")
        .arg(&me)
        .env("MMTRACE_TEST_MLOCK", "1")
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "mmtrace exits with the command's status: {stderr}"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty(), "{stderr}");
    for e in &events {
        assert_ne!(
            e["hostProcessId"],
            std::process::id(),
            "nothing from other processes"
        );
    }
    let locks: Vec<_> = events.iter().filter(|e| e["returnValue"] == 0).collect();
    assert_eq!(
        locks.len(),
        1,
        "the grandchild's one successful mlock: {events:?}"
    );
    let sh = locks[0]["hostParentProcessId"].as_u64().unwrap();
    assert_ne!(
        sh,
        u64::from(std::process::id()),
        "made by the shell's child, not by the shell"
    );
    assert!(stderr.contains("filtered"), "{stderr}");
}

#[test]
fn bad_scopes_and_filters_stop_before_attaching() {
    for (args, needle) in [
        (&["trace", "-s", "pid>abc"][..], "scope 'pid>abc': 'abc' is not a number: expected a process id"),
        (&["trace", "-s", "cgroup=/no/such"][..], "scope cgroup=/no/such:"),
        (&["trace", "-e", "mlock2.data.flags=ONFAULT"][..], "filter 'mlock2.data.flags=ONFAULT': 'ONFAULT' is not a number or a name such as MLOCK_ONFAULT"),
        (&["trace", "--", "no-such-command-xyz"][..], "command not found: 'no-such-command-xyz'"),
    ] {
        let (code, err) = run_err(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

/// A fresh directory under the target dir, which tests may write to.
fn tempdir() -> String {
    let dir = format!(
        "{}/cli-{}-{}",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id(),
        tid()
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn user_runs_the_command_as_that_user() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() {
        return;
    }
    let out = Command::new(BIN)
        .args(["trace", "-o", "none", "--user", "nobody", "--", "sh", "-c"])
        .arg("[ \"$(id -u)\" = 65534 ] && [ \"$(id -g)\" = 65534 ] || exit 3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the command ran as nobody: {err}"
    );
    let out = Command::new(BIN)
        .args(["trace", "-o", "none", "--user", "65534", "--", "sh", "-c"])
        .arg("[ \"$(id -u)\" = 65534 ] && [ \"$(id -g)\" = 65534 ] || exit 3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a numeric uid works too: {err}");
    let (code, err) = run_err(&["trace", "--user", "no-such-user-xyz", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--user no-such-user-xyz: no such user"),
        "{err}"
    );
    let (code, err) = run_err(&["trace", "--user", "3999999999", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--user 3999999999: no user has uid 3999999999"),
        "{err}"
    );
}

/// Each option means what the help says, and each mistake gets a line naming it.
#[test]
fn options_do_what_they_say() {
    for (args, needle) in [
        // `-e -mlock` reaches the event list: the output format is the next thing checked.
        (
            &["trace", "-e", "-mlock", "-o", "yaml"][..],
            "unknown output format 'yaml'",
        ),
        (&["trace", "-e", "-nosuch"][..], "unknown event 'nosuch'"),
        (
            &["trace", "-e", ""][..],
            "empty event list: give names, -NAME, tag=SET or PREFIX*, or leave -e out",
        ),
        (
            &["trace", "-s", "pid=99999999999999"][..],
            "scope 'pid=99999999999999': '99999999999999' is out of range",
        ),
        (
            &["trace", "-s", "tree=1,2,,3"][..],
            "empty item in '1,2,,3': remove the extra comma",
        ),
        (
            &["trace", "-s", "container=4f1d2c,xyz"][..],
            "scope 'container=4f1d2c,xyz': 'xyz' is not a container id",
        ),
        // No container's id has 65 digits.
        (
            &["trace", "-s", &format!("container={}", "0".repeat(65))][..],
            "no container's id starts with '000",
        ),
        (
            &["trace", "--cri", "lxc:/run/lxc.sock"][..],
            "--cri 'lxc:/run/lxc.sock': unknown runtime 'lxc'",
        ),
        (
            &["trace", "--", "/etc/passwd"][..],
            "cannot run '/etc/passwd': it is not executable",
        ),
        (
            &["trace", "--", "/etc"][..],
            "cannot run '/etc': it is a directory",
        ),
        (
            &["trace", "--", "/no/such/program"][..],
            "cannot run '/no/such/program': no such file",
        ),
    ] {
        let (code, err) = run_err(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn reap_refuses_signals_that_do_not_kill() {
    let mut victim = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = victim.id().to_string();
    for (sig, what) in [
        ("STOP", "SIGSTOP stops a process, it does not kill it"),
        ("CONT", "SIGCONT resumes a process"),
        (
            "SIGCHLD",
            "SIGCHLD is ignored by a process unless it handles it",
        ),
    ] {
        let (code, err) = run_err(&["reap", "--signal", sig, &pid]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(what) && err.contains("use --signal KILL"),
            "{err}"
        );
    }
    assert_eq!(victim.try_wait().unwrap(), None, "nothing was sent");
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// On a hybrid system cgroup v2 is mounted below /sys/fs/cgroup, which is then no v2 cgroup.
#[test]
fn cgroup_scope_outside_the_v2_hierarchy() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hybrid = info.lines().any(|l| {
        l.contains(" - cgroup2 ") && l.split_whitespace().nth(4) != Some("/sys/fs/cgroup")
    });
    if !hybrid {
        return;
    }
    let (code, err) = run_err(&[
        "trace",
        "-o",
        "none",
        "-s",
        "cgroup=/sys/fs/cgroup",
        "--",
        "true",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("scope cgroup=/sys/fs/cgroup: /sys/fs/cgroup is not in the cgroup v2 hierarchy, which is mounted at /sys/fs/cgroup/"),
        "{err}"
    );
}

/// As strace -c, the summary lists the events a call reached, with their failed calls; the
/// others are counted in its first line, and `--summary-all` lists them too.
#[test]
fn the_summary_leaves_out_events_no_call_reached_unless_asked() {
    if !bpf_allowed() {
        return;
    }
    let scope = format!("tid={}", tid());
    for all in [false, true] {
        let mut args = vec!["-e", "munmap,mlock", "-s", &scope, "-o", "none"];
        if all {
            args.push("--summary-all");
        }
        let run = Trace::start(BIN, &args, Stdio::null());
        // A page nothing maps: munmap succeeds; an address off a page: EINVAL. This thread
        // makes no mlock.
        unsafe { libc::munmap(0x10000 as *mut libc::c_void, 4096) };
        unsafe { libc::munmap(0x10001 as *mut libc::c_void, 4096) };
        let (code, stderr) = run.stop(libc::SIGINT);
        assert_eq!(code, Some(0), "{stderr}");
        // Not the calls filtered out: other tests' threads make munmaps meanwhile.
        let row = |name: &str| {
            summary_row(&stderr, name).map(|r| ["calls", "lost", "errors"].map(|c| r[c].clone()))
        };
        assert_eq!(
            row("munmap"),
            Some(["2", "0", "1"].map(String::from)),
            "{stderr}"
        );
        match all {
            true => assert_eq!(
                row("mlock"),
                Some(["0", "0", "0"].map(String::from)),
                "{stderr}"
            ),
            false => assert!(row("mlock").is_none(), "{stderr}"),
        }
        let said = "mmtrace: 2 event types traced in ";
        let left_out = "; 1 event type with no call left out (--summary-all lists them)";
        let first = stderr.lines().find(|l| l.starts_with(said)).expect(&stderr);
        assert_eq!(first.ends_with(left_out), !all, "{first}");
    }
}

/// A time as the summary writes it ("850ns", "5.8us", "12.35ms", "1.20s"): its nanoseconds,
/// and half its last digit's step, the most its rounding moved it.
fn shown_ns(text: &str) -> (f64, f64) {
    let (digits, scale) = [("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)]
        .into_iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, scale)))
        .unwrap_or_else(|| panic!("not a time: {text}"));
    let decimals = digits.split('.').nth(1).map_or(0, str::len) as i32;
    let value: f64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a time: {text}"));
    (value * scale, scale * 0.5 * 10f64.powi(-decimals))
}

/// `[1K, 2K)` as bpftrace labels a log2 bucket: where it starts, in nanoseconds.
fn bucket_from(label: &str) -> u64 {
    let first = label
        .trim_start_matches('[')
        .split([',', ']'])
        .next()
        .unwrap();
    let (digits, shift) = match first.strip_suffix(['K', 'M', 'G']) {
        Some(d) => (
            d,
            10 * (1 + "KMG".find(first.chars().last().unwrap()).unwrap()),
        ),
        None => (first, 0),
    };
    digits.parse::<u64>().unwrap() << shift
}

/// Every time the summary gives of munmap, its histogram's buckets included, is where the
/// time this test measured each call take puts it: calls from a page never touched to 128
/// MiB freed, and calls that fail.
#[test]
fn the_summary_times_calls_as_the_test_measured_them() {
    use mmtrace_testkit::{assert_timed_as_measured, timed_munmaps, Timings};
    if !bpf_allowed() {
        return;
    }
    let scope = format!("tid={}", tid());
    let args = ["-e", "munmap", "-s", &scope, "-o", "none", "--summary"];
    let run = Trace::start(BIN, &args, Stdio::null());
    let calls = timed_munmaps(3);
    let (code, stderr) = run.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    let row = summary_row(&stderr, "munmap").expect(&stderr);
    assert_eq!(row["errors"], "3", "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("@ns[munmap]: "))
        .take_while(|l| !l.is_empty())
        .collect();
    let head = lines.first().expect(&stderr);
    let n = calls.len();
    assert!(
        head.starts_with(&format!("@ns[munmap]: {n} calls, p50 ")),
        "{head}"
    );
    let buckets = lines[1..]
        .iter()
        .map(|line| {
            let before_bar = line.split('|').next().unwrap();
            let count = before_bar.split_whitespace().last().unwrap();
            (bucket_from(line), count.parse().unwrap())
        })
        .collect();
    let timings = Timings {
        calls: row["calls"].parse().unwrap(),
        total: shown_ns(&row["time"]),
        mean: shown_ns(&row["mean"]),
        p99: shown_ns(&row["p99"]),
        max: shown_ns(&row["max"]),
        buckets,
    };
    assert_timed_as_measured(&calls, &timings, &stderr);
}

/// The time traced ends when the command does, to the microsecond: not at a wait's timeout.
#[test]
fn the_time_traced_is_the_commands_to_the_microsecond() {
    if !bpf_allowed() {
        return;
    }
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["trace", "-e", "munmap", "-o", "none", "--", "sleep", "0.25"])
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let traced = stderr
        .split("traced in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect(&stderr);
    assert_eq!(traced.split('.').nth(1).map(str::len), Some(6), "{stderr}");
    let traced: f64 = traced.parse().unwrap();
    assert!(
        (0.25..wall).contains(&traced),
        "{traced} s of {wall}: {stderr}"
    );
}

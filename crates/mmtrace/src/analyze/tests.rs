//! The analyzer on real captured lines, on lines carrying issue 4's enrichment, and on garbage.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{Analyzer, Format, Report};

/// One real call of every event, captured by tests/examples.rs.
const EXAMPLES: &str = include_str!("../../../../docs/events/examples.jsonl");

fn example(event: &str) -> Value {
    EXAMPLES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["eventName"] == event)
        .unwrap()
}

fn analyze(lines: &[String]) -> Report {
    let mut a = Analyzer::new();
    for (i, l) in lines.iter().enumerate() {
        a.line(l.as_bytes(), i + 1);
    }
    a.finish("test")
}

fn ids(r: &Report) -> Vec<&str> {
    r.detections.iter().map(|d| d.id).collect()
}

/// Sets `key` on a real captured line, as the enrichment contract of issue 4 defines it.
/// These lines are constructed, not captured: the kernel side does not fill these keys yet.
fn enriched(event: &str, ts_offset: u64, extra: &[(&str, Value)]) -> Value {
    let mut v = example(event);
    v["timestamp"] = json!(v["timestamp"].as_u64().unwrap() + ts_offset);
    for (k, val) in extra {
        v[*k] = val.clone();
    }
    v
}

fn set_arg(v: &mut Value, name: &str, value: Value) {
    for a in v["args"].as_array_mut().unwrap() {
        if a["name"] == name {
            a["value"] = value.clone();
            a.as_object_mut().unwrap().remove("decoded");
        }
    }
}

#[test]
fn malformed_lines_are_reported_by_number_and_the_rest_analyzed() {
    let mut lines: Vec<String> = EXAMPLES.lines().map(str::to_string).collect();
    lines.insert(2, "{\"truncated\":".into());
    lines.insert(5, "[1,2]".into());
    lines.push(r#"{"eventName":"mlock","timestamp":"soon","hostProcessId":1}"#.into());
    let r = analyze(&lines);
    assert_eq!(r.skipped, 3);
    assert_eq!(r.events, EXAMPLES.lines().count() as u64);
    let numbers: Vec<usize> = r.malformed.iter().map(|m| m.line).collect();
    assert_eq!(numbers, [3, 6, lines.len()]);
    assert!(r.malformed[1].error.contains("not a JSON object"));
    assert!(r.malformed[2].error.contains("timestamp"));
    let mut text = Vec::new();
    r.write(&mut text, Format::Text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("3 malformed lines skipped"), "{text}");
    assert!(text.contains("line 6: not a JSON object"), "{text}");
}

/// The expected answers are worked out from the lines themselves, as the examples are
/// captured again whenever an event changes.
#[test]
fn real_example_lines_give_the_known_answers() {
    let values: Vec<Value> = EXAMPLES
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let caller = example("mlock")["hostProcessId"].as_u64().unwrap() as u32;
    let mine: Vec<&Value> = values
        .iter()
        .filter(|v| v["hostProcessId"] == caller)
        .collect();
    let calls = mine
        .iter()
        .filter(|v| {
            // Calls only: not the kernel's events, nor the alerts mmtrace raises.
            let name = v["eventName"].as_str().unwrap();
            mmtrace_events::by_name(name).is_some_and(|e| {
                matches!(e.source, mmtrace_events::catalog::Source::Syscall { .. })
            })
        })
        .count();
    let vmlck = mine
        .iter()
        .filter_map(|v| v["locked"]["lockedBytes"].as_u64())
        .max();

    let lines: Vec<String> = EXAMPLES.lines().map(str::to_string).collect();
    let r = analyze(&lines);
    let p = r.processes.iter().find(|p| p.pid == caller).unwrap();
    assert_eq!(p.calls, calls as u64);
    // mlock, mlock2 (each one page at the same address) and mlockall; munlock and munlockall.
    assert_eq!((p.lock_calls, p.unlock_calls), (3, 2));
    if let Some(peak) = vmlck {
        assert_eq!(p.locked.source, "kernel");
        assert_eq!(p.locked.peak_bytes, peak);
    }
    let k = r
        .kills
        .iter()
        .find(|k| k.killer_pid == Some(caller))
        .unwrap();
    assert_eq!(k.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(k.releases[0].result, "ok");
    assert_eq!(k.memory_back_by, Some("process_mrelease"));
    let (signal, release) = (example("pidfd_send_signal"), example("process_mrelease"));
    let at = |v: &Value, key: &str| v[key].as_u64().unwrap();
    assert_eq!(
        k.memory_back_ns,
        Some(at(&release, "timestamp") + at(&release, "duration") - at(&signal, "timestamp"))
    );
    // The example mem_prot_alert (a W+X mmap, in Tracee's text) is the W+X detection; the
    // mlockall(MCL_CURRENT|MCL_ONFAULT) and the PROT_READ|PROT_WRITE mmap raise nothing.
    let raised: Vec<&str> = r
        .detections
        .iter()
        .filter(|d| d.instances.iter().any(|i| i.pid == caller))
        .map(|d| d.id)
        .collect();
    assert_eq!(raised, ["MMT-001"]);

    // Without the kernel's figures, locked memory comes from the calls: one page.
    let bare: Vec<String> = values
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("locked");
            v.to_string()
        })
        .collect();
    let r = analyze(&bare);
    let p = r.processes.iter().find(|p| p.pid == caller).unwrap();
    assert_eq!(p.locked.source, "calls");
    assert_eq!(p.locked.peak_bytes, 4096);
}

#[test]
fn order_of_lines_does_not_change_the_answers() {
    let lines: Vec<String> = EXAMPLES.lines().map(str::to_string).collect();
    let mut reversed = lines.clone();
    reversed.reverse();
    let (a, b) = (analyze(&lines), analyze(&reversed));
    assert_eq!(
        serde_json::to_value(&a.processes).unwrap(),
        serde_json::to_value(&b.processes).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&a.kills).unwrap(),
        serde_json::to_value(&b.kills).unwrap()
    );
}

// The tests below use constructed enrichment (issue 4's contract), clearly not captured.

#[test]
fn constructed_locked_near_the_limit_fires_unless_cap_ipc_lock() {
    const MIB: u64 = 1 << 20;
    let near = |bytes: u64, cap: bool, off: u64| {
        enriched(
            "mlock",
            off,
            &[(
                "locked",
                json!({"lockedBytes": bytes, "limitBytes": 8 * MIB, "capIpcLock": cap}),
            )],
        )
        .to_string()
    };
    let r = analyze(&[
        near(2 * MIB, false, 0),
        near(7 * MIB + MIB / 2, false, 10),
        near(MIB, false, 20),
    ]);
    let p = &r.processes[0];
    assert_eq!(p.locked.source, "kernel");
    assert_eq!(
        (p.locked.peak_bytes, p.locked.final_bytes),
        (7 * MIB + MIB / 2, MIB)
    );
    assert_eq!(p.locked.limit_bytes, Some(8 * MIB));
    assert_eq!(ids(&r), ["MMT-003"]);
    assert!(
        r.detections[0].instances[0].detail.contains("(93%)"),
        "{}",
        r.detections[0].instances[0].detail
    );

    let r = analyze(&[near(8 * MIB, true, 0)]);
    assert!(ids(&r).is_empty());
    // At 89% nothing fires.
    let r = analyze(&[near(8 * MIB * 89 / 100, false, 0)]);
    assert!(ids(&r).is_empty());
}

#[test]
fn constructed_kill_with_freed_bytes_and_exit() {
    let victim = 4242;
    let target = json!({"hostProcessId": victim, "processId": victim, "processName": "victim"});
    let open = enriched("pidfd_open", 0, &[("target", target.clone())]);
    let signal = enriched("pidfd_send_signal", 10, &[("target", target.clone())]);
    let mut release = enriched(
        "process_mrelease",
        20,
        &[
            ("target", target.clone()),
            (
                "memory",
                json!({"before": {"anon": 128 << 20, "file": 0, "shmem": 0},
                       "after": {"anon": 0, "file": 0, "shmem": 0}, "freedBytes": 128u64 << 20}),
            ),
        ],
    );
    release["timestamp"] = json!(signal["timestamp"].as_u64().unwrap() + 1000);
    let mut exit = example("mmap");
    exit["eventName"] = json!("sched_process_exit");
    exit["hostProcessId"] = json!(victim);
    exit["timestamp"] = json!(release["timestamp"].as_u64().unwrap() + 5_000_000);
    exit["args"] = json!([{"name":"pid","value":victim},{"name":"anon","value":0},{"name":"file","value":4096},{"name":"shmem","value":0}]);
    let r = analyze(&[open, signal, release, exit].map(|v| v.to_string()));
    assert_eq!(r.kills.len(), 1);
    let k = &r.kills[0];
    assert_eq!(k.target_pid, victim);
    assert_eq!(k.target_name.as_deref(), Some("victim"));
    assert_eq!(k.releases[0].freed_bytes, Some(128 << 20));
    assert_eq!(k.held_at_exit, Some(4096));
    assert!(k.exit_at.is_some());
    assert_eq!(k.memory_back_by, Some("process_mrelease"));
    let took = example("process_mrelease")["duration"].as_u64().unwrap();
    assert_eq!(k.memory_back_ns, Some(1000 + took));
}

#[test]
fn constructed_failed_release_says_why() {
    let mut v = enriched(
        "process_mrelease",
        0,
        &[
            (
                "target",
                json!({"hostProcessId": 7, "processId": 7, "processName": "alive"}),
            ),
            ("returnError", json!("EINVAL")),
        ],
    );
    v["returnValue"] = json!(-22);
    let r = analyze(&[v.to_string()]);
    assert_eq!(ids(&r), ["MMT-005"]);
    // The reason is the event's, as the live analysis gives it.
    assert!(r.detections[0].instances[0]
        .detail
        .contains("pid 7 returned EINVAL: the target is not dying"));
    assert!(r.kills[0].releases[0]
        .reason
        .as_deref()
        .is_some_and(|why| why.starts_with("the target is not dying")));
}

#[test]
fn constructed_write_to_exec_and_alerts() {
    // mprotect of a writable anonymous mapping to PROT_READ|PROT_EXEC.
    let mut m = enriched(
        "mprotect",
        0,
        &[(
            "mapping",
            json!({"start": "0x7f24ac4b4000", "end": "0x7f24ac4b6000", "kind": "anon", "prot": "PROT_READ|PROT_WRITE"}),
        )],
    );
    set_arg(&mut m, "prot", json!(5));
    // The alert the kernel side raises for the same call must not count it twice as W+X,
    // but an mmap W+X alert is a finding of its own.
    let mut alert = m.clone();
    alert["eventName"] = json!("mem_prot_alert");
    alert["args"] = json!([{"name":"alert","value":"mprotect W to X"},{"name":"addr","value":"0x7f24ac4b4000"},
        {"name":"len","value":4096},{"name":"prot","value":5},{"name":"prev_prot","value":3},{"name":"pathname","value":""}]);
    let mut wx = example("mmap");
    set_arg(&mut wx, "prot", json!(7));
    // Either order: an alert has no duration, so in a recording sorted by time it comes
    // before its call.
    for lines in [[&m, &alert, &wx], [&alert, &m, &wx]] {
        let r = analyze(&lines.map(|v| v.to_string()));
        let mut got = ids(&r);
        got.sort();
        assert_eq!(got, ["MMT-001", "MMT-002"]);
        let w2x = r.detections.iter().find(|d| d.id == "MMT-002").unwrap();
        assert_eq!(w2x.count, 1, "the call and its alert are one sighting");
        assert!(w2x.explanation.contains("JIT"));
    }
}

#[test]
fn constructed_kernel_oom_kill() {
    let victim = 999;
    let base = example("mmap");
    let line = |name: &str, off: u64, args: Value| {
        let mut v = base.clone();
        v["eventName"] = json!(name);
        v["timestamp"] = json!(base["timestamp"].as_u64().unwrap() + off);
        v["args"] = args;
        v.to_string()
    };
    let pid = json!([{"name":"pid","value":victim}]);
    let mut exit: Value =
        serde_json::from_str(&line("sched_process_exit", 9_000_000, pid.clone())).unwrap();
    exit["hostProcessId"] = json!(victim);
    exit["processName"] = json!("hog");
    let r = analyze(&[
        line(
            "oom_mark_victim",
            0,
            json!([{"name":"pid","value":victim},
            {"name":"total_vm","value":1},{"name":"anon_rss","value":2_097_152},{"name":"file_rss","value":0},
            {"name":"shmem_rss","value":0},{"name":"uid","value":0},{"name":"pgtables","value":0},{"name":"oom_score_adj","value":0}]),
        ),
        line("oom_start_task_reaping", 1_000_000, pid.clone()),
        line("oom_finish_task_reaping", 3_000_000, pid.clone()),
        exit.to_string(),
    ]);
    let k = &r.kills[0];
    assert_eq!(k.via.as_deref(), Some("oom_kill"));
    assert_eq!(k.target_name.as_deref(), Some("hog"));
    let oom = k.oom.as_ref().unwrap();
    assert_eq!(oom.anon_rss_kb, Some(2_097_152));
    assert!(oom.reap_start_at.is_some());
    assert_eq!(k.memory_back_by, Some("oom_reaper"));
    assert_eq!(k.memory_back_ns, Some(3_000_000));
    let mut text = Vec::new();
    r.write(&mut text, Format::Text).unwrap();
    assert!(String::from_utf8(text)
        .unwrap()
        .contains("kernel OOM killer marked it victim anon 2.0 GiB"));
}

/// A kernel OOM kill says which limit fired, and the pressure shown with it is the one that
/// matters: the machine's for a kill of the whole system, the cgroup's own on cgroup v2, and
/// on v1 the machine's named as such.
#[test]
fn a_kernel_oom_kill_names_the_limit_and_whose_pressure_it_shows() {
    let base = example("mmap");
    let ts = base["timestamp"].as_u64().unwrap();
    let report = |limit: Value| {
        let mut mark = base.clone();
        mark["eventName"] = json!("oom_mark_victim");
        mark["args"] = json!([{"name":"pid","value":999}]);
        mark["limit"] = limit;
        let mut pressure = base.clone();
        pressure["eventName"] = json!("mmtrace_pressure");
        pressure["timestamp"] = json!(ts + 1_000_000);
        pressure["args"] = json!([{"name":"some_avg10","value":1.5},{"name":"full_avg10","value":0.25},
            {"name":"mem_available","value":23_836_229_632u64}]);
        let r = analyze(&[mark.to_string(), pressure.to_string()]);
        let mut text = Vec::new();
        r.write(&mut text, Format::Text).unwrap();
        String::from_utf8(text).unwrap()
    };
    let system =
        report(json!({"scope":"system","constraint":"CONSTRAINT_NONE","taskCgroup":"/user.slice"}));
    assert!(
        system.contains("limit that fired: the whole system's memory (CONSTRAINT_NONE)"),
        "{system}"
    );
    assert!(
        system.contains(
            "memory pressure at the kill: PSI some 1.50% full 0.25% (avg10), MemAvailable 22.2 GiB"
        ),
        "{system}"
    );
    let cgroup = json!({"scope":"cgroup","constraint":"CONSTRAINT_MEMCG","cgroup":"/box",
        "taskCgroup":"/box/job","usageBytes":100_663_296,"limitBytes":100_663_296,"failcnt":7,"cgroupVersion":1});
    let v1 = report(cgroup.clone());
    assert!(v1.contains("limit that fired: memory cgroup /box (the victim is in /box/job), cgroup v1: usage 96.0 MiB of its limit 96.0 MiB, failcnt 7"), "{v1}");
    assert!(v1.contains("the machine's memory pressure, not the cgroup's (cgroup v1 keeps none per cgroup): PSI some 1.50%"), "{v1}");
    let mut v2 = cgroup;
    v2["cgroupVersion"] = json!(2);
    v2["pressure"] = json!({"someAvg10": 42.0, "fullAvg10": 40.5});
    let v2 = report(v2);
    assert!(
        v2.contains("the cgroup's memory pressure: PSI some 42.00% full 40.50% (avg10)"),
        "{v2}"
    );
    assert!(!v2.contains("MemAvailable"), "{v2}");
    let unknown =
        report(json!({"scope":"unknown","reason":"/dev/kmsg is unreadable (\u{1b}[31m)"}));
    assert!(
        unknown.contains("limit that fired: unknown: /dev/kmsg is unreadable (\\33[31m)"),
        "{unknown}"
    );
}

/// Lines that look like events, with the keys the analyzer reads given random values.
fn event_like() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "mmap",
        "mprotect",
        "pkey_mprotect",
        "munmap",
        "mremap",
        "mlock",
        "mlock2",
        "munlock",
        "mlockall",
        "munlockall",
        "pidfd_open",
        "pidfd_send_signal",
        "kill",
        "process_mrelease",
        "mem_prot_alert",
        "oom_mark_victim",
        "oom_start_task_reaping",
        "oom_finish_task_reaping",
        "oom_skip_task_reaping",
        "sched_process_exit",
        "brk",
    ]);
    let arg_names = prop::sample::select(vec![
        "addr",
        "len",
        "length",
        "prot",
        "flags",
        "pid",
        "pidfd",
        "sig",
        "old_address",
        "old_size",
        "new_size",
        "alert",
        "comm",
        "anon",
        "anon_rss",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(format!("{v:#x}"))),
        ".{0,12}".prop_map(|s| json!(s)),
        Just(Value::Null),
        Just(json!({"lockedBytes": u64::MAX, "limitBytes": 1})),
        Just(
            json!({"scope": "cgroup", "cgroup": "/\u{1b}[2J", "usageBytes": u64::MAX, "cgroupVersion": 2})
        ),
    ];
    (
        names,
        any::<u64>(),
        0u32..5,
        any::<i64>(),
        any::<u64>(),
        prop::collection::vec((arg_names, value.clone()), 0..6),
        prop::collection::vec((prop::sample::select(vec!["target", "memory", "locked", "mapping", "reason", "returnError", "limit"]), value), 0..4),
    )
        .prop_map(|(name, ts, pid, ret, duration, args, extra)| {
            let mut v = json!({
                "timestamp": ts, "hostProcessId": pid, "hostThreadId": pid, "processName": "p",
                "eventName": name, "returnValue": ret, "duration": duration,
                "args": args.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            });
            for (k, val) in extra {
                v[k] = val;
            }
            v.to_string()
        })
}

proptest! {
    #[test]
    fn arbitrary_lines_never_panic(lines in prop::collection::vec(".*", 0..20)) {
        let r = analyze(&lines);
        let mut out = Vec::new();
        r.write(&mut out, Format::Text).unwrap();
        r.write(&mut out, Format::Json).unwrap();
    }

    #[test]
    fn arbitrary_events_never_panic(lines in prop::collection::vec(event_like(), 0..40)) {
        let r = analyze(&lines);
        prop_assert_eq!(r.events + r.skipped, lines.len() as u64);
        let mut out = Vec::new();
        r.write(&mut out, Format::Text).unwrap();
        r.write(&mut out, Format::Json).unwrap();
    }
}

/// The real examples with their names, paths and error names replaced, and a W+X mmap of that
/// path, so that the report quotes them in its processes, kills and detections.
fn with_names(comm: &str, path: &str, errno: &str) -> Vec<String> {
    let mut wx = example("mmap");
    set_arg(&mut wx, "prot", json!(7));
    wx["mapping"] = json!({"kind": "file", "prot": "PROT_READ|PROT_WRITE|PROT_EXEC"});
    let mut failed = example("mlock2");
    failed["returnValue"] = json!(-12);
    EXAMPLES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .chain([wx, failed])
        .map(|mut v| {
            v["processName"] = json!(comm);
            if v.get("target").is_some() {
                v["target"]["processName"] = json!(comm);
            }
            if v.get("mapping").is_some() {
                v["mapping"]["path"] = json!(path);
            }
            if v["eventName"] == "mem_prot_alert" {
                set_arg(&mut v, "pathname", json!(path));
            }
            if v.get("returnError").is_some() || v["returnValue"] == -12 {
                v["returnError"] = json!(errno);
            }
            v.to_string()
        })
        .collect()
}

fn text_of(lines: &[String]) -> String {
    let mut text = Vec::new();
    analyze(lines).write(&mut text, Format::Text).unwrap();
    String::from_utf8(text).unwrap()
}

proptest! {
    // Each case analyzes a whole recording twice.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a recording says processes and files were called, the text report shows it
    /// escaped: no control character, and no line of its own.
    #[test]
    fn text_report_escapes_what_recordings_name(
        comm in any::<String>(),
        path in any::<String>(),
        errno in any::<String>(),
    ) {
        // Never empty: an empty name is a process that is gone, which the report says so.
        let text = text_of(&with_names(&format!("c{comm}"), &format!("/{path}"), &format!("E{errno}")));
        prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{}", text);
        let plain = text_of(&with_names("cx", "/x", "Ex"));
        prop_assert_eq!(text.lines().count(), plain.lines().count(), "{}", text);
    }
}

#[test]
fn text_report_shows_names_as_strace_would() {
    let text = text_of(&with_names("ev\x1b[31mRED\n", "/tmp/\n\x1b[2J", "ENOMEM"));
    assert!(text.contains(r"ev\33[31mRED\n"), "{text}");
    assert!(
        text.contains(r"/tmp/\n\33[2J"),
        "the W+X detection names the file: {text}"
    );
}

/// A real `event` line, `at_ms` after the mmap example's, as made by thread `tid` of host pid `pid`, started at `start` (its
/// thread's start too when `tid` is `pid`); without processStartTime when `start_key` is
/// false, as an older mmtrace recorded it.
fn by_process(event: &str, at_ms: u64, pid: u32, tid: u32, start: u64, start_key: bool) -> String {
    let mut v = example(event);
    let base = example("mmap")["timestamp"].as_u64().unwrap();
    v["timestamp"] = json!(base + at_ms * 1_000_000);
    v["hostProcessId"] = json!(pid);
    v["hostThreadId"] = json!(tid);
    v["threadStartTime"] = json!(if tid == pid { start } else { start + 7 });
    match start_key {
        true => v["processStartTime"] = json!(start),
        false => drop(v.as_object_mut().unwrap().remove("processStartTime")),
    }
    v.to_string()
}

fn calls_by_start(r: &Report, pid: u32) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> = r
        .processes
        .iter()
        .filter(|p| p.pid == pid)
        .map(|p| (p.start_time, p.calls))
        .collect();
    found.sort();
    found
}

#[test]
fn a_reused_pid_is_a_new_process_whichever_thread_calls_first() {
    let (first, second) = (1_000_000_000, 2_000_000_000);
    let r = analyze(&[
        by_process("mmap", 0, 500, 500, first, true),
        // The second process's first calls come from a thread other than its main one.
        by_process("mlock", 10, 500, 501, second, true),
        by_process("munlock", 20, 500, 501, second, true),
        by_process("mmap", 30, 500, 500, second, true),
    ]);
    assert_eq!(calls_by_start(&r, 500), [(first, 1), (second, 3)]);
    assert_eq!(r.events_without_process_start, 0);
}

#[test]
fn older_recordings_tell_processes_by_the_main_threads_start_and_say_so() {
    let (first, second) = (1_000_000_000, 2_000_000_000);
    let lines = [
        by_process("mmap", 0, 500, 500, first, false),
        // Without processStartTime this thread's call cannot be told from the first
        // process's: counted with it, and the report says such a case may exist.
        by_process("mlock", 10, 500, 501, second, false),
        by_process("mmap", 30, 500, 500, second, false),
    ];
    let r = analyze(&lines);
    assert_eq!(calls_by_start(&r, 500), [(first, 2), (second, 1)]);
    assert_eq!(r.events_without_process_start, 3);
    assert!(
        text_of(&lines).contains("3 events have no processStartTime"),
        "{}",
        text_of(&lines)
    );
}

#[test]
fn the_exit_of_a_process_whose_pid_was_reused_ends_only_it() {
    let (first, second) = (1_000_000_000, 2_000_000_000);
    let exit = by_process("sched_process_exit", 20, 500, 500, first, true);
    let r = analyze(&[
        by_process("mmap", 0, 500, 500, first, true),
        by_process("mlock", 10, 500, 501, second, true),
        // Late, within the reorder window: the first process's exit, not the second's.
        exit,
        by_process("munlock", 30, 500, 501, second, true),
    ]);
    assert_eq!(calls_by_start(&r, 500), [(first, 1), (second, 2)]);
}

//! Losses on a busy machine: the reader's priority, and the summary naming the limit that
//! cost events, checked against what the test itself did to the reader.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmtrace_testkit::{bpf_allowed, Trace, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const HELPER_CALLS: &str = "MMTRACE_TEST_STORM";

/// Run as the command below: makes the number of failing mlock2 calls its environment asks
/// for, as fast as it can. The test harness itself never calls mlock2, so every one traced
/// is the helper's.
#[test]
fn helper_storms() {
    let Some(n) = std::env::var_os(HELPER_CALLS) else {
        return;
    };
    for _ in 0..n.to_str().unwrap().parse::<u32>().unwrap() {
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
    }
}

/// A process's nice value, from /proc/PID/stat (field 19).
fn nice(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn as_root_the_reader_runs_at_a_higher_priority_and_a_chosen_nice_stays() {
    if !bpf_allowed() || !is_root() {
        return;
    }
    let own = nice(std::process::id());
    let run = Trace::start(
        BIN,
        &["-e", "mlock2", "-o", "none", "--", "sleep", "30"],
        Stdio::null(),
    );
    let at = run.ready.find("(pid ").unwrap() + "(pid ".len();
    let command: u32 = run.ready[at..].split(')').next().unwrap().parse().unwrap();
    let (reader, commands) = (nice(run.pid()), nice(command));
    run.stop(libc::SIGTERM);
    // Raised from the default only: a test run under nice keeps its own.
    assert_eq!(reader, if own == 0 { -20 } else { own });
    assert_eq!(commands, own, "the command keeps the priority it was given");

    // `nice -n 5 mmtrace ...`: the user's choice.
    let mut chosen = Command::new("nice")
        .args(["-n", "5", BIN, "trace", "-e", "mlock2", "-o", "none"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(chosen.stderr.take().unwrap()).lines();
    assert!(lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("mmtrace: tracing")));
    let niced = nice(chosen.id());
    unsafe { libc::kill(chosen.id() as i32, libc::SIGINT) };
    chosen.wait().unwrap();
    assert_eq!(niced, (own + 5).min(19));
}

/// The seen and lost counts of `event`'s row in the exit summary.
fn seen_lost(stderr: &str, event: &str) -> (u64, u64) {
    let row = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some(event))
        .unwrap_or_else(|| panic!("no {event} row: {stderr}"));
    let n: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1])
}

/// The X in "the output (...) took X MB/s".
fn output_rate(warning: &str) -> f64 {
    let at = warning.find(") took ").expect(warning) + ") took ".len();
    warning[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_slow_reader_of_the_output_is_named_as_the_limit_at_the_rate_it_read() {
    if !bpf_allowed() {
        return;
    }
    // mmtrace trace -o json -- STORM | (a reader slower than the storm): the test is that
    // reader, so it knows the pace the output took.
    let calls = 200_000u64;
    let mut child = Command::new(BIN)
        .args([
            "trace",
            "-e",
            "mlock2",
            "--buffer-size",
            "64K",
            "-o",
            "json",
        ])
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "helper_storms", "--test-threads=1"])
        .env(HELPER_CALLS, calls.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        err.read_to_string(&mut text).unwrap();
        text
    });
    let mut out = child.stdout.take().unwrap();
    // 16 KiB every 4 ms: at most 4 MB/s, a few hundredths of what the reader formats.
    let mut buf = vec![0u8; 16 << 10];
    let mut got = Vec::new();
    let mut first = None;
    let started = Instant::now();
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got.extend_from_slice(&buf[..n]);
        assert!(started.elapsed() < PATIENCE, "the output never ended");
        std::thread::sleep(Duration::from_millis(4));
    }
    let took = first.unwrap().elapsed().as_secs_f64();
    let status = mmtrace_testkit::wait_exit(&mut child, PATIENCE);
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let lines = String::from_utf8(got.clone())
        .unwrap()
        .matches("\"eventName\":\"mlock2\"")
        .count() as u64;
    let (seen, lost) = seen_lost(&stderr, "mlock2");
    assert_eq!(seen, lines, "{stderr}");
    assert_eq!(seen + lost, calls, "{stderr}");
    assert!(lost > 0, "a storm into a 64K ring read at 4 MB/s: {stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("events lost because"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains(&format!("{lost} events lost"))
            && warning.contains("the output (standard output) took")
            && warning.contains("write to a faster sink"),
        "{warning}"
    );
    // The rate the test read at, against the rate mmtrace says its output took.
    let read = got.len() as f64 / took / 1e6;
    let said = output_rate(warning);
    assert!(
        said > read / 2.0 && said < read * 2.0,
        "said {said} MB/s, read at {read:.2} MB/s: {warning}"
    );
}

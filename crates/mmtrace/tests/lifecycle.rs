//! How `mmtrace trace` starts, stops and fails, with real processes: signals reach the command
//! it runs, closed pipes and full disks cost events but never a panic or a cut line, the
//! command's output stays out of the events, capabilities go once the hooks are on, the reader
//! runs at a higher priority (a real-time one in a storm), and a loss names the limit that
//! cost it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmtrace_testkit::{bpf_allowed, summary_count, Trace, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const HELPER_CALLS: &str = "MMTRACE_TEST_CALLS";
const HELPER_SECONDS: &str = "MMTRACE_TEST_SECONDS";

/// Run as the command in the tests below: makes the number of failing mlock2 calls its
/// environment asks for (fewer if it sets a time they must fit in), printing a line on stdout
/// before each.
#[test]
fn helper_makes_calls() {
    let Some(n) = std::env::var_os(HELPER_CALLS) else {
        return;
    };
    let deadline = std::env::var(HELPER_SECONDS)
        .ok()
        .map(|s| Instant::now() + Duration::from_secs(s.parse().unwrap()));
    for i in 0..n.to_str().unwrap().parse::<u32>().unwrap() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        println!("the command's own line {i}");
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
    }
}

/// `mmtrace trace ARGS -- THIS_TEST_BINARY` running the test `helper`.
fn trace_helper(args: &[&str], helper: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("trace")
        .args(args)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--test-threads=1", "--nocapture"]);
    cmd
}

/// `mmtrace trace ARGS` with a command making `calls` failing mlock2 calls.
fn trace_calls(args: &[&str], calls: u32) -> Command {
    let mut cmd = trace_helper(args, "helper_makes_calls");
    cmd.env(HELPER_CALLS, calls.to_string());
    cmd
}

/// The count in "mmtrace: error: N events traced were not written".
fn unwritten(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("events traced were not written"))
        .unwrap_or_else(|| panic!("no count of unwritten events: {stderr}"));
    line["mmtrace: error: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The number in `text` after `before` and up to `end`.
fn number_after<T: std::str::FromStr>(text: &str, before: &str, end: char) -> T
where
    T::Err: std::fmt::Debug,
{
    let at = text.find(before).expect(text) + before.len();
    text[at..].split(end).next().unwrap().parse().unwrap()
}

/// The pid of the command, from "... in CMD (pid N) and its descendants".
fn command_pid(ready: &str) -> i32 {
    number_after(ready, "(pid ", ')')
}

#[test]
fn signals_reach_the_command_and_mmtrace_exits_with_its_status() {
    if !bpf_allowed() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let run = Trace::start(
            BIN,
            &["-e", "mlock2", "-o", "none", "--", "sleep", "30"],
            Stdio::null(),
        );
        let sleep = command_pid(&run.ready);
        let (code, stderr) = run.stop(signal);
        assert_eq!(code, Some(128 + signal), "signal {signal}: {stderr}");
        assert!(stderr.contains("  total "), "the summary: {stderr}");
        // Reaped by mmtrace, not left running untraced.
        assert!(
            !std::path::Path::new(&format!("/proc/{sleep}")).exists(),
            "sleep (pid {sleep}) is gone"
        );
    }
}

/// Run as the command in `a_terminals_ctrl_c_reaches_the_command_once`: counts the SIGINTs
/// of its first two seconds, writing the count to the file its environment names, and says
/// when it is ready by creating that file's `.ready`.
#[test]
fn helper_counts_sigint() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    extern "C" fn count(_: libc::c_int) {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
    let Some(path) = std::env::var_os(SIGINT_COUNT) else {
        return;
    };
    let path = path.to_str().unwrap().to_string();
    unsafe { libc::signal(libc::SIGINT, count as *const () as libc::sighandler_t) };
    std::fs::write(format!("{path}.ready"), "").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&path, COUNT.load(Ordering::Relaxed).to_string()).unwrap();
}

const SIGINT_COUNT: &str = "MMTRACE_TEST_SIGINT_COUNT";

#[test]
fn a_terminals_ctrl_c_reaches_the_command_once() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    if !bpf_allowed() {
        return;
    }
    // A terminal of its own, whose foreground process group is mmtrace's and its command's,
    // as under an interactive shell.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(master >= 0);
    let mut master = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(master) });
    let mut name = [0 as libc::c_char; 64];
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
    }
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let tty = terminal.as_raw_fd();
    let path = format!("{}/count", tempdir("tty"));
    let mut cmd = trace_helper(&["-e", "mlock2", "-o", "none"], "helper_counts_sigint");
    cmd.env(SIGINT_COUNT, &path)
        .stdin(terminal.try_clone().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    let mut child = unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
    .spawn()
    .unwrap();
    let start = Instant::now();
    while !std::path::Path::new(&format!("{path}.ready")).exists() {
        assert!(start.elapsed() < PATIENCE, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A second SIGINT passed on by mmtrace can merge with the terminal's while both are
    // pending, so one Ctrl-C might not show it: three make it all but certain to show.
    for _ in 0..3 {
        master.write_all(b"\x03").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = mmtrace_testkit::wait_exit(&mut child, PATIENCE);
    assert_eq!(
        status.code(),
        Some(0),
        "the command handled them and went on"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "3",
        "one SIGINT for each Ctrl-C, not two"
    );
}

#[test]
fn the_trace_lasts_until_the_command_has_handled_the_signal() {
    if !bpf_allowed() {
        return;
    }
    let dir = tempdir("handled");
    let path = format!("{dir}/out.json");
    let me = std::env::current_exe().unwrap();
    let ready = format!("{dir}/ready");
    // The command answers SIGTERM with three more calls, then its own status.
    let script = format!(
        "trap '{HELPER_CALLS}=3 \"$0\" --exact helper_makes_calls --test-threads=1 >/dev/null; exit 42' TERM; \
         : >{ready}; while :; do sleep 0.05; done"
    );
    let json = format!("json:{path}");
    let run = Trace::start(
        BIN,
        &[
            "-e",
            "mlock2",
            "-o",
            &json,
            "--",
            "sh",
            "-c",
            &script,
            me.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let start = Instant::now();
    while !std::path::Path::new(&ready).exists() {
        assert!(start.elapsed() < PATIENCE, "the trap was never set");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, stderr) = run.stop(libc::SIGTERM);
    assert_eq!(code, Some(42), "the command's status: {stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    let calls = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eventName"] == "mlock2" && v["returnValue"] == -22)
        .count();
    assert_eq!(calls, 3, "the calls made after the signal: {text}");
}

#[test]
fn without_a_command_sighup_stops_the_trace() {
    if !bpf_allowed() {
        return;
    }
    let run = Trace::start(BIN, &["-e", "mlock2", "-o", "none"], Stdio::null());
    let (code, stderr) = run.stop(libc::SIGHUP);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("  total "), "the summary: {stderr}");
}

/// The ids of the BPF programs and links among a process's descriptors, from the kernel's
/// fdinfo (a link's names its program too).
fn bpf_ids(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let (mut progs, mut links) = (Vec::new(), Vec::new());
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        for line in info.lines() {
            let (key, value) = line.split_once(':').unwrap_or_default();
            let ids = match key {
                "prog_id" => &mut progs,
                "link_id" => &mut links,
                _ => continue,
            };
            ids.push(value.trim().parse().unwrap());
        }
    }
    progs.sort_unstable();
    progs.dedup();
    (progs, links)
}

/// Whether the kernel still has the program or link of this id: bpf(2)'s `cmd`, one of the
/// *_GET_FD_BY_ID commands.
fn bpf_object_exists(cmd: libc::c_long, id: u32) -> bool {
    let attr = [id, 0, 0, 0];
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), size_of_val(&attr)) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "bpf({cmd}) on id {id}: {err}"
    );
    false
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// Whether a live process (not a zombie) is left in the process group.
fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().any(|e| {
        let stat = std::fs::read_to_string(e.unwrap().path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// Once mmtrace has exited, nothing of the trace is left: no program, no link, no child
/// detaching them. Each by its id, read from the kernel's fdinfo of mmtrace's descriptors
/// while it traced, and looked up through bpf(2). How soon the programs go is bench/startstop's
/// to measure: which of the programs and the child goes first depends on whether other
/// tracers (the tests beside this one) hold the same tracepoints, whose probes then stay.
#[test]
fn after_the_exit_nothing_of_the_trace_is_left() {
    use std::os::unix::process::CommandExt;
    if !bpf_allowed() {
        return;
    }
    // Every event: 44 links. In a process group of its own, which its detaching child keeps.
    let run = Trace::start_with(BIN, &["-o", "none"], Stdio::null(), |c| {
        c.process_group(0);
    });
    let group = run.pid();
    let (progs, links) = bpf_ids(group);
    assert!(links.len() > 20, "programs {progs:?}, links {links:?}");
    let (code, stderr) = run.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    let deadline = Instant::now() + PATIENCE;
    let gone = |cmd, ids: &[u32]| ids.iter().all(|&id| !bpf_object_exists(cmd, id));
    while group_alive(group)
        || !gone(BPF_PROG_GET_FD_BY_ID, &progs)
        || !gone(BPF_LINK_GET_FD_BY_ID, &links)
    {
        assert!(
            Instant::now() < deadline,
            "programs {progs:?}, links {links:?} or the child left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_closed_stderr_is_no_panic_and_the_status_says_so() {
    if !bpf_allowed() {
        return;
    }
    // mmtrace trace -o none -e mlock -- sleep 0.2 2>&1 | head -c 1
    let (mut read_end, write_end) = std::io::pipe().unwrap();
    let mut child = Command::new(BIN)
        .args(["trace", "-o", "none", "-e", "mlock", "--", "sleep", "0.2"])
        .stdout(write_end.try_clone().unwrap())
        .stderr(write_end)
        .spawn()
        .unwrap();
    read_end.read_exact(&mut [0u8]).unwrap();
    drop(read_end);
    let status = mmtrace_testkit::wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(141), "128 + SIGPIPE, not a panic's 101");
}

#[test]
fn events_for_a_closed_stdout_are_counted_as_not_written() {
    if !bpf_allowed() {
        return;
    }
    let (read_end, write_end) = std::io::pipe().unwrap();
    drop(read_end);
    let out = trace_calls(&["-e", "mlock2", "-o", "json"], 50)
        .stdout(write_end)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(
        unwritten(&stderr),
        50,
        "every call the command made: {stderr}"
    );
}

/// The count in "..., after N that were: writing to".
fn written(stderr: &str) -> u64 {
    let at = stderr
        .find(", after ")
        .unwrap_or_else(|| panic!("no count of written events: {stderr}"))
        + ", after ".len();
    stderr[at..].split(' ').next().unwrap().parse().unwrap()
}

/// Whether every thread of `pid` is stopped.
fn stopped(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .all(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next();
            state == Some("T")
        })
}

/// Starts `cmd` with its stdout to the test, and its stderr (where the command's own lines
/// come) read all along, so that it never blocks: the whole of it when it ends.
fn piped(
    mut cmd: Command,
) -> (
    std::process::Child,
    std::process::ChildStdout,
    std::thread::JoinHandle<String>,
) {
    let mut child = cmd
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
    let out = child.stdout.take().unwrap();
    (child, out, stderr)
}

#[test]
fn a_reader_that_goes_away_in_a_storm_had_every_event_counted_as_written() {
    use std::os::fd::AsRawFd;
    if !bpf_allowed() {
        return;
    }
    // mmtrace trace -o json -- CMD | head -1, with CMD making thousands of calls. The test is
    // the reader, so that it knows what the pipe took: it reads a line, lets mmtrace fill the
    // pipe, stops it (in the middle of a write, most likely), takes all the pipe holds, goes
    // away, and lets mmtrace go on into the closed pipe.
    let calls = 3000;
    let (mut child, mut out, stderr) = piped(trace_calls(&["-e", "mlock2", "-o", "json"], calls));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.contains(&b'\n') {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "mmtrace wrote no line");
        got.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let start = Instant::now();
    while !stopped(pid) {
        assert!(start.elapsed() < PATIENCE, "mmtrace did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe {
        let fd = out.as_raw_fd();
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(out);
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let status = mmtrace_testkit::wait_exit(&mut child, PATIENCE);
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(141), "{stderr}");
    // Whole lines only: a line cut off by the closed pipe did not reach its reader.
    let whole = &got[..got.iter().rposition(|&b| b == b'\n').unwrap() + 1];
    let events = std::str::from_utf8(whole)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l))
        .filter(|v| v["eventName"] == "mlock2")
        .count() as u64;
    assert!(
        events > 0 && events < u64::from(calls),
        "{events} events got"
    );
    assert_eq!(written(&stderr), events, "{stderr}");
    assert!(!stderr.contains("Illegal seek"), "{stderr}");
    // The rest: every call is either written or counted as not written, or lost in the ring.
    let lost = stderr.contains("events lost because");
    let accounted = events + unwritten(&stderr);
    assert!(
        accounted == u64::from(calls) || lost && accounted < u64::from(calls),
        "{accounted} of {calls}: {stderr}"
    );
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

#[test]
fn as_root_the_reader_runs_at_a_higher_priority_and_a_chosen_nice_stays() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() {
        return;
    }
    let own = nice(std::process::id());
    let run = Trace::start(
        BIN,
        &["-e", "mlock2", "-o", "none", "--", "sleep", "30"],
        Stdio::null(),
    );
    let command = command_pid(&run.ready) as u32;
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

/// A thread's scheduling policy (0 normal, 1 SCHED_FIFO) and nice value, from its stat
/// (fields 41 and 19).
fn policy_and_nice(pid: u32) -> (u32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    (fields[38].parse().unwrap(), fields[16].parse().unwrap())
}

/// While events wait the reader takes a real-time priority, which no CPU-bound work can keep
/// it from a CPU with, and it gives it back once the storm has passed.
#[test]
fn in_a_storm_the_reader_takes_a_real_time_priority_and_gives_it_back() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() || nice(std::process::id()) != 0 {
        return;
    }
    let me = format!("pid={}", std::process::id());
    let run = Trace::start(
        BIN,
        &["-e", "munmap", "-s", &me, "-o", "none"],
        Stdio::null(),
    );
    assert_eq!(policy_and_nice(run.pid()), (0, -20), "before the storm");
    // munmaps of a page nothing maps, until the reader is seen at SCHED_FIFO: a slow machine
    // takes longer to fill a batch.
    let deadline = Instant::now() + PATIENCE;
    let mut boosted = None;
    while boosted.is_none() && Instant::now() < deadline {
        for _ in 0..100_000 {
            unsafe { libc::munmap(0x10000 as *mut libc::c_void, 4096) };
        }
        boosted = Some(policy_and_nice(run.pid())).filter(|(policy, _)| *policy == 1);
    }
    assert_eq!(boosted, Some((1, -20)), "in the storm");
    // Given back a second after the ring was last found with events waiting.
    let calm = Instant::now();
    while policy_and_nice(run.pid()).0 != 0 && calm.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(policy_and_nice(run.pid()), (0, -20), "after the storm");
    let (code, stderr) = run.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The seen and lost counts of `event`'s row in the exit summary.
fn seen_lost(stderr: &str, event: &str) -> (u64, u64) {
    (
        summary_count(stderr, event, "calls"),
        summary_count(stderr, event, "lost"),
    )
}

/// The X in "the output (...) took X MB/s".
fn output_rate(warning: &str) -> f64 {
    number_after(warning, ") took ", ' ')
}

#[test]
fn a_slow_reader_of_the_output_is_named_as_the_limit_at_the_rate_it_read() {
    if !bpf_allowed() {
        return;
    }
    // mmtrace trace -o json -- STORM | (a reader slower than the storm): the test is that
    // reader, so it knows the pace the output took. The command's own lines go to stderr.
    // At most 60 s of calls: under arm64's emulation 200000 take longer than the test's
    // patience at the pace it reads. The command's lines count the calls it made.
    let mut storm = trace_calls(
        &["-e", "mlock2", "--buffer-size", "64K", "-o", "json"],
        200_000,
    );
    storm.env(HELPER_SECONDS, "60");
    let (mut child, mut out, stderr) = piped(storm);
    // 16 KiB every 40 ms: at most 400 kB/s, a fifth of what the reader formats even under the
    // VMs' emulation (2 MB/s on 6.1 under TCG), a few thousandths of it on hardware.
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
        std::thread::sleep(Duration::from_millis(40));
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
    let calls = stderr.matches("the command's own line ").count() as u64;
    assert_eq!(seen, lines, "{stderr}");
    assert_eq!(seen + lost, calls, "{stderr}");
    assert!(
        lost > 0,
        "a storm into a 64K ring read at 400 kB/s: {stderr}"
    );
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

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs(String);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempdir("tmpfs");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "mmtrace-test",
                &dir,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs on {dir}");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_whole_lines_and_counts_the_rest() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() {
        return;
    }
    let disk = Tmpfs::mount("1m");
    let path = format!("{}/out.json", disk.0);
    // A second output on a disk with room gets every event still.
    let roomy = format!("{}/out.json", tempdir("roomy"));
    let calls = 3000;
    let outputs = [format!("json:{path}"), format!("json:{roomy}")];
    let out = trace_calls(
        &["-e", "mlock2", "-o", &outputs[0], "-o", &outputs[1]],
        calls,
    )
    .stdout(Stdio::null())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "writing to {path} failed: No space left on device"
        )),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "the file ends with a whole line");
    let written = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l))
        .filter(|v| v["eventName"] == "mlock2")
        .count() as u64;
    assert!(written > 0, "the disk took some");
    assert_eq!(
        written + unwritten(&stderr),
        u64::from(calls),
        "every call is written or counted: {stderr}"
    );
    let all = std::fs::read_to_string(&roomy).unwrap();
    let mlock2 = all
        .lines()
        .filter(|l| l.contains("\"eventName\":\"mlock2\""))
        .count();
    assert_eq!(mlock2, calls as usize, "the other output has every call");
}

#[test]
fn the_commands_stdout_stays_out_of_events_on_stdout() {
    if !bpf_allowed() {
        return;
    }
    let out = trace_calls(&["-e", "mlock2", "-o", "json"], 300)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(events.len(), 300, "{stderr}");
    let own = stderr.matches("the command's own line ").count();
    assert_eq!(own, 300, "the command's stdout went to stderr");
}

/// The capability sets of `pid`, from /proc.
fn capabilities(pid: u32) -> [(String, u64); 3] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    ["CapEff", "CapPrm", "CapBnd"].map(|key| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap()
            .trim();
        (key.to_string(), u64::from_str_radix(hex, 16).unwrap())
    })
}

/// CAP_SYS_NICE, which a trace keeps when it raised its reader's priority (as root, from the
/// default nice), to take a real-time one in a storm; else nothing.
fn raised_reader() -> u64 {
    const CAP_SYS_NICE: u64 = 1 << 23;
    match rustix::process::geteuid().is_root() && nice(std::process::id()) == 0 {
        true => CAP_SYS_NICE,
        false => 0,
    }
}

#[test]
fn capabilities_are_dropped_once_attached() {
    if !bpf_allowed() {
        return;
    }
    let path = format!("{}/out.json", tempdir("caps"));
    let json = format!("json:{path}");
    let run = Trace::start(
        BIN,
        &["-e", "mlock2", "-e", "mlock2.retval=-EINVAL", "-o", &json],
        Stdio::null(),
    );
    for (set, caps) in capabilities(run.pid()) {
        assert_eq!(caps, raised_reader(), "{set}");
    }
    // Bad flags: EINVAL, traced.
    unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
    // Nothing mapped there: ENOMEM, which the filter leaves out and counts.
    unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0u64) };
    let (code, stderr) = run.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    let me = format!("\"hostThreadId\":{},", mmtrace_testkit::tid());
    assert!(
        std::fs::read_to_string(&path).unwrap().contains(&me),
        "still tracing without them"
    );
    let filtered = summary_count(&stderr, "mlock2", "filtered");
    assert!(filtered >= 1, "the counters are still read: {stderr}");
}

#[test]
fn with_a_command_of_another_user_cap_kill_stays() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() {
        return;
    }
    const CAP_KILL: u64 = 1 << 5;
    let run = Trace::start(
        BIN,
        &[
            "-o", "none", "-e", "mlock2", "--user", "nobody", "--", "sleep", "30",
        ],
        Stdio::null(),
    );
    for (set, caps) in capabilities(run.pid()) {
        assert_eq!(caps, CAP_KILL | raised_reader(), "{set}");
    }
    // Which it needs to pass the signal on to a process of another user.
    let (code, stderr) = run.stop(libc::SIGTERM);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
}

/// --stack symbolizes from the traced processes' maps and files, which may be other users':
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH stay, and nothing else.
#[test]
fn with_stacks_ptrace_and_read_search_stay() {
    if !bpf_allowed() || !rustix::process::geteuid().is_root() {
        return;
    }
    const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    let run = Trace::start(
        BIN,
        &["-o", "none", "-e", "mlock2", "--stack"],
        Stdio::null(),
    );
    for (set, caps) in capabilities(run.pid()) {
        assert_eq!(
            caps,
            CAP_DAC_READ_SEARCH | CAP_SYS_PTRACE | raised_reader(),
            "{set}"
        );
    }
    let (code, stderr) = run.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A fresh directory under the target dir, which tests may write to.
fn tempdir(tag: &str) -> String {
    let dir = format!(
        "{}/lifecycle-{tag}-{}",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

//! What mmtrace's real-kernel tests share: the privilege gate, and a memory cgroup in which
//! the kernel's OOM killer can be provoked without harming the machine.

use std::fs;
use std::path::PathBuf;

/// Whether the running kernel has the syscall `name`'s tracepoints, read from tracefs itself
/// rather than from mmtrace's own check: arm64 has pkey_mprotect from 6.12, mseal came in 6.10.
pub fn kernel_has_syscall(name: &str) -> bool {
    std::path::Path::new(&format!(
        "/sys/kernel/tracing/events/syscalls/sys_enter_{name}"
    ))
    .exists()
}

/// Tests that load BPF programs need root (or CAP_BPF and CAP_PERFMON). Without those they skip
/// (see `skip`).
pub fn bpf_allowed() -> bool {
    // The loader's own check, so the tests skip exactly when mmtrace would refuse to start.
    if mmtrace_bpf::check_privileges().is_ok() {
        return true;
    }
    skip(
        "loading BPF programs needs root, or CAP_BPF and CAP_PERFMON",
        "run the tests as root: sudo scripts/test",
    );
    false
}

/// The command that installs every test prerequisite.
pub const TEST_DEPS: &str = "scripts/test-deps";

/// The file the skips are recorded in: MMTRACE_SKIP_REPORT, else `skipped-tests.tsv` in the
/// test binary's profile folder (target/debug), which scripts/test reads after the run.
pub fn skip_report() -> PathBuf {
    if let Some(path) = std::env::var_os("MMTRACE_SKIP_REPORT") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/NAME-HASH: two folders up.
    exe.ancestors()
        .nth(2)
        .expect("a test binary in a deps folder")
        .join("skipped-tests.tsv")
}

/// The calling test cannot run: a prerequisite is missing (`why`), which `fix` gets. Under CI,
/// where a skip would hide a broken suite, that fails the test. Elsewhere the test, the reason
/// and the fix go to the skip report (`skip_report`), which scripts/test lists at the end of
/// the run, as libtest counts the test as passed; the caller then returns.
pub fn skip(why: &str, fix: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("under CI this test must run: {why} ({fix})");
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.file_stem()?.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // cargo names test binaries NAME-HASH.
    let binary = binary.rsplit_once('-').map_or(&*binary, |(name, _)| name);
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{binary}::{test}\t{why}\t{fix}\n");
    eprintln!("skipped: {why}; {fix}");
    let report = skip_report();
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&report)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "the skip could not be recorded in {}: {e}",
            report.display()
        );
    }
}

/// The calling thread's id.
pub fn tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The calling thread's name, as the kernel keeps it.
pub fn comm() -> String {
    fs::read_to_string("/proc/thread-self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

/// The id of this process's cgroup v2 (its directory's inode), or None without cgroup v2.
pub fn cgroup_id() -> Option<u64> {
    cgroup_id_of("self")
}

/// The id of the cgroup v2 of process `pid` ("self" for this one), or None without cgroup v2.
pub fn cgroup_id_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let root = mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
    })?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(fs::metadata(format!("{root}{path}")).ok()?.ino())
}

/// A fresh memory cgroup limited to `limit` bytes, v1 or v2 as the machine has it; removed
/// on drop. A process that outgrows it is killed by the kernel's OOM killer, alone.
pub struct Memcg {
    pub dir: PathBuf,
}

impl Memcg {
    pub fn new(tag: &str, limit: u64) -> Memcg {
        let name = format!("mmtrace-{tag}-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
            return Memcg { dir };
        }
        let root = PathBuf::from("/sys/fs/cgroup");
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        assert!(
            controllers.contains("memory"),
            "no memory cgroup controller, v1 or v2"
        );
        let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.max"), limit.to_string()).unwrap();
        Memcg { dir }
    }

    /// Forks a child that joins the cgroup and touches `bytes` of anonymous memory; returns
    /// its pid. The child makes only syscalls, as a fork of a threaded test must.
    pub fn spawn_hog(&self, bytes: usize) -> i32 {
        self.fork_toucher(bytes, None)
    }

    /// Forks a child that joins the cgroup, touches `bytes` of anonymous memory and holds it
    /// until it is killed; returns its pid once its memory is touched.
    pub fn spawn_holder(&self, bytes: usize) -> i32 {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let pid = self.fork_toucher(bytes, Some(fds[1]));
        let mut byte = 0u8;
        unsafe {
            libc::close(fds[1]);
            assert_eq!(
                libc::read(fds[0], (&raw mut byte).cast(), 1),
                1,
                "holder died"
            );
            libc::close(fds[0]);
        }
        pid
    }

    /// The child of spawn_hog and spawn_holder: it exits once its memory is touched, or with
    /// `ready`, says so there and waits to be killed.
    fn fork_toucher(&self, bytes: usize, ready: Option<i32>) -> i32 {
        let procs =
            std::ffi::CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        match unsafe { libc::fork() } {
            0 => unsafe {
                let mut digits = [0u8; 12];
                let mut n = libc::getpid() as u32;
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                libc::write(fd, digits[i..].as_ptr().cast(), digits.len() - i);
                libc::close(fd);
                touch_anon(bytes);
                if let Some(fd) = ready {
                    libc::write(fd, b"x".as_ptr().cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0)
            },
            pid => pid,
        }
    }

    /// The bytes charged to the cgroup now.
    pub fn usage(&self) -> u64 {
        ["memory.usage_in_bytes", "memory.current"]
            .iter()
            .find_map(|f| fs::read_to_string(self.dir.join(f)).ok())
            .and_then(|s| s.trim().parse().ok())
            .expect("the cgroup's memory usage")
    }

    /// SIGKILLs `pid`, a child of this process that alone holds `bytes` in this cgroup, and
    /// bounds the time from the kill to its memory being back by this test's own watch: at
    /// most until its exit is reaped (its teardown ends before its parent can reap it), and at
    /// least until the last moment the cgroup was seen still holding more than half of it.
    pub fn kill_timed(&self, pid: i32, bytes: u64) -> Bounds {
        let before = boottime_ns();
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let sent = boottime_ns();
        let mut held = sent;
        loop {
            let now = boottime_ns();
            if self.usage() <= bytes / 2 {
                break;
            }
            held = now;
        }
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
        Bounds {
            lower_ns: held - sent,
            upper_ns: boottime_ns() - before,
        }
    }
}

/// What a test knows of how long something took in the kernel: between these, inclusive.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub lower_ns: u64,
    pub upper_ns: u64,
}

/// CLOCK_BOOTTIME: the clock of the kernel side's timestamps (bpf_ktime_get_boot_ns).
pub fn boottime_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) },
        0
    );
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The smallest change of this process's resident memory a watch of it times: the counts
/// /proc/self/statm reads lag a thread's faults by up to 64 pages (on kernels that count a
/// task's faults apart before adding them up), and other threads of a test move them by a few;
/// a quarter of this is far more than both.
const WATCHED_BYTES: u64 = 16 << 20;

/// Bytes resident in this process, as /proc/self/statm counts them.
fn resident() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Runs `f`, one syscall that makes this process's resident memory grow (`change` > 0) or
/// shrink by `change` bytes, and bounds the time the kernel sees it take (its entry to its
/// return): at most the wall time around it. With a change of 16 MiB or more, another thread
/// watches the resident memory meanwhile, and the call took at least from the first moment
/// the watch saw a quarter of the change made (the call had begun) to the last it saw three
/// quarters not yet made (it had not returned). No CPU time: a VM's steal time counts as its
/// guest threads' running time, wherever in them it falls.
pub fn timed<R>(change: i64, f: impl FnOnce() -> R) -> (R, Bounds) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let size = change.unsigned_abs();
    let done = &AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let watch = (size >= WATCHED_BYTES).then(|| {
            s.spawn(move || {
                let base = resident();
                ready_tx.send(()).unwrap();
                let made = |now: u64| {
                    if change > 0 {
                        now.saturating_sub(base)
                    } else {
                        base.saturating_sub(now)
                    }
                };
                let (mut begun, mut unfinished) = (None, None);
                while !done.load(Ordering::Acquire) {
                    let at = boottime_ns();
                    let now = made(resident());
                    if now >= size / 4 && begun.is_none() {
                        begun = Some(boottime_ns());
                    }
                    if now < size / 4 * 3 {
                        unfinished = Some(at);
                    }
                }
                match (begun, unfinished) {
                    (Some(begun), Some(unfinished)) => unfinished.saturating_sub(begun),
                    _ => 0,
                }
            })
        });
        if watch.is_some() {
            ready_rx.recv().unwrap();
        }
        let before = boottime_ns();
        let r = f();
        let upper_ns = boottime_ns() - before;
        done.store(true, Ordering::Release);
        let lower_ns = watch.map_or(0, |w| w.join().unwrap());
        (r, Bounds { lower_ns, upper_ns })
    })
}

/// The bucket of `ns` in mmtrace's log2 histograms, as Prometheus's inclusive `le` reads
/// them: the first b with ns <= 2^b, the last for anything larger.
pub fn log2_bucket(ns: u64, buckets: usize) -> usize {
    (0..buckets - 1)
        .find(|&b| ns <= 1u64 << b)
        .unwrap_or(buckets - 1)
}

/// Maps `bytes` of private anonymous memory and touches every page, with syscalls and memset
/// alone, so a child forked from a threaded test may call it.
pub fn touch_anon(bytes: usize) {
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::memset(p, 1, bytes);
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// How long a test waits for mmtrace to attach, or for a process to react, before calling it
/// hung: generous, because under emulation (the other kernels' VMs run under TCG) verifying
/// the programs alone takes tens of seconds on a busy machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(180);

/// A running `mmtrace trace`, started and attached.
pub struct Trace {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    /// The line that said it was attached.
    pub ready: String,
}

impl Trace {
    /// Runs `bin trace ARGS` and returns once it says its hooks are attached.
    pub fn start(bin: &str, args: &[&str], stdout: std::process::Stdio) -> Trace {
        Trace::start_with(bin, args, stdout, |_| {})
    }

    /// As `start`, with the command set up further by `adjust` (a process group, say).
    pub fn start_with(
        bin: &str,
        args: &[&str],
        stdout: std::process::Stdio,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> Trace {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(bin);
        command
            .arg("trace")
            .args(args)
            .stdout(stdout)
            .stderr(std::process::Stdio::piped());
        adjust(&mut command);
        // The tests send these signals to mmtrace and its command and expect the defaults. A
        // signal ignored stays ignored across exec, and the run of the tests may have inherited
        // that (nohup; a script's background job ignores SIGINT): the command would live on.
        // SAFETY: only signal(), which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        // Read to the end, not only to the ready line, so a full pipe never blocks it.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // What it said before the ready line, for a failure to show.
        let mut said = Vec::new();
        let ready = loop {
            match rx.recv_timeout(PATIENCE) {
                Ok(line) if line.starts_with("mmtrace: tracing") => break line,
                Ok(line) => said.push(line),
                Err(e) => {
                    let status = child.try_wait().ok().flatten();
                    panic!(
                        "mmtrace never attached ({e}; exit {status:?}); it said:\n{}",
                        said.join("\n")
                    )
                }
            }
        };
        Trace {
            child,
            stderr: rx,
            ready,
        }
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with `signal`; returns its exit code and the rest of its stderr.
    pub fn stop(mut self, signal: i32) -> (Option<i32>, String) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.iter().collect();
        (status.code(), rest.join("\n"))
    }
}

/// A running `mmtrace serve`, killed if the test ends without stopping it: left running, it
/// would go on counting every call on the machine, its hooks on.
pub struct Served {
    child: std::process::Child,
    /// The port the kernel gave it.
    pub port: u16,
}

impl Served {
    /// `bin serve --listen 127.0.0.1:0 ARGS`, once it says it serves, on the port it names
    /// (picked by serve itself, so parallel tests never race for one). Fails the test with
    /// what it said if it exits first.
    pub fn start(bin: &str, args: &[&str]) -> Served {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "mmtrace serve exited ({:?}) after saying:\n{}",
                    child.wait(),
                    said.join("\n")
                );
            };
            if let Some((_, rest)) = line.split_once("serving http://127.0.0.1:") {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
            said.push(line);
        };
        // The rest of its messages go on being read, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, port }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends it `signal`; its exit status, within `limit`.
    pub fn stop(&mut self, signal: i32, limit: std::time::Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, failing the test after `limit`.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `bin analyze RECORDING --format json`'s report, failing the test with what it said if it
/// fails.
pub fn analyze_json(bin: &str, recording: &str) -> serde_json::Value {
    let out = std::process::Command::new(bin)
        .args(["analyze", recording, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The cells of `event`'s row (or "total") in trace's exit summary, by its header's names:
/// "calls", "errors", "time", "mean", "p99", "max", "lost", "filtered".
pub fn summary_row(
    stderr: &str,
    event: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut header = None;
    for line in stderr.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"event") && words.contains(&"calls") {
            header = Some(words);
        } else if let Some(names) = &header {
            if words.first() == Some(&event) && words.len() == names.len() {
                let cells = names[1..].iter().zip(&words[1..]);
                return Some(cells.map(|(n, w)| (n.to_string(), w.to_string())).collect());
            }
        }
    }
    None
}

/// A count of `event`'s row in trace's exit summary, by its column's name.
pub fn summary_count(stderr: &str, event: &str, column: &str) -> u64 {
    let row = summary_row(stderr, event).unwrap_or_else(|| panic!("no {event} row: {stderr}"));
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{event} {column}: {stderr}"))
}

/// What a report says of the time calls took, in ns; each figure with the most its rounding
/// may have moved it.
pub struct Timings {
    pub calls: usize,
    pub total: (f64, f64),
    pub mean: (f64, f64),
    pub p99: (f64, f64),
    pub max: (f64, f64),
    /// Where each log2 bucket starts, and its count.
    pub buckets: Vec<(u64, u64)>,
}

/// Every figure of `t` is where the bounds the test measured of each call put it: the total,
/// mean and max between those of the bounds, the p99 between the bounds' (kept to 1%), and
/// under each bucket's start no fewer calls than the test saw end before it, and no more than
/// it saw begin.
pub fn assert_timed_as_measured(calls: &[Bounds], t: &Timings, context: &str) {
    let n = calls.len();
    assert_eq!(t.calls, n, "{context}");
    let lower: Vec<f64> = calls.iter().map(|b| b.lower_ns as f64).collect();
    let upper: Vec<f64> = calls.iter().map(|b| b.upper_ns as f64).collect();
    let within = |what: &str, (v, half): (f64, f64), lower: f64, upper: f64| {
        assert!(
            lower - half <= v && v <= upper + half,
            "{what} {v} ns outside the test's {lower}..{upper}: {context}"
        );
    };
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    within("time", t.total, sum(&lower), sum(&upper));
    within(
        "mean",
        t.mean,
        sum(&lower) / n as f64,
        sum(&upper) / n as f64,
    );
    within("max", t.max, max(&lower), max(&upper));
    // The k-th longest of the kernel's times lies between the k-th of the bounds.
    let kth = |v: &[f64], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    within("p99", t.p99, kth(&lower, 0.99), kth(&upper, 0.99) * 1.01);
    let mut under = 0u64;
    for &(from, count) in &t.buckets {
        let ended = upper.iter().filter(|&&u| u < from as f64).count() as u64;
        let begun = lower.iter().filter(|&&l| l < from as f64).count() as u64;
        assert!(
            (ended..=begun).contains(&under),
            "{under} calls under {from} ns, the test measured {ended} to {begun}: {context}"
        );
        under += count;
    }
    assert_eq!(under, n as u64, "every call in a bucket: {context}");
}

/// Calls of munmap timed by the test: of regions from a page to 128 MiB, populated, so
/// that the longer take milliseconds; then `failing` that fail with EINVAL.
pub fn timed_munmaps(failing: usize) -> Vec<Bounds> {
    let mut calls = Vec::new();
    for shift in (0..=15).step_by(3) {
        let len = 4096usize << shift;
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let (rc, t) = timed(-(len as i64), || unsafe { libc::munmap(p, len) });
        assert_eq!(rc, 0);
        calls.push(t);
    }
    for _ in 0..failing {
        let (rc, t) = timed(0, || unsafe { libc::munmap(0x10001 as *mut _, 4096) });
        assert_eq!(rc, -1);
        calls.push(t);
    }
    calls
}

/// A shell in a tmux pane of a given size on a tmux server of its own, as a person's terminal:
/// driven with send-keys, read with capture-pane, and ended with its server however the test
/// ends.
pub struct Pane {
    socket: String,
}

impl Pane {
    /// The shell's prompt, as capture-pane shows it (without the trailing space).
    pub const PROMPT: &'static str = "mmtrace-test$";

    /// A pane of `columns` x `rows` on a server named after `name` and this process, its
    /// shell at its prompt; None, said, where tmux is not installed.
    pub fn start(name: &str, columns: u16, rows: u16) -> Option<Pane> {
        if std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_err()
        {
            skip("tmux is not installed", TEST_DEPS);
            return None;
        }
        let pane = Pane {
            socket: format!("mmtrace-{name}-{}", std::process::id()),
        };
        pane.tmux(&[
            "new-session",
            "-d",
            "-s",
            "test",
            "-x",
            &columns.to_string(),
            "-y",
            &rows.to_string(),
            &format!("env 'PS1={} ' sh", Pane::PROMPT),
        ]);
        pane.wait_for(std::time::Duration::from_secs(10), "prompt", |s| {
            s.contains(Pane::PROMPT)
        });
        Some(pane)
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "test"];
        args.extend(keys);
        self.tmux(&args);
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "test"])
    }

    /// The screen once `ready` holds of it; fails after `limit`.
    pub fn wait_for(
        &self,
        limit: std::time::Duration,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let start = std::time::Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "no {what} after {limit:?}; the screen:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

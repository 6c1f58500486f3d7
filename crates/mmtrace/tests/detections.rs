//! A detection is one rule in two places: the analyzer's, in Rust, on a recording, and the
//! kernel side's, in C, counted by `serve`. Both watch the same calls of a process that raises
//! each detection the kernel counts a known number of times, beside calls that come close and
//! must not raise it: each count must be what the process did, in both. Needs root: see
//! mmtrace_testkit::bpf_allowed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use mmtrace_testkit::{bpf_allowed, Served, Trace};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const PAGE: usize = 4096;
/// The caller's name, the scope of both: no other process's calls count.
const COMM: &str = "mmt-detections";
const EVENTS: &str = "mmap,mprotect,mlock,mlockall,munlockall,process_mrelease";

/// What the caller raises, by its own count: three W+X mappings (two by mmap, one by
/// mprotect), a lock that fails, process_mrelease on a live process and on a reaped one, and
/// mlockall(MCL_FUTURE).
const RAISED: [(&str, u64); 5] = [
    ("MMT-001", 3),
    ("MMT-004", 1),
    ("MMT-005", 1),
    ("MMT-006", 1),
    ("MMT-007", 1),
];

/// The calls, in a child named COMM. Beside each that raises a detection, one that nearly
/// does: W then X apart (MMT-002, which the analyzer alone can tell, from the mapping's
/// protection before), a lock that succeeds, EINVAL for bad flags, MCL_ONFAULT.
fn caller() {
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid > 0 {
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the caller failed: {status:#x}"
            );
            return;
        }
        let name = CString::new(COMM).unwrap();
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        let map = |prot| {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
        map(rwx);
        map(libc::PROT_WRITE | libc::PROT_EXEC);
        let rw = map(libc::PROT_READ | libc::PROT_WRITE);
        libc::mprotect(rw, PAGE, libc::PROT_READ | libc::PROT_EXEC);
        libc::mprotect(rw, PAGE, rwx);
        // A page nothing maps: ENOMEM, whatever the caller's rights.
        let hole = map(libc::PROT_READ);
        libc::munmap(hole, PAGE);
        libc::mlock(hole, PAGE);
        libc::mlock(rw, PAGE);
        let victim = libc::fork();
        if victim == 0 {
            libc::pause();
            libc::_exit(0);
        }
        let pidfd = libc::syscall(libc::SYS_pidfd_open, victim, 0);
        libc::syscall(libc::SYS_process_mrelease, pidfd, 1);
        libc::syscall(libc::SYS_process_mrelease, pidfd, 0);
        libc::kill(victim, libc::SIGKILL);
        libc::waitpid(victim, std::ptr::null_mut(), 0);
        libc::syscall(libc::SYS_process_mrelease, pidfd, 0);
        libc::mlockall(libc::MCL_FUTURE | libc::MCL_ONFAULT);
        libc::munlockall();
        libc::mlockall(libc::MCL_FUTURE);
        libc::munlockall();
        libc::_exit(0);
    }
}

/// serve's `mmtrace_detections_total` per id.
fn served_counts(port: u16) -> BTreeMap<String, u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut said = String::new();
    s.read_to_string(&mut said).unwrap();
    said.lines()
        .filter_map(|l| l.strip_prefix("mmtrace_detections_total{id=\""))
        .map(|l| {
            let (id, n) = l.split_once("\"} ").unwrap();
            (id.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// The analyzer's count of calls per detection, from its JSON report of `recording`.
fn analyzed_counts(recording: &str) -> BTreeMap<String, u64> {
    mmtrace_testkit::analyze_json(BIN, recording)["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_kernel_and_the_analyzer_raise_the_same_detections_on_the_same_calls() {
    if !bpf_allowed() {
        return;
    }
    let recording =
        std::env::temp_dir().join(format!("mmtrace-detections.{}.json", std::process::id()));
    let recording = recording.to_str().unwrap();
    let scope = format!("comm={COMM}");
    let served = Served::start(BIN, &["-e", EVENTS, "-s", &scope]);
    let output = format!("json:{recording}");
    let trace = Trace::start(
        BIN,
        &["-e", EVENTS, "-s", &scope, "-o", &output],
        Stdio::null(),
    );
    caller();
    let (code, said) = trace.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{said}");
    let kernel = served_counts(served.port);
    let analyzer = analyzed_counts(recording);
    std::fs::remove_file(recording).unwrap();
    for (id, made) in RAISED {
        assert_eq!(
            kernel.get(id),
            Some(&made),
            "serve's count of {id}: {kernel:?}"
        );
        assert_eq!(
            analyzer.get(id),
            Some(&made),
            "the analyzer's count of {id}: {analyzer:?}"
        );
    }
    // And nothing else: the near misses raised none of these, in either; the analyzer
    // tells the one mprotect from writable to executable besides.
    assert_eq!(kernel.len(), RAISED.len(), "{kernel:?}");
    assert_eq!(analyzer.get("MMT-002"), Some(&1), "{analyzer:?}");
    assert_eq!(analyzer.len(), RAISED.len() + 1, "{analyzer:?}");
}

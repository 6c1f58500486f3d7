//! The detections the analyzer raises: identity, severity, explanation and their doc pages.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
        }
    }
}

#[derive(Debug)]
pub struct Detection {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    /// The one-paragraph explanation printed with every finding.
    pub explanation: &'static str,
    /// What in the recording raises it, and what it needs from the recording.
    pub trigger: &'static str,
    pub advice: &'static str,
}

pub const WX_MAPPING: &Detection = &DETECTIONS[0];
pub const W_TO_X: &Detection = &DETECTIONS[1];
pub const NEAR_LIMIT: &Detection = &DETECTIONS[2];
pub const LOCK_FAILURE: &Detection = &DETECTIONS[3];
pub const NOT_DYING: &Detection = &DETECTIONS[4];
pub const ESRCH_RACE: &Detection = &DETECTIONS[5];
pub const MLOCKALL_FUTURE: &Detection = &DETECTIONS[6];
pub const MUNMAP_STORM: &Detection = &DETECTIONS[7];

/// munmap calls by one process within one second that make a storm.
pub const STORM_CALLS: usize = 1000;
/// Locked memory at this share of RLIMIT_MEMLOCK, in percent, is near the limit.
pub const NEAR_LIMIT_PERCENT: u64 = 90;

pub static DETECTIONS: [Detection; 8] = [
    Detection {
        id: "MMT-001",
        title: "writable and executable mapping",
        severity: Severity::Medium,
        explanation:
            "A process created memory that is writable and executable at the same time, \
            with mmap or mprotect asking for PROT_WRITE|PROT_EXEC. Such a mapping lets code write \
            instructions and run them without any further call, which is what injected shellcode \
            and many exploit payloads need, and what W^X policies exist to forbid. JIT runtimes \
            (JavaScript engines, the JVM, LuaJIT, .NET, some regex engines) do this legitimately; \
            most modern ones switch a page between writable and executable instead of holding both.",
        trigger: "an mmap or mprotect/pkey_mprotect call that succeeded with PROT_WRITE and \
            PROT_EXEC in `prot`, or a `mem_prot_alert` line with alert `Mmaped region \
            with W+E permissions!` or `Protection changed from E to W+E!` (`mmap W+X` or \
            `mprotect X to W+X` from older mmtrace). Works from the call arguments alone.",
        advice: "If the process is not a JIT runtime, find out what it runs from that memory: \
            dump the range from /proc/PID/mem while it lives, check how the process was started. \
            For a JIT, prefer a runtime mode that keeps W^X (dual mappings or toggling).",
    },
    Detection {
        id: "MMT-002",
        title: "dynamic code: writable memory made executable",
        severity: Severity::Low,
        explanation: "A process made memory executable that it could write before (mprotect \
            from PROT_WRITE to PROT_EXEC, or adding PROT_EXEC to anonymous memory). This is how \
            code is generated or unpacked at run time and then run, so it is also how packed \
            malware and in-memory loaders work. JIT runtimes (JavaScript engines, the JVM, LuaJIT, \
            .NET, regex engines) do this legitimately and constantly, which is why this \
            detection is low severity: judge it by which process raised it.",
        trigger: "an mprotect or pkey_mprotect that succeeded with PROT_EXEC where the mapping \
            was writable before the call, known from the `mapping.prot` the tracer records, or a \
            `mem_prot_alert` line with alert `Protection changed from W to E!` or `Protection \
            changed to Executable!` (`mprotect W to X` or `mprotect added X` from older mmtrace). Without \
            the mapping's previous protection in the recording it cannot be told apart from an \
            ordinary mprotect and is not raised.",
        advice: "Expected from JIT runtimes and language VMs; elsewhere, look at what the process \
            loaded and where the code came from (a memfd, a download, a decrypted blob).",
    },
    Detection {
        id: "MMT-003",
        title: "locked memory near RLIMIT_MEMLOCK",
        severity: Severity::Medium,
        explanation: "A process holds 90% or more of its RLIMIT_MEMLOCK in locked memory \
            (VmLck). The next mlock, mlock2, mlockall, or mmap with MAP_LOCKED, and with \
            mlockall(MCL_FUTURE) any new mapping or stack growth, will fail with ENOMEM or \
            EAGAIN once the limit is reached. Processes with CAP_IPC_LOCK are exempt from the \
            limit and are not reported.",
        trigger: "the caller's locked bytes and soft limit recorded after a lock or mapping \
            call (the `locked` object). Recordings without it cannot show the limit, so this \
            detection is not raised from them.",
        advice: "Raise the limit where the process starts (LimitMEMLOCK= in its systemd unit, \
            `ulimit -l`, /etc/security/limits.conf), grant CAP_IPC_LOCK, or lock less: lock only \
            the pages that must not be paged out, with mlock2(MLOCK_ONFAULT) for large ranges.",
    },
    Detection {
        id: "MMT-004",
        title: "memory lock failed",
        severity: Severity::Medium,
        explanation: "A call that locks memory failed with ENOMEM, EPERM or EAGAIN. ENOMEM means \
            the range was not fully mapped or the lock would pass RLIMIT_MEMLOCK without \
            CAP_IPC_LOCK; EPERM means the limit is 0 and the process lacks CAP_IPC_LOCK; EAGAIN \
            means part of the range could not be locked (and, for mmap with MAP_LOCKED, the \
            lock would pass the limit). Software that locks memory does so because paging would \
            break it (real-time loops, key material, databases); when the lock fails, it may run \
            unlocked without saying so.",
        trigger: "mlock, mlock2, mlockall, or mmap with MAP_LOCKED, failing with ENOMEM, EPERM \
            or EAGAIN. Works from the call results alone.",
        advice: "Check the process's RLIMIT_MEMLOCK (`grep locked /proc/PID/limits`) against \
            what it locks, check the range it passes is mapped, and make the application treat \
            a failed lock as an error.",
    },
    Detection {
        id: "MMT-005",
        title: "process_mrelease on a process that is not dying",
        severity: Severity::Medium,
        explanation: "A userspace OOM killer called process_mrelease on a process that was not \
            dying and got EINVAL: nothing was freed. The kernel reaps only a process with a \
            fatal signal pending; a SIGTERM the target handles, a signal sent to the wrong \
            process, or a call made before the kill does not qualify. The killer believes it \
            freed memory while the victim keeps all of it.",
        trigger: "process_mrelease failing with EINVAL while its flags were 0 (with non-zero \
            flags EINVAL means bad flags, not this). Works from the call results alone.",
        advice: "Send SIGKILL through the same pidfd (pidfd_send_signal) before calling \
            process_mrelease, and do not use SIGTERM for the kill that precedes it.",
    },
    Detection {
        id: "MMT-006",
        title: "process_mrelease lost the race with exit",
        severity: Severity::Info,
        explanation: "process_mrelease failed with ESRCH: by the time it ran, the victim had \
            already let go of its address space (it got to its own exit first and frees the \
            memory itself, or its parent already reaped it), so the call found nothing to \
            reap. Every userspace OOM killer meets this race and it is mostly benign: the memory \
            comes back as fast as the victim can run its exit. It says something when it \
            happens for nearly every kill: the victims get the CPU promptly, and \
            process_mrelease buys little here.",
        trigger: "process_mrelease failing with ESRCH. Works from the call results alone.",
        advice: "Treat ESRCH after a kill as success. process_mrelease pays off when the victim \
            cannot run its exit promptly: starved of CPU, throttled by its cgroup, or on a \
            loaded machine; `mmtrace reap PID --no-release` against `mmtrace reap PID` measures \
            the difference.",
    },
    Detection {
        id: "MMT-007",
        title: "mlockall(MCL_FUTURE) without MCL_ONFAULT",
        severity: Severity::Low,
        explanation: "A process called mlockall with MCL_FUTURE but not MCL_ONFAULT: every \
            mapping it creates from now on is locked and faulted in whole at once. Thread \
            stacks, heap arenas and large reservations (a sanitizer's shadow memory, a \
            garbage collector's heap, a file mapped to read a few pages of it) then cost their \
            full size in RAM; once RLIMIT_MEMLOCK is reached, mmap fails with EAGAIN and a \
            stack that needs to grow kills the process with SIGSEGV; and the process can use \
            far more memory than it touches.",
        trigger: "mlockall succeeding with MCL_FUTURE set and MCL_ONFAULT clear. Works from the \
            call arguments alone.",
        advice: "Add MCL_ONFAULT (Linux 4.4) so pages are locked as they are first touched, or \
            lock the specific ranges that matter with mlock2(MLOCK_ONFAULT).",
    },
    Detection {
        id: "MMT-008",
        title: "munmap storm",
        severity: Severity::Low,
        explanation: "A process made 1000 or more munmap calls within one second. Each unmap \
            takes the mmap lock for writing and may flush TLBs on every CPU running the \
            process's threads, so a storm stalls its other threads' page faults and costs \
            inter-processor interrupts; it usually comes from an allocator returning memory to \
            the kernel after every free, or from a mapping per small object.",
        trigger: "1000 or more munmap calls by one process whose returns fall within one second. \
            Works from the calls alone.",
        advice: "Tune the allocator to keep freed memory (glibc: M_MMAP_THRESHOLD, \
            M_TRIM_THRESHOLD; jemalloc/tcmalloc decay settings), or batch mappings into larger \
            regions.",
    },
];

impl Detection {
    /// Where its page lives in the repository.
    pub fn doc(&self) -> String {
        format!("docs/detections/{}.md", self.id)
    }

    fn page(&self) -> String {
        format!(
            "# {}: {}\n\nSeverity: **{}**\n\n## What it means\n\n{}\n\n## What raises it\n\n{}\n\n\
             ## What to do\n\n{}\n\n---\n\n{FOOTER}\n",
            self.id,
            self.title,
            self.severity.name(),
            self.explanation,
            self.trigger,
            self.advice
        )
    }
}

const FOOTER: &str = "Generated by `mmtrace docs-detections` from \
    `crates/mmtrace/src/analyze/detections.rs`: edit that, not this page.";

fn index() -> String {
    let mut out = String::from(
        "# mmtrace detections\n\n`mmtrace analyze FILE` and `mmtrace trace --analyze` report \
         these findings, each with its ID, severity and a link to its page.\n\n\
         | ID | severity | detection |\n|---|---|---|\n",
    );
    for d in &DETECTIONS {
        let _ = writeln!(
            out,
            "| [{}]({}.md) | {} | {} |",
            d.id,
            d.id,
            d.severity.name(),
            d.title
        );
    }
    let _ = write!(out, "\n---\n\n{FOOTER}\n");
    out
}

/// Writes one page per detection and an index into `dir`, the same bytes on every run so CI
/// can regenerate them and fail when they are stale.
pub fn write_pages(dir: &Path) -> anyhow::Result<()> {
    let pages = DETECTIONS
        .iter()
        .map(|d| (format!("{}.md", d.id), d.page()))
        .collect();
    crate::docs::write_set(dir, pages, index(), "detection pages")
}

//! The detections the analyzer raises, each one unit: identity, severity, explanation, doc
//! page, the rule that raises it and that rule's tests. `DETECTIONS` lists them all; the
//! analyzer runs every rule on every line and knows none of them by name.

use std::fmt::Write as _;

use mmtrace_bpf::abi;
use mmtrace_events::decode::{write_and_exec, MAP_LOCKED, MCL_FUTURE, MCL_ONFAULT, PROT_EXEC};
use mmtrace_events::derived::Alert;
use mmtrace_events::Role;
use serde::Serialize;

use super::record::{prot_names, writable, Record};
use super::Process;

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
    /// Raises it for a call: the finding's detail, None when the call does not raise it.
    /// `p` is the caller's process with the call already counted.
    pub(super) rule: fn(r: &Record, p: &Process) -> Option<String>,
    /// Tracee's mem_prot_alert kinds that raise it as well. The line about a call the rule
    /// has already raised it for adds nothing.
    pub alerts: &'static [Alert],
    /// For a detection that is one finding per process however long it lasts: its detail
    /// once the process is done. Others count each call that raises them.
    pub(super) settle: Option<fn(p: &Process) -> String>,
    /// Its counter in the kernel side's metrics (`enum m_detection` in bpf/mmtrace.h), for a
    /// detection one call can tell: `serve` counts it there, by the same rule in C.
    pub counter: Option<abi::m_detection>,
}

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
        rule: |r, _| {
            let prot = r.prot().unwrap_or(0);
            (r.role().sets_protection() && r.ok() && write_and_exec(prot)).then(|| {
                let len = r.size().unwrap_or(0);
                format!(
                    "{} of {len} bytes asked for PROT_WRITE|PROT_EXEC{}",
                    r.name(),
                    where_(r)
                )
            })
        },
        alerts: &[Alert::MmapWx, Alert::MprotectXToWx],
        settle: None,
        counter: Some(abi::MD_WRITE_EXEC),
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
        rule: |r, _| {
            let prot = r.prot().unwrap_or(0);
            // Memory made writable and executable at once is MMT-001's, not also this one's.
            if !(r.role() == Role::Protects && r.ok() && prot & PROT_EXEC != 0 && !write_and_exec(prot)) {
                return None;
            }
            let m = r.mapping().filter(|m| writable(m))?;
            Some(format!(
                "{} made writable memory ({}) executable{}",
                r.name(),
                prot_names(m),
                where_(r)
            ))
        },
        alerts: &[Alert::MprotectWToX, Alert::MprotectAddedX],
        settle: None,
        counter: None,
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
        rule: |r, _| {
            let l = r.locked().filter(|l| !l.cap_ipc_lock)?;
            let limit = l.limit_bytes.filter(|&lim| {
                lim > 0
                    && u128::from(l.locked_bytes) * 100
                        >= u128::from(lim) * u128::from(NEAR_LIMIT_PERCENT)
            })?;
            Some(format!(
                "{} locked of a {} RLIMIT_MEMLOCK ({}%) after {}",
                crate::units::bytes(l.locked_bytes),
                crate::units::bytes(limit),
                u128::from(l.locked_bytes) * 100 / u128::from(limit),
                r.name()
            ))
        },
        alerts: &[],
        settle: None,
        counter: None,
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
        rule: |r, _| {
            let locking = r.role().locks()
                || (r.role() == Role::Maps && r.flags().unwrap_or(0) & MAP_LOCKED != 0);
            match r.errno().as_deref() {
                Some(errno @ ("ENOMEM" | "EPERM" | "EAGAIN")) if locking => {
                    Some(format!("{} failed with {errno}", r.name()))
                }
                _ => None,
            }
        },
        alerts: &[],
        settle: None,
        counter: Some(abi::MD_LOCK_FAILED),
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
        rule: |r, _| {
            (r.role() == Role::Releases
                && r.errno().as_deref() == Some("EINVAL") && r.flags() == Some(0))
                .then(|| {
                    let why = r.reason().map_or(String::new(), |w| format!(": {w}"));
                    format!(
                        "process_mrelease on {} returned EINVAL{why}",
                        target_text(r)
                    )
                })
        },
        alerts: &[],
        settle: None,
        counter: Some(abi::MD_RELEASE_LIVE),
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
        rule: |r, _| {
            (r.role() == Role::Releases && r.errno().as_deref() == Some("ESRCH"))
                .then(|| format!("process_mrelease on {} returned ESRCH", target_text(r)))
        },
        alerts: &[],
        settle: None,
        counter: Some(abi::MD_RELEASE_RACE),
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
        rule: |r, _| {
            let flags = r.flags().unwrap_or(0);
            (r.role() == Role::LocksAll && r.ok() && flags & MCL_FUTURE != 0 && flags & MCL_ONFAULT == 0).then(|| {
                format!("mlockall({})", r.flags_text().unwrap_or_default())
            })
        },
        alerts: &[],
        settle: None,
        counter: Some(abi::MD_MLOCKALL_FUTURE),
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
        rule: |r, p| {
            (r.role() == Role::Unmaps && p.munmaps.len() >= STORM_CALLS)
                .then(|| format!("{STORM_CALLS} munmap calls within one second"))
        },
        alerts: &[],
        // A storm is one finding however long it lasts: its peak rate says how bad.
        settle: Some(|p| format!("up to {} munmap calls within one second", p.munmap_peak)),
        counter: None,
    },
];

/// Where the call's memory is: its file, else its kind, as the tracer read it.
fn where_(r: &Record) -> String {
    match r.mapping() {
        Some(m) => match &m.path {
            Some(path) => format!(" ({})", path.to_str_lossy()),
            None => format!(" ({})", m.kind.name()),
        },
        None => String::new(),
    }
}

/// The process a pidfd call was aimed at.
fn target_text(r: &Record) -> String {
    match &r.target() {
        Some((pid, _)) => format!("pid {pid}"),
        None => format!("the process behind pidfd {}", r.pidfd().unwrap_or(-1)),
    }
}

impl Detection {
    /// The detection a mem_prot_alert of this kind raises.
    pub fn of_alert(alert: Alert) -> Option<&'static Detection> {
        DETECTIONS.iter().find(|d| d.alerts.contains(&alert))
    }

    /// Where its page lives in the repository.
    pub fn doc(&self) -> String {
        format!("docs/detections/{}.md", self.id)
    }

    /// What raises it, and whether `serve` counts it too.
    pub fn raised_by(&self) -> String {
        match self.counter {
            Some(_) => format!(
                "{} `mmtrace serve` counts the calls that raise it in the kernel, by the same \
                 rule: `mmtrace_detections_total{{id=\"{}\"}}`.",
                self.trigger, self.id
            ),
            None => self.trigger.to_string(),
        }
    }

    fn page(&self) -> String {
        format!(
            "# {}: {}\n\nSeverity: **{}**\n\n## What it means\n\n{}\n\n## What raises it\n\n{}\n\n\
             ## What to do\n\n{}\n\n---\n\n{FOOTER}\n",
            self.id,
            self.title,
            self.severity.name(),
            self.explanation,
            self.raised_by(),
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

/// One page per detection, by file name, and their index: the same bytes on every run, so
/// CI can regenerate them and fail when they are stale.
pub fn pages() -> (Vec<(String, String)>, String) {
    let pages = DETECTIONS
        .iter()
        .map(|d| (format!("{}.md", d.id), d.page()))
        .collect();
    (pages, index())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A recorded line of `event`: its arguments by name, its result and other keys.
    fn line(event: &str, args: Value, ret: i64, keys: Value) -> Record {
        let mut v =
            json!({"timestamp": 1, "hostProcessId": 7, "eventName": event, "returnValue": ret});
        v["args"] = args
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        for (k, val) in keys.as_object().unwrap() {
            v[k] = val.clone();
        }
        Record::parse(v.to_string().as_bytes(), 1).unwrap()
    }

    fn by_id(id: &str) -> &'static Detection {
        DETECTIONS.iter().find(|d| d.id == id).unwrap()
    }

    /// Each rule on a call that raises it and on the nearest call that does not.
    #[test]
    fn every_rule_raises_on_its_call_and_not_on_the_nearest_other() {
        let none = json!({});
        let rw_anon = json!({"mapping": {"prot": "PROT_READ|PROT_WRITE", "kind": "anon"}});
        let locked = |bytes: u64, cap: bool| json!({"locked": {"lockedBytes": bytes, "limitBytes": 1000, "capIpcLock": cap}});
        let cases = [
            (
                "MMT-001",
                line(
                    "mmap",
                    json!({"length": 4096, "prot": 7}),
                    0x1000,
                    none.clone(),
                ),
                line(
                    "mmap",
                    json!({"length": 4096, "prot": 7}),
                    -12,
                    none.clone(),
                ),
            ),
            (
                "MMT-002",
                line(
                    "mprotect",
                    json!({"len": 4096, "prot": 5}),
                    0,
                    rw_anon.clone(),
                ),
                line(
                    "mprotect",
                    json!({"len": 4096, "prot": 7}),
                    0,
                    rw_anon.clone(),
                ),
            ),
            (
                "MMT-003",
                line("mlock", json!({}), 0, locked(900, false)),
                line("mlock", json!({}), 0, locked(900, true)),
            ),
            (
                "MMT-004",
                line("mlock", json!({}), -12, none.clone()),
                line("mmap", json!({"flags": 0x22}), -12, none.clone()),
            ),
            (
                "MMT-005",
                line("process_mrelease", json!({"flags": 0}), -22, none.clone()),
                line("process_mrelease", json!({"flags": 1}), -22, none.clone()),
            ),
            (
                "MMT-006",
                line("process_mrelease", json!({"flags": 0}), -3, none.clone()),
                line("pidfd_send_signal", json!({"sig": 9}), -3, none.clone()),
            ),
            (
                "MMT-007",
                line("mlockall", json!({"flags": 2}), 0, none.clone()),
                line("mlockall", json!({"flags": 6}), 0, none.clone()),
            ),
        ];
        for (id, raising, other) in &cases {
            let d = by_id(id);
            let p = Process::new(raising, 4096);
            assert!((d.rule)(raising, &p).is_some(), "{id} not raised");
            assert!(
                (d.rule)(other, &p).is_none(),
                "{id} raised by its near miss"
            );
        }
        assert_eq!(
            (by_id("MMT-002").rule)(&cases[1].1, &Process::new(&cases[1].1, 4096)).unwrap(),
            "mprotect made writable memory (PROT_READ|PROT_WRITE) executable (anon)"
        );
    }

    #[test]
    fn a_storm_is_the_thousandth_munmap_within_a_second_and_one_finding() {
        let storm = by_id("MMT-008");
        let munmap = line("munmap", json!({}), 0, json!({}));
        let mut p = Process::new(&munmap, 4096);
        p.munmaps.extend(0..STORM_CALLS as u64 - 1);
        assert!((storm.rule)(&munmap, &p).is_none());
        p.munmaps.push_back(0);
        p.munmap_peak = 1234;
        assert!((storm.rule)(&munmap, &p).is_some());
        assert_eq!(
            storm.settle.expect("a storm is settled")(&p),
            "up to 1234 munmap calls within one second"
        );
    }

    #[test]
    fn each_alert_raises_one_detection() {
        for alert in [
            Alert::MmapWx,
            Alert::MprotectAddedX,
            Alert::MprotectXToWx,
            Alert::MprotectWToX,
        ] {
            let ids: Vec<&str> = DETECTIONS
                .iter()
                .filter(|d| d.alerts.contains(&alert))
                .map(|d| d.id)
                .collect();
            assert_eq!(ids.len(), 1, "{alert:?}: {ids:?}");
        }
    }

    #[test]
    fn ids_are_unique_and_in_order() {
        for (i, d) in DETECTIONS.iter().enumerate() {
            assert_eq!(d.id, format!("MMT-{:03}", i + 1));
        }
    }
}

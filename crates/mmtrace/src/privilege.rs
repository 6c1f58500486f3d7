//! The reader's priority, and least privilege: once its programs are attached, mmtrace gives
//! up the capabilities it no longer needs, as Tracee does. What is left to do needs almost none: the ring buffer is
//! already mapped and is read from memory; the counters are read through map descriptors
//! mmtrace holds; detaching is closing descriptors; the output is already open.
//!
//! rustix's capget/capset and prctl wrappers do this without libcap, and rustix is already
//! how mmtrace makes its other system calls; the `caps` crate would add a dependency for the
//! same three calls.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use mmtrace_bpf::Tracer;
use rustix::thread::{self, CapabilitySet, CapabilitySets};

/// The reader's nice value when mmtrace may raise its priority. A storm fills the ring in
/// milliseconds, and a reader that waits behind CPU-bound work for a time slice loses
/// events that it could have kept up with: on a 2-core machine with both cores held, the
/// default nice lost 77-85% of a storm, -10 about 2%, -20 at most 0.25% and often nothing
/// (BENCHMARKS.md, Losses). The reader takes a CPU only while events wait, so this costs the
/// traced work no more than the trace itself does. Only the reader runs at it: the command is
/// forked before.
pub const READER_NICE: i32 = -20;

/// The real-time priority the reader takes while a storm lasts: the lowest, so any real-time
/// work the machine has still comes first. At nice -20 alone the reader lost 0.07-0.3% of a
/// storm in 4 of 15 runs with both cores held; taking SCHED_FIFO, nothing in 25 (BENCHMARKS.md,
/// Losses).
const READER_RT_PRIORITY: i32 = 1;

/// How long the ring must keep being emptied at once before the reader gives its real-time
/// priority back: a storm comes in bursts, and each wakeup at the normal priority is a wait
/// behind whatever holds the CPUs.
const CALM: Duration = Duration::from_secs(1);

/// The reader's priority: nice -20 from the start, and SCHED_FIFO while events wait (a full
/// batch drained), until the ring has been drained at once for a second. A real-time reader
/// cannot hog the machine: it runs only while the traced work makes events, which it slows,
/// and the kernel's real-time throttling bounds it besides.
pub struct Priority {
    /// Whether the reader may take SCHED_FIFO: mmtrace chose its priority, and keeps
    /// CAP_SYS_NICE for it.
    may_boost: bool,
    boosted: bool,
    last_busy: Instant,
}

impl Priority {
    /// What the reader must keep to take a real-time priority later.
    pub fn keep(&self) -> bool {
        self.may_boost
    }

    /// After a batch: `busy` when it was full, so more events were waiting.
    pub fn batch(&mut self, busy: bool) {
        if !self.may_boost || !(busy || self.boosted) {
            return;
        }
        let now = Instant::now();
        if busy {
            self.last_busy = now;
            if !self.boosted {
                self.boosted = set_policy(libc::SCHED_FIFO, READER_RT_PRIORITY);
            }
        } else if now.duration_since(self.last_busy) >= CALM {
            // SCHED_OTHER keeps the nice value the thread had.
            set_policy(libc::SCHED_OTHER, 0);
            self.boosted = false;
        }
    }
}

/// Sets the calling thread's policy; a thread forked or spawned from it starts at the normal
/// one. False when the kernel refused.
fn set_policy(policy: i32, priority: i32) -> bool {
    // The system call, not libc's wrapper: musl's always fails (ENOSYS), as the call sets a
    // thread's policy where POSIX means a process's; the reader's thread is the one wanted.
    // SAFETY: the kernel reads one int, the priority, from `param`; pid 0 is the calling thread.
    let param: libc::c_int = priority;
    unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            policy | libc::SCHED_RESET_ON_FORK,
            &param as *const libc::c_int,
        ) == 0
    }
}

/// Raises the reader's priority, when mmtrace may (root, or CAP_SYS_NICE) and the user left it
/// at the default: a priority the user chose (`nice -n 5 mmtrace ...`, `chrt -f 10 mmtrace
/// ...`) stays theirs. Without the right, it says nothing: the trace goes on at the default,
/// and a loss says when the reader waited for a CPU.
pub fn raise_reader_priority() -> Priority {
    // SAFETY: pid 0, the calling thread, whose policy it returns (musl's wrapper always fails).
    let default_policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) }
        == libc::c_long::from(libc::SCHED_OTHER);
    Priority {
        may_boost: default_policy
            && rustix::process::getpriority_process(None).is_ok_and(|nice| nice == 0)
            && rustix::process::setpriority_process(None, READER_NICE).is_ok(),
        boosted: false,
        last_busy: Instant::now(),
    }
}

/// What a command keeps of its capabilities once attached, beyond what its options need.
#[derive(Default, Clone, Copy)]
pub struct Keep {
    /// CAP_KILL: it passes signals on to a command it started, which may run as another user
    /// (with --user, or by changing its own ids).
    pub kill: bool,
    /// CAP_SYS_NICE: the reader takes SCHED_FIFO under a storm (`Priority`). Raising
    /// RLIMIT_RTPRIO instead would let it do so with no capability, but needs
    /// CAP_SYS_RESOURCE, which containers and our own machines' root often lack.
    pub nice: bool,
}

/// Drops every capability but those the rest of the trace needs: what `keep` names, and
/// CAP_BPF (or CAP_SYS_ADMIN before Linux 5.8) where the running kernel checks it on every
/// bpf() command; with --stack, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, to read the
/// traced processes' /proc/PID/maps and the files they map. Capabilities belong to a thread,
/// so this must run while the process has no other.
pub fn drop_after_attach(tracer: &Tracer, keep: Keep, reads_stacks: bool) -> anyhow::Result<()> {
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .map(Iterator::count)
            .unwrap_or(1)
    };
    // The loader's threads have been joined, but the kernel lists an ending thread until its
    // exit is complete, which a slow machine (6.1 under QEMU's emulation) showed after the join.
    let deadline = Instant::now() + Duration::from_secs(1);
    let threads = loop {
        let n = count();
        if n == 1 || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    anyhow::ensure!(
        threads == 1,
        "dropping capabilities with {threads} threads running: capabilities are per thread, so drop them before starting any"
    );
    let held = thread::capabilities(None).context("reading mmtrace's capabilities")?;
    let wanted = [
        (keep.kill, CapabilitySet::KILL),
        (keep.nice, CapabilitySet::SYS_NICE),
    ];
    let mut keep = wanted
        .into_iter()
        .filter(|(wanted, _)| *wanted)
        .fold(CapabilitySet::empty(), |set, (_, cap)| set | cap)
        & held.permitted;
    // Symbolizing stacks reads every traced process's /proc/PID/maps and the files it maps.
    if reads_stacks {
        keep |= held.permitted & (CapabilitySet::SYS_PTRACE | CapabilitySet::DAC_READ_SEARCH);
    }
    // Before capset, while CAP_SETPCAP is still effective: no exec, not even of a setuid
    // program, can give the others back.
    drop_bounding_set_but(keep);
    rustix::thread::set_no_new_privs(true).context("setting no_new_privs")?;

    // Try the counters with only what is kept in effect; the permitted set still allows
    // taking back what this kernel turns out to need.
    let mut sets = CapabilitySets {
        effective: keep,
        permitted: held.permitted,
        inheritable: CapabilitySet::empty(),
    };
    for extra in [
        CapabilitySet::empty(),
        CapabilitySet::BPF,
        CapabilitySet::SYS_ADMIN,
    ] {
        sets.effective = keep | (extra & held.permitted);
        thread::set_capabilities(None, sets).context("dropping capabilities")?;
        if tracer.counters_readable() {
            break;
        }
    }
    let _ = thread::clear_ambient_capability_set();
    sets.permitted = sets.effective;
    thread::set_capabilities(None, sets).context("dropping capabilities")
}

/// Drops every capability but `keep` from the bounding set, as far as this process may: it
/// needs CAP_SETPCAP, which a process given only CAP_BPF and CAP_PERFMON lacks (and then has
/// nothing in the bounding set to fear from exec either, as no_new_privs covers it).
fn drop_bounding_set_but(keep: CapabilitySet) {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last.min(63) {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        if !keep.contains(one) && thread::remove_capability_from_bounding_set(one).is_err() {
            return;
        }
    }
}

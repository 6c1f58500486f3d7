//! Who a record says the caller is, against /proc: its thread's start, its process's (the
//! main thread's) and its parent's, from the main thread and from another one. These are
//! what Tracee's entity ids hash, and what `analyze` tells a process from a later one with
//! the same pid by. Needs root: see common::bpf_allowed.

mod common;

use std::time::Duration;

use common::{events_of, tid, trace_with};
use mmtrace_events::event::{entity_id, Context};
use mmtrace_events::scope::Scope;
use mmtrace_events::Event;

/// How far the test's own boot-to-epoch offset may stray from the tracer's: both read the two
/// clocks one after the other, and NTP may slew the realtime one in between.
const SLACK_NS: i128 = 2_000_000;

/// Field 22 of a /proc stat file: when the task started, in clock ticks since boot.
fn start_ticks(stat: &str) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap();
    // The name in parentheses may hold spaces and ')': fields 3 on follow the last ')'.
    let after = &text[text.rfind(')').unwrap() + 2..];
    after.split(' ').nth(22 - 3).unwrap().parse().unwrap()
}

fn tick_ns() -> i128 {
    1_000_000_000 / i128::from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(unsafe { libc::clock_gettime(id, &mut t) }, 0);
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

/// ns since the epoch minus ns since boot, as the test reads the clocks.
fn boot_to_epoch() -> i128 {
    // The tightest of a few pairs of readings: a preemption between the two (milliseconds
    // under QEMU's emulation) would move the window by as much.
    (0..8)
        .map(|_| {
            let before = clock_ns(libc::CLOCK_REALTIME);
            let boot = clock_ns(libc::CLOCK_BOOTTIME);
            let after = clock_ns(libc::CLOCK_REALTIME);
            (after - before, (before + after) / 2 - boot)
        })
        .min_by_key(|&(gap, _)| gap)
        .unwrap()
        .1
}

/// The epoch ns the kernel's start of a task can be, given /proc's `ticks` for it: the
/// kernel stores ns since boot, /proc rounds them down to clock ticks.
fn window(ticks: u64) -> (i128, i128) {
    let lo = i128::from(ticks) * tick_ns() + boot_to_epoch();
    (lo - SLACK_NS, lo + tick_ns() + SLACK_NS)
}

/// Asserts a record's start (ns since the epoch) is the one /proc gives in `stat`.
fn started_as(epoch_ns: u64, stat: &str, what: &str) {
    let (lo, hi) = window(start_ticks(stat));
    let at = i128::from(epoch_ns);
    assert!(
        lo <= at && at < hi,
        "{what}: {at} is not within [{lo}, {hi}) from {stat}"
    );
}

/// Asserts the process's Tracee id is one of those /proc's start for it gives: its ticks
/// leave 10 ms of doubt, which may straddle one of the 100 ms steps the id is taken to.
fn process_id_as(c: &Context, stat: &str) {
    let (lo, hi) = window(start_ticks(stat));
    let ids = [lo, hi].map(|t| entity_id(c.host_pid, t as u64));
    assert!(
        ids.contains(&c.process_entity_id()),
        "processEntityId {} is not one of {ids:?} from {stat}",
        c.process_entity_id()
    );
}

fn munmap_nothing() {
    // An address with nothing mapped: the call succeeds and changes nothing.
    unsafe { libc::munmap(0x10000 as *mut libc::c_void, 4096) };
}

fn one_munmap(events: Vec<Event>, who: &str) -> Event {
    let mut calls: Vec<Event> = events
        .into_iter()
        .filter(|e| e.def.name == "munmap" && e.raw_args[0] == 0x10000)
        .collect();
    assert_eq!(calls.len(), 1, "{who}: {calls:?}");
    calls.pop().unwrap()
}

fn trace_tree() -> Option<mmtrace_bpf::Tracer> {
    trace_with("munmap", |o| {
        o.scope = Scope::parse(&[&format!("tree={}", std::process::id())]).unwrap();
    })
}

#[test]
fn a_thread_carries_its_process_start_and_its_parents() {
    let Some(mut t) = trace_tree() else {
        return;
    };
    let me = std::process::id();
    // Late enough that the thread's start and the process's are ticks apart, so that /proc
    // tells which of the two a record carries.
    while clock_ns(libc::CLOCK_BOOTTIME)
        < i128::from(start_ticks("/proc/self/stat") + 3) * tick_ns()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (thread, stat) = std::thread::spawn(|| {
        munmap_nothing();
        let stat = format!("/proc/self/task/{}/stat", tid());
        (tid(), (start_ticks(&stat), stat))
    })
    .join()
    .unwrap();
    assert_ne!(thread, me, "a thread other than the main one");
    assert_ne!(
        stat.0,
        start_ticks("/proc/self/stat"),
        "started ticks apart"
    );
    let e = one_munmap(events_of(&mut t, thread), "thread");
    let mine = &e.ctx;
    assert_eq!((mine.host_pid, mine.host_tid), (me, thread));
    let (lo, hi) = window(stat.0);
    let at = i128::from(mine.thread_start);
    assert!(
        lo <= at && at < hi,
        "thread start {at} not in [{lo}, {hi}) from {}",
        stat.1
    );
    started_as(mine.process_start, "/proc/self/stat", "process start");
    let parent = std::os::unix::process::parent_id();
    assert_eq!(mine.host_ppid, parent);
    started_as(
        mine.parent_start,
        &format!("/proc/{parent}/stat"),
        "parent start",
    );
    process_id_as(mine, "/proc/self/stat");
    assert_ne!(mine.process_entity_id(), mine.thread_entity_id());

    // A forked child: the main thread of a process of its own, whose parent is this one.
    let mut go = [0; 2];
    let mut ready = [0; 2];
    unsafe {
        assert_eq!(libc::pipe(go.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
    }
    let child = match unsafe { libc::fork() } {
        0 => unsafe {
            // Only the other ends: a test that fails lets it go.
            libc::close(go[1]);
            libc::close(ready[0]);
            munmap_nothing();
            // Alive until the test has read its /proc.
            let mut b = 0u8;
            libc::write(ready[1], (&raw const b).cast(), 1);
            libc::read(go[0], (&raw mut b).cast(), 1);
            libc::_exit(0)
        },
        pid => unsafe {
            libc::close(go[0]);
            libc::close(ready[1]);
            pid as u32
        },
    };
    let mut b = 0u8;
    assert_eq!(unsafe { libc::read(ready[0], (&raw mut b).cast(), 1) }, 1);
    let child_stat = format!("/proc/{child}/stat");
    let e = one_munmap(events_of(&mut t, child), "child");
    let c = &e.ctx;
    assert_eq!((c.host_pid, c.host_tid, c.host_ppid), (child, child, me));
    started_as(c.process_start, &child_stat, "child's start");
    process_id_as(c, &child_stat);
    // Its start is its main thread's, and its parent's is this process's, to the ns.
    assert_eq!(c.process_start, c.thread_start);
    assert_eq!(c.process_entity_id(), c.thread_entity_id());
    assert_eq!(c.parent_start, mine.process_start);
    assert_eq!(c.parent_entity_id(), mine.process_entity_id());
    unsafe {
        libc::write(go[1], (&raw const b).cast(), 1);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
        libc::close(go[1]);
        libc::close(ready[0]);
    }
}

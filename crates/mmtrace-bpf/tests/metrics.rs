//! The metrics-only path (`mmtrace serve`'s): calls counted in the kernel's maps, checked
//! against the calls this test makes. Needs root: see common::bpf_allowed.

mod common;

use common::{comm, tid, trace_with};
use mmtrace_bpf::abi;
use mmtrace_bpf::metrics::{Log2Histogram, Snapshot, BUCKETS, OTHER_RESULT};
use mmtrace_testkit::{log2_bucket, timed, Bounds};
use std::ptr::null_mut;

const PAGE: usize = 4096;

fn counts<'a>(snap: &'a Snapshot, name: &str) -> &'a mmtrace_bpf::metrics::EventCounts {
    snap.events
        .iter()
        .find(|c| c.event.name == name)
        .unwrap_or_else(|| panic!("{name} not counted"))
}

fn map(len: usize, prot: i32) -> *mut libc::c_void {
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p
}

/// A thread in a mount namespace of its own, as a container's processes are, that makes
/// `calls` failing munmaps when it is sent a word and says when it is done; it ends once its
/// sender is dropped (its own end makes calls). Its tid, and both ends.
struct Unshared {
    tid: u32,
    go: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

fn unshared_thread(calls: usize) -> Unshared {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
        tid_tx.send(tid()).unwrap();
        go_rx.recv().unwrap();
        for _ in 0..calls {
            unsafe { libc::munmap(std::ptr::without_provenance_mut(1), PAGE) };
        }
        done_tx.send(()).unwrap();
        let _ = go_rx.recv();
    });
    Unshared {
        tid: tid_rx.recv().unwrap(),
        go: go_tx,
        done: done_rx,
    }
}

fn mnt_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn calls_results_durations_bytes_and_detections_are_counted_in_the_kernel() {
    storm_counted(true);
}

/// serve --no-durations: the same counts, from the exit hook alone, and no durations.
#[test]
fn without_durations_the_same_calls_are_counted_at_their_exit() {
    storm_counted(false);
}

fn storm_counted(durations: bool) {
    const UNSHARED: usize = 11;
    let unshared = unshared_thread(UNSHARED);
    let Some(tracer) = trace_with("mmap,munmap,mremap,mprotect,mlock,munlock", |o| {
        o.metrics = true;
        o.durations = durations;
        // These two threads alone: the test binary's other threads make calls of their own.
        o.scope =
            mmtrace_events::scope::Scope::parse(&[&format!("tid={},{}", tid(), unshared.tid)])
                .unwrap();
    }) else {
        return;
    };
    // Starting the tracer made calls of its own (the ring's mappings): counted from here.
    let before = tracer.metrics().unwrap();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    const OK: usize = 100;
    const BAD: usize = 7;
    const WX: usize = 3;
    const LOCKS: usize = 5;
    for _ in 0..OK {
        let p = map(3 * PAGE, rw);
        assert_eq!(unsafe { libc::munmap(p, 3 * PAGE) }, 0);
    }
    for _ in 0..BAD {
        // An unaligned address: EINVAL.
        assert_eq!(
            unsafe { libc::munmap(std::ptr::without_provenance_mut(1), PAGE) },
            -1
        );
    }
    for _ in 0..WX {
        let p = map(PAGE, rw | libc::PROT_EXEC);
        assert_eq!(unsafe { libc::munmap(p, PAGE) }, 0);
    }
    let p = map(2 * PAGE, rw);
    for _ in 0..LOCKS {
        assert_eq!(unsafe { libc::mlock(p, 2 * PAGE) }, 0);
        assert_eq!(unsafe { libc::munlock(p, 2 * PAGE) }, 0);
    }
    // Grows by 2 pages, then W+X by mprotect.
    let q = unsafe { libc::mremap(p, 2 * PAGE, 4 * PAGE, libc::MREMAP_MAYMOVE) };
    assert_ne!(q, libc::MAP_FAILED);
    assert_eq!(unsafe { libc::mprotect(q, PAGE, rw | libc::PROT_EXEC) }, 0);
    assert_eq!(unsafe { libc::munmap(q, 4 * PAGE) }, 0);

    let snap = since(tracer.metrics().unwrap(), &before);
    let munmap = counts(&snap, "munmap");
    let munmaps = OK + WX + 1;
    assert_eq!(munmap.calls[0], munmaps as u64, "successful munmaps");
    assert_eq!(
        munmap.calls[libc::EINVAL as usize],
        BAD as u64,
        "EINVAL munmaps"
    );
    assert_eq!(munmap.calls.iter().sum::<u64>(), (munmaps + BAD) as u64);
    assert_eq!(munmap.calls[OTHER_RESULT], 0);
    if durations {
        assert_eq!(
            munmap.duration.count(),
            (munmaps + BAD) as u64,
            "one duration a call"
        );
        assert!(munmap.duration.sum_ns > 0);
    } else {
        assert_eq!(munmap.duration.count(), 0, "no durations");
    }
    let mmap = counts(&snap, "mmap");
    assert_eq!(mmap.calls[0], (OK + WX + 1) as u64);
    assert_eq!(counts(&snap, "mlock").calls[0], LOCKS as u64);
    assert_eq!(counts(&snap, "munlock").calls[0], LOCKS as u64);
    assert_eq!(counts(&snap, "mremap").calls[0], 1);
    assert_eq!(counts(&snap, "mprotect").calls[0], 1);

    let page = PAGE as u64;
    let b = |i: u32| snap.bytes[i as usize];
    assert_eq!(
        b(abi::MB_MAPPED),
        (OK * 3 + WX + 2 + 2) as u64 * page,
        "mapped"
    );
    assert_eq!(
        b(abi::MB_UNMAPPED),
        (OK * 3 + WX + 4) as u64 * page,
        "unmapped"
    );
    assert_eq!(b(abi::MB_LOCKED), (LOCKS * 2) as u64 * page, "locked");
    assert_eq!(b(abi::MB_UNLOCKED), (LOCKS * 2) as u64 * page, "unlocked");
    assert_eq!(
        snap.detections[abi::MD_WRITE_EXEC as usize],
        (WX + 1) as u64,
        "MMT-001: W+X by mmap and mprotect"
    );
    assert_eq!(snap.cgroup_overflow, 0);

    // Per cgroup: only calls made outside the kernel's initial mount namespace, as every
    // container's are; this thread's count there only if the test runs outside it.
    unshared.go.send(()).unwrap();
    unshared.done.recv().unwrap();
    let snap = since(tracer.metrics().unwrap(), &before);
    assert_eq!(
        counts(&snap, "munmap").calls[libc::EINVAL as usize],
        (BAD + UNSHARED) as u64
    );
    if let Some(cgroup) = common::cgroup_id() {
        let of = |name: &str, result: usize| -> u64 {
            snap.cgroups
                .iter()
                .filter(|c| c.cgroup_id == cgroup && c.event.name == name && c.result == result)
                .map(|c| c.calls)
                .sum()
        };
        let host = mnt_ns("self") == mnt_ns("2");
        let mine = |n: usize| if host { 0 } else { n as u64 };
        assert_eq!(
            of("munmap", 0),
            mine(munmaps),
            "per cgroup: successful munmaps"
        );
        assert_eq!(
            of("munmap", libc::EINVAL as usize),
            mine(BAD) + UNSHARED as u64,
            "per cgroup: EINVAL, the unshared thread's always"
        );
    }
}

/// The counts made after `before`.
fn since(mut snap: Snapshot, before: &Snapshot) -> Snapshot {
    fn sub(a: &mut [u64], b: &[u64]) {
        a.iter_mut().zip(b).for_each(|(a, b)| *a -= b);
    }
    for (c, b) in snap.events.iter_mut().zip(&before.events) {
        sub(&mut c.calls, &b.calls);
        sub(&mut c.duration.buckets, &b.duration.buckets);
        c.duration.sum_ns -= b.duration.sum_ns;
    }
    for c in &mut snap.cgroups {
        let b = before
            .cgroups
            .iter()
            .find(|b| (b.cgroup_id, b.event.id, b.result) == (c.cgroup_id, c.event.id, c.result));
        c.calls -= b.map_or(0, |b| b.calls);
    }
    sub(&mut snap.bytes, &before.bytes);
    sub(&mut snap.detections, &before.detections);
    snap
}

/// A child that waits to be killed.
fn sleeper() -> libc::pid_t {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe {
            libc::pause();
            libc::_exit(0);
        }
    }
    pid
}

#[test]
fn kills_and_the_time_to_memory_back_are_counted_in_the_kernel() {
    kills_timed(true);
}

/// Without durations kills are still timed from their entry to the victim's memory back.
#[test]
fn without_durations_kills_are_still_timed() {
    kills_timed(false);
}

fn kills_timed(durations: bool) {
    let Some(tracer) = trace_with(
        "kill,pidfd_open,pidfd_send_signal,process_mrelease,exit_mmap",
        |o| {
            o.metrics = true;
            o.durations = durations;
            // The victims' teardowns too, which run in them.
            o.scope = Default::default();
        },
    ) else {
        return;
    };
    let a = sleeper();
    let b = sleeper();
    assert_eq!(unsafe { libc::kill(a, libc::SIGKILL) }, 0);
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, b, 0) } as i32;
    assert!(pidfd >= 0);
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            null_mut::<u8>(),
            0,
        )
    };
    assert_eq!(sent, 0);
    // Freed memory or ESRCH (the victim won the race): either way the memory is back.
    unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd, 0) };
    for pid in [a, b] {
        assert_eq!(unsafe { libc::waitpid(pid, null_mut(), 0) }, pid);
    }
    unsafe { libc::close(pidfd) };
    // The teardown's end can follow the wait's return by a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let snap = loop {
        let snap = tracer.metrics().unwrap();
        if snap.back.count() >= 2 || std::time::Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Other processes on the machine may kill too: at least ours.
    assert!(snap.kills[abi::MK_SIGNAL as usize] >= 2, "{:?}", snap.kills);
    assert!(
        snap.back.count() >= 2,
        "both kills timed to memory back: {:?}",
        snap.back
    );
    assert!(snap.back.sum_ns > 0);
    assert!(counts(&snap, "kill").calls[0] >= 1);
    assert!(counts(&snap, "exit_mmap").calls[0] >= 2);
}

/// A metrics trace of `events` in `scope`, with durations.
fn counted(events: &str, scope: &str) -> Option<mmtrace_bpf::Tracer> {
    trace_with(events, |o| {
        o.metrics = true;
        o.scope = mmtrace_events::scope::Scope::parse(&[scope]).unwrap();
    })
}

/// The one observation a histogram gained between two reads: its bucket and its nanoseconds.
fn one_more(now: &Log2Histogram, before: &Log2Histogram) -> (usize, u64) {
    let grown: Vec<usize> = (0..now.buckets.len())
        .filter(|&b| now.buckets[b] != before.buckets[b])
        .collect();
    assert_eq!(
        now.count() - before.count(),
        1,
        "one observation: {grown:?}"
    );
    (grown[0], now.sum_ns - before.sum_ns)
}

/// An observation of the kernel's is where the test's own watch puts it: its time within the
/// bounds the test measured, and its bucket the one the `le` of which its time is under, so no
/// lower than the bucket of the lower bound nor higher than that of the upper.
fn observed_as_timed(what: &str, (bucket, ns): (usize, u64), t: Bounds) {
    let of = |ns| log2_bucket(ns, BUCKETS as usize);
    assert!(
        (t.lower_ns..=t.upper_ns).contains(&ns),
        "{what}: the kernel's {ns} ns outside the test's {t:?}"
    );
    assert!(
        (of(t.lower_ns)..=of(t.upper_ns)).contains(&bucket),
        "{what}: bucket {bucket} for {t:?}"
    );
    assert_eq!(bucket, of(ns), "{what}: {ns} ns in bucket {bucket}");
}

/// Calls from a microsecond (a munmap of a page never touched) to a fraction of a second
/// (mlocks, munlocks and munmaps of up to 128 MiB): each lands in the bucket of the time this
/// test measured it take, boundaries exact as Prometheus's `le`.
#[test]
fn each_call_lands_in_the_bucket_of_the_time_the_test_measured() {
    let Some(tracer) = counted("mlock,munlock,munmap", &format!("tid={}", tid())) else {
        return;
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut seen = std::collections::BTreeSet::new();
    let mut call = |name: &str, len: usize, change: i64, f: &dyn Fn() -> i32| {
        let before = tracer.metrics().unwrap();
        let (rc, t) = timed(change, f);
        assert_eq!(rc, 0, "{name} of {len} bytes");
        let now = tracer.metrics().unwrap();
        let got = one_more(
            &counts(&now, name).duration,
            &counts(&before, name).duration,
        );
        observed_as_timed(&format!("{name} of {len} bytes"), got, t);
        seen.insert(got.0);
    };
    for shift in 0..=15 {
        let len = PAGE << shift;
        let p = map(len, rw);
        // The mlock brings the pages in, the munmap frees them.
        call("mlock", len, len as i64, &|| unsafe { libc::mlock(p, len) });
        call("munlock", len, 0, &|| unsafe { libc::munlock(p, len) });
        call("munmap", len, -(len as i64), &|| unsafe {
            libc::munmap(p, len)
        });
        let untouched = map(PAGE, rw);
        call("munmap", PAGE, 0, &|| unsafe {
            libc::munmap(untouched, PAGE)
        });
    }
    assert!(seen.len() >= 8, "the calls span buckets {seen:?}");
}

/// From a kill to its victim's memory back: each lands in the bucket of the time this test
/// watched it take, victims of growing sizes.
#[test]
fn kill_memory_back_lands_in_the_bucket_the_test_timed() {
    // The test's thread and its victims alone: both carry its name.
    let Some(tracer) = counted("kill,exit_mmap", &format!("comm={}", comm())) else {
        return;
    };
    let memcg = mmtrace_testkit::Memcg::new("back", 1 << 30);
    for mib in [1, 4, 16, 64, 128] {
        let bytes = mib << 20;
        let pid = memcg.spawn_holder(bytes);
        let before = tracer.metrics().unwrap();
        let t = memcg.kill_timed(pid, bytes as u64);
        let now = tracer.metrics().unwrap();
        assert_eq!(
            now.kills[abi::MK_SIGNAL as usize] - before.kills[abi::MK_SIGNAL as usize],
            1
        );
        observed_as_timed(
            &format!("a kill of {mib} MiB"),
            one_more(&now.back, &before.back),
            t,
        );
    }
}

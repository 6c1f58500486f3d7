//! What the kernel side adds to calls, checked on real processes: pidfd targets and freed
//! memory, locked memory against its limit, mappings and protection alerts.
//! Needs root: see common::bpf_allowed.

mod common;

use common::{events_of, tid, trace, trace_others, trace_with};
use mmtrace_events::derived::{alert, Alert};
use mmtrace_events::enrich::MappingKind;
use mmtrace_events::Event;
use std::ptr::null_mut;

const PAGE: usize = 4096;
const MIB: u64 = 1 << 20;

/// The tests share one address space, and fork or a mapping call in one holds its mmap lock
/// while another's mapping is read: that read then comes back, rightly, as unread. Run one
/// at a time, the mapping each test reads is the one it made; contention has a test of its own.
/// khugepaged, too, takes the lock for writing while it collapses a process's pages into huge
/// ones (Debian's kernels enable THP for all), for milliseconds under QEMU's emulation: the
/// process opts out, so that the only holders are the ones a test makes on purpose.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) },
        0
    );
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn sys(nr: libc::c_long, a: u64, b: u64, c: u64, d: u64) -> i64 {
    common::kernel_ret(unsafe { libc::syscall(nr, a, b, c, d) })
}

/// A child that maps and touches `bytes` of anonymous memory, then waits to be killed.
fn hog(bytes: usize) -> i32 {
    let mut ready = [0; 2];
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    match unsafe { libc::fork() } {
        0 => unsafe {
            mmtrace_testkit::touch_anon(bytes);
            libc::write(ready[1], [1u8].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        },
        pid => {
            let mut b = 0u8;
            unsafe {
                libc::read(ready[0], (&mut b as *mut u8).cast(), 1);
                libc::close(ready[0]);
                libc::close(ready[1]);
            }
            pid
        }
    }
}

#[test]
fn process_mrelease_names_the_target_and_what_it_freed() {
    let _serial = serial();
    let Some(mut t) = trace("pidfd_open,pidfd_send_signal,process_mrelease") else {
        return;
    };
    // The kernel may finish the victim's own exit first (ESRCH); a few victims are tried.
    for _ in 0..10 {
        let child = hog(64 << 20);
        let pidfd = sys(libc::SYS_pidfd_open, child as u64, 0, 0, 0);
        let live = sys(libc::SYS_process_mrelease, pidfd as u64, 0, 0, 0);
        sys(
            libc::SYS_pidfd_send_signal,
            pidfd as u64,
            libc::SIGKILL as u64,
            0,
            0,
        );
        let reaped = sys(libc::SYS_process_mrelease, pidfd as u64, 0, 0, 0);
        unsafe {
            libc::waitpid(child, null_mut(), 0);
            libc::close(pidfd as i32);
        }
        let got = events_of(&mut t, tid());
        assert_eq!(got.len(), 4, "{got:#?}");
        for e in &got {
            let target = e
                .enrich
                .as_ref()
                .and_then(|x| x.target.as_ref())
                .unwrap_or_else(|| panic!("{e:?}"));
            assert_eq!(
                (target.host_pid, target.pid),
                (child as u32, child as u32),
                "{}",
                e.name()
            );
            assert_eq!(
                target.comm,
                std::fs::read_to_string("/proc/thread-self/comm")
                    .unwrap()
                    .trim(),
                "{}",
                e.name()
            );
        }
        assert_eq!(live, -libc::EINVAL as i64);
        let why = mmtrace_events::derived::failure_reason(&got[1]).unwrap();
        assert!(why.contains("not dying"), "{why}");
        if reaped != 0 {
            continue;
        }
        let x = got[3].enrich.as_ref().unwrap();
        let before = x.rss_before.unwrap();
        assert!(
            before.anon >= 64 * MIB,
            "victim held its 64 MiB: {before:?}"
        );
        let freed = x.freed_bytes().unwrap();
        assert!(freed >= 64 * MIB * 9 / 10, "freed {freed} of 64 MiB");
        return;
    }
    panic!("process_mrelease never reaped a killed victim");
}

#[test]
fn locked_memory_against_the_limit_and_implicit_unlock() {
    let _serial = serial();
    // The limit is set in a child so the rest of the test process keeps its own.
    let Some(mut t) = trace_others("mlock,munmap") else {
        return;
    };
    const LIMIT: u64 = 64 << 10;
    let child = match unsafe { libc::fork() } {
        0 => unsafe {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
            let p = libc::mmap(
                null_mut(),
                3 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            libc::syscall(libc::SYS_mlock, p, 3 * PAGE);
            libc::syscall(libc::SYS_munmap, p, 3 * PAGE);
            libc::_exit(0)
        },
        pid => pid,
    };
    unsafe { libc::waitpid(child, null_mut(), 0) };
    let mut got = Vec::new();
    t.drain(|e| {
        if e.ctx.host_pid == child as u32 {
            got.push(e)
        }
    });
    let by = |name: &str| {
        got.iter()
            .find(|e| e.name() == name)
            .unwrap_or_else(|| panic!("{name}: {got:#?}"))
    };
    let locked = by("mlock").enrich.as_ref().unwrap().locked.unwrap();
    assert_eq!(locked.locked_bytes, 12 << 10);
    assert_eq!(locked.limit_bytes, Some(LIMIT));
    let unmap = by("munmap").enrich.as_ref().unwrap();
    assert_eq!(unmap.unlocked_bytes, Some(12 << 10));
    assert_eq!(unmap.locked.unwrap().locked_bytes, 0);
    let m = unmap.mapping.as_ref().unwrap();
    assert_eq!(m.kind, MappingKind::Anon);
    assert!(m.locked);
}

fn anon(prot: i32) -> u64 {
    (unsafe {
        libc::mmap(
            null_mut(),
            PAGE,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }) as u64
}

fn alert_of(e: &Event) -> Option<Alert> {
    alert(e).map(|(a, _)| a)
}

#[test]
fn protection_changes_raise_tracee_alerts() {
    let _serial = serial();
    let Some(mut t) = trace("mmap,mprotect") else {
        return;
    };
    let (r, w, x) = (libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC);
    let rw = anon(r | w);
    sys(libc::SYS_mprotect, rw, PAGE as u64, (r | x) as u64, 0);
    let rx = anon(r | x);
    sys(libc::SYS_mprotect, rx, PAGE as u64, (r | w | x) as u64, 0);
    let ro = anon(r);
    sys(libc::SYS_mprotect, ro, PAGE as u64, (r | x) as u64, 0);
    anon(r | w | x);
    // Dropping exec is never an alert.
    sys(libc::SYS_mprotect, rx, PAGE as u64, r as u64, 0);
    let got = events_of(&mut t, tid());
    let alerts: Vec<_> = got.iter().map(alert_of).collect();
    assert_eq!(
        alerts,
        [
            None,
            Some(Alert::MprotectWToX),
            None,
            Some(Alert::MprotectXToWx),
            None,
            Some(Alert::MprotectAddedX),
            Some(Alert::MmapWx),
            None,
        ],
        "{got:#?}"
    );
    // The mapping that held the page before the call: the page's own, or one the kernel
    // merged it into with a neighbour of the same kind (as arm64's layout gives).
    let before = got[1].enrich.as_ref().unwrap().mapping.as_ref().unwrap();
    assert_eq!(
        (before.kind, before.prot),
        (MappingKind::Anon, (r | w) as u64)
    );
    assert!(
        before.start <= rw && rw + PAGE as u64 <= before.end,
        "{before:?} does not hold {rw:#x}"
    );
}

#[test]
fn file_mappings_report_their_path() {
    let _serial = serial();
    let Some(mut t) = trace("mmap,munmap,madvise") else {
        return;
    };
    let dir = common::Mounted::tmpfs("paths");
    mapped_file_is_reported_by_its_path(&mut t, &dir.path);
}

/// A container's files are on an overlayfs, and their mappings hold the layer's file: the
/// path is still the one the process opened.
#[test]
fn overlay_files_report_the_path_the_process_opened() {
    let _serial = serial();
    let Some(mut t) = trace("mmap,munmap,madvise") else {
        return;
    };
    let layers = common::Mounted::tmpfs("layers");
    let merged = common::Mounted::overlay("merged", &layers);
    mapped_file_is_reported_by_its_path(&mut t, &merged.path);
}

fn mapped_file_is_reported_by_its_path(t: &mut mmtrace_bpf::Tracer, dir: &std::path::Path) {
    let exe = dir.join("mapped");
    std::fs::write(&exe, vec![1u8; PAGE]).unwrap();
    let exe = exe.canonicalize().unwrap();
    let file = std::fs::File::open(&exe).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let p =
        unsafe { libc::mmap(null_mut(), PAGE, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0) } as u64;
    sys(
        libc::SYS_madvise,
        p,
        PAGE as u64,
        libc::MADV_WILLNEED as u64,
        0,
    );
    sys(libc::SYS_munmap, p, PAGE as u64, 0, 0);
    let got = events_of(t, tid());
    assert_eq!(got.len(), 3, "{got:#?}");
    let path = exe.to_str().unwrap();
    for e in &got {
        let m = e
            .enrich
            .as_ref()
            .unwrap()
            .mapping
            .as_ref()
            .unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(
            (m.kind, m.path.as_ref().map(|p| p.as_bytes()), m.start),
            (MappingKind::File, Some(path.as_bytes()), p),
            "{}",
            e.name()
        );
    }
}

#[test]
fn a_mapping_behind_a_held_lock_is_unread_never_wrong() {
    let _serial = serial();
    let Some(mut t) = trace("madvise") else {
        return;
    };
    let dir = common::Mounted::tmpfs("contended");
    let path = dir.path.join("mapped");
    std::fs::write(&path, vec![1u8; PAGE]).unwrap();
    let path = path.canonicalize().unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let p =
        unsafe { libc::mmap(null_mut(), PAGE, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0) } as u64;
    // A second thread keeps the address space's lock taken for writing: mprotect over many
    // populated pages changes each page table entry under it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let calls = std::thread::scope(|s| {
        s.spawn(|| {
            let big = 64 << 20;
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
            let region = unsafe { libc::mmap(null_mut(), big, rw, flags, -1, 0) };
            let mut prot = rw;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                prot ^= libc::PROT_WRITE;
                unsafe { libc::mprotect(region, big, prot) };
            }
            unsafe { libc::munmap(region, big) };
        });
        for _ in 0..500 {
            sys(
                libc::SYS_madvise,
                p,
                PAGE as u64,
                libc::MADV_NORMAL as u64,
                0,
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        events_of(&mut t, tid())
    });
    unsafe { libc::munmap(p as *mut libc::c_void, PAGE) };
    assert_eq!(calls.len(), 500);
    let mut unread = 0;
    for e in &calls {
        let m = e.enrich.as_ref().and_then(|x| x.mapping.as_ref());
        let m = m.unwrap_or_else(|| panic!("no mapping: {e:?}"));
        if m.kind == MappingKind::Unread {
            unread += 1;
            assert_eq!((m.start, m.end, m.prot, &m.path), (0, 0, 0, &None), "{m:?}");
            continue;
        }
        assert_eq!(
            (m.kind, m.start, m.path.as_ref().map(|p| p.to_str_lossy())),
            (MappingKind::File, p, path.to_str().map(Into::into)),
        );
    }
    eprintln!("{unread} of 500 mappings unread under contention");
}

#[test]
fn a_target_in_another_pid_namespace_gets_both_pids() {
    let _serial = serial();
    let Some(mut t) = trace("pidfd_open,pidfd_send_signal") else {
        return;
    };
    // A child unshares a pid namespace; its own child is that namespace's init, pid 1, and
    // the host pid of it comes back through a pipe.
    let mut pipe = [0; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let middle = match unsafe { libc::fork() } {
        0 => unsafe {
            libc::unshare(libc::CLONE_NEWPID);
            let init = libc::fork();
            if init == 0 {
                loop {
                    libc::pause();
                }
            }
            libc::write(pipe[1], (&init as *const i32).cast(), 4);
            libc::waitpid(init, null_mut(), 0);
            libc::_exit(0)
        },
        pid => pid,
    };
    let mut init = 0i32;
    unsafe { libc::read(pipe[0], (&mut init as *mut i32).cast(), 4) };
    let pidfd = sys(libc::SYS_pidfd_open, init as u64, 0, 0, 0);
    sys(
        libc::SYS_pidfd_send_signal,
        pidfd as u64,
        libc::SIGKILL as u64,
        0,
        0,
    );
    unsafe {
        libc::waitpid(middle, null_mut(), 0);
        libc::close(pidfd as i32);
    }
    let got = events_of(&mut t, tid());
    assert_eq!(got.len(), 2, "{got:#?}");
    for e in &got {
        let target = e.enrich.as_ref().unwrap().target.as_ref().unwrap();
        assert_eq!(
            (target.host_pid, target.pid),
            (init as u32, 1),
            "{}",
            e.name()
        );
    }
}

#[test]
fn without_enrichment_calls_carry_the_call_alone() {
    let _serial = serial();
    let Some(mut t) = trace_with("mmap,mlock,munmap,pidfd_open", |o| o.enrich = false) else {
        return;
    };
    let p = anon(libc::PROT_READ | libc::PROT_WRITE);
    sys(libc::SYS_mlock, p, PAGE as u64, 0, 0);
    sys(libc::SYS_munmap, p, PAGE as u64, 0, 0);
    let pidfd = sys(libc::SYS_pidfd_open, std::process::id().into(), 0, 0, 0);
    unsafe { libc::close(pidfd as i32) };
    let got = events_of(&mut t, tid());
    let names: Vec<_> = got.iter().map(Event::name).collect();
    assert_eq!(names, ["mmap", "mlock", "munmap", "pidfd_open"]);
    assert!(got.iter().all(|e| e.enrich.is_none()), "{got:#?}");
    assert_eq!(got[2].arg("addr").map(|a| a.bits()), Some(p));
}

/// One page of each kind of mapping the docs list, made here, each touched by madvise,
/// mprotect, mremap (same size: the mapping stays) and munmap as the test itself knows it:
/// the kind, the range and the name the events carry are those of what the test mapped.
#[test]
fn every_mapping_kind_is_reported_as_it_is() {
    let _serial = serial();
    let Some(mut t) = trace("madvise,mprotect,mremap,munmap") else {
        return;
    };
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let map = |flags: i32, fd: i32| unsafe {
        let p = libc::mmap(null_mut(), PAGE, rw as i32, flags, fd, 0);
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        p as u64
    };
    // Unmapped only at the end, so no address is reused by a later kind.
    let mut unmaps = Vec::new();
    let mut touch_all = |p: u64, unmap: bool| {
        sys(
            libc::SYS_madvise,
            p,
            PAGE as u64,
            libc::MADV_NORMAL as u64,
            0,
        );
        sys(libc::SYS_mprotect, p, PAGE as u64, rw, 0);
        assert_eq!(
            sys(libc::SYS_mremap, p, PAGE as u64, PAGE as u64, 0),
            p as i64
        );
        // The stack and the heap are not the test's to unmap: length 0 fails with EINVAL
        // after the hook has looked at the address.
        unmaps.push((p, if unmap { PAGE as u64 } else { 0 }));
    };
    let mut expected: Vec<(u64, MappingKind, Option<String>)> = Vec::new();

    let anon = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
    touch_all(anon, true);
    expected.push((anon, MappingKind::Anon, None));

    let shared = map(libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
    touch_all(shared, true);
    expected.push((shared, MappingKind::SharedAnon, None));

    let dir = common::Mounted::tmpfs("kinds");
    let path = dir.path.join("data");
    std::fs::write(&path, vec![0u8; PAGE]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let f = map(libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&file));
    touch_all(f, true);
    let canonical = path.canonicalize().unwrap().to_str().unwrap().to_string();
    expected.push((f, MappingKind::File, Some(canonical)));

    let memfd = unsafe { libc::memfd_create(c"mmtrace-jit".as_ptr(), 0) };
    assert!(memfd >= 0);
    assert_eq!(unsafe { libc::ftruncate(memfd, PAGE as i64) }, 0);
    let m = map(libc::MAP_SHARED, memfd);
    touch_all(m, true);
    unsafe { libc::close(memfd) };
    expected.push((m, MappingKind::Memfd, Some("mmtrace-jit".into())));

    let shm = unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, libc::IPC_CREAT | 0o600) };
    assert!(shm >= 0);
    let s = unsafe { libc::shmat(shm, std::ptr::null(), 0) } as u64;
    unsafe { libc::shmctl(shm, libc::IPC_RMID, null_mut()) };
    touch_all(s, true);
    expected.push((s, MappingKind::SysvShm, Some("0x00000000".into())));

    // A perf ring buffer: a file the kernel made for itself, named by anon_inode.
    // perf_event_attr's first version (libc has no type for it): type PERF_TYPE_SOFTWARE,
    // size 64, config PERF_COUNT_SW_DUMMY.
    let mut attr = [0u64; 8];
    attr[0] = 1 | (64 << 32);
    attr[1] = 9;
    let perf =
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) } as i32;
    assert!(perf >= 0, "{}", std::io::Error::last_os_error());
    let k = map(libc::MAP_SHARED, perf);
    // A perf buffer cannot be moved or reprotected; madvise and munmap show its kind.
    sys(
        libc::SYS_madvise,
        k,
        PAGE as u64,
        libc::MADV_NORMAL as u64,
        0,
    );
    expected.push((k, MappingKind::KernelFile, Some("[perf_event]".into())));

    // The heap: a page the test adds to the break.
    let heap = unsafe { libc::sbrk(PAGE as libc::intptr_t) } as u64;
    let heap_page = heap & !(PAGE as u64 - 1);
    touch_all(heap_page, false);
    expected.push((heap_page, MappingKind::Heap, None));

    // The main thread's stack, as /proc says where it is: its lowest page is safe to touch.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let stack_line = maps.lines().find(|l| l.ends_with("[stack]")).unwrap();
    let stack = u64::from_str_radix(stack_line.split('-').next().unwrap(), 16).unwrap();
    touch_all(stack, false);
    expected.push((stack, MappingKind::Stack, None));

    // memfd_secret is off unless the kernel was booted with it (secretmem.enable).
    let secret = unsafe { libc::syscall(libc::SYS_memfd_secret, 0) } as i32;
    if secret >= 0 {
        assert_eq!(unsafe { libc::ftruncate(secret, PAGE as i64) }, 0);
        let sm = map(libc::MAP_SHARED, secret);
        touch_all(sm, true);
        unsafe { libc::close(secret) };
        expected.push((sm, MappingKind::Secretmem, None));
    } else {
        eprintln!(
            "memfd_secret: {}: secretmem not checked",
            std::io::Error::last_os_error()
        );
    }

    let unmapped = 0x10000u64;
    sys(
        libc::SYS_madvise,
        unmapped,
        PAGE as u64,
        libc::MADV_NORMAL as u64,
        0,
    );
    unmaps.push((unmapped, PAGE as u64));
    expected.push((unmapped, MappingKind::Unmapped, None));
    unmaps.push((k, PAGE as u64));
    for (p, len) in unmaps {
        sys(libc::SYS_munmap, p, len, 0, 0);
    }
    unsafe {
        libc::close(perf);
        libc::sbrk(-(PAGE as libc::intptr_t));
    }

    let got = events_of(&mut t, tid());
    drop(file);
    drop(dir);
    for (addr, kind, name) in &expected {
        let calls: Vec<&Event> = got
            .iter()
            .filter(|e| e.arg(e.def.args[0].name).map(|a| a.bits()) == Some(*addr))
            .collect();
        assert!(calls.len() >= 2, "{kind:?} at {addr:#x}: {got:#?}");
        for e in calls {
            let m = e.enrich.as_ref().and_then(|x| x.mapping.as_ref());
            let m = m.unwrap_or_else(|| panic!("{} on {kind:?} has no mapping", e.name()));
            let shown = m
                .path
                .as_ref()
                .or(m.name.as_ref())
                .map(|t| t.to_str_lossy());
            assert_eq!(
                (m.kind, shown.as_deref()),
                (*kind, name.as_deref()),
                "{} at {addr:#x}",
                e.name()
            );
            if *kind == MappingKind::Unmapped {
                assert_eq!((m.start, m.end, m.prot), (0, 0, 0), "nothing stale: {m:?}");
            } else {
                assert!(m.start <= *addr && *addr < m.end, "{m:?} holds {addr:#x}");
            }
        }
    }
}

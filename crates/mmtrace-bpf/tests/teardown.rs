//! The end of a process's teardown (exit_mmap) for real: a killed child's address space comes
//! back between the kill and the wait, only for processes in scope, and an exec's teardown of
//! the old address space is not reported. Needs root: see common::bpf_allowed.

mod common;

use common::trace_with;
use mmtrace_bpf::{Clock, Tracer};
use mmtrace_events::scope::Scope;
use mmtrace_events::Event;
use mmtrace_testkit::boottime_ns;

const MIB: usize = 1 << 20;

/// A forked child that touches `bytes` of anonymous memory, says so on a pipe, then waits to
/// be killed. Syscalls only: the test process has threads.
fn holder(bytes: usize) -> i32 {
    let mut ready = [0; 2];
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    match unsafe { libc::fork() } {
        0 => unsafe {
            mmtrace_testkit::touch_anon(bytes);
            libc::write(ready[1], b"r".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        },
        pid => {
            assert!(pid > 0);
            let mut b = 0u8;
            unsafe {
                libc::close(ready[1]);
                assert_eq!(libc::read(ready[0], (&raw mut b).cast(), 1), 1);
                libc::close(ready[0]);
            }
            pid
        }
    }
}

/// VmSize from /proc/PID/status, in bytes.
fn vm_size(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn teardowns(t: &mut Tracer) -> Vec<Event> {
    let mut got = Vec::new();
    t.drain(|e| {
        if e.name() == "exit_mmap" {
            got.push(e)
        }
    });
    got
}

fn filtered(t: &Tracer) -> u64 {
    t.filtered()
        .iter()
        .find(|(e, _)| e.name == "exit_mmap")
        .unwrap()
        .1
}

/// Whatever the order of the exit hook and the teardown (sched_process_exit comes before
/// exit_mm since 6.16, after it before), a tree-scoped process and a pid-scoped one are in
/// scope at their teardown; a process outside the scope gives no record and is counted.
#[test]
fn a_killed_process_is_torn_down_between_the_kill_and_the_wait() {
    for scope in ["tree", "pid"] {
        let victim = holder(256 * MIB);
        let bystander = holder(MIB);
        let Some(mut t) = trace_with("exit_mmap", |o| {
            o.scope = Scope::parse(&[&format!("{scope}={victim}")]).unwrap();
        }) else {
            unsafe {
                libc::kill(victim, libc::SIGKILL);
                libc::kill(bystander, libc::SIGKILL);
                libc::waitpid(victim, std::ptr::null_mut(), 0);
                libc::waitpid(bystander, std::ptr::null_mut(), 0);
            }
            return;
        };
        let clock = Clock::now();
        let size = vm_size(victim);
        assert!(size >= 256 * MIB as u64, "VmSize {size}");
        let killed = boottime_ns();
        assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
        assert_eq!(
            unsafe { libc::waitpid(victim, std::ptr::null_mut(), 0) },
            victim
        );
        let waited = boottime_ns();
        unsafe {
            libc::kill(bystander, libc::SIGKILL);
            libc::waitpid(bystander, std::ptr::null_mut(), 0);
        }
        let got = teardowns(&mut t);
        let pids: Vec<u32> = got.iter().map(|e| e.ctx.host_pid).collect();
        assert_eq!(pids, [victim as u32], "{scope}: one teardown, the victim's");
        let e = &got[0];
        assert_eq!(e.ctx.host_tid, victim as u32, "its only thread");
        assert_eq!(
            e.arg("vm_size").unwrap().bits(),
            size,
            "{scope}: the address space /proc showed"
        );
        // The test's clock offset and the tracer's, each read from two clocks in turn,
        // differ by the time between those reads.
        let slack = 100_000;
        let (after, before) = (clock.to_epoch(killed), clock.to_epoch(waited));
        assert!(
            e.ctx.timestamp + slack >= after && e.ctx.timestamp <= before + slack,
            "{scope}: teardown at {} not between the kill at {after} and the wait at {before}",
            e.ctx.timestamp
        );
        assert!(filtered(&t) >= 1, "{scope}: the bystander is counted");
    }
}

/// exec replaces the address space and tears the old one down, but the process lives on:
/// only its exit gives a record, for the new image.
#[test]
fn an_exec_is_not_a_teardown() {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let env = [std::ptr::null::<libc::c_char>()];
    let mut go = [0; 2];
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    let child = match unsafe { libc::fork() } {
        0 => unsafe {
            // Mapped, not touched: enough to tell the old address space's size from the new.
            libc::mmap(
                std::ptr::null_mut(),
                256 * MIB,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            libc::close(go[1]);
            let mut b = 0u8;
            libc::read(go[0], (&raw mut b).cast(), 1);
            libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr());
            libc::_exit(127)
        },
        pid => pid,
    };
    unsafe { libc::close(go[0]) };
    let Some(mut t) = trace_with("exit_mmap", |o| {
        o.scope = Scope::parse(&[&format!("pid={child}")]).unwrap();
    }) else {
        unsafe {
            libc::close(go[1]);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        return;
    };
    let old = vm_size(child);
    let mut status = 0;
    unsafe {
        libc::close(go[1]);
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "/bin/true ran: {status:#x}"
    );
    let got = teardowns(&mut t);
    assert_eq!(got.len(), 1, "the exit's teardown alone: {got:#?}");
    let new = got[0].arg("vm_size").unwrap().bits();
    assert!(
        new < old - 200 * MIB as u64,
        "/bin/true's {new}, not the old {old}"
    );
}

extern "C" fn park(_: *mut libc::c_void) -> *mut libc::c_void {
    loop {
        unsafe { libc::pause() };
    }
}

/// A process whose main thread exits first: its other thread tears the address space down
/// when the process is killed. Still the process's own teardown, and still in a tree scope,
/// which the main thread's exit must not have forgotten.
#[test]
fn a_teardown_by_a_later_thread_is_the_process_s() {
    let (mut ready, mut go) = ([0; 2], [0; 2]);
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    let victim = match unsafe { libc::fork() } {
        0 => unsafe {
            mmtrace_testkit::touch_anon(64 * MIB);
            let mut thread = 0;
            if libc::pthread_create(&mut thread, std::ptr::null(), park, std::ptr::null_mut()) != 0
            {
                libc::_exit(125);
            }
            libc::write(ready[1], b"r".as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(go[0], (&raw mut b).cast(), 1);
            // The main thread alone.
            libc::syscall(libc::SYS_exit, 0);
            libc::_exit(126)
        },
        pid => pid,
    };
    let mut b = 0u8;
    unsafe {
        libc::close(ready[1]);
        libc::close(go[0]);
        assert_eq!(libc::read(ready[0], (&raw mut b).cast(), 1), 1);
    }
    let Some(mut t) = trace_with("exit_mmap", |o| {
        o.scope = Scope::parse(&[&format!("tree={victim}")]).unwrap();
    }) else {
        unsafe {
            libc::kill(victim, libc::SIGKILL);
            libc::waitpid(victim, std::ptr::null_mut(), 0);
        }
        return;
    };
    let size = vm_size(victim);
    assert_eq!(unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) }, 1);
    // The main thread is a zombie once it has gone through its exit.
    let main = format!("/proc/{victim}/task/{victim}/stat");
    let zombie = || {
        std::fs::read_to_string(&main).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    for _ in 0..500 {
        if zombie() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(zombie(), "the main thread exited alone");
    assert!(teardowns(&mut t).is_empty(), "not torn down yet");
    unsafe {
        assert_eq!(libc::kill(victim, libc::SIGKILL), 0);
        assert_eq!(libc::waitpid(victim, std::ptr::null_mut(), 0), victim);
    }
    let got = teardowns(&mut t);
    assert_eq!(got.len(), 1, "{got:#?}");
    let e = &got[0];
    assert_eq!(e.ctx.host_pid, victim as u32);
    assert_ne!(
        e.ctx.host_tid, victim as u32,
        "torn down by the other thread"
    );
    assert_eq!(e.arg("vm_size").unwrap().bits(), size);
}

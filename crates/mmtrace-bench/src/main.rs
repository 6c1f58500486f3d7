//! mm-workload: times a tight loop of one syscall, the workload bench/run measures tracers with.

use std::io::Error;
use std::process::ExitCode;

const USAGE: &str = "usage: mm-workload munmap|mlock|getppid CALLS";

/// The warm-up is a tenth of the run, capped: enough to fault in code and settle caches
/// without adding much to the events a tracer must handle.
const WARMUP_MAX: u64 = 10_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, calls] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(calls) = calls.replace('_', "").parse::<u64>() else {
        eprintln!("mm-workload: CALLS must be a number\n{USAGE}");
        return ExitCode::from(2);
    };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let result = match kind.as_str() {
        "munmap" => {
            let hole = unmapped_page(page);
            run(calls, 1, || {
                check(unsafe { libc::munmap(hole, page) }, "munmap")
            })
        }
        "mlock" => {
            let resident = touched_page(page);
            run(calls, 2, || {
                check(unsafe { libc::mlock(resident, page) }, "mlock");
                check(unsafe { libc::munlock(resident, page) }, "munlock");
            })
        }
        "getppid" => run(calls, 1, || {
            unsafe { libc::getppid() };
        }),
        _ => {
            eprintln!("mm-workload: unknown KIND {kind:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some((warmup, elapsed_ns)) = result else {
        eprintln!(
            "mm-workload: CALLS must be a positive multiple of 2 for mlock, positive otherwise"
        );
        return ExitCode::from(2);
    };
    // bench/run counts the warm-up among the calls a tracer should have seen, hence warmup=.
    println!(
        "{kind} calls={calls} ns_per_call={:.1} pid={} warmup={warmup}",
        elapsed_ns as f64 / calls as f64,
        std::process::id()
    );
    ExitCode::SUCCESS
}

/// Runs `step`, which makes `per_step` syscalls, through a warm-up and then for exactly `calls`
/// syscalls; returns the warm-up's syscall count and the timed loop's nanoseconds.
fn run(calls: u64, per_step: u64, mut step: impl FnMut()) -> Option<(u64, u64)> {
    if calls == 0 || !calls.is_multiple_of(per_step) {
        return None;
    }
    let warmup = (calls / 10).min(WARMUP_MAX) / per_step * per_step;
    for _ in 0..warmup / per_step {
        step();
    }
    let start = monotonic_ns();
    for _ in 0..calls / per_step {
        step();
    }
    Some((warmup, monotonic_ns() - start))
}

/// An address whose page is certainly unmapped: the kernel picked it for a mapping we then
/// removed. Nothing maps memory while the loops run, so the hole stays empty and every munmap
/// takes the kernel's "nothing to unmap" path.
fn unmapped_page(page: usize) -> *mut libc::c_void {
    let addr = map(page, libc::PROT_NONE);
    check(unsafe { libc::munmap(addr, page) }, "munmap");
    addr
}

/// A private page that is already faulted in, so mlock only pins it and never allocates.
fn touched_page(page: usize) -> *mut libc::c_void {
    let addr = map(page, libc::PROT_READ | libc::PROT_WRITE);
    unsafe { addr.cast::<u8>().write_volatile(1) };
    addr
}

fn map(len: usize, prot: libc::c_int) -> *mut libc::c_void {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
    if addr == libc::MAP_FAILED {
        fail("mmap");
    }
    addr
}

/// A failing call would time an error path instead of the one being measured: stop at once.
fn check(ret: libc::c_int, what: &str) {
    if ret != 0 {
        fail(what);
    }
}

fn fail(what: &str) -> ! {
    eprintln!("mm-workload: {what}: {}", Error::last_os_error());
    std::process::exit(1);
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

//! mm-workload: times a tight loop of one syscall, the workload bench/run measures tracers with.

use std::io::Error;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};

const USAGE: &str =
    "usage: mm-workload munmap|mlock|mmap|getppid CALLS [--threads N] [--rate CALLS_PER_S]";

/// The warm-up is a tenth of the run, capped: enough to fault in code and settle caches
/// without adding much to the events a tracer must handle.
const WARMUP_MAX: u64 = 10_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, calls, flags) = match args.as_slice() {
        [kind, calls, flags @ ..] if flags.len() % 2 == 0 => (kind, calls, flags),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (mut threads, mut rate) = ("1", "0");
    for pair in flags.chunks(2) {
        match pair[0].as_str() {
            "--threads" => threads = &pair[1],
            "--rate" => rate = &pair[1],
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let number = |s: &str| s.replace('_', "").parse::<u64>();
    let (Ok(calls), Ok(threads), Ok(rate)) = (number(calls), number(threads), number(rate)) else {
        eprintln!("mm-workload: CALLS, N and CALLS_PER_S must be numbers\n{USAGE}");
        return ExitCode::from(2);
    };
    let Some(per_step) = per_step(kind) else {
        eprintln!("mm-workload: unknown KIND {kind:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    if calls == 0 || threads == 0 || !calls.is_multiple_of(per_step * threads) {
        eprintln!(
            "mm-workload: CALLS must be a positive multiple of N times {per_step} for {kind}"
        );
        return ExitCode::from(2);
    }
    let pace = Pace::new(rate, threads, per_step);
    let (warmup, elapsed_ns) = storm(kind, calls / threads, threads, per_step, pace);
    // ns_per_call is per thread: the time each caller waits for one call, which is what a
    // tracer adds to. bench/run counts the warm-up among the calls a tracer should have seen.
    println!(
        "{kind} calls={calls} ns_per_call={:.1} pid={} warmup={} threads={threads}",
        elapsed_ns as f64 * threads as f64 / calls as f64,
        std::process::id(),
        warmup * threads
    );
    ExitCode::SUCCESS
}

/// With --rate: each thread's timed loop is held to its share of CALLS_PER_S, checked every
/// `STEPS` steps, so a tracer's reader can be fed a steady stream rather than a storm.
#[derive(Clone, Copy)]
struct Pace {
    /// Nanoseconds per step of one thread; 0: as fast as it goes.
    step_ns: u64,
}

impl Pace {
    const STEPS: u64 = 256;

    fn new(rate: u64, threads: u64, per_step: u64) -> Pace {
        let step_ns = match rate {
            0 => 0,
            _ => 1_000_000_000 * threads * per_step / rate,
        };
        Pace { step_ns }
    }

    /// Sleeps until `done` steps are due, `start` being the loop's start.
    fn wait(self, start: u64, done: u64) {
        if self.step_ns == 0 || !done.is_multiple_of(Self::STEPS) {
            return;
        }
        let due = start + done * self.step_ns;
        let now = monotonic_ns();
        if due > now {
            std::thread::sleep(std::time::Duration::from_nanos(due - now));
        }
    }
}

/// Syscalls made by one step of each kind's loop.
fn per_step(kind: &str) -> Option<u64> {
    match kind {
        "munmap" | "getppid" => Some(1),
        "mlock" | "mmap" => Some(2),
        _ => None,
    }
}

/// One step of `kind`'s loop, with the memory it works on set up first.
fn stepper(kind: &str, page: usize) -> Box<dyn FnMut()> {
    match kind {
        "munmap" => {
            let hole = unmapped_page(page);
            Box::new(move || check(unsafe { libc::munmap(hole, page) }, "munmap"))
        }
        "mlock" => {
            let resident = touched_page(page);
            Box::new(move || {
                check(unsafe { libc::mlock(resident, page) }, "mlock");
                check(unsafe { libc::munlock(resident, page) }, "munlock");
            })
        }
        "mmap" => Box::new(move || {
            let addr = map(page, libc::PROT_READ | libc::PROT_WRITE);
            check(unsafe { libc::munmap(addr, page) }, "munmap");
        }),
        "getppid" => Box::new(|| {
            unsafe { libc::getppid() };
        }),
        _ => unreachable!("per_step accepts only the kinds above"),
    }
}

/// Runs `kind` on `threads` threads of `calls` syscalls each, after a warm-up; returns one
/// thread's warm-up syscalls and the nanoseconds from the first thread's start of the timed
/// loop to the last one's end.
fn storm(kind: &str, calls: u64, threads: u64, per_step: u64, pace: Pace) -> (u64, u64) {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let warmup = (calls / 10).min(WARMUP_MAX) / per_step * per_step;
    // Every thread warms up before any is timed, so the threads storm at the same time.
    let ready = Arc::new(Barrier::new(threads as usize));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (kind, ready) = (kind.to_owned(), ready.clone());
            std::thread::spawn(move || {
                let mut step = stepper(&kind, page);
                // Paced too: a burst of every process's warm-up would be a storm of its own.
                let warming = monotonic_ns();
                for done in 0..warmup / per_step {
                    pace.wait(warming, done);
                    step();
                }
                ready.wait();
                // Each thread reads the clock itself: a waiting main thread would be scheduled
                // late on a machine whose cores the workers fill.
                let start = monotonic_ns();
                for done in 0..calls / per_step {
                    pace.wait(start, done);
                    step();
                }
                (start, monotonic_ns())
            })
        })
        .collect();
    let spans: Vec<(u64, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (warmup, end - start)
}

/// An address whose page is certainly unmapped: the kernel picked it for a mapping we then
/// removed. Only the mmap kind maps memory while the loops run, and never with this one, so
/// the hole stays empty and every munmap takes the kernel's "nothing to unmap" path.
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

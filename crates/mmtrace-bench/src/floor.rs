//! mm-floor: the floor and the limit of an enter+exit tracer, for bench/run: programs attached
//! to the enter and exit tracepoints of the syscalls named, until SIGINT or SIGTERM. The floor
//! does nothing; the limit (`--limit`) times each call and sends a record to a ring it reads;
//! `--limit-count` times each call and counts it in a per-CPU histogram, as `serve` does;
//! `--raw` is the floor of a raw_syscalls design, empty programs on every syscall.

use std::os::fd::AsRawFd;
use std::process::ExitCode;

use aya::maps::RingBuf;
use aya::programs::{Program, ProgramError, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};

/// Regenerated from bpf/floor.bpf.c by scripts/build-bpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/floor.bpf.o");

const USAGE: &str = "usage: mm-floor [--limit | --limit-count] SYSCALL... | mm-floor --raw";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("--limit") => Mode::Limit,
        Some("--limit-count") => Mode::Count,
        Some("--raw") => Mode::Raw,
        _ => Mode::Floor,
    };
    if mode != Mode::Floor {
        args.remove(0);
    }
    if (args.is_empty() != (mode == Mode::Raw)) || args.iter().any(|a| a.starts_with('-')) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match run(&args, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mm-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Floor,
    Limit,
    Count,
    Raw,
}

fn run(syscalls: &[String], mode: Mode) -> Result<(), String> {
    mmtrace_bpf::check_privileges().map_err(|e| e.to_string())?;
    mmtrace_bpf::ensure_tracefs().map_err(|e| e.to_string())?;
    // Blocked before anything is attached, so the signal that stops us is waited for, not fatal.
    let stop = unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // aya 0.14 has no type for task storage, which the kernel loads all the same.
    let mut bpf = EbpfLoader::new()
        .allow_unsupported_maps()
        .load(OBJECT)
        .map_err(|e| format!("loading: {e}"))?;
    if mode == Mode::Raw {
        for (program, hook) in [("raw_enter", "sys_enter"), ("raw_exit", "sys_exit")] {
            let prog: &mut RawTracePoint = program_of(&mut bpf, program)?;
            prog.load().map_err(|e| format!("{program}: {e}"))?;
            prog.attach(hook)
                .map_err(|e| format!("attaching {hook}: {e}"))?;
        }
    }
    let programs: &[(&str, &str)] = match mode {
        Mode::Limit => &[("limit_enter", "sys_enter"), ("limit_exit", "sys_exit")],
        Mode::Count => &[("limit_enter", "sys_enter"), ("count_exit", "sys_exit")],
        Mode::Floor => &[("floor_enter", "sys_enter"), ("floor_exit", "sys_exit")],
        Mode::Raw => &[],
    };
    for &(program, hook) in programs {
        let prog: &mut TracePoint = program_of(&mut bpf, program)?;
        prog.load().map_err(|e| format!("{program}: {e}"))?;
        for name in syscalls {
            prog.attach("syscalls", &format!("{hook}_{name}"))
                .map_err(|e| format!("attaching {hook}_{name}: {e}"))?;
        }
    }
    eprintln!("mm-floor: tracing");
    if mode != Mode::Limit {
        let mut sig = 0;
        unsafe { libc::sigwait(&stop, &mut sig) };
        if mode == Mode::Count {
            let histogram = bpf
                .map("histogram")
                .and_then(|map| aya::maps::PerCpuArray::<_, [u64; 64]>::try_from(map).ok())
                .and_then(|h| h.get(&0, 0).ok())
                .ok_or("the histogram is missing")?;
            let counted: u64 = histogram.iter().flatten().sum();
            eprintln!("mm-floor: {counted} records, 0 lost");
        }
        return Ok(());
    }
    let mut ring = RingBuf::try_from(bpf.take_map("ring").ok_or("the ring is missing")?)
        .map_err(|e| format!("ring: {e}"))?;
    let mut records = 0u64;
    let no_wait = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // The programs never wake the reader (a wakeup per record would cost more than the rest of
    // the limit together): it looks every millisecond.
    while unsafe { libc::sigtimedwait(&stop, std::ptr::null_mut(), &no_wait) } < 0 {
        records += drain(&mut ring);
        let mut poll = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut poll, 1, 1) };
    }
    records += drain(&mut ring);
    let lost: u64 = bpf
        .map("lost")
        .and_then(|map| aya::maps::Array::<_, u64>::try_from(map).ok())
        .and_then(|lost| lost.get(&0, 0).ok())
        .ok_or("the lost count is missing")?;
    eprintln!("mm-floor: {records} records, {lost} lost");
    Ok(())
}

/// The object's program `name`, as the kind of program it is.
fn program_of<'a, P>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    bpf.program_mut(name)
        .ok_or(format!("{name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// Reads every record waiting in `ring`, as a tracer's reader would before formatting it;
/// returns how many.
fn drain(ring: &mut RingBuf<aya::maps::MapData>) -> u64 {
    let mut records = 0;
    while let Some(record) = ring.next() {
        std::hint::black_box(&*record);
        records += 1;
    }
    records
}

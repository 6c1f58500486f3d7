//! mm-floor: the floor of an enter+exit tracer, for bench/run: empty programs attached to the
//! enter and exit tracepoints of the syscalls named, until SIGINT or SIGTERM.

use std::process::ExitCode;

use aya::programs::TracePoint;
use aya::Ebpf;

/// Regenerated from bpf/floor.bpf.c by scripts/build-bpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/floor.bpf.o");

fn main() -> ExitCode {
    let syscalls: Vec<String> = std::env::args().skip(1).collect();
    if syscalls.is_empty() {
        eprintln!("usage: mm-floor SYSCALL...");
        return ExitCode::from(2);
    }
    match run(&syscalls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mm-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(syscalls: &[String]) -> Result<(), String> {
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
    let mut bpf = Ebpf::load(OBJECT).map_err(|e| format!("loading: {e}"))?;
    for (program, hook) in [("floor_enter", "sys_enter"), ("floor_exit", "sys_exit")] {
        let prog: &mut TracePoint = bpf
            .program_mut(program)
            .ok_or(format!("{program} missing from the object"))?
            .try_into()
            .map_err(|e| format!("{program}: {e}"))?;
        prog.load().map_err(|e| format!("{program}: {e}"))?;
        for name in syscalls {
            prog.attach("syscalls", &format!("{hook}_{name}"))
                .map_err(|e| format!("attaching {hook}_{name}: {e}"))?;
        }
    }
    eprintln!("mm-floor: tracing");
    let mut sig = 0;
    unsafe { libc::sigwait(&stop, &mut sig) };
    Ok(())
}

//! Leaving at once. Closing a tracepoint's link waits for an RCU grace period before the
//! program comes off, then for as long again to remove the kernel's probe, under a mutex all
//! tracepoints share: the 44 links of all events take 1.5-3 s to close, however many threads
//! close them, and an exiting process closes its descriptors itself before its parent can reap
//! it, so exiting without closing them takes as long. mmtrace instead leaves them to a child
//! that closes them once mmtrace has exited, each on a thread of its own so that their first
//! waits overlap: the shell gets its prompt and status back at once, the programs are off
//! their hooks within about one grace period, and the probes' removal goes on in the
//! background.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mmtrace_bpf::Tracer;

/// Hands the tracer's hooks to a child that detaches them after this process has exited;
/// without a child, detaches them here.
pub fn detach_after_exit(tracer: Tracer) {
    let Ok((wait_end, exit_end)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) else {
        return tracer.detach();
    };
    // Listed before the fork. The child allocates only to start detach's threads: glibc's
    // fork takes malloc's locks around it, so none is left held in the child by a thread of
    // this process, and detach starts its threads without reading the environment.
    let others = non_bpf_fds(&[wait_end.as_raw_fd(), exit_end.as_raw_fd()]);
    // SAFETY: the child closes descriptors, reads, detaches (closing more on its own threads)
    // and exits.
    match unsafe { libc::fork() } {
        0 => {
            drop(exit_end);
            for &fd in &others {
                // SAFETY: the child owns its copies of the descriptors and uses none of these.
                unsafe { libc::close(fd) };
            }
            let _ = rustix::thread::set_name(c"mmtrace-detach");
            // End of file once mmtrace has exited and given up its references to the links: if
            // it still held one when the child closed its own, mmtrace would do the slow part.
            let _ = rustix::io::read(&wait_end, &mut [0u8]);
            tracer.detach();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        -1 => tracer.detach(),
        _ => {
            // Closed by this process's exit, which is what the child waits for.
            std::mem::forget::<OwnedFd>(exit_end);
        }
    }
}

/// Every open descriptor but the BPF objects and `keep`: the child must not hold mmtrace's
/// output, its terminal, or a pipe whose reader waits for the end.
fn non_bpf_fds(keep: &[RawFd]) -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.into_iter()
        .filter(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            let bpf = target
                .to_str()
                .is_some_and(|t| t.starts_with("anon_inode:bpf") || t == "anon_inode:[perf_event]");
            // The directory's own descriptor, closed by now, reads as nothing.
            !bpf && !keep.contains(fd) && !target.as_os_str().is_empty()
        })
        .collect()
}

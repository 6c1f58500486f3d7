//! What must hold before loading: privileges, kernel BTF, a mounted tracefs, the syscall itself.

use std::path::Path;

use mmtrace_events::catalog::Source;
use mmtrace_events::EventDef;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("mmtrace needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load BPF programs: run it with sudo")]
    NotPrivileged,
    #[error("kernel.perf_event_paranoid is {0}, above mainline's highest (2), as Debian's and Ubuntu's kernels set it: there, attaching to tracepoints needs CAP_SYS_ADMIN as well as CAP_BPF and CAP_PERFMON; run it as root with every capability, or set 'sysctl kernel.perf_event_paranoid=2'")]
    ParanoidPerf(i32),
    #[error("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): mmtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}): mount it with 'mount -t tracefs nodev /sys/kernel/tracing'")]
    Tracefs(std::io::Error),
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_privileges() -> Result<(), SystemError> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if !(has(CAP_BPF) && has(CAP_PERFMON)) {
        return Err(SystemError::NotPrivileged);
    }
    // Debian's patch (CONFIG_SECURITY_PERF_EVENTS_RESTRICT) makes values above 2 refuse
    // perf_event_open, through which tracepoints are attached, to all but CAP_SYS_ADMIN.
    match perf_event_paranoid() {
        Some(level) if level > 2 => Err(SystemError::ParanoidPerf(level)),
        _ => Ok(()),
    }
}

fn perf_event_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn check_btf() -> Result<(), SystemError> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Ok(())
    } else {
        Err(SystemError::NoBtf)
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it where the system has not: tracepoint ids are read from it.
pub fn ensure_tracefs() -> Result<&'static Path, SystemError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(Path::new(root));
        }
    }
    rustix::mount::mount(
        "nodev",
        TRACEFS,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| SystemError::Tracefs(e.into()))?;
    Ok(Path::new(TRACEFS))
}

/// Whether the running kernel has this event's tracepoints.
pub fn event_available(tracefs: &Path, event: &EventDef) -> bool {
    let events = tracefs.join("events");
    match event.source {
        Source::Syscall { .. } => events
            .join("syscalls")
            .join(format!("sys_enter_{}", event.name))
            .is_dir(),
        Source::Tracepoint { category, name, .. } => events.join(category).join(name).is_dir(),
    }
}

/// The highest process id plus one, which bounds the tracked-process bitmap.
pub fn pid_max() -> u32 {
    // The kernel's own limit for 64-bit machines, should /proc not say.
    const PID_MAX_LIMIT: u32 = 1 << 22;
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// The inode of the kernel's initial mount namespace, 0 if it cannot be told. Read from
/// kthreadd (pid 2), whose namespaces are the kernel's own: init's may be unreadable even to
/// root, as on our machines. In a pid namespace of its own, pid 2 is no kernel thread.
pub fn initial_mnt_ns() -> u32 {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let kthread = std::fs::read_to_string("/proc/2/stat")
        .ok()
        .and_then(|stat| {
            // The flags are the sixth field after the command's closing parenthesis.
            let flags: u64 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(6)?
                .parse()
                .ok()?;
            Some(flags & PF_KTHREAD != 0)
        });
    if kthread != Some(true) {
        return 0;
    }
    rustix::fs::stat("/proc/2/ns/mnt").map_or(0, |s| s.st_ino as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmtrace_events::by_name;

    /// A kernel without mseal (before 6.10) or without the oom tracepoints: its tracefs simply
    /// lacks their directories, and those events alone are reported unavailable.
    #[test]
    fn availability_follows_tracefs() {
        let root = std::env::temp_dir().join(format!("mmtrace-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("events/syscalls/sys_enter_munmap")).unwrap();
        std::fs::create_dir_all(root.join("events/oom/mark_victim")).unwrap();
        let has = |name| event_available(&root, by_name(name).unwrap());
        assert!(has("munmap"));
        assert!(!has("mseal"));
        assert!(has("oom_mark_victim"));
        assert!(!has("oom_skip_task_reaping"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}

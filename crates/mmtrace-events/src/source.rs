//! Where an event's records come from: a syscall's tracepoints, by its number on each
//! architecture, or one kernel tracepoint. Apart from the catalog, so that the generated
//! syscall numbers (`crate::syscalls`) can be sources without importing the catalog.

#[derive(Debug)]
pub enum Source {
    /// A syscall, hooked on its `syscalls:sys_enter_*` and `sys_exit_*` tracepoints, with its
    /// number on each architecture (`crate::syscalls`, generated from Linux's headers).
    Syscall { x86_64: u16, aarch64: u16 },
    /// A kernel event, hooked on one tracepoint by the named BPF program; its id is above
    /// every syscall number, and the kernel side defines the same id (ID_* in the C).
    Tracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
    },
}

impl Source {
    /// A syscall's number on the architecture mmtrace is built for: what the kernel's
    /// sys_enter and sys_exit tracepoints carry as `nr`, so the id of its records.
    pub const fn nr(&self) -> u16 {
        match self {
            #[cfg(target_arch = "aarch64")]
            Source::Syscall { aarch64, .. } => *aarch64,
            #[cfg(not(target_arch = "aarch64"))]
            Source::Syscall { x86_64, .. } => *x86_64,
            Source::Tracepoint { .. } => panic!("a tracepoint has no syscall number"),
        }
    }
}

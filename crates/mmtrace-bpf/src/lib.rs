//! mmtrace's kernel side and transport: the embedded BPF object, the checks before loading it,
//! the loader that attaches only the selected events' hooks, and the ring-buffer reader.

mod error;
pub mod features;
pub mod metrics;
mod pod;
mod record;
mod scope;
mod system;
mod tracer;

pub use error::Error;
pub use mmtrace_abi as abi;
pub use record::{parse_record, Clock, Record};
pub use scope::{all_cgroups, cgroup2_root, cgroups, ScopeError};
pub use system::{check_btf, check_privileges, ensure_tracefs, event_available, SystemError};
pub use tracer::{Options, Tracer, Unavailable};

/// The compiled kernel side for the target's architecture, regenerated from bpf/mmtrace.bpf.c
/// by scripts/build-bpf: the objects differ in the registers a syscall's arguments are read
/// from, and the records carry the architecture's own syscall numbers (the catalog's ids).
#[cfg(target_arch = "x86_64")]
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/mmtrace.x86_64.bpf.o");
#[cfg(target_arch = "aarch64")]
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/mmtrace.aarch64.bpf.o");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("mmtrace's kernel side is built for x86_64 and aarch64 only");

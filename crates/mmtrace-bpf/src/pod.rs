//! The interface header's structures as aya takes them: configuration, map keys and values.

use mmtrace_abi as abi;

/// A structure of bpf/mmtrace.h as the kernel side's configuration or a map's key or value:
/// aya takes those as `Pod`, which the generated types, from another crate, cannot be here.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct Plain<T>(pub(crate) T);
// SAFETY: each is integers and arrays of them, with no implicit padding: bindgen makes every
// padding byte a field (--explicit-padding in scripts/build-bpf).
unsafe impl aya::Pod for Plain<abi::config> {}
unsafe impl aya::Pod for Plain<abi::scope_key> {}
unsafe impl aya::Pod for Plain<abi::exe_key> {}
unsafe impl aya::Pod for Plain<abi::filter> {}
unsafe impl aya::Pod for Plain<abi::m_event> {}
unsafe impl aya::Pod for Plain<abi::m_global> {}
unsafe impl aya::Pod for Plain<abi::m_cgroup_key> {}

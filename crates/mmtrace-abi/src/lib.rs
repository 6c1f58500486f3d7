//! Everything that crosses the boundary between mmtrace's kernel side and user space: the
//! records and their flags, the kinds and ids they carry, the layouts of the maps user space
//! fills, and the configuration. Generated from `crates/mmtrace-bpf/bpf/mmtrace.h` by
//! `scripts/build-bpf` (bindgen) into `bindings.rs`, which is committed and which CI
//! regenerates and compares, so each layout and constant is written once, in the header.
//!
//! A crate of its own, with no dependencies, because both sides of the crate graph need it:
//! `mmtrace-events` (the mapping kinds, the extras bits, the kernel events' ids) and
//! `mmtrace-bpf` (everything else), which depends on `mmtrace-events`.

#[rustfmt::skip]
#[allow(non_camel_case_types, non_upper_case_globals, clippy::all)]
mod bindings;

pub use bindings::*;

//! Per-event cost of the reader without the kernel: ring-buffer bytes to Event to an output
//! line, for the record a munmap storm produces. End-to-end runs on a shared two-core machine
//! vary by tens of percent; this isolates the user-space half to a few.
//!
//! `cargo run --release -p mmtrace --example format_bench [-- EVENTS]`

use std::time::Instant;

use mmtrace_bpf::abi::{ext, EXT_CALLER, E_LOCKED, E_UNLOCKED, E_VMA};
use mmtrace_bpf::{parse_record, Clock, Record};

// The outputs live in the binary crate: borrow the module as it is.
#[allow(dead_code)]
#[path = "../src/output/mod.rs"]
mod output;
// ... and the in-band lines the outputs write.
#[allow(dead_code)]
#[path = "../src/inband.rs"]
mod inband;
// ... and the kernel's log they read OOM kills' limits from.
#[allow(dead_code)]
#[path = "../src/kmsg.rs"]
mod kmsg;
// ... and the containers they name.
#[allow(dead_code)]
#[path = "../src/containers/mod.rs"]
mod containers;
// ... and the formatting of sizes and durations.
#[allow(dead_code)]
#[path = "../src/units.rs"]
mod units;

/// What the kernel side sends for a munmap of an unmapped page with lock accounting: a
/// record, then the caller-side prefix of `struct ext` (locked memory and mapping).
fn munmap_record() -> Vec<u8> {
    let mut record = Record {
        ts: 1_000_000_000,
        duration: 451,
        ret: 0,
        cgroup_id: 1,
        thread_start: 900_000_000,
        leader_start: 800_000_000,
        parent_start: 700_000_000,
        pid: 6008,
        tid: 6009,
        ppid: 5904,
        ns_pid: 6008,
        ns_tid: 6009,
        ns_ppid: 5904,
        mnt_ns: 4026531832,
        pid_ns: 4026531836,
        id: 11,
        ..Record::default()
    };
    record.args[..2].copy_from_slice(&[0x7fb7_4c04_7000, 4096]);
    record.comm[..11].copy_from_slice(b"mm-workload");
    let mut ext = ext {
        flags: E_LOCKED | E_VMA | E_UNLOCKED,
        ..ext::default()
    };
    ext.cap_ipc_lock = 1;
    ext.memlock_cur = 8_388_608;
    ext.vma_start = 0x7fb7_4c04_7000;
    ext.vma_end = 0x7fb7_4c04_8000;
    let mut bytes = bytes_of(&record).to_vec();
    // The prefix the kernel side sends for caller-side extras: up to the target's fields.
    bytes.extend_from_slice(&bytes_of(&ext)[..EXT_CALLER as usize]);
    bytes
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: only called with repr(C) integer structs without padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(2_000_000), |n| n.parse())?;
    let bytes = munmap_record();
    let clock = Clock::now();
    for format in ["json", "table"] {
        let (mut sink, _) =
            output::open(&output::Outputs::parse(&[format!("{format}:/dev/null")])?)?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for i in 0..events {
                let event = parse_record(&bytes, &clock, false).expect("a munmap record");
                sink.event(&event)?;
                // As the reader does after each batch.
                if i % 4096 == 4095 {
                    sink.flush()?;
                }
            }
            sink.flush()?;
            best = best.min(start.elapsed().as_nanos() as f64 / events as f64);
        }
        println!("{format}: {best:.0} ns/event");
    }
    Ok(())
}

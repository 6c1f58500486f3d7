//! The metrics-only path (`mmtrace serve`): what the kernel side counts in its per-CPU maps
//! instead of sending records, and their reading, summed over the CPUs, at each scrape.

use std::collections::BTreeSet;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::Ebpf;
use mmtrace_abi as abi;
use mmtrace_events::catalog::Role;
use mmtrace_events::EventDef;

use crate::error::Error;
use crate::pod::Plain;

pub use abi::{M_BUCKETS as BUCKETS, M_DETECTIONS as DETECTIONS, M_RESULTS as RESULTS};

/// The result index that holds every errno too large for one of its own.
pub const OTHER_RESULT: usize = RESULTS as usize - 1;

/// The part an event plays in the counts (`enum metric_role`).
pub(crate) fn role(def: &EventDef) -> abi::metric_role {
    match def.role {
        Role::Maps => abi::R_MAPS,
        Role::Protects => abi::R_PROTECTS,
        Role::Unmaps => abi::R_UNMAPS,
        Role::Remaps => abi::R_REMAPS,
        Role::Locks => abi::R_LOCKS,
        Role::Unlocks => abi::R_UNLOCKS,
        Role::LocksAll => abi::R_LOCKS_ALL,
        Role::Signals { by_pidfd: false } => abi::R_SIGNALS_PID,
        Role::Signals { by_pidfd: true } => abi::R_SIGNALS_PIDFD,
        Role::Releases => abi::R_RELEASES,
        _ => abi::R_OTHER,
    }
}

/// What the kernel side must gather for the counts of an event's role: a pidfd's process for
/// kills and releases, and the target's memory around a release for the bytes it freed.
/// Nothing else: each extra costs every call.
pub(crate) fn extras(role: abi::metric_role) -> u16 {
    match role {
        abi::R_SIGNALS_PIDFD => abi::X_TARGET_ARG0,
        abi::R_RELEASES => abi::X_TARGET_ARG0 | abi::X_RSS,
        _ => 0,
    }
}

/// Whether an event's counts need its entry hook even without durations: a kill is timed to
/// its victim's memory from the call's entry, and a release's freed bytes need the target's
/// memory before it.
pub(crate) fn needs_entry(role: abi::metric_role) -> bool {
    matches!(
        role,
        abi::R_SIGNALS_PID | abi::R_SIGNALS_PIDFD | abi::R_RELEASES
    )
}

/// A log2 histogram of nanoseconds: bucket b counts values of at most 2^b ns (and over
/// 2^(b-1)), bucket 0 those of 0 and 1 ns; the last counts everything over 2^(BUCKETS-2) ns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log2Histogram {
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

impl Log2Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One event's counts.
#[derive(Debug, Clone)]
pub struct EventCounts {
    pub event: &'static EventDef,
    /// Calls by result index: 0 is success, n the errno n, OTHER_RESULT any larger one.
    pub calls: Vec<u64>,
    /// Kernel events have no duration: theirs stays empty.
    pub duration: Log2Histogram,
}

/// Calls from one cgroup, of one event, with one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupCount {
    pub cgroup_id: u64,
    pub event: &'static EventDef,
    pub result: usize,
    pub calls: u64,
}

/// Everything counted so far, summed over the CPUs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub events: Vec<EventCounts>,
    pub cgroups: Vec<CgroupCount>,
    /// Bytes by `enum m_bytes`: mapped, unmapped, locked, unlocked, freed by process_mrelease.
    pub bytes: [u64; abi::M_NBYTES as usize],
    /// Kills by `enum m_kill`: SIGKILLs sent by kill or pidfd_send_signal, the OOM killer's.
    pub kills: [u64; abi::M_NKILLS as usize],
    /// Calls that raised each detection the kernel counts, indexed by `abi::m_detection`.
    pub detections: [u64; DETECTIONS as usize],
    pub cgroup_overflow: u64,
    /// From each kill to its victim's memory being back.
    pub back: Log2Histogram,
}

fn fail(name: &str, e: aya::maps::MapError) -> Error {
    Error::Metrics(format!("{name}: {e}"))
}

fn missing(name: &str) -> Error {
    Error::Load(format!("map {name} is missing from the BPF object"))
}

fn map<'a>(bpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map, Error> {
    bpf.map(name).ok_or_else(|| missing(name))
}

type CgroupCounts<'a> = PerCpuHashMap<&'a MapData, Plain<abi::m_cgroup_key>, u64>;

fn cgroup_counts(bpf: &Ebpf) -> Result<CgroupCounts<'_>, Error> {
    PerCpuHashMap::try_from(map(bpf, "m_cgroups")?).map_err(|e| fail("m_cgroups", e))
}

/// Reads the counts; `slots` are the attached events in the order of their slots.
pub(crate) fn read(bpf: &Ebpf, slots: &[&'static EventDef]) -> Result<Snapshot, Error> {
    let map = |name: &str| map(bpf, name);
    let events: PerCpuArray<&MapData, Plain<abi::m_event>> =
        PerCpuArray::try_from(map("m_events")?).map_err(|e| fail("m_events", e))?;
    let global: PerCpuArray<&MapData, Plain<abi::m_global>> =
        PerCpuArray::try_from(map("m_global")?).map_err(|e| fail("m_global", e))?;
    let cgroups = cgroup_counts(bpf)?;

    let mut snap = Snapshot::default();
    for (slot, &event) in slots.iter().enumerate() {
        let per_cpu = events
            .get(&(slot as u32), 0)
            .map_err(|e| fail("m_events", e))?;
        let mut counts = EventCounts {
            event,
            calls: vec![0; RESULTS as usize],
            duration: Log2Histogram {
                buckets: vec![0; BUCKETS as usize],
                sum_ns: 0,
            },
        };
        for Plain(m) in per_cpu.iter() {
            add(&mut counts.calls, &m.calls);
            add(&mut counts.duration.buckets, &m.duration);
            counts.duration.sum_ns += m.duration_sum;
        }
        snap.events.push(counts);
    }
    let per_cpu = global.get(&0, 0).map_err(|e| fail("m_global", e))?;
    snap.back.buckets = vec![0; BUCKETS as usize];
    for Plain(g) in per_cpu.iter() {
        add(&mut snap.bytes, &g.bytes);
        add(&mut snap.kills, &g.kills);
        add(&mut snap.detections, &g.detections);
        add(&mut snap.back.buckets, &g.back);
        snap.back.sum_ns += g.back_sum;
        snap.cgroup_overflow += g.cgroup_overflow;
    }
    for entry in cgroups.iter() {
        let (Plain(k), per_cpu) = entry.map_err(|e| fail("m_cgroups", e))?;
        let Some(&event) = slots.get(k.slot as usize) else {
            continue;
        };
        snap.cgroups.push(CgroupCount {
            cgroup_id: k.cgroup_id,
            event,
            result: k.result as usize,
            calls: per_cpu.iter().sum(),
        });
    }
    Ok(snap)
}

/// The cgroups counted so far, without their counts: one syscall a series, not a copy of each
/// series' per-CPU values.
pub(crate) fn cgroup_ids(bpf: &Ebpf) -> Result<BTreeSet<u64>, Error> {
    cgroup_counts(bpf)?
        .keys()
        .map(|k| {
            k.map(|Plain(k)| k.cgroup_id)
                .map_err(|e| fail("m_cgroups", e))
        })
        .collect()
}

/// Drops every series of the cgroups in `gone`, so that the table has room for new ones.
pub(crate) fn forget(bpf: &mut Ebpf, gone: &BTreeSet<u64>) -> Result<(), Error> {
    let keys: Vec<Plain<abi::m_cgroup_key>> = cgroup_counts(bpf)?
        .keys()
        .filter_map(Result::ok)
        .filter(|Plain(k)| gone.contains(&k.cgroup_id))
        .collect();
    let map = bpf
        .map_mut("m_cgroups")
        .ok_or_else(|| missing("m_cgroups"))?;
    let mut cgroups: PerCpuHashMap<&mut MapData, Plain<abi::m_cgroup_key>, u64> =
        PerCpuHashMap::try_from(map).map_err(|e| fail("m_cgroups", e))?;
    for k in keys {
        cgroups.remove(&k).map_err(|e| fail("m_cgroups", e))?;
    }
    Ok(())
}

fn add(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

//! The counts of a metrics trace as Prometheus metrics: one collector over a snapshot taken
//! at the scrape, encoded in Prometheus's text format by prometheus-client.

use std::collections::BTreeMap;

use mmtrace_bpf::abi;
use mmtrace_bpf::metrics::{Log2Histogram, Snapshot, OTHER_RESULT};
use mmtrace_events::decode::errno_name;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::analyze::detections::DETECTIONS;
use crate::containers;

/// Containers with series of their own; the calls of others are counted as overflow.
pub const MAX_CONTAINERS: usize = 1024;

/// The smallest bucket exported: the kernel's below it (at most 128 ns) are folded into it.
const FIRST_BUCKET: usize = 8;

type Labels = Vec<(&'static str, String)>;

/// One scrape's worth of metrics, resolved to labels (container names come from the
/// runtimes, asked on this thread).
#[derive(Debug, Default)]
struct Exposition {
    calls: Vec<(Labels, u64)>,
    container_calls: Vec<(Labels, u64)>,
    durations: Vec<(Labels, Log2Histogram)>,
    bytes: [u64; abi::M_NBYTES as usize],
    kills: [u64; abi::M_NKILLS as usize],
    back: Log2Histogram,
    detections: [u64; abi::M_DETECTIONS as usize],
    lost: Vec<(Labels, u64)>,
    overflow: u64,
}

/// The result label: `ok`, the errno's name, or `other` past the errnos the kernel side
/// tells apart.
fn result(index: usize) -> String {
    match index {
        0 => "ok".into(),
        OTHER_RESULT => "other".into(),
        n => errno_name(n as u64).map_or_else(|| format!("E{n}"), str::to_string),
    }
}

/// Prometheus's text format of `snap`, with the events lost per event.
pub fn render(snap: &Snapshot, lost: &[(&'static mmtrace_events::EventDef, u64)]) -> String {
    let mut x = Exposition {
        bytes: snap.bytes,
        kills: snap.kills,
        back: snap.back.clone(),
        detections: snap.detections,
        overflow: snap.cgroup_overflow,
        ..Exposition::default()
    };
    for e in &snap.events {
        let event = || ("event", e.event.name.to_string());
        for (i, &n) in e.calls.iter().enumerate().filter(|(_, &n)| n > 0) {
            x.calls.push((vec![event(), ("result", result(i))], n));
        }
        // Kernel events are instants: no duration.
        if e.duration.count() > 0 {
            x.durations.push((vec![event()], e.duration.clone()));
        }
    }
    let mut by_container: BTreeMap<(String, &'static str, usize), (String, u64)> = BTreeMap::new();
    let mut shown: Vec<String> = Vec::new();
    for c in &snap.cgroups {
        let Some(container) = containers::of_cgroup(c.cgroup_id) else {
            continue;
        };
        if !shown.contains(&container.id) {
            if shown.len() >= MAX_CONTAINERS {
                x.overflow += c.calls;
                continue;
            }
            shown.push(container.id.clone());
        }
        let name = container.info.name.clone().unwrap_or_default();
        // A container's nested cgroups add up in its series.
        by_container
            .entry((container.id.clone(), c.event.name, c.result))
            .or_insert((name, 0))
            .1 += c.calls;
    }
    for ((id, event, res), (name, n)) in by_container {
        let labels = vec![
            ("container_id", id),
            (
                "container_name",
                mmtrace_events::text::escape(&name).into_owned(),
            ),
            ("event", event.to_string()),
            ("result", result(res)),
        ];
        x.container_calls.push((labels, n));
    }
    x.lost = lost
        .iter()
        .map(|&(e, n)| (vec![("event", e.name.to_string())], n))
        .collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(x));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, n) in series {
        ConstCounter::new(*n).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    n: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(n).encode(m)
}

/// A kernel log2 histogram of nanoseconds as a Prometheus one in seconds.
fn histogram(
    m: &mut prometheus_client::encoding::MetricEncoder,
    h: &Log2Histogram,
) -> Result<(), std::fmt::Error> {
    let last = h.buckets.len() - 1;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(last - FIRST_BUCKET + 1);
    buckets.push((
        (1u64 << FIRST_BUCKET) as f64 / 1e9,
        h.buckets[..=FIRST_BUCKET].iter().sum(),
    ));
    for b in FIRST_BUCKET + 1..last {
        buckets.push(((1u64 << b) as f64 / 1e9, h.buckets[b]));
    }
    buckets.push((f64::INFINITY, h.buckets[last]));
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_ns as f64 / 1e9,
        h.count(),
        &buckets,
        None,
    )
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counter(
            &mut enc,
            "mmtrace_syscalls",
            "Calls traced, by event and result (ok, the errno's name, or other); kernel events (oom_*, sched_process_exit, exit_mmap) count as ok.",
            &self.calls,
        )?;
        counter(
            &mut enc,
            "mmtrace_container_syscalls",
            "Syscalls from containers, by container, event and result.",
            &self.container_calls,
        )?;
        let mut m = enc.encode_descriptor(
            "mmtrace_syscall_duration_seconds",
            "Time from a syscall's entry to its return, per event (log2 buckets).",
            None,
            MetricType::Histogram,
        )?;
        for (labels, h) in &self.durations {
            histogram(&mut m.encode_family(labels)?, h)?;
        }
        let bytes = [
            (abi::MB_MAPPED, "mmtrace_mapped_bytes", "Bytes mapped: the page-rounded length of each successful mmap, and the growth of each successful mremap."),
            (abi::MB_UNMAPPED, "mmtrace_unmapped_bytes", "Bytes unmapped: the pages of the range of each successful munmap, and the shrinking of each successful mremap."),
            (abi::MB_LOCKED, "mmtrace_locked_bytes", "Bytes locked: the pages of the range of each successful mlock and mlock2 (as requested, locked before or not; mlockall is not counted)."),
            (abi::MB_UNLOCKED, "mmtrace_unlocked_bytes", "Bytes unlocked: the pages of the range of each successful munlock (munlockall is not counted)."),
            (abi::MB_FREED, "mmtrace_process_mrelease_freed_bytes", "Bytes process_mrelease freed: the target's resident anon, file and shmem memory before the call less after it, for successful calls."),
        ];
        for (i, name, help) in bytes {
            single(&mut enc, name, help, self.bytes[i as usize])?;
        }
        let kills: Vec<(Labels, u64)> = [(abi::MK_SIGNAL, "signal"), (abi::MK_OOM, "oom_killer")]
            .into_iter()
            .map(|(i, by)| (vec![("by", by.to_string())], self.kills[i as usize]))
            .collect();
        counter(
            &mut enc,
            "mmtrace_kills",
            "Kills: successful kill or pidfd_send_signal with SIGKILL (by=signal), processes the kernel's OOM killer chose (by=oom_killer).",
            &kills,
        )?;
        let mut m = enc.encode_descriptor(
            "mmtrace_kill_memory_back_seconds",
            "From a kill to its victim's memory being back: the first of a successful process_mrelease's return, the OOM reaper's finish, the end of its teardown (exit_mmap).",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut m, &self.back)?;
        let counted = DETECTIONS.iter().filter_map(|d| Some((d.id, d.counter?)));
        let detections: Vec<(Labels, u64)> = counted
            .clone()
            .map(|(id, c)| (vec![("id", id.to_string())], self.detections[c as usize]))
            .collect();
        let ids: Vec<&str> = counted.map(|(id, _)| id).collect();
        counter(
            &mut enc,
            "mmtrace_detections",
            &format!(
                "Calls that raised a detection (docs/detections), for those the kernel can tell from one call: {}.",
                ids.join(", ")
            ),
            &detections,
        )?;
        counter(
            &mut enc,
            "mmtrace_events_lost",
            "Calls seen but not counted, per event (no task storage for the call).",
            &self.lost,
        )?;
        single(
            &mut enc,
            "mmtrace_container_overflow_calls",
            "Calls not counted per container: the kernel's per-cgroup series were full, or more containers than have series of their own.",
            self.overflow,
        )?;
        let m = enc.encode_descriptor(
            "mmtrace_build_info",
            "mmtrace's version, and the commit it was built from.",
            None,
            MetricType::Gauge,
        )?;
        let mut m = m;
        ConstGauge::new(1i64).encode(m.encode_family(&vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("revision", env!("MMTRACE_COMMIT").to_string()),
        ])?)
    }
}

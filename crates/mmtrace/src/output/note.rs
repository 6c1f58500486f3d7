//! An in-band line's content: what every output writes between the events, losses and
//! memory pressure, as events of their own (Tracee's consumers skip kinds they do not know).

use mmtrace_events::catalog::{InBandLine, MMTRACE_LOST, MMTRACE_PRESSURE};
use serde_json::{json, Value};

/// Memory pressure as killers read it: PSI `some` and `full` avg10 from /proc/pressure/memory
/// (percent of the last 10 s stalled on memory) and MemAvailable from /proc/meminfo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// When it was read, ns since the epoch.
    pub at: u64,
    pub some_avg10: Option<f64>,
    pub full_avg10: Option<f64>,
    pub mem_available: Option<u64>,
}

/// One in-band line's content.
#[derive(Debug, Clone)]
pub enum Note {
    /// Events lost from `since` to `at`, per event; only events that lost some.
    Lost {
        at: u64,
        since: u64,
        counts: Vec<(&'static str, u64)>,
    },
    Pressure(Pressure),
}

impl Note {
    /// The line's kind, time, and arguments (name, Tracee type, value).
    pub fn parts(
        &self,
    ) -> (
        &'static InBandLine,
        u64,
        Vec<(&'static str, &'static str, Value)>,
    ) {
        match self {
            Note::Lost { at, since, counts } => {
                let mut args = vec![("since", "uint64", json!(since))];
                args.extend(counts.iter().map(|&(e, n)| (e, "uint64", json!(n))));
                (&MMTRACE_LOST, *at, args)
            }
            Note::Pressure(p) => {
                // Two decimals, as the kernel prints them.
                let avg = |v: Option<f64>| json!(v.map(|v| (v * 100.0).round() / 100.0));
                let args = vec![
                    ("some_avg10", "float64", avg(p.some_avg10)),
                    ("full_avg10", "float64", avg(p.full_avg10)),
                    ("mem_available", "uint64", json!(p.mem_available)),
                ];
                (&MMTRACE_PRESSURE, p.at, args)
            }
        }
    }
}

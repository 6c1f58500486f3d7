//! Call sites: the recording's calls summed by the caller's stack (`trace --stack`), ranked
//! by the bytes they mapped, locked and unmapped and by time, and drawn as a flame graph
//! (Brendan Gregg's memory flame graphs: each frame as wide as the bytes, calls or time of
//! the calls made under it).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use mmtrace_events::text::escape;
use mmtrace_events::Role;
use serde::Serialize;

use super::record::Record;
use crate::units::{bytes, duration};

/// Distinct stacks kept; the calls of further ones are summed under one `(other stacks)`.
const MAX_SITES: usize = 10_000;
/// Sites listed per ranking in the JSON report; the text shows the first `TOP_TEXT`.
const KEPT: usize = 20;
const TOP_TEXT: usize = 5;
const OTHER: &str = "(other stacks)";

/// What a flame graph's widths measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weight {
    /// Bytes mapped, locked and unmapped.
    Bytes,
    Mapped,
    Locked,
    Unmapped,
    Calls,
    /// Time in the calls, ns.
    Time,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub mapped_bytes: u64,
    pub locked_bytes: u64,
    pub unmapped_bytes: u64,
    pub calls: u64,
    pub time_ns: u64,
}

impl Totals {
    fn of(&self, w: Weight) -> u64 {
        match w {
            Weight::Bytes => self
                .mapped_bytes
                .saturating_add(self.locked_bytes)
                .saturating_add(self.unmapped_bytes),
            Weight::Mapped => self.mapped_bytes,
            Weight::Locked => self.locked_bytes,
            Weight::Unmapped => self.unmapped_bytes,
            Weight::Calls => self.calls,
            Weight::Time => self.time_ns,
        }
    }
}

/// The calls of a recording by stack (frame names, innermost first).
#[derive(Debug, Default)]
pub struct CallSites {
    sites: HashMap<Arc<[String]>, Totals>,
}

impl CallSites {
    /// Counts a call that carries a stack.
    pub fn add(&mut self, r: &Record) {
        let Some(stack) = &r.stack() else {
            return;
        };
        let site = match self.sites.get_mut(stack.as_ref()) {
            Some(site) => site,
            None => {
                let key: Arc<[String]> = match self.sites.len() < MAX_SITES {
                    true => stack.clone(),
                    false => Arc::from([OTHER.to_string()]),
                };
                self.sites.entry(key).or_default()
            }
        };
        site.calls += 1;
        site.time_ns = site.time_ns.saturating_add(r.duration());
        if !r.ok() {
            return;
        }
        let (field, len) = match r.role() {
            Role::Maps => (&mut site.mapped_bytes, r.size()),
            Role::Locks => (&mut site.locked_bytes, r.size()),
            Role::Unmaps => (&mut site.unmapped_bytes, r.size()),
            _ => return,
        };
        *field = field.saturating_add(len.unwrap_or(0));
    }

    pub fn report(&self) -> Option<Report> {
        if self.sites.is_empty() {
            return None;
        }
        let rank = |w: Weight| {
            let mut v: Vec<(&Arc<[String]>, &Totals)> =
                self.sites.iter().filter(|(_, t)| t.of(w) > 0).collect();
            v.sort_by(|a, b| b.1.of(w).cmp(&a.1.of(w)).then_with(|| a.0.cmp(b.0)));
            v.into_iter()
                .take(KEPT)
                .map(|(stack, t)| Site {
                    stack: stack.to_vec(),
                    totals: *t,
                })
                .collect()
        };
        Some(Report {
            by_mapped: rank(Weight::Mapped),
            by_locked: rank(Weight::Locked),
            by_unmapped: rank(Weight::Unmapped),
            by_time: rank(Weight::Time),
        })
    }

    /// Draws the flame graph, root frames at the bottom; an error if no call had a stack.
    pub fn flamegraph(&self, w: Weight, out: impl Write) -> anyhow::Result<()> {
        let mut folded: Vec<String> = self
            .sites
            .iter()
            .filter(|(_, t)| t.of(w) > 0)
            .map(|(stack, t)| {
                // Folded stacks are root first, `;` between frames and a space before the
                // weight: a frame's own `;` would split it.
                let frames: Vec<String> = stack.iter().rev().map(|f| f.replace(';', ":")).collect();
                format!("{} {}", frames.join(";"), t.of(w))
            })
            .collect();
        anyhow::ensure!(
            !folded.is_empty(),
            "no call in the recording has a stack with a {} weight: record it with `mmtrace trace --stack -o json:FILE`",
            weight_name(w)
        );
        folded.sort();
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("mmtrace: {} by call stack", weight_name(w));
        opts.count_name = match w {
            Weight::Calls => "calls",
            Weight::Time => "ns",
            _ => "bytes",
        }
        .to_string();
        inferno::flamegraph::from_lines(&mut opts, folded.iter().map(String::as_str), out)
            .map_err(|e| anyhow::anyhow!("drawing the flame graph failed: {e}"))
    }
}

fn weight_name(w: Weight) -> &'static str {
    match w {
        Weight::Bytes => "bytes mapped, locked and unmapped",
        Weight::Mapped => "bytes mapped",
        Weight::Locked => "bytes locked",
        Weight::Unmapped => "bytes unmapped",
        Weight::Calls => "calls",
        Weight::Time => "time",
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    /// Frame names, innermost first.
    pub stack: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The call sites that mapped, locked and unmapped the most bytes and took the most time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub by_mapped: Vec<Site>,
    pub by_locked: Vec<Site>,
    pub by_unmapped: Vec<Site>,
    pub by_time: Vec<Site>,
}

impl Report {
    pub fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "\nCall sites (innermost frame first)")?;
        let lists = [
            ("mapped", &self.by_mapped, Weight::Mapped),
            ("locked", &self.by_locked, Weight::Locked),
            ("unmapped", &self.by_unmapped, Weight::Unmapped),
            ("time in calls", &self.by_time, Weight::Time),
        ];
        for (what, sites, w) in lists {
            if sites.is_empty() {
                continue;
            }
            writeln!(out, "  by {what}:")?;
            for s in sites.iter().take(TOP_TEXT) {
                let amount = match w {
                    Weight::Time => duration(s.totals.time_ns),
                    _ => bytes(s.totals.of(w)),
                };
                let frames: Vec<_> = s.stack.iter().map(escape).collect();
                writeln!(
                    out,
                    "    {amount:>10} {:>6} calls  {}",
                    s.totals.calls,
                    frames.join(" < ")
                )?;
            }
        }
        Ok(())
    }
}

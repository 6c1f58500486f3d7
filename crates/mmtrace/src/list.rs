//! `mmtrace list`: the catalog as a table, with what the running kernel offers.

use std::io::{self, Write};
use std::path::Path;

use mmtrace_bpf::features::Features;
use mmtrace_events::catalog::{self, IN_BAND, RAISED};
use mmtrace_events::{ArgDef, EventDef, CATALOG};

/// What the running kernel offers, as far as this process may find out: tracepoints need
/// tracefs, and the feature probes load programs (root, or CAP_BPF and CAP_PERFMON).
pub struct Kernel {
    tracefs: Option<&'static Path>,
    features: Result<Features, String>,
}

impl Kernel {
    pub fn probe() -> Kernel {
        let tracefs = mmtrace_bpf::ensure_tracefs().ok();
        let features = match (mmtrace_bpf::check_privileges(), tracefs) {
            (Err(e), _) => Err(e.to_string()),
            (Ok(()), None) => Err("tracefs is not mounted".to_string()),
            (Ok(()), Some(root)) => Features::probe(root, &[]).map_err(|e| e.to_string()),
        };
        Kernel { tracefs, features }
    }

    /// A word for the table (yes, partial, no, unknown) and a sentence saying why.
    pub fn status(&self, e: &EventDef) -> (&'static str, String) {
        let Some(root) = self.tracefs else {
            return (
                "unknown",
                "unknown: tracefs is not mounted and could not be".into(),
            );
        };
        if !mmtrace_bpf::event_available(root, e) {
            return (
                "no",
                format!(
                    "not available: the kernel has no hook for it (added in Linux {})",
                    e.since
                ),
            );
        }
        match &self.features {
            Err(why) => ("yes", format!("available; its context not probed ({why})")),
            Ok(f) => {
                let lost: Vec<String> = f
                    .lost_for(e)
                    .iter()
                    .map(|o| format!("{} is left out ({})", o.feature.gives(), o.why))
                    .collect();
                match lost.is_empty() {
                    true => ("yes", "available, with everything it gathers".into()),
                    false => ("partial", format!("available, but {}", lost.join("; "))),
                }
            }
        }
    }

    /// A raised event is there as far as the events that raise it are: the status of the
    /// first of them that the kernel has, or of the first one.
    pub fn raised_status(&self, by: &[&str]) -> (&'static str, String) {
        let statuses: Vec<_> = by
            .iter()
            .filter_map(|&n| catalog::by_name(n))
            .map(|e| (e.name, self.status(e)))
            .collect();
        let pick = statuses
            .iter()
            .find(|(_, (word, _))| matches!(*word, "yes" | "partial"))
            .or(statuses.first());
        match pick {
            Some((name, (word, why))) => (word, format!("as {name} is: {why}")),
            None => ("unknown", "raised by no event in the catalog".into()),
        }
    }
}

pub fn run() -> anyhow::Result<()> {
    let kernel = Kernel::probe();
    let mut out = io::stdout().lock();
    // As wide as the longest name, so the columns line up whatever the catalog holds.
    let width = catalog::names().map(str::len).max().unwrap_or(0);
    writeln!(
        out,
        "{:<width$} {:>4}  {:<9} {:<34} ARGUMENTS",
        "EVENT", "ID", "AVAILABLE", "SETS"
    )?;
    let mut notes = Vec::new();
    let mut row =
        |name: &str, id: u16, (available, why): (&str, String), sets: &[&str], args: &[ArgDef]| {
            if available == "partial" {
                notes.push(format!("{name}: {why}"));
            }
            let args: Vec<_> = args
                .iter()
                .map(|a| format!("{}:{}", a.name, a.ty.tracee_name()))
                .collect();
            writeln!(
                out,
                "{name:<width$} {id:>4}  {available:<9} {:<34} {}",
                sets.join(","),
                args.join(" ")
            )
        };
    for e in CATALOG {
        row(e.name, e.event_id, kernel.status(e), e.sets, e.args)?;
    }
    for e in RAISED {
        row(
            e.name,
            e.event_id,
            kernel.raised_status(e.source.by),
            e.sets,
            e.args,
        )?;
    }
    if let Err(why) = &kernel.features {
        writeln!(
            out,
            "\nWhat each event gathers on this kernel was not probed: {why}"
        )?;
    }
    if !notes.is_empty() {
        writeln!(out)?;
    }
    for note in notes {
        writeln!(out, "partial: {note}")?;
    }
    writeln!(
        out,
        "\nLines mmtrace writes about the recording itself, among the events (-e selects none):"
    )?;
    for l in IN_BAND {
        writeln!(out, "{:<width$} {:>4}  {}", l.name, l.event_id, l.summary)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmtrace_events::by_name;

    /// A kernel before 6.1 has sched_process_exit but no mmap:exit_mmap: its tracefs lacks
    /// that directory, and only exit_mmap is shown as not available, with the version.
    #[test]
    fn a_missing_tracepoint_turns_off_its_event_alone() {
        let root = std::env::temp_dir().join(format!("mmtrace-list-{}", std::process::id()));
        std::fs::create_dir_all(root.join("events/sched/sched_process_exit")).unwrap();
        let kernel = Kernel {
            tracefs: Some(Box::leak(root.clone().into_boxed_path())),
            features: Ok(Features::default()),
        };
        let (word, why) = kernel.status(by_name("exit_mmap").unwrap());
        assert_eq!(word, "no");
        assert_eq!(
            why,
            "not available: the kernel has no hook for it (added in Linux 6.1)"
        );
        assert_eq!(
            kernel.status(by_name("sched_process_exit").unwrap()).0,
            "yes"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! `mmtrace list`: the catalog as a table, with what the running kernel offers.

use std::io::{self, Write};

use mmtrace_events::CATALOG;

pub fn run() -> anyhow::Result<()> {
    // Without tracefs (not root) availability is unknown rather than wrong.
    let tracefs = mmtrace_bpf::ensure_tracefs().ok();
    let mut out = io::stdout().lock();
    // As wide as the longest name, so the columns line up whatever the catalog holds.
    let width = CATALOG.iter().map(|e| e.name.len()).max().unwrap_or(0);
    writeln!(
        out,
        "{:<width$} {:>4}  {:<9} {:<34} ARGUMENTS",
        "EVENT", "ID", "AVAILABLE", "SETS"
    )?;
    for e in CATALOG {
        let available = match tracefs {
            Some(root) if mmtrace_bpf::event_available(root, e) => "yes",
            Some(_) => "no",
            None => "unknown",
        };
        let args: Vec<_> = e
            .args
            .iter()
            .map(|a| format!("{}:{}", a.name, a.ty.tracee_name()))
            .collect();
        writeln!(
            out,
            "{:<width$} {:>4}  {:<9} {:<34} {}",
            e.name,
            e.id,
            available,
            e.sets.join(","),
            args.join(" ")
        )?;
    }
    Ok(())
}

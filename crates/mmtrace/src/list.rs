//! `mmtrace list`: the catalog as a table, with what the running kernel offers.

use std::io::{self, Write};

use mmtrace_events::catalog::{self, RAISED};
use mmtrace_events::{ArgDef, CATALOG};

pub fn run() -> anyhow::Result<()> {
    // Without tracefs (not root) availability is unknown rather than wrong.
    let tracefs = mmtrace_bpf::ensure_tracefs().ok();
    let available = |name: &str| match tracefs {
        Some(root) => match catalog::by_name(name) {
            Some(e) if mmtrace_bpf::event_available(root, e) => "yes",
            _ => "no",
        },
        None => "unknown",
    };
    let mut out = io::stdout().lock();
    // As wide as the longest name, so the columns line up whatever the catalog holds.
    let width = catalog::names().map(str::len).max().unwrap_or(0);
    writeln!(
        out,
        "{:<width$} {:>4}  {:<9} {:<34} ARGUMENTS",
        "EVENT", "ID", "AVAILABLE", "SETS"
    )?;
    let mut row = |name: &str, id: u16, available: &str, sets: &[&str], args: &[ArgDef]| {
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
        row(e.name, e.event_id, available(e.name), e.sets, e.args)?;
    }
    // A raised event is there when any event raising it is.
    for e in RAISED {
        let there = match e.source.by.iter().any(|&n| available(n) == "yes") {
            true => "yes",
            false => available(e.source.by[0]),
        };
        row(e.name, e.event_id, there, e.sets, e.args)?;
    }
    Ok(())
}

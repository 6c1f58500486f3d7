//! `mmtrace trace`: attach, stream events to the chosen output, stop on a signal, summarize.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mmtrace_bpf::features::{Feature, FEATURES_OFF_VAR};
use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::enrich::ProtAlert;
use mmtrace_events::scope::Scope;
use mmtrace_events::select::{parse_selection, parse_size, Selection};
use mmtrace_events::Event;

use crate::analyze;
use crate::cli::TraceArgs;
use crate::command::Command;
use crate::inband::InBand;
use crate::output::{self, OutputSpec, Sink};

/// How long the reader sleeps when the kernel has not woken it: the latency of a quiet trace.
const POLL: Duration = Duration::from_millis(10);
/// Events handled between checks for Ctrl-C while the ring stays busy.
const BATCH: usize = 4096;

pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let flags: Vec<&str> = args.events.iter().map(String::as_str).collect();
    let mut selection = parse_selection(&flags)?;
    let scope_flags: Vec<&str> = args.scope.iter().map(String::as_str).collect();
    let scope = Scope::parse(&scope_flags)?;
    let spec = match &args.output {
        Some(text) => OutputSpec::parse(text)?,
        None => OutputSpec::default_for_stdout(),
    };
    let ring_bytes = ring_size(&args.buffer_size)?;
    let features_off = match std::env::var(FEATURES_OFF_VAR) {
        Ok(list) => Feature::parse_list(&list)?,
        Err(_) => Vec::new(),
    };
    let (mut sink, analysis) =
        analyze::live(output::open(&spec)?, args.analyze, &mut selection.events);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    // Forked before the tracer starts, so its pid can be traced from its very first call.
    let mut command = match args.command.is_empty() {
        true => None,
        false => Some(Command::spawn(&args.command, args.user.as_deref())?),
    };

    let show = Show::new(&selection);
    let mut opts = Options::new(selection.events);
    opts.filters = selection.filters;
    opts.scope = scope;
    opts.roots = command.iter().map(Command::pid).collect();
    opts.ring_bytes = ring_bytes;
    opts.enrich = !args.no_enrich;
    opts.features_off = features_off;
    let mut tracer = Tracer::start(&opts)?;
    for u in tracer.unavailable() {
        eprintln!("mmtrace: {} unavailable: {}", u.event.name, u.reason);
    }
    if let Some(off) = tracer.features().summary(tracer.attached()) {
        eprintln!("mmtrace: {off}");
    }
    let whom = match &command {
        Some(c) => format!(
            " in {} (pid {}) and its descendants",
            mmtrace_events::text::escape(&args.command[0]),
            c.pid()
        ),
        None => String::new(),
    };
    eprintln!(
        "mmtrace: tracing {}{whom} through syscalls:sys_enter_*/sys_exit_* tracepoints; Ctrl-C to stop",
        event_types(tracer.attached().len())
    );
    if let Some(c) = command.as_mut() {
        c.release()?;
    }

    let started = Instant::now();
    let mut seen = vec![0u64; usize::from(u16::MAX) + 1];
    let mut failure = None;
    let mut busy = false;
    let mut inband = InBand::new();
    while !stop.load(Ordering::Relaxed) && failure.is_none() {
        // Its calls were all committed before it exited: the last drain below delivers them.
        if command.as_mut().is_some_and(|c| c.poll_exit().is_some()) {
            break;
        }
        // Only wait when the last batch emptied the ring.
        if !busy {
            tracer.wait(POLL)?;
        }
        (busy, failure) = pump(
            &mut tracer,
            sink.as_mut(),
            &show,
            &mut inband,
            &mut seen,
            BATCH,
        );
        failure = failure.or_else(|| inband.tick(&tracer, sink.as_mut()).err());
    }
    tracer.detach();
    // What was committed before the hooks came off is still in the ring: deliver it.
    if failure.is_none() {
        failure = pump(
            &mut tracer,
            sink.as_mut(),
            &show,
            &mut inband,
            &mut seen,
            usize::MAX,
        )
        .1;
    }
    // What was lost after the last line about it: the recording and the analysis say so too.
    if failure.is_none() {
        failure = inband
            .finish(&tracer, sink.as_mut())
            .and_then(|()| sink.flush())
            .err();
    }
    summarize(&tracer, &seen, started.elapsed(), ring_bytes);
    if let Some(analysis) = analysis {
        analysis
            .print(args.format, &spec)
            .context("printing the analysis")?;
    }

    // Like strace -f: the command's status, or 130 when Ctrl-C left it running untraced.
    let code = match command.as_mut().map(|c| c.poll_exit()) {
        None => ExitCode::SUCCESS,
        Some(Some(status)) => ExitCode::from(status.clamp(0, 255) as u8),
        Some(None) => ExitCode::from(130),
    };
    match failure {
        None => Ok(code),
        // The reader of our output went away (`mmtrace trace | head`): a normal end.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(code),
        Some(e) => {
            let target = spec.path.as_deref().unwrap_or("standard output");
            Err(e).with_context(|| format!("writing events to {target} failed; free space or choose another output with -o"))
        }
    }
}

/// What reaches the output of the events traced.
struct Show {
    /// By event id: false for events traced only for the alerts they raise.
    lines: Vec<bool>,
    /// Whether mem_prot_alert was selected.
    alerts: bool,
}

impl Show {
    fn new(selection: &Selection) -> Show {
        let mut lines = vec![true; usize::from(u16::MAX) + 1];
        for e in &selection.hidden {
            lines[usize::from(e.id)] = false;
        }
        Show {
            lines,
            alerts: selection.raised.contains(&&MEM_PROT_ALERT),
        }
    }

    fn event(&self, sink: &mut dyn Sink, event: &Event) -> io::Result<()> {
        if self.lines[usize::from(event.def.id)] {
            sink.event(event)?;
        }
        match ProtAlert::of(event) {
            Some(alert) if self.alerts => sink.alert(event, &alert),
            _ => Ok(()),
        }
    }
}

/// Moves up to `max` events from the ring to the sink and flushes it; returns whether the
/// batch was full (more may be waiting) and the first write error.
fn pump(
    tracer: &mut Tracer,
    sink: &mut dyn Sink,
    show: &Show,
    inband: &mut InBand,
    seen: &mut [u64],
    max: usize,
) -> (bool, Option<io::Error>) {
    let mut failure = None;
    let n = tracer.drain_some(max, |event| {
        seen[usize::from(event.def.id)] += 1;
        if failure.is_none() {
            failure = show
                .event(sink, &event)
                .and_then(|()| inband.after(&event, sink))
                .err();
        }
    });
    (n == max, failure.or_else(|| sink.flush().err()))
}

/// "24 event types": the count is of kinds of event, not of events seen.
fn event_types(n: usize) -> String {
    format!("{n} event type{}", if n == 1 { "" } else { "s" })
}

fn ring_size(text: &str) -> anyhow::Result<u32> {
    match parse_size(text) {
        Some(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n as u32),
        _ => {
            bail!("--buffer-size '{text}' is not a power of two between 4K and 1G (for example 8M)")
        }
    }
}

/// The exit summary on stderr: per event, calls seen, calls the kernel filtered out, and
/// calls lost, with a warning whenever any was lost.
fn summarize(tracer: &Tracer, seen: &[u64], elapsed: Duration, ring_bytes: u32) {
    let lost = tracer.lost();
    let filtered = tracer.filtered();
    eprintln!(
        "mmtrace: {} traced in {:.3} s",
        event_types(lost.len()),
        elapsed.as_secs_f64()
    );
    // Wide enough for the longest name, so the counts line up.
    let w = lost
        .iter()
        .map(|(e, _)| e.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    eprintln!(
        "  {:<w$} {:>12} {:>11} {:>12}",
        "event", "seen", "lost", "filtered"
    );
    let mut totals = [0u64; 3];
    for ((event, lost), (_, filtered)) in lost.into_iter().zip(filtered) {
        let row = [seen[usize::from(event.id)], lost, filtered];
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v;
        }
        eprintln!(
            "  {:<w$} {:>12} {:>11} {:>12}",
            event.name, row[0], row[1], row[2]
        );
    }
    eprintln!(
        "  {:<w$} {:>12} {:>11} {:>12}",
        "total", totals[0], totals[1], totals[2]
    );
    if totals[1] > 0 {
        eprintln!(
            "mmtrace: warning: {} events lost because the ring buffer ({} KiB) was full: raise --buffer-size",
            totals[1],
            ring_bytes >> 10
        );
    }
}

#[cfg(test)]
mod tests {
    use super::ring_size;

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size("8M").unwrap(), 8 << 20);
        assert_eq!(ring_size("4K").unwrap(), 4096);
        assert!(ring_size("3M")
            .unwrap_err()
            .to_string()
            .contains("power of two"));
        assert!(ring_size("2K").is_err());
        assert!(ring_size("2G").is_err());
        assert!(ring_size("lots").is_err());
    }
}

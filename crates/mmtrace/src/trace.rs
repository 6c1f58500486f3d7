//! `mmtrace trace`: attach, stream events to the chosen output, stop on a signal, summarize.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::select::{parse_events, parse_size};

use crate::cli::TraceArgs;
use crate::output::{self, OutputSpec, Sink};

/// How long the reader sleeps when the kernel has not woken it: the latency of a quiet trace.
const POLL: Duration = Duration::from_millis(10);
/// Events handled between checks for Ctrl-C while the ring stays busy.
const BATCH: usize = 4096;

pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let list = args.events.join(",");
    let events = parse_events(Some(&list))?;
    let spec = match &args.output {
        Some(text) => OutputSpec::parse(text)?,
        None => OutputSpec::default_for_stdout(),
    };
    let ring_bytes = ring_size(&args.buffer_size)?;
    let mut sink = output::open(&spec)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }

    let mut opts = Options::new(events);
    opts.ring_bytes = ring_bytes;
    let mut tracer = Tracer::start(&opts)?;
    for u in tracer.unavailable() {
        eprintln!("mmtrace: {} unavailable: {}", u.event.name, u.reason);
    }
    eprintln!(
        "mmtrace: tracing {} events through syscall tracepoints (sys_enter/sys_exit); Ctrl-C to stop",
        tracer.attached().len()
    );

    let started = Instant::now();
    let mut seen = vec![0u64; usize::from(u16::MAX) + 1];
    let mut failure = None;
    let mut busy = false;
    while !stop.load(Ordering::Relaxed) && failure.is_none() {
        // Only wait when the last batch emptied the ring.
        if !busy {
            tracer.wait(POLL)?;
        }
        (busy, failure) = pump(&mut tracer, sink.as_mut(), &mut seen, BATCH);
    }
    tracer.detach();
    // What was committed before the hooks came off is still in the ring: deliver it.
    if failure.is_none() {
        failure = pump(&mut tracer, sink.as_mut(), &mut seen, usize::MAX).1;
    }
    summarize(&tracer, &seen, started.elapsed(), ring_bytes);

    match failure {
        None => Ok(ExitCode::SUCCESS),
        // The reader of our output went away (`mmtrace trace | head`): a normal end.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => {
            let target = spec.path.as_deref().unwrap_or("standard output");
            Err(e).with_context(|| format!("writing events to {target} failed; free space or choose another output with -o"))
        }
    }
}

/// Moves up to `max` events from the ring to the sink and flushes it; returns whether the
/// batch was full (more may be waiting) and the first write error.
fn pump(
    tracer: &mut Tracer,
    sink: &mut dyn Sink,
    seen: &mut [u64],
    max: usize,
) -> (bool, Option<io::Error>) {
    let mut failure = None;
    let n = tracer.drain_some(max, |event| {
        seen[usize::from(event.def.id)] += 1;
        if failure.is_none() {
            failure = sink.event(&event).err();
        }
    });
    (n == max, failure.or_else(|| sink.flush().err()))
}

fn ring_size(text: &str) -> anyhow::Result<u32> {
    match parse_size(text) {
        Some(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n as u32),
        _ => {
            bail!("--buffer-size '{text}' is not a power of two between 4K and 1G (for example 8M)")
        }
    }
}

/// The exit summary on stderr: per event seen and lost, and a warning whenever any was lost.
fn summarize(tracer: &Tracer, seen: &[u64], elapsed: Duration, ring_bytes: u32) {
    let lost = tracer.lost();
    eprintln!(
        "mmtrace: {} events traced in {:.3} s",
        lost.len(),
        elapsed.as_secs_f64()
    );
    eprintln!("  {:<18} {:>12} {:>11}", "event", "seen", "lost");
    let (mut total_seen, mut total_lost) = (0, 0);
    for (event, lost) in lost {
        let seen = seen[usize::from(event.id)];
        total_seen += seen;
        total_lost += lost;
        eprintln!("  {:<18} {:>12} {:>11}", event.name, seen, lost);
    }
    eprintln!("  {:<18} {:>12} {:>11}", "total", total_seen, total_lost);
    if total_lost > 0 {
        eprintln!(
            "mmtrace: warning: {total_lost} events lost because the ring buffer ({} KiB) was full: raise --buffer-size",
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

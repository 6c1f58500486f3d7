//! `mmtrace trace`: attach, stream events to the chosen output, stop on a signal, summarize.

use std::cmp::Reverse;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mmtrace_bpf::{Record, Tracer};
use mmtrace_events::RetKind;

use crate::analyze;
use crate::cli::TraceArgs;
use crate::command::TracedCommand;
use crate::containers;
use crate::inband::InBand;
use crate::latency::{self, Latency};
use crate::output::{self, Sink};
use crate::privilege::{self, Keep};
use crate::session::{self, Plan, Show, Started, SummaryStyle};
use crate::signals::Signals;
use crate::strain::Strain;
use crate::symbols::Symbols;
use crate::teardown;
use crate::units;

/// How long the reader sleeps when the kernel has not woken it: the latency of a quiet trace.
const POLL: Duration = Duration::from_millis(10);
/// Events handled between checks for Ctrl-C while the ring stays busy.
const BATCH: usize = 4096;
/// The exit status of a process killed by SIGPIPE, as a shell shows it: mmtrace's when the
/// reader of its output or of its messages went away.
const BROKEN_PIPE: u8 = 128 + libc::SIGPIPE as u8;

pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    execute(Plan::new(args, session::features_off().as_deref())?)
}

/// Runs the plan: opens the outputs, starts the command, attaches, traces until stopped.
fn execute(plan: Plan) -> anyhow::Result<ExitCode> {
    let Plan {
        mut session,
        outputs,
        show,
        analysis,
        command,
        summary: style,
    } = plan;
    let ring_bytes = session.options.ring_bytes;
    let (output, deliveries) = output::open(&outputs)?;
    let (mut sink, analysis) = match analysis {
        Some((format, hidden)) => {
            let (sink, analysis) = analyze::live(output, hidden);
            (sink, Some((format, analysis)))
        }
        None => (output, None),
    };
    // Forked before the tracer starts, so its pid can be traced from its very first call.
    // Like strace's trace on stderr, the events keep stdout to themselves when they use it.
    let mut command = match &command {
        None => None,
        Some((argv, user)) => Some((
            &argv[0],
            TracedCommand::spawn(argv, user.as_deref(), outputs.events_on_stdout())?,
        )),
    };
    // Installed after the fork, so the command starts with the default handlers.
    let signals = Signals::install()?;
    // After the fork: the command keeps the priority it was given.
    let mut priority = privilege::raise_reader_priority();

    session.options.roots = command.iter().map(|(_, c)| c.pid()).collect();
    let Started {
        mut tracer,
        kernel_log,
        notes,
    } = session::start(
        &session,
        true,
        Keep {
            kill: command.is_some(),
            nice: priority.keep(),
        },
    )?;
    let mut stderr = Messages::default();
    for note in notes {
        stderr.say(&format!("{note}\n"));
    }
    let whom = match &command {
        Some((program, c)) => format!(
            " in {} (pid {}) and its descendants",
            mmtrace_events::text::escape(program),
            c.pid()
        ),
        None => String::new(),
    };
    stderr.say(&format!(
        "mmtrace: tracing {}{whom} through syscalls:sys_enter_*/sys_exit_* tracepoints; Ctrl-C to stop\n",
        event_types(tracer.attached().len())
    ));
    if let Some((_, c)) = command.as_mut() {
        c.release()?;
    }

    let started = Instant::now();
    // Per event id: the calls seen, how many failed and how long they took.
    let mut seen: Vec<Option<Box<Latency>>> = vec![None; usize::from(u16::MAX) + 1];
    let mut busy = false;
    let mut inband = InBand::new(kernel_log);
    let mut symbols = session.options.stack.then(Symbols::default);
    let mut strain = Strain::new(&tracer, deliveries.bytes());
    loop {
        let received = signals.take();
        match command.as_mut() {
            // With a command, the trace lasts as long as it does: the signals are its.
            Some((_, c)) => {
                for r in received {
                    // The terminal sent it to the command's process group as well.
                    if !(r.by_terminal && c.in_our_group()) {
                        c.signal(r.signal);
                    }
                }
                // Its calls were all committed before it exited: the last drain delivers them.
                if c.poll_exit().is_some() {
                    break;
                }
            }
            None if !received.is_empty() => break,
            // Nothing more can be written: stop, as `mmtrace trace | head` expects.
            None if deliveries.all_failed() => break,
            None => {}
        }
        // Only wait when the last batch emptied the ring.
        if !busy {
            let slept = Instant::now();
            tracer.wait(POLL)?;
            strain.idle(slept.elapsed());
        }
        let n = pump(
            &mut tracer,
            sink.as_mut(),
            &show,
            &mut inband,
            symbols.as_mut(),
            &mut seen,
            BATCH,
        );
        strain.seen(n);
        busy = n == BATCH;
        priority.batch(busy);
        // Only a full batch follows losses: a ring that lost records is full.
        if busy {
            strain.mark(&tracer, deliveries.bytes());
        }
        // The output keeps its own failures, and counts the lines they cost.
        let _ = inband.tick(&tracer, sink.as_mut());
    }
    // Until the stop was seen: what follows drains what was traced before it.
    let traced = started.elapsed();
    // The hooks come off only after mmtrace exits, which takes seconds (see teardown.rs): the
    // trace stops here, and what was committed before is in the ring. There is no more of it
    // than the ring holds, so a producer as fast as the reader cannot keep this going.
    let n = pump(
        &mut tracer,
        sink.as_mut(),
        &show,
        &mut inband,
        symbols.as_mut(),
        &mut seen,
        ring_records(ring_bytes),
    );
    strain.seen(n);
    strain.mark(&tracer, deliveries.bytes());
    // What was lost after the last line about it: the recording and the analysis say so too.
    let _ = inband.finish(&tracer, sink.as_mut());
    let _ = sink.flush();
    let why = strain.diagnosis(&deliveries.targets());
    stderr.say(&summary(
        &tracer,
        &seen,
        traced,
        ring_bytes,
        why.as_deref(),
        style,
    ));
    for (target, delivery) in deliveries.failed() {
        let Some(e) = delivery.failure() else {
            continue;
        };
        let advice = match e.kind() {
            io::ErrorKind::BrokenPipe => "",
            _ => "; free space or choose another output with -o",
        };
        stderr.say(&format!(
            "mmtrace: error: {} events traced were not written, after {} that were: writing to {target} failed: {e}{advice}\n",
            delivery.unwritten(),
            delivery.written()
        ));
    }
    if let Some((format, analysis)) = analysis {
        if let Err(e) = analysis.print(format, outputs.events_on_stdout()) {
            stderr.failed(e);
        }
    }

    teardown::detach_after_exit(tracer);

    // A closed pipe anywhere says so in the status, as a shell expects of `| head`.
    let kinds: Vec<io::ErrorKind> = deliveries
        .failed()
        .filter_map(|(_, d)| d.failure().map(|e| e.kind()))
        .collect();
    let failure = kinds
        .iter()
        .copied()
        .find(|k| *k == io::ErrorKind::BrokenPipe)
        .or(kinds.first().copied())
        .or(stderr.failure);
    Ok(match (failure, command.as_mut()) {
        (Some(io::ErrorKind::BrokenPipe), _) => ExitCode::from(BROKEN_PIPE),
        (Some(_), _) => ExitCode::FAILURE,
        // Like strace -f: the command's status.
        (None, Some((_, c))) => {
            let status = c.poll_exit().unwrap_or(0);
            ExitCode::from(status.clamp(0, 255) as u8)
        }
        (None, None) => ExitCode::SUCCESS,
    })
}

/// mmtrace's own lines on stderr. Unlike eprintln!, a closed stderr does not panic: the trace
/// goes on, and the first failure is kept for the exit status.
#[derive(Default)]
struct Messages {
    failure: Option<io::ErrorKind>,
}

impl Messages {
    fn say(&mut self, text: &str) {
        if self.failure.is_none() {
            if let Err(e) = io::stderr().lock().write_all(text.as_bytes()) {
                self.failed(e);
            }
        }
    }

    fn failed(&mut self, e: io::Error) {
        self.failure.get_or_insert(e.kind());
    }
}

/// Moves up to `max` events from the ring to the sink and flushes it; returns how many it
/// moved: `max` when more may be waiting.
fn pump(
    tracer: &mut Tracer,
    sink: &mut dyn Sink,
    show: &Show,
    inband: &mut InBand,
    mut symbols: Option<&mut Symbols>,
    seen: &mut [Option<Box<Latency>>],
    max: usize,
) -> usize {
    let n = tracer.drain_some(max, |mut event| {
        if let Some(s) = symbols.as_deref_mut() {
            s.fill(&mut event);
        }
        containers::fill(&mut event);
        // A kernel event is an instant: it has no duration.
        let duration = (event.def.ret != RetKind::None).then_some(event.duration_ns);
        seen[usize::from(event.def.id)]
            .get_or_insert_default()
            .record(duration, event.def.errno(event.ret).is_some());
        inband.before(&mut event);
        // The output keeps its own failures, and counts the events they cost.
        let _ = show.event(sink, &event);
        let _ = inband.after(&event, sink);
    });
    let _ = sink.flush();
    n
}

/// The most records the ring can hold: each is a `Record` at least, behind the ring's 8-byte
/// header.
fn ring_records(ring_bytes: u32) -> usize {
    ring_bytes as usize / (std::mem::size_of::<Record>() + 8)
}

/// "24 event types": the count is of kinds of event, not of events seen.
fn event_types(n: usize) -> String {
    format!("{n} event type{}", if n == 1 { "" } else { "s" })
}

/// The exit summary, as strace -c: per event, the calls seen, how many failed, the time they
/// took (total, mean, p99, max), the calls lost and those the kernel filtered out, busiest
/// first; with a warning whenever any was lost, saying why when the reader could tell (`why`).
fn summary(
    tracer: &Tracer,
    seen: &[Option<Box<Latency>>],
    elapsed: Duration,
    ring_bytes: u32,
    why: Option<&str>,
    style: SummaryStyle,
) -> String {
    let lost = tracer.lost();
    let filtered = tracer.filtered();
    let none = Latency::default();
    let mut rows: Vec<_> = lost
        .iter()
        .zip(&filtered)
        .map(|(&(event, lost), &(_, filtered))| {
            let calls = seen[usize::from(event.id)].as_deref().unwrap_or(&none);
            (event, calls, lost, filtered)
        })
        .collect();
    // As strace -c: an event no call reached is left out, and said to be; one that lost or
    // left out calls stays.
    let listed = rows.len();
    if !style.all {
        rows.retain(|(_, calls, lost, filtered)| calls.calls + lost + filtered > 0);
    }
    let quiet = listed - rows.len();
    rows.sort_by_key(|(event, calls, ..)| {
        (Reverse(calls.total_ns()), Reverse(calls.calls), event.name)
    });
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "mmtrace: {} traced in {:.6} s",
        event_types(lost.len()),
        elapsed.as_secs_f64()
    );
    let _ = match quiet {
        0 => writeln!(out),
        n => writeln!(
            out,
            "; {} with no call left out (--summary-all lists them)",
            event_types(n)
        ),
    };
    // Wide enough for the longest name listed, so the columns line up.
    let w = rows
        .iter()
        .map(|(e, ..)| e.name.len())
        .max()
        .unwrap_or(0)
        .max("total".len());
    let line = |out: &mut String, cells: [&str; 9]| {
        let [name, calls, errors, time, mean, p99, max, lost, filtered] = cells;
        let _ = writeln!(
            out,
            "  {name:<w$} {calls:>9} {errors:>6} {time:>8} {mean:>8} {p99:>8} {max:>8} {lost:>8} {filtered:>8}"
        );
    };
    let header = [
        "event", "calls", "errors", "time", "mean", "p99", "max", "lost", "filtered",
    ];
    line(&mut out, header);
    let time = |timed: bool, ns: u64| match timed {
        true => units::duration_short(ns),
        false => "-".to_string(),
    };
    let mut total = Latency::default();
    let (mut total_lost, mut total_filtered) = (0, 0);
    for (event, calls, lost, filtered) in &rows {
        total.merge(calls);
        total_lost += lost;
        total_filtered += filtered;
        let t = calls.timed();
        line(
            &mut out,
            [
                event.name,
                &calls.calls.to_string(),
                &calls.errors.to_string(),
                &time(t, calls.total_ns()),
                &time(t, calls.mean_ns()),
                &time(t, calls.quantile(0.99)),
                &time(t, calls.max_ns()),
                &lost.to_string(),
                &filtered.to_string(),
            ],
        );
    }
    // The total's mean and percentiles would mix calls of different kinds.
    line(
        &mut out,
        [
            "total",
            &total.calls.to_string(),
            &total.errors.to_string(),
            &time(total.timed(), total.total_ns()),
            "-",
            "-",
            "-",
            &total_lost.to_string(),
            &total_filtered.to_string(),
        ],
    );
    if style.histograms {
        for (event, calls, ..) in rows.iter().filter(|(_, c, ..)| c.timed()) {
            let _ = writeln!(
                out,
                "\n@ns[{}]: {} calls, p50 {}, p90 {}, p99 {}, max {}",
                event.name,
                calls.calls,
                units::duration_short(calls.quantile(0.5)),
                units::duration_short(calls.quantile(0.9)),
                units::duration_short(calls.quantile(0.99)),
                units::duration_short(calls.max_ns()),
            );
            latency::write_histogram(&mut out, &calls.buckets());
        }
    }
    if total_lost > 0 {
        let _ = writeln!(
            out,
            "mmtrace: warning: {total_lost} events lost because the ring buffer ({} KiB) was full: {}",
            ring_bytes >> 10,
            why.unwrap_or("raise --buffer-size")
        );
    }
    if let Some(warning) = containers::scope_overflow_warning(tracer.scope_overflow()) {
        let _ = writeln!(out, "{warning}");
    }
    out
}

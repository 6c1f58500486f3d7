//! `mmtrace trace`: attach, stream events to the chosen output, stop on a signal, summarize.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use mmtrace_bpf::features::{Feature, FEATURES_OFF_VAR};
use mmtrace_bpf::{Options, Record, Tracer};
use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::enrich::ProtAlert;
use mmtrace_events::scope::Scope;
use mmtrace_events::select::{parse_selection, parse_size, Selection};
use mmtrace_events::{Event, EventDef, Role};

use crate::analyze::{self, Format};
use crate::cli::{TraceArgs, WhoAndWhat};
use crate::command::TracedCommand;
use crate::containers;
use crate::inband::InBand;
use crate::kmsg::KernelLog;
use crate::output::{self, Outputs, Sink};
use crate::privilege;
use crate::signals::Signals;
use crate::strain::Strain;
use crate::symbols::Symbols;
use crate::teardown;

/// How long the reader sleeps when the kernel has not woken it: the latency of a quiet trace.
const POLL: Duration = Duration::from_millis(10);
/// Events handled between checks for Ctrl-C while the ring stays busy.
const BATCH: usize = 4096;
/// The exit status of a process killed by SIGPIPE, as a shell shows it: mmtrace's when the
/// reader of its output or of its messages went away.
const BROKEN_PIPE: u8 = 128 + libc::SIGPIPE as u8;

/// What a trace will do, worked out from its options and the environment's alone: nothing
/// is opened, forked or attached yet, so it is checked without root.
pub(crate) struct Plan {
    /// The tracer's, but for the roots, which only the forked command gives.
    pub(crate) options: Options,
    outputs: Outputs,
    show: Show,
    /// With --analyze: the report's format, and the events traced for the analysis alone,
    /// kept out of the outputs.
    analysis: Option<(Format, Vec<&'static EventDef>)>,
    /// The command to run and trace, and the user to run it as.
    command: Option<(Vec<String>, Option<String>)>,
    /// The container runtimes' sockets named by --cri, asked besides the default ones.
    pub(crate) sockets: Vec<containers::Socket>,
}

impl Plan {
    /// `features_off` is MMTRACE_FEATURES_OFF's value, if set.
    fn new(args: &TraceArgs, features_off: Option<&str>) -> anyhow::Result<Plan> {
        let (selection, scope, sockets) = parse_who_and_what(&args.who)?;
        let outputs = Outputs::parse(&args.output)?;
        let ring_bytes = ring_size(&args.buffer_size)?;
        let features_off = match features_off {
            Some(list) => Feature::parse_list(list)?,
            None => Vec::new(),
        };
        let show = Show::new(&selection);
        let mut events = selection.events;
        let analysis = args.analyze.then(|| {
            let hidden = analyze::needed_besides(&events);
            events.extend(&hidden);
            (args.format, hidden)
        });
        let mut options = Options::new(events);
        options.filters = selection.filters;
        options.scope = scope;
        options.ring_bytes = ring_bytes;
        options.enrich = !args.no_enrich;
        options.features_off = features_off;
        options.stack = args.stack;
        Ok(Plan {
            options,
            outputs,
            show,
            analysis,
            command: (!args.command.is_empty()).then(|| (args.command.clone(), args.user.clone())),
            sockets,
        })
    }
}

/// The events (-e), the scope (-s) with its containers found, and the runtimes' sockets
/// (--cri): what trace and serve both take.
pub fn parse_who_and_what(
    who: &WhoAndWhat,
) -> anyhow::Result<(Selection, Scope, Vec<containers::Socket>)> {
    let flags: Vec<&str> = who.events.iter().map(String::as_str).collect();
    let selection = parse_selection(&flags)?;
    let scope_flags: Vec<&str> = who.scope.iter().map(String::as_str).collect();
    let mut scope = Scope::parse(&scope_flags)?;
    let sockets = who
        .cri
        .iter()
        .map(|s| containers::Socket::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    containers::resolve_scope(&mut scope, &sockets)?;
    Ok((selection, scope, sockets))
}

pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    execute(plan(args)?)
}

/// The plan of `args` on this machine, MMTRACE_FEATURES_OFF applied: `top`'s too.
pub(crate) fn plan(args: &TraceArgs) -> anyhow::Result<Plan> {
    let features_off = std::env::var(FEATURES_OFF_VAR).ok();
    Plan::new(args, features_off.as_deref())
}

/// Runs the plan: opens the outputs, starts the command, attaches, traces until stopped.
fn execute(plan: Plan) -> anyhow::Result<ExitCode> {
    let Plan {
        mut options,
        outputs,
        show,
        analysis,
        command,
        sockets,
    } = plan;
    let ring_bytes = options.ring_bytes;
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
    privilege::raise_reader_priority();

    options.roots = command.iter().map(|(_, c)| c.pid()).collect();
    let mut tracer = Tracer::start(&options)?;
    // Opened while mmtrace still holds CAP_SYSLOG: the kernel checks it at open only.
    let kernel_log = tracer
        .attached()
        .iter()
        .any(|e| e.role == Role::OomVictim)
        .then(KernelLog::open);
    privilege::drop_after_attach(&tracer, command.is_some(), options.stack)?;
    let mut stderr = Messages::default();
    if let Some(why) = kernel_log.as_ref().and_then(KernelLog::unreadable) {
        stderr.say(&format!(
            "mmtrace: {why}: kernel OOM kills will not say which limit fired (run as root, or give CAP_SYSLOG)\n"
        ));
    }
    for u in tracer.unavailable() {
        stderr.say(&format!(
            "mmtrace: {} unavailable: {}\n",
            u.event.name, u.reason
        ));
    }
    if let Some(off) = tracer.features().summary(tracer.attached()) {
        stderr.say(&format!("mmtrace: {off}\n"));
    }
    for line in containers::start(&sockets) {
        stderr.say(&format!("{line}\n"));
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
    let mut seen = vec![0u64; usize::from(u16::MAX) + 1];
    let mut busy = false;
    let mut inband = InBand::new(kernel_log);
    let mut symbols = options.stack.then(Symbols::default);
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
        // Only a full batch follows losses: a ring that lost records is full.
        if busy {
            strain.mark(&tracer, deliveries.bytes());
        }
        // The output keeps its own failures, and counts the lines they cost.
        let _ = inband.tick(&tracer, sink.as_mut());
    }
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
        started.elapsed(),
        ring_bytes,
        why.as_deref(),
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

/// Moves up to `max` events from the ring to the sink and flushes it; returns how many it
/// moved: `max` when more may be waiting.
fn pump(
    tracer: &mut Tracer,
    sink: &mut dyn Sink,
    show: &Show,
    inband: &mut InBand,
    mut symbols: Option<&mut Symbols>,
    seen: &mut [u64],
    max: usize,
) -> usize {
    let n = tracer.drain_some(max, |mut event| {
        if let Some(s) = symbols.as_deref_mut() {
            s.fill(&mut event);
        }
        seen[usize::from(event.def.id)] += 1;
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

fn ring_size(text: &str) -> anyhow::Result<u32> {
    match parse_size(text) {
        Some(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n as u32),
        _ => {
            bail!("--buffer-size '{text}' is not a power of two between 4K and 1G (for example 8M)")
        }
    }
}

/// The exit summary: per event, calls seen, calls the kernel filtered out, and calls lost,
/// with a warning whenever any was lost, saying why when the reader could tell (`why`).
fn summary(
    tracer: &Tracer,
    seen: &[u64],
    elapsed: Duration,
    ring_bytes: u32,
    why: Option<&str>,
) -> String {
    let lost = tracer.lost();
    let filtered = tracer.filtered();
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
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
    let _ = writeln!(
        out,
        "  {:<w$} {:>12} {:>11} {:>12}",
        "event", "seen", "lost", "filtered"
    );
    let mut totals = [0u64; 3];
    for ((event, lost), (_, filtered)) in lost.into_iter().zip(filtered) {
        let row = [seen[usize::from(event.id)], lost, filtered];
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v;
        }
        let _ = writeln!(
            out,
            "  {:<w$} {:>12} {:>11} {:>12}",
            event.name, row[0], row[1], row[2]
        );
    }
    let _ = writeln!(
        out,
        "  {:<w$} {:>12} {:>11} {:>12}",
        "total", totals[0], totals[1], totals[2]
    );
    if totals[1] > 0 {
        let _ = writeln!(
            out,
            "mmtrace: warning: {} events lost because the ring buffer ({} KiB) was full: {}",
            totals[1],
            ring_bytes >> 10,
            why.unwrap_or("raise --buffer-size")
        );
    }
    if let Some(warning) = containers::scope_overflow_warning(tracer.scope_overflow()) {
        let _ = writeln!(out, "{warning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mmtrace_events::{by_name, Role};

    use super::*;
    use crate::cli::{Cli, Command};

    /// The plan of `mmtrace trace ARGS`, with MMTRACE_FEATURES_OFF as `features_off`.
    fn plan(args: &[&str], features_off: Option<&str>) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(["mmtrace", "trace"].iter().chain(args))?;
        let Command::Trace(args) = cli.command else {
            unreachable!("parsed as trace")
        };
        Plan::new(&args, features_off)
    }

    fn names(events: &[&EventDef]) -> Vec<&'static str> {
        events.iter().map(|e| e.name).collect()
    }

    #[test]
    fn by_default_everything_enriched_in_an_8m_ring() {
        let p = plan(&["-o", "json"], None).unwrap();
        assert_eq!(p.options.events.len(), mmtrace_events::CATALOG.len());
        assert_eq!(p.options.ring_bytes, 8 << 20);
        assert!(p.options.enrich && p.options.features_off.is_empty());
        assert!(p.analysis.is_none() && p.command.is_none());
        assert!(p.show.alerts, "mem_prot_alert is among all events");
        assert!(p.outputs.events_on_stdout());
    }

    #[test]
    fn the_analysis_traces_exits_and_teardowns_for_itself() {
        let p = plan(&["-e", "mlock", "--analyze", "--format", "json"], None).unwrap();
        let (format, hidden) = p.analysis.unwrap();
        assert_eq!(format, Format::Json);
        assert!(hidden
            .iter()
            .all(|e| matches!(e.role, Role::Exits | Role::TornDown)));
        assert_eq!(names(&hidden), ["sched_process_exit", "exit_mmap"]);
        assert_eq!(
            names(&p.options.events),
            ["mlock", "sched_process_exit", "exit_mmap"]
        );
        let selected = plan(&["-e", "mlock,sched_process_exit", "--analyze"], None).unwrap();
        assert_eq!(names(&selected.analysis.unwrap().1), ["exit_mmap"]);
    }

    #[test]
    fn alerts_alone_attach_their_calls_but_show_only_alerts() {
        let p = plan(&["-e", "mem_prot_alert", "--no-enrich"], None).unwrap();
        assert_eq!(
            names(&p.options.events),
            ["mmap", "mprotect", "pkey_mprotect"]
        );
        assert!(p.show.alerts);
        let mmap = by_name("mmap").unwrap();
        assert!(!p.show.lines[usize::from(mmap.id)]);
        assert!(!p.options.enrich);
    }

    #[test]
    fn command_user_filters_scope_and_features() {
        let p = plan(
            &[
                "-e",
                "munmap.retval=-EINVAL",
                "-s",
                "uid>=1000",
                "--buffer-size",
                "64K",
                "--user",
                "nobody",
                "--",
                "true",
                "x",
            ],
            Some("find_vma"),
        )
        .unwrap();
        assert_eq!(
            p.command,
            Some((vec!["true".into(), "x".into()], Some("nobody".into())))
        );
        assert_eq!(p.options.filters.len(), 1);
        assert_eq!(p.options.ring_bytes, 64 << 10);
        assert_eq!(p.options.features_off, [Feature::FindVma]);
        assert!(
            p.options.roots.is_empty(),
            "roots come from the forked command"
        );
    }

    #[test]
    fn bad_options_fail_before_anything_runs() {
        for (args, features, error) in [
            (&["-e", "nosuch"][..], None, "nosuch"),
            (&["-s", "uid>>1"], None, "scope"),
            (&["-o", "yaml"], None, "unknown output format"),
            (&["--buffer-size", "3M"], None, "power of two"),
            (&[], Some("warp_drive"), "warp_drive"),
        ] {
            let err = plan(args, features).err().expect("an error").to_string();
            assert!(err.contains(error), "{args:?}: {err}");
        }
    }

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

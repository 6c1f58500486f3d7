//! What a command that traces resolves from its options before anything runs: the events,
//! filters and scope, the outputs, the ring, the features left off. Nothing is opened, forked
//! or attached here, so every plan is checked without root.

use std::io;

use anyhow::bail;
use mmtrace_bpf::features::{Feature, FEATURES_OFF_VAR};
use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::decode::parse_size;
use mmtrace_events::derived::ProtAlert;
use mmtrace_events::scope::Scope;
use mmtrace_events::select::{parse_selection, Selection};
use mmtrace_events::{Event, EventDef, Role};

use crate::analyze::{self, Format};
use crate::cli::{ServeArgs, TopArgs, TraceArgs, WhoAndWhat};
use crate::containers;
use crate::kmsg::KernelLog;
use crate::output::{Outputs, Sink};
use crate::privilege;

/// What every command that traces resolves first, whatever it does with the calls: the
/// tracer's options (events, filters, scope, features left off) and the container runtimes'
/// sockets (--cri), asked besides the default ones.
pub(crate) struct Session {
    pub(crate) options: Options,
    pub(crate) sockets: Vec<containers::Socket>,
}

impl Session {
    /// -e, -s and --cri, and `features_off` (MMTRACE_FEATURES_OFF's value); the selection
    /// too, for what the mode makes of it.
    fn new(who: &WhoAndWhat, features_off: Option<&str>) -> anyhow::Result<(Session, Selection)> {
        let flags: Vec<&str> = who.events.iter().map(String::as_str).collect();
        let mut selection = parse_selection(&flags)?;
        let scope_flags: Vec<&str> = who.scope.iter().map(String::as_str).collect();
        let mut scope = Scope::parse(&scope_flags)?;
        let sockets = who
            .cri
            .iter()
            .map(|s| containers::Socket::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        containers::resolve_scope(&mut scope, &sockets)?;
        let mut options = Options::new(std::mem::take(&mut selection.events));
        options.filters = std::mem::take(&mut selection.filters);
        options.scope = scope;
        options.features_off = match features_off {
            Some(list) => Feature::parse_list(list)?,
            None => Vec::new(),
        };
        Ok((Session { options, sockets }, selection))
    }

    /// `serve`'s: the calls counted in the kernel, with or without their durations.
    pub(crate) fn metrics(args: &ServeArgs, features_off: Option<&str>) -> anyhow::Result<Session> {
        let (mut session, _) = Session::new(&args.who, features_off)?;
        let options = &mut session.options;
        // mem_prot_alert is a record mmtrace makes of others, not a call to count.
        options.events.retain(|e| e.role != Role::Alerts);
        options.metrics = true;
        options.durations = !args.no_durations;
        Ok(session)
    }
}

/// What a trace that records the calls will do (`trace`, and `top`, which records them to
/// its screen), worked out from its options and the environment's alone: nothing is opened,
/// forked or attached yet, so it is checked without root.
pub(crate) struct Plan {
    /// The tracer's options, but for the roots, which only the forked command gives.
    pub(crate) session: Session,
    pub(crate) outputs: Outputs,
    pub(crate) show: Show,
    /// With --analyze: the report's format, and the events traced for the analysis alone,
    /// kept out of the outputs.
    pub(crate) analysis: Option<(Format, Vec<&'static EventDef>)>,
    /// The command to run and trace, and the user to run it as.
    pub(crate) command: Option<(Vec<String>, Option<String>)>,
    /// What the exit summary shows beyond the events seen.
    pub(crate) summary: SummaryStyle,
}

/// What the exit summary shows besides a row per event seen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SummaryStyle {
    /// A row for each event traced, those that saw no call too.
    pub(crate) all: bool,
    /// Each event's duration distribution.
    pub(crate) histograms: bool,
}

impl Plan {
    /// `trace`'s; `features_off` is MMTRACE_FEATURES_OFF's value, if set.
    pub(crate) fn new(args: &TraceArgs, features_off: Option<&str>) -> anyhow::Result<Plan> {
        let mut plan = Plan::record(
            &args.who,
            &args.output,
            &args.buffer_size,
            args.analyze.then_some(args.format),
            features_off,
        )?;
        plan.session.options.enrich = !args.no_enrich;
        plan.session.options.stack = args.stack;
        plan.command =
            (!args.command.is_empty()).then(|| (args.command.clone(), args.user.clone()));
        plan.summary = SummaryStyle {
            all: args.summary_all,
            histograms: args.summary,
        };
        Ok(plan)
    }

    /// `top`'s: the trace `mmtrace trace -o none --analyze` with top's flags makes, as the
    /// analysis of kills needs the exits and teardowns, and the rows need exits to drop
    /// processes that are gone.
    pub(crate) fn top(args: &TopArgs, features_off: Option<&str>) -> anyhow::Result<Plan> {
        Plan::record(
            &args.who,
            &["none".to_string()],
            &args.buffer_size,
            Some(Format::Text),
            features_off,
        )
    }

    fn record(
        who: &WhoAndWhat,
        outputs: &[String],
        buffer_size: &str,
        analysis: Option<Format>,
        features_off: Option<&str>,
    ) -> anyhow::Result<Plan> {
        let (mut session, selection) = Session::new(who, features_off)?;
        let outputs = Outputs::parse(outputs)?;
        session.options.ring_bytes = ring_size(buffer_size)?;
        let show = Show::new(&selection);
        let events = &mut session.options.events;
        let analysis = analysis.map(|format| {
            let hidden = analyze::needed_besides(events);
            events.extend(&hidden);
            (format, hidden)
        });
        Ok(Plan {
            session,
            outputs,
            show,
            analysis,
            command: None,
            summary: SummaryStyle::default(),
        })
    }
}

/// MMTRACE_FEATURES_OFF's value, if set: the features a user turned off by hand.
pub(crate) fn features_off() -> Option<String> {
    std::env::var(FEATURES_OFF_VAR).ok()
}

/// A tracer attached, and what the user is told of its start.
pub(crate) struct Started {
    pub(crate) tracer: Tracer,
    /// Where the kernel reports its OOM kills, when asked for and the kills are traced.
    pub(crate) kernel_log: Option<KernelLog>,
    /// One line each, "mmtrace: ...": the kernel's log unreadable, events this kernel lacks,
    /// features left off, what the container runtimes said.
    pub(crate) notes: Vec<String>,
}

/// The one way every command starts tracing: attach, open what needs the privileges still
/// held (the kernel's log, with `kernel_log`), drop them, and gather the start-up notes.
/// `keep`: the capabilities the command needs besides those its options do.
pub(crate) fn start(
    session: &Session,
    kernel_log: bool,
    keep: privilege::Keep,
) -> anyhow::Result<Started> {
    let tracer = Tracer::start(&session.options)?;
    // Opened while mmtrace still holds CAP_SYSLOG: the kernel checks it at open only.
    let kernel_log = (kernel_log && tracer.attached().iter().any(|e| e.role == Role::OomVictim))
        .then(KernelLog::open);
    privilege::drop_after_attach(&tracer, keep, session.options.stack)?;
    let mut notes = Vec::new();
    if let Some(why) = kernel_log.as_ref().and_then(KernelLog::unreadable) {
        notes.push(format!(
            "mmtrace: {why}: kernel OOM kills will not say which limit fired (run as root, or give CAP_SYSLOG)"
        ));
    }
    for u in tracer.unavailable() {
        notes.push(format!(
            "mmtrace: {} unavailable: {}",
            u.event.name, u.reason
        ));
    }
    if let Some(off) = tracer.features().summary(tracer.attached()) {
        notes.push(format!("mmtrace: {off}"));
    }
    notes.extend(containers::start(&session.sockets));
    Ok(Started {
        tracer,
        kernel_log,
        notes,
    })
}

/// What reaches the output of the events traced.
pub(crate) struct Show {
    /// By event id: false for events traced only for the alerts they raise.
    lines: Vec<bool>,
    /// Whether mem_prot_alert was selected.
    alerts: bool,
}

impl Show {
    pub(crate) fn new(selection: &Selection) -> Show {
        let mut lines = vec![true; usize::from(u16::MAX) + 1];
        for e in &selection.hidden {
            lines[usize::from(e.id)] = false;
        }
        Show {
            lines,
            alerts: selection.raised.contains(&&MEM_PROT_ALERT),
        }
    }

    pub(crate) fn event(&self, sink: &mut dyn Sink, event: &Event) -> io::Result<()> {
        if self.lines[usize::from(event.def.id)] {
            sink.event(event)?;
        }
        match ProtAlert::of(event) {
            Some(alert) if self.alerts => sink.alert(event, &alert),
            _ => Ok(()),
        }
    }
}

pub(crate) fn ring_size(text: &str) -> anyhow::Result<u32> {
    match parse_size(text) {
        Some(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n as u32),
        _ => {
            bail!("--buffer-size '{text}' is not a power of two between 4K and 1G (for example 8M)")
        }
    }
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

    /// `top` plans what `trace -o none --analyze` plans with the same flags: its flags mean
    /// exactly what trace's do.
    #[test]
    fn top_plans_what_trace_plans_with_its_flags() {
        let flags = [
            "-e",
            "-mlock",
            "-e",
            "munmap.retval=-EINVAL",
            "-s",
            "uid>=1000",
            "--cri",
            "podman:/tmp/p.sock",
            "--buffer-size",
            "64K",
        ];
        let cli = Cli::try_parse_from(["mmtrace", "top"].iter().chain(&flags)).unwrap();
        let Command::Top(args) = cli.command else {
            unreachable!("parsed as top")
        };
        let top = Plan::top(&args, Some("find_vma")).unwrap();
        let trace = plan(
            &[&flags[..], &["-o", "none", "--analyze"]].concat(),
            Some("find_vma"),
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", top.session.options),
            format!("{:?}", trace.session.options)
        );
        assert_eq!(top.session.sockets.len(), 1);
        assert_eq!(top.session.sockets.len(), trace.session.sockets.len());
        let hidden = |p: &Plan| p.analysis.as_ref().map(|(_, h)| names(h));
        assert_eq!(hidden(&top), hidden(&trace));
        assert!(top.command.is_none());
        assert_eq!(top.session.options.ring_bytes, 64 << 10);
    }

    fn names(events: &[&EventDef]) -> Vec<&'static str> {
        events.iter().map(|e| e.name).collect()
    }

    #[test]
    fn by_default_everything_enriched_in_an_8m_ring() {
        let p = plan(&["-o", "json"], None).unwrap();
        assert_eq!(
            p.session.options.events.len(),
            mmtrace_events::CATALOG.len()
        );
        assert_eq!(p.session.options.ring_bytes, 8 << 20);
        assert!(p.session.options.enrich && p.session.options.features_off.is_empty());
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
            names(&p.session.options.events),
            ["mlock", "sched_process_exit", "exit_mmap"]
        );
        let selected = plan(&["-e", "mlock,sched_process_exit", "--analyze"], None).unwrap();
        assert_eq!(names(&selected.analysis.unwrap().1), ["exit_mmap"]);
    }

    #[test]
    fn alerts_alone_attach_their_calls_but_show_only_alerts() {
        let p = plan(&["-e", "mem_prot_alert", "--no-enrich"], None).unwrap();
        assert_eq!(
            names(&p.session.options.events),
            ["mmap", "mprotect", "pkey_mprotect"]
        );
        assert!(p.show.alerts);
        let mmap = by_name("mmap").unwrap();
        assert!(!p.show.lines[usize::from(mmap.id)]);
        assert!(!p.session.options.enrich);
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
        assert_eq!(p.session.options.filters.len(), 1);
        assert_eq!(p.session.options.ring_bytes, 64 << 10);
        assert_eq!(p.session.options.features_off, [Feature::FindVma]);
        assert!(
            p.session.options.roots.is_empty(),
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

//! What a command that traces resolves from its options before anything runs: the events,
//! filters and scope, the outputs, the ring, the features left off. Nothing is opened, forked
//! or attached here, so every plan is checked without root.

use std::io;

use anyhow::bail;
use mmtrace_bpf::features::{Feature, FEATURES_OFF_VAR};
use mmtrace_bpf::Options;
use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::decode::parse_size;
use mmtrace_events::derived::ProtAlert;
use mmtrace_events::scope::Scope;
use mmtrace_events::select::{parse_selection, Selection};
use mmtrace_events::{Event, EventDef};

use crate::analyze::{self, Format};
use crate::cli::{TraceArgs, WhoAndWhat};
use crate::containers;
use crate::output::{Outputs, Sink};

/// What a trace will do, worked out from its options and the environment's alone: nothing
/// is opened, forked or attached yet, so it is checked without root.
pub(crate) struct Plan {
    /// The tracer's, but for the roots, which only the forked command gives.
    pub(crate) options: Options,
    pub(crate) outputs: Outputs,
    pub(crate) show: Show,
    /// With --analyze: the report's format, and the events traced for the analysis alone,
    /// kept out of the outputs.
    pub(crate) analysis: Option<(Format, Vec<&'static EventDef>)>,
    /// The command to run and trace, and the user to run it as.
    pub(crate) command: Option<(Vec<String>, Option<String>)>,
    /// The container runtimes' sockets named by --cri, asked besides the default ones.
    pub(crate) sockets: Vec<containers::Socket>,
}

impl Plan {
    /// `features_off` is MMTRACE_FEATURES_OFF's value, if set.
    pub(crate) fn new(args: &TraceArgs, features_off: Option<&str>) -> anyhow::Result<Plan> {
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

/// The plan of `args` on this machine, MMTRACE_FEATURES_OFF applied: `top`'s too.
pub(crate) fn plan(args: &TraceArgs) -> anyhow::Result<Plan> {
    let features_off = std::env::var(FEATURES_OFF_VAR).ok();
    Plan::new(args, features_off.as_deref())
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

//! mmtrace's entry point: parses the command line and turns every failure into one line.

mod analyze;
mod cli;
mod command;
mod containers;
mod docs;
mod examples;
mod explain;
mod inband;
mod kmsg;
mod latency;
mod list;
mod manual;
mod output;
mod privilege;
mod reap;
mod serve;
mod session;
mod signals;
mod strain;
mod symbols;
mod teardown;
mod top;
mod trace;
mod units;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = parse();
    let result = match cli.command {
        cli::Command::Trace(args) => trace::run(&args),
        cli::Command::List => list::run().map(|()| ExitCode::SUCCESS),
        cli::Command::Explain { event } => explain::run(&event).map(|()| ExitCode::SUCCESS),
        cli::Command::Docs { dir } => docs::run(&dir).map(|()| ExitCode::SUCCESS),
        cli::Command::Analyze {
            file,
            format,
            flamegraph,
            weight,
        } => analyze::run(&file, format, flamegraph.as_deref().map(|p| (p, weight)))
            .map(|()| ExitCode::SUCCESS),
        cli::Command::Reap {
            pid,
            signal,
            no_release,
            force,
        } => reap::run(pid, &signal, !no_release, force).map(|()| ExitCode::SUCCESS),
        cli::Command::Serve(args) => serve::run(&args),
        cli::Command::Top(args) => top::run(&args),
        cli::Command::DocsDetections { dir } => {
            let (pages, index) = analyze::detections::pages();
            docs::write_set(&dir, pages, index, "detection pages").map(|()| ExitCode::SUCCESS)
        }
        cli::Command::Completions { shell } => {
            manual::print_completions(shell).map(|()| ExitCode::SUCCESS)
        }
        cli::Command::DocsMan { dir } => manual::write_man_pages(&dir).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`mmtrace list | head`): a normal end.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // Not eprintln!, which panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "mmtrace: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The command line. For a misspelt command clap suggests hidden ones too (`docs`, which
/// writes the reference pages): those suggestions are left out.
fn parse() -> cli::Cli {
    let err = match cli::Cli::try_parse() {
        Ok(cli) => return cli,
        Err(err) if err.kind() == ErrorKind::InvalidSubcommand => err,
        Err(err) => err.exit(),
    };
    let mmtrace = cli::Cli::command();
    let hidden: Vec<&str> = mmtrace
        .get_subcommands()
        .filter(|c| c.is_hide_set())
        .map(|c| c.get_name())
        .collect();
    let mut shown = clap::Error::new(ErrorKind::InvalidSubcommand).with_cmd(&mmtrace);
    for kind in [ContextKind::InvalidSubcommand, ContextKind::Usage] {
        if let Some(value) = err.get(kind) {
            shown.insert(kind, value.clone());
        }
    }
    if let Some(ContextValue::Strings(suggested)) = err.get(ContextKind::SuggestedSubcommand) {
        let visible: Vec<String> = suggested
            .iter()
            .filter(|s| !hidden.contains(&s.as_str()))
            .cloned()
            .collect();
        if !visible.is_empty() {
            shown.insert(
                ContextKind::SuggestedSubcommand,
                ContextValue::Strings(visible),
            );
        }
    }
    shown.exit()
}

/// The error and its causes on one line, with no control character: an error can quote
/// what a traced process, a recording or a command line held.
fn one_line(err: &anyhow::Error) -> String {
    let line = err
        .chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    mmtrace_events::text::escape_controls(&line).into_owned()
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

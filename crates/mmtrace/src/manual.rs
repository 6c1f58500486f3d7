//! Man pages and shell completions, generated from the command line's own definitions, so
//! that they say what `--help` says.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::Cli;

/// Writes mmtrace.1 and, for each command users run, mmtrace-COMMAND.1 into `dir`.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mmtrace = Cli::command();
    let mut pages = vec![("mmtrace".to_string(), mmtrace.clone())];
    for sub in mmtrace.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("mmtrace-{}", sub.get_name());
        // The page's title and its synopsis name the command as it is typed.
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("mmtrace {}", sub.get_name()));
        pages.push((name, sub));
    }
    let count = pages.len();
    for (name, command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(command.version(crate::cli::VERSION))
            .render(&mut out)
            .context("rendering a man page")?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(
        std::io::stderr(),
        "mmtrace: wrote {count} man pages to {}",
        dir.display()
    )?;
    Ok(())
}

/// Prints the completion script for `shell` on standard output.
pub fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mmtrace", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(())
}

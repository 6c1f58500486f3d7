//! Output formats for traced events: Tracee-style JSON lines, an aligned table, or nothing.

mod json;
mod table;

use std::fs::File;
use std::io::{self, IsTerminal, Write};

use anyhow::{bail, Context as _};
use mmtrace_events::enrich::ProtAlert;
use mmtrace_events::Event;

use crate::inband::Note;

pub use json::JsonLines;
pub use table::{Table, Width, DEFAULT_COLUMNS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    None,
}

/// `-o FORMAT[:PATH]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub format: Format,
    pub path: Option<String>,
}

impl OutputSpec {
    /// Parses `table`, `json`, `none`, optionally followed by `:PATH`.
    pub fn parse(spec: &str) -> anyhow::Result<OutputSpec> {
        let (name, path) = match spec.split_once(':') {
            Some((name, "")) => bail!("output '{spec}' has an empty path after ':': give a file, as in {name}:/tmp/trace.json"),
            Some((name, path)) => (name, Some(path.to_string())),
            None => (spec, None),
        };
        let format = match name {
            "table" => Format::Table,
            "json" => Format::Json,
            "none" => Format::None,
            other => bail!("unknown output format '{other}': use table, json or none, optionally followed by :PATH"),
        };
        if format == Format::None && path.is_some() {
            bail!("output 'none' takes no path");
        }
        Ok(OutputSpec { format, path })
    }

    /// Table on a terminal, JSON lines for anything else, as tools that are piped usually do.
    pub fn default_for_stdout() -> OutputSpec {
        let format = if io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        };
        OutputSpec { format, path: None }
    }
}

/// The sinks gather lines in a buffer of their own and write it once it holds this much (and
/// on flush), rather than through a BufWriter: copying each line into one was as costly as
/// writing the line.
const WRITE_BYTES: usize = 1 << 16;

/// The hex digits of `v` without leading zeros, as `{v:x}` writes them but without
/// `core::fmt`, which cost more than the rest of a row.
fn hex_digits(v: u64, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut start = buf.len();
    let mut rest = v;
    loop {
        start -= 1;
        buf[start] = DIGITS[(rest & 0xf) as usize];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Where events go.
pub trait Sink {
    fn event(&mut self, event: &Event) -> io::Result<()>;
    /// The mem_prot_alert `event` raised, right after the event when both are shown.
    fn alert(&mut self, event: &Event, alert: &ProtAlert) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// An in-band line: only outputs that make recordings write it.
    fn note(&mut self, _note: &Note) -> io::Result<()> {
        Ok(())
    }
}

/// Discards events: for counting only.
struct Discard;

impl Sink for Discard {
    fn event(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }
    fn alert(&mut self, _: &Event, _: &ProtAlert) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens the sink before anything is attached, so an unwritable path fails early.
pub fn open(spec: &OutputSpec) -> anyhow::Result<Box<dyn Sink>> {
    let writer: Box<dyn Write> = match &spec.path {
        Some(path) => Box::new(File::create(path).with_context(|| {
            format!("cannot write output file {path}: check the directory exists and is writable")
        })?),
        None => Box::new(io::stdout().lock()),
    };
    Ok(match spec.format {
        Format::Json => Box::new(JsonLines::new(writer)),
        Format::Table => Box::new(Table::new(
            writer,
            match spec.path {
                None if io::stdout().is_terminal() => Width::Terminal,
                _ => Width::Columns(DEFAULT_COLUMNS),
            },
        )),
        Format::None => Box::new(Discard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            OutputSpec::parse("json").unwrap(),
            OutputSpec {
                format: Format::Json,
                path: None
            }
        );
        assert_eq!(
            OutputSpec::parse("table:/tmp/x").unwrap(),
            OutputSpec {
                format: Format::Table,
                path: Some("/tmp/x".into())
            }
        );
        assert!(OutputSpec::parse("yaml")
            .unwrap_err()
            .to_string()
            .contains("unknown output format 'yaml'"));
        assert!(OutputSpec::parse("json:").is_err());
        assert!(OutputSpec::parse("none:/x").is_err());
    }
}

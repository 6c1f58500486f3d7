//! Output formats for traced events: Tracee-style JSON lines, an aligned table, or nothing.

mod json;
mod note;
mod table;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, IsTerminal, Seek, Write};
use std::os::fd::AsFd;
use std::rc::Rc;

use anyhow::{bail, Context as _};
use mmtrace_events::derived::ProtAlert;
use mmtrace_events::Event;

pub use json::JsonLines;
pub use note::{Note, Pressure};
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

    /// Whether events are written to standard output.
    pub fn events_on_stdout(&self) -> bool {
        self.path.is_none() && self.format != Format::None
    }
}

/// Every `-o` of a trace: the same events to each, as Tracee's repeated `--output` does, so a
/// recording and a table on the terminal show the very same calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs(Vec<OutputSpec>);

impl Outputs {
    /// The `-o` values in order; none means the default for standard output.
    pub fn parse(texts: &[String]) -> anyhow::Result<Outputs> {
        if texts.is_empty() {
            return Ok(Outputs(vec![OutputSpec::default_for_stdout()]));
        }
        let specs = texts
            .iter()
            .map(|t| OutputSpec::parse(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if specs.len() > 1 && specs.iter().any(|s| s.format == Format::None) {
            bail!("-o none cannot be combined with other outputs: give either none or the outputs wanted");
        }
        if specs.iter().filter(|s| s.events_on_stdout()).count() > 1 {
            bail!("two outputs on standard output would mix their lines: give all but one a path, as in -o json:/tmp/trace.json");
        }
        let mut paths: Vec<&str> = specs.iter().filter_map(|s| s.path.as_deref()).collect();
        paths.sort_unstable();
        if let Some(w) = paths.windows(2).find(|w| w[0] == w[1]) {
            bail!("two outputs write to {}: give each its own file", w[0]);
        }
        Ok(Outputs(specs))
    }

    /// Whether events are written to standard output.
    pub fn events_on_stdout(&self) -> bool {
        self.0.iter().any(OutputSpec::events_on_stdout)
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
    /// The bytes of lines gathered and not written yet: where the last line handed over ends
    /// in what the next write will carry.
    fn held(&self) -> usize {
        0
    }
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

/// Opens every output before anything is attached, so an unwritable path fails early. The
/// sink never fails: once a write to an output does, that output writes no more and counts
/// what it drops, in its `Delivery`.
pub fn open(outputs: &Outputs) -> anyhow::Result<(Box<dyn Sink>, Deliveries)> {
    let mut sinks = Vec::new();
    let mut deliveries = Vec::new();
    for spec in &outputs.0 {
        let (sink, delivery) = open_one(spec)?;
        let target = spec
            .path
            .clone()
            .unwrap_or_else(|| "standard output".into());
        sinks.push(sink);
        deliveries.push((target, delivery));
    }
    let sink = match sinks.len() {
        1 => sinks.pop().expect("one sink"),
        _ => Box::new(Tee(sinks)),
    };
    Ok((sink, Deliveries(deliveries)))
}

fn open_one(spec: &OutputSpec) -> anyhow::Result<(Box<dyn Sink>, Delivery)> {
    let delivery = Delivery::default();
    let file = match &spec.path {
        _ if spec.format == Format::None => return Ok((Box::new(Discard), delivery)),
        Some(path) => File::create(path).with_context(|| {
            format!("cannot write output file {path}: check the directory exists and is writable")
        })?,
        // Its own descriptor, written without the line buffering of `io::stdout`: the sinks
        // hand over whole lines already.
        None => File::from(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("standard output is closed: give a file with -o FORMAT:PATH")?,
        ),
    };
    let out = WholeLines {
        file,
        state: Rc::clone(&delivery.0),
    };
    let inner: Box<dyn Sink> = match spec.format {
        Format::Json => Box::new(JsonLines::new(out)),
        _ => Box::new(Table::new(
            out,
            match spec.path {
                None if io::stdout().is_terminal() => Width::Terminal,
                // As ls and ps take it: the width a file or a pipe is to have.
                _ => Width::Columns(
                    std::env::var("COLUMNS")
                        .ok()
                        .and_then(|c| c.parse().ok())
                        .filter(|&c| c > 0)
                        .unwrap_or(DEFAULT_COLUMNS),
                ),
            },
        )),
    };
    let ledger = Ledger {
        inner,
        state: Rc::clone(&delivery.0),
        pending: Vec::new(),
    };
    Ok((Box::new(ledger), delivery))
}

/// The same lines to several outputs. Each output keeps its own failures (a `Ledger`), so one
/// that fails does not stop the others.
struct Tee(Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.event(event))
    }
    fn alert(&mut self, event: &Event, alert: &ProtAlert) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.alert(event, alert))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }
    fn note(&mut self, note: &Note) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.note(note))
    }
}

/// What became of the events at each output, by where it writes.
pub struct Deliveries(Vec<(String, Delivery)>);

impl Deliveries {
    /// Whether no output can take another line.
    pub fn all_failed(&self) -> bool {
        self.0.iter().all(|(_, d)| d.failure().is_some())
    }

    /// The bytes every output has taken so far.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(_, d)| d.0.bytes.get()).sum()
    }

    /// Where the outputs write, for a message.
    pub fn targets(&self) -> String {
        let targets: Vec<&str> = self.0.iter().map(|(t, _)| t.as_str()).collect();
        targets.join(", ")
    }

    /// The outputs whose writes failed: where they wrote, and what became of their events.
    pub fn failed(&self) -> impl Iterator<Item = (&str, &Delivery)> {
        self.0
            .iter()
            .filter(|(_, d)| d.failure().is_some())
            .map(|(t, d)| (t.as_str(), d))
    }
}

/// What became of the events handed to the output.
#[derive(Clone, Default)]
pub struct Delivery(Rc<DeliveryState>);

#[derive(Default)]
struct DeliveryState {
    /// Successful writes so far: each one took every line the sink held.
    writes: Cell<u64>,
    /// What those writes took.
    bytes: Cell<u64>,
    failure: RefCell<Option<io::Error>>,
    /// Events whose lines went out whole.
    written: Cell<u64>,
    unwritten: Cell<u64>,
    /// Of the write that failed, the bytes of the whole lines that went out all the same.
    kept: Cell<usize>,
}

impl Delivery {
    /// Events whose lines were written whole.
    pub fn written(&self) -> u64 {
        self.0.written.get()
    }

    /// Events traced but not written, because a write had failed.
    pub fn unwritten(&self) -> u64 {
        self.0.unwritten.get()
    }

    /// The write that failed, after which nothing more was written.
    pub fn failure(&self) -> Option<std::cell::Ref<'_, io::Error>> {
        std::cell::Ref::filter_map(self.0.failure.borrow(), Option::as_ref).ok()
    }
}

/// Counts the events a sink holds between its writes, so that when one fails part way, the
/// events whose lines that write got out whole are known from the rest.
struct Ledger {
    inner: Box<dyn Sink>,
    state: Rc<DeliveryState>,
    /// Where the line of each event handed to `inner` since its last successful write ends,
    /// in the bytes that write carries.
    pending: Vec<usize>,
}

impl Ledger {
    fn settle(&mut self, writes_before: u64, result: io::Result<()>) {
        let state = &self.state;
        match result {
            Ok(()) if state.writes.get() != writes_before => {
                state
                    .written
                    .set(state.written.get() + self.pending.len() as u64);
                self.pending.clear();
            }
            Ok(()) => {}
            Err(e) => {
                let out = self
                    .pending
                    .iter()
                    .filter(|&&end| end <= state.kept.get())
                    .count();
                state.written.set(state.written.get() + out as u64);
                state
                    .unwritten
                    .set(state.unwritten.get() + (self.pending.len() - out) as u64);
                self.pending.clear();
                *state.failure.borrow_mut() = Some(e);
            }
        }
    }
}

impl Ledger {
    /// Hands one line to the inner sink, unless a write has failed: writing on after that
    /// would leave a hole in the middle of the output. `counts` says whether it is an event.
    fn line(&mut self, counts: bool, write: impl FnOnce(&mut dyn Sink) -> io::Result<()>) {
        if self.state.failure.borrow().is_some() {
            let n = u64::from(counts);
            self.state.unwritten.set(self.state.unwritten.get() + n);
            return;
        }
        let writes = self.state.writes.get();
        let result = write(self.inner.as_mut());
        // A write that failed leaves the sink's buffer as it was, this line at its end.
        if counts {
            self.pending.push(self.inner.held());
        }
        self.settle(writes, result);
    }
}

impl Sink for Ledger {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.line(true, |s| s.event(event));
        Ok(())
    }

    fn alert(&mut self, event: &Event, alert: &ProtAlert) -> io::Result<()> {
        self.line(false, |s| s.alert(event, alert));
        Ok(())
    }

    fn note(&mut self, note: &Note) -> io::Result<()> {
        self.line(false, |s| s.note(note));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.state.failure.borrow().is_none() {
            let writes = self.state.writes.get();
            let result = self.inner.flush();
            self.settle(writes, result);
        }
        Ok(())
    }
}

/// Writes what the sinks hand it, whole lines: when a write fails part way (a full disk), the
/// part of a line already in the file is cut off again, so the file ends with a whole line.
struct WholeLines {
    file: File,
    state: Rc<DeliveryState>,
}

impl WholeLines {
    /// Cuts the last `n` bytes written off a regular file, unless someone wrote after them.
    /// Nothing can be taken back from a pipe or a terminal, nor sought in one: their reader
    /// has what it has (a pipe's is gone when its writes fail).
    fn take_back(&mut self, n: usize) -> io::Result<()> {
        let meta = self.file.metadata()?;
        if !meta.is_file() {
            return Ok(());
        }
        let end = self.file.stream_position()?;
        if meta.len() == end {
            self.file.set_len(end - n as u64)?;
        }
        Ok(())
    }
}

impl Write for WholeLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let err = match self.file.write(&buf[done..]) {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            let kept = buf[..done]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
            self.state.kept.set(kept);
            if done > kept {
                if let Err(cut) = self.take_back(done - kept) {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{err}, and cutting off the partly written line failed: {cut}"),
                    ));
                }
            }
            return Err(err);
        }
        self.state.writes.set(self.state.writes.get() + 1);
        self.state
            .bytes
            .set(self.state.bytes.get() + buf.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

    #[test]
    fn several_outputs() {
        let parse = |texts: &[&str]| {
            Outputs::parse(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        let both = parse(&["json:/tmp/a", "table"]).unwrap();
        assert!(both.events_on_stdout());
        assert!(!parse(&["json:/tmp/a", "table:/tmp/b"])
            .unwrap()
            .events_on_stdout());
        for (texts, error) in [
            (&["json", "table"][..], "two outputs on standard output"),
            (
                &["json:/tmp/a", "table:/tmp/a"],
                "two outputs write to /tmp/a",
            ),
            (&["none", "json:/tmp/a"], "-o none cannot be combined"),
        ] {
            assert!(parse(texts).unwrap_err().contains(error), "{texts:?}");
        }
    }
}

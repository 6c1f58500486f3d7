//! `mmtrace trace --analyze`: a sink that passes events on and analyzes the very JSON lines a
//! recording would hold, so live and recorded analyses cannot disagree.

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use mmtrace_events::Event;

use super::{Analyzer, Format};
use crate::output::{Format as OutputFormat, JsonLines, OutputSpec, Sink};

/// Hands each complete line written into it to the analyzer.
struct Feed {
    analyzer: Rc<RefCell<Analyzer>>,
    line: Vec<u8>,
}

impl Write for Feed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for part in buf.split_inclusive(|&b| b == b'\n') {
            self.line.extend_from_slice(part);
            if self.line.ends_with(b"\n") {
                self.analyzer.borrow_mut().line(&self.line, 0);
                self.line.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chosen output, followed by the analyzer.
struct Live {
    inner: Box<dyn Sink>,
    json: JsonLines<Feed>,
}

/// The analysis of a live trace, to report once tracing ends.
pub struct Analysis(Rc<RefCell<Analyzer>>);

/// With `analyze`, puts the analyzer behind `sink`; without, leaves the sink alone.
pub fn wrap(sink: Box<dyn Sink>, analyze: bool) -> (Box<dyn Sink>, Option<Analysis>) {
    if !analyze {
        return (sink, None);
    }
    let analyzer = Rc::new(RefCell::new(Analyzer::new()));
    let feed = Feed {
        analyzer: Rc::clone(&analyzer),
        line: Vec::new(),
    };
    let live = Live {
        inner: sink,
        json: JsonLines::new(feed),
    };
    (Box::new(live), Some(Analysis(analyzer)))
}

impl Analysis {
    /// Prints the report on stdout, or on stderr when the events themselves went to stdout.
    pub fn print(self, format: Format, spec: &OutputSpec) -> io::Result<()> {
        let report = self.0.borrow_mut().finish("live trace");
        let events_on_stdout = spec.path.is_none() && spec.format != OutputFormat::None;
        if events_on_stdout {
            let mut err = io::stderr().lock();
            report.write(&mut err, format)
        } else {
            let mut out = io::stdout().lock();
            report.write(&mut out, format)?;
            out.flush()
        }
    }
}

impl Sink for Live {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.json.event(event)?;
        self.inner.event(event)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines reach the analyzer whole however the writes split them.
    #[test]
    fn lines_split_across_writes_arrive_whole() {
        let analyzer = Rc::new(RefCell::new(Analyzer::new()));
        let mut feed = Feed {
            analyzer: Rc::clone(&analyzer),
            line: Vec::new(),
        };
        let line = r#"{"timestamp":1,"hostProcessId":7,"eventName":"munlockall","args":[]}"#;
        let two = format!("{line}\n{line}\n");
        let (a, b) = two.as_bytes().split_at(20);
        feed.write_all(a).unwrap();
        feed.write_all(b).unwrap();
        let report = analyzer.borrow_mut().finish("test");
        assert_eq!((report.lines, report.events, report.skipped), (2, 2, 0));
    }
}

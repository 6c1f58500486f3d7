//! `mmtrace trace --analyze`: a sink that passes events on and analyzes them as they come.

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use mmtrace_events::Event;

use super::{Analyzer, Format};
use crate::output::{OutputSpec, Sink};

/// The chosen output, followed by the analyzer.
struct Live {
    inner: Box<dyn Sink>,
    analyzer: Rc<RefCell<Analyzer>>,
}

/// The analysis of a live trace, to report once tracing ends.
pub struct Analysis(Rc<RefCell<Analyzer>>);

/// With `analyze`, puts the analyzer behind `sink`; without, leaves the sink alone.
pub fn wrap(sink: Box<dyn Sink>, analyze: bool) -> (Box<dyn Sink>, Option<Analysis>) {
    if !analyze {
        return (sink, None);
    }
    let analyzer = Rc::new(RefCell::new(Analyzer::new()));
    let live = Live {
        inner: sink,
        analyzer: Rc::clone(&analyzer),
    };
    (Box::new(live), Some(Analysis(analyzer)))
}

impl Analysis {
    /// Prints the report on stdout, or on stderr when the events themselves went to stdout.
    pub fn print(self, format: Format, spec: &OutputSpec) -> io::Result<()> {
        let report = self.0.borrow_mut().finish("live trace");
        if spec.events_on_stdout() {
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
        // Read straight from the event: writing a JSON line and parsing it back cost more
        // than the ring could wait for at 150,000 events a second.
        self.analyzer.borrow_mut().event(event);
        self.inner.event(event)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

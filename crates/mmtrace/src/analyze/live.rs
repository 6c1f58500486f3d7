//! `mmtrace trace --analyze`: a sink that passes events on and analyzes them as they come.

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use mmtrace_events::derived::ProtAlert;
use mmtrace_events::{Event, EventDef, Role, CATALOG};

use super::{Analyzer, Format};
use crate::output::Note;
use crate::output::Sink;

/// The chosen output, followed by the analyzer.
struct Live {
    inner: Box<dyn Sink>,
    analyzer: Rc<RefCell<Analyzer>>,
    /// Events traced for the analysis alone, kept out of the output.
    hidden: Vec<&'static EventDef>,
}

/// What the analysis needs whatever was selected: it folds a process into its report once it
/// has exited, which keeps its state bounded, and a kill's memory is back when the victim's
/// teardown ends.
fn needed(e: &EventDef) -> bool {
    matches!(e.role, Role::Exits | Role::TornDown)
}

/// The analysis of a live trace, to report once tracing ends.
pub struct Analysis(Rc<RefCell<Analyzer>>);

/// What the analysis needs that `events`, the user's selection, lacks: to be traced for the
/// analysis alone.
pub fn needed_besides(events: &[&'static EventDef]) -> Vec<&'static EventDef> {
    CATALOG
        .iter()
        .filter(|e| needed(e) && !events.contains(e))
        .collect()
}

/// Puts the analyzer behind `sink`; it keeps the `hidden` events out of the output.
pub fn wrap(sink: Box<dyn Sink>, hidden: Vec<&'static EventDef>) -> (Box<dyn Sink>, Analysis) {
    let analyzer = Rc::new(RefCell::new(Analyzer::live()));
    let live = Live {
        inner: sink,
        analyzer: Rc::clone(&analyzer),
        hidden,
    };
    (Box::new(live), Analysis(analyzer))
}

impl Analysis {
    /// Prints the report on stdout, or on stderr when the events themselves went to stdout.
    pub fn print(self, format: Format, events_on_stdout: bool) -> io::Result<()> {
        let report = self.0.borrow_mut().finish("live trace");
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
        // Read straight from the event: writing a JSON line and parsing it back cost more
        // than the ring could wait for at 150,000 events a second.
        self.analyzer.borrow_mut().event(event);
        if self.hidden.iter().any(|&h| std::ptr::eq(h, event.def)) {
            return Ok(());
        }
        self.inner.event(event)
    }

    fn note(&mut self, note: &Note) -> io::Result<()> {
        self.analyzer.borrow_mut().note(note);
        self.inner.note(note)
    }

    fn alert(&mut self, event: &Event, alert: &ProtAlert) -> io::Result<()> {
        self.analyzer.borrow_mut().alert(event, alert);
        self.inner.alert(event, alert)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

//! What can stop the tracer, each as one line for the user.

use crate::features::TooOld;
use crate::scope::ScopeError;
use crate::system::SystemError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    TooOld(#[from] TooOld),
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    #[error("attaching the {event} hook failed: {detail}")]
    Attach { event: &'static str, detail: String },
    #[error("none of the selected events exists on this kernel: {0}")]
    NothingAvailable(String),
    #[error("reading the event ring buffer failed: {0}")]
    Read(std::io::Error),
    #[error("reading the metrics maps failed: {0}")]
    Metrics(String),
}

/// One line from an aya error and its causes. Verifier logs run to pages, and their first
/// line is often a note: the line that says why is the last before the verifier's totals.
pub(crate) fn one_line(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    let mut lines = out.lines().map(str::trim);
    let first = lines.next().unwrap_or_default();
    let totals = ["verification time", "processed ", "stack depth"];
    let cause = lines
        .take_while(|l| !totals.iter().any(|t| l.starts_with(t)))
        .filter(|l| !l.is_empty())
        .last();
    match cause {
        Some(cause) => format!("{first} ... {cause}"),
        None => first.to_string(),
    }
}

//! `mmtrace analyze` and `mmtrace trace --analyze`: from recorded or live events to answers.

pub mod detections;
mod kills;
mod ledger;
mod live;
mod record;
mod report;
mod stacks;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use anyhow::Context as _;
use mmtrace_events::derived::{Alert, ProtAlert};
use mmtrace_events::{RetKind, Role};

use detections::{Detection, DETECTIONS};
pub use kills::Kill;
use kills::Kills;
use ledger::Ledger;
pub use live::{needed_besides, wrap as live};
use record::Record;
pub use report::{Format, Report};
pub use stacks::Weight;

use crate::inband;
use crate::latency::Latency;

/// How far out of order, by return time, events may arrive. They are written to the ring in
/// the order calls return, give or take the moments between a call's return and its record,
/// so a short window suffices, and it bounds what a live analysis holds at a million events
/// a second.
const REORDER_NS: u64 = 50_000_000;
/// Malformed lines reported one by one; past this only counted.
const MALFORMED_SHOWN: usize = 20;
/// Processes a detection is described for; past this, further ones are only counted.
const MAX_INSTANCES: usize = 100;

#[derive(Debug, Default)]
struct Thread {
    comm: String,
    calls: u64,
    time_ns: u64,
}

/// A process as the analysis tells processes apart: its host pid and its start time, so a
/// reused pid never merges two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    pid: u32,
    start: u64,
}

#[derive(Debug)]
struct Process {
    /// When the process started, ns since the epoch (the kernel's start of its main
    /// thread, which every line carries as processStartTime); 0 while unknown, which only
    /// a recording made before lines carried it leaves until the main thread's first line.
    start: u64,
    comm: String,
    calls: u64,
    time_ns: u64,
    lock_calls: u64,
    unlock_calls: u64,
    failures: BTreeMap<(String, String), u64>,
    threads: HashMap<u32, Thread>,
    ledger: Ledger,
    /// Return times of the munmaps of the last second.
    munmaps: VecDeque<u64>,
    munmap_peak: usize,
    /// Its detections: the detection and its finding, None past `MAX_INSTANCES`.
    findings: Vec<(&'static Detection, Option<usize>)>,
    /// Calls that raised a detection that alerts raise too, within the reorder window
    /// (detection, entry time), so the `mem_prot_alert` line about the same call adds nothing.
    prot_seen: VecDeque<(&'static str, u64)>,
}

impl Process {
    fn new(r: &Record, page_size: u64) -> Process {
        Process {
            start: r.process_start,
            comm: String::new(),
            calls: 0,
            time_ns: 0,
            lock_calls: 0,
            unlock_calls: 0,
            failures: BTreeMap::new(),
            threads: HashMap::new(),
            ledger: Ledger::new(page_size),
            munmaps: VecDeque::new(),
            munmap_peak: 0,
            findings: Vec::new(),
            prot_seen: VecDeque::new(),
        }
    }

    /// Whether `r` comes from another process that got the same pid: the key is the host
    /// pid and the process's start, Tracee's process identity.
    fn is_other(&self, r: &Record) -> bool {
        self.start != 0 && r.process_start != 0 && r.process_start != self.start
    }

    fn key(&self, pid: u32) -> Key {
        Key {
            pid,
            start: self.start,
        }
    }
}

/// One detection raised for one process: the first occurrence and how many followed.
#[derive(Debug, Clone)]
struct Finding {
    detection: &'static Detection,
    key: Key,
    comm: String,
    first_at: u64,
    line: usize,
    count: u64,
    detail: String,
}

/// A detection raised in a process, as a live view lists it.
pub struct Sighting<'a> {
    pub detection: &'static Detection,
    pub pid: u32,
    pub comm: &'a str,
    pub count: u64,
}

/// Instances of one detection past `MAX_INSTANCES`: only counted.
#[derive(Debug, Default, Clone, Copy)]
struct Overflow {
    kept: usize,
    processes: u64,
    count: u64,
}

/// Reads events one at a time, in any order within `REORDER_NS`, and builds the report.
#[derive(Debug)]
pub struct Analyzer {
    /// The page size of the machine the calls were made on, to which its kernel rounded
    /// the ranges they locked. A recording does not say it, so it is taken to be this
    /// machine's, which a live trace's is.
    page_size: u64,
    pending: BTreeMap<(u64, u64), Record>,
    seq: u64,
    newest: u64,
    lines: u64,
    events: u64,
    malformed: Vec<(usize, String)>,
    skipped: u64,
    /// Lines that repeat an event already read: counted once.
    duplicates: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    /// The processes not known to have exited, by host pid: two never share a pid at once.
    processes: HashMap<u32, Process>,
    /// The processes that have exited, folded into what the report needs, so the state
    /// stays bounded however many processes come and go.
    folded: report::Folded,
    kills: Kills,
    findings: Vec<Finding>,
    overflow: HashMap<&'static str, Overflow>,
    /// Events the recording says were lost, per event (in-band `mmtrace_lost` lines).
    lost: BTreeMap<String, u64>,
    /// Events of processes whose lines carry no processStartTime (older recordings).
    guessed_starts: u64,
    sites: stacks::CallSites,
    /// The calls of each event of the catalog and the time they took.
    latency: BTreeMap<&'static str, Latency>,
}

impl Analyzer {
    pub fn new() -> Analyzer {
        Analyzer {
            page_size: rustix::param::page_size() as u64,
            pending: BTreeMap::new(),
            seq: 0,
            newest: 0,
            lines: 0,
            events: 0,
            malformed: Vec::new(),
            skipped: 0,
            duplicates: 0,
            first_ts: None,
            last_ts: 0,
            processes: HashMap::new(),
            folded: report::Folded::default(),
            kills: Kills::default(),
            findings: Vec::new(),
            overflow: HashMap::new(),
            lost: BTreeMap::new(),
            guessed_starts: 0,
            sites: stacks::CallSites::default(),
            latency: BTreeMap::new(),
        }
    }

    /// A live analysis: signals to the tracer itself (its stop) are no kill.
    pub fn live() -> Analyzer {
        let mut a = Analyzer::new();
        a.kills.ignore(std::process::id());
        a
    }

    /// Takes one in-band line of a live trace.
    pub fn note(&mut self, note: &crate::output::Note) {
        self.lines += 1;
        self.push(Record::from_note(note));
    }

    /// Takes one live event, and the alert it raises if any.
    pub fn event(&mut self, e: &mmtrace_events::Event) {
        self.lines += 1;
        self.push(Record::from_event(e));
    }

    /// Takes the mem_prot_alert a live event raised, as the JSON output writes it.
    pub fn alert(&mut self, e: &mmtrace_events::Event, alert: &ProtAlert) {
        self.lines += 1;
        self.push(Record::alert_of(e, alert));
    }

    /// Takes one line of a recording; `number` counts from 1.
    pub fn line(&mut self, text: &[u8], number: usize) {
        self.lines += 1;
        if text.trim_ascii().is_empty() {
            return;
        }
        match Record::parse(text, number) {
            Ok(r) if self.is_copy(&r) => self.duplicates += 1,
            Ok(r) => self.push(r),
            Err(why) => {
                self.skipped += 1;
                if self.malformed.len() < MALFORMED_SHOWN {
                    self.malformed.push((number, why));
                }
            }
        }
    }

    /// Whether `r` is an event already read (a line written twice, as a recording whose lines
    /// were duplicated has it). Its copy, read at about the same place, is still waiting for
    /// order, so no more is kept to find it.
    fn is_copy(&self, r: &Record) -> bool {
        self.pending
            .range((r.end(), 0)..=(r.end(), u64::MAX))
            .any(|(_, p)| p.same_event(r))
    }

    fn push(&mut self, r: Record) {
        self.newest = self.newest.max(r.end());
        self.seq += 1;
        self.pending.insert((r.end(), self.seq), r);
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0.saturating_add(REORDER_NS) > self.newest {
                break;
            }
            let r = entry.remove();
            self.apply(&r);
        }
    }

    fn apply(&mut self, r: &Record) {
        if r.name() == inband::LOST {
            for (event, n) in r.json_args().filter(|(name, _)| *name != "since") {
                *self.lost.entry(event.to_string()).or_default() += n.as_u64().unwrap_or(0);
            }
            return;
        }
        if r.name() == inband::PRESSURE {
            self.kills.apply(r);
            return;
        }
        self.events += 1;
        self.first_ts = Some(self.first_ts.map_or(r.ts(), |t| t.min(r.ts())));
        self.last_ts = self.last_ts.max(r.end());
        self.kills.apply(r);
        // The exit of a process already folded (its pid now another's) ends nothing more.
        let other = self.processes.get(&r.pid()).is_some_and(|p| p.is_other(r));
        if r.role() == Role::Exits {
            if !other {
                self.exit(r.pid());
            }
            return;
        }
        if r.role().is_kernel_act() {
            return;
        }
        self.guessed_starts += u64::from(r.start_guessed);
        if other {
            self.exit(r.pid());
        }
        let p = self
            .processes
            .entry(r.pid())
            .or_insert_with(|| Process::new(r, self.page_size));
        if p.start == 0 {
            p.start = r.process_start;
        }
        set(&mut p.comm, &r.comm());
        if r.role() == Role::Alerts {
            self.prot_alert(r);
            return;
        }
        if let Some(e) = r.event() {
            // A kernel event is an instant: it has no duration.
            let duration = (e.def.ret != RetKind::None).then_some(e.duration_ns);
            let latency = self.latency.entry(e.def.name).or_default();
            latency.record(duration, !r.ok());
        }
        p.calls += 1;
        p.time_ns = p.time_ns.saturating_add(r.duration());
        let t = p.threads.entry(r.tid()).or_default();
        set(&mut t.comm, &r.comm());
        t.calls += 1;
        t.time_ns = t.time_ns.saturating_add(r.duration());
        p.lock_calls += u64::from(r.role().locks());
        p.unlock_calls += u64::from(r.role().unlocks());
        if let Some(errno) = &r.errno() {
            *p.failures
                .entry((r.name().to_string(), errno.clone()))
                .or_default() += 1;
        }
        p.ledger.apply(r);
        if r.role() == Role::Unmaps {
            p.munmaps.push_back(r.end());
            while p
                .munmaps
                .front()
                .is_some_and(|&t| t.saturating_add(1_000_000_000) <= r.end())
            {
                p.munmaps.pop_front();
            }
            p.munmap_peak = p.munmap_peak.max(p.munmaps.len());
        }
        self.sites.add(r);
        self.detect(r);
    }

    /// Runs every detection's rule on a call.
    fn detect(&mut self, r: &Record) {
        let Some(p) = self.processes.get(&r.pid()) else {
            return;
        };
        let raised: Vec<(&'static Detection, String)> = DETECTIONS
            .iter()
            .filter_map(|d| Some((d, (d.rule)(r, p)?)))
            .collect();
        for (d, detail) in raised {
            self.raise(d, r, detail);
        }
    }

    /// The process with host pid `pid` has exited: fold it into the report.
    fn exit(&mut self, pid: u32) {
        let Some(p) = self.processes.remove(&pid) else {
            return;
        };
        self.kills.forget_caller(pid);
        settle_findings(&mut self.findings, &p);
        self.folded.add(report::process(p.key(pid), &p));
    }

    fn prot_alert(&mut self, r: &Record) {
        let Some(alert) = r.arg_str("alert").and_then(Alert::parse) else {
            return;
        };
        let Some(det) = Detection::of_alert(alert) else {
            return;
        };
        let path = r.arg_str("pathname").filter(|p| !p.is_empty());
        let detail = format!(
            "{} at {}{}",
            alert.text(),
            r.arg_str("addr").unwrap_or("?"),
            path.map_or(String::new(), |p| format!(" ({p})"))
        );
        self.raise(det, r, detail);
    }

    /// Counts the detection against the process; the first occurrence is the one described.
    fn raise(&mut self, detection: &'static Detection, r: &Record, detail: String) {
        let Some(p) = self.processes.get_mut(&r.pid()) else {
            return;
        };
        // A call and the alert the kernel side raised for it are one sighting, whichever
        // comes first.
        if !detection.alerts.is_empty() {
            if p.prot_seen
                .iter()
                .any(|&(id, ts)| id == detection.id && ts == r.ts())
            {
                return;
            }
            let window = r.ts().saturating_sub(2 * REORDER_NS);
            while p.prot_seen.front().is_some_and(|&(_, ts)| ts < window) {
                p.prot_seen.pop_front();
            }
            p.prot_seen.push_back((detection.id, r.ts()));
        }
        let again = u64::from(detection.settle.is_none());
        let overflow = self.overflow.entry(detection.id).or_default();
        match p.findings.iter().find(|(d, _)| std::ptr::eq(*d, detection)) {
            Some((_, Some(i))) => self.findings[*i].count += again,
            Some((_, None)) => overflow.count += again,
            None if overflow.kept >= MAX_INSTANCES => {
                overflow.processes += 1;
                overflow.count += 1;
                p.findings.push((detection, None));
            }
            None => {
                overflow.kept += 1;
                p.findings.push((detection, Some(self.findings.len())));
                self.findings.push(Finding {
                    detection,
                    key: p.key(r.pid()),
                    comm: r.comm().into_owned(),
                    first_at: r.ts(),
                    line: r.line,
                    count: 1,
                    detail,
                });
            }
        }
    }

    /// The latest `n` kills, newest first, as far as the events so far tell.
    pub fn recent_kills(&self, n: usize) -> Vec<Kill> {
        self.kills.recent(n)
    }

    /// The latest `n` detections raised, newest first: each the first sighting of a detection
    /// in a process, with how often it was raised there since.
    pub fn recent_findings(&self, n: usize) -> impl Iterator<Item = Sighting<'_>> {
        self.findings.iter().rev().take(n).map(|f| Sighting {
            detection: f.detection,
            pid: f.key.pid,
            comm: &f.comm,
            count: f.count,
        })
    }

    /// Applies what is still waiting for order and builds the report.
    pub fn finish(&mut self, source: &str) -> Report {
        while let Some((_, r)) = self.pending.pop_first() {
            self.apply(&r);
        }
        for p in self.processes.values() {
            settle_findings(&mut self.findings, p);
        }
        report::build(self, source)
    }
}

/// What a finding can say only once its process is done (a storm's peak rate).
fn settle_findings(findings: &mut [Finding], p: &Process) {
    for &(d, i) in &p.findings {
        if let (Some(settle), Some(i)) = (d.settle, i) {
            findings[i].detail = settle(p);
        }
    }
}

/// `mmtrace analyze FILE`; `-` reads standard input, for `mmtrace trace -o json | mmtrace analyze -`.
/// With `flamegraph`, also draws the calls by stack into that SVG file.
pub fn run(path: &Path, format: Format, flamegraph: Option<(&Path, Weight)>) -> anyhow::Result<()> {
    let stdin = path == Path::new("-");
    let source = match stdin {
        true => "standard input".to_string(),
        false => path.display().to_string(),
    };
    let input: Box<dyn io::Read> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| {
            format!(
                "cannot read recording {}: give a file written by `mmtrace trace -o json:FILE`",
                path.display()
            )
        })?)
    };
    let mut analyzer = Analyzer::new();
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {source}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        analyzer.line(&buf, number);
    }
    let report = analyzer.finish(&source);
    if report.events == 0 {
        match report.malformed.first() {
            Some(m) => anyhow::bail!(
                "{source} has no usable event in {} lines (line {}: {}): is it a `mmtrace trace -o json` recording?",
                report.lines,
                m.line,
                m.error
            ),
            None if report.lines == 0 => anyhow::bail!(
                "{source} is empty: nothing to analyze; give a recording written by `mmtrace trace -o json:FILE`"
            ),
            None => anyhow::bail!(
                "{source} holds no event in {} lines: nothing to analyze; was anything traced?",
                report.lines
            ),
        }
    }
    if let Some((svg, weight)) = flamegraph {
        // Drawn whole before the file is made: a failure leaves no file behind.
        let mut drawn = Vec::new();
        analyzer.sites.flamegraph(weight, &mut drawn)?;
        std::fs::write(svg, drawn)
            .with_context(|| format!("cannot write the flame graph to {}", svg.display()))?;
    }
    let mut out = io::stdout().lock();
    report.write(&mut out, format)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// `to` becomes `from`, without allocating when it has the room: once per event.
fn set(to: &mut String, from: &str) {
    if to != from {
        to.clear();
        to.push_str(from);
    }
}

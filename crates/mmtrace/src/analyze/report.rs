//! The analysis report: built once from the analyzer, printed as text or as one JSON object.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::io::{self, Write};

use mmtrace_events::line::Limit;
use mmtrace_events::text::escape;
use serde::Serialize;

use super::detections::Detection;
use super::kills::{self, Kill, Summary};
use super::{Analyzer, Key, Process};
use crate::latency;
use crate::units::{bytes, duration as ns, wrap, WIDTH};

/// Processes and threads shown in the text report; JSON has them all.
const TOP: usize = 15;
const TOP_THREADS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Malformed {
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Locked {
    pub peak_bytes: u64,
    pub final_bytes: u64,
    /// "kernel" (VmLck recorded with each call) or "calls" (worked out from the calls).
    pub source: &'static str,
    /// From calls after mlockall(MCL_CURRENT): mappings locked then are not counted.
    pub lower_bound: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_ipc_lock: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub event: String,
    pub errno: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    pub tid: u32,
    pub comm: String,
    pub calls: u64,
    pub time_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReport {
    pub pid: u32,
    /// When the process started, ns since the epoch: with the pid, what tells it from
    /// another process that got the same pid.
    pub start_time: u64,
    pub comm: String,
    pub calls: u64,
    pub time_ns: u64,
    pub lock_calls: u64,
    pub unlock_calls: u64,
    pub failed_calls: u64,
    pub locked: Locked,
    pub failures: Vec<Failure>,
    /// The busiest `TOP_THREADS`.
    pub busiest_threads: Vec<Caller>,
    pub munmap_peak_per_second: usize,
}

/// Busiest first: by time spent in memory syscalls, then calls.
type Rank = (Reverse<u64>, Reverse<u64>, u32, u64);

impl ProcessReport {
    fn rank(&self) -> Rank {
        (
            Reverse(self.time_ns),
            Reverse(self.calls),
            self.pid,
            self.start_time,
        )
    }
}

/// Processes the report gives one by one; the rest are summed in `otherProcesses`, which
/// keeps the analysis's state bounded however many processes come and go.
pub const KEPT: usize = 200;

/// The processes not among the `KEPT` busiest, summed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Others {
    pub processes: u64,
    pub calls: u64,
    pub time_ns: u64,
    pub failed_calls: u64,
}

impl Others {
    fn add(&mut self, p: &ProcessReport) {
        self.processes += 1;
        self.calls += p.calls;
        self.time_ns = self.time_ns.saturating_add(p.time_ns);
        self.failed_calls += p.failed_calls;
    }
}

/// Exited processes, folded: the `KEPT` busiest as their reports, the rest summed.
#[derive(Debug, Default)]
pub struct Folded {
    /// Keyed by rank, so the least busy is the last.
    kept: BTreeMap<Rank, ProcessReport>,
    others: Others,
}

impl Folded {
    pub fn add(&mut self, p: ProcessReport) {
        self.kept.insert(p.rank(), p);
        if self.kept.len() > KEPT {
            if let Some((_, least)) = self.kept.pop_last() {
                self.others.add(&least);
            }
        }
    }
}

/// What the report says of one process.
pub fn process(key: Key, p: &Process) -> ProcessReport {
    let l = &p.ledger;
    let locked = match l.kernel {
        Some(k) => Locked {
            peak_bytes: k.peak,
            final_bytes: k.last,
            source: "kernel",
            lower_bound: false,
            limit_bytes: k.limit,
            cap_ipc_lock: Some(k.cap_ipc_lock),
        },
        None => Locked {
            peak_bytes: l.peak,
            final_bytes: l.bytes(),
            source: "calls",
            lower_bound: l.incomplete,
            limit_bytes: None,
            cap_ipc_lock: None,
        },
    };
    let mut threads: Vec<Caller> = p
        .threads
        .iter()
        .map(|(&tid, t)| Caller {
            tid,
            comm: t.comm.clone(),
            calls: t.calls,
            time_ns: t.time_ns,
        })
        .collect();
    threads.sort_by_key(|t| (Reverse(t.time_ns), t.tid));
    threads.truncate(TOP_THREADS);
    let failures: Vec<Failure> = p
        .failures
        .iter()
        .map(|((event, errno), &count)| Failure {
            event: event.clone(),
            errno: errno.clone(),
            count,
        })
        .collect();
    ProcessReport {
        pid: key.pid,
        start_time: key.start,
        comm: p.comm.clone(),
        calls: p.calls,
        time_ns: p.time_ns,
        lock_calls: p.lock_calls,
        unlock_calls: p.unlock_calls,
        failed_calls: failures.iter().map(|f| f.count).sum(),
        locked,
        failures,
        busiest_threads: threads,
        munmap_peak_per_second: p.munmap_peak,
    }
}

/// One process a detection was raised for.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub pid: u32,
    pub start_time: u64,
    pub comm: String,
    pub count: u64,
    pub first_at: u64,
    /// 0 when traced live.
    pub line: usize,
    pub detail: String,
}

/// A detection and every process it was raised for.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectionReport {
    #[serde(skip)]
    pub detection: &'static Detection,
    pub id: &'static str,
    pub severity: &'static str,
    pub title: &'static str,
    pub explanation: &'static str,
    pub doc: String,
    /// Processes it was raised for, and occurrences in all.
    pub processes: u64,
    pub count: u64,
    /// The first processes, in order of their first occurrence; at most 100.
    pub instances: Vec<Instance>,
}

/// Events the ring lost, as the recording says in band.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lost {
    pub events: u64,
    /// Of the events traced (analyzed plus lost), in percent.
    pub percent: f64,
    pub by_event: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    pub lines: u64,
    pub events: u64,
    pub skipped: u64,
    pub malformed: Vec<Malformed>,
    /// Lines that repeated an event already read, each event counted once.
    pub duplicates: u64,
    /// Present when events were lost: the report is then partial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<Lost>,
    pub first_at: Option<u64>,
    pub last_at: Option<u64>,
    /// Events whose lines have no processStartTime (recorded by an older mmtrace): their
    /// processes are told apart less surely (see `processes_text`).
    pub events_without_process_start: u64,
    /// Busiest first: by time spent in memory syscalls; at most `KEPT`.
    pub processes: Vec<ProcessReport>,
    pub other_processes: Others,
    pub kill_summary: Summary,
    pub kills: Vec<Kill>,
    /// Most severe first.
    pub detections: Vec<DetectionReport>,
    /// Per event, its calls and the time they took, busiest first.
    pub latency: Vec<latency::Report>,
    /// With stacks in the recording (`trace --stack`): the calls ranked by stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_sites: Option<super::stacks::Report>,
}

pub fn build(a: &Analyzer, source: &str) -> Report {
    let mut processes: Vec<ProcessReport> = a
        .processes
        .iter()
        .map(|(&pid, p)| process(p.key(pid), p))
        .chain(a.folded.kept.values().cloned())
        .collect();
    processes.sort_by_key(ProcessReport::rank);
    let mut other_processes = a.folded.others;
    for p in processes.iter().skip(KEPT) {
        other_processes.add(p);
    }
    processes.truncate(KEPT);

    let mut detections: Vec<DetectionReport> = Vec::new();
    for f in &a.findings {
        let d = f.detection;
        let i = match detections.iter().position(|r| std::ptr::eq(r.detection, d)) {
            Some(i) => i,
            None => {
                let overflow = a.overflow.get(d.id).copied().unwrap_or_default();
                detections.push(DetectionReport {
                    detection: d,
                    id: d.id,
                    severity: d.severity.name(),
                    title: d.title,
                    explanation: d.explanation,
                    doc: d.doc(),
                    processes: overflow.processes,
                    count: overflow.count,
                    instances: Vec::new(),
                });
                detections.len() - 1
            }
        };
        let r = &mut detections[i];
        r.processes += 1;
        r.count += f.count;
        r.instances.push(Instance {
            pid: f.key.pid,
            start_time: f.key.start,
            comm: f.comm.clone(),
            count: f.count,
            first_at: f.first_at,
            line: f.line,
            detail: f.detail.clone(),
        });
    }
    for r in &mut detections {
        r.instances.sort_by_key(|i| (i.first_at, i.pid));
    }
    detections.sort_by_key(|r| (Reverse(r.detection.severity), r.id));
    let mut kills = a.kills.finish();
    kills.sort_by_key(|k| k.start().or(k.releases.first().map(|r| r.at)));
    let lost: u64 = a.lost.values().sum();
    Report {
        source: source.to_string(),
        lines: a.lines,
        events: a.events,
        skipped: a.skipped,
        duplicates: a.duplicates,
        malformed: a
            .malformed
            .iter()
            .map(|(line, error)| Malformed {
                line: *line,
                error: error.clone(),
            })
            .collect(),
        lost: (lost > 0).then(|| Lost {
            events: lost,
            percent: lost as f64 * 100.0 / (lost + a.events) as f64,
            by_event: a.lost.clone(),
        }),
        first_at: a.first_ts,
        last_at: a.first_ts.map(|_| a.last_ts),
        events_without_process_start: a.guessed_starts,
        processes,
        other_processes,
        kill_summary: kills::summary(&kills),
        kills,
        detections,
        latency: {
            let mut l: Vec<latency::Report> =
                a.latency.iter().map(|(name, l)| l.report(name)).collect();
            l.sort_by_key(|l| (Reverse(l.total_ns), Reverse(l.calls), l.event));
            l
        },
        call_sites: a.sites.report(),
    }
}

impl Report {
    pub fn write(&self, out: &mut dyn Write, format: Format) -> io::Result<()> {
        match format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, self)?;
                writeln!(out)
            }
            Format::Text => self.text(out),
        }
    }

    /// Offset from the first event, which reads better than epoch nanoseconds.
    fn at(&self, t: u64) -> String {
        format!(
            "+{:.6} s",
            t.saturating_sub(self.first_at.unwrap_or(t)) as f64 / 1e9
        )
    }

    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let span = match (self.first_at, self.last_at) {
            (Some(a), Some(b)) => ns(b.saturating_sub(a)),
            _ => "no time".into(),
        };
        writeln!(
            out,
            "mmtrace analysis of {}: {} events from {} lines over {span}",
            escape(&self.source),
            self.events,
            self.lines
        )?;
        if let Some(l) = &self.lost {
            let list: Vec<String> = l.by_event.iter().map(|(e, n)| format!("{e} {n}")).collect();
            writeln!(
                out,
                "  PARTIAL: {} events were lost ({:.1}% of those traced: {}); every figure below misses them",
                l.events,
                l.percent,
                list.join(", ")
            )?;
        }
        if self.skipped > 0 {
            writeln!(
                out,
                "  {} malformed lines skipped{}",
                self.skipped,
                if self.skipped as usize > self.malformed.len() {
                    format!(" (first {} shown)", self.malformed.len())
                } else {
                    String::new()
                }
            )?;
            for m in &self.malformed {
                writeln!(out, "    line {}: {}", m.line, escape(&m.error))?;
            }
        }
        if self.duplicates > 0 {
            writeln!(
                out,
                "  {} duplicate lines skipped: each event is counted once",
                self.duplicates
            )?;
        }

        writeln!(out, "\nDetections")?;
        if self.detections.is_empty() {
            writeln!(out, "  none")?;
        }
        for d in &self.detections {
            self.detection_text(out, d)?;
        }

        writeln!(out, "\nKills")?;
        if self.kills.is_empty() {
            writeln!(out, "  none")?;
        } else {
            self.summary_text(out)?;
        }
        for k in &self.kills {
            self.kill_text(out, k)?;
        }
        self.processes_text(out)?;
        self.latency_text(out)?;
        match &self.call_sites {
            Some(sites) => sites.text(out),
            None => Ok(()),
        }
    }

    fn detection_text(&self, out: &mut dyn Write, d: &DetectionReport) -> io::Result<()> {
        let plural = |n: u64, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            _ => format!("{n} {many}"),
        };
        writeln!(
            out,
            "  {} [{}] {}: {}, {}",
            d.id,
            d.severity,
            d.title,
            plural(d.processes, "process", "processes"),
            plural(d.count, "time", "times")
        )?;
        // The indent is the paragraph's margin, not part of its width.
        write!(out, "{}", wrap(d.explanation, "    ", "    ", WIDTH + 4))?;
        writeln!(out, "    see {}", d.doc)?;
        for i in d.instances.iter().take(TOP) {
            let times = if i.count > 1 {
                format!(", {} times", i.count)
            } else {
                String::new()
            };
            let line = if i.line > 0 {
                format!(", line {}", i.line)
            } else {
                String::new()
            };
            writeln!(
                out,
                "    - {} (pid {}){times}: first at {}{line}: {}",
                escape(&i.comm),
                i.pid,
                self.at(i.first_at),
                escape(&i.detail)
            )?;
        }
        let shown = d.instances.len().min(TOP) as u64;
        if d.processes > shown {
            writeln!(
                out,
                "    - and {} more (--format json lists the first {})",
                plural(d.processes - shown, "process", "processes"),
                d.instances.len()
            )?;
        }
        Ok(())
    }

    fn summary_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let s = &self.kill_summary;
        let back = match (s.memory_back_median_ns, s.memory_back_max_ns) {
            (Some(median), Some(max)) => {
                let lower = match s.memory_back_at_exit_start {
                    0 => String::new(),
                    n => format!(
                        "; for {n} only the exit's start is known, which comes before the memory is back"
                    ),
                };
                format!(
                    "memory back after the kill: median {}, max {} (over {}{lower})",
                    ns(median),
                    ns(max),
                    s.memory_back_known
                )
            }
            _ => "memory back: not in the recording".into(),
        };
        writeln!(out, "  {} kills; {back}", s.kills)?;
        writeln!(
            out,
            "  process_mrelease freed {}; victims still held {} when they began to exit",
            bytes(s.released_bytes),
            bytes(s.left_to_exit_bytes)
        )?;
        if !s.release_failures.is_empty() {
            let list: Vec<String> = s
                .release_failures
                .iter()
                .map(|f| {
                    let why = f
                        .reason
                        .as_deref()
                        .map_or(String::new(), |w| format!(" ({w})"));
                    format!("{}{why} x{}", f.errno, f.count)
                })
                .collect();
            writeln!(out, "  process_mrelease failed: {}", list.join(", "))?;
        }
        writeln!(out)
    }

    /// Per event, the time its calls took, then its distribution as bpftrace's hist draws it.
    fn latency_text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "\nLatency (busiest first; durations in ns, log2 buckets)"
        )?;
        if self.latency.is_empty() {
            return writeln!(out, "  none");
        }
        let w = self
            .latency
            .iter()
            .map(|l| l.event.len())
            .max()
            .unwrap_or(0);
        writeln!(
            out,
            "  {:<w$} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "EVENT", "CALLS", "ERRORS", "TIME", "MEAN", "P50", "P90", "P99", "MAX"
        )?;
        for l in &self.latency {
            writeln!(
                out,
                "  {:<w$} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                l.event,
                l.calls,
                l.errors,
                ns(l.total_ns),
                ns(l.mean_ns),
                ns(l.p50_ns),
                ns(l.p90_ns),
                ns(l.p99_ns),
                ns(l.max_ns)
            )?;
        }
        for l in self.latency.iter().filter(|l| !l.buckets.is_empty()) {
            let mut hist = String::new();
            latency::write_histogram(&mut hist, &l.buckets);
            write!(out, "\n@ns[{}]:\n{hist}", l.event)?;
        }
        Ok(())
    }

    fn processes_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let all = self.processes.len() as u64 + self.other_processes.processes;
        writeln!(
            out,
            "\nProcesses (busiest first{})",
            if all > TOP as u64 {
                format!(", top {TOP} of {all}")
            } else {
                String::new()
            }
        )?;
        writeln!(
            out,
            "  {:>8} {:<16} {:>9} {:>10} {:>6} {:>6} {:>6} {:>12} {:>12} {:>11}",
            "PID",
            "COMM",
            "CALLS",
            "TIME",
            "LOCK",
            "UNLOCK",
            "FAILED",
            "LOCKED-PEAK",
            "LOCKED-NOW",
            "LIMIT"
        )?;
        let shown: Vec<&ProcessReport> = self.processes.iter().take(TOP).collect();
        for p in &shown {
            let l = &p.locked;
            let approx = if l.lower_bound { ">=" } else { "" };
            // Marks the figures the note below explains.
            let from_calls = if l.source == "calls" { "*" } else { "" };
            let limit = match (l.source, l.limit_bytes, l.cap_ipc_lock) {
                (_, _, Some(true)) => "CAP_IPC_LOCK".to_string(),
                ("kernel", Some(b), _) => bytes(b),
                ("kernel", None, _) => "unlimited".into(),
                _ => "-".into(),
            };
            writeln!(
                out,
                "  {:>8} {:<16} {:>9} {:>10} {:>6} {:>6} {:>6} {:>12} {:>12} {:>11}",
                p.pid,
                escape(&p.comm),
                p.calls,
                ns(p.time_ns),
                p.lock_calls,
                p.unlock_calls,
                p.failed_calls,
                format!("{approx}{}{from_calls}", bytes(l.peak_bytes)),
                format!("{approx}{}{from_calls}", bytes(l.final_bytes)),
                limit
            )?;
            if !p.failures.is_empty() {
                let list: Vec<String> = p
                    .failures
                    .iter()
                    .map(|f| format!("{} {} x{}", escape(&f.event), escape(&f.errno), f.count))
                    .collect();
                writeln!(out, "  {:>8} failed: {}", "", list.join(", "))?;
            }
            if p.busiest_threads.len() > 1 {
                let list: Vec<String> = p
                    .busiest_threads
                    .iter()
                    .map(|t| {
                        format!(
                            "{} {} ({} calls, {})",
                            t.tid,
                            escape(&t.comm),
                            t.calls,
                            ns(t.time_ns)
                        )
                    })
                    .collect();
                writeln!(out, "  {:>8} busiest threads: {}", "", list.join(", "))?;
            }
        }
        let rest = all.saturating_sub(shown.len() as u64);
        if rest > 0 {
            let o = self.other_processes;
            let (calls, time) = self
                .processes
                .iter()
                .skip(TOP)
                .fold((o.calls, o.time_ns), |(c, t), p| {
                    (c + p.calls, t.saturating_add(p.time_ns))
                });
            writeln!(
                out,
                "  {:>8} and {rest} more processes: {calls} calls, {}",
                "",
                ns(time)
            )?;
        }
        let from_calls: Vec<String> = shown
            .iter()
            .filter(|p| p.locked.source == "calls")
            .map(|p| p.pid.to_string())
            .collect();
        if !from_calls.is_empty() {
            let lower = if shown.iter().any(|p| p.locked.lower_bound) {
                " '>=' marks a process whose mlockall(MCL_CURRENT) locked mappings made before the trace, which the calls cannot count."
            } else {
                ""
            };
            writeln!(
                out,
                "\n  * LOCKED of pid {}: the recording has no kernel VmLck for these, so their locked \
                 memory is worked out from their mlock/munlock/munmap/mmap calls.{lower}",
                from_calls.join(", ")
            )?;
        }
        if self.events_without_process_start > 0 {
            writeln!(
                out,
                "\n  {} events have no processStartTime (the recording is from an older mmtrace): \
                 a process is told from a later one with its pid by its main thread's start and, \
                 where recorded, its exit, so calls of a reused pid's other threads before its main thread's \
                 first call may be counted with the process before it.",
                self.events_without_process_start
            )?;
        }
        Ok(())
    }

    fn kill_text(&self, out: &mut dyn Write, k: &Kill) -> io::Result<()> {
        let name = k
            .target_name
            .as_deref()
            .map_or(String::new(), |n| format!(" ({})", escape(n)));
        let by = match (&k.killer_name, k.killer_pid) {
            (Some(n), Some(p)) if k.via.as_deref() != Some("oom_kill") => {
                format!(" by {} (pid {p})", escape(n))
            }
            _ => String::new(),
        };
        writeln!(out, "  pid {}{name}{by}", k.target_pid)?;
        let pct = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}%"));
        // The machine's pressure is the one to read for a kill of the whole system, and for a
        // userspace killer's; a cgroup's own limit makes it beside the point, so it is named
        // for what it is, or left out where the cgroup's own pressure is known.
        let mut machine = "memory pressure at the kill";
        if let Some(l) = &k.limit {
            writeln!(out, "    limit that fired: {}", limit_text(l))?;
            if l.scope.as_deref() == Some("cgroup") {
                match (l.pressure, l.cgroup_version) {
                    (Some(p), _) => writeln!(
                        out,
                        "    the cgroup's memory pressure: PSI some {} full {} (avg10)",
                        pct(Some(p.some_avg10)),
                        pct(Some(p.full_avg10))
                    )?,
                    (None, Some(1)) => {
                        machine = "the machine's memory pressure, not the cgroup's (cgroup v1 keeps none per cgroup)"
                    }
                    (None, _) => machine = "the machine's memory pressure, not the cgroup's",
                }
            }
        }
        if let Some(p) = k
            .pressure
            .filter(|_| k.limit.as_ref().is_none_or(|l| l.pressure.is_none()))
        {
            writeln!(
                out,
                "    {machine}: PSI some {} full {} (avg10), MemAvailable {} (read at {})",
                pct(p.some_avg10),
                pct(p.full_avg10),
                p.mem_available_bytes.map_or("?".to_string(), bytes),
                self.at(p.at)
            )?;
        }
        // Everything that happened, in time order.
        let mut lines: Vec<(u64, String)> = Vec::new();
        if k.signals.is_empty() && k.oom.is_none() {
            writeln!(out, "    signal not in the recording")?;
        }
        for s in &k.signals {
            let fatal = if Some(s.at) == k.signal_at && Some(&s.signal) == k.signal.as_ref() {
                " (the kill)"
            } else {
                ""
            };
            lines.push((
                s.at,
                format!(
                    "{} via {}: {}{fatal}",
                    escape(&s.signal),
                    escape(&s.via),
                    escape(&s.result)
                ),
            ));
        }
        if let Some(o) = &k.oom {
            let rss: Vec<String> = [
                ("anon", o.anon_rss_kb),
                ("file", o.file_rss_kb),
                ("shmem", o.shmem_rss_kb),
            ]
            .iter()
            .filter_map(|(n, v)| v.map(|v| format!("{n} {}", bytes(v.saturating_mul(1024)))))
            .collect();
            lines.push((
                o.mark_victim_at,
                format!("kernel OOM killer marked it victim {}", rss.join(", ")),
            ));
            if let Some(t) = o.reap_start_at {
                lines.push((t, "OOM reaper started".into()));
            }
            if let Some(t) = o.reap_finish_at {
                lines.push((t, "OOM reaper finished".into()));
            }
            if o.reap_skipped {
                writeln!(out, "    OOM reaper skipped it")?;
            }
        }
        for r in &k.releases {
            let freed = r
                .freed_bytes
                .map_or(String::new(), |b| format!(", freed {}", bytes(b)));
            let reason = r
                .reason
                .as_deref()
                .map_or(String::new(), |w| format!(" ({})", escape(w)));
            lines.push((
                r.at,
                format!(
                    "process_mrelease took {}: {}{reason}{freed}",
                    ns(r.duration_ns),
                    escape(&r.result)
                ),
            ));
        }
        if let Some(t) = k.exit_at {
            let of = k
                .exit_signal
                .as_deref()
                .map_or(String::new(), |s| format!(" of {s}"));
            let held = k
                .held_at_exit
                .map_or(String::new(), |b| format!(", still holding {}", bytes(b)));
            lines.push((t, format!("began to exit{of}{held}")));
        }
        if let Some(t) = k.teardown_end_at {
            lines.push((t, "address space torn down".into()));
        }
        lines.sort_by_key(|(t, _)| *t);
        for (t, text) in lines {
            writeln!(out, "    {}  {text}", self.at(t))?;
        }
        match (k.memory_back_ns, k.memory_back_by) {
            (Some(d), Some("exit_start")) => writeln!(
                out,
                "    memory back: at least {} after the kill (the exit's start; the end of the victim's teardown is not in the recording)",
                ns(d)
            ),
            (Some(d), Some(by)) => writeln!(out, "    memory back {} after the kill (by {by})", ns(d)),
            _ => writeln!(out, "    memory back: not in the recording (no successful process_mrelease, reaper or exit seen)"),
        }
    }
}

/// Which limit fired, in words, with the figures the kernel reported at the kill.
fn limit_text(l: &Limit) -> String {
    let constraint = l.constraint.as_deref().map(escape).unwrap_or_default();
    match l.scope.as_deref() {
        Some("system") => format!("the whole system's memory ({constraint})"),
        Some("cgroup") => {
            let version = l
                .cgroup_version
                .map_or(String::new(), |v| format!(", cgroup v{v}"));
            let cgroup = l.cgroup.as_deref().map_or("?".into(), escape);
            let victim_in = match l.task_cgroup.as_deref() {
                Some(t) if Some(t) != l.cgroup.as_deref() => {
                    format!(" (the victim is in {})", escape(t))
                }
                _ => String::new(),
            };
            let figures = match (l.usage_bytes, l.limit_bytes) {
                (Some(u), Some(m)) => format!(
                    ": usage {} of its limit {}{}",
                    bytes(u),
                    bytes(m),
                    l.failcnt
                        .map_or(String::new(), |f| format!(", failcnt {f}"))
                ),
                _ => String::new(),
            };
            format!(
                "memory cgroup {cgroup}{victim_in}{version}{figures}, as the kernel reported it"
            )
        }
        Some("cpuset") => {
            format!("the memory nodes of the allocating task's cpuset ({constraint})")
        }
        Some("mempolicy") => {
            format!("the memory nodes of the allocating task's memory policy ({constraint})")
        }
        _ => format!(
            "unknown: {}",
            l.reason
                .as_deref()
                .map_or("the recording does not say".into(), escape)
        ),
    }
}

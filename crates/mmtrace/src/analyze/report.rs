//! The analysis report: built once from the analyzer, printed as text or as one JSON object.

use std::io::{self, Write};

use mmtrace_events::text::escape;
use serde::Serialize;

use super::kills::Kill;
use super::Analyzer;

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

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub event: String,
    pub errno: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    pub tid: u32,
    pub comm: String,
    pub calls: u64,
    pub time_ns: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub calls: u64,
    pub time_ns: u64,
    pub lock_calls: u64,
    pub unlock_calls: u64,
    pub failed_calls: u64,
    pub locked: Locked,
    pub failures: Vec<Failure>,
    pub busiest_threads: Vec<Caller>,
    pub munmap_peak_per_second: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingReport {
    pub id: &'static str,
    pub severity: &'static str,
    pub title: &'static str,
    pub pid: u32,
    pub comm: String,
    pub count: u64,
    pub first_at: u64,
    /// 0 when traced live.
    pub line: usize,
    pub detail: String,
    pub explanation: &'static str,
    pub doc: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    pub lines: u64,
    pub events: u64,
    pub skipped: u64,
    pub malformed: Vec<Malformed>,
    pub first_at: Option<u64>,
    pub last_at: Option<u64>,
    /// Busiest first: by time spent in memory syscalls.
    pub processes: Vec<ProcessReport>,
    pub kills: Vec<Kill>,
    /// Most severe first.
    pub detections: Vec<FindingReport>,
}

pub fn build(a: &Analyzer, source: &str) -> Report {
    let mut processes: Vec<ProcessReport> = a
        .processes
        .iter()
        .map(|(&pid, p)| {
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
            threads.sort_by_key(|t| (std::cmp::Reverse(t.time_ns), t.tid));
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
                pid,
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
        })
        .collect();
    processes.sort_by_key(|p| (std::cmp::Reverse(p.time_ns), p.pid));
    let mut detections: Vec<FindingReport> = a
        .findings
        .iter()
        .map(|f| {
            let d = f.detection;
            let detail = match (d.id, a.processes.get(&f.pid)) {
                ("MMT-008", Some(p)) => {
                    format!("up to {} munmap calls within one second", p.munmap_peak)
                }
                _ => f.detail.clone(),
            };
            FindingReport {
                id: d.id,
                severity: d.severity.name(),
                title: d.title,
                pid: f.pid,
                comm: f.comm.clone(),
                count: f.count,
                first_at: f.first_at,
                line: f.line,
                detail,
                explanation: d.explanation,
                doc: d.doc(),
            }
        })
        .collect();
    detections.sort_by_key(|f| {
        let sev = super::detections::DETECTIONS
            .iter()
            .find(|d| d.id == f.id)
            .map(|d| d.severity);
        (std::cmp::Reverse(sev), f.id, f.first_at)
    });
    let mut kills = a.kills.finish();
    kills.sort_by_key(|k| k.start().or(k.releases.first().map(|r| r.at)));
    Report {
        source: source.to_string(),
        lines: a.lines,
        events: a.events,
        skipped: a.skipped,
        malformed: a
            .malformed
            .iter()
            .map(|(line, error)| Malformed {
                line: *line,
                error: error.clone(),
            })
            .collect(),
        first_at: a.first_ts,
        last_at: a.first_ts.map(|_| a.last_ts),
        processes,
        kills,
        detections,
    }
}

/// Explanations are a paragraph each; a terminal shows them better folded.
const WIDTH: usize = 92;

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// 4096 → "4.0 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

fn ns(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} ns"),
        1_000..1_000_000 => format!("{:.1} us", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        _ => format!("{:.2} s", n as f64 / 1e9),
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

        writeln!(out, "\nDetections")?;
        if self.detections.is_empty() {
            writeln!(out, "  none")?;
        }
        for f in &self.detections {
            let times = if f.count > 1 {
                format!(", {} times", f.count)
            } else {
                String::new()
            };
            let line = if f.line > 0 {
                format!(", line {}", f.line)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {} [{}] {}: {} (pid {}){times}",
                f.id,
                f.severity,
                f.title,
                escape(&f.comm),
                f.pid
            )?;
            writeln!(
                out,
                "    first at {}{line}: {}",
                self.at(f.first_at),
                escape(&f.detail)
            )?;
            for line in wrap(f.explanation, WIDTH) {
                writeln!(out, "    {line}")?;
            }
            writeln!(out, "    see {}", f.doc)?;
        }

        writeln!(out, "\nKills")?;
        if self.kills.is_empty() {
            writeln!(out, "  none")?;
        }
        for k in &self.kills {
            self.kill_text(out, k)?;
        }

        writeln!(
            out,
            "\nProcesses (busiest first{})",
            if self.processes.len() > TOP {
                format!(", top {TOP} of {}", self.processes.len())
            } else {
                String::new()
            }
        )?;
        writeln!(
            out,
            "  {:>8} {:<16} {:>9} {:>10} {:>6} {:>6} {:>6} {:>11} {:>11} {:>11}",
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
        for p in self.processes.iter().take(TOP) {
            let l = &p.locked;
            let approx = if l.lower_bound { ">=" } else { "" };
            let limit = match (l.source, l.limit_bytes, l.cap_ipc_lock) {
                (_, _, Some(true)) => "CAP_IPC_LOCK".to_string(),
                ("kernel", Some(b), _) => bytes(b),
                ("kernel", None, _) => "unlimited".into(),
                _ => "-".into(),
            };
            writeln!(
                out,
                "  {:>8} {:<16} {:>9} {:>10} {:>6} {:>6} {:>6} {:>11} {:>11} {:>11}",
                p.pid,
                escape(&p.comm),
                p.calls,
                ns(p.time_ns),
                p.lock_calls,
                p.unlock_calls,
                p.failed_calls,
                format!("{approx}{}", bytes(l.peak_bytes)),
                format!("{approx}{}", bytes(l.final_bytes)),
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
                    .take(TOP_THREADS)
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
        if self.processes.iter().any(|p| p.locked.source == "calls") {
            writeln!(
                out,
                "\n  LOCKED from calls: the recording has no kernel VmLck, so locked memory is worked \
                 out from mlock/munlock/munmap/mmap calls; '>=' marks processes whose mlockall(MCL_CURRENT) \
                 locked mappings made before the trace."
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
        match (k.signal_at, &k.oom) {
            (_, Some(o)) => {
                let rss: Vec<String> = [
                    ("anon", o.anon_rss_kb),
                    ("file", o.file_rss_kb),
                    ("shmem", o.shmem_rss_kb),
                ]
                .iter()
                .filter_map(|(n, v)| v.map(|v| format!("{n} {}", bytes(v * 1024))))
                .collect();
                writeln!(
                    out,
                    "    {}  kernel OOM killer marked it victim {}",
                    self.at(o.mark_victim_at),
                    rss.join(", ")
                )?;
                if let Some(t) = o.reap_start_at {
                    writeln!(out, "    {}  OOM reaper started", self.at(t))?;
                }
                if let Some(t) = o.reap_finish_at {
                    writeln!(out, "    {}  OOM reaper finished", self.at(t))?;
                }
                if o.reap_skipped {
                    writeln!(out, "    OOM reaper skipped it")?;
                }
            }
            (Some(t), None) => writeln!(
                out,
                "    {}  {} via {}: {}",
                self.at(t),
                escape(k.signal.as_deref().unwrap_or("?")),
                escape(k.via.as_deref().unwrap_or("?")),
                escape(k.signal_result.as_deref().unwrap_or("ok"))
            )?,
            (None, None) => writeln!(out, "    signal not in the recording")?,
        }
        for r in &k.releases {
            let freed = r
                .freed_bytes
                .map_or(String::new(), |b| format!(", freed {}", bytes(b)));
            let reason = r
                .reason
                .as_deref()
                .map_or(String::new(), |w| format!(" ({})", escape(w)));
            writeln!(
                out,
                "    {}  process_mrelease took {}: {}{reason}{freed}",
                self.at(r.at),
                ns(r.duration_ns),
                escape(&r.result)
            )?;
        }
        if let Some(t) = k.exit_at {
            let held = k
                .held_at_exit
                .map_or(String::new(), |b| format!(", still holding {}", bytes(b)));
            writeln!(out, "    {}  exited{held}", self.at(t))?;
        }
        match (k.memory_back_ns, k.memory_back_by) {
            (Some(d), Some(by)) => writeln!(out, "    memory back {} after the kill (by {by})", ns(d)),
            _ => writeln!(out, "    memory back: not in the recording (no successful process_mrelease or exit seen)"),
        }
    }
}

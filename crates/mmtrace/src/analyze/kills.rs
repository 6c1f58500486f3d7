//! Kill-and-reap timelines, as userspace OOM killers really kill: every signal (often
//! SIGTERM, then SIGKILL when the victim ignores it) and every process_mrelease, the exit,
//! and how long the memory took to come back after the fatal signal.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use mmtrace_events::catalog::Reaping;
use mmtrace_events::decode::signal_name;
use mmtrace_events::line::Limit;
use mmtrace_events::Role;
use serde::Serialize;

use super::record::Record;
use crate::inband;

/// A pressure sample belongs to a signal read at most this long before it.
const PRESSURE_WINDOW_NS: u64 = 1_000_000_000;

const SIGKILL: u64 = 9;

/// Whether a signal's default action ends the process: all but the ones that are ignored,
/// stop or continue it by default.
fn terminates(sig: u64) -> bool {
    // SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH.
    !matches!(sig, 0 | 17..=23 | 28)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    pub at: u64,
    pub signal: String,
    #[serde(skip)]
    number: u64,
    /// pidfd_send_signal or kill.
    pub via: String,
    /// "ok" or the errno name.
    pub result: String,
    pub by_pid: u32,
    pub by_name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub at: u64,
    pub duration_ns: u64,
    /// "ok" or the errno name.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub by_pid: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Oom {
    pub mark_victim_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_rss_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_rss_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_rss_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reap_start_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reap_finish_at: Option<u64>,
    pub reap_skipped: bool,
}

/// The machine's memory pressure as the tracer read it just after the kill's first signal.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    pub at: u64,
    /// PSI `some` avg10, percent.
    pub some_avg10: Option<f64>,
    /// PSI `full` avg10, percent.
    pub full_avg10: Option<f64>,
    pub mem_available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kill {
    /// The victim's pid: the host pid when the recording names it, else as the killer saw it.
    pub target_pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killer_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killer_name: Option<String>,
    /// The kill itself: the first fatal signal (pidfd_send_signal or kill), or oom_kill for
    /// the kernel's OOM killer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_result: Option<String>,
    /// Every signal sent to the victim, in order, the fatal one among them.
    pub signals: Vec<Signal>,
    pub releases: Vec<Release>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<Oom>,
    /// When the victim began to exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_at: Option<u64>,
    /// The signal the victim died of, when the exit says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Bytes the victim still held when it began to exit, when the recording says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_at_exit: Option<u64>,
    /// When its address space was torn down, when the recording has it (`exit_mmap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown_end_at: Option<u64>,
    /// The machine's pressure, whatever the limit that fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// For the kernel OOM killer's kills: the limit that fired, as the kernel reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// From the kill to the memory being back: a successful process_mrelease's return, the
    /// OOM reaper's finish, or the end of the victim's teardown, whichever came first. When
    /// none is in the recording, the exit's start ("exit_start"), before the memory is
    /// given back: a lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_by: Option<&'static str>,
    #[serde(skip)]
    exit_signal_number: Option<u64>,
}

impl Kill {
    fn new(target_pid: u32) -> Kill {
        Kill {
            target_pid,
            target_name: None,
            killer_pid: None,
            killer_name: None,
            via: None,
            signal: None,
            signal_at: None,
            signal_result: None,
            signals: Vec::new(),
            releases: Vec::new(),
            oom: None,
            exit_at: None,
            exit_signal: None,
            held_at_exit: None,
            teardown_end_at: None,
            pressure: None,
            limit: None,
            memory_back_at: None,
            memory_back_ns: None,
            memory_back_by: None,
            exit_signal_number: None,
        }
    }

    /// The kill: the fatal signal, or the kernel OOM killer's choice.
    pub fn start(&self) -> Option<u64> {
        self.signal_at
            .or(self.oom.as_ref().map(|o| o.mark_victim_at))
    }

    /// The signal that ended the victim: the one its exit names; else SIGKILL, which cannot
    /// be caught; else, once the victim is known to be dying (it exited, or
    /// process_mrelease reaped it), the first signal whose default is to end it.
    fn fatal(&self) -> Option<&Signal> {
        let sent = |sig: u64| {
            self.signals
                .iter()
                .find(|s| s.number == sig && s.result == "ok")
        };
        if let Some(s) = self.exit_signal_number.and_then(sent) {
            return Some(s);
        }
        if let Some(s) = sent(SIGKILL) {
            return Some(s);
        }
        let dying = self.exit_at.is_some() || self.releases.iter().any(|r| r.result == "ok");
        self.signals
            .iter()
            .find(|s| dying && s.result == "ok" && terminates(s.number))
    }

    /// A signal that ended nothing (a SIGTERM handled, a SIGUSR1, the tracer's own stop) is
    /// no kill. A process_mrelease is a killer at work, even on a process that never died.
    fn is_kill(&self) -> bool {
        self.signal_at.is_some() || self.oom.is_some() || !self.releases.is_empty()
    }

    /// Works out the fatal signal and when the memory was back, once every line is in.
    fn settle(&mut self) {
        if let Some(s) = self.fatal().cloned() {
            self.signal_at = Some(s.at);
            self.signal = Some(s.signal);
            self.via = Some(s.via);
            self.signal_result = Some(s.result);
            self.killer_pid = Some(s.by_pid);
            self.killer_name = Some(s.by_name);
        }
        let Some(start) = self.start() else { return };
        let mut candidates: Vec<(u64, &'static str)> = Vec::new();
        if let Some(r) = self
            .releases
            .iter()
            .find(|r| r.result == "ok" && r.at >= start)
        {
            candidates.push((r.at.saturating_add(r.duration_ns), "process_mrelease"));
        }
        if let Some(at) = self.oom.as_ref().and_then(|o| o.reap_finish_at) {
            candidates.push((at, "oom_reaper"));
        }
        if let Some(at) = self.teardown_end_at {
            candidates.push((at, "teardown"));
        }
        if candidates.is_empty() {
            if let Some(at) = self.exit_at {
                candidates.push((at, "exit_start"));
            }
        }
        if let Some(&(at, by)) = candidates.iter().min() {
            self.memory_back_at = Some(at);
            self.memory_back_ns = Some(at.saturating_sub(start));
            self.memory_back_by = Some(by);
        }
    }
}

/// One pidfd: the process it was opened for, and when.
#[derive(Debug, Clone, Copy)]
struct Pidfd {
    pid: u32,
    opened_at: u64,
}

/// Follows pidfds to the processes they name and collects one timeline per kill.
#[derive(Debug, Default)]
pub struct Kills {
    /// caller → fd → the process it was opened for.
    pidfds: HashMap<u32, HashMap<i64, Pidfd>>,
    kills: Vec<Kill>,
    /// The latest timeline of each victim.
    latest: HashMap<u32, usize>,
    /// Timelines with a signal read and no pressure sample yet.
    awaiting_pressure: Vec<usize>,
    /// The tracer's own pid, in a live trace: signals to it are its stop, not a kill.
    ignored: Option<u32>,
}

impl Kills {
    pub fn ignore(&mut self, pid: u32) {
        self.ignored = Some(pid);
    }

    /// The caller has exited: its pidfds are closed.
    pub fn forget_caller(&mut self, pid: u32) {
        self.pidfds.remove(&pid);
    }

    pub fn apply(&mut self, r: &Record) {
        match r.role() {
            Role::OpensPidfd if r.ok() => {
                let pid = r
                    .target()
                    .map(|t| t.0)
                    .or_else(|| r.pid_arg().and_then(|p| u32::try_from(p).ok()));
                if let Some(pid) = pid {
                    let opened_at = r.end();
                    self.pidfds
                        .entry(r.pid())
                        .or_default()
                        .insert(r.ret(), Pidfd { pid, opened_at });
                }
            }
            Role::Signals { .. } => {
                let sig = r.signal().unwrap_or(0);
                // Signal 0 only asks whether the process exists.
                if sig == 0 {
                    return;
                }
                let Some((pid, opened_at)) = self.target_of(r) else {
                    return;
                };
                if Some(pid) == self.ignored {
                    return;
                }
                let i = self.timeline(pid, r, Some(opened_at));
                let k = &mut self.kills[i];
                k.signals.push(Signal {
                    at: r.ts(),
                    signal: signal_name(sig),
                    number: sig,
                    via: r.name().to_string(),
                    result: r.errno().clone().unwrap_or_else(|| "ok".into()),
                    by_pid: r.pid(),
                    by_name: r.comm().into_owned(),
                });
                if k.pressure.is_none() {
                    self.awaiting_pressure.push(i);
                }
            }
            Role::Releases => {
                let Some((pid, _)) = self.target_of(r) else {
                    return;
                };
                let i = self.timeline(pid, r, None);
                let k = &mut self.kills[i];
                k.releases.push(Release {
                    at: r.ts(),
                    duration_ns: r.duration(),
                    result: r.errno().clone().unwrap_or_else(|| "ok".into()),
                    freed_bytes: r.freed(),
                    reason: r.reason().map(Cow::into_owned),
                    by_pid: r.pid(),
                });
                if k.killer_pid.is_none() {
                    k.killer_pid = Some(r.pid());
                    k.killer_name = Some(r.comm().into_owned());
                }
            }
            Role::OomVictim => {
                let Some(pid) = r.pid_arg().and_then(|p| u32::try_from(p).ok()) else {
                    return;
                };
                let i = self.timeline(pid, r, Some(0));
                let k = &mut self.kills[i];
                k.via = Some("oom_kill".into());
                k.signal = Some("SIGKILL".into());
                k.oom = Some(Oom {
                    mark_victim_at: r.ts(),
                    anon_rss_kb: r.arg_u64("anon_rss"),
                    file_rss_kb: r.arg_u64("file_rss"),
                    shmem_rss_kb: r.arg_u64("shmem_rss"),
                    ..Oom::default()
                });
                k.limit = r.limit();
                if k.pressure.is_none() {
                    self.awaiting_pressure.push(i);
                }
            }
            Role::OomReaper(step) => {
                let Some(pid) = r.pid_arg().and_then(|p| u32::try_from(p).ok()) else {
                    return;
                };
                let Some(&i) = self.latest.get(&pid) else {
                    return;
                };
                let oom = self.kills[i].oom.get_or_insert_with(Oom::default);
                match step {
                    Reaping::Start => oom.reap_start_at = Some(r.ts()),
                    Reaping::Finish => oom.reap_finish_at = Some(r.ts()),
                    Reaping::Skip => oom.reap_skipped = true,
                }
            }
            Role::Exits => {
                // The exiting process is the one the line's context names.
                let Some(&i) = self.latest.get(&r.pid()) else {
                    return;
                };
                let k = &mut self.kills[i];
                if k.exit_at.is_none() {
                    k.exit_at = Some(r.ts());
                    // The victim's own line names it, where no call's target did (the
                    // kernel's kills).
                    k.target_name.get_or_insert_with(|| r.comm().into_owned());
                    // Tracee's signal_code; recordings from before it carried the raw wait
                    // status as exit_code, whose low 7 bits are the signal that ended it.
                    let sig = match r.signal() {
                        Some(sig) => sig,
                        None => r.arg_u64("exit_code").map_or(0, |c| c & 0x7f),
                    };
                    if sig != 0 {
                        k.exit_signal = Some(signal_name(sig));
                        k.exit_signal_number = Some(sig);
                    }
                    // The kernel's counters are per-CPU sums that can dip below zero once
                    // process_mrelease has taken the pages: such a value means nothing held.
                    k.held_at_exit = ["anon", "file", "shmem"].iter().try_fold(0u64, |sum, a| {
                        Some(sum.saturating_add(r.arg_i64(a)?.max(0) as u64))
                    });
                }
            }
            // The end of the victim's teardown, when its memory is back; without it, only the
            // exit's start is known, which comes before the process gives up its memory.
            Role::TornDown => {
                if let Some(&i) = self.latest.get(&r.pid()) {
                    self.kills[i].teardown_end_at.get_or_insert(r.ts());
                }
            }
            Role::Other if r.name() == inband::PRESSURE => {
                let arg = |name| r.json_args().find(|(n, _)| *n == name).map(|(_, v)| v);
                let sample = Pressure {
                    at: r.ts(),
                    some_avg10: arg("some_avg10").and_then(|v| v.as_f64()),
                    full_avg10: arg("full_avg10").and_then(|v| v.as_f64()),
                    mem_available_bytes: arg("mem_available").and_then(|v| v.as_u64()),
                };
                for i in std::mem::take(&mut self.awaiting_pressure) {
                    let k = &mut self.kills[i];
                    let read = k
                        .signals
                        .last()
                        .map(|s| s.at)
                        .or(k.oom.as_ref().map(|o| o.mark_victim_at))
                        .unwrap_or(0);
                    if k.pressure.is_none()
                        && (read..=read.saturating_add(PRESSURE_WINDOW_NS)).contains(&r.ts())
                    {
                        k.pressure = Some(sample);
                    }
                }
            }
            _ => {}
        }
    }

    /// The victim of a signal or process_mrelease, and when its pidfd was opened (0 when
    /// it is named by pid).
    fn target_of(&self, r: &Record) -> Option<(u32, u64)> {
        if r.role() == (Role::Signals { by_pidfd: false }) {
            let pid = r
                .pid_arg()
                .filter(|&p| p > 0)
                .and_then(|p| u32::try_from(p).ok());
            return r.target().as_ref().map(|t| t.0).or(pid).map(|p| (p, 0));
        }
        let fd = r
            .pidfd()
            .and_then(|fd| self.pidfds.get(&r.pid())?.get(&fd).copied());
        match (&r.target(), fd) {
            (Some((pid, _)), fd) => Some((*pid, fd.map_or(0, |f| f.opened_at))),
            (None, Some(f)) => Some((f.pid, f.opened_at)),
            (None, None) => None,
        }
    }

    /// The timeline `r` belongs to. A kill (`opened_at` given) of a pid whose last victim
    /// has exited is a new timeline, as the pid was reused, unless it comes through a
    /// pidfd opened before that exit, which can only name the process that exited. A
    /// process_mrelease after the exit is the reaper arriving late: it belongs to the kill
    /// it follows.
    fn timeline(&mut self, pid: u32, r: &Record, opened_at: Option<u64>) -> usize {
        let i = match (self.latest.get(&pid), opened_at) {
            (Some(&i), None) => i,
            (Some(&i), Some(opened))
                if self.kills[i]
                    .exit_at
                    .is_none_or(|e| opened != 0 && opened < e) =>
            {
                i
            }
            _ => {
                self.kills.push(Kill::new(pid));
                self.latest.insert(pid, self.kills.len() - 1);
                self.kills.len() - 1
            }
        };
        if let Some((_, Some(name))) = &r.target() {
            self.kills[i].target_name = Some(name.clone());
        }
        i
    }

    /// The kills, each settled; timelines that turned out to be no kill are left out.
    pub fn finish(&self) -> Vec<Kill> {
        settled(self.kills.iter()).collect()
    }

    /// The latest `n` kills, newest first, settled on what has come so far: a live view's.
    pub fn recent(&self, n: usize) -> Vec<Kill> {
        settled(self.kills.iter().rev()).take(n).collect()
    }
}

/// Copies of `kills`, each settled, without the timelines that turned out to be no kill.
fn settled<'a>(kills: impl Iterator<Item = &'a Kill> + 'a) -> impl Iterator<Item = Kill> + 'a {
    kills.filter_map(|k| {
        let mut k = k.clone();
        k.settle();
        k.is_kill().then_some(k)
    })
}

/// Over all kills: what a user compares killers and settings by.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub kills: usize,
    /// Kills whose memory-back time is known, and its median and maximum.
    pub memory_back_known: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_median_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_max_ns: Option<u64>,
    /// Kills whose memory-back time is only the exit's start (a lower bound).
    pub memory_back_at_exit_start: usize,
    /// Bytes successful process_mrelease calls freed.
    pub released_bytes: u64,
    /// Bytes victims still held when they began to exit, left to their own exit to free.
    pub left_to_exit_bytes: u64,
    /// Failed process_mrelease calls, by errno and reason.
    pub release_failures: Vec<ReleaseFailure>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseFailure {
    pub errno: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub count: u64,
}

pub fn summary(kills: &[Kill]) -> Summary {
    let mut back: Vec<u64> = kills.iter().filter_map(|k| k.memory_back_ns).collect();
    back.sort_unstable();
    let mut failures: BTreeMap<(String, Option<String>), u64> = BTreeMap::new();
    for r in kills.iter().flat_map(|k| &k.releases) {
        if r.result != "ok" {
            *failures
                .entry((r.result.clone(), r.reason.clone()))
                .or_default() += 1;
        }
    }
    Summary {
        kills: kills.len(),
        memory_back_known: back.len(),
        // The lower middle of an even count: a time one kill really took.
        memory_back_median_ns: back.get(back.len().saturating_sub(1) / 2).copied(),
        memory_back_max_ns: back.last().copied(),
        memory_back_at_exit_start: kills
            .iter()
            .filter(|k| k.memory_back_by == Some("exit_start"))
            .count(),
        released_bytes: kills
            .iter()
            .flat_map(|k| &k.releases)
            .filter(|r| r.result == "ok")
            .filter_map(|r| r.freed_bytes)
            .sum(),
        left_to_exit_bytes: kills.iter().filter_map(|k| k.held_at_exit).sum(),
        release_failures: failures
            .into_iter()
            .map(|((errno, reason), count)| ReleaseFailure {
                errno,
                reason,
                count,
            })
            .collect(),
    }
}

//! Kill-and-reap timelines: from the signal (or the kernel OOM killer's choice) through each
//! process_mrelease to the exit, and how long the memory took to come back.

use std::collections::HashMap;

use mmtrace_events::decode::signal_name;
use serde::Serialize;

use super::record::Record;

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
    /// pidfd_send_signal, kill, or oom_kill for the kernel's OOM killer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_result: Option<String>,
    pub releases: Vec<Release>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<Oom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_at: Option<u64>,
    /// Bytes the victim still held when it exited, when the recording says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_at_exit: Option<u64>,
    /// From the kill to the memory being back: the first successful process_mrelease's
    /// return, the OOM reaper's finish, or the exit, whichever came first. The exit is
    /// stamped as it starts, just before the process gives up its memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_back_by: Option<&'static str>,
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
            releases: Vec::new(),
            oom: None,
            exit_at: None,
            held_at_exit: None,
            memory_back_ns: None,
            memory_back_by: None,
        }
    }

    /// The kill: the signal, or the kernel OOM killer's choice.
    pub fn start(&self) -> Option<u64> {
        self.signal_at
            .or(self.oom.as_ref().map(|o| o.mark_victim_at))
    }

    /// Works out when the memory was back, once every line is in.
    fn settle(&mut self) {
        let start = self.start();
        let mut candidates: Vec<(u64, &'static str)> = Vec::new();
        if let Some(r) = self.releases.iter().find(|r| r.result == "ok") {
            candidates.push((r.at.saturating_add(r.duration_ns), "process_mrelease"));
        }
        if let Some(at) = self.oom.as_ref().and_then(|o| o.reap_finish_at) {
            candidates.push((at, "oom_reaper"));
        }
        if let Some(at) = self.exit_at {
            candidates.push((at, "exit"));
        }
        if let (Some(start), Some(&(at, by))) = (start, candidates.iter().min()) {
            self.memory_back_ns = Some(at.saturating_sub(start));
            self.memory_back_by = Some(by);
        }
    }
}

/// Follows pidfds to the processes they name and collects one timeline per kill.
#[derive(Debug, Default)]
pub struct Kills {
    /// (caller, fd) → the pid it was opened for.
    pidfds: HashMap<(u32, i64), u32>,
    kills: Vec<Kill>,
    /// The latest timeline of each victim.
    latest: HashMap<u32, usize>,
}

impl Kills {
    pub fn apply(&mut self, r: &Record) {
        match &*r.name {
            "pidfd_open" if r.ok() => {
                let pid = r
                    .target
                    .as_ref()
                    .map(|t| t.0)
                    .or_else(|| r.arg_u64("pid").and_then(|p| u32::try_from(p).ok()));
                if let Some(pid) = pid {
                    self.pidfds.insert((r.pid, r.ret), pid);
                }
            }
            "pidfd_send_signal" | "kill" => {
                let sig = r.arg_u64("sig").unwrap_or(0);
                // Signal 0 only asks whether the process exists.
                if sig == 0 {
                    return;
                }
                let Some(pid) = self.target_of(r) else { return };
                let k = self.timeline(pid, r, true);
                // A second signal to a victim still dying adds nothing: keep the first.
                if k.signal_at.is_none() {
                    k.signal_at = Some(r.ts);
                    k.signal = Some(signal_name(sig));
                    k.via = Some(r.name.to_string());
                    k.signal_result = Some(r.errno.clone().unwrap_or_else(|| "ok".into()));
                    k.killer_pid = Some(r.pid);
                    k.killer_name = Some(r.comm.clone());
                }
            }
            "process_mrelease" => {
                let Some(pid) = self.target_of(r) else { return };
                let k = self.timeline(pid, r, false);
                k.releases.push(Release {
                    at: r.ts,
                    duration_ns: r.duration,
                    result: r.errno.clone().unwrap_or_else(|| "ok".into()),
                    freed_bytes: r.freed,
                    reason: r.reason.clone(),
                    by_pid: r.pid,
                });
                if k.killer_pid.is_none() {
                    k.killer_pid = Some(r.pid);
                    k.killer_name = Some(r.comm.clone());
                }
            }
            "oom_mark_victim" => {
                let Some(pid) = r.arg_u64("pid").and_then(|p| u32::try_from(p).ok()) else {
                    return;
                };
                let comm = r.arg_str("comm").map(str::to_string);
                let k = self.timeline(pid, r, true);
                k.via = Some("oom_kill".into());
                k.signal = Some("SIGKILL".into());
                k.target_name = comm.or(k.target_name.take());
                k.oom = Some(Oom {
                    mark_victim_at: r.ts,
                    anon_rss_kb: r.arg_u64("anon_rss"),
                    file_rss_kb: r.arg_u64("file_rss"),
                    shmem_rss_kb: r.arg_u64("shmem_rss"),
                    ..Oom::default()
                });
            }
            "oom_start_task_reaping" | "oom_finish_task_reaping" | "oom_skip_task_reaping" => {
                let Some(pid) = r.arg_u64("pid").and_then(|p| u32::try_from(p).ok()) else {
                    return;
                };
                let Some(&i) = self.latest.get(&pid) else {
                    return;
                };
                let oom = self.kills[i].oom.get_or_insert_with(Oom::default);
                match &*r.name {
                    "oom_start_task_reaping" => oom.reap_start_at = Some(r.ts),
                    "oom_finish_task_reaping" => oom.reap_finish_at = Some(r.ts),
                    _ => oom.reap_skipped = true,
                }
            }
            "sched_process_exit" => {
                // The exiting process is the one the line's context names.
                let Some(&i) = self.latest.get(&r.pid) else {
                    return;
                };
                let k = &mut self.kills[i];
                if k.exit_at.is_none() {
                    k.exit_at = Some(r.ts);
                    // The kernel's counters are per-CPU sums that can dip below zero once
                    // process_mrelease has taken the pages: such a value means nothing held.
                    k.held_at_exit = ["anon", "file", "shmem"].iter().try_fold(0u64, |sum, a| {
                        Some(sum.saturating_add(r.arg_i64(a)?.max(0) as u64))
                    });
                }
            }
            _ => {}
        }
    }

    fn target_of(&self, r: &Record) -> Option<u32> {
        if let Some((pid, _)) = &r.target {
            return Some(*pid);
        }
        if r.name == "kill" {
            return r
                .arg_i64("pid")
                .filter(|&p| p > 0)
                .and_then(|p| u32::try_from(p).ok());
        }
        self.pidfds.get(&(r.pid, r.arg_i64("pidfd")?)).copied()
    }

    /// The timeline `r` belongs to. A new kill of a pid whose last victim has exited is a
    /// new timeline (the pid was reused); a process_mrelease after the exit is not: it is
    /// the reaper arriving late, and belongs to the kill it follows.
    fn timeline(&mut self, pid: u32, r: &Record, new_kill: bool) -> &mut Kill {
        let i = match self.latest.get(&pid) {
            Some(&i) if !new_kill || self.kills[i].exit_at.is_none() => i,
            _ => {
                self.kills.push(Kill::new(pid));
                self.latest.insert(pid, self.kills.len() - 1);
                self.kills.len() - 1
            }
        };
        let k = &mut self.kills[i];
        if let Some((_, Some(name))) = &r.target {
            k.target_name = Some(name.clone());
        }
        k
    }

    pub fn finish(&self) -> Vec<Kill> {
        let mut kills = self.kills.clone();
        for k in &mut kills {
            k.settle();
        }
        kills
    }
}

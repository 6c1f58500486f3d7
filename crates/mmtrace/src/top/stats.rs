//! What the live view ranks, gathered from the event stream: per process, the calls, the time
//! spent in them and the failures of the last interval, and the locked memory its latest call
//! reported. Rates are over whole intervals, so a row does not flicker with the moment drawn.

use std::collections::HashMap;
use std::time::Duration;

use mmtrace_events::catalog::{Role, Source};
use mmtrace_events::enrich::Locked;
use mmtrace_events::{Event, TracedText};

/// Intervals a process stays listed after its last call: long enough to read it once it
/// stops, short enough that the list is of what is busy now.
const KEEP_IDLE: u32 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub calls: f64,
    /// Nanoseconds spent in calls per second.
    pub time_ns: f64,
    pub failures: f64,
}

impl Rates {
    pub fn add(&mut self, other: &Rates) {
        self.calls += other.calls;
        self.time_ns += other.time_ns;
        self.failures += other.failures;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    calls: u64,
    time_ns: u64,
    failures: u64,
}

#[derive(Debug)]
pub struct Process {
    /// The name its latest call was made under: its thread's.
    pub comm: TracedText,
    pub cgroup_id: u64,
    /// When it started, to tell it from a later process given the same pid.
    start: u64,
    current: Counts,
    /// Per second over the last whole interval.
    pub rates: Rates,
    /// As its latest call that carried it left it.
    pub locked: Option<Locked>,
    /// Whole intervals since its last call.
    idle: u32,
    exited: bool,
}

/// Every process seen lately, by host pid.
#[derive(Debug, Default)]
pub struct Stats {
    processes: HashMap<u32, Process>,
    /// Events of the interval so far, and per second over the last whole one.
    events: u64,
    pub events_rate: f64,
}

impl Stats {
    pub fn event(&mut self, e: &Event) {
        self.events += 1;
        let pid = e.ctx.host_pid;
        if e.def.role == Role::Exits {
            if let Some(p) = self.processes.get_mut(&pid) {
                p.exited |= p.start == e.ctx.process_start;
            }
            return;
        }
        // Kernel events and alerts are no call the process made.
        if !matches!(e.def.source, Source::Syscall { .. }) {
            return;
        }
        let p = self.processes.entry(pid).or_insert_with(|| Process {
            comm: e.ctx.comm.clone(),
            cgroup_id: e.ctx.cgroup_id,
            start: e.ctx.process_start,
            current: Counts::default(),
            rates: Rates::default(),
            locked: None,
            idle: 0,
            exited: false,
        });
        if p.start != e.ctx.process_start {
            // The pid was given to a new process: what was said of the old one is not its.
            p.start = e.ctx.process_start;
            p.current = Counts::default();
            p.rates = Rates::default();
            p.locked = None;
            p.exited = false;
        }
        if p.comm != e.ctx.comm {
            p.comm.clone_from(&e.ctx.comm);
        }
        p.cgroup_id = e.ctx.cgroup_id;
        p.current.calls += 1;
        p.current.time_ns = p.current.time_ns.saturating_add(e.duration_ns);
        p.current.failures += u64::from(e.def.errno(e.ret).is_some());
        if let Some(locked) = e.enrich.as_ref().and_then(|x| x.locked) {
            p.locked = Some(locked);
        }
    }

    /// Closes an interval of length `elapsed`: its counts become the rates shown. Processes
    /// that exited before it, or have been idle too long, are dropped.
    pub fn tick(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        self.processes
            .retain(|_, p| !(p.exited && p.current.calls == 0) && p.idle < KEEP_IDLE);
        for p in self.processes.values_mut() {
            let c = std::mem::take(&mut p.current);
            p.rates = Rates {
                calls: c.calls as f64 / secs,
                time_ns: c.time_ns as f64 / secs,
                failures: c.failures as f64 / secs,
            };
            p.idle = if c.calls == 0 { p.idle + 1 } else { 0 };
        }
        self.events_rate = std::mem::take(&mut self.events) as f64 / secs;
    }

    pub fn processes(&self) -> impl Iterator<Item = (u32, &Process)> {
        self.processes.iter().map(|(&pid, p)| (pid, p))
    }
}

#[cfg(test)]
mod tests {
    use mmtrace_events::by_name;
    use mmtrace_events::event::Context;

    use super::*;

    fn event(name: &str, pid: u32, start: u64, ret: i64, duration_ns: u64) -> Event {
        Event {
            def: by_name(name).unwrap(),
            ctx: Context {
                host_pid: pid,
                process_start: start,
                comm: TracedText::from("busy"),
                ..Context::default()
            },
            raw_args: [0; 8],
            absent: 0,
            ret,
            duration_ns,
            enrich: None,
            stack: None,
        }
    }

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let mut s = Stats::default();
        for _ in 0..10 {
            s.event(&event("munmap", 7, 1, 0, 1_000));
            s.event(&event("mlock", 7, 1, -12, 3_000));
        }
        s.tick(Duration::from_millis(500));
        let (_, p) = s.processes().next().unwrap();
        assert_eq!(
            p.rates,
            Rates {
                calls: 40.0,
                time_ns: 80_000.0,
                failures: 20.0
            }
        );
        assert_eq!(s.events_rate, 40.0);
        s.tick(Duration::from_secs(1));
        let (_, p) = s.processes().next().unwrap();
        assert_eq!(p.rates, Rates::default());
    }

    #[test]
    fn exited_and_idle_processes_go() {
        let mut s = Stats::default();
        s.event(&event("munmap", 7, 1, 0, 1));
        s.event(&event("munmap", 8, 1, 0, 1));
        s.event(&event("sched_process_exit", 7, 1, 0, 0));
        // Shown for the interval it made calls in, then gone.
        s.tick(Duration::from_secs(1));
        assert_eq!(s.processes().count(), 2);
        s.tick(Duration::from_secs(1));
        let pids: Vec<u32> = s.processes().map(|(pid, _)| pid).collect();
        assert_eq!(pids, [8]);
        for _ in 0..KEEP_IDLE {
            s.tick(Duration::from_secs(1));
        }
        assert_eq!(s.processes().count(), 0);
    }

    #[test]
    fn a_reused_pid_starts_afresh() {
        let mut s = Stats::default();
        s.event(&event("munmap", 7, 1, 0, 1));
        s.event(&event("sched_process_exit", 7, 2, 0, 0));
        s.event(&event("munmap", 7, 2, 0, 1));
        s.tick(Duration::from_secs(1));
        let (_, p) = s.processes().next().unwrap();
        assert_eq!(p.rates.calls, 1.0);
        assert!(!p.exited, "the exit named another process");
    }
}

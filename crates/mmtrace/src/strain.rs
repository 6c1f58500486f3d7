//! Why the ring lost events: where the reader's time went while they waited. The kernel's
//! loss counters are read after each full batch; the events lost since the previous reading
//! are put down to what took most of the reader's time in between, poll's idle sleep left out:
//! - in the output's writes, asleep (a pipe whose reader is slow, a disk that throttles the
//!   page cache) or running in the kernel (copying into the page cache, reclaiming it: the
//!   reader's system time, as the ring is read from memory without a syscall): the output's
//!   throughput;
//! - runnable but not running (the kernel's run-queue wait, /proc/thread-self/schedstat):
//!   other work held the CPUs;
//! - running in user space: decoding and formatting at full speed is too slow for the events
//!   made.
//!
//! The reader sleeps nowhere but in poll and in the output's writes, so its sleep outside poll
//! is the time the output kept it waiting, with no clock read around each write.

use std::time::{Duration, Instant};

use mmtrace_bpf::Tracer;

use crate::privilege::READER_NICE;

/// What kept the reader from emptying the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Output,
    Starved,
    Reader,
}

/// The limit of a stretch in which events were lost, from the reader's time in it: on a CPU
/// in user space, waiting for one, and in the output's writes.
pub fn classify(running: Duration, waiting: Duration, writing: Duration) -> Limit {
    if writing >= running && writing >= waiting {
        Limit::Output
    } else if waiting >= running {
        Limit::Starved
    } else {
        Limit::Reader
    }
}

/// The reader thread's time on a CPU and waiting for one, as the scheduler counts them, and
/// of the first its time in the kernel.
#[derive(Clone, Copy)]
struct Sched {
    running: Duration,
    waiting: Duration,
    system: Duration,
}

impl Sched {
    /// None where the kernel keeps no schedstat (CONFIG_SCHED_INFO off).
    fn now() -> Option<Sched> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut ns = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given, and nothing else.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
            return None;
        }
        let stime = usage.ru_stime;
        Some(Sched {
            running: Duration::from_nanos(ns.next()??),
            waiting: Duration::from_nanos(ns.next()??),
            system: Duration::from_secs(stime.tv_sec as u64)
                + Duration::from_micros(stime.tv_usec as u64),
        })
    }
}

/// A reading at the end of a stretch.
struct Mark {
    at: Instant,
    lost: u64,
    bytes: u64,
    sched: Option<Sched>,
}

impl Mark {
    fn now(tracer: &Tracer, bytes: u64) -> Mark {
        Mark {
            at: Instant::now(),
            lost: lost(tracer),
            bytes,
            sched: Sched::now(),
        }
    }
}

fn lost(tracer: &Tracer) -> u64 {
    tracer.lost().iter().map(|(_, n)| n).sum()
}

/// The stretches with losses put down to one limit, added up.
#[derive(Default, Clone, Copy)]
struct Tally {
    lost: u64,
    seen: u64,
    /// Bytes the outputs took.
    bytes: u64,
    /// The reader's time but poll's.
    busy: Duration,
    /// All of it: a wait for a CPU can fall in poll's time, after its wakeup.
    wall: Duration,
    waiting: Duration,
}

/// The reader's account of its stretches.
pub struct Strain {
    last: Mark,
    /// In poll since the last mark.
    idle: Duration,
    /// Events handed to the outputs since the last mark.
    seen: u64,
    tallies: [Tally; 3],
}

impl Strain {
    pub fn new(tracer: &Tracer, bytes: u64) -> Strain {
        Strain {
            last: Mark::now(tracer, bytes),
            idle: Duration::ZERO,
            seen: 0,
            tallies: [Tally::default(); 3],
        }
    }

    pub fn idle(&mut self, slept: Duration) {
        self.idle += slept;
    }

    pub fn seen(&mut self, n: usize) {
        self.seen += n as u64;
    }

    /// Ends a stretch: its losses, if any, go to the limit that took most of its time.
    /// `bytes`: what the outputs have taken so far.
    pub fn mark(&mut self, tracer: &Tracer, bytes: u64) {
        let now = Mark::now(tracer, bytes);
        let lost = now.lost - self.last.lost;
        if lost > 0 {
            if let (Some(a), Some(b)) = (self.last.sched, now.sched) {
                let wall = now.at.duration_since(self.last.at);
                let busy = wall.saturating_sub(self.idle);
                let running = b.running.saturating_sub(a.running);
                let waiting = b.waiting.saturating_sub(a.waiting);
                let system = b.system.saturating_sub(a.system).min(running);
                let asleep = busy.saturating_sub(running + waiting);
                let limit = classify(running - system, waiting, asleep + system);
                let t = &mut self.tallies[limit as usize];
                t.lost += lost;
                t.seen += self.seen;
                t.bytes += now.bytes - self.last.bytes;
                t.busy += busy;
                t.wall += wall;
                t.waiting += waiting;
            }
        }
        self.last = now;
        self.idle = Duration::ZERO;
        self.seen = 0;
    }

    /// Why events were lost and what to do, for the summary's warning: the limit of most of
    /// them. `output` names where events were written.
    pub fn diagnosis(&self, output: &str) -> Option<String> {
        let (i, t) = self
            .tallies
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| t.lost)
            .filter(|(_, t)| t.lost > 0)?;
        let secs = t.busy.as_secs_f64().max(1e-9);
        Some(match [Limit::Output, Limit::Starved, Limit::Reader][i] {
            Limit::Output => {
                // What the events would have taken, at the size of the lines written.
                let per_event = t.bytes as f64 / t.seen.max(1) as f64;
                let made = (t.seen + t.lost) as f64 * per_event;
                format!(
                    "the output ({output}) took {}/s, less than the {}/s of events: write to a faster sink, trace fewer events (-e, -s), raise --buffer-size for bursts, or use serve for counts",
                    megabytes(t.bytes as f64 / secs),
                    megabytes(made / secs)
                )
            }
            Limit::Starved => format!(
                "the reader waited {:.0}% of the time for a CPU that other work held: {}, free a CPU, raise --buffer-size for bursts, or trace fewer events",
                100.0 * t.waiting.as_secs_f64() / t.wall.as_secs_f64().max(1e-9),
                match rustix::process::getpriority_process(None) {
                    // mmtrace could not raise it: not root, or the user chose it.
                    Ok(nice) if nice > READER_NICE => "give it a higher priority (run it as root, nice -n -20, or chrt -f 10)",
                    // It was raised, or real-time under the storm: other real-time work held the CPUs.
                    _ => "give it a real-time priority above other work's (chrt -f 10)",
                }
            ),
            Limit::Reader => format!(
                "the reader, busy on a CPU, handled {:.0}k events/s of the {:.0}k/s made: trace fewer events (-e, -s), use --no-enrich or -o none, or use serve for counts",
                t.seen as f64 / secs / 1e3,
                (t.seen + t.lost) as f64 / secs / 1e3
            ),
        })
    }
}

fn megabytes(bytes_per_s: f64) -> String {
    let mb = bytes_per_s / 1e6;
    match mb < 10.0 {
        true => format!("{mb:.1} MB"),
        false => format!("{mb:.0} MB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_of_the_readers_time_names_the_limit() {
        let ms = Duration::from_millis;
        assert_eq!(classify(ms(10), ms(5), ms(80)), Limit::Output);
        assert_eq!(classify(ms(10), ms(80), ms(5)), Limit::Starved);
        assert_eq!(classify(ms(80), ms(10), ms(5)), Limit::Reader);
        assert_eq!(classify(ms(40), ms(40), ms(20)), Limit::Starved);
    }
}

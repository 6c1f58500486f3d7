//! What `mmtrace trace` adds to the event stream itself, in band: the events the ring lost,
//! per event and when, the memory pressure a killer saw near each kill, and which limit the
//! kernel's OOM kills came from. A recording then carries them, so its analysis can say what
//! it lacks and what the killers decided on.

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmtrace_bpf::Tracer;
use mmtrace_events::catalog::{MMTRACE_LOST, MMTRACE_PRESSURE};
use mmtrace_events::enrich::Psi;
use mmtrace_events::{Event, Role};

use crate::kmsg::KernelLog;
use crate::output::{Note, Pressure, Sink};

/// The event names of the in-band lines. Tracee consumers skip events they do not know.
pub const LOST: &str = MMTRACE_LOST.name;
pub const PRESSURE: &str = MMTRACE_PRESSURE.name;

/// How often losses are looked for while tracing; a line is written only when some happened.
const LOST_EVERY: Duration = Duration::from_secs(1);
/// At most one pressure sample this often: a burst of kills shares one.
const PRESSURE_EVERY: Duration = Duration::from_millis(100);

/// Memory pressure now.
fn sample_pressure() -> Pressure {
    let psi = Psi::parse(&fs::read_to_string("/proc/pressure/memory").unwrap_or_default());
    let percent = |v: u32| f64::from(v) / 100.0;
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    Pressure {
        at: now(),
        some_avg10: psi.map(|p| percent(p.some_avg10)),
        full_avg10: psi.map(|p| percent(p.full_avg10)),
        mem_available: available,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Whether `e` is a signal that may kill, or the kernel OOM killer's choice.
fn is_kill(e: &Event) -> bool {
    match e.def.role {
        Role::Signals { .. } => e.arg("sig").is_some_and(|s| s.bits() != 0),
        Role::OomVictim => true,
        _ => false,
    }
}

/// The trace loop's side of in-band lines.
pub struct InBand {
    /// Lost counts already reported, per attached event, in `Tracer::lost` order.
    reported: Vec<u64>,
    since: u64,
    last_lost_check: Instant,
    last_pressure: Option<Instant>,
    /// Where the kernel reports its OOM kills, when they are traced.
    kernel_log: Option<KernelLog>,
}

impl InBand {
    pub fn new(kernel_log: Option<KernelLog>) -> InBand {
        InBand {
            reported: Vec::new(),
            since: now(),
            last_lost_check: Instant::now(),
            last_pressure: None,
            kernel_log,
        }
    }

    /// Before each event is written: the kernel OOM killer's victim gets the limit that fired.
    pub fn before(&mut self, e: &mut Event) {
        let Some(log) = self.kernel_log.as_mut() else {
            return;
        };
        if e.def.role != Role::OomVictim {
            return;
        }
        let x = e.enrich.get_or_insert_with(Default::default);
        let victim = x
            .target
            .as_ref()
            .map_or(e.raw_args[0] as u32, |t| t.host_pid);
        x.oom_limit = Some(log.limit_of(victim));
    }

    /// After each event: a kill gets the pressure of the moment it was read.
    pub fn after(&mut self, e: &Event, sink: &mut dyn Sink) -> std::io::Result<()> {
        if !is_kill(e)
            || self
                .last_pressure
                .is_some_and(|t| t.elapsed() < PRESSURE_EVERY)
        {
            return Ok(());
        }
        self.last_pressure = Some(Instant::now());
        sink.note(&Note::Pressure(sample_pressure()))
    }

    /// Between batches: the losses since the last line, once a second.
    pub fn tick(&mut self, tracer: &Tracer, sink: &mut dyn Sink) -> std::io::Result<()> {
        if self.last_lost_check.elapsed() < LOST_EVERY {
            return Ok(());
        }
        self.finish(tracer, sink)
    }

    /// The losses not reported yet; called once more after the last drain.
    pub fn finish(&mut self, tracer: &Tracer, sink: &mut dyn Sink) -> std::io::Result<()> {
        self.last_lost_check = Instant::now();
        let lost = tracer.lost();
        self.reported.resize(lost.len(), 0);
        let counts: Vec<(&'static str, u64)> = lost
            .iter()
            .zip(&mut self.reported)
            .filter_map(|(&(e, n), seen)| {
                let new = n.saturating_sub(*seen);
                *seen = n;
                (new > 0).then_some((e.name, new))
            })
            .collect();
        let at = now();
        let since = std::mem::replace(&mut self.since, at);
        if counts.is_empty() {
            return Ok(());
        }
        sink.note(&Note::Lost { at, since, counts })
    }
}

//! Loads the kernel side, attaches the hooks of the selected events, and reads their records.

use std::os::fd::AsFd;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use mmtrace_events::catalog::Source;
use mmtrace_events::{Event, EventDef};

use crate::record::{Clock, Record};
use crate::system::{self, SystemError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    #[error("attaching the {event} hook failed: {detail}")]
    Attach { event: &'static str, detail: String },
    #[error("none of the selected events exists on this kernel: {0}")]
    NothingAvailable(String),
    #[error("reading the event ring buffer failed: {0}")]
    Read(std::io::Error),
}

/// One line from an aya error and its causes: verifier logs run to pages.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out.lines().next().unwrap_or_default().to_string()
}

#[derive(Debug, Clone)]
pub struct Options {
    pub events: Vec<&'static EventDef>,
    /// Ring buffer size in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    /// Only calls from this process (host tgid), when set; otherwise every process but ours.
    pub target_tgid: Option<u32>,
}

impl Options {
    pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

    pub fn new(events: Vec<&'static EventDef>) -> Options {
        Options {
            events,
            ring_bytes: Self::DEFAULT_RING_BYTES,
            target_tgid: None,
        }
    }
}

/// A selected event the running kernel cannot trace, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub event: &'static EventDef,
    pub reason: String,
}

pub struct Tracer {
    bpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    clock: Clock,
    links: Vec<(&'static str, TracePointLinkId)>,
    attached: Vec<&'static EventDef>,
    unavailable: Vec<Unavailable>,
}

impl Tracer {
    /// Checks the system, loads the programs and attaches the hooks of every available event.
    pub fn start(opts: &Options) -> Result<Tracer, Error> {
        system::check_privileges()?;
        system::check_btf()?;
        let tracefs = system::ensure_tracefs()?;
        let (available, unavailable): (Vec<_>, Vec<_>) = opts
            .events
            .iter()
            .partition(|e| system::syscall_available(tracefs, e.name));
        let unavailable: Vec<Unavailable> = unavailable
            .into_iter()
            .map(|event| Unavailable {
                event,
                reason: format!(
                    "the running kernel has no {} syscall (added in Linux {})",
                    event.name, event.since
                ),
            })
            .collect();
        if available.is_empty() {
            let why: Vec<_> = unavailable.iter().map(|u| u.reason.as_str()).collect();
            return Err(Error::NothingAvailable(why.join("; ")));
        }

        let tgid = opts.target_tgid.unwrap_or(0);
        let self_tgid = std::process::id();
        // Wake the reader when a quarter of the ring is full; its poll timer covers the rest.
        let wakeup_bytes = u64::from(opts.ring_bytes / 4);
        let mut bpf = EbpfLoader::new()
            // Task-local storage has no typed wrapper in aya 0.14; the kernel side alone uses it.
            .allow_unsupported_maps()
            .override_global("target_tgid", &tgid, true)
            .override_global("self_tgid", &self_tgid, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .map_max_entries("events", opts.ring_bytes)
            .load(crate::BPF_OBJECT)
            .map_err(|e| Error::Load(one_line(&e)))?;

        let mut links = Vec::new();
        let mut attached = Vec::new();
        for &event in &available {
            let Source::Syscall { .. } = event.source;
            let enter = ENTER_PROGRAMS[event.args.len()];
            let enter_link = attach(&mut bpf, enter, event, &format!("sys_enter_{}", event.name))?;
            links.push((enter, enter_link));
            let exit_link = attach(
                &mut bpf,
                "sys_exit",
                event,
                &format!("sys_exit_{}", event.name),
            )?;
            links.push(("sys_exit", exit_link));
            attached.push(event);
        }

        let ring = take_map(&mut bpf, "events")?;
        let lost = take_map(&mut bpf, "lost")?;
        Ok(Tracer {
            bpf,
            ring,
            lost,
            clock: Clock::now(),
            links,
            attached,
            unavailable,
        })
    }

    pub fn attached(&self) -> &[&'static EventDef] {
        &self.attached
    }

    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Waits up to `timeout` for the kernel side to signal data; the kernel only wakes the reader
    /// past a fill threshold, so callers poll with a short timeout and drain either way.
    pub fn wait(&self, timeout: Duration) -> Result<(), Error> {
        let fd = self.ring.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(Error::Read(e.into())),
        }
    }

    /// Hands up to `max` records to `f`, in the order the kernel committed them, and returns
    /// how many it read. A bound keeps a reader that is checking for Ctrl-C from being held
    /// forever by a producer as fast as it is.
    pub fn drain_some(&mut self, max: usize, mut f: impl FnMut(Event)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            if let Some(event) = Record::from_bytes(&item).and_then(|r| r.to_event(&self.clock)) {
                f(event);
            }
            n += 1;
        }
        n
    }

    /// Hands every record now in the ring to `f`.
    pub fn drain(&mut self, f: impl FnMut(Event)) -> usize {
        self.drain_some(usize::MAX, f)
    }

    /// Detaches every hook: no new records arrive, the ones in the ring stay for a last drain.
    pub fn detach(&mut self) {
        for (name, link) in self.links.drain(..) {
            if let Some(prog) = self.bpf.program_mut(name) {
                let prog: Result<&mut TracePoint, _> = prog.try_into();
                if let Ok(prog) = prog {
                    let _ = prog.detach(link);
                }
            }
        }
    }

    /// Calls the kernel side saw but could not deliver (ring full), per event.
    pub fn lost(&self) -> Vec<(&'static EventDef, u64)> {
        self.attached
            .iter()
            .map(|&e| {
                let n = self
                    .lost
                    .get(&u32::from(e.id), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (e, n)
            })
            .collect()
    }
}

/// The enter program for each argument count: a program must not read past its syscall's
/// arguments, so each count has its own.
const ENTER_PROGRAMS: [&str; 7] = [
    "enter_0", "enter_1", "enter_2", "enter_3", "enter_4", "enter_5", "enter_6",
];

fn attach(
    bpf: &mut Ebpf,
    program: &'static str,
    event: &'static EventDef,
    tracepoint: &str,
) -> Result<TracePointLinkId, Error> {
    let fail = |detail: String| Error::Attach {
        event: event.name,
        detail,
    };
    let prog: &mut TracePoint = bpf
        .program_mut(program)
        .ok_or_else(|| fail(format!("program {program} is missing from the BPF object")))?
        .try_into()
        .map_err(|e| fail(one_line(&e)))?;
    if prog.fd().is_err() {
        prog.load()
            .map_err(|e| Error::Load(format!("{program}: {}", one_line(&e))))?;
    }
    prog.attach("syscalls", tracepoint)
        .map_err(|e| fail(one_line(&e)))
}

fn take_map<M>(bpf: &mut Ebpf, name: &str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map>,
    M::Error: std::error::Error,
{
    let map = bpf
        .take_map(name)
        .ok_or_else(|| Error::Load(format!("map {name} is missing from the BPF object")))?;
    M::try_from(map).map_err(|e| Error::Load(format!("map {name}: {}", one_line(&e))))
}

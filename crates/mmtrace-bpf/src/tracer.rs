//! Loads the kernel side, attaches the hooks of the selected events, and reads their records.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLink;
use aya::programs::{Program, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use mmtrace_abi as abi;
use mmtrace_events::catalog::Source;
use mmtrace_events::filter::ArgFilter;
use mmtrace_events::scope::Scope;
use mmtrace_events::{Event, EventDef};

use crate::error::{one_line, Error};
use crate::features::{Feature, Features};
use crate::metrics;
use crate::pod::Plain;
use crate::record::{self, Clock, Executables};
use crate::scope::{self, KernelScope};
use crate::system;

#[derive(Debug, Clone)]
pub struct Options {
    pub events: Vec<&'static EventDef>,
    pub filters: Vec<ArgFilter>,
    pub scope: Scope,
    /// Processes traced with all their descendants, besides the scope's own trees: the
    /// command mmtrace started.
    pub roots: Vec<u32>,
    /// Ring buffer size in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    /// Leave the tracer's own process out; tests of the tracer turn this off.
    pub exclude_self: bool,
    /// Gather the catalog's extras (pidfd targets, memory, mappings) in the kernel; without
    /// them a record is the bare call, the cheapest trace.
    pub enrich: bool,
    /// Kernel features to leave off even where the kernel has them.
    pub features_off: Vec<Feature>,
    /// Count the calls in the kernel's metrics maps instead of sending records (`serve`):
    /// `enrich` and `ring_bytes` are then ignored.
    pub metrics: bool,
    /// With `metrics`: time each call from a hook on its entry. Without, the calls whose counts
    /// need nothing of their entry are counted at their exit alone, for about a third of the cost.
    pub durations: bool,
    /// Send each syscall's user stack (frame pointers) with its record.
    pub stack: bool,
}

impl Options {
    pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

    pub fn new(events: Vec<&'static EventDef>) -> Options {
        Options {
            events,
            filters: Vec::new(),
            scope: Scope::default(),
            roots: Vec::new(),
            ring_bytes: Self::DEFAULT_RING_BYTES,
            exclude_self: true,
            enrich: true,
            features_off: Vec::new(),
            metrics: false,
            durations: true,
            stack: false,
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
    filtered: PerCpuArray<MapData, u64>,
    clock: Clock,
    executables: Executables,
    links: Vec<TracePointLink>,
    attached: Vec<&'static EventDef>,
    unavailable: Vec<Unavailable>,
    features: Features,
    stack: bool,
}

impl Tracer {
    /// Checks the system, loads the programs and attaches the hooks of every available event.
    pub fn start(opts: &Options) -> Result<Tracer, Error> {
        system::check_privileges()?;
        system::check_btf()?;
        let tracefs = system::ensure_tracefs()?;
        let features = Features::probe(tracefs, &opts.features_off)?;
        let (available, unavailable): (Vec<_>, Vec<_>) = opts
            .events
            .iter()
            .partition(|e| system::event_available(tracefs, e));
        let unavailable: Vec<Unavailable> = unavailable
            .into_iter()
            .map(|event| Unavailable {
                event,
                reason: match event.source {
                    // On arm64, protection keys came with POE (6.12); before, or without
                    // it, the kernel has no pkey_mprotect.
                    Source::Syscall { .. }
                        if cfg!(target_arch = "aarch64") && event.name == "pkey_mprotect" =>
                    {
                        "the running kernel has no pkey_mprotect syscall (on arm64: Linux 6.12 \
                         with memory protection keys, CONFIG_ARM64_POE)"
                            .to_string()
                    }
                    Source::Syscall { .. } => format!(
                        "the running kernel has no {} syscall (added in Linux {})",
                        event.name, event.since
                    ),
                    Source::Tracepoint { category, name, .. } => format!(
                        "the running kernel has no {category}:{name} tracepoint (added in Linux {})",
                        event.since
                    ),
                },
            })
            .collect();
        if available.is_empty() {
            let why: Vec<_> = unavailable.iter().map(|u| u.reason.as_str()).collect();
            return Err(Error::NothingAvailable(why.join("; ")));
        }

        let ks = KernelScope::build(&opts.scope, &opts.roots)?;
        let filters = scope::kernel_filters(&opts.filters)?;
        // The scope's part, and everything else the kernel side is told before it loads.
        let mut cfg = ks.config;
        cfg.self_tgid = if opts.exclude_self {
            std::process::id()
        } else {
            0
        };
        // Wake the reader when a quarter of the ring is full; its poll timer covers the rest.
        cfg.wakeup_bytes = u64::from(opts.ring_bytes / 4);
        // What each selected event asks the kernel side to gather, by event id.
        if opts.enrich {
            for e in &available {
                cfg.extras[usize::from(e.id)] = e
                    .extras
                    .iter()
                    .filter(|&&x| features.gathers(x))
                    .fold(0, |bits, x| bits | x.bit());
            }
        }
        cfg.have_find_vma = features.has(Feature::FindVma).into();
        cfg.exit_before_mm = features.has(Feature::ExitMemory).into();
        cfg.victim_fields = features.has(Feature::VictimFields).into();
        cfg.page_size = rustix::param::page_size() as u32;
        cfg.has_arg_filters = (!filters.is_empty()).into();
        if opts.metrics {
            cfg.metrics = 1;
            cfg.m_no_durations = (!opts.durations).into();
            for (slot, e) in available.iter().enumerate() {
                let role = metrics::role(e);
                let id = usize::from(e.id);
                cfg.m_slot[id] = u8::try_from(slot).map_err(|_| {
                    Error::Load(format!("more than {} events to count", abi::M_SLOTS))
                })?;
                cfg.m_role[id] = role;
                cfg.extras[id] = metrics::extras(role);
                cfg.m_at_exit[id] = u8::from(!opts.durations && !metrics::needs_entry(role));
            }
            // Unknown (0) counts every process per cgroup: slower, never wrong.
            cfg.m_host_mnt_ns = system::initial_mnt_ns();
        }
        // No record is sent in a metrics trace: the ring's smallest size will do.
        let ring_bytes = if opts.metrics {
            rustix::param::page_size() as u32
        } else {
            opts.ring_bytes
        };
        // Syscalls carry the executable; kernel events take it from their process's calls.
        // Its path is walked with bpf_loop, which comes with find_vma.
        let send_exe = opts.enrich
            && !opts.metrics
            && features.has(Feature::FindVma)
            && available
                .iter()
                .any(|e| matches!(e.source, Source::Syscall { .. }));
        cfg.send_exe = send_exe.into();
        cfg.stack = opts.stack.into();
        let mut bpf = EbpfLoader::new()
            // Task-local storage has no typed wrapper in aya 0.14; the kernel side alone uses it.
            .allow_unsupported_maps()
            .override_global("cfg", &Plain(cfg), true)
            .map_max_entries("events", ring_bytes)
            .map_max_entries("tracked", system::pid_max().div_ceil(32))
            .load(crate::BPF_OBJECT)
            .map_err(|e| Error::Load(one_line(&e)))?;
        fill_maps(&mut bpf, &ks, &filters)?;
        let mut programs: Vec<&str> = Vec::new();
        if ks.needs_process_hooks() {
            programs.push("on_fork");
        }
        if send_exe {
            programs.push("on_exec");
        }
        if ks.needs_cgroup_hooks() {
            programs.extend(["on_cgroup_mkdir", "on_cgroup_rmdir"]);
        }
        for event in &available {
            match event.source {
                Source::Syscall { .. } => programs.extend(["sys_enter", "sys_exit"]),
                Source::Tracepoint { program, .. } => programs.push(program),
            }
        }
        load_programs(&mut bpf, &programs)?;

        // The fork hook first, so no child forked while the syscall hooks go on is missed.
        if ks.needs_process_hooks() {
            attach_process_hook(&mut bpf, "on_fork", "sched_process_fork")?;
        }
        // Before the syscall hooks, so no exec is missed once a process's path is sent.
        if send_exe {
            attach_process_hook(&mut bpf, "on_exec", "sched_process_exec")?;
        }
        // Before the syscall hooks, so a container started as they go on is not missed.
        if ks.needs_cgroup_hooks() {
            attach_process_hook(&mut bpf, "on_cgroup_mkdir", "cgroup_mkdir")?;
            attach_process_hook(&mut bpf, "on_cgroup_rmdir", "cgroup_rmdir")?;
            let started = match scope::cgroup2_root() {
                Some(root) if !ks.pending_containers.is_empty() => {
                    scope::pending_cgroups(&root, &ks.pending_containers)
                }
                _ => Vec::new(),
            };
            let mut watched: HashMap<_, u64, u8> = borrow_map(&mut bpf, "scope_cgroups")?;
            for id in started {
                watched.insert(id, 1, 0).map_err(|e| {
                    Error::Load(format!("filling map scope_cgroups: {}", one_line(&e)))
                })?;
            }
        }

        let mut links = Vec::new();
        let mut attached = Vec::new();
        for &event in &available {
            match event.source {
                Source::Syscall { .. } => {
                    if cfg.m_at_exit[usize::from(event.id)] == 0 {
                        let tp = format!("sys_enter_{}", event.name);
                        links.push(attach(&mut bpf, "sys_enter", event, "syscalls", &tp)?);
                    }
                    let tp = format!("sys_exit_{}", event.name);
                    links.push(attach(&mut bpf, "sys_exit", event, "syscalls", &tp)?);
                }
                Source::Tracepoint {
                    category,
                    name,
                    program,
                } => {
                    links.push(attach(&mut bpf, program, event, category, name)?);
                }
            }
            attached.push(event);
        }

        let ring = take_map(&mut bpf, "events")?;
        let lost = take_map(&mut bpf, "lost")?;
        let filtered = take_map(&mut bpf, "filtered")?;
        Ok(Tracer {
            bpf,
            ring,
            lost,
            filtered,
            clock: Clock::now(),
            executables: Executables::default(),
            links,
            attached,
            unavailable,
            features,
            stack: opts.stack,
        })
    }

    /// What the running kernel lacks, and so what the trace leaves out.
    pub fn features(&self) -> &Features {
        &self.features
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
            if let Some(mut event) = record::parse_record(&item, &self.clock, self.stack) {
                self.executables.fill(&mut event);
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

    /// Takes every hook off and unloads the programs and maps. A tracepoint's link, as it
    /// closes, waits for an RCU grace period (30-70 ms) before it lets go of its program, then
    /// removes the kernel's probe, which waits for as long again under a mutex all tracepoints
    /// share (perf_trace_destroy holds event_mutex). Each link closes on a thread of its own, so
    /// the first waits overlap: every program is off its hooks after about one grace period,
    /// and gone once the programs' own descriptors, closed meanwhile, are; only the probes'
    /// removal, which runs no program, is left one after another.
    pub fn detach(mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|s| {
            for link in links {
                // Without a thread to be had, the link closes here, with the closure.
                let _ = std::thread::Builder::new()
                    // Set, so that no thread reads RUST_MIN_STACK (std's environment lock).
                    .stack_size(64 << 10)
                    .spawn_scoped(s, move || drop(link));
            }
            drop(self);
        });
    }

    /// Whether the counters can be read with the privileges the process now holds: before
    /// Linux 6.5, with unprivileged BPF disabled, every bpf() command needs CAP_BPF, even on
    /// a map whose descriptor the caller holds.
    pub fn counters_readable(&self) -> bool {
        self.lost.get(&0, 0).is_ok()
    }

    /// Calls the kernel side saw but could not deliver (ring full), per event.
    pub fn lost(&self) -> Vec<(&'static EventDef, u64)> {
        self.per_event(&self.lost)
    }

    /// Calls the kernel side left out for the scope or the argument filters, per event.
    pub fn filtered(&self) -> Vec<(&'static EventDef, u64)> {
        self.per_event(&self.filtered)
    }

    /// The counts of a metrics trace (Options::metrics), summed over the CPUs.
    pub fn metrics(&self) -> Result<metrics::Snapshot, Error> {
        metrics::read(&self.bpf, &self.attached)
    }

    /// The cgroups a metrics trace has begun series of since the last call: its ring carries
    /// only these news, each a cgroup id.
    pub fn metrics_news(&mut self) -> std::collections::BTreeSet<u64> {
        let mut news = std::collections::BTreeSet::new();
        while let Some(item) = self.ring.next() {
            if let Ok(id) = <[u8; 8]>::try_from(&*item) {
                news.insert(u64::from_ne_bytes(id));
            }
        }
        news
    }

    /// The ring's fd, readable when it holds news (or records): to wait on instead of polling.
    pub fn ring_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Drops a metrics trace's series of the cgroups in `gone`.
    pub fn metrics_forget(&mut self, gone: &std::collections::BTreeSet<u64>) -> Result<(), Error> {
        metrics::forget(&mut self.bpf, gone)
    }

    /// The cgroups a metrics trace has counted calls of so far.
    pub fn metrics_cgroups(&self) -> Result<std::collections::BTreeSet<u64>, Error> {
        metrics::cgroup_ids(&self.bpf)
    }

    /// Cgroups made during the trace that belonged in its scope (`container=new`, a container
    /// not yet started, or a cgroup under one) but found the kernel's table of them full.
    pub fn scope_overflow(&self) -> u64 {
        self.bpf
            .map("scope_overflow")
            .and_then(|map| PerCpuArray::<_, u64>::try_from(map).ok())
            .and_then(|counter| counter.get(&0, 0).ok())
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    fn per_event(&self, counters: &PerCpuArray<MapData, u64>) -> Vec<(&'static EventDef, u64)> {
        self.attached
            .iter()
            .map(|&e| {
                let n = counters
                    .get(&u32::from(e.id), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (e, n)
            })
            .collect()
    }
}

/// Set to print the verifier's whole log when a program fails to load.
pub const VERIFIER_LOG_VAR: &str = "MMTRACE_VERIFIER_LOG";

/// Attaches `program` to the tracepoint and takes its link, which the tracer closes itself.
fn attach(
    bpf: &mut Ebpf,
    program: &'static str,
    event: &'static EventDef,
    category: &str,
    tracepoint: &str,
) -> Result<TracePointLink, Error> {
    let fail = |detail: String| Error::Attach {
        event: event.name,
        detail,
    };
    let prog: &mut TracePoint = bpf
        .program_mut(program)
        .ok_or_else(|| fail(format!("program {program} is missing from the BPF object")))?
        .try_into()
        .map_err(|e| fail(one_line(&e)))?;
    let id = prog
        .attach(category, tracepoint)
        .map_err(|e| fail(one_line(&e)))?;
    prog.take_link(id).map_err(|e| fail(one_line(&e)))
}

/// Loads (has the kernel verify) the programs named, each once, on as many threads as there are
/// cores: verification is most of the time to start, and the kernel verifies a privileged
/// caller's programs side by side.
fn load_programs(bpf: &mut Ebpf, names: &[&str]) -> Result<(), Error> {
    let queue: Vec<(&str, &mut Program)> = bpf
        .programs_mut()
        .filter(|(name, _)| names.contains(name))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(queue.len());
    let queue = std::sync::Mutex::new(queue);
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    while let Some((name, prog)) = next() {
                        load_program(name, prog)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(Error::Load("a loading thread panicked".into())))
        })
    })
}

fn load_program(name: &str, prog: &mut Program) -> Result<(), Error> {
    let loaded = match prog {
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        _ => return Err(Error::Load(format!("{name}: not a tracepoint program"))),
    };
    loaded.map_err(|e| {
        // The whole verifier log, for a kernel on which the one line is not enough.
        if std::env::var_os(VERIFIER_LOG_VAR).is_some() {
            eprintln!("{e:#}");
        }
        Error::Load(format!(
            "{name}: {} (set {VERIFIER_LOG_VAR}=1 for the verifier's whole log)",
            one_line(&e)
        ))
    })
}

/// Fills the scope's and filters' maps before any hook can read them.
fn fill_maps(
    bpf: &mut Ebpf,
    ks: &KernelScope,
    filters: &[(u32, abi::filter)],
) -> Result<(), Error> {
    let fail = |map: &str, e: aya::maps::MapError| {
        Error::Load(format!("filling map {map}: {}", one_line(&e)))
    };
    let mut values: HashMap<_, Plain<abi::scope_key>, u8> = borrow_map(bpf, "scope_values")?;
    for &(k, v) in &ks.values {
        values
            .insert(Plain(k), v, 0)
            .map_err(|e| fail("scope_values", e))?;
    }
    let mut comms: HashMap<_, [u8; 16], u8> = borrow_map(bpf, "scope_comms")?;
    for (k, v) in &ks.comms {
        comms.insert(k, v, 0).map_err(|e| fail("scope_comms", e))?;
    }
    let mut exes: HashMap<_, Plain<abi::exe_key>, u8> = borrow_map(bpf, "scope_exes")?;
    for &(k, v) in &ks.exes {
        exes.insert(Plain(k), v, 0)
            .map_err(|e| fail("scope_exes", e))?;
    }
    let mut words: BTreeMap<u32, u64> = BTreeMap::new();
    for pid in &ks.tree_members {
        *words.entry(pid / 32).or_default() |= u64::from(abi::TRACKED_TREE) << (pid % 32 * 2);
    }
    let mut tracked: Array<_, u64> = borrow_map(bpf, "tracked")?;
    for (idx, word) in words {
        tracked.set(idx, word, 0).map_err(|e| fail("tracked", e))?;
    }
    let mut ids: HashMap<_, [u8; abi::CONTAINER_ID_LEN as usize], u8> =
        borrow_map(bpf, "scope_container_ids")?;
    for id in &ks.pending_containers {
        ids.insert(id, 1, 0)
            .map_err(|e| fail("scope_container_ids", e))?;
    }
    let mut table: HashMap<_, u32, Plain<abi::filter>> = borrow_map(bpf, "arg_filters")?;
    for &(id, f) in filters {
        table
            .insert(id, Plain(f), 0)
            .map_err(|e| fail("arg_filters", e))?;
    }
    Ok(())
}

fn borrow_map<'a, M>(bpf: &'a mut Ebpf, name: &str) -> Result<M, Error>
where
    M: TryFrom<&'a mut Map, Error = MapError>,
{
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| Error::Load(format!("map {name} is missing from the BPF object")))?;
    M::try_from(map).map_err(|e| Error::Load(format!("map {name}: {}", one_line(&e))))
}

/// A hook that keeps a map of processes current: the tracked processes (fork), the
/// executables sent (exec), the containers' cgroups in scope (cgroup mkdir, rmdir). Its link lives as long as the program; it only maintains a map,
/// so it is left attached when the syscall hooks come off.
fn attach_process_hook(bpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), Error> {
    let fail = |what: &str, e: &dyn std::error::Error| Error::Attach {
        event: "process tracking",
        detail: format!("{what}: {}", one_line(e)),
    };
    let hook: &mut RawTracePoint = bpf
        .program_mut(program)
        .ok_or_else(|| Error::Load(format!("program {program} is missing")))?
        .try_into()
        .map_err(|e| fail(program, &e))?;
    hook.attach(tracepoint).map_err(|e| fail(tracepoint, &e))?;
    Ok(())
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

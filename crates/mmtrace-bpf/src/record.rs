//! The fixed-size record the kernel side writes for each call, and its turn into an `Event`.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

use mmtrace_abi as abi;
use mmtrace_abi::{
    E_EXE, E_EXE_ONLY, E_LOCKED, E_RSS_AFTER, E_RSS_BEFORE, E_TARGET, E_UNLOCKED, E_VMA,
    MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, VM_LOCKED, VM_SHARED,
};
use mmtrace_events::catalog::Source;
use mmtrace_events::enrich::{Enrichment, Locked, Mapping, MappingKind, Rss, Target};
use mmtrace_events::event::Context;
use mmtrace_events::stack::Stack;
use mmtrace_events::{by_id, Event, TracedText};

/// `struct record` of bpf/mmtrace.h: what the kernel side writes for every call.
pub type Record = abi::record;
/// `struct ext`: what events with catalog extras carry after the record.
type Ext = abi::ext;

/// Reads a plain-old-data value from the start of `bytes`, if they are long enough.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: length checked; T is only instantiated with repr(C) integer structs.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// What `x` says, with `path`: the mapping's file path the kernel side sent after the
/// extras, when it found one.
fn enrichment(x: &Ext, path: Option<&[u8]>) -> Enrichment {
    let page = rustix::param::page_size() as u64;
    let has = |bit: u32| x.flags & bit != 0;
    let rss = |pages: &[i64; abi::NR_MM_COUNTERS as usize]| {
        let bytes = |counter: u32| pages[counter as usize].max(0) as u64 * page;
        Rss {
            file: bytes(MM_FILEPAGES),
            anon: bytes(MM_ANONPAGES),
            shmem: bytes(MM_SHMEMPAGES),
        }
    };
    Enrichment {
        target: has(E_TARGET).then(|| Target {
            host_pid: x.target_pid,
            pid: x.target_ns_pid,
            comm: TracedText::from_c(&x.target_comm),
        }),
        rss_before: has(E_RSS_BEFORE).then(|| rss(&x.rss_before)),
        rss_after: has(E_RSS_AFTER).then(|| rss(&x.rss_after)),
        locked: has(E_LOCKED).then(|| Locked {
            locked_bytes: x.locked_vm * page,
            limit_bytes: (x.memlock_cur != u64::MAX).then_some(x.memlock_cur),
            cap_ipc_lock: x.cap_ipc_lock != 0,
        }),
        mapping: has(E_VMA).then(|| {
            let text = path.map(TracedText::from_c).unwrap_or_default();
            let (kind, name) = MappingKind::from_kernel(x.vma_kind, text.as_bytes());
            Mapping {
                kind,
                start: x.vma_start,
                end: x.vma_end,
                prot: x.vma_flags & 0x7,
                shared: x.vma_flags & VM_SHARED != 0,
                locked: x.vma_flags & VM_LOCKED != 0,
                path: (kind == MappingKind::File)
                    .then(|| file_path(text.as_bytes()))
                    .filter(|p| !p.is_empty()),
                name,
            }
        }),
        // After the call, so lock changes by the call itself are what is left.
        unlocked_bytes: (has(E_UNLOCKED) && has(E_LOCKED))
            .then(|| x.locked_before.saturating_sub(x.locked_vm) * page),
        // Read by mmtrace from the kernel's log, not by the kernel side.
        oom_limit: None,
    }
}

/// The kernel side writes a path's components leaf first, each followed by '/'.
fn file_path(leaf_first: &[u8]) -> TracedText {
    let parts: Vec<&[u8]> = leaf_first
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    let path = parts.iter().rev().fold(Vec::new(), |mut path, part| {
        path.push(b'/');
        path.extend_from_slice(part);
        path
    });
    TracedText::from(path)
}

/// Splits a syscall's record, sent with `--stack`, from the stack at its end: the frames
/// captured, then a `struct stack_tail`. None if the tail does not fit the bytes.
fn split_stack(bytes: &[u8]) -> Option<(&[u8], Stack)> {
    let tail_at = bytes.len().checked_sub(size_of::<abi::stack_tail>())?;
    let tail = read::<abi::stack_tail>(&bytes[tail_at..])?;
    let n = tail.nframes as usize;
    if n > abi::MAX_STACK as usize {
        return None;
    }
    let frames_at = tail_at.checked_sub(n * 8)?;
    let addresses = bytes[frames_at..tail_at]
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        // The walk ends on a frame whose return address is 0 (the outermost, _start's).
        .filter(|&a| a != 0)
        .collect();
    let stack = Stack {
        addresses,
        sp_word: tail.sp_word,
        frames: Vec::new(),
    };
    Some((&bytes[..frames_at], stack))
}

/// The event in ring-buffer bytes: a record, then its extras and path when it has them, and
/// with `stacks` (the trace asked for them) a syscall's stack. None if the bytes are too
/// short or the id is not in the catalog.
pub fn parse_record(bytes: &[u8], clock: &Clock, stacks: bool) -> Option<Event> {
    let record = read::<Record>(bytes)?;
    let syscall = matches!(by_id(record.id)?.source, Source::Syscall { .. });
    let (bytes, stack) = if stacks && syscall {
        let (bytes, stack) = split_stack(bytes)?;
        (bytes, Some(Box::new(stack)))
    } else {
        (bytes, None)
    };
    let rest = &bytes[offset_of!(abi::record_ext, ext)..];
    // The kernel side sends only the prefix of the extras its event gathered; the rest of
    // the fields are absent, which its flags say.
    let ext = (!rest.is_empty()).then(|| {
        let mut full = [0u8; size_of::<Ext>()];
        let n = rest.len().min(full.len());
        full[..n].copy_from_slice(&rest[..n]);
        read::<Ext>(&full).expect("a whole Ext")
    });
    let path = bytes
        .get(offset_of!(abi::record_path, path)..)
        .filter(|p| !p.is_empty());
    let mut e = event(&record, ext.as_ref(), path, clock)?;
    e.stack = stack;
    Some(e)
}

fn event(r: &Record, ext: Option<&Ext>, path: Option<&[u8]>, clock: &Clock) -> Option<Event> {
    let def = by_id(r.id)?;
    let exe_sent = ext.is_some_and(|x| x.flags & E_EXE != 0);
    let (exe, path) = if exe_sent {
        (
            path.map(|p| Arc::new(file_path(TracedText::from_c(p).as_bytes()))),
            None,
        )
    } else {
        (None, path)
    };
    Some(Event {
        def,
        ctx: Context {
            timestamp: clock.to_epoch(r.ts),
            thread_start: clock.to_epoch(r.thread_start),
            process_start: clock.to_epoch(r.leader_start),
            parent_start: clock.to_epoch(r.parent_start),
            cpu: r.cpu,
            pid: r.ns_pid,
            tid: r.ns_tid,
            ppid: r.ns_ppid,
            host_pid: r.pid,
            host_tid: r.tid,
            host_ppid: r.ppid,
            uid: r.uid,
            gid: r.gid,
            cgroup_id: r.cgroup_id,
            mnt_ns: r.mnt_ns,
            pid_ns: r.pid_ns,
            comm: TracedText::from_c(&r.comm),
            executable: exe,
            container: None,
        },
        raw_args: r.args,
        absent: r.absent as u8,
        ret: r.ret,
        duration_ns: r.duration,
        enrich: ext
            .filter(|x| x.flags & E_EXE_ONLY == 0)
            .map(|x| enrichment(x, path)),
        stack: None,
    })
}

/// The executable of each process, for all its events: the kernel side sends it with the
/// process's first call and its first after an exec, and a process's records arrive in the
/// order it made them. Keyed by host pid with the process's start, so a pid handed to a new
/// process replaces the old one's path: the map is as large as the pids that made calls.
#[derive(Debug, Default)]
pub struct Executables(HashMap<u32, (u64, Arc<TracedText>)>);

impl Executables {
    /// Learns the path `e` carries, or gives `e` its process's.
    pub fn fill(&mut self, e: &mut Event) {
        let c = &mut e.ctx;
        match &c.executable {
            Some(exe) => {
                self.0.insert(c.host_pid, (c.process_start, exe.clone()));
            }
            None => {
                c.executable = self
                    .0
                    .get(&c.host_pid)
                    .filter(|(start, _)| *start == c.process_start)
                    .map(|(_, exe)| exe.clone());
            }
        }
    }
}

/// Turns the kernel's CLOCK_BOOTTIME stamps into ns since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    /// The boot clock's offset from the epoch, from the tightest of a few readings of the
    /// boot clock between two of the real one: a thread preempted between two readings (for
    /// milliseconds on a loaded or emulated machine) would shift every timestamp by as much.
    pub fn now() -> Clock {
        use rustix::time::{clock_gettime, ClockId};
        let ns = |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let boot = || {
            ns(
                rustix::time::clock_gettime_dynamic(rustix::time::DynamicClockId::Boottime)
                    .unwrap_or_else(|_| clock_gettime(ClockId::Monotonic)),
            )
        };
        let real = || ns(clock_gettime(ClockId::Realtime));
        let (_, offset_ns) = (0..8)
            .map(|_| {
                let (before, b, after) = (real(), boot(), real());
                (after - before, (before + after) / 2 - b)
            })
            .min_by_key(|&(gap, _)| gap)
            .unwrap_or_default();
        Clock { offset_ns }
    }

    pub fn to_epoch(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmtrace_abi::{
        EXT_TARGET, ID_OOM_FINISH_TASK_REAPING, ID_OOM_MARK_VICTIM, ID_OOM_SKIP_TASK_REAPING,
        ID_OOM_START_TASK_REAPING, ID_SCHED_PROCESS_EXIT,
    };

    fn bytes<T>(v: &T) -> &[u8] {
        // SAFETY: reading the bytes of a repr(C) integer struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast(), size_of::<T>()) }
    }

    fn clock() -> Clock {
        Clock { offset_ns: 1_000 }
    }

    fn record(id: u16, args: &[u64]) -> Record {
        let mut r = Record {
            id,
            ts: 5,
            pid: 7,
            tid: 7,
            ns_pid: 7,
            ns_tid: 7,
            ..Record::default()
        };
        r.args[..args.len()].copy_from_slice(args);
        r.comm[..4].copy_from_slice(b"oomk");
        r
    }

    /// The kernel's OOM events decode from records with known fields, as the kernel side
    /// writes them; the reaping ones cannot be made to fire safely in a test.
    #[test]
    fn kernel_oom_events_decode() {
        let mut ext = Ext {
            flags: E_TARGET,
            target_pid: 4242,
            target_ns_pid: 1,
            ..Ext::default()
        };
        ext.target_comm[..6].copy_from_slice(b"victim");
        let mark = record(
            ID_OOM_MARK_VICTIM,
            &[4242, 81920, 65536, 4096, 0, 1000, 128, (-17i64) as u64],
        );
        let mut raw = bytes(&mark).to_vec();
        // As the kernel side sends it: the extras up to the target's, no memory counters.
        raw.extend_from_slice(&bytes(&ext)[..EXT_TARGET as usize]);
        let e = parse_record(&raw, &clock(), false).unwrap();
        assert_eq!(e.name(), "oom_mark_victim");
        assert_eq!(e.ctx.timestamp, 1_005);
        assert_eq!(e.ctx.comm, "oomk");
        let arg = |name| e.arg(name).unwrap();
        use mmtrace_events::ArgValue::{Signed, Unsigned};
        assert_eq!(arg("pid"), Signed(4242));
        assert_eq!(arg("anon_rss"), Unsigned(65536));
        assert_eq!(arg("uid"), Unsigned(1000));
        assert_eq!(arg("oom_score_adj"), Signed(-17));
        let target = e.enrich.as_ref().unwrap().target.as_ref().unwrap();
        assert_eq!(
            (target.host_pid, target.pid, target.comm.as_bytes()),
            (4242, 1, &b"victim"[..])
        );
        assert_eq!(e.error_name(), None);
        for (id, name) in [
            (ID_OOM_START_TASK_REAPING, "oom_start_task_reaping"),
            (ID_OOM_FINISH_TASK_REAPING, "oom_finish_task_reaping"),
            (ID_OOM_SKIP_TASK_REAPING, "oom_skip_task_reaping"),
        ] {
            let e = parse_record(bytes(&record(id, &[4242])), &clock(), false).unwrap();
            assert_eq!((e.name(), e.arg("pid")), (name, Some(Signed(4242))));
            assert!(e.enrich.is_none());
        }
        // exit(3): the status in bits 8-15 of task->exit_code, as Tracee splits it.
        let exit = parse_record(
            bytes(&record(ID_SCHED_PROCESS_EXIT, &[3 << 8, 1 << 20, 8192, 0])),
            &clock(),
            true,
        )
        .unwrap();
        assert_eq!(
            (
                exit.name(),
                exit.arg("exit_code"),
                exit.arg("signal_code"),
                exit.arg("anon"),
                exit.arg("file")
            ),
            (
                "sched_process_exit",
                Some(Signed(3)),
                Some(Signed(0)),
                Some(Unsigned(1 << 20)),
                Some(Unsigned(8192))
            )
        );
    }

    #[test]
    fn short_or_unknown_records_are_skipped() {
        assert!(parse_record(&[0u8; 10], &clock(), false).is_none());
        assert!(parse_record(bytes(&record(999, &[])), &clock(), false).is_none());
    }

    /// A record with the executable in its path slot: with extras the call asked for none of
    /// (no enrichment), and with a mapping that had no path of its own.
    fn with_exe(flags: u32) -> Vec<u8> {
        let mut r = abi::record_path {
            base: record(libc::SYS_munmap as u16, &[0x1000, 4096]),
            ext: Ext {
                flags,
                vma_kind: abi::VMA_ANON,
                ..Ext::default()
            },
            path: [0; abi::PATH_BUF as usize],
        };
        for (to, &from) in r.path.iter_mut().zip(b"true/bin/usr/") {
            *to = from as _;
        }
        bytes(&r).to_vec()
    }

    #[test]
    fn the_executable_is_not_taken_for_a_mapping_path() {
        let bare = parse_record(&with_exe(E_EXE | E_EXE_ONLY), &clock(), false).unwrap();
        assert_eq!(bare.ctx.executable.as_deref().unwrap(), "/usr/bin/true");
        assert!(bare.enrich.is_none());
        let mapped = parse_record(&with_exe(E_EXE | E_VMA), &clock(), false).unwrap();
        assert_eq!(mapped.ctx.executable.as_deref().unwrap(), "/usr/bin/true");
        let m = mapped.enrich.unwrap().mapping.unwrap();
        assert_eq!((m.kind, m.path), (MappingKind::Anon, None));
    }

    /// A process's later events get the path its first one brought; a later process with the
    /// same pid does not, until its own arrives; an exec's new path replaces the old one.
    #[test]
    fn executables_follow_the_process_not_the_pid() {
        let mut exes = Executables::default();
        let mut first = parse_record(&with_exe(E_EXE | E_EXE_ONLY), &clock(), false).unwrap();
        exes.fill(&mut first);
        let mut later = parse_record(
            bytes(&record(libc::SYS_munmap as u16, &[])),
            &clock(),
            false,
        )
        .unwrap();
        exes.fill(&mut later);
        assert_eq!(later.ctx.executable, first.ctx.executable);
        let mut reused = record(libc::SYS_munmap as u16, &[]);
        reused.leader_start = 99;
        let mut reused = parse_record(bytes(&reused), &clock(), false).unwrap();
        exes.fill(&mut reused);
        assert_eq!(reused.ctx.executable, None);
        let mut exec = first.clone();
        exec.ctx.executable = Some(Arc::new("/usr/bin/false".into()));
        exes.fill(&mut exec);
        let mut after_exec = parse_record(
            bytes(&record(libc::SYS_munmap as u16, &[])),
            &clock(),
            false,
        )
        .unwrap();
        exes.fill(&mut after_exec);
        assert_eq!(
            after_exec.ctx.executable.as_deref().unwrap(),
            "/usr/bin/false"
        );
    }

    /// With stacks, a syscall's record (here with its extras and path) ends in the frames
    /// and the tail; a kernel event's (the exit above, parsed with stacks on) has none.
    #[test]
    fn a_stack_follows_the_record() {
        let mut raw = with_exe(E_EXE | E_VMA);
        for frame in [0x7f00_0000_1234u64, 0x5555_0000_1000] {
            raw.extend_from_slice(&frame.to_ne_bytes());
        }
        let tail = abi::stack_tail {
            sp_word: 0x5555_0000_2000,
            nframes: 2,
            pad: 0,
        };
        raw.extend_from_slice(bytes(&tail));
        let e = parse_record(&raw, &clock(), true).unwrap();
        let stack = e.stack.unwrap();
        assert_eq!(stack.addresses, [0x7f00_0000_1234, 0x5555_0000_1000]);
        assert_eq!(stack.sp_word, 0x5555_0000_2000);
        assert_eq!(e.ctx.executable.as_deref().unwrap(), "/usr/bin/true");
        // A tail claiming more frames than the kernel side captures is no record.
        let mut lying = raw.clone();
        let n = lying.len();
        lying[n - 8] = 200;
        assert!(parse_record(&lying, &clock(), true).is_none());
    }

    #[test]
    fn paths_come_leaf_first() {
        assert_eq!(
            file_path(b"libc.so.6/x86_64-linux-gnu/lib/usr/"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(file_path(b"memfd:jit (deleted)/"), "/memfd:jit (deleted)");
        // Not UTF-8, and kept so: the outputs decide how to show it.
        assert_eq!(file_path(b"\xff\n/tmp/").as_bytes(), b"/tmp/\xff\n");
    }
}

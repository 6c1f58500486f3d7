//! The fixed-size record the kernel side writes for each call, and its turn into an `Event`.

use mmtrace_events::enrich::{Enrichment, Locked, Mapping, MappingKind, Rss, Target};
use mmtrace_events::event::Context;
use mmtrace_events::{by_id, Event, TracedText};

/// Mirror of `struct record` in bpf/mmtrace.bpf.c; both sides assert the size.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    pub ts: u64,
    pub duration: u64,
    pub args: [u64; 8],
    pub ret: i64,
    pub cgroup_id: u64,
    pub thread_start: u64,
    pub leader_start: u64,
    pub parent_start: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub ns_pid: u32,
    pub ns_tid: u32,
    pub ns_ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub id: u16,
    pub cpu: u16,
    /// Bit i: args[i] is a field the running kernel does not have.
    pub absent: u32,
    pub comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<Record>() == 184);

/// Mirror of `struct ext`: what events with catalog extras carry after the record.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Ext {
    pub flags: u32,
    pub vma_kind: u32,
    pub cap_ipc_lock: u32,
    pub pad: u32,
    pub locked_vm: u64,
    pub locked_before: u64,
    pub memlock_cur: u64,
    pub vma_start: u64,
    pub vma_end: u64,
    pub vma_flags: u64,
    pub target_pid: u32,
    pub target_ns_pid: u32,
    pub target_comm: [u8; 16],
    /// file, anon, swap, shmem pages: the kernel's MM_* counter order.
    pub rss_before: [i64; 4],
    pub rss_after: [i64; 4],
}

const _: () = assert!(std::mem::size_of::<Ext>() == 152);
// The prefixes the kernel side sends: EXT_CALLER and EXT_TARGET in bpf/mmtrace.bpf.c.
const _: () = assert!(std::mem::offset_of!(Ext, target_pid) == 64);
const _: () = assert!(std::mem::offset_of!(Ext, rss_before) == 88);

const E_TARGET: u32 = 1;
const E_RSS_BEFORE: u32 = 2;
const E_RSS_AFTER: u32 = 4;
const E_LOCKED: u32 = 8;
const E_VMA: u32 = 16;
const E_UNLOCKED: u32 = 32;
const VM_SHARED: u64 = 0x8;
const VM_LOCKED: u64 = 0x2000;

/// Reads a plain-old-data value from the start of `bytes`, if they are long enough.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>())
        // SAFETY: length checked; T is only instantiated with repr(C) integer structs.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Ext {
    /// `path`: the file path the kernel side sent after the extras, when it found one.
    fn enrichment(&self, path: Option<&[u8]>) -> Enrichment {
        let page = rustix::param::page_size() as u64;
        let has = |bit: u32| self.flags & bit != 0;
        let rss = |pages: &[i64; 4]| Rss {
            file: pages[0].max(0) as u64 * page,
            anon: pages[1].max(0) as u64 * page,
            shmem: pages[3].max(0) as u64 * page,
        };
        Enrichment {
            target: has(E_TARGET).then(|| Target {
                host_pid: self.target_pid,
                pid: self.target_ns_pid,
                comm: TracedText::from_c(&self.target_comm),
            }),
            rss_before: has(E_RSS_BEFORE).then(|| rss(&self.rss_before)),
            rss_after: has(E_RSS_AFTER).then(|| rss(&self.rss_after)),
            locked: has(E_LOCKED).then(|| Locked {
                locked_bytes: self.locked_vm * page,
                limit_bytes: (self.memlock_cur != u64::MAX).then_some(self.memlock_cur),
                cap_ipc_lock: self.cap_ipc_lock != 0,
            }),
            mapping: has(E_VMA).then(|| {
                let text = path.map(TracedText::from_c).unwrap_or_default();
                let (kind, name) = MappingKind::from_kernel(self.vma_kind, text.as_bytes());
                Mapping {
                    kind,
                    start: self.vma_start,
                    end: self.vma_end,
                    prot: self.vma_flags & 0x7,
                    shared: self.vma_flags & VM_SHARED != 0,
                    locked: self.vma_flags & VM_LOCKED != 0,
                    path: (kind == MappingKind::File)
                        .then(|| file_path(text.as_bytes()))
                        .filter(|p| !p.is_empty()),
                    name,
                }
            }),
            // After the call, so lock changes by the call itself are what is left.
            unlocked_bytes: (has(E_UNLOCKED) && has(E_LOCKED))
                .then(|| self.locked_before.saturating_sub(self.locked_vm) * page),
        }
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

impl Record {
    /// The event in ring-buffer bytes: a record, then its extras and path when it has them.
    /// None if the bytes are too short or the id is not in the catalog.
    pub fn parse(bytes: &[u8], clock: &Clock) -> Option<Event> {
        let record = read::<Record>(bytes)?;
        let rest = &bytes[std::mem::size_of::<Record>()..];
        // The kernel side sends only the prefix of the extras its event gathered; the rest of
        // the fields are absent, which its flags say.
        let ext = (!rest.is_empty()).then(|| {
            let mut full = [0u8; std::mem::size_of::<Ext>()];
            let n = rest.len().min(full.len());
            full[..n].copy_from_slice(&rest[..n]);
            read::<Ext>(&full).expect("a whole Ext")
        });
        let path = rest
            .get(std::mem::size_of::<Ext>()..)
            .filter(|p| !p.is_empty());
        record.event(ext.as_ref(), path, clock)
    }

    fn event(self, ext: Option<&Ext>, path: Option<&[u8]>, clock: &Clock) -> Option<Event> {
        let def = by_id(self.id)?;
        Some(Event {
            def,
            ctx: Context {
                timestamp: clock.to_epoch(self.ts),
                thread_start: clock.to_epoch(self.thread_start),
                process_start: clock.to_epoch(self.leader_start),
                parent_start: clock.to_epoch(self.parent_start),
                cpu: self.cpu,
                pid: self.ns_pid,
                tid: self.ns_tid,
                ppid: self.ns_ppid,
                host_pid: self.pid,
                host_tid: self.tid,
                host_ppid: self.ppid,
                uid: self.uid,
                gid: self.gid,
                cgroup_id: self.cgroup_id,
                mnt_ns: self.mnt_ns,
                pid_ns: self.pid_ns,
                comm: TracedText::from_c(&self.comm),
            },
            raw_args: self.args,
            absent: self.absent as u8,
            ret: self.ret,
            duration_ns: self.duration,
            enrich: ext.map(|x| x.enrichment(path)),
        })
    }
}

/// Turns the kernel's CLOCK_BOOTTIME stamps into ns since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        use rustix::time::{clock_gettime, ClockId};
        let ns = |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let boot = ns(
            rustix::time::clock_gettime_dynamic(rustix::time::DynamicClockId::Boottime)
                .unwrap_or_else(|_| clock_gettime(ClockId::Monotonic)),
        );
        let real = ns(clock_gettime(ClockId::Realtime));
        Clock {
            offset_ns: real - boot,
        }
    }

    pub fn to_epoch(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T>(v: &T) -> &[u8] {
        // SAFETY: reading the bytes of a repr(C) integer struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast(), std::mem::size_of::<T>()) }
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
        let mut ext: Ext = unsafe { std::mem::zeroed() };
        ext.flags = E_TARGET;
        ext.target_pid = 4242;
        ext.target_ns_pid = 1;
        ext.target_comm[..6].copy_from_slice(b"victim");
        let mark = record(
            1000,
            &[4242, 81920, 65536, 4096, 0, 1000, 128, (-17i64) as u64],
        );
        let mut raw = bytes(&mark).to_vec();
        // As the kernel side sends it: the extras up to the target's, no memory counters.
        raw.extend_from_slice(&bytes(&ext)[..std::mem::offset_of!(Ext, rss_before)]);
        let e = Record::parse(&raw, &clock()).unwrap();
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
            (1001, "oom_start_task_reaping"),
            (1002, "oom_finish_task_reaping"),
            (1003, "oom_skip_task_reaping"),
        ] {
            let e = Record::parse(bytes(&record(id, &[4242])), &clock()).unwrap();
            assert_eq!((e.name(), e.arg("pid")), (name, Some(Signed(4242))));
            assert!(e.enrich.is_none());
        }
        // exit(3): the status in bits 8-15 of task->exit_code, as Tracee splits it.
        let exit =
            Record::parse(bytes(&record(1004, &[3 << 8, 1 << 20, 8192, 0])), &clock()).unwrap();
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
        assert!(Record::parse(&[0u8; 10], &clock()).is_none());
        assert!(Record::parse(bytes(&record(999, &[])), &clock()).is_none());
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

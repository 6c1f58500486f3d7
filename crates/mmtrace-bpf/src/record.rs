//! The fixed-size record the kernel side writes for each call, and its turn into an `Event`.

use mmtrace_events::event::Context;
use mmtrace_events::{by_id, Event};

/// Mirror of `struct record` in bpf/mmtrace.bpf.c; both sides assert the size.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    pub ts: u64,
    pub duration: u64,
    pub args: [u64; 6],
    pub ret: i64,
    pub cgroup_id: u64,
    pub thread_start: u64,
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
    pub pad: u32,
    pub comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<Record>() == 152);

impl Record {
    /// Reads a record from ring-buffer bytes; None if they are too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Record> {
        if bytes.len() < std::mem::size_of::<Record>() {
            return None;
        }
        // SAFETY: length checked above; Record is plain old data with no invalid bit patterns.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Record>()) })
    }

    /// The event this record describes; None for an id the catalog does not know.
    pub fn to_event(&self, clock: &Clock) -> Option<Event> {
        let def = by_id(self.id)?;
        let comm_len = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        Some(Event {
            def,
            ctx: Context {
                timestamp: clock.to_epoch(self.ts),
                thread_start: clock.to_epoch(self.thread_start),
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
                comm: String::from_utf8_lossy(&self.comm[..comm_len]).into_owned(),
            },
            raw_args: self.args,
            ret: self.ret,
            duration_ns: self.duration,
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

//! One traced call with its context, as the outputs and analyses see it.

use crate::catalog::{ArgValue, EventDef};

/// Who made a call: the calling thread as the host and as its own pid namespace see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Entry time, ns since the epoch.
    pub timestamp: u64,
    /// When the thread started, ns since the epoch.
    pub thread_start: u64,
    /// When the process started (its leader), ns since the epoch: with `host_pid`, what
    /// tells it from a later process that got the same pid.
    pub process_start: u64,
    /// When the parent process started, ns since the epoch.
    pub parent_start: u64,
    pub cpu: u16,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub host_pid: u32,
    pub host_tid: u32,
    pub host_ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub comm: crate::TracedText,
    /// The process's executable, as the kernel side read it from its mm; shared by the
    /// process's events. None for a process whose path never arrived (kernel threads, a
    /// process seen only by kernel events or before its path's record was lost).
    pub executable: Option<std::sync::Arc<crate::TracedText>>,
    /// The container the call came from, resolved from `cgroup_id` as the event is read from
    /// the ring, before any output sees it; shared by the container's events.
    pub container: Option<std::sync::Arc<crate::container::Container>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub def: &'static EventDef,
    pub ctx: Context,
    /// Raw argument registers (or a kernel event's fields); only the first
    /// `def.args.len()` mean anything.
    pub raw_args: [u64; 8],
    /// Bit i: argument i is a field the running kernel does not have (oom:mark_victim before
    /// 6.9, sched_process_exit's memory before 6.16), left out rather than shown as 0.
    pub absent: u8,
    pub ret: i64,
    pub duration_ns: u64,
    /// What the kernel side gathered beyond the record, for events whose catalog entry asks.
    pub enrich: Option<crate::enrich::Enrichment>,
    /// The caller's user stack, with `--stack`; boxed, as most traces have none.
    pub stack: Option<Box<crate::stack::Stack>>,
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// (definition, Tracee's typed value, the value the kernel received) for each argument
    /// this kernel gave, in catalog order; `def.decoder` names the kernel's value.
    pub fn args(&self) -> impl Iterator<Item = (&'static crate::ArgDef, ArgValue, u64)> + '_ {
        self.def
            .args
            .iter()
            .enumerate()
            .filter(|(i, def)| !def.is_absent(*i, self.absent))
            .map(|(i, def)| {
                let raw = &self.raw_args;
                (def, def.value(i, raw), def.kernel_value(i, raw))
            })
    }

    /// How many arguments `args` yields.
    pub fn args_num(&self) -> usize {
        self.args().count()
    }

    /// The raw argument named `name`, typed; None when absent on this kernel.
    pub fn arg(&self, name: &str) -> Option<ArgValue> {
        self.arg_at(name)
            .map(|(i, def)| def.value(i, &self.raw_args))
    }

    /// The value the kernel received for the argument named `name`; None when absent.
    pub fn kernel_arg(&self, name: &str) -> Option<u64> {
        self.arg_at(name)
            .map(|(i, def)| def.kernel_value(i, &self.raw_args))
    }

    /// The position and definition of the argument named `name`, if this kernel gave it.
    fn arg_at(&self, name: &str) -> Option<(usize, &'static crate::ArgDef)> {
        let i = self.def.args.iter().position(|a| a.name == name)?;
        let def = &self.def.args[i];
        (!def.is_absent(i, self.absent)).then_some((i, def))
    }

    /// The errno name of a failed call (`EINVAL`), None on success.
    pub fn error_name(&self) -> Option<String> {
        let errno = self.def.errno(self.ret)?;
        Some(crate::decode::errno_name(errno).map_or_else(|| format!("E{errno}"), str::to_string))
    }
}

impl Context {
    /// Tracee's `threadEntityId`: the thread's host tid and start.
    pub fn thread_entity_id(&self) -> u32 {
        entity_id(self.host_tid, self.thread_start)
    }

    /// Tracee's `processEntityId`: the process's host pid and start; the leader's
    /// `threadEntityId`.
    pub fn process_entity_id(&self) -> u32 {
        entity_id(self.host_pid, self.process_start)
    }

    /// Tracee's `parentEntityId`: the parent's host pid and start.
    pub fn parent_entity_id(&self) -> u32 {
        entity_id(self.host_ppid, self.parent_start)
    }
}

/// Tracee's id of a task (v0.24.1's `HashTaskID`): MurmurHash3 x86 32-bit, with Tracee's
/// seed, over the pid and the start in ns since the epoch rounded down to 100 ms (so that
/// its /proc readings, in clock ticks, give the same ids), both big-endian. Consumers join
/// Tracee's events and ours on these, so they must come out bit for bit the same.
pub fn entity_id(pid: u32, start_epoch_ns: u64) -> u32 {
    const ROUND_NS: u64 = 100_000_000;
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&pid.to_be_bytes());
    key[4..].copy_from_slice(&(start_epoch_ns / ROUND_NS * ROUND_NS).to_be_bytes());
    murmur3_32(&key, 0x1827_3645)
}

/// MurmurHash3 x86 32-bit of a key whose length is a multiple of 4, blocks read
/// little-endian as Tracee reads them on x86_64 and arm64.
fn murmur3_32(key: &[u8; 12], seed: u32) -> u32 {
    let mut h = seed;
    for block in key.chunks_exact(4) {
        let k = u32::from_le_bytes(block.try_into().expect("4 bytes"))
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    h ^= key.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::entity_id;

    /// Ids that Tracee v0.24.1's own `HashTaskID` gave for these inputs (the tracee_types
    /// test checks captured lines against it too).
    #[test]
    fn entity_ids_are_tracees() {
        for (pid, start, id) in [
            (1, 0, 2_241_331_610),
            (4242, 1_796_162_265_882_852_076, 3_218_717_369),
            (17007, 1_796_162_265_899_999_999, 256_566_481),
            (17007, 1_796_162_265_900_000_000, 3_508_616_727),
            (u32::MAX, u64::MAX, 1_453_872_013),
        ] {
            assert_eq!(entity_id(pid, start), id, "{pid} {start}");
        }
    }
}

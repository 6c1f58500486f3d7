//! One traced call with its context, as the outputs and analyses see it.

use crate::catalog::{ArgValue, EventDef};

/// Who made a call: the calling thread as the host and as its own pid namespace see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Entry time, ns since the epoch.
    pub timestamp: u64,
    /// When the thread started, ns since the epoch.
    pub thread_start: u64,
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
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// (definition, typed value) for each argument this kernel gave, in catalog order;
    /// `def.decoder` names it.
    pub fn args(&self) -> impl Iterator<Item = (&'static crate::ArgDef, ArgValue)> + '_ {
        self.def
            .args
            .iter()
            .enumerate()
            .filter(|(i, def)| !self.is_absent(def, *i))
            .map(|(i, def)| (def, def.value(i, &self.raw_args)))
    }

    /// Whether the argument at position `own` reads a record field this kernel lacks.
    fn is_absent(&self, def: &crate::ArgDef, own: usize) -> bool {
        def.record_field(own)
            .is_some_and(|f| f < 8 && self.absent & (1 << f) != 0)
    }

    /// How many arguments `args` yields.
    pub fn args_num(&self) -> usize {
        self.args().count()
    }

    /// The raw argument named `name`, typed; None when absent on this kernel.
    pub fn arg(&self, name: &str) -> Option<ArgValue> {
        let i = self.def.args.iter().position(|a| a.name == name)?;
        let def = &self.def.args[i];
        (!self.is_absent(def, i)).then(|| def.value(i, &self.raw_args))
    }

    /// The errno name of a failed call (`EINVAL`), None on success.
    pub fn error_name(&self) -> Option<String> {
        let errno = self.def.errno(self.ret)?;
        Some(crate::decode::errno_name(errno).map_or_else(|| format!("E{errno}"), str::to_string))
    }
}

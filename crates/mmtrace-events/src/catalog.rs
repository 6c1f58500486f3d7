//! The event catalog: the one list of events mmtrace knows, read by the loader, the decoder,
//! the CLI and the docs alike. Adding an event is adding one entry to `CATALOG`.

use crate::decode::Decoder;
use crate::docs::{self, EventDoc};
use crate::keys;
pub use crate::source::Source;

/// Argument tags, as Tracee's event pages use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The value was read in the kernel.
    K,
    /// The value points at user memory.
    U,
    /// What it points at can change between the check and the use.
    Toctou,
    /// May be absent (NULL).
    Opt,
}

impl Tag {
    pub fn name(self) -> &'static str {
        match self {
            Tag::K => "K",
            Tag::U => "U",
            Tag::Toctou => "TOCTOU",
            Tag::Opt => "OPT",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Tag::K => "read in the kernel at the moment of the call",
            Tag::U => "points at user-space memory",
            Tag::Toctou => "the memory it points at can change between the kernel's check and use",
            Tag::Opt => "optional: may be NULL or absent",
        }
    }
}

/// The argument's type as Tracee names it; it decides how the raw 64-bit value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    Pointer,
    U64,
    I64,
    I32,
    U32,
    /// Text mmtrace writes itself. No register holds one, so only raised events have it.
    Str,
    Bool,
}

impl ArgType {
    pub fn tracee_name(self) -> &'static str {
        match self {
            ArgType::Pointer => "trace.Pointer",
            ArgType::U64 => "uint64",
            ArgType::I64 => "int64",
            ArgType::I32 => "int32",
            ArgType::U32 => "uint32",
            ArgType::Str => "string",
            ArgType::Bool => "bool",
        }
    }

    /// How many bits of a value the type holds.
    pub fn bits(self) -> u32 {
        match self {
            ArgType::I32 | ArgType::U32 => 32,
            _ => 64,
        }
    }

    /// Narrows the raw register value to the argument's C type.
    pub fn value(self, raw: u64) -> ArgValue {
        match self {
            ArgType::Pointer => ArgValue::Pointer(raw),
            ArgType::U64 | ArgType::Str => ArgValue::Unsigned(raw),
            ArgType::Bool => ArgValue::Bool(raw != 0),
            ArgType::I64 => ArgValue::Signed(raw as i64),
            ArgType::I32 => ArgValue::Signed(raw as u32 as i32 as i64),
            ArgType::U32 => ArgValue::Unsigned(raw as u32 as u64),
        }
    }
}

/// An argument's C type in the kernel: in a syscall's SYSCALL_DEFINE, or a kernel event's
/// tracepoint field. Tracee's type can be narrower (mmap's `prot` is an `unsigned long` to
/// the kernel, an int32 to Tracee); what the kernel received is the register cut to this
/// type's width, no more and no less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelType {
    pub name: &'static str,
    pub bits: u32,
}

impl KernelType {
    /// `raw` cut to the type's width: the value the kernel received.
    pub fn cut(self, raw: u64) -> u64 {
        match self.bits {
            64 => raw,
            bits => raw & ((1 << bits) - 1),
        }
    }
}

/// A typed argument value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgValue {
    Pointer(u64),
    Unsigned(u64),
    Signed(i64),
    Bool(bool),
}

impl ArgValue {
    /// The value as the bit pattern decoders work on.
    pub fn bits(self) -> u64 {
        match self {
            ArgValue::Pointer(v) | ArgValue::Unsigned(v) => v,
            ArgValue::Signed(v) => v as u64,
            ArgValue::Bool(b) => b.into(),
        }
    }
}

#[derive(Debug)]
pub struct ArgDef {
    pub name: &'static str,
    /// Tracee's type: the JSON's `type` and how its `value` is written.
    pub ty: ArgType,
    /// The kernel's type: what the decoded text, the table and the filters go by.
    pub kernel: KernelType,
    pub tags: &'static [Tag],
    pub decoder: Decoder,
    /// What the number measures, so that text outputs can show sizes in one style.
    pub unit: Unit,
    /// Where the value is in the record's fields.
    pub field: Field,
    /// What it is to the analysis and the outputs, whatever its name.
    pub role: ArgRole,
}

/// What an argument is, whatever its name (`len` or `length`): the analysis and the table
/// reach arguments by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRole {
    Other,
    /// The start of the range of memory the call acts on.
    Start,
    /// The size of that range.
    Size,
    /// mremap's new size of the range.
    NewSize,
    /// The protection it gives.
    Prot,
    /// The flags of the call: MAP_*, MLOCK_*, MCL_*, MREMAP_*.
    Flags,
    Signal,
    /// The process it acts on, by pid.
    Pid,
    /// The process it acts on, by pidfd.
    Pidfd,
}

/// The unit of an argument that is an amount of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Not an amount of memory.
    None,
    Bytes,
    /// Kibibytes, as the kernel's OOM tracepoint reports memory.
    KiB,
}

/// Where an argument's value is in a record: where Tracee's order differs from what the
/// kernel side sends, or Tracee splits a field in two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The field at the argument's own position.
    Own,
    /// The field at another position.
    At(usize),
    /// Bits of a field: `(field >> shift) & mask`.
    Bits { at: usize, shift: u32, mask: u64 },
    /// Always this value: what the kernel side sends only when it holds.
    Always(u64),
}

impl ArgDef {
    /// The typed value of the argument at position `own` among a record's `fields`.
    pub fn value(&self, own: usize, fields: &[u64]) -> ArgValue {
        self.ty.value(self.raw(own, fields))
    }

    /// The value the kernel received: the argument's raw value cut to the kernel's type.
    pub fn kernel_value(&self, own: usize, fields: &[u64]) -> u64 {
        self.kernel.cut(self.raw(own, fields))
    }

    /// The kernel's value where Tracee's typed `value` does not carry it: where converting
    /// the typed value to the kernel's type, as C converts (sign-extending a signed one),
    /// gives another number. mprotect's prot 0x100000001 is an int32 1 to Tracee.
    pub fn beyond_type(&self, value: ArgValue, kernel: u64) -> Option<u64> {
        (self.kernel.cut(value.bits()) != kernel).then_some(kernel)
    }

    fn raw(&self, own: usize, fields: &[u64]) -> u64 {
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        match self.field {
            Field::Own => at(own),
            Field::At(i) => at(i),
            Field::Bits { at: i, shift, mask } => (at(i) >> shift) & mask,
            Field::Always(v) => v,
        }
    }

    /// Whether the argument at position `own` reads a record field the kernel did not gather:
    /// `absent` is the record's bitmask of such fields.
    pub fn is_absent(&self, own: usize, absent: u8) -> bool {
        self.record_field(own)
            .is_some_and(|f| f < 8 && absent & (1 << f) != 0)
    }

    /// The record field the value comes from, if any (an `Always` value has none).
    pub fn record_field(&self, own: usize) -> Option<usize> {
        match self.field {
            Field::Own => Some(own),
            Field::At(i) | Field::Bits { at: i, .. } => Some(i),
            Field::Always(_) => None,
        }
    }

    /// The amount of memory `raw` stands for, in bytes, if the argument is one.
    pub fn bytes(&self, raw: u64) -> Option<u64> {
        match self.unit {
            Unit::None => None,
            Unit::Bytes => Some(raw),
            Unit::KiB => Some(raw.saturating_mul(1024)),
        }
    }

    const fn in_unit(self, unit: Unit) -> ArgDef {
        ArgDef { unit, ..self }
    }

    const fn as_(self, role: ArgRole) -> ArgDef {
        ArgDef { role, ..self }
    }
}

/// What a successful return value is; failures are always -errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetKind {
    /// 0 on success.
    Zero,
    /// An address on success (mmap, mremap).
    Address,
    /// A new file descriptor on success.
    Fd,
    /// A byte count on success.
    Bytes,
    /// brk: the new break, or the old one on an ordinary failure; -EINTR only when a fatal
    /// signal interrupts it.
    Break,
    /// A kernel event: an instant with no result (returnValue is always 0).
    None,
}

/// Facts the kernel side gathers for an event beyond its arguments and result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Argument 0 is a pidfd: the process it refers to.
    TargetArg0,
    /// The return value is a pidfd: the process it refers to.
    TargetRet,
    /// The target's resident memory when the call started and when it returned.
    Rss,
    /// The caller's locked memory after the call, its RLIMIT_MEMLOCK and CAP_IPC_LOCK.
    Locked,
    /// The mapping at argument 0 before the call: kind, protection, file path.
    Mapping,
    /// Locked memory the call released (munmap of a locked range).
    Unlocked,
    /// The mapping at the returned address after the call: what mmap created.
    MappingAfter,
    /// The OOM killer's victim, which oom:mark_victim's own program records.
    Victim,
    /// The limit an OOM kill came from, which mmtrace reads from the kernel's log.
    OomLimit,
}

impl Extra {
    /// The JSON keys this extra adds to an event's line, with what each holds.
    pub fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Extra::TargetArg0 | Extra::TargetRet => &[keys::TARGET],
            Extra::Rss => &[keys::MEMORY, keys::REASON],
            Extra::Locked => &[keys::LOCKED],
            Extra::Mapping => &[keys::MAPPING_BEFORE],
            Extra::MappingAfter => &[keys::MAPPING_AFTER],
            Extra::Unlocked => &[keys::UNLOCKED_BYTES],
            Extra::Victim => &[keys::VICTIM],
            Extra::OomLimit => &[keys::LIMIT],
        }
    }

    /// The bit the kernel side tests (X_* in bpf/mmtrace.h).
    pub fn bit(self) -> u16 {
        use mmtrace_abi::{
            X_LOCKED, X_RSS, X_TARGET_ARG0, X_TARGET_RET, X_UNLOCKED, X_VMA, X_VMA_RET,
        };
        match self {
            Extra::TargetArg0 => X_TARGET_ARG0,
            Extra::TargetRet => X_TARGET_RET,
            Extra::Rss => X_RSS,
            Extra::Locked => X_LOCKED,
            Extra::Mapping => X_VMA,
            Extra::Unlocked => X_UNLOCKED,
            Extra::MappingAfter => X_VMA_RET,
            // Gathered by the event's own program, or in user space: not asked of the
            // syscall hooks.
            Extra::Victim | Extra::OomLimit => 0,
        }
    }
}

/// What an event does to memory or to a process, for the analyses: they classify events by
/// it, never by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates a mapping at the address it returns (and may lock it: MAP_LOCKED).
    Maps,
    /// Changes the protection of mapped pages.
    Protects,
    /// Removes mappings, unlocking what was locked there.
    Unmaps,
    /// Moves or resizes a mapping, which stays locked if it was.
    Remaps,
    /// Locks the range `addr`, `len`.
    Locks,
    /// Unlocks the range `addr`, `len`.
    Unlocks,
    /// Locks all that is mapped (MCL_CURRENT) or will be (MCL_FUTURE), as `flags` say.
    LocksAll,
    /// Unlocks everything and ends MCL_FUTURE.
    UnlocksAll,
    /// Returns a pidfd for the process `pid`.
    OpensPidfd,
    /// Sends signal `sig`, to the process behind `pidfd` or to `pid`.
    Signals { by_pidfd: bool },
    /// Reaps the memory of the dying process behind `pidfd`.
    Releases,
    /// The kernel's OOM killer chose the process `pid`.
    OomVictim,
    /// The kernel's OOM reaper at work on the process `pid`.
    OomReaper(Reaping),
    /// The calling process began to exit.
    Exits,
    /// An exiting process's address space is gone: its memory is back.
    TornDown,
    /// Memory made writable and executable (mmtrace raises it from other events).
    Alerts,
    /// Nothing the analyses follow.
    Other,
}

/// The OOM reaper's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaping {
    Start,
    Finish,
    Skip,
}

impl Role {
    /// Whether the kernel did it on its own, for no call of the process the event names.
    pub fn is_kernel_act(self) -> bool {
        matches!(self, Role::OomVictim | Role::OomReaper(_) | Role::TornDown)
    }

    /// Whether the call sets the protection of memory: the mappings it creates or changes.
    pub fn sets_protection(self) -> bool {
        matches!(self, Role::Maps | Role::Protects)
    }

    /// Whether the call locks memory whatever its flags.
    pub fn locks(self) -> bool {
        matches!(self, Role::Locks | Role::LocksAll)
    }

    /// Whether the call unlocks memory by name (an unmap unlocks as a side effect).
    pub fn unlocks(self) -> bool {
        matches!(self, Role::Unlocks | Role::UnlocksAll)
    }
}

/// An event mmtrace raises itself, in userspace, from the records of the events it names:
/// it has no hook of its own, so the loader never sees it.
#[derive(Debug)]
pub struct Raised {
    pub by: &'static [&'static str],
}

/// One catalog entry. `S` says where its records come from: a hook (`Source`, what the loader
/// attaches) or other events' records (`Raised`).
#[derive(Debug)]
pub struct EventDef<S: 'static = Source> {
    pub name: &'static str,
    /// The id carried by kernel records: for syscalls the number of the architecture mmtrace
    /// is built for (`Source::nr`), as the kernel's syscall tracepoints carry it.
    pub id: u16,
    /// The id JSON lines carry as eventId: Tracee's where Tracee has the event (its syscall
    /// events are numbered by the syscall number of the architecture it runs on:
    /// pkg/events/core_amd64.go and core_arm64.go), and one of the ids Tracee leaves to
    /// extended builds (1500-1999) where it has not, so it never names another Tracee event.
    pub event_id: u16,
    pub source: S,
    pub args: &'static [ArgDef],
    pub ret: RetKind,
    pub role: Role,
    /// What the kernel side adds to the raw record.
    pub extras: &'static [Extra],
    pub sets: &'static [&'static str],
    /// The kernel release that added it.
    pub since: &'static str,
    pub summary: &'static str,
    /// The reference prose: what the call does, its errors, use case, pitfalls.
    pub doc: &'static EventDoc,
}

/// Entries are unique by id, so identity is the id.
impl<S> PartialEq for EventDef<S> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl<S> Eq for EventDef<S> {}

impl<S> EventDef<S> {
    /// The record's fields and absent mask that arguments, given by name as a JSON line
    /// carries them (`value_of`: the number the kernel received), were written from: the
    /// writer's mapping run backwards, so that a recorded call is read through the catalog as
    /// a live one is. An argument the line leaves out was absent.
    pub fn fields_of(&self, value_of: impl Fn(&str) -> Option<u64>) -> ([u64; 8], u8) {
        let (mut fields, mut absent) = ([0u64; 8], 0u8);
        for (i, a) in self.args.iter().enumerate() {
            let Some(at) = a.record_field(i).filter(|&f| f < 8) else {
                continue;
            };
            match (value_of(a.name), a.field) {
                (None, _) => absent |= 1 << at,
                (Some(v), Field::Bits { shift, mask, .. }) => fields[at] |= (v & mask) << shift,
                (Some(v), _) => fields[at] = v,
            }
        }
        (fields, absent)
    }

    /// The JSON keys mmtrace adds to this event beyond Tracee's, with their meaning; with
    /// `--stack`, `keys::STACK` too (`stack_field`).
    pub fn extra_fields(&self) -> Vec<(&'static str, &'static str)> {
        let mut fields: Vec<(&str, &str)> = self
            .extras
            .iter()
            .flat_map(|x| x.fields().iter().copied())
            .collect();
        if self.role.sets_protection() {
            fields.push((
                "mem_prot_alert",
                "a line of its own after a call that makes memory writable and executable, or \
                 executable after writable (Tracee's four kinds), with the file path",
            ));
        }
        fields
    }

    /// The key `--stack` adds to this event's lines: syscalls' only (not kernel events', nor
    /// the lines mmtrace raises from calls).
    pub fn stack_field(&self) -> Option<(&'static str, &'static str)> {
        let source = (&self.source as &dyn std::any::Any).downcast_ref::<Source>();
        matches!(source, Some(Source::Syscall { .. })).then_some(keys::STACK)
    }

    pub fn in_set(&self, set: &str) -> bool {
        self.sets.contains(&set)
    }

    /// The errno of a failed call, None when the call succeeded. No address a call returns
    /// lies in -4095..-1, so the range means an errno for every kind, brk's EINTR included.
    pub fn errno(&self, ret: i64) -> Option<u64> {
        (-4095..0).contains(&ret).then(|| ret.unsigned_abs())
    }
}

const fn arg(
    name: &'static str,
    ty: ArgType,
    kernel: KernelType,
    tags: &'static [Tag],
    decoder: Decoder,
) -> ArgDef {
    ArgDef {
        name,
        ty,
        kernel,
        tags,
        decoder,
        unit: Unit::None,
        field: Field::Own,
        role: ArgRole::Other,
    }
}

/// A kernel event's argument read from `field` of the record.
const fn field(
    name: &'static str,
    ty: ArgType,
    kernel: KernelType,
    decoder: Decoder,
    field: Field,
) -> ArgDef {
    ArgDef {
        name,
        ty,
        kernel,
        tags: K,
        decoder,
        unit: Unit::None,
        field,
        role: ArgRole::Other,
    }
}

const K: &[Tag] = &[Tag::K];
const KU: &[Tag] = &[Tag::K, Tag::U];
const KU_OPT: &[Tag] = &[Tag::K, Tag::U, Tag::Opt];
const KU_TOCTOU: &[Tag] = &[Tag::K, Tag::U, Tag::Toctou];

use ArgType::{Bool, Pointer, Str, I32, I64, U32, U64};
use Decoder as D;

/// The kernel's types, as its SYSCALL_DEFINEs and tracepoints spell them (64-bit kernels).
const fn kt(name: &'static str, bits: u32) -> KernelType {
    KernelType { name, bits }
}
const INT: KernelType = kt("int", 32);
const PID_T: KernelType = kt("pid_t", 32);
const UINT: KernelType = kt("unsigned int", 32);
const UID_T: KernelType = kt("uid_t", 32);
const SHORT: KernelType = kt("short", 16);
const ULONG: KernelType = kt("unsigned long", 64);
const SIZE_T: KernelType = kt("size_t", 64);
const U64_T: KernelType = kt("u64", 64);
const BOOL: KernelType = kt("bool", 8);
const SIGINFO_PTR: KernelType = kt("siginfo_t __user *", 64);
const IOVEC_PTR: KernelType = kt("const struct iovec __user *", 64);
const CHAR_PTR: KernelType = kt("char *", 64);
const DEV_T: KernelType = kt("dev_t", 32);

/// task->exit_code as wait() reads it: the status in bits 8-15, the signal in the low byte.
const EXIT_STATUS: Field = Field::Bits {
    at: 0,
    shift: 8,
    mask: 0xff,
};
const EXIT_SIGNAL: Field = Field::Bits {
    at: 0,
    shift: 0,
    mask: 0xff,
};

use crate::syscalls as nr;

const MAP_SETS: &[&str] = &["syscalls", "proc", "proc_mem", "mapping"];
const LOCK_SETS: &[&str] = &["syscalls", "proc", "proc_mem", "mlock"];
const OOM_SETS: &[&str] = &["syscalls", "oom"];

/// Every event mmtrace can trace.
pub static CATALOG: &[EventDef] = &[
    EventDef {
        name: "mmap",
        id: nr::MMAP.nr(),
        event_id: nr::MMAP.nr(),
        source: nr::MMAP,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("length", U64, ULONG, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("prot", I32, ULONG, K, D::Prot).as_(ArgRole::Prot),
            arg("flags", I32, ULONG, K, D::MapFlags).as_(ArgRole::Flags),
            arg("fd", I32, ULONG, K, D::None),
            arg("off", I64, ULONG, K, D::None),
        ],
        ret: RetKind::Address,
        role: Role::Maps,
        extras: &[Extra::Locked, Extra::MappingAfter],
        sets: MAP_SETS,
        since: "1.0",
        summary: "map files or anonymous memory into the address space",
        doc: &docs::MMAP,
    },
    EventDef {
        name: "mprotect",
        id: nr::MPROTECT.nr(),
        event_id: nr::MPROTECT.nr(),
        source: nr::MPROTECT,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("prot", I32, ULONG, K, D::Prot).as_(ArgRole::Prot),
        ],
        ret: RetKind::Zero,
        role: Role::Protects,
        extras: &[Extra::Mapping],
        sets: MAP_SETS,
        since: "1.0",
        summary: "change the protection of a range of pages",
        doc: &docs::MPROTECT,
    },
    EventDef {
        name: "munmap",
        id: nr::MUNMAP.nr(),
        event_id: nr::MUNMAP.nr(),
        source: nr::MUNMAP,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("length", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
        ],
        ret: RetKind::Zero,
        role: Role::Unmaps,
        extras: &[Extra::Mapping, Extra::Locked, Extra::Unlocked],
        sets: MAP_SETS,
        since: "1.0",
        summary: "unmap any range of pages, unlocking what was locked there",
        doc: &docs::MUNMAP,
    },
    EventDef {
        name: "brk",
        id: nr::BRK.nr(),
        event_id: nr::BRK.nr(),
        source: nr::BRK,
        args: &[arg("addr", Pointer, ULONG, KU, D::None)],
        ret: RetKind::Break,
        role: Role::Other,
        extras: &[],
        sets: MAP_SETS,
        since: "1.0",
        summary: "move the end of the heap",
        doc: &docs::BRK,
    },
    EventDef {
        name: "mremap",
        id: nr::MREMAP.nr(),
        event_id: nr::MREMAP.nr(),
        source: nr::MREMAP,
        args: &[
            arg("old_address", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("old_size", U64, ULONG, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("new_size", U64, ULONG, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::NewSize),
            arg("flags", I32, ULONG, K, D::MremapFlags).as_(ArgRole::Flags),
            arg("new_address", Pointer, ULONG, KU_OPT, D::None),
        ],
        ret: RetKind::Address,
        role: Role::Remaps,
        extras: &[Extra::Mapping, Extra::Locked],
        sets: MAP_SETS,
        since: "2.0",
        summary: "grow, shrink or move a mapping",
        doc: &docs::MREMAP,
    },
    EventDef {
        name: "madvise",
        id: nr::MADVISE.nr(),
        event_id: nr::MADVISE.nr(),
        source: nr::MADVISE,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("length", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("advice", I32, INT, K, D::Madvise),
        ],
        ret: RetKind::Zero,
        role: Role::Other,
        extras: &[Extra::Mapping],
        sets: MAP_SETS,
        since: "2.4",
        summary: "advise the kernel how a range will be used, or drop or populate its pages",
        doc: &docs::MADVISE,
    },
    EventDef {
        name: "kill",
        id: nr::KILL.nr(),
        event_id: nr::KILL.nr(),
        source: nr::KILL,
        args: &[
            arg("pid", I32, PID_T, K, D::None).as_(ArgRole::Pid),
            arg("sig", I32, INT, K, D::Signal).as_(ArgRole::Signal),
        ],
        ret: RetKind::Zero,
        role: Role::Signals { by_pidfd: false },
        extras: &[],
        sets: &["syscalls", "signals", "oom"],
        since: "1.0",
        summary: "send a signal to a process or a process group, by pid",
        doc: &docs::KILL,
    },
    EventDef {
        name: "mlock",
        id: nr::MLOCK.nr(),
        event_id: nr::MLOCK.nr(),
        source: nr::MLOCK,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
        ],
        ret: RetKind::Zero,
        role: Role::Locks,
        extras: &[Extra::Locked],
        sets: LOCK_SETS,
        since: "2.0",
        summary: "lock a range of pages in RAM, faulting them in now",
        doc: &docs::MLOCK,
    },
    EventDef {
        name: "munlock",
        id: nr::MUNLOCK.nr(),
        event_id: nr::MUNLOCK.nr(),
        source: nr::MUNLOCK,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
        ],
        ret: RetKind::Zero,
        role: Role::Unlocks,
        extras: &[Extra::Locked],
        sets: LOCK_SETS,
        since: "2.0",
        summary: "unlock a range of pages (locks do not nest: one munlock undoes them all)",
        doc: &docs::MUNLOCK,
    },
    EventDef {
        name: "mlockall",
        id: nr::MLOCKALL.nr(),
        event_id: nr::MLOCKALL.nr(),
        source: nr::MLOCKALL,
        args: &[arg("flags", I32, INT, K, D::MclFlags).as_(ArgRole::Flags)],
        ret: RetKind::Zero,
        role: Role::LocksAll,
        extras: &[Extra::Locked],
        sets: LOCK_SETS,
        since: "2.0",
        summary: "lock all current and/or future mappings of the process",
        doc: &docs::MLOCKALL,
    },
    EventDef {
        name: "munlockall",
        id: nr::MUNLOCKALL.nr(),
        event_id: nr::MUNLOCKALL.nr(),
        source: nr::MUNLOCKALL,
        args: &[],
        ret: RetKind::Zero,
        role: Role::UnlocksAll,
        extras: &[Extra::Locked],
        sets: LOCK_SETS,
        since: "2.0",
        summary: "unlock every mapping and clear MCL_FUTURE",
        doc: &docs::MUNLOCKALL,
    },
    EventDef {
        name: "mlock2",
        id: nr::MLOCK2.nr(),
        event_id: nr::MLOCK2.nr(),
        source: nr::MLOCK2,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("flags", I32, INT, K, D::MlockFlags).as_(ArgRole::Flags),
        ],
        ret: RetKind::Zero,
        role: Role::Locks,
        extras: &[Extra::Locked],
        sets: LOCK_SETS,
        since: "4.4",
        summary: "lock a range of pages, with MLOCK_ONFAULT locking them only as they fault in",
        doc: &docs::MLOCK2,
    },
    EventDef {
        name: "pkey_mprotect",
        id: nr::PKEY_MPROTECT.nr(),
        event_id: nr::PKEY_MPROTECT.nr(),
        source: nr::PKEY_MPROTECT,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("prot", I32, ULONG, K, D::Prot).as_(ArgRole::Prot),
            arg("pkey", I32, INT, K, D::None),
        ],
        ret: RetKind::Zero,
        role: Role::Protects,
        extras: &[Extra::Mapping],
        sets: MAP_SETS,
        since: "4.9",
        summary: "change the protection of a range and tag it with a protection key",
        doc: &docs::PKEY_MPROTECT,
    },
    EventDef {
        name: "pidfd_send_signal",
        id: nr::PIDFD_SEND_SIGNAL.nr(),
        event_id: nr::PIDFD_SEND_SIGNAL.nr(),
        source: nr::PIDFD_SEND_SIGNAL,
        args: &[
            arg("pidfd", I32, INT, K, D::None).as_(ArgRole::Pidfd),
            arg("sig", I32, INT, K, D::Signal).as_(ArgRole::Signal),
            arg("info", Pointer, SIGINFO_PTR, KU_OPT, D::None),
            arg("flags", U32, UINT, K, D::PidfdSignalFlags).as_(ArgRole::Flags),
        ],
        ret: RetKind::Zero,
        role: Role::Signals { by_pidfd: true },
        extras: &[Extra::TargetArg0],
        sets: OOM_SETS,
        since: "5.1",
        summary: "send a signal to the process a pidfd refers to, immune to pid reuse",
        doc: &docs::PIDFD_SEND_SIGNAL,
    },
    EventDef {
        name: "pidfd_open",
        id: nr::PIDFD_OPEN.nr(),
        event_id: nr::PIDFD_OPEN.nr(),
        source: nr::PIDFD_OPEN,
        args: &[
            arg("pid", I32, PID_T, K, D::None).as_(ArgRole::Pid),
            arg("flags", U32, UINT, K, D::PidfdOpenFlags).as_(ArgRole::Flags),
        ],
        ret: RetKind::Fd,
        role: Role::OpensPidfd,
        extras: &[Extra::TargetRet],
        sets: OOM_SETS,
        since: "5.3",
        summary: "get a file descriptor that refers to a process",
        doc: &docs::PIDFD_OPEN,
    },
    EventDef {
        name: "process_madvise",
        id: nr::PROCESS_MADVISE.nr(),
        event_id: nr::PROCESS_MADVISE.nr(),
        source: nr::PROCESS_MADVISE,
        args: &[
            arg("pidfd", I32, INT, K, D::None).as_(ArgRole::Pidfd),
            arg("vec", Pointer, IOVEC_PTR, KU_TOCTOU, D::None),
            arg("vlen", U64, SIZE_T, K, D::None),
            arg("advice", I32, INT, K, D::Madvise),
            arg("flags", U32, UINT, K, D::None).as_(ArgRole::Flags),
        ],
        ret: RetKind::Bytes,
        role: Role::Other,
        extras: &[Extra::TargetArg0],
        sets: &["syscalls", "proc_mem", "mapping", "oom"],
        since: "5.10",
        summary: "give advice (such as MADV_PAGEOUT) about another process's memory",
        doc: &docs::PROCESS_MADVISE,
    },
    EventDef {
        name: "memfd_secret",
        id: nr::MEMFD_SECRET.nr(),
        event_id: nr::MEMFD_SECRET.nr(),
        source: nr::MEMFD_SECRET,
        args: &[arg("flags", U32, UINT, K, D::CloexecFlags).as_(ArgRole::Flags)],
        ret: RetKind::Fd,
        role: Role::Other,
        extras: &[],
        sets: &["syscalls", "proc_mem", "mapping"],
        since: "5.14",
        summary: "create memory hidden from the kernel's direct map, charged like mlock",
        doc: &docs::MEMFD_SECRET,
    },
    EventDef {
        name: "process_mrelease",
        id: nr::PROCESS_MRELEASE.nr(),
        event_id: nr::PROCESS_MRELEASE.nr(),
        source: nr::PROCESS_MRELEASE,
        args: &[
            arg("pidfd", I32, INT, K, D::None).as_(ArgRole::Pidfd),
            arg("flags", U32, UINT, K, D::None).as_(ArgRole::Flags),
        ],
        ret: RetKind::Zero,
        role: Role::Releases,
        extras: &[Extra::TargetArg0, Extra::Rss],
        sets: OOM_SETS,
        since: "5.15",
        summary: "reap the memory of a dying process now, in the caller's context",
        doc: &docs::PROCESS_MRELEASE,
    },
    EventDef {
        name: "mseal",
        id: nr::MSEAL.nr(),
        event_id: 1504,
        source: nr::MSEAL,
        args: &[
            arg("addr", Pointer, ULONG, KU, D::None).as_(ArgRole::Start),
            arg("len", U64, SIZE_T, K, D::None)
                .in_unit(Unit::Bytes)
                .as_(ArgRole::Size),
            arg("flags", U64, ULONG, K, D::None).as_(ArgRole::Flags),
        ],
        ret: RetKind::Zero,
        role: Role::Other,
        extras: &[Extra::Mapping],
        sets: &["syscalls", "proc_mem", "mapping"],
        since: "6.10",
        summary: "seal mappings against munmap, mremap, mprotect and MAP_FIXED",
        doc: &docs::MSEAL,
    },
    EventDef {
        name: "oom_mark_victim",
        id: mmtrace_abi::ID_OOM_MARK_VICTIM,
        event_id: 1500,
        source: Source::Tracepoint {
            category: "oom",
            name: "mark_victim",
            program: "oom_mark_victim",
        },
        args: &[
            arg("pid", I32, INT, K, D::None).as_(ArgRole::Pid),
            arg("total_vm", U64, ULONG, K, D::None).in_unit(Unit::KiB),
            arg("anon_rss", U64, ULONG, K, D::None).in_unit(Unit::KiB),
            arg("file_rss", U64, ULONG, K, D::None).in_unit(Unit::KiB),
            arg("shmem_rss", U64, ULONG, K, D::None).in_unit(Unit::KiB),
            arg("uid", U32, UID_T, K, D::None),
            arg("pgtables", U64, ULONG, K, D::None).in_unit(Unit::KiB),
            arg("oom_score_adj", I32, SHORT, K, D::None),
        ],
        ret: RetKind::None,
        role: Role::OomVictim,
        extras: &[Extra::Victim, Extra::OomLimit],
        sets: &["oom"],
        since: "4.15",
        summary: "the kernel OOM killer chose a victim and is killing it",
        doc: &docs::OOM_MARK_VICTIM,
    },
    EventDef {
        name: "oom_start_task_reaping",
        id: mmtrace_abi::ID_OOM_START_TASK_REAPING,
        event_id: 1501,
        source: Source::Tracepoint {
            category: "oom",
            name: "start_task_reaping",
            program: "oom_start_task_reaping",
        },
        args: &[arg("pid", I32, INT, K, D::None).as_(ArgRole::Pid)],
        ret: RetKind::None,
        role: Role::OomReaper(Reaping::Start),
        extras: &[],
        sets: &["oom"],
        since: "4.15",
        summary: "the OOM reaper starts freeing a victim's memory",
        doc: &docs::OOM_START_TASK_REAPING,
    },
    EventDef {
        name: "oom_finish_task_reaping",
        id: mmtrace_abi::ID_OOM_FINISH_TASK_REAPING,
        event_id: 1502,
        source: Source::Tracepoint {
            category: "oom",
            name: "finish_task_reaping",
            program: "oom_finish_task_reaping",
        },
        args: &[arg("pid", I32, INT, K, D::None).as_(ArgRole::Pid)],
        ret: RetKind::None,
        role: Role::OomReaper(Reaping::Finish),
        extras: &[],
        sets: &["oom"],
        since: "4.15",
        summary: "the OOM reaper freed what it could of a victim's memory",
        doc: &docs::OOM_FINISH_TASK_REAPING,
    },
    EventDef {
        name: "oom_skip_task_reaping",
        id: mmtrace_abi::ID_OOM_SKIP_TASK_REAPING,
        event_id: 1503,
        source: Source::Tracepoint {
            category: "oom",
            name: "skip_task_reaping",
            program: "oom_skip_task_reaping",
        },
        args: &[arg("pid", I32, INT, K, D::None).as_(ArgRole::Pid)],
        ret: RetKind::None,
        role: Role::OomReaper(Reaping::Skip),
        extras: &[],
        sets: &["oom"],
        since: "4.15",
        summary: "the OOM reaper found a victim already freeing its own memory",
        doc: &docs::OOM_SKIP_TASK_REAPING,
    },
    EventDef {
        name: "sched_process_exit",
        id: mmtrace_abi::ID_SCHED_PROCESS_EXIT,
        event_id: 716,
        source: Source::Tracepoint {
            category: "sched",
            name: "sched_process_exit",
            program: "on_exit",
        },
        // Tracee's three first, split from task->exit_code as Tracee does; the kernel side
        // sends (exit_code, anon, file, shmem), and only when the whole process exits.
        args: &[
            field("exit_code", I32, INT, D::None, EXIT_STATUS),
            field("signal_code", I32, INT, D::Signal, EXIT_SIGNAL).as_(ArgRole::Signal),
            field("process_group_exit", Bool, BOOL, D::None, Field::Always(1)),
            field("anon", U64, U64_T, D::None, Field::At(1)).in_unit(Unit::Bytes),
            field("file", U64, U64_T, D::None, Field::At(2)).in_unit(Unit::Bytes),
            field("shmem", U64, U64_T, D::None, Field::At(3)).in_unit(Unit::Bytes),
        ],
        ret: RetKind::None,
        role: Role::Exits,
        extras: &[],
        sets: &["oom", "proc"],
        since: "2.6.28",
        summary: "a process exits, with the memory it still held",
        doc: &docs::SCHED_PROCESS_EXIT,
    },
    EventDef {
        name: "exit_mmap",
        id: mmtrace_abi::ID_EXIT_MMAP,
        event_id: 1505,
        source: Source::Tracepoint {
            category: "mmap",
            name: "exit_mmap",
            program: "on_exit_mmap",
        },
        args: &[arg("vm_size", U64, ULONG, K, D::None).in_unit(Unit::Bytes)],
        ret: RetKind::None,
        role: Role::TornDown,
        extras: &[],
        sets: &["oom", "proc"],
        since: "6.1",
        summary: "an exiting process has freed its address space: its memory is back",
        doc: &docs::EXIT_MMAP,
    },
];

/// Events mmtrace raises itself from the records of others.
pub static RAISED: &[&EventDef<Raised>] = &[&MEM_PROT_ALERT];

/// Tracee's W+X alert. Tracee raises it from LSM hooks; mmtrace from the exits of the calls
/// that change protections, with the mapping the kernel side read. Its arguments are
/// Tracee's, in Tracee's order.
pub static MEM_PROT_ALERT: EventDef<Raised> = EventDef {
    name: "mem_prot_alert",
    // No kernel record carries it; an id no syscall has, so counters indexed by id stay apart.
    id: 724,
    event_id: 724,
    source: Raised {
        by: &["mmap", "mprotect", "pkey_mprotect"],
    },
    args: &[
        arg("alert", Str, CHAR_PTR, K, D::None),
        arg("addr", Pointer, ULONG, KU, D::None),
        arg("len", U64, SIZE_T, K, D::None),
        // The call's prot, as the kernel received it.
        arg("prot", I32, ULONG, K, D::Prot),
        arg("prev_prot", I32, INT, K, D::Prot),
        arg("pathname", Str, CHAR_PTR, K, D::None),
        arg("dev", U32, DEV_T, K, D::None),
        arg("inode", U64, ULONG, K, D::None),
        arg("ctime", U64, U64_T, K, D::None),
    ],
    ret: RetKind::None,
    role: Role::Alerts,
    extras: &[],
    sets: &["mapping"],
    since: "1.0",
    summary: "memory made writable and executable, or executable after being writable",
    doc: &docs::MEM_PROT_ALERT,
};

/// A kind of line mmtrace writes about the recording itself, in band, among the events: no
/// process made it and no `-e` selects it. Its `eventId` is one of the ids Tracee leaves to
/// extended builds, so Tracee's consumers, whose `trace.Event` reads eventId as a number,
/// read it as an event they do not know.
#[derive(Debug)]
pub struct InBandLine {
    pub name: &'static str,
    pub event_id: u16,
    pub summary: &'static str,
}

/// Events the ring buffer lost, per event, since the previous such line.
pub const MMTRACE_LOST: InBandLine = InBandLine {
    name: "mmtrace_lost",
    event_id: 1506,
    summary: "events lost since the last such line, per event",
};

/// The memory pressure of the moment, written after a kill.
pub const MMTRACE_PRESSURE: InBandLine = InBandLine {
    name: "mmtrace_pressure",
    event_id: 1507,
    summary: "memory pressure (PSI avg10, MemAvailable) when a kill was seen",
};

/// Every in-band kind.
pub const IN_BAND: &[InBandLine] = &[MMTRACE_LOST, MMTRACE_PRESSURE];

/// Every catalog name, hooked events first, in catalog order.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOG
        .iter()
        .map(|e| e.name)
        .chain(RAISED.iter().map(|e| e.name))
}

/// The raised event named `name`.
pub fn raised(name: &str) -> Option<&'static EventDef<Raised>> {
    RAISED.iter().copied().find(|e| e.name == name)
}

/// What the event named `name` does, hooked or raised; None for names not in the catalog.
pub fn role(name: &str) -> Option<Role> {
    by_name(name)
        .map(|e| e.role)
        .or_else(|| raised(name).map(|e| e.role))
}

/// The reference prose of the event named `name`, hooked or raised.
pub fn doc(name: &str) -> Option<&'static EventDoc> {
    by_name(name)
        .map(|e| e.doc)
        .or_else(|| raised(name).map(|e| e.doc))
}

/// The catalog entry named `name`.
pub fn by_name(name: &str) -> Option<&'static EventDef> {
    CATALOG.iter().find(|e| e.name == name)
}

/// The catalog entry of a kernel record's id.
pub fn by_id(id: u16) -> Option<&'static EventDef> {
    CATALOG.iter().find(|e| e.id == id)
}

/// Every set name, in first-seen order.
pub fn sets() -> Vec<&'static str> {
    let mut all: Vec<&str> = Vec::new();
    for set in CATALOG.iter().flat_map(|e| e.sets) {
        if !all.contains(set) {
            all.push(set);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_unique() {
        let all: Vec<(&str, u16, u16)> = CATALOG
            .iter()
            .map(|e| (e.name, e.id, e.event_id))
            .chain(RAISED.iter().map(|e| (e.name, e.id, e.event_id)))
            // In-band lines have no kernel record: their id stands for both.
            .chain(IN_BAND.iter().map(|l| (l.name, l.event_id, l.event_id)))
            .collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1, "{} and {}", a.0, b.0);
                assert_ne!(a.2, b.2, "{} and {}", a.0, b.0);
            }
        }
    }

    /// Tracee v0.24.1's ids (pkg/events/core.go and core_amd64.go) for the events it has;
    /// every other event takes an id from the range Tracee leaves to extended builds. mseal's
    /// syscall number, 462, is Tracee's id for the 32-bit mpx syscall.
    #[test]
    fn event_ids_are_tracee_ids() {
        const TRACEE: &[(&str, u16)] = &[("sched_process_exit", 716), ("mem_prot_alert", 724)];
        const NOT_IN_TRACEE: &[&str] = &[
            "mseal",
            "oom_mark_victim",
            "oom_start_task_reaping",
            "oom_finish_task_reaping",
            "oom_skip_task_reaping",
            "exit_mmap",
            "mmtrace_lost",
            "mmtrace_pressure",
        ];
        let all = CATALOG
            .iter()
            .map(|e| (e.name, e.event_id, Some(&e.source)))
            .chain(RAISED.iter().map(|e| (e.name, e.event_id, None)))
            .chain(IN_BAND.iter().map(|l| (l.name, l.event_id, None)));
        for (name, event_id, source) in all {
            if NOT_IN_TRACEE.contains(&name) {
                assert!((1500..=1999).contains(&event_id), "{name}");
            } else if let Some(&(_, id)) = TRACEE.iter().find(|(n, _)| *n == name) {
                assert_eq!(event_id, id, "{name}");
            } else {
                // Tracee numbers its syscall events by the syscall number of the machine's
                // architecture.
                let Some(source @ Source::Syscall { .. }) = source else {
                    panic!("{name}: say whether Tracee has it");
                };
                assert_eq!(event_id, source.nr(), "{name}");
            }
        }
    }

    #[test]
    fn tracee_order_first_then_ours() {
        let names = |args: &[ArgDef]| args.iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(
            names(MEM_PROT_ALERT.args),
            [
                "alert",
                "addr",
                "len",
                "prot",
                "prev_prot",
                "pathname",
                "dev",
                "inode",
                "ctime"
            ]
        );
        let exit = by_name("sched_process_exit").unwrap();
        assert_eq!(
            names(exit.args)[..3],
            ["exit_code", "signal_code", "process_group_exit"]
        );
        // exit(3), and a SIGKILL that dumped no core, as task->exit_code holds them.
        let fields = |code| [code, 4096, 0, 0];
        let value = |i: usize, code| exit.args[i].value(i, &fields(code));
        assert_eq!(value(0, 3 << 8), ArgValue::Signed(3));
        assert_eq!(value(1, 3 << 8), ArgValue::Signed(0));
        assert_eq!(value(1, 9), ArgValue::Signed(9));
        assert_eq!(value(2, 9), ArgValue::Bool(true));
        assert_eq!(value(3, 9), ArgValue::Unsigned(4096));
    }

    #[test]
    fn syscall_ids_are_the_architectures_numbers() {
        for e in CATALOG {
            match e.source {
                Source::Syscall { .. } => {
                    assert_eq!(e.id, e.source.nr(), "{}", e.name);
                    assert!(e.args.len() <= 6, "{}", e.name);
                }
                Source::Tracepoint { .. } => {
                    assert!(e.id >= 1000 && e.args.len() <= 8, "{}", e.name)
                }
            }
            // Syscall arguments are the registers, in order.
            if matches!(e.source, Source::Syscall { .. }) {
                assert!(e.args.iter().all(|a| a.field == Field::Own), "{}", e.name);
            }
        }
    }

    #[test]
    fn tracee_argument_names() {
        let names =
            |e: &str| -> Vec<&str> { by_name(e).unwrap().args.iter().map(|a| a.name).collect() };
        assert_eq!(
            names("mmap"),
            ["addr", "length", "prot", "flags", "fd", "off"]
        );
        assert_eq!(
            names("mremap"),
            [
                "old_address",
                "old_size",
                "new_size",
                "flags",
                "new_address"
            ]
        );
        assert_eq!(
            names("pidfd_send_signal"),
            ["pidfd", "sig", "info", "flags"]
        );
        assert_eq!(names("munmap"), ["addr", "length"]);
        assert_eq!(names("mlock"), ["addr", "len"]);
        assert!(names("munlockall").is_empty());
    }

    #[test]
    fn narrowing() {
        assert_eq!(ArgType::I32.value(0xffff_ffff), ArgValue::Signed(-1));
        assert_eq!(ArgType::U32.value(0x1_0000_0005), ArgValue::Unsigned(5));
        assert_eq!(ArgType::I64.value(u64::MAX), ArgValue::Signed(-1));
    }

    /// The values strace's tests pass, against what the kernel's SYSCALL_DEFINE types make
    /// of them.
    #[test]
    fn kernel_values_beyond_tracee_types() {
        let at = |event: &str, arg: &str, raw: u64| {
            let def = by_name(event).unwrap();
            let i = def.args.iter().position(|a| a.name == arg).unwrap();
            let mut fields = [0; 8];
            fields[i] = raw;
            let a = &def.args[i];
            let (value, kernel) = (a.value(i, &fields), a.kernel_value(i, &fields));
            (
                value,
                a.beyond_type(value, kernel),
                a.decoder.decode(kernel),
            )
        };
        // An unsigned long the int32 cuts short: the whole value, in kernelValue and names.
        assert_eq!(
            at("pkey_mprotect", "prot", 0xdead_feed_00ca_7500),
            (
                ArgValue::Signed(0xca_7500),
                Some(0xdead_feed_00ca_7500),
                Some("0xdeadfeed00ca7500".into())
            )
        );
        assert_eq!(
            at("mprotect", "prot", 0x1_0000_0001),
            (
                ArgValue::Signed(1),
                Some(0x1_0000_0001),
                Some("PROT_READ|0x100000000".into())
            )
        );
        // A 32-bit int: the register's high bits never reach the kernel, and the names are
        // of its 32 bits, as strace prints them.
        assert_eq!(
            at("mlock2", "flags", u64::MAX),
            (
                ArgValue::Signed(-1),
                None,
                Some("MLOCK_ONFAULT|0xfffffffe".into())
            )
        );
        assert_eq!(at("mlock2", "flags", 0xffff_ffff).1, None);
        // A negative int passed sign-extended, as libc passes mmap's fd -1: Tracee's -1 is
        // the kernel's value; passed zero-extended, it is not.
        assert_eq!(at("mmap", "fd", u64::MAX).1, None);
        assert_eq!(at("mmap", "fd", 0xffff_ffff).1, Some(0xffff_ffff));
        // Where Tracee's type is as wide as the kernel's, nothing is beyond it.
        for e in CATALOG {
            for (i, a) in e.args.iter().enumerate() {
                let mut fields = [u64::MAX - 1; 8];
                fields[i] = 0xdead_feed_00ca_7500;
                let beyond = a.beyond_type(a.value(i, &fields), a.kernel_value(i, &fields));
                assert_eq!(
                    beyond.is_some(),
                    a.kernel.bits > a.ty.bits() && a.field == Field::Own,
                    "{}.{}",
                    e.name,
                    a.name
                );
            }
        }
    }

    #[test]
    fn errno_of_results() {
        let mmap = by_name("mmap").unwrap();
        assert_eq!(mmap.errno(-12), Some(12));
        assert_eq!(mmap.errno(0x7f00_0000_0000), None);
        assert_eq!(by_name("brk").unwrap().errno(-4), Some(4));
        assert_eq!(by_name("brk").unwrap().errno(0x5555_0000), None);
        assert_eq!(by_id(448).unwrap().name, "process_mrelease");
        assert!(sets().contains(&"oom"));
    }
}

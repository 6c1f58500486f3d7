//! What mmtrace adds to a call beyond its raw record: whose memory a pidfd names, how much
//! came back, locked memory against its limit, the mapping a call touched, the OOM kill's limit.

use crate::line;
use crate::TracedText;

/// The process a pidfd refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host_pid: u32,
    /// In the target's own pid namespace, as Tracee's processId (1 for a container's init).
    pub pid: u32,
    /// Empty once the process has been reaped.
    pub comm: crate::TracedText,
}

/// Resident memory in bytes, as the kernel's mm counters hold it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl Rss {
    pub fn total(&self) -> u64 {
        self.anon + self.file + self.shmem
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// VmLck of the caller after the call.
    pub locked_bytes: u64,
    /// RLIMIT_MEMLOCK soft limit; None when unlimited.
    pub limit_bytes: Option<u64>,
    pub cap_ipc_lock: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// Nothing is mapped at the address.
    Unmapped,
    Anon,
    /// A file opened by path.
    File,
    Stack,
    Heap,
    /// Shared memory with no file behind it at all.
    Shared,
    /// MAP_SHARED|MAP_ANONYMOUS (or a shared mapping of /dev/zero).
    SharedAnon,
    /// A memfd_create file; its name is the mapping's name.
    Memfd,
    /// A SysV shared memory segment (shmat); its key is the mapping's name.
    SysvShm,
    /// memfd_secret memory, out of the kernel's direct map.
    Secretmem,
    /// Another file the kernel made for itself (perf, io_uring, DRM buffers...), by name.
    KernelFile,
    /// Not read: another thread of the process held its mmap lock throughout.
    Unread,
}

impl MappingKind {
    /// Whether the kind is all there is to say: no range, protection or name.
    pub fn is_bare(self) -> bool {
        matches!(self, MappingKind::Unmapped | MappingKind::Unread)
    }

    pub const ALL: [MappingKind; 12] = [
        MappingKind::Unmapped,
        MappingKind::Anon,
        MappingKind::File,
        MappingKind::Stack,
        MappingKind::Heap,
        MappingKind::Shared,
        MappingKind::SharedAnon,
        MappingKind::Memfd,
        MappingKind::SysvShm,
        MappingKind::Secretmem,
        MappingKind::KernelFile,
        MappingKind::Unread,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MappingKind::Unmapped => "unmapped",
            MappingKind::Anon => "anon",
            MappingKind::File => "file",
            MappingKind::Stack => "stack",
            MappingKind::Heap => "heap",
            MappingKind::Shared => "shared",
            MappingKind::SharedAnon => "shared-anon",
            MappingKind::Memfd => "memfd",
            MappingKind::SysvShm => "sysv-shm",
            MappingKind::Secretmem => "secretmem",
            MappingKind::KernelFile => "kernel-file",
            MappingKind::Unread => "unread",
        }
    }

    /// From the kernel side's VMA_* number and, for a file on one of the kernel's own mounts
    /// (VMA_INTERNAL), its name: the kind and the name worth showing (a memfd's name, a
    /// SysV key), as the kernel names these files in mm/shmem.c, ipc/shm.c, mm/secretmem.c.
    pub fn from_kernel(kind: u32, internal_name: &[u8]) -> (MappingKind, Option<TracedText>) {
        use mmtrace_abi::{
            VMA_ANON, VMA_FILE, VMA_HEAP, VMA_INTERNAL, VMA_SHARED, VMA_STACK, VMA_UNREAD,
        };
        let kind = match kind {
            VMA_ANON => MappingKind::Anon,
            VMA_FILE => MappingKind::File,
            VMA_STACK => MappingKind::Stack,
            VMA_HEAP => MappingKind::Heap,
            VMA_SHARED => MappingKind::Shared,
            VMA_UNREAD => MappingKind::Unread,
            VMA_INTERNAL => {
                let named = |kind, name: &[u8]| (kind, Some(TracedText::from(name.to_vec())));
                return match internal_name {
                    b"dev/zero" => (MappingKind::SharedAnon, None),
                    b"secretmem" => (MappingKind::Secretmem, None),
                    n => match (n.strip_prefix(b"memfd:"), n.strip_prefix(b"SYSV")) {
                        (Some(name), _) => named(MappingKind::Memfd, name),
                        (_, Some(key)) => named(MappingKind::SysvShm, &[b"0x", key].concat()),
                        _ => named(MappingKind::KernelFile, n),
                    },
                };
            }
            _ => MappingKind::Unmapped,
        };
        (kind, None)
    }
}

/// The mapping at a call's address before the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub kind: MappingKind,
    pub start: u64,
    pub end: u64,
    /// PROT_* bits (the kernel's VM_READ, VM_WRITE, VM_EXEC have the same values).
    pub prot: u64,
    pub shared: bool,
    pub locked: bool,
    pub path: Option<crate::TracedText>,
    /// What names a mapping with no path: a memfd's name, a SysV segment's key, a kernel
    /// file's name.
    pub name: Option<crate::TracedText>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub target: Option<Target>,
    pub rss_before: Option<Rss>,
    pub rss_after: Option<Rss>,
    pub locked: Option<Locked>,
    pub mapping: Option<Mapping>,
    /// Locked memory the call released, in bytes.
    pub unlocked_bytes: Option<u64>,
    /// For the OOM killer's victim: the limit that fired.
    pub oom_limit: Option<OomLimit>,
}

/// Which limit an OOM kill came from, as the kernel's own report of the kill says: its
/// `oom-kill:constraint=...` line and, for a memory cgroup, the `memory: usage` line before it.
/// Those are the figures of the moment the kernel decided; the cgroup's files, read later,
/// have moved on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OomLimit {
    /// The kernel's word: CONSTRAINT_NONE (the whole system), CONSTRAINT_MEMCG,
    /// CONSTRAINT_CPUSET or CONSTRAINT_MEMORY_POLICY; None when the report was not read, and
    /// `unread` says why.
    pub constraint: Option<String>,
    /// The memory cgroup whose limit fired (the kernel's oom_memcg), as a path in the memory
    /// controller's hierarchy.
    pub cgroup: Option<TracedText>,
    /// The victim's own memory cgroup (task_memcg): `cgroup` or below it.
    pub task_cgroup: Option<TracedText>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// How often the cgroup's usage hit its limit, up to the kill.
    pub failcnt: Option<u64>,
    /// The memory controller's cgroup version, 1 or 2.
    pub cgroup_version: Option<u8>,
    /// The cgroup's own memory pressure (cgroup v2 only; v1 keeps none per cgroup).
    pub pressure: Option<Psi>,
    /// Why the kernel's report was not read.
    pub unread: Option<String>,
}

impl OomLimit {
    /// What ran out, in a word: "system", "cgroup", "cpuset", "mempolicy", or "unknown".
    pub fn scope(&self) -> &'static str {
        match self.constraint.as_deref() {
            Some("CONSTRAINT_NONE") => "system",
            Some("CONSTRAINT_MEMCG") => "cgroup",
            Some("CONSTRAINT_CPUSET") => "cpuset",
            Some("CONSTRAINT_MEMORY_POLICY") => "mempolicy",
            _ => "unknown",
        }
    }
}

/// PSI `some` and `full` avg10, in hundredths of a percent: the kernel prints two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psi {
    pub some_avg10: u32,
    pub full_avg10: u32,
}

impl Psi {
    /// From a PSI file's text (`some avg10=1.23 ...` and `full avg10=...` lines).
    pub fn parse(text: &str) -> Option<Psi> {
        let avg10 = |kind: &str| {
            let v = text
                .lines()
                .find(|l| l.starts_with(kind))?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("avg10="))?;
            let (whole, frac) = v.split_once('.').unwrap_or((v, "0"));
            let frac = format!("{frac:0<2}");
            Some(whole.parse::<u32>().ok()? * 100 + frac.get(..2)?.parse::<u32>().ok()?)
        };
        Some(Psi {
            some_avg10: avg10("some")?,
            full_avg10: avg10("full")?,
        })
    }
}

impl Enrichment {
    /// Bytes of the target's memory that came back during the call.
    pub fn freed_bytes(&self) -> Option<u64> {
        Some(
            self.rss_before?
                .total()
                .saturating_sub(self.rss_after.unwrap_or_default().total()),
        )
    }
}

/// What the writer writes of a live event's `OomLimit`, as a recording reads it back.
impl From<&OomLimit> for line::Limit {
    fn from(o: &OomLimit) -> line::Limit {
        let lossy = |t: &Option<TracedText>| t.as_ref().map(|t| t.to_str_lossy().into());
        line::Limit {
            scope: Some(o.scope().to_string()),
            constraint: o.constraint.clone(),
            cgroup: lossy(&o.cgroup),
            task_cgroup: lossy(&o.task_cgroup),
            usage_bytes: o.usage_bytes,
            limit_bytes: o.limit_bytes,
            failcnt: o.failcnt,
            cgroup_version: o.cgroup_version,
            pressure: o.pressure.map(|p| line::Pressure {
                some_avg10: f64::from(p.some_avg10) / 100.0,
                full_avg10: f64::from(p.full_avg10) / 100.0,
            }),
            reason: o.unread.clone(),
        }
    }
}

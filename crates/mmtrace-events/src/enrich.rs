//! What mmtrace adds to a call beyond its raw record: whose memory a pidfd names, how much
//! came back, locked memory against its limit, the mapping a call touched, and alerts.

use std::borrow::Cow;

use crate::catalog::Role;
use crate::decode::{write_and_exec, PROT_EXEC, PROT_WRITE};
use crate::event::Event;
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

/// Tracee's four memory-protection alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    MmapWx,
    MprotectAddedX,
    MprotectXToWx,
    MprotectWToX,
}

impl Alert {
    const ALL: [Alert; 4] = [
        Alert::MmapWx,
        Alert::MprotectAddedX,
        Alert::MprotectXToWx,
        Alert::MprotectWToX,
    ];

    /// Tracee's text for it (trace.MemProtAlert's String), as Tracee prints it.
    pub fn text(self) -> &'static str {
        match self {
            Alert::MmapWx => "Mmaped region with W+E permissions!",
            Alert::MprotectAddedX => "Protection changed to Executable!",
            Alert::MprotectXToWx => "Protection changed from E to W+E!",
            Alert::MprotectWToX => "Protection changed from W to E!",
        }
    }

    /// The text mmtrace wrote before it took Tracee's, which older recordings hold.
    fn old_text(self) -> &'static str {
        match self {
            Alert::MmapWx => "mmap W+X",
            Alert::MprotectAddedX => "mprotect added X",
            Alert::MprotectXToWx => "mprotect X to W+X",
            Alert::MprotectWToX => "mprotect W to X",
        }
    }

    /// The alert a recorded line names, in Tracee's text or mmtrace's older one.
    pub fn parse(text: &str) -> Option<Alert> {
        Alert::ALL
            .into_iter()
            .find(|a| a.text() == text || a.old_text() == text)
    }
}

/// A mem_prot_alert's argument values, in the catalog's order: what the JSON line and the
/// analysis both report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtAlert<'a> {
    pub alert: Alert,
    pub addr: u64,
    pub len: u64,
    pub prot: u64,
    pub prev_prot: u64,
    /// Empty for anonymous memory, or when the mapping was not read.
    pub pathname: &'a [u8],
}

impl ProtAlert<'_> {
    /// The alert a successful mmap or mprotect raises, with what it is about.
    pub fn of(e: &Event) -> Option<ProtAlert<'_>> {
        let (alert, prev_prot) = alert(e)?;
        let raw = |name| e.arg(name).map_or(0, |v| v.bits());
        Some(ProtAlert {
            alert,
            // mmap's addr argument is only a hint; where the mapping went is what it returned.
            addr: match e.def.role {
                Role::Maps => e.ret as u64,
                _ => raw("addr"),
            },
            len: e.arg("len").or(e.arg("length")).map_or(0, |v| v.bits()),
            // As the kernel received it: the line shows Tracee's int32 and kernelValue.
            prot: e.kernel_arg("prot").unwrap_or(0),
            prev_prot,
            pathname: e
                .enrich
                .as_ref()
                .and_then(|x| x.mapping.as_ref())
                .and_then(|m| m.path.as_ref())
                .map_or(&[][..], TracedText::as_bytes),
        })
    }
}

/// A mem_prot_alert argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertValue<'a> {
    Text(Cow<'a, str>),
    Pointer(u64),
    Number(u64),
}

impl ProtAlert<'_> {
    /// Its arguments' values in the catalog's order (`MEM_PROT_ALERT.args`): what the JSON
    /// line writes and the live analysis reads.
    pub fn values(&self) -> [AlertValue<'_>; 9] {
        use AlertValue::{Number, Pointer, Text};
        [
            Text(self.alert.text().into()),
            Pointer(self.addr),
            Number(self.len),
            Number(self.prot),
            Number(self.prev_prot),
            Text(String::from_utf8_lossy(self.pathname)),
            // dev, inode and ctime: the kernel side does not read them yet.
            Number(0),
            Number(0),
            Number(0),
        ]
    }
}

/// The alert a successful mmap or mprotect raises, with the protection before it.
pub fn alert(e: &Event) -> Option<(Alert, u64)> {
    if e.def.errno(e.ret).is_some() {
        return None;
    }
    let prot = e.arg("prot")?.bits();
    match e.def.role {
        Role::Maps if write_and_exec(prot) => Some((Alert::MmapWx, 0)),
        Role::Protects => {
            let before = e.enrich.as_ref()?.mapping.as_ref()?.prot;
            let kind =
                if before & PROT_EXEC != 0 && before & PROT_WRITE == 0 && write_and_exec(prot) {
                    Alert::MprotectXToWx
                } else if before & PROT_EXEC != 0 || prot & PROT_EXEC == 0 {
                    return None;
                } else if before & PROT_WRITE != 0 && prot & PROT_WRITE == 0 {
                    Alert::MprotectWToX
                } else {
                    Alert::MprotectAddedX
                };
            Some((kind, before))
        }
        _ => None,
    }
}

/// Why a call failed, in words, where the errno alone misleads.
pub fn failure_reason(e: &Event) -> Option<&'static str> {
    let errno = e.def.errno(e.ret)?;
    match (e.def.role, errno) {
        (Role::Releases, 22) => Some(
            "the target is not dying: send it SIGKILL first (a SIGTERM it handles does not count)",
        ),
        (Role::Releases, 3) => {
            Some("the target already exited or was reaped: nothing was left to free")
        }
        (Role::Releases, 9) => Some("the descriptor is not a pidfd"),
        (Role::Releases, 11) => {
            Some("part of the memory could not be reaped without blocking: call again")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::by_name;
    use crate::event::Context;

    fn event(name: &str, args: [u64; 6], ret: i64, before: Option<u64>) -> Event {
        let mut raw_args = [0; 8];
        raw_args[..6].copy_from_slice(&args);
        Event {
            def: by_name(name).unwrap(),
            ctx: Context {
                timestamp: 0,
                thread_start: 0,
                process_start: 0,
                parent_start: 0,
                cpu: 0,
                pid: 1,
                tid: 1,
                ppid: 0,
                host_pid: 1,
                host_tid: 1,
                host_ppid: 0,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                mnt_ns: 0,
                pid_ns: 0,
                comm: "t".into(),
                executable: None,
            },
            raw_args,
            absent: 0,
            ret,
            duration_ns: 1,
            enrich: before.map(|prot| Enrichment {
                mapping: Some(Mapping {
                    kind: MappingKind::Anon,
                    start: 0,
                    end: 4096,
                    prot,
                    shared: false,
                    locked: false,
                    path: None,
                    name: None,
                }),
                ..Enrichment::default()
            }),
            stack: None,
        }
    }

    #[test]
    fn the_four_alerts_and_the_quiet_cases() {
        let mprotect = |before, after| {
            alert(&event(
                "mprotect",
                [0, 4096, after, 0, 0, 0],
                0,
                Some(before),
            ))
            .map(|a| a.0)
        };
        assert_eq!(
            alert(&event("mmap", [0, 4096, 7, 0x22, 0, 0], 0x1000, None)).map(|a| a.0),
            Some(Alert::MmapWx)
        );
        assert_eq!(
            alert(&event("mmap", [0, 4096, 5, 0x22, 0, 0], 0x1000, None)),
            None
        );
        assert_eq!(
            alert(&event("mmap", [0, 4096, 7, 0x22, 0, 0], -12, None)),
            None,
            "failed calls raise nothing"
        );
        assert_eq!(mprotect(3, 5), Some(Alert::MprotectWToX));
        assert_eq!(mprotect(5, 7), Some(Alert::MprotectXToWx));
        assert_eq!(mprotect(1, 5), Some(Alert::MprotectAddedX));
        assert_eq!(mprotect(3, 7), Some(Alert::MprotectAddedX));
        assert_eq!(mprotect(5, 5), None, "already executable");
        assert_eq!(mprotect(3, 1), None, "no exec");
        assert_eq!(
            alert(&event("mprotect", [0, 4096, 5, 0, 0, 0], 0, None)),
            None,
            "mapping unknown"
        );
    }

    #[test]
    fn alert_values_have_the_catalogs_types() {
        use crate::catalog::{ArgType, MEM_PROT_ALERT};
        let e = event("mmap", [0, 4096, 7, 0x22, 0, 0], 0x1000, None);
        let a = ProtAlert::of(&e).unwrap();
        let values = a.values();
        assert_eq!(values.len(), MEM_PROT_ALERT.args.len());
        for (def, value) in MEM_PROT_ALERT.args.iter().zip(&values) {
            let fits = match value {
                AlertValue::Text(_) => def.ty == ArgType::Str,
                AlertValue::Pointer(_) => def.ty == ArgType::Pointer,
                AlertValue::Number(_) => !matches!(def.ty, ArgType::Str | ArgType::Pointer),
            };
            assert!(fits, "{}", def.name);
        }
        assert_eq!(values[1], AlertValue::Pointer(0x1000), "where mmap put it");
    }

    #[test]
    fn freed_and_reasons() {
        let rss = |anon| Rss {
            anon,
            file: 10,
            shmem: 0,
        };
        let e = Enrichment {
            rss_before: Some(rss(100)),
            rss_after: Some(rss(4)),
            ..Default::default()
        };
        assert_eq!(e.freed_bytes(), Some(96));
        let gone = Enrichment {
            rss_before: Some(rss(100)),
            ..Default::default()
        };
        assert_eq!(
            gone.freed_bytes(),
            Some(110),
            "no memory left after: all of it came back"
        );
        assert_eq!(Enrichment::default().freed_bytes(), None);
        assert!(
            failure_reason(&event("process_mrelease", [0; 6], -22, None))
                .unwrap()
                .contains("send it SIGKILL")
        );
        assert!(failure_reason(&event("process_mrelease", [0; 6], -3, None))
            .unwrap()
            .contains("reaped"));
        assert_eq!(
            failure_reason(&event("process_mrelease", [0; 6], 0, None)),
            None
        );
        assert_eq!(failure_reason(&event("munmap", [0; 6], -22, None)), None);
    }
}

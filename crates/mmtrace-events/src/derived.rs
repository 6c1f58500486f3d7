//! What an event means beyond its fields: Tracee's memory-protection alerts, and why a call
//! failed, in words.

use std::borrow::Cow;

use crate::catalog::Role;
use crate::decode::{write_and_exec, PROT_EXEC, PROT_WRITE};
use crate::event::Event;
use crate::TracedText;

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
    use crate::enrich::*;
    use crate::event::Context;

    fn event(name: &str, args: [u64; 6], ret: i64, before: Option<u64>) -> Event {
        let mut raw_args = [0; 8];
        raw_args[..6].copy_from_slice(&args);
        Event {
            def: by_name(name).unwrap(),
            ctx: Context {
                pid: 1,
                tid: 1,
                host_pid: 1,
                host_tid: 1,
                comm: "t".into(),
                ..Context::default()
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

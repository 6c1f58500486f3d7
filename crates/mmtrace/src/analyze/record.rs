//! One JSON line of a recording, read leniently into the fields the analysis uses.

use std::borrow::Cow;
use std::sync::Arc;

use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::decode::{errno_name, Decoder, PROT_WRITE};
use mmtrace_events::derived::{AlertValue, ProtAlert};
use mmtrace_events::enrich::Locked;
use mmtrace_events::line::{value_number, Arg, Limit, Line};
use mmtrace_events::{by_name, catalog, derived, ArgRole, ArgValue, Event, EventDef, Role};
use serde_json::{json, Value};

use crate::output::Note;

/// The mapping at an address before a call (the `mapping` object).
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The protection's bits, as the event model has them; a recording's names read back.
    prot: Option<u64>,
    pub kind: Option<Cow<'static, str>>,
    pub path: Option<String>,
}

impl Mapping {
    pub fn writable(&self) -> bool {
        self.prot.is_some_and(|p| p & PROT_WRITE != 0)
    }

    pub fn prot(&self) -> String {
        self.prot
            .and_then(|p| Decoder::Prot.decode(p))
            .unwrap_or_default()
    }
}

/// The arguments: as a recording writes them, or a live event's registers with its catalog
/// entry, read only when asked.
#[derive(Debug, Clone)]
enum Args {
    Json(Vec<Arg>),
    Raw {
        def: &'static EventDef,
        raw: [u64; MAX_ARGS],
        /// The record's fields the kernel did not gather, as in `Event::absent`.
        absent: u8,
    },
}

/// The most arguments an event has (oom_mark_victim's eight).
const MAX_ARGS: usize = 8;

#[derive(Debug, Clone)]
pub struct Record {
    /// Line number in the recording; 0 when traced live.
    pub line: usize,
    /// Entry time, ns since the epoch.
    pub ts: u64,
    pub duration: u64,
    /// When the calling process started, ns since the epoch: with the pid, the process's
    /// identity. 0 when unknown: in-band lines, and lines of other threads than the main
    /// one in recordings made before lines carried processStartTime.
    pub process_start: u64,
    /// The line has no processStartTime: `process_start` is its thread's start if it is the
    /// main thread's, else unknown.
    pub start_guessed: bool,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub name: Cow<'static, str>,
    /// What the event does, from the catalog; `Other` for lines it does not know.
    pub role: Role,
    pub ret: i64,
    pub errno: Option<String>,
    args: Args,
    /// Host pid of the process a pidfd or pid argument refers to, and its name.
    pub target: Option<(u32, Option<String>)>,
    pub freed: Option<u64>,
    pub reason: Option<String>,
    pub locked: Option<Locked>,
    pub mapping: Option<Mapping>,
    /// The OOM killer's victim: the limit that fired. Boxed: few lines have one.
    pub limit: Option<Box<Limit>>,
    /// The caller's stack as frame names (`stacks::CallSites`), innermost first: the
    /// symbolized frames where the line has them, else the addresses; None without.
    pub stack: Option<Arc<[String]>>,
}

fn names(frames: impl Iterator<Item = String>) -> Option<Arc<[String]>> {
    let names: Vec<String> = frames.collect();
    (!names.is_empty()).then(|| names.into())
}

impl Record {
    /// Reads one line; the error says what makes it unusable.
    pub fn parse(text: &[u8], line: usize) -> Result<Record, String> {
        if !text.trim_ascii_start().starts_with(b"{") {
            return match serde_json::from_slice::<Value>(text) {
                Ok(_) => Err("not a JSON object".to_string()),
                Err(e) => Err(format!("not JSON ({e})")),
            };
        }
        let l = Line::parse(text).map_err(|e| format!("not JSON ({e})"))?;
        let name = l.event_name.get().ok_or("no eventName")?;
        // Older recordings: the main thread's start is its process's (a thread that execs
        // takes over the main thread's start with its pid).
        let process_start = |pid: u32, tid: u32| {
            l.process_start_time
                .get()
                .or_else(|| l.thread_start_time.get().filter(|_| tid == pid))
                .unwrap_or(0)
        };
        let start_guessed = !l.process_start_time.present();
        // A call of the catalog: read back into the event it was written from, and analysed
        // as that event live would be.
        if by_name(&name).is_some() {
            let e = l.event()?;
            return Ok(Record {
                line,
                process_start: process_start(e.ctx.host_pid, e.ctx.host_tid),
                start_guessed,
                ..Record::from_event(&e)
            });
        }
        // Alerts, in-band lines and events of other tools: their context and arguments.
        let ts = l.timestamp.get().ok_or("no numeric timestamp")?;
        let pid = l.host_process_id.get().ok_or("no numeric hostProcessId")?;
        let tid = l.host_thread_id.get().unwrap_or(pid);
        let ret = l.return_value.get().unwrap_or(0);
        Ok(Record {
            line,
            ts,
            duration: l.duration.get().unwrap_or(0),
            process_start: process_start(pid, tid),
            start_guessed,
            pid,
            tid,
            comm: l.process_name.get().unwrap_or_default(),
            role: catalog::role(&name).unwrap_or(Role::Other),
            errno: l.return_error.get().or_else(|| {
                (-4095..0).contains(&ret).then(|| {
                    errno_name(ret.unsigned_abs())
                        .map_or_else(|| format!("E{}", -ret), str::to_string)
                })
            }),
            name: Cow::Owned(name),
            ret,
            args: Args::Json(l.args.unwrap_or_default()),
            target: None,
            freed: None,
            reason: l.reason.get(),
            locked: None,
            mapping: None,
            limit: None,
            stack: None,
        })
    }

    /// A live event, read as its JSON line would be, without writing and parsing the line.
    pub fn from_event(e: &Event) -> Record {
        let c = &e.ctx;
        let x = e.enrich.as_ref();
        Record {
            line: 0,
            ts: c.timestamp,
            duration: e.duration_ns,
            process_start: c.process_start,
            start_guessed: false,
            pid: c.host_pid,
            tid: c.host_tid,
            comm: c.comm.to_str_lossy().into_owned(),
            name: Cow::Borrowed(e.def.name),
            role: e.def.role,
            ret: e.ret,
            errno: e.error_name(),
            args: Args::Raw {
                def: e.def,
                raw: std::array::from_fn(|i| e.raw_args.get(i).copied().unwrap_or(0)),
                absent: e.absent,
            },
            target: x.and_then(|x| x.target.as_ref()).map(|t| {
                let comm = t.comm.to_str_lossy().into_owned();
                (t.host_pid, Some(comm).filter(|n| !n.is_empty()))
            }),
            freed: x.and_then(|x| x.freed_bytes()),
            reason: derived::failure_reason(e).map(str::to_string),
            locked: x.and_then(|x| x.locked),
            mapping: x.and_then(|x| x.mapping.as_ref()).map(|m| Mapping {
                prot: Some(m.prot),
                kind: Some(Cow::Borrowed(m.kind.name())),
                path: m.path.as_ref().map(|p| p.to_str_lossy().into_owned()),
            }),
            limit: x
                .and_then(|x| x.oom_limit.as_ref())
                .map(|l| Box::new(l.into())),
            stack: e.stack.as_ref().and_then(|s| match s.frames.is_empty() {
                false => names(s.frames.iter().map(|f| f.name())),
                true => names(s.addresses.iter().map(|a| format!("{a:#x}"))),
            }),
        }
    }

    /// An in-band line of a live trace, as the JSON output writes it.
    pub fn from_note(note: &Note) -> Record {
        let (kind, at, args) = note.parts();
        let pid = std::process::id();
        Record {
            line: 0,
            ts: at,
            duration: 0,
            process_start: 0,
            start_guessed: false,
            pid,
            tid: pid,
            comm: "mmtrace".into(),
            name: Cow::Borrowed(kind.name),
            role: Role::Other,
            ret: 0,
            errno: None,
            args: Args::Json(
                args.into_iter()
                    .map(|(name, _, value)| Arg {
                        name: name.to_string(),
                        value,
                        decoded: None,
                        kernel_value: None,
                    })
                    .collect(),
            ),
            target: None,
            freed: None,
            reason: None,
            locked: None,
            mapping: None,
            limit: None,
            stack: None,
        }
    }

    /// The arguments of a JSON line, by name; live events have none this way.
    pub fn json_args(&self) -> impl Iterator<Item = (&str, &Value)> {
        let args = match &self.args {
            Args::Json(args) => args.as_slice(),
            Args::Raw { .. } => &[],
        };
        args.iter().map(|a| (a.name.as_str(), &a.value))
    }

    /// The `mem_prot_alert` line a live event raises, as the JSON output writes it after the
    /// call.
    pub fn alert_of(e: &Event, a: &ProtAlert) -> Record {
        let call = Record::from_event(e);
        Record {
            name: Cow::Borrowed(MEM_PROT_ALERT.name),
            role: MEM_PROT_ALERT.role,
            ret: 0,
            errno: None,
            duration: 0,
            args: Args::Json(
                MEM_PROT_ALERT
                    .args
                    .iter()
                    .zip(a.values())
                    .map(|(def, value)| {
                        let (value, kernel_value) = match value {
                            AlertValue::Text(t) => (json!(t), None),
                            AlertValue::Pointer(p) => (json!(format!("{p:#x}")), None),
                            AlertValue::Number(n) => {
                                let typed = def.ty.value(n);
                                let full = def.beyond_type(typed, def.kernel.cut(n));
                                match typed {
                                    ArgValue::Signed(v) => (json!(v), full),
                                    other => (json!(other.bits()), full),
                                }
                            }
                        };
                        Arg {
                            name: def.name.to_string(),
                            value,
                            decoded: None,
                            kernel_value,
                        }
                    })
                    .collect(),
            ),
            target: None,
            freed: None,
            reason: None,
            locked: None,
            mapping: None,
            limit: None,
            ..call
        }
    }

    /// When the call returned: what it did took effect then.
    /// Whether `other` is the same event: the same thread's same event, entered at the same
    /// nanosecond and ended alike, which two calls never are.
    pub fn same_event(&self, other: &Record) -> bool {
        (
            self.ts,
            self.pid,
            self.tid,
            &self.name,
            self.ret,
            self.duration,
        ) == (
            other.ts,
            other.pid,
            other.tid,
            &other.name,
            other.ret,
            other.duration,
        )
    }

    pub fn end(&self) -> u64 {
        self.ts.saturating_add(self.duration)
    }

    pub fn ok(&self) -> bool {
        self.errno.is_none()
    }

    fn json_arg(&self, name: &str) -> Option<&Arg> {
        match &self.args {
            Args::Json(args) => args.iter().find(|a| a.name == name),
            Args::Raw { .. } => None,
        }
    }

    /// A live event's argument: its catalog entry, Tracee's typed value and the kernel's.
    fn raw_arg(&self, name: &str) -> Option<(&'static mmtrace_events::ArgDef, ArgValue, u64)> {
        match &self.args {
            Args::Raw { def, raw, absent } => {
                let i = def.args.iter().position(|a| a.name == name)?;
                let arg = &def.args[i];
                // As the JSON line leaves it out, so live and recorded analyses agree.
                (!arg.is_absent(i, *absent))
                    .then(|| (arg, arg.value(i, raw), arg.kernel_value(i, raw)))
            }
            Args::Json(_) => None,
        }
    }

    /// An argument as an unsigned number.
    pub fn arg_u64(&self, name: &str) -> Option<u64> {
        if let Some((_, value, _)) = self.raw_arg(name) {
            return Some(value.bits());
        }
        value_number(&self.json_arg(name)?.value)
    }

    pub fn arg_i64(&self, name: &str) -> Option<i64> {
        self.arg_u64(name).map(|v| v as i64)
    }

    /// The name the argument playing `role` has in this event's catalog entry.
    fn role_name(&self, role: ArgRole) -> Option<&'static str> {
        let def = match &self.args {
            Args::Raw { def, .. } => Some(*def),
            Args::Json(_) => by_name(&self.name),
        }?;
        def.args.iter().find(|a| a.role == role).map(|a| a.name)
    }

    /// The argument playing `role`, as an unsigned number.
    pub fn by_role(&self, role: ArgRole) -> Option<u64> {
        self.arg_u64(self.role_name(role)?)
    }

    /// The range of memory the call acts on: its start and size.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.by_role(ArgRole::Start)?, self.size()?))
    }

    pub fn size(&self) -> Option<u64> {
        self.by_role(ArgRole::Size)
    }

    pub fn prot(&self) -> Option<u64> {
        self.by_role(ArgRole::Prot)
    }

    pub fn flags(&self) -> Option<u64> {
        self.by_role(ArgRole::Flags)
    }

    /// The flags' names (`MCL_FUTURE`), falling back to their value.
    pub fn flags_text(&self) -> Option<String> {
        self.arg_text(self.role_name(ArgRole::Flags)?)
    }

    pub fn signal(&self) -> Option<u64> {
        self.by_role(ArgRole::Signal)
    }

    /// The process the call acts on by pid: kill's, pidfd_open's, the OOM killer's victim.
    pub fn pid_arg(&self) -> Option<i64> {
        self.by_role(ArgRole::Pid).map(|v| v as i64)
    }

    pub fn pidfd(&self) -> Option<i64> {
        self.by_role(ArgRole::Pidfd).map(|v| v as i64)
    }

    /// A string argument; only derived lines (alerts, OOM) have them.
    pub fn arg_str(&self, name: &str) -> Option<&str> {
        self.json_arg(name)?.value.as_str()
    }

    /// The argument's names (`MCL_FUTURE`), falling back to its value.
    pub fn arg_text(&self, name: &str) -> Option<String> {
        if let Some((def, value, kernel)) = self.raw_arg(name) {
            return Some(def.decoder.decode(kernel).unwrap_or_else(|| {
                def.beyond_type(value, kernel)
                    .unwrap_or(value.bits())
                    .to_string()
            }));
        }
        let arg = self.json_arg(name)?;
        Some(match (&arg.decoded, arg.kernel_value) {
            (Some(names), _) => names.clone(),
            (None, Some(full)) => full.to_string(),
            (None, None) => arg.value.to_string(),
        })
    }
}

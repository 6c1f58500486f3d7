//! What the analysis reads of one line of a recording or one event of a live trace: the
//! event itself (a call or kernel event of the catalog, which a recorded line is read back
//! into through the catalog), or, for a line that is none (an alert, an in-band line, another
//! tool's event), its context and arguments; with where it came from.

use std::borrow::Cow;
use std::sync::Arc;

use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::decode::{errno_name, Decoder, PROT_WRITE};
use mmtrace_events::derived::{AlertValue, ProtAlert};
use mmtrace_events::enrich::{Locked, Mapping};
use mmtrace_events::line::{value_number, Arg, Limit, Line};
use mmtrace_events::{by_name, catalog, derived, ArgRole, ArgValue, Event, Role};
use serde_json::{json, Value};

use crate::output::Note;

#[derive(Debug, Clone)]
pub struct Record {
    /// Line number in the recording; 0 when traced live.
    pub line: usize,
    /// When the calling process started, ns since the epoch: with the pid, the process's
    /// identity. 0 when unknown: in-band lines, and lines of other threads than the main
    /// one in recordings made before lines carried processStartTime.
    pub process_start: u64,
    /// The line has no processStartTime: `process_start` is its thread's start if it is the
    /// main thread's, else unknown.
    pub start_guessed: bool,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    Event(Box<Event>),
    Other(Box<Other>),
}

/// A line that is no call or kernel event of the catalog: what the analysis reads of it.
#[derive(Debug, Clone)]
struct Other {
    ts: u64,
    duration: u64,
    pid: u32,
    tid: u32,
    comm: String,
    name: Cow<'static, str>,
    role: Role,
    ret: i64,
    errno: Option<String>,
    args: Vec<Arg>,
    reason: Option<String>,
}

/// A mapping's protection, as names.
pub fn prot_names(m: &Mapping) -> String {
    Decoder::Prot.decode(m.prot).unwrap_or_default()
}

/// Whether the mapping was writable.
pub fn writable(m: &Mapping) -> bool {
    m.prot & PROT_WRITE != 0
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
        let (given, thread_start) = (l.process_start_time.get(), l.thread_start_time.get());
        let process_start = |pid: u32, tid: u32| {
            given
                .or_else(|| thread_start.filter(|_| tid == pid))
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
                what: What::Event(Box::new(e)),
            });
        }
        let ts = l.timestamp.get().ok_or("no numeric timestamp")?;
        let pid = l.host_process_id.get().ok_or("no numeric hostProcessId")?;
        let tid = l.host_thread_id.get().unwrap_or(pid);
        let ret = l.return_value.get().unwrap_or(0);
        Ok(Record {
            line,
            process_start: process_start(pid, tid),
            start_guessed,
            what: What::Other(Box::new(Other {
                ts,
                duration: l.duration.get().unwrap_or(0),
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
                args: l.args.unwrap_or_default(),
                reason: l.reason.get(),
            })),
        })
    }

    /// A live event.
    pub fn from_event(e: &Event) -> Record {
        Record {
            line: 0,
            process_start: e.ctx.process_start,
            start_guessed: false,
            what: What::Event(Box::new(e.clone())),
        }
    }

    /// A line that is none of the catalog's events, made by mmtrace itself.
    fn made(
        ts: u64,
        pid: u32,
        tid: u32,
        comm: String,
        name: &'static str,
        args: Vec<Arg>,
    ) -> Record {
        Record {
            line: 0,
            process_start: 0,
            start_guessed: false,
            what: What::Other(Box::new(Other {
                ts,
                duration: 0,
                pid,
                tid,
                comm,
                name: Cow::Borrowed(name),
                role: catalog::role(name).unwrap_or(Role::Other),
                ret: 0,
                errno: None,
                args,
                reason: None,
            })),
        }
    }

    /// An in-band line of a live trace, as the JSON output writes it.
    pub fn from_note(note: &Note) -> Record {
        let (kind, at, args) = note.parts();
        let pid = std::process::id();
        let args = args
            .into_iter()
            .map(|(name, _, value)| Arg {
                name: name.to_string(),
                value,
                decoded: None,
                kernel_value: None,
            })
            .collect();
        Record::made(at, pid, pid, "mmtrace".into(), kind.name, args)
    }

    /// The arguments of a line that is none of the catalog's events, by name.
    pub fn json_args(&self) -> impl Iterator<Item = (&str, &Value)> {
        let args = match &self.what {
            What::Other(o) => o.args.as_slice(),
            What::Event(_) => &[],
        };
        args.iter().map(|a| (a.name.as_str(), &a.value))
    }

    /// The `mem_prot_alert` line a live event raises, as the JSON output writes it after the
    /// call.
    pub fn alert_of(e: &Event, a: &ProtAlert) -> Record {
        let args = MEM_PROT_ALERT
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
            .collect();
        let c = &e.ctx;
        let comm = c.comm.to_str_lossy().into_owned();
        Record {
            process_start: c.process_start,
            ..Record::made(
                c.timestamp,
                c.host_pid,
                c.host_tid,
                comm,
                MEM_PROT_ALERT.name,
                args,
            )
        }
    }

    /// The event, for a call or kernel event of the catalog.
    pub fn event(&self) -> Option<&Event> {
        match &self.what {
            What::Event(e) => Some(e),
            What::Other(_) => None,
        }
    }

    fn other(&self) -> Option<&Other> {
        match &self.what {
            What::Other(o) => Some(o),
            What::Event(_) => None,
        }
    }

    /// Entry time, ns since the epoch.
    pub fn ts(&self) -> u64 {
        self.event()
            .map_or_else(|| self.other().map_or(0, |o| o.ts), |e| e.ctx.timestamp)
    }

    pub fn duration(&self) -> u64 {
        self.event()
            .map_or_else(|| self.other().map_or(0, |o| o.duration), |e| e.duration_ns)
    }

    /// The caller's host pid.
    pub fn pid(&self) -> u32 {
        self.event()
            .map_or_else(|| self.other().map_or(0, |o| o.pid), |e| e.ctx.host_pid)
    }

    /// The caller's host tid.
    pub fn tid(&self) -> u32 {
        self.event()
            .map_or_else(|| self.other().map_or(0, |o| o.tid), |e| e.ctx.host_tid)
    }

    pub fn comm(&self) -> Cow<'_, str> {
        match &self.what {
            What::Event(e) => e.ctx.comm.to_str_lossy(),
            What::Other(o) => Cow::Borrowed(&o.comm),
        }
    }

    pub fn name(&self) -> &str {
        match &self.what {
            What::Event(e) => e.def.name,
            What::Other(o) => &o.name,
        }
    }

    /// What the event does, from the catalog; `Other` for lines it does not know.
    pub fn role(&self) -> Role {
        match &self.what {
            What::Event(e) => e.def.role,
            What::Other(o) => o.role,
        }
    }

    pub fn ret(&self) -> i64 {
        self.event()
            .map_or_else(|| self.other().map_or(0, |o| o.ret), |e| e.ret)
    }

    /// The error's name (`EINVAL`) of a call that failed.
    pub fn errno(&self) -> Option<String> {
        match &self.what {
            What::Event(e) => e.error_name(),
            What::Other(o) => o.errno.clone(),
        }
    }

    /// Host pid of the process a pidfd or pid argument refers to, and its name.
    pub fn target(&self) -> Option<(u32, Option<String>)> {
        let t = self.event()?.enrich.as_ref()?.target.as_ref()?;
        let comm = t.comm.to_str_lossy().into_owned();
        Some((t.host_pid, Some(comm).filter(|n| !n.is_empty())))
    }

    /// The memory process_mrelease freed.
    pub fn freed(&self) -> Option<u64> {
        self.event()?.enrich.as_ref()?.freed_bytes()
    }

    /// Why the call failed, in words.
    pub fn reason(&self) -> Option<Cow<'_, str>> {
        match &self.what {
            What::Event(e) => derived::failure_reason(e).map(Cow::Borrowed),
            What::Other(o) => o.reason.as_deref().map(Cow::Borrowed),
        }
    }

    pub fn locked(&self) -> Option<Locked> {
        self.event()?.enrich.as_ref()?.locked
    }

    /// The mapping the call touched, as the tracer read it.
    pub fn mapping(&self) -> Option<&Mapping> {
        self.event()?.enrich.as_ref()?.mapping.as_ref()
    }

    /// The OOM killer's victim: the limit that fired.
    pub fn limit(&self) -> Option<Limit> {
        Some(self.event()?.enrich.as_ref()?.oom_limit.as_ref()?.into())
    }

    /// The caller's stack as frame names (`stacks::CallSites`), innermost first: the
    /// symbolized frames where there are, else the addresses; None without.
    pub fn stack(&self) -> Option<Arc<[String]>> {
        let s = self.event()?.stack.as_ref()?;
        match s.frames.is_empty() {
            false => names(s.frames.iter().map(|f| f.name())),
            true => names(s.addresses.iter().map(|a| format!("{a:#x}"))),
        }
    }

    /// Whether `other` is the same event: the same thread's same event, entered at the same
    /// nanosecond and ended alike, which two calls never are.
    pub fn same_event(&self, other: &Record) -> bool {
        let key = |r: &Record| (r.ts(), r.pid(), r.tid(), r.ret(), r.duration());
        key(self) == key(other) && self.name() == other.name()
    }

    /// When the call returned: what it did took effect then.
    pub fn end(&self) -> u64 {
        self.ts().saturating_add(self.duration())
    }

    pub fn ok(&self) -> bool {
        match &self.what {
            What::Event(e) => e.def.errno(e.ret).is_none(),
            What::Other(o) => o.errno.is_none(),
        }
    }

    fn json_arg(&self, name: &str) -> Option<&Arg> {
        self.other()?.args.iter().find(|a| a.name == name)
    }

    /// An event's argument: its catalog entry, Tracee's typed value and the kernel's.
    fn raw_arg(&self, name: &str) -> Option<(&'static mmtrace_events::ArgDef, ArgValue, u64)> {
        let e = self.event()?;
        let i = e.def.args.iter().position(|a| a.name == name)?;
        let arg = &e.def.args[i];
        // As the JSON line leaves it out, so live and recorded analyses agree.
        (!arg.is_absent(i, e.absent)).then(|| {
            (
                arg,
                arg.value(i, &e.raw_args),
                arg.kernel_value(i, &e.raw_args),
            )
        })
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
        let def = self.event()?.def;
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

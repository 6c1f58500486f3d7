//! JSON lines with Tracee's keys in Tracee's order, then mmtrace's own additions.

use std::fmt;
use std::io::{self, Write};

use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::decode::Decoder;
use mmtrace_events::enrich::{self, Enrichment, ProtAlert, Rss};
use mmtrace_events::event::Context;
use mmtrace_events::{ArgValue, Event, EventDef};

use super::{hex_digits, Sink, WRITE_BYTES};
use crate::inband::Note;

pub struct JsonLines<W: Write> {
    out: W,
    caller: Caller,
    /// Indexed by event id.
    kinds: Vec<Option<Kind>>,
    /// Whole lines not written yet.
    lines: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        JsonLines {
            out,
            caller: Caller::new(host),
            kinds: Vec::new(),
            lines: Vec::with_capacity(2 * WRITE_BYTES),
        }
    }
}

/// Appends numbers and strings to a line without going through `core::fmt`, which cost more
/// than everything else in the reader at a million events a second.
trait Push {
    fn raw(&mut self, s: &str);
    fn uint(&mut self, v: u64);
    fn int(&mut self, v: i64);
    fn hex(&mut self, v: u64);
    fn string(&mut self, s: &str);
    /// `,"decoded":"..."` where the decoder names the value, nothing otherwise.
    fn decoded(&mut self, decoder: Decoder, raw: u64);
}

/// Lets the decoders write into a line of bytes.
struct Text<'a>(&'a mut Vec<u8>);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Push for Vec<u8> {
    fn raw(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn uint(&mut self, v: u64) {
        self.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn int(&mut self, v: i64) {
        self.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn hex(&mut self, v: u64) {
        self.raw("\"0x");
        self.extend_from_slice(hex_digits(v, &mut [0; 16]));
        self.push(b'"');
    }
    fn string(&mut self, s: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self, s);
    }
    fn decoded(&mut self, decoder: Decoder, raw: u64) {
        let mark = self.len();
        // Decoded names are letters, digits, '_', '|' and '+': nothing to escape.
        self.raw(",\"decoded\":\"");
        match decoder.write(raw, &mut Text(self)) {
            Ok(true) => self.push(b'"'),
            _ => self.truncate(mark),
        }
    }
}

/// Appends one event as a JSON object, without a newline; `caller` from `Caller::keys`.
pub fn write_event(out: &mut Vec<u8>, e: &Event, caller: &[u8], kind: &Kind) {
    write_context(out, &e.ctx, caller);
    out.extend_from_slice(&kind.head);
    out.uint(e.args_num() as u64);
    out.raw(",\"returnValue\":");
    out.int(e.ret);
    out.extend_from_slice(&kind.middle);
    write_entity_ids(out, &e.ctx);
    for (prefix, (def, value)) in kind.args.iter().zip(e.args()) {
        out.extend_from_slice(prefix);
        match value {
            ArgValue::Pointer(p) => out.hex(p),
            ArgValue::Unsigned(v) => out.uint(v),
            ArgValue::Signed(v) => out.int(v),
            ArgValue::Bool(b) => out.raw(if b { "true" } else { "false" }),
        }
        out.decoded(def.decoder, value.bits());
        out.push(b'}');
    }
    write_rest(out, e);
}

/// The keys that depend only on the kind of event, put together once per kind: built piece
/// by piece on every line, they were a third of the pieces, and each piece is a copy call.
pub struct Kind {
    /// From `,"eventId"` to `"argsNum":`: the count is the event's, as a kernel may lack some.
    head: Vec<u8>,
    /// From `,"syscall"` to `"threadEntityId":`.
    middle: Vec<u8>,
    /// Each argument up to its value, with the ',' before all but the first.
    args: Vec<Vec<u8>>,
}

impl Kind {
    /// The keys of `def`'s lines; `syscall` names the call they come from.
    fn new<S>(def: &EventDef<S>, syscall: &str) -> Kind {
        let mut head = Vec::new();
        head.raw(",\"eventId\":\"");
        head.uint(def.event_id.into());
        head.raw("\",\"eventName\":\"");
        head.raw(def.name);
        head.raw("\",\"matchedPolicies\":[],\"argsNum\":");
        let mut middle = Vec::new();
        middle.raw(",\"syscall\":\"");
        middle.raw(syscall);
        middle.raw(
            "\",\"stackAddresses\":[],\"contextFlags\":{\"containerStarted\":false,\"isCompat\":false},\
             \"threadEntityId\":",
        );
        let args = def
            .args
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                let mut prefix = Vec::new();
                if i > 0 {
                    prefix.push(b',');
                }
                prefix.raw("{\"name\":\"");
                prefix.raw(arg.name);
                prefix.raw("\",\"type\":\"");
                prefix.raw(arg.ty.tracee_name());
                prefix.raw("\",\"value\":");
                prefix
            })
            .collect();
        Kind { head, middle, args }
    }
}

/// Tracee's entity ids of the caller, its process and its parent, and `"args":[`.
fn write_entity_ids(out: &mut Vec<u8>, c: &Context) {
    out.uint(c.thread_entity_id().into());
    out.raw(",\"processEntityId\":");
    out.uint(c.process_entity_id().into());
    out.raw(",\"parentEntityId\":");
    out.uint(c.parent_entity_id().into());
    out.raw(",\"args\":[");
}

/// The Tracee keys that describe who made a call, up to `kubernetes`.
fn write_context(out: &mut Vec<u8>, c: &Context, caller: &[u8]) {
    out.raw("{\"timestamp\":");
    out.uint(c.timestamp);
    out.raw(",\"threadStartTime\":");
    out.uint(c.thread_start);
    out.raw(",\"processorId\":");
    out.uint(c.cpu.into());
    out.extend_from_slice(caller);
}

/// The keys from `processId` to `kubernetes`, kept from one call to the next: they only
/// change with the calling thread, and a storm comes from a few threads. Writing them anew
/// was a third of a line's cost.
pub struct Caller {
    host: String,
    /// The context `keys` was written for; its timestamp and cpu do not matter.
    of: Option<Context>,
    keys: Vec<u8>,
}

impl Caller {
    pub fn new(host: String) -> Caller {
        Caller {
            host,
            of: None,
            keys: Vec::new(),
        }
    }

    pub fn keys(&mut self, c: &Context) -> &[u8] {
        if !self.of.as_ref().is_some_and(|of| same_caller(of, c)) {
            self.keys.clear();
            write_caller(&mut self.keys, c, &self.host);
            self.of = Some(c.clone());
        }
        &self.keys
    }
}

/// Whether the two contexts give the same `Caller` keys.
fn same_caller(a: &Context, b: &Context) -> bool {
    (
        a.pid,
        a.cgroup_id,
        a.tid,
        a.ppid,
        a.host_pid,
        a.host_tid,
        a.host_ppid,
        a.uid,
        a.mnt_ns,
        a.pid_ns,
        &a.comm,
    ) == (
        b.pid,
        b.cgroup_id,
        b.tid,
        b.ppid,
        b.host_pid,
        b.host_tid,
        b.host_ppid,
        b.uid,
        b.mnt_ns,
        b.pid_ns,
        &b.comm,
    )
}

fn write_caller(out: &mut Vec<u8>, c: &Context, host: &str) {
    out.raw(",\"processId\":");
    out.uint(c.pid.into());
    out.raw(",\"cgroupId\":");
    out.uint(c.cgroup_id);
    out.raw(",\"threadId\":");
    out.uint(c.tid.into());
    out.raw(",\"parentProcessId\":");
    out.uint(c.ppid.into());
    out.raw(",\"hostProcessId\":");
    out.uint(c.host_pid.into());
    out.raw(",\"hostThreadId\":");
    out.uint(c.host_tid.into());
    out.raw(",\"hostParentProcessId\":");
    out.uint(c.host_ppid.into());
    out.raw(",\"userId\":");
    out.uint(c.uid.into());
    out.raw(",\"mountNamespace\":");
    out.uint(c.mnt_ns.into());
    out.raw(",\"pidNamespace\":");
    out.uint(c.pid_ns.into());
    out.raw(",\"processName\":");
    out.string(&c.comm.to_str_lossy());
    out.raw(",\"executable\":{\"path\":\"\"},\"hostName\":");
    out.string(host);
    crate::containers::write_json(out, c.cgroup_id);
}

/// mmtrace's own key after Tracee's: the process's start, exact, which Tracee's
/// processEntityId carries only hashed and to 100 ms; `analyze` tells processes apart by it.
fn write_process_start(out: &mut Vec<u8>, c: &Context) {
    out.raw(",\"processStartTime\":");
    out.uint(c.process_start);
}

/// From the end of the arguments on.
fn write_rest(out: &mut Vec<u8>, e: &Event) {
    out.raw("],\"duration\":");
    out.uint(e.duration_ns);
    write_process_start(out, &e.ctx);
    if let Some(err) = e.error_name() {
        out.raw(",\"returnError\":");
        out.string(&err);
    }
    if let Some(x) = &e.enrich {
        write_enrichment(out, e, x);
    }
    out.push(b'}');
}

fn write_rss(out: &mut Vec<u8>, rss: Option<&Rss>) {
    match rss {
        None => out.raw("null"),
        Some(r) => {
            out.raw("{\"anon\":");
            out.uint(r.anon);
            out.raw(",\"file\":");
            out.uint(r.file);
            out.raw(",\"shmem\":");
            out.uint(r.shmem);
            out.push(b'}');
        }
    }
}

/// mmtrace's own keys: what the kernel side gathered beyond the raw call.
fn write_enrichment(out: &mut Vec<u8>, e: &Event, x: &Enrichment) {
    if let Some(t) = &x.target {
        out.raw(",\"target\":{\"hostProcessId\":");
        out.uint(t.host_pid.into());
        out.raw(",\"processId\":");
        out.uint(t.pid.into());
        out.raw(",\"processName\":");
        out.string(&t.comm.to_str_lossy());
        out.push(b'}');
    }
    if let Some(freed) = x.freed_bytes() {
        out.raw(",\"memory\":{\"before\":");
        write_rss(out, x.rss_before.as_ref());
        out.raw(",\"after\":");
        write_rss(out, x.rss_after.as_ref());
        out.raw(",\"freedBytes\":");
        out.uint(freed);
        out.push(b'}');
    }
    if let Some(reason) = enrich::failure_reason(e) {
        out.raw(",\"reason\":");
        out.string(reason);
    }
    if let Some(l) = &x.locked {
        out.raw(",\"locked\":{\"lockedBytes\":");
        out.uint(l.locked_bytes);
        out.raw(",\"limitBytes\":");
        match l.limit_bytes {
            Some(v) => out.uint(v),
            None => out.raw("null"),
        }
        out.raw(",\"capIpcLock\":");
        out.raw(if l.cap_ipc_lock { "true" } else { "false" });
        out.push(b'}');
    }
    if let Some(m) = x.mapping.as_ref().filter(|m| m.kind.is_bare()) {
        out.raw(",\"mapping\":{\"kind\":\"");
        out.raw(m.kind.name());
        out.raw("\"}");
    } else if let Some(m) = &x.mapping {
        out.raw(",\"mapping\":{\"start\":");
        out.hex(m.start);
        out.raw(",\"end\":");
        out.hex(m.end);
        out.raw(",\"kind\":\"");
        out.raw(m.kind.name());
        out.raw("\",\"prot\":\"");
        let _ = Decoder::Prot.write(m.prot, &mut Text(out));
        out.push(b'"');
        out.raw(",\"shared\":");
        out.raw(if m.shared { "true" } else { "false" });
        out.raw(",\"locked\":");
        out.raw(if m.locked { "true" } else { "false" });
        for (key, text) in [(",\"path\":", &m.path), (",\"name\":", &m.name)] {
            if let Some(text) = text {
                out.raw(key);
                out.string(&text.to_str_lossy());
            }
        }
        out.push(b'}');
    }
    if let Some(n) = x.unlocked_bytes {
        out.raw(",\"unlockedBytes\":");
        out.uint(n);
    }
}

/// Tracee's mem_prot_alert, as its own line after the call that raised it, from that call's
/// context.
pub fn write_alert(out: &mut Vec<u8>, e: &Event, caller: &[u8], a: &ProtAlert) {
    let def = &MEM_PROT_ALERT;
    let kind = Kind::new(def, e.def.name);
    write_context(out, &e.ctx, caller);
    out.extend_from_slice(&kind.head);
    out.uint(def.args.len() as u64);
    out.raw(",\"returnValue\":0");
    out.extend_from_slice(&kind.middle);
    write_entity_ids(out, &e.ctx);
    for (prefix, arg) in kind.args.iter().zip(def.args) {
        out.extend_from_slice(prefix);
        match arg.name {
            "alert" => out.string(a.alert.text()),
            "addr" => out.hex(a.addr),
            "pathname" => out.string(&String::from_utf8_lossy(a.pathname)),
            name => {
                let v = match name {
                    "len" => a.len,
                    "prot" => a.prot,
                    "prev_prot" => a.prev_prot,
                    // dev, inode and ctime: the kernel side does not read them yet.
                    _ => 0,
                };
                out.uint(v);
                out.decoded(arg.decoder, v);
            }
        }
        out.push(b'}');
    }
    out.raw("],\"duration\":0");
    write_process_start(out, &e.ctx);
    out.push(b'}');
}

impl<W: Write> JsonLines<W> {
    fn write_if_full(&mut self) -> io::Result<()> {
        if self.lines.len() >= WRITE_BYTES {
            self.out.write_all(&self.lines)?;
            self.lines.clear();
        }
        Ok(())
    }
}

/// An in-band line (see inband.rs): Tracee's keys, with mmtrace itself as the caller and
/// the figures as arguments, so that a Tracee consumer reads an event it does not know.
fn write_note(out: &mut Vec<u8>, note: &Note, host: &str) {
    let (name, at, args) = note.parts();
    let pid = std::process::id();
    let me = Context {
        timestamp: at,
        thread_start: 0,
        process_start: 0,
        parent_start: 0,
        cpu: 0,
        pid,
        tid: pid,
        ppid: 0,
        host_pid: pid,
        host_tid: pid,
        host_ppid: 0,
        uid: 0,
        gid: 0,
        cgroup_id: 0,
        mnt_ns: 0,
        pid_ns: 0,
        comm: "mmtrace".into(),
    };
    let mut caller = Vec::new();
    write_caller(&mut caller, &me, host);
    write_context(out, &me, &caller);
    out.raw(",\"eventId\":\"");
    out.raw(name);
    out.raw("\",\"eventName\":\"");
    out.raw(name);
    out.raw("\",\"matchedPolicies\":[],\"argsNum\":");
    out.uint(args.len() as u64);
    // A note is about the recording, not a call some process made: mmtrace's pid stands
    // in as its caller for Tracee's types, but entity ids of 0 (and no processStartTime)
    // keep consumers and `analyze` from joining it to any process's events.
    out.raw(",\"returnValue\":0,\"syscall\":\"\",\"stackAddresses\":[],\"contextFlags\":{\"containerStarted\":false,\"isCompat\":false},\"threadEntityId\":0,\"processEntityId\":0,\"parentEntityId\":0,\"args\":[");
    for (i, (name, ty, value)) in args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.raw("{\"name\":\"");
        out.raw(name);
        out.raw("\",\"type\":\"");
        out.raw(ty);
        out.raw("\",\"value\":");
        out.raw(&value.to_string());
        out.push(b'}');
    }
    out.raw("],\"duration\":0}\n");
}

impl<W: Write> Sink for JsonLines<W> {
    fn note(&mut self, note: &Note) -> io::Result<()> {
        write_note(&mut self.lines, note, &self.caller.host);
        Ok(())
    }

    fn event(&mut self, e: &Event) -> io::Result<()> {
        let caller = self.caller.keys(&e.ctx);
        let id = usize::from(e.def.id);
        if self.kinds.len() <= id {
            self.kinds.resize_with(id + 1, || None);
        }
        let kind = self.kinds[id].get_or_insert_with(|| Kind::new(e.def, e.def.name));
        write_event(&mut self.lines, e, caller, kind);
        self.lines.push(b'\n');
        self.write_if_full()
    }

    fn alert(&mut self, e: &Event, alert: &ProtAlert) -> io::Result<()> {
        let caller = self.caller.keys(&e.ctx);
        write_alert(&mut self.lines, e, caller, alert);
        self.lines.push(b'\n');
        self.write_if_full()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.lines)?;
        self.lines.clear();
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::Push;

    #[test]
    fn hex_matches_format() {
        for v in [0u64, 1, 0xf, 0x10, 0x7fff_dead_beef, u64::MAX] {
            let mut out = Vec::new();
            out.hex(v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{v:#x}\""));
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        out.string("a\"b\\c\n\u{1}");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\n\u0001""#);
    }
}

//! JSON lines with Tracee's keys in Tracee's order, then mmtrace's own additions.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use mmtrace_events::catalog::MEM_PROT_ALERT;
use mmtrace_events::container::Container;
use mmtrace_events::decode::Decoder;
use mmtrace_events::derived::{self, AlertValue, ProtAlert};
use mmtrace_events::enrich::{Enrichment, OomLimit, Rss};
use mmtrace_events::event::Context;
use mmtrace_events::stack::Stack;
use mmtrace_events::{ArgDef, ArgValue, Event, EventDef};

use super::{hex_digits, Note, Sink, WRITE_BYTES};

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
    write_stack_addresses(out, e);
    write_entity_ids(out, &e.ctx);
    for (prefix, (def, value, kernel)) in kind.args.iter().zip(e.args()) {
        out.extend_from_slice(prefix);
        write_value(out, def, value, kernel);
        out.push(b'}');
    }
    write_rest(out, e);
}

/// An argument's value in Tracee's type, which keeps Tracee's consumers parsing; the names
/// of the value the kernel received; and that value as kernelValue where the type cannot
/// hold it.
fn write_value(out: &mut Vec<u8>, def: &ArgDef, value: ArgValue, kernel: u64) {
    match value {
        ArgValue::Pointer(p) => out.hex(p),
        ArgValue::Unsigned(v) => out.uint(v),
        ArgValue::Signed(v) => out.int(v),
        ArgValue::Bool(b) => out.raw(if b { "true" } else { "false" }),
    }
    out.decoded(def.decoder, kernel);
    if let Some(full) = def.beyond_type(value, kernel) {
        out.raw(",\"kernelValue\":");
        out.uint(full);
    }
}

/// The keys that depend only on the kind of event, put together once per kind: built piece
/// by piece on every line, they were a third of the pieces, and each piece is a copy call.
pub struct Kind {
    /// From `,"eventId"` to `"argsNum":`: the count is the event's, as a kernel may lack some.
    head: Vec<u8>,
    /// From `,"syscall"` to `"stackAddresses":[`.
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
        middle.raw("\",\"stackAddresses\":[");
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

/// The stack's addresses as Tracee writes them, numbers (none without --stack), and the keys
/// up to `"threadEntityId":`.
fn write_stack_addresses(out: &mut Vec<u8>, e: &Event) {
    if let Some(s) = &e.stack {
        for (i, &a) in s.addresses.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.uint(a);
        }
    }
    out.raw(
        "],\"contextFlags\":{\"containerStarted\":false,\"isCompat\":false},\"threadEntityId\":",
    );
}

/// mmtrace's own key: the stack's frames as the reader symbolized them, innermost first.
/// What a frame does not know is left out.
fn write_stack(out: &mut Vec<u8>, s: &Stack) {
    out.raw(",\"stack\":[");
    for (i, f) in s.frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.raw("{\"address\":");
        out.hex(f.address);
        if let Some(func) = &f.function {
            out.raw(",\"function\":");
            out.string(&func.to_str_lossy());
            out.raw(",\"offset\":");
            out.hex(f.function_offset);
        }
        if let Some(m) = &f.module {
            out.raw(",\"module\":");
            out.string(&m.to_str_lossy());
            out.raw(",\"moduleOffset\":");
            out.hex(f.module_offset);
        }
        if let Some(file) = &f.file {
            out.raw(",\"file\":");
            out.string(&file.to_str_lossy());
            if f.line > 0 {
                out.raw(",\"line\":");
                out.uint(f.line.into());
            }
        }
        out.push(b'}');
    }
    out.push(b']');
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
    // Left out where the kernel gave no path, as the container's keys are.
    if let Some(exe) = &c.executable {
        out.raw(",\"executable\":{\"path\":");
        out.string(&exe.to_str_lossy());
        out.push(b'}');
    }
    out.raw(",\"hostName\":");
    out.string(host);
    write_container(out, c.container.as_deref());
}

/// `,"containerId":..,"container":{..},"kubernetes":{..}` as Tracee writes them, for a call
/// from the container `c`; nothing outside one. Keys nobody knows are left out rather than
/// written empty, and `kubernetes` is there only for a pod's containers.
fn write_container(out: &mut Vec<u8>, c: Option<&Container>) {
    let Some(c) = c else {
        return;
    };
    let string = |out: &mut Vec<u8>, s: &str| {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    };
    let object = |out: &mut Vec<u8>, fields: &[(&str, Option<&str>)]| {
        out.push(b'{');
        let mut first = true;
        for (key, value) in fields {
            if let Some(v) = value {
                if !first {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                string(out, v);
                first = false;
            }
        }
        out.push(b'}');
    };
    let i = &c.info;
    out.extend_from_slice(b",\"containerId\":");
    string(out, &c.id);
    out.extend_from_slice(b",\"container\":");
    object(
        out,
        &[
            ("id", Some(&c.id)),
            ("name", i.name.as_deref()),
            ("image", i.image.as_deref()),
            ("imageDigest", i.image_digest.as_deref()),
            // mmtrace's own, after Tracee's keys.
            ("runtime", Some(c.runtime.name())),
        ],
    );
    let pod = [
        ("podName", i.pod_name.as_deref()),
        ("podNamespace", i.pod_namespace.as_deref()),
        ("podUID", i.pod_uid.as_deref()),
    ];
    if pod.iter().any(|(_, v)| v.is_some()) {
        out.extend_from_slice(b",\"kubernetes\":");
        object(out, &pod);
        if i.pod_sandbox {
            out.pop();
            out.extend_from_slice(b",\"podSandbox\":true}");
        }
    }
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
    if let Some(s) = &e.stack {
        write_stack(out, s);
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
    if let Some(reason) = derived::failure_reason(e) {
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
    if let Some(l) = &x.oom_limit {
        write_oom_limit(out, l);
    }
}

/// `limit`: which limit an OOM kill came from; what is not known is left out.
fn write_oom_limit(out: &mut Vec<u8>, l: &OomLimit) {
    out.raw(",\"limit\":{\"scope\":\"");
    out.raw(l.scope());
    out.push(b'"');
    let texts = [
        (
            ",\"constraint\":",
            l.constraint.as_deref().map(Cow::Borrowed),
        ),
        (",\"cgroup\":", l.cgroup.as_ref().map(|c| c.to_str_lossy())),
        (
            ",\"taskCgroup\":",
            l.task_cgroup.as_ref().map(|c| c.to_str_lossy()),
        ),
    ];
    for (key, text) in texts {
        if let Some(text) = text {
            out.raw(key);
            out.string(&text);
        }
    }
    let numbers = [
        (",\"usageBytes\":", l.usage_bytes),
        (",\"limitBytes\":", l.limit_bytes),
        (",\"failcnt\":", l.failcnt),
        (",\"cgroupVersion\":", l.cgroup_version.map(u64::from)),
    ];
    for (key, n) in numbers {
        if let Some(n) = n {
            out.raw(key);
            out.uint(n);
        }
    }
    if let Some(p) = l.pressure {
        // Two decimals, as the kernel prints them.
        let percent = |v: u32| format!("{}.{:02}", v / 100, v % 100);
        out.raw(",\"pressure\":{\"someAvg10\":");
        out.raw(&percent(p.some_avg10));
        out.raw(",\"fullAvg10\":");
        out.raw(&percent(p.full_avg10));
        out.push(b'}');
    }
    if let Some(why) = &l.unread {
        out.raw(",\"reason\":");
        out.string(why);
    }
    out.push(b'}');
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
    write_stack_addresses(out, e);
    write_entity_ids(out, &e.ctx);
    for ((prefix, arg), value) in kind.args.iter().zip(def.args).zip(a.values()) {
        out.extend_from_slice(prefix);
        match value {
            AlertValue::Text(t) => out.string(&t),
            AlertValue::Pointer(p) => out.hex(p),
            AlertValue::Number(v) => write_value(out, arg, arg.ty.value(v), arg.kernel.cut(v)),
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
    let (kind, at, args) = note.parts();
    let pid = std::process::id();
    let me = Context {
        timestamp: at,
        pid,
        tid: pid,
        host_pid: pid,
        host_tid: pid,
        comm: "mmtrace".into(),
        ..Context::default()
    };
    let mut caller = Vec::new();
    write_caller(&mut caller, &me, host);
    write_context(out, &me, &caller);
    out.raw(",\"eventId\":\"");
    out.uint(kind.event_id.into());
    out.raw("\",\"eventName\":\"");
    out.raw(kind.name);
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

    fn held(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests {
    use mmtrace_events::enrich::{Locked, Mapping, MappingKind, Psi, Target};
    use mmtrace_events::line::{self, Key, Line};
    use mmtrace_events::stack::Frame;
    use mmtrace_events::{TracedText, CATALOG};
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    use super::*;

    fn text() -> impl Strategy<Value = TracedText> {
        prop::collection::vec(any::<u8>(), 0..20).prop_map(TracedText::from)
    }

    fn context() -> impl Strategy<Value = Context> {
        (
            any::<[u64; 5]>(),
            any::<u16>(),
            any::<[u32; 12]>(),
            text(),
            prop::option::of(text()),
            prop::option::of(container()),
        )
            .prop_map(|(w, cpu, n, comm, exe, container)| Context {
                timestamp: w[0],
                thread_start: w[1],
                process_start: w[2],
                parent_start: w[3],
                cpu,
                pid: n[0],
                tid: n[1],
                ppid: n[2],
                host_pid: n[3],
                host_tid: n[4],
                host_ppid: n[5],
                uid: n[6],
                gid: n[7],
                cgroup_id: w[4],
                mnt_ns: n[8],
                pid_ns: n[9],
                comm,
                executable: exe.map(Into::into),
                container: container.map(std::sync::Arc::new),
            })
    }

    fn container() -> impl Strategy<Value = Container> {
        use mmtrace_events::container::{Info, Runtime};
        let name = || prop::option::of("[a-z\\x1b\"]{0,8}");
        (
            "[0-9a-f]{64}",
            prop::sample::select(vec![Runtime::Docker, Runtime::Podman, Runtime::Garden]),
            (
                name(),
                name(),
                name(),
                name(),
                name(),
                name(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(id, runtime, (n, i, d, pn, pns, uid, sandbox))| Container {
                    id,
                    runtime,
                    info: Info {
                        name: n,
                        image: i,
                        image_digest: d,
                        pod_name: pn,
                        pod_namespace: pns,
                        pod_uid: uid,
                        pod_sandbox: sandbox,
                    },
                },
            )
    }

    fn rss() -> impl Strategy<Value = Rss> {
        any::<[u32; 3]>().prop_map(|[anon, file, shmem]| Rss {
            anon: anon.into(),
            file: file.into(),
            shmem: shmem.into(),
        })
    }

    fn enrichment() -> impl Strategy<Value = Enrichment> {
        let target = (any::<[u32; 2]>(), text()).prop_map(|([host_pid, pid], comm)| Target {
            host_pid,
            pid,
            comm,
        });
        let locked = (any::<u64>(), any::<Option<u64>>(), any::<bool>()).prop_map(
            |(locked_bytes, limit_bytes, cap_ipc_lock)| Locked {
                locked_bytes,
                limit_bytes,
                cap_ipc_lock,
            },
        );
        let mapping = (
            prop::sample::select(MappingKind::ALL.to_vec()),
            any::<[u64; 2]>(),
            0..64u64,
            any::<[bool; 2]>(),
            prop::option::of(text()),
            prop::option::of(text()),
        )
            .prop_map(
                |(kind, [start, end], prot, [shared, locked], path, name)| Mapping {
                    kind,
                    start,
                    end,
                    prot,
                    shared,
                    locked,
                    path,
                    name,
                },
            );
        (
            prop::option::of(target),
            prop::option::of(rss()),
            prop::option::of(rss()),
            prop::option::of(locked),
            prop::option::of(mapping),
            any::<Option<u64>>(),
            prop::option::of(oom_limit()),
        )
            .prop_map(
                |(target, rss_before, rss_after, locked, mapping, unlocked_bytes, oom_limit)| {
                    Enrichment {
                        target,
                        rss_before,
                        rss_after,
                        locked,
                        mapping,
                        unlocked_bytes,
                        oom_limit,
                    }
                },
            )
    }

    fn oom_limit() -> impl Strategy<Value = OomLimit> {
        let constraint = prop::option::of(prop::sample::select(vec![
            "CONSTRAINT_NONE",
            "CONSTRAINT_MEMCG",
            "CONSTRAINT_CPUSET",
            "CONSTRAINT_MEMORY_POLICY",
        ]));
        let psi = any::<[u16; 2]>().prop_map(|[s, f]| Psi {
            some_avg10: u32::from(s % 10001),
            full_avg10: u32::from(f % 10001),
        });
        (
            constraint,
            [prop::option::of(text()), prop::option::of(text())],
            any::<[Option<u64>; 3]>(),
            prop::option::of(1..=2u8),
            prop::option::of(psi),
            prop::option::of(".*"),
        )
            .prop_map(
                |(
                    constraint,
                    [cgroup, task_cgroup],
                    [usage, limit, failcnt],
                    version,
                    pressure,
                    unread,
                )| {
                    OomLimit {
                        constraint: constraint.map(str::to_string),
                        cgroup,
                        task_cgroup,
                        usage_bytes: usage,
                        limit_bytes: limit,
                        failcnt,
                        cgroup_version: version,
                        pressure,
                        unread,
                    }
                },
            )
    }

    fn stack() -> impl Strategy<Value = Stack> {
        let name = || prop::option::of(text().prop_map(Arc::new));
        let frame = (any::<[u64; 3]>(), name(), name(), name(), any::<u32>()).prop_map(
            |([address, module_offset, function_offset], module, function, file, line)| Frame {
                address,
                module,
                module_offset,
                function,
                function_offset,
                file,
                line,
            },
        );
        (
            prop::collection::vec(any::<u64>(), 0..4),
            prop::collection::vec(frame, 0..4),
        )
            .prop_map(|(addresses, frames)| Stack {
                addresses,
                sp_word: 0,
                frames,
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        let ret = prop_oneof![Just(0i64), -4095..0i64, any::<i64>()];
        (
            prop::sample::select(CATALOG.iter().collect::<Vec<_>>()),
            context(),
            any::<[u64; 8]>(),
            // What kernels lack are the last fields of a record, never the first: the
            // writer's argument keys follow the catalog's order, so the args left out are
            // the last.
            (1..=8u32).prop_map(|first| (0xffu32 << first) as u8),
            ret,
            any::<u64>(),
            prop::option::of(enrichment()),
            prop::option::of(stack()),
        )
            .prop_map(
                |(def, ctx, raw_args, absent, ret, duration_ns, enrich, stack)| Event {
                    def,
                    ctx,
                    raw_args,
                    absent,
                    ret,
                    duration_ns,
                    enrich,
                    stack: stack.map(Box::new),
                },
            )
    }

    const HOST: &str = "host\"name";

    /// The keys every line has from its caller, and the line's own arguments, against what
    /// they were written from.
    fn same_context(l: &Line, c: &Context) {
        assert_eq!(l.timestamp.get(), Some(c.timestamp));
        assert_eq!(l.thread_start_time.get(), Some(c.thread_start));
        assert_eq!(l.processor_id.get(), Some(c.cpu));
        assert_eq!(l.process_id.get(), Some(c.pid));
        assert_eq!(l.cgroup_id.get(), Some(c.cgroup_id));
        assert_eq!(l.thread_id.get(), Some(c.tid));
        assert_eq!(l.parent_process_id.get(), Some(c.ppid));
        assert_eq!(l.host_process_id.get(), Some(c.host_pid));
        assert_eq!(l.host_thread_id.get(), Some(c.host_tid));
        assert_eq!(l.host_parent_process_id.get(), Some(c.host_ppid));
        assert_eq!(l.user_id.get(), Some(c.uid));
        assert_eq!(l.mount_namespace.get(), Some(c.mnt_ns));
        assert_eq!(l.pid_namespace.get(), Some(c.pid_ns));
        assert_eq!(
            l.process_name.get(),
            Some(c.comm.to_str_lossy().into_owned())
        );
        assert_eq!(
            l.executable.get().and_then(|e| e.path.get()),
            c.executable.as_ref().map(|p| p.to_str_lossy().into_owned())
        );
        assert_eq!(l.host_name.get().as_deref(), Some(HOST));
        // Outside a container, the keys are left out.
        assert_eq!(
            l.container_id.get(),
            c.container.as_ref().map(|c| c.id.clone())
        );
        if c.container.is_none() {
            assert!(l.container.get().is_none() && l.kubernetes.get().is_none());
        }
        assert_eq!(l.matched_policies.get(), Some(vec![]));
        let flags = l.context_flags.get().unwrap();
        assert!(!flags.container_started && !flags.is_compat);
        assert_eq!(l.thread_entity_id.get(), Some(c.thread_entity_id()));
        assert_eq!(l.process_entity_id.get(), Some(c.process_entity_id()));
        assert_eq!(l.parent_entity_id.get(), Some(c.parent_entity_id()));
        assert_eq!(l.process_start_time.get(), Some(c.process_start));
    }

    /// Tracee's numbers, and each frame with what it knows, hostile names included.
    fn same_stack(l: &Line, e: &Event) {
        let addresses = e.stack.as_ref().map_or(vec![], |s| s.addresses.clone());
        assert_eq!(l.stack_addresses.get(), Some(addresses));
        let frames = l.stack.get();
        let Some(s) = &e.stack else {
            assert!(!l.stack.present());
            return;
        };
        let frames = frames.unwrap();
        assert_eq!(frames.len(), s.frames.len());
        let lossy = |t: &Option<Arc<TracedText>>| t.as_ref().map(|t| t.to_str_lossy().into_owned());
        let hex = |v: u64| Some(format!("{v:#x}"));
        for (read, f) in frames.iter().zip(&s.frames) {
            assert_eq!(read.address, hex(f.address));
            assert_eq!(read.function, lossy(&f.function));
            assert_eq!(read.offset, f.function.as_ref().and(hex(f.function_offset)));
            assert_eq!(read.module, lossy(&f.module));
            assert_eq!(
                read.module_offset,
                f.module.as_ref().and(hex(f.module_offset))
            );
            assert_eq!(read.file, lossy(&f.file));
            assert_eq!(
                read.line,
                f.file.as_ref().and((f.line > 0).then_some(f.line))
            );
        }
    }

    fn same_rss(key: &Key<line::Rss>, rss: Option<&Rss>) {
        let read = key.get().map(|r| (r.anon, r.file, r.shmem));
        assert_eq!(read, rss.map(|r| (r.anon, r.file, r.shmem)));
    }

    fn same_enrichment(l: &Line, e: &Event) {
        let x = e.enrich.clone().unwrap_or_default();
        let target = l.target.get();
        assert_eq!(
            target.map(|t| (
                t.host_process_id.get(),
                t.process_id.get(),
                t.process_name.get()
            )),
            x.target.as_ref().map(|t| (
                Some(t.host_pid),
                Some(t.pid),
                Some(t.comm.to_str_lossy().into_owned())
            ))
        );
        match (l.memory.get(), x.freed_bytes()) {
            (Some(m), Some(freed)) => {
                same_rss(&m.before, x.rss_before.as_ref());
                same_rss(&m.after, x.rss_after.as_ref());
                assert_eq!(m.freed_bytes.get(), Some(freed));
            }
            (m, freed) => assert!(m.is_none() && freed.is_none()),
        }
        assert_eq!(l.reason.get().as_deref(), derived::failure_reason(e));
        let locked = l.locked.get();
        assert_eq!(
            locked.map(|l| (
                l.locked_bytes.get(),
                l.limit_bytes.get(),
                l.cap_ipc_lock.get()
            )),
            x.locked
                .map(|l| (Some(l.locked_bytes), l.limit_bytes, Some(l.cap_ipc_lock)))
        );
        assert_eq!(l.mapping.present(), x.mapping.is_some());
        if let (Some(read), Some(m)) = (l.mapping.get(), &x.mapping) {
            assert_eq!(read.kind.get().as_deref(), Some(m.kind.name()));
            let full = !m.kind.is_bare();
            let lossy = |t: &Option<TracedText>| {
                t.as_ref()
                    .filter(|_| full)
                    .map(|t| t.to_str_lossy().into_owned())
            };
            assert_eq!(read.start.get(), full.then(|| format!("{:#x}", m.start)));
            assert_eq!(read.end.get(), full.then(|| format!("{:#x}", m.end)));
            assert_eq!(
                read.prot.get(),
                full.then(|| Decoder::Prot.decode(m.prot).unwrap())
            );
            assert_eq!(read.shared.get(), full.then_some(m.shared));
            assert_eq!(read.locked.get(), full.then_some(m.locked));
            assert_eq!(read.path.get(), lossy(&m.path));
            assert_eq!(read.name.get(), lossy(&m.name));
        }
        assert_eq!(l.unlocked_bytes.get(), x.unlocked_bytes);
        assert_eq!(l.limit.get(), x.oom_limit.as_ref().map(line::Limit::from));
    }

    /// The JSON line of `e`, written by a fresh caller's writer.
    fn line_of(e: &Event) -> Vec<u8> {
        let mut caller = Caller::new(HOST.into());
        let mut out = Vec::new();
        write_event(
            &mut out,
            e,
            caller.keys(&e.ctx),
            &Kind::new(e.def, e.def.name),
        );
        out
    }

    proptest! {
        /// A written line read back is the event it was written from: written again, it is
        /// the same line. What a line cannot carry is left out of the event first: the
        /// parent's start (only hashed into parentEntityId) and the word at the stack pointer.
        #[test]
        fn written_lines_read_back_into_their_events(mut e in event()) {
            e.ctx.parent_start = 0;
            if let Some(s) = e.stack.as_mut() {
                s.sp_word = 0;
            }
            let line = line_of(&e);
            let back = line_of(&Line::parse(&line).unwrap().event().unwrap());
            prop_assert_eq!(String::from_utf8_lossy(&back), String::from_utf8_lossy(&line));
        }

        /// A written line's arguments, read back through the catalog, are the record's
        /// fields they were written from, as far as the kernel received them: what a
        /// recording's analysis reads is what the live one read.
        #[test]
        fn written_arguments_read_back_to_the_fields_they_came_from(e in event()) {
            let args = Line::parse(&line_of(&e)).unwrap().args.unwrap();
            let (fields, absent) = e
                .def
                .fields_of(|name| args.iter().find(|a| a.name == name)?.number());
            for (i, def) in e.def.args.iter().enumerate() {
                let gone = def.is_absent(i, e.absent);
                prop_assert_eq!(def.is_absent(i, absent), gone, "{}", def.name);
                if !gone {
                    prop_assert_eq!(
                        def.kernel_value(i, &fields),
                        def.kernel_value(i, &e.raw_args),
                        "{}",
                        def.name
                    );
                    prop_assert_eq!(
                        def.value(i, &fields).bits(),
                        def.value(i, &e.raw_args).bits(),
                        "{}",
                        def.name
                    );
                }
            }
        }

        /// The hand-written writer's lines are the JSON line the types describe, with the
        /// values of the event they were written from, whatever the event.
        #[test]
        fn written_lines_parse_into_the_line_types_with_their_values(e in event()) {
            let out = line_of(&e);
            let l = Line::parse(&out).unwrap();
            same_context(&l, &e.ctx);
            assert_eq!(l.event_id.get(), Some(e.def.event_id.to_string()));
            assert_eq!(l.event_name.get().as_deref(), Some(e.def.name));
            assert_eq!(l.syscall.get().as_deref(), Some(e.def.name));
            assert_eq!(l.args_num.get(), Some(e.args_num() as u64));
            assert_eq!(l.return_value.get(), Some(e.ret));
            assert_eq!(l.duration.get(), Some(e.duration_ns));
            assert_eq!(l.return_error.get(), e.error_name());
            let args = l.args.clone().unwrap();
            assert_eq!(args.len(), e.args_num());
            for (read, (def, value, kernel)) in args.iter().zip(e.args()) {
                assert_eq!(read.name, def.name);
                let written = match value {
                    ArgValue::Pointer(p) => json!(format!("{p:#x}")),
                    ArgValue::Unsigned(v) => json!(v),
                    ArgValue::Signed(v) => json!(v),
                    ArgValue::Bool(b) => json!(b),
                };
                assert_eq!(read.value, written, "{}", def.name);
                assert_eq!(read.decoded, def.decoder.decode(kernel), "{}", def.name);
                assert_eq!(read.kernel_value, def.beyond_type(value, kernel), "{}", def.name);
            }
            same_enrichment(&l, &e);
            same_stack(&l, &e);
        }

        /// The same of a mem_prot_alert line and the alert it was written from.
        #[test]
        fn written_alerts_parse_with_their_values(
            e in event(),
            alert in prop::sample::select(vec![
                derived::Alert::MmapWx,
                derived::Alert::MprotectAddedX,
                derived::Alert::MprotectXToWx,
                derived::Alert::MprotectWToX,
            ]),
            n in any::<[u64; 4]>(),
            pathname in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let a = ProtAlert {
                alert,
                addr: n[0],
                len: n[1],
                prot: n[2],
                prev_prot: n[3],
                pathname: &pathname,
            };
            let mut caller = Caller::new(HOST.into());
            let mut out = Vec::new();
            write_alert(&mut out, &e, caller.keys(&e.ctx), &a);
            let l = Line::parse(&out).unwrap();
            same_context(&l, &e.ctx);
            assert_eq!(l.event_name.get().as_deref(), Some(MEM_PROT_ALERT.name));
            assert_eq!(l.syscall.get().as_deref(), Some(e.def.name));
            assert_eq!(l.return_value.get(), Some(0));
            assert_eq!(l.duration.get(), Some(0));
            assert_eq!(
                l.stack_addresses.get(),
                Some(e.stack.as_ref().map_or(vec![], |s| s.addresses.clone()))
            );
            let args = l.args.clone().unwrap();
            assert_eq!(l.args_num.get(), Some(args.len() as u64));
            for ((read, def), value) in args.iter().zip(MEM_PROT_ALERT.args).zip(a.values()) {
                assert_eq!(read.name, def.name);
                let written = match value {
                    AlertValue::Text(t) => json!(t),
                    AlertValue::Pointer(p) => json!(format!("{p:#x}")),
                    // In the argument's type: a prot of -1 is an int32 -1, as Tracee's
                    // consumers parse it, whatever bits the call passed above it.
                    AlertValue::Number(v) => {
                        let kernel = def.kernel.cut(v);
                        assert_eq!(read.decoded, def.decoder.decode(kernel), "{}", def.name);
                        let full = def.beyond_type(def.ty.value(v), kernel);
                        assert_eq!(read.kernel_value, full, "{}", def.name);
                        match def.ty.value(v) {
                            ArgValue::Signed(v) => json!(v),
                            other => json!(other.bits()),
                        }
                    }
                };
                assert_eq!(read.value, written, "{}", def.name);
            }
        }
    }

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

    fn container_json(c: Container) -> serde_json::Value {
        let mut out = b"{\"a\":1".to_vec();
        write_container(&mut out, Some(&c));
        out.push(b'}');
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn container_keys_are_tracees_and_only_what_is_known() {
        use mmtrace_events::container::{Info, Runtime};
        const ID: &str = "54357e926e3f4f3c7a7582610943af8a52f494c2ee3ff0f213d32c4f7a368ecc";
        let bare = container_json(Container {
            id: ID.into(),
            runtime: Runtime::Podman,
            info: Info::default(),
        });
        assert_eq!(
            bare.to_string(),
            format!(
                r#"{{"a":1,"containerId":"{ID}","container":{{"id":"{ID}","runtime":"podman"}}}}"#
            )
        );
        let pod = container_json(Container {
            id: ID.into(),
            runtime: Runtime::Crio,
            info: Info {
                name: Some("app\u{1b}[31m".into()),
                image: Some("nginx:1.27".into()),
                image_digest: None,
                pod_name: Some("web-0".into()),
                pod_namespace: Some("shop".into()),
                pod_uid: None,
                pod_sandbox: true,
            },
        });
        assert_eq!(pod["container"]["name"], "app\u{1b}[31m");
        assert_eq!(pod["container"]["image"], "nginx:1.27");
        assert_eq!(
            pod["kubernetes"].to_string(),
            r#"{"podName":"web-0","podNamespace":"shop","podSandbox":true}"#
        );
        let mut none = Vec::new();
        write_container(&mut none, None);
        assert!(none.is_empty());
    }
}

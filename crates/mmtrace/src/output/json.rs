//! JSON lines with Tracee's keys in Tracee's order, then mmtrace's own additions.

use std::io::{self, Write};

use mmtrace_events::{ArgValue, Event};

use super::Sink;

pub struct JsonLines<W: Write> {
    out: W,
    host: String,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        JsonLines { out, host }
    }
}

/// A JSON string, escaped.
fn string(out: &mut impl Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::from)
}

/// Writes one event as a JSON object without a newline; shared by the sink and by tests.
pub fn write_event(out: &mut impl Write, e: &Event, host: &str) -> io::Result<()> {
    let c = &e.ctx;
    write!(
        out,
        "{{\"timestamp\":{},\"threadStartTime\":{},\"processorId\":{},\"processId\":{},\"cgroupId\":{},\
         \"threadId\":{},\"parentProcessId\":{},\"hostProcessId\":{},\"hostThreadId\":{},\
         \"hostParentProcessId\":{},\"userId\":{},\"mountNamespace\":{},\"pidNamespace\":{},\"processName\":",
        c.timestamp, c.thread_start, c.cpu, c.pid, c.cgroup_id, c.tid, c.ppid, c.host_pid, c.host_tid,
        c.host_ppid, c.uid, c.mnt_ns, c.pid_ns
    )?;
    string(out, &c.comm)?;
    out.write_all(b",\"executable\":{\"path\":\"\"},\"hostName\":")?;
    string(out, host)?;
    write!(
        out,
        ",\"containerId\":\"\",\"container\":{{}},\"kubernetes\":{{}},\"eventId\":\"{}\",\"eventName\":\"{}\",\
         \"matchedPolicies\":[],\"argsNum\":{},\"returnValue\":{},\"syscall\":\"{}\",\"stackAddresses\":[],\
         \"contextFlags\":{{\"containerStarted\":false,\"isCompat\":false}},\"threadEntityId\":0,\
         \"processEntityId\":0,\"parentEntityId\":0,\"args\":[",
        e.def.id,
        e.def.name,
        e.def.args.len(),
        e.ret,
        e.def.name
    )?;
    for (i, (def, value, decoded)) in e.args().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write!(
            out,
            "{{\"name\":\"{}\",\"type\":\"{}\",\"value\":",
            def.name,
            def.ty.tracee_name()
        )?;
        match value {
            ArgValue::Pointer(p) => write!(out, "\"{p:#x}\"")?,
            ArgValue::Unsigned(v) => write!(out, "{v}")?,
            ArgValue::Signed(v) => write!(out, "{v}")?,
        }
        if let Some(decoded) = decoded {
            out.write_all(b",\"decoded\":")?;
            string(out, &decoded)?;
        }
        out.write_all(b"}")?;
    }
    write!(out, "],\"duration\":{}", e.duration_ns)?;
    if let Some(err) = e.error_name() {
        write!(out, ",\"returnError\":\"{err}\"")?;
    }
    out.write_all(b"}")
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        write_event(&mut self.out, e, &self.host)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

//! JSON lines with Tracee's keys in Tracee's order, then mmtrace's own additions.

use std::io::{self, Write};

use mmtrace_events::{ArgValue, Event};

use super::Sink;

pub struct JsonLines<W: Write> {
    out: W,
    host: String,
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        JsonLines {
            out,
            host,
            line: Vec::with_capacity(1024),
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
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        self.extend_from_slice(b"\"0x");
        let width = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for i in (0..width).rev() {
            self.push(DIGITS[(v >> (i * 4)) as usize & 0xf]);
        }
        self.push(b'"');
    }
    fn string(&mut self, s: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self, s);
    }
}

/// Appends one event as a JSON object, without a newline.
pub fn write_event(out: &mut Vec<u8>, e: &Event, host: &str) {
    let c = &e.ctx;
    out.raw("{\"timestamp\":");
    out.uint(c.timestamp);
    out.raw(",\"threadStartTime\":");
    out.uint(c.thread_start);
    out.raw(",\"processorId\":");
    out.uint(c.cpu.into());
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
    out.string(&c.comm);
    out.raw(",\"executable\":{\"path\":\"\"},\"hostName\":");
    out.string(host);
    out.raw(",\"containerId\":\"\",\"container\":{},\"kubernetes\":{},\"eventId\":\"");
    out.uint(e.def.id.into());
    out.raw("\",\"eventName\":\"");
    out.raw(e.def.name);
    out.raw("\",\"matchedPolicies\":[],\"argsNum\":");
    out.uint(e.def.args.len() as u64);
    out.raw(",\"returnValue\":");
    out.int(e.ret);
    out.raw(",\"syscall\":\"");
    out.raw(e.def.name);
    out.raw(
        "\",\"stackAddresses\":[],\"contextFlags\":{\"containerStarted\":false,\"isCompat\":false},\
         \"threadEntityId\":0,\"processEntityId\":0,\"parentEntityId\":0,\"args\":[",
    );
    for (i, (def, value, decoded)) in e.args().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.raw("{\"name\":\"");
        out.raw(def.name);
        out.raw("\",\"type\":\"");
        out.raw(def.ty.tracee_name());
        out.raw("\",\"value\":");
        match value {
            ArgValue::Pointer(p) => out.hex(p),
            ArgValue::Unsigned(v) => out.uint(v),
            ArgValue::Signed(v) => out.int(v),
        }
        if let Some(decoded) = decoded {
            out.raw(",\"decoded\":");
            out.string(&decoded);
        }
        out.push(b'}');
    }
    out.raw("],\"duration\":");
    out.uint(e.duration_ns);
    if let Some(err) = e.error_name() {
        out.raw(",\"returnError\":");
        out.string(&err);
    }
    out.push(b'}');
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.line.clear();
        write_event(&mut self.line, e, &self.host);
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn flush(&mut self) -> io::Result<()> {
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

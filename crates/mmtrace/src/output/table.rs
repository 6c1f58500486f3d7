//! An aligned, strace-like table for reading in a terminal.

use std::io::{self, Write};

use mmtrace_events::decode::Decoder;
use mmtrace_events::enrich;
use mmtrace_events::{ArgValue, Event};

use super::Sink;

pub struct Table<W: Write> {
    out: W,
    header_done: bool,
    clock: TimeOfDay,
    row: String,
}

impl<W: Write> Table<W> {
    pub fn new(out: W) -> Self {
        Table {
            out,
            header_done: false,
            clock: TimeOfDay::default(),
            row: String::with_capacity(256),
        }
    }
}

/// Local wall-clock time of day with microseconds. localtime_r costs more than the rest of a
/// row, so its result is kept for the second it describes: a storm of a million events a
/// second otherwise outruns the reader.
#[derive(Default)]
struct TimeOfDay {
    second: u64,
    hms: String,
}

impl TimeOfDay {
    fn format(&mut self, epoch_ns: u64) -> String {
        let second = epoch_ns / 1_000_000_000;
        if second != self.second || self.hms.is_empty() {
            let secs = second as libc::time_t;
            // SAFETY: localtime_r only writes the tm we hand it.
            let tm = unsafe {
                let mut tm: libc::tm = std::mem::zeroed();
                libc::localtime_r(&secs, &mut tm);
                tm
            };
            self.second = second;
            self.hms = format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
        }
        format!("{}.{:06}", self.hms, epoch_ns % 1_000_000_000 / 1000)
    }
}

/// A duration at a readable scale: 850ns, 12.3us, 4.56ms, 1.20s.
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// `munmap(addr=0x10000, length=4096) = 0` or `... = -22 EINVAL`.
pub fn call_text(e: &Event) -> String {
    let mut s = String::with_capacity(96);
    s.push_str(e.def.name);
    s.push('(');
    for (i, (def, value, decoded)) in e.args().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(def.name);
        s.push('=');
        match (decoded, value) {
            (Some(d), _) => s.push_str(&d),
            (None, ArgValue::Pointer(p)) => s.push_str(&format!("{p:#x}")),
            (None, ArgValue::Unsigned(v)) => s.push_str(&v.to_string()),
            (None, ArgValue::Signed(v)) => s.push_str(&v.to_string()),
        }
    }
    s.push(')');
    if e.def.ret == mmtrace_events::RetKind::None {
        return s;
    }
    s.push_str(" = ");
    match (e.error_name(), e.def.ret) {
        (Some(err), _) => s.push_str(&format!("{} {err}", e.ret)),
        (None, mmtrace_events::RetKind::Address | mmtrace_events::RetKind::Break) => {
            s.push_str(&format!("{:#x}", e.ret))
        }
        (None, _) => s.push_str(&e.ret.to_string()),
    }
    s
}

/// 12KiB, 64.0MiB: binary units, as VmLck and RLIMIT_MEMLOCK are.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match v.fract() == 0.0 {
        true => format!("{v:.0}{}", UNITS[unit]),
        false => format!("{v:.1}{}", UNITS[unit]),
    }
}

/// `  [target 1234 (victim) freed 61.0MiB]`: what mmtrace knows beyond the call itself.
pub fn enrichment_text(e: &Event) -> String {
    let Some(x) = &e.enrich else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = &x.target {
        let ns = if t.pid != t.host_pid {
            format!(" ns {}", t.pid)
        } else {
            String::new()
        };
        let comm = if t.comm.is_empty() {
            "gone".to_string()
        } else {
            t.comm.clone()
        };
        parts.push(format!("target {}{ns} ({comm})", t.host_pid));
    }
    if let (Some(freed), Some(before)) = (x.freed_bytes(), x.rss_before) {
        parts.push(format!(
            "freed {} of {}",
            human_bytes(freed),
            human_bytes(before.total())
        ));
    }
    if let Some(m) = &x.mapping {
        let mut on = format!(
            "on {} {}",
            m.kind.name(),
            Decoder::Prot.decode(m.prot).unwrap_or_default()
        );
        if let Some(path) = &m.path {
            on.push(' ');
            on.push_str(path);
        }
        parts.push(on);
    }
    if let Some(n) = x.unlocked_bytes.filter(|&n| n > 0) {
        parts.push(format!("unlocked {}", human_bytes(n)));
    }
    if let Some(l) = &x.locked {
        let limit = l.limit_bytes.map_or("unlimited".to_string(), human_bytes);
        let cap = if l.cap_ipc_lock { ", CAP_IPC_LOCK" } else { "" };
        parts.push(format!(
            "locked {}/{limit}{cap}",
            human_bytes(l.locked_bytes)
        ));
    }
    if let Some(why) = enrich::failure_reason(e) {
        parts.push(why.to_string());
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!("  [{}]", parts.join("; ")),
    }
}

impl<W: Write> Sink for Table<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        if !self.header_done {
            writeln!(
                self.out,
                "{:<15} {:<16} {:>15} {:>9}  CALL",
                "TIME", "COMM", "PID/TID", "DURATION"
            )?;
            self.header_done = true;
        }
        let c = &e.ctx;
        let time = self.clock.format(c.timestamp);
        let who = format!("{}/{}", c.host_pid, c.host_tid);
        // One write per row: the writer's per-call overhead adds up at these rates.
        self.row.clear();
        use std::fmt::Write as _;
        let _ = writeln!(
            self.row,
            "{time:<15} {:<16} {who:>15} {:>9}  {}{}",
            c.comm,
            // A kernel event is an instant: no duration to show.
            if e.def.ret == mmtrace_events::RetKind::None {
                String::new()
            } else {
                human_duration(e.duration_ns)
            },
            call_text(e),
            enrichment_text(e)
        );
        if let Some((alert, _)) = enrich::alert(e) {
            let _ = writeln!(
                self.row,
                "{time:<15} {:<16} {who:>15} {:>9}  mem_prot_alert: {}",
                c.comm,
                "",
                alert.text()
            );
        }
        self.out.write_all(self.row.as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(12 << 10), "12KiB");
        assert_eq!(human_bytes(64 << 20), "64MiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_345), "12.3us");
        assert_eq!(human_duration(4_560_000), "4.56ms");
        assert_eq!(human_duration(1_200_000_000), "1.20s");
    }
}

//! An aligned, strace-like table for reading in a terminal.

use std::io::{self, Write};

use mmtrace_events::{ArgValue, Event};

use super::Sink;

pub struct Table<W: Write> {
    out: W,
    header_done: bool,
}

impl<W: Write> Table<W> {
    pub fn new(out: W) -> Self {
        Table {
            out,
            header_done: false,
        }
    }
}

/// Local wall-clock time of day with microseconds.
fn time_of_day(epoch_ns: u64) -> String {
    let secs = (epoch_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r only writes the tm we hand it.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        epoch_ns % 1_000_000_000 / 1000
    )
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
    s.push_str(") = ");
    match (e.error_name(), e.def.ret) {
        (Some(err), _) => s.push_str(&format!("{} {err}", e.ret)),
        (None, mmtrace_events::RetKind::Address | mmtrace_events::RetKind::Break) => {
            s.push_str(&format!("{:#x}", e.ret))
        }
        (None, _) => s.push_str(&e.ret.to_string()),
    }
    s
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
        writeln!(
            self.out,
            "{:<15} {:<16} {:>15} {:>9}  {}",
            time_of_day(c.timestamp),
            c.comm,
            format!("{}/{}", c.host_pid, c.host_tid),
            human_duration(e.duration_ns),
            call_text(e)
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_345), "12.3us");
        assert_eq!(human_duration(4_560_000), "4.56ms");
        assert_eq!(human_duration(1_200_000_000), "1.20s");
    }
}

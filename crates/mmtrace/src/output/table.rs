//! An aligned, strace-like table for reading in a terminal.
//!
//! Rows are built in place, field by field, rather than through `format!` and temporary
//! strings: at half a million events a second those made the table fall behind the ring and
//! lose events.

use std::fmt::Write as _;
use std::io::{self, Write};

use mmtrace_events::decode::Decoder;
use mmtrace_events::enrich::{self, ProtAlert};
use mmtrace_events::{ArgValue, Event, RetKind};

use super::{hex_digits, Sink, WRITE_BYTES};

pub struct Table<W: Write> {
    out: W,
    header_done: bool,
    clock: TimeOfDay,
    /// Whole rows not written yet.
    rows: String,
}

impl<W: Write> Table<W> {
    pub fn new(out: W) -> Self {
        Table {
            out,
            header_done: false,
            clock: TimeOfDay::default(),
            rows: String::with_capacity(2 * WRITE_BYTES),
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
    fn write(&mut self, out: &mut String, epoch_ns: u64) {
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
        out.push_str(&self.hms);
        out.push('.');
        zero_padded(out, epoch_ns % 1_000_000_000 / 1000, 6);
    }
}

fn uint(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

fn int(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// `v` in at least `width` digits (up to 6), as `{v:0width$}`.
fn zero_padded(out: &mut String, v: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(v);
    out.push_str(&"000000"[..width.saturating_sub(digits.len())]);
    out.push_str(digits);
}

/// `0x7f00dead`, as `{v:#x}`.
fn hex(out: &mut String, v: u64) {
    out.push_str("0x");
    out.extend(hex_digits(v, &mut [0; 16]).iter().map(|&d| char::from(d)));
}

/// Enough for the widest column.
const SPACES: &str = "                ";

/// Pads what was written since `start` with spaces after it, as `{:<width$}`.
fn align_left(out: &mut String, start: usize, width: usize) {
    let written = out[start..].chars().count();
    out.push_str(&SPACES[..width.saturating_sub(written)]);
}

/// Pads what was written since `start` with spaces before it, as `{:>width$}`.
fn align_right(out: &mut String, start: usize, width: usize) {
    let written = out[start..].chars().count();
    out.insert_str(start, &SPACES[..width.saturating_sub(written)]);
}

/// A duration at a readable scale: 850ns, 12.3us, 4.56ms, 1.20s.
fn write_duration(out: &mut String, ns: u64) {
    match ns {
        0..1_000 => {
            uint(out, ns);
            out.push_str("ns");
        }
        1_000..1_000_000 => rounded(out, ns, 1_000, 1, "us"),
        1_000_000..1_000_000_000 => rounded(out, ns, 1_000_000, 2, "ms"),
        // Past 2^53 ns the f64 itself is rounded: leave it all to the float formatting.
        _ => {
            let _ = write!(out, "{:.2}s", ns as f64 / 1e9);
        }
    }
}

/// `n / unit` with `decimals` digits after the point, as `{:.decimals$}` of the f64 quotient
/// writes it, in integers. Float formatting cost more than the rest of a row.
fn rounded(out: &mut String, n: u64, unit: u64, decimals: u32, suffix: &str) {
    let scale = 10u64.pow(decimals);
    let step = unit / scale;
    let (steps, rest) = (n / step, n % step);
    if 2 * rest == step {
        // Halfway in decimal is not halfway in binary: the f64 rounds one way or the other.
        let _ = write!(
            out,
            "{:.*}{suffix}",
            decimals as usize,
            n as f64 / unit as f64
        );
        return;
    }
    let steps = steps + u64::from(2 * rest > step);
    uint(out, steps / scale);
    out.push('.');
    zero_padded(out, steps % scale, decimals as usize);
    out.push_str(suffix);
}

/// 12KiB, 64.0MiB: binary units, as VmLck and RLIMIT_MEMLOCK are.
fn write_bytes(out: &mut String, n: u64) {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        uint(out, n);
        out.push('B');
        return;
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // Whole sizes are the common ones (limits, pages): print them as integers, which they are.
    match v.fract() == 0.0 {
        true => uint(out, v as u64),
        false => {
            let _ = write!(out, "{v:.1}");
        }
    }
    out.push_str(UNITS[unit]);
}

/// `munmap(addr=0x10000, length=4096) = 0` or `... = -22 EINVAL`.
fn write_call(out: &mut String, e: &Event) {
    out.push_str(e.def.name);
    out.push('(');
    for (i, (def, value)) in e.args().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(def.name);
        out.push('=');
        if def.decoder.write(value.bits(), out) != Ok(true) {
            match value {
                ArgValue::Pointer(p) => hex(out, p),
                ArgValue::Unsigned(v) => uint(out, v),
                ArgValue::Signed(v) => int(out, v),
                ArgValue::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            }
        }
    }
    out.push(')');
    if e.def.ret == RetKind::None {
        return;
    }
    out.push_str(" = ");
    match (e.error_name(), e.def.ret) {
        (Some(err), _) => {
            int(out, e.ret);
            out.push(' ');
            out.push_str(&err);
        }
        (None, RetKind::Address | RetKind::Break) => hex(out, e.ret as u64),
        (None, _) => int(out, e.ret),
    }
}

/// `  [target 1234 (victim) freed 61.0MiB]`: what mmtrace knows beyond the call itself.
fn write_enrichment(out: &mut String, e: &Event) {
    let Some(x) = &e.enrich else {
        return;
    };
    let start = out.len();
    let part = |out: &mut String| out.push_str(if out.len() == start { "  [" } else { "; " });
    if let Some(t) = &x.target {
        part(out);
        out.push_str("target ");
        uint(out, t.host_pid.into());
        if t.pid != t.host_pid {
            out.push_str(" ns ");
            uint(out, t.pid.into());
        }
        out.push_str(" (");
        out.push_str(if t.comm.is_empty() { "gone" } else { &t.comm });
        out.push(')');
    }
    if let (Some(freed), Some(before)) = (x.freed_bytes(), x.rss_before) {
        part(out);
        out.push_str("freed ");
        write_bytes(out, freed);
        out.push_str(" of ");
        write_bytes(out, before.total());
    }
    if let Some(m) = &x.mapping {
        part(out);
        out.push_str("on ");
        out.push_str(m.kind.name());
        out.push(' ');
        let _ = Decoder::Prot.write(m.prot, out);
        if let Some(path) = &m.path {
            out.push(' ');
            out.push_str(path);
        }
    }
    if let Some(n) = x.unlocked_bytes.filter(|&n| n > 0) {
        part(out);
        out.push_str("unlocked ");
        write_bytes(out, n);
    }
    if let Some(l) = &x.locked {
        part(out);
        out.push_str("locked ");
        write_bytes(out, l.locked_bytes);
        out.push('/');
        match l.limit_bytes {
            Some(limit) => write_bytes(out, limit),
            None => out.push_str("unlimited"),
        }
        if l.cap_ipc_lock {
            out.push_str(", CAP_IPC_LOCK");
        }
    }
    if let Some(why) = enrich::failure_reason(e) {
        part(out);
        out.push_str(why);
    }
    if out.len() > start {
        out.push(']');
    }
}

impl<W: Write> Table<W> {
    /// TIME, COMM and PID/TID, each with the space after it.
    fn who(&mut self, e: &Event) {
        let c = &e.ctx;
        let out = &mut self.rows;
        let start = out.len();
        self.clock.write(out, c.timestamp);
        align_left(out, start, 15);
        out.push(' ');
        let start = out.len();
        out.push_str(&c.comm);
        align_left(out, start, 16);
        out.push(' ');
        let start = out.len();
        uint(out, c.host_pid.into());
        out.push('/');
        uint(out, c.host_tid.into());
        align_right(out, start, 15);
        out.push(' ');
    }
}

impl<W: Write> Table<W> {
    fn write_if_full(&mut self) -> io::Result<()> {
        if self.rows.len() >= WRITE_BYTES {
            self.out.write_all(self.rows.as_bytes())?;
            self.rows.clear();
        }
        Ok(())
    }
}

impl<W: Write> Sink for Table<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        if !self.header_done {
            let _ = writeln!(
                self.rows,
                "{:<15} {:<16} {:>15} {:>9}  CALL",
                "TIME", "COMM", "PID/TID", "DURATION"
            );
            self.header_done = true;
        }
        self.who(e);
        let start = self.rows.len();
        // A kernel event is an instant: no duration to show.
        if e.def.ret != RetKind::None {
            write_duration(&mut self.rows, e.duration_ns);
        }
        align_right(&mut self.rows, start, 9);
        self.rows.push_str("  ");
        write_call(&mut self.rows, e);
        write_enrichment(&mut self.rows, e);
        self.rows.push('\n');
        self.write_if_full()
    }

    fn alert(&mut self, e: &Event, alert: &ProtAlert) -> io::Result<()> {
        self.who(e);
        let start = self.rows.len();
        align_right(&mut self.rows, start, 9);
        self.rows.push_str("  mem_prot_alert: ");
        self.rows.push_str(alert.alert.text());
        self.rows.push('\n');
        self.write_if_full()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(self.rows.as_bytes())?;
        self.rows.clear();
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        write(&mut out);
        out
    }

    #[test]
    fn bytes() {
        let bytes = |n| text(|out| write_bytes(out, n));
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(12 << 10), "12KiB");
        assert_eq!(bytes(64 << 20), "64MiB");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(u64::MAX), "16777216TiB");
    }

    #[test]
    fn durations() {
        let duration = |ns| text(|out| write_duration(out, ns));
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_345), "12.3us");
        assert_eq!(duration(4_560_000), "4.56ms");
        assert_eq!(duration(1_200_000_000), "1.20s");
    }

    /// The integer rounding writes what `{:.1}` and `{:.2}` of the f64 wrote, ties included.
    #[test]
    fn durations_round_as_floats_do() {
        let float = |ns: u64| match ns {
            1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
            _ => format!("{:.2}ms", ns as f64 / 1e6),
        };
        let samples = (1_000..200_000)
            .chain((999_000..1_001_000).step_by(7))
            .chain((1_000_000..999_999_999).step_by(4_999))
            .chain([999_950, 999_999, 2_345_000, 999_995_000, 999_999_999]);
        for ns in samples {
            assert_eq!(text(|out| write_duration(out, ns)), float(ns), "{ns}");
        }
    }

    #[test]
    fn alignment_counts_characters() {
        let left = text(|out| {
            out.push_str("défi");
            align_left(out, 0, 6);
        });
        assert_eq!(left, format!("{:<6}", "défi"));
        let right = text(|out| {
            out.push('x');
            out.push_str("12/34");
            align_right(out, 1, 8);
        });
        assert_eq!(right, format!("x{:>8}", "12/34"));
    }
}

//! An aligned, strace-like table for reading in a terminal: one event per line, as wide as
//! the terminal at most.
//!
//! Rows are built in place, field by field, rather than through `format!` and temporary
//! strings: at half a million events a second those made the table fall behind the ring and
//! lose events. A row too wide loses details, the least telling first (`Rank`), and says so
//! with `...`; the JSON output keeps everything. What traced processes chose is escaped, so
//! every row is ASCII and a byte is a column.

use std::fmt::Write as _;
use std::io::{self, Write};

use mmtrace_events::container::short_id;
use mmtrace_events::decode::Decoder;
use mmtrace_events::derived::{self, ProtAlert};
use mmtrace_events::text::escape_into;
use mmtrace_events::{ArgDef, ArgRole, ArgValue, Event, RetKind};

use super::{hex_digits, Sink, WRITE_BYTES};
use crate::units::{uint, write_bytes, write_duration, zero_padded};

/// The width of a table that goes to a file or a pipe, as most terminals open.
pub const DEFAULT_COLUMNS: usize = 120;
/// Narrower than this, even the name and the call do not fit: rows are cut then.
const MIN_COLUMNS: usize = 40;
/// Narrower than this, rows leave out the time of day, as strace's do by default: at 80
/// columns the time would leave a call too little room to show its range.
const NARROW: usize = 100;

/// How wide rows may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Columns(usize),
    /// As wide as standard output's terminal, asked again at each flush so that a resized
    /// window gets rows of its new width.
    Terminal,
}

/// The columns of standard output's terminal, if it is one.
fn terminal_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes one winsize into the one we hand it.
    let ws = unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0).then_some(ws)
    };
    ws.map(|ws| usize::from(ws.ws_col)).filter(|&c| c > 0)
}

impl Width {
    fn columns(self) -> usize {
        match self {
            Width::Columns(n) => n,
            Width::Terminal => terminal_columns().unwrap_or(DEFAULT_COLUMNS),
        }
        .max(MIN_COLUMNS)
    }
}

/// How readily a detail leaves a row that does not fit: the higher, the sooner. What a reader
/// recognises the call by stays longest: the container that made it, the range and sizes,
/// then what names what it did (protections, flags, advice, signals, a pidfd's target,
/// memory freed, the file touched); then other numbers and an anonymous mapping, then bare
/// addresses; zeros go early, and explanations in words first (`mmtrace explain` has them).
/// Among equals the earlier in the row stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// The container that made the call: with the columns before the call, who made it.
    Who,
    Range,
    Named,
    Amount,
    Place,
    Zero,
    Words,
}

/// An argument or a part of what mmtrace adds, where the row being built holds it.
#[derive(Debug, Clone, Copy)]
struct Detail {
    start: usize,
    end: usize,
    rank: Rank,
    /// An argument, inside the parentheses; else a part inside `[...]`.
    arg: bool,
    /// The part of it that `...` may stand for before it has to go: a path's folders.
    cut: Option<(usize, usize)>,
}

impl Detail {
    fn len(&self, cut: bool) -> usize {
        match (cut, self.cut) {
            (true, Some((from, to))) => self.end - self.start - (to - from) + "...".len(),
            _ => self.end - self.start,
        }
    }

    fn write(&self, row: &str, cut: bool, out: &mut String) {
        match (cut, self.cut) {
            (true, Some((from, to))) => {
                out.push_str(&row[self.start..from]);
                out.push_str("...");
                out.push_str(&row[to..self.end]);
            }
            _ => out.push_str(&row[self.start..self.end]),
        }
    }
}

/// Where the pieces of the row being built are, so that it can be put together again
/// without some details.
struct Layout {
    /// Where the call's name starts.
    call_at: usize,
    /// Just after `name(`.
    args_at: usize,
    /// At the `)`.
    args_end: usize,
    /// Just after the result.
    call_end: usize,
}

pub struct Table<W: Write> {
    out: W,
    width: Width,
    columns: usize,
    clock: TimeOfDay,
    /// The local day the last header named.
    day: Option<i64>,
    /// Whole rows not written yet.
    rows: String,
    /// The details of the row being built.
    details: Vec<Detail>,
    /// Where a row too wide is put together again.
    scratch: String,
}

impl<W: Write> Table<W> {
    pub fn new(out: W, width: Width) -> Self {
        Table {
            out,
            width,
            columns: width.columns(),
            clock: TimeOfDay::default(),
            day: None,
            rows: String::with_capacity(2 * WRITE_BYTES),
            details: Vec::with_capacity(16),
            scratch: String::new(),
        }
    }
}

/// Local wall-clock time of day with microseconds, and the date. localtime_r costs more than
/// the rest of a row, so its result is kept for the second it describes: a storm of a million
/// events a second otherwise outruns the reader.
#[derive(Default)]
struct TimeOfDay {
    second: u64,
    hms: String,
    date: String,
    /// Tells days apart: year and day of the year.
    day: i64,
}

impl TimeOfDay {
    fn update(&mut self, epoch_ns: u64) {
        let second = epoch_ns / 1_000_000_000;
        if second != self.second || self.hms.is_empty() {
            // SAFETY: localtime_r only writes the tm we hand it.
            let tm = unsafe {
                let mut tm: libc::tm = std::mem::zeroed();
                // The type localtime_r takes, unnamed: musl's libc crate deprecates the name.
                let secs = second as _;
                libc::localtime_r(&secs, &mut tm);
                tm
            };
            self.second = second;
            self.hms = format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
            let day = i64::from(tm.tm_year) * 366 + i64::from(tm.tm_yday);
            if day != self.day || self.date.is_empty() {
                self.day = day;
                self.date = format!(
                    "{}-{:02}-{:02}",
                    i64::from(tm.tm_year) + 1900,
                    tm.tm_mon + 1,
                    tm.tm_mday
                );
            }
        }
    }

    /// The time of day of `epoch_ns`, which `update` was last given.
    fn write(&self, out: &mut String, epoch_ns: u64) {
        out.push_str(&self.hms);
        out.push('.');
        zero_padded(out, epoch_ns % 1_000_000_000 / 1000, 6);
    }
}

fn int(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
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

/// One argument's value, with how telling it is: names before numbers, sizes in one style.
/// Names and numbers are the kernel's: where Tracee's type cuts the value short, the number
/// is the one the kernel received.
fn write_arg(out: &mut String, def: &ArgDef, value: ArgValue, kernel: u64) -> Rank {
    let start = out.len();
    if def.decoder.write(kernel, out) == Ok(true) {
        // Flags with no bit set read 0x0: nothing to tell either.
        return match &out[start..] {
            "0x0" => Rank::Zero,
            _ => Rank::Named,
        };
    }
    if let Some(n) = def.bytes(value.bits()) {
        write_bytes(out, n);
        return if n == 0 { Rank::Zero } else { Rank::Amount };
    }
    if let Some(full) = def.beyond_type(value, kernel) {
        uint(out, full);
        // No descriptor: the kernel takes an fd's low 32 bits, whatever libc sent above them.
        return match (def.name, full as i32) {
            ("fd", -1) => Rank::Zero,
            _ => Rank::Amount,
        };
    }
    match value {
        ArgValue::Pointer(p) => {
            hex(out, p);
            return if p == 0 { Rank::Zero } else { Rank::Place };
        }
        ArgValue::Unsigned(v) => uint(out, v),
        ArgValue::Signed(v) => int(out, v),
        ArgValue::Bool(b) => out.push_str(if b { "true" } else { "false" }),
    }
    // No offset, no flags, no descriptor (fd=-1 of an anonymous mmap): nothing to tell. A pid
    // of 0 or -1 is a process group or every process: much to tell.
    match (def.name, value.bits() as i64) {
        ("pid", _) => Rank::Amount,
        (_, 0) | ("fd", -1) => Rank::Zero,
        _ => Rank::Amount,
    }
}

/// `munmap(addr=0x10000, length=4KiB) = 0` or `... = -22 EINVAL`, then what mmtrace adds.
fn write_call(out: &mut String, details: &mut Vec<Detail>, e: &Event) -> Layout {
    let call_at = out.len();
    out.push_str(e.def.name);
    out.push('(');
    let args_at = out.len();
    for (def, value, kernel) in e.args() {
        if !details.is_empty() {
            out.push_str(", ");
        }
        let start = out.len();
        out.push_str(def.name);
        out.push('=');
        let mut rank = write_arg(out, def, value, kernel);
        let range = matches!(def.role, ArgRole::Start | ArgRole::Size | ArgRole::NewSize);
        if range && rank != Rank::Zero {
            rank = Rank::Range;
        }
        details.push(Detail {
            start,
            end: out.len(),
            rank,
            arg: true,
            cut: None,
        });
    }
    let args_end = out.len();
    out.push(')');
    if e.def.ret != RetKind::None {
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
    let call_end = out.len();
    write_enrichment(out, details, e);
    Layout {
        call_at,
        args_at,
        args_end,
        call_end,
    }
}

/// `  [container 54357e926e3f; target 1234 (victim); freed 61MiB of 64MiB]`: what mmtrace
/// knows beyond the call.
fn write_enrichment(out: &mut String, details: &mut Vec<Detail>, e: &Event) {
    let container = e.ctx.container.as_ref().map(|c| short_id(&c.id));
    // With --stack, the code that made the call: libc's wrapper is not what a user is after.
    let caller = e
        .stack
        .as_ref()
        .and_then(|s| s.frames.iter().find(|f| !f.in_libc()));
    if e.enrich.is_none() && container.is_none() && caller.is_none() {
        return;
    }
    let open = out.len();
    // `path`: a file's path the part ends with, whose folders `...` may stand for: its
    // name tells more than they do.
    let mut part =
        |out: &mut String, rank: Rank, path: Option<&[u8]>, write: &dyn Fn(&mut String)| {
            out.push_str(if out.len() == open { "  [" } else { "; " });
            let start = out.len();
            write(out);
            let end = out.len();
            let cut = path.and_then(|path| {
                let path_at = end - escaped_len(path);
                let name_at = path_at + out[path_at..end].rfind('/')?;
                (name_at > path_at).then_some((path_at, name_at))
            });
            details.push(Detail {
                start,
                end,
                rank,
                arg: false,
                cut,
            });
        };
    if let Some(f) = caller {
        part(out, Rank::Named, None, &|out| {
            out.push_str("at ");
            escape_into(out, f.short().as_bytes());
        });
    }
    if let Some(id) = &container {
        part(out, Rank::Who, None, &|out| {
            out.push_str("container ");
            escape_into(out, id.as_bytes());
        });
    }
    let Some(x) = &e.enrich else {
        out.push(']');
        return;
    };
    if let Some(t) = &x.target {
        part(out, Rank::Named, None, &|out| {
            out.push_str("target ");
            uint(out, t.host_pid.into());
            if t.pid != t.host_pid {
                out.push_str(" ns ");
                uint(out, t.pid.into());
            }
            out.push_str(" (");
            match t.comm.is_empty() {
                true => out.push_str("gone"),
                false => escape_into(out, t.comm.as_bytes()),
            }
            out.push(')');
        });
    }
    if let (Some(freed), Some(before)) = (x.freed_bytes(), x.rss_before) {
        part(out, Rank::Named, None, &|out| {
            out.push_str("freed ");
            write_bytes(out, freed);
            out.push_str(" of ");
            write_bytes(out, before.total());
        });
    }
    if let Some(m) = &x.mapping {
        let path = m.path.as_ref().map(|p| p.as_bytes());
        // A file or a named mapping tells more than a number does.
        let rank = match m.path.as_ref().or(m.name.as_ref()) {
            Some(_) => Rank::Named,
            None => Rank::Amount,
        };
        part(out, rank, path, &|out| {
            out.push_str("on ");
            out.push_str(m.kind.name());
            if !m.kind.is_bare() {
                out.push(' ');
                let _ = Decoder::Prot.write(m.prot, out);
            }
            if let Some(path) = m.path.as_ref().or(m.name.as_ref()) {
                out.push(' ');
                escape_into(out, path.as_bytes());
            }
        });
    }
    if let Some(n) = x.unlocked_bytes.filter(|&n| n > 0) {
        part(out, Rank::Amount, None, &|out| {
            out.push_str("unlocked ");
            write_bytes(out, n);
        });
    }
    if let Some(l) = &x.locked {
        part(out, Rank::Amount, None, &|out| {
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
        });
    }
    if let Some(l) = &x.oom_limit {
        part(out, Rank::Named, None, &|out| {
            out.push_str("limit ");
            out.push_str(l.scope());
            if let Some(cgroup) = &l.cgroup {
                out.push(' ');
                escape_into(out, cgroup.as_bytes());
            }
            if let (Some(usage), Some(limit)) = (l.usage_bytes, l.limit_bytes) {
                out.push(' ');
                write_bytes(out, usage);
                out.push('/');
                write_bytes(out, limit);
            }
        });
    }
    if let Some(why) = derived::failure_reason(e) {
        part(out, Rank::Words, None, &|out| out.push_str(why));
    }
    if out.len() > open {
        out.push(']');
    }
}

/// How many bytes `escape_into` writes for `bytes`.
fn escaped_len(bytes: &[u8]) -> usize {
    let mut text = String::new();
    escape_into(&mut text, bytes);
    text.len()
}

/// The width of the row of `layout` with only the details `keep` marks, paths `cut` or whole.
fn width_with(layout: &Layout, details: &[Detail], keep: u32, cut: bool) -> usize {
    let (mut args, mut args_len, mut dropped, mut parts, mut parts_len) = (0, 0, false, 0, 0);
    for (i, d) in details.iter().enumerate() {
        match (d.arg, keep & 1 << i != 0) {
            (true, true) => (args, args_len) = (args + 1, args_len + d.len(cut)),
            (true, false) => dropped = true,
            (false, true) => (parts, parts_len) = (parts + 1, parts_len + d.len(cut)),
            (false, false) => {}
        }
    }
    let commas = |n: usize| 2 * n.saturating_sub(1);
    let elided = match (dropped, args) {
        (false, _) => 0,
        (true, 0) => "...".len(),
        (true, _) => ", ...".len(),
    };
    let added = match parts {
        0 => 0,
        n => "  [".len() + parts_len + commas(n) + "]".len(),
    };
    (layout.args_at - layout.call_at)
        + args_len
        + commas(args)
        + elided
        + (layout.call_end - layout.args_end)
        + added
}

/// Cuts the row from `row` on to `columns`, marking the cut: only when even the fixed part of
/// a row does not fit a very narrow terminal.
fn clip(out: &mut String, row: usize, columns: usize) {
    if out.len() - row > columns {
        out.truncate(out.floor_char_boundary(row + columns - "...".len()));
        out.push_str("...");
    }
}

impl<W: Write> Table<W> {
    fn narrow(&self) -> bool {
        self.columns < NARROW
    }

    /// The header, with the date the times below it are of.
    fn header(&mut self) {
        let row = self.rows.len();
        let _ = match self.narrow() {
            true => write!(
                self.rows,
                "{:<15} {:>7} {:>8} CALL ({})",
                "COMM", "TID", "DURATION", self.clock.date
            ),
            false => write!(
                self.rows,
                "{:<15} {:<15} {:>11} {:>8} CALL",
                self.clock.date, "COMM", "PID/TID", "DURATION"
            ),
        };
        clip(&mut self.rows, row, self.columns);
        self.rows.push('\n');
    }

    /// TIME, COMM, PID/TID (the pid alone when the thread is the main one) and DURATION, each
    /// with the space after it; narrow, COMM, TID and DURATION.
    fn who(&mut self, e: &Event, duration: Option<u64>) {
        let c = &e.ctx;
        let narrow = self.narrow();
        let out = &mut self.rows;
        if !narrow {
            let start = out.len();
            self.clock.write(out, c.timestamp);
            align_left(out, start, 15);
            out.push(' ');
        }
        let start = out.len();
        escape_into(out, c.comm.as_bytes());
        align_left(out, start, 15);
        out.push(' ');
        let start = out.len();
        // Narrow, the thread alone, as strace -f shows it: the process's own is its pid.
        match narrow {
            true => uint(out, c.host_tid.into()),
            false => {
                uint(out, c.host_pid.into());
                if c.host_tid != c.host_pid {
                    out.push('/');
                    uint(out, c.host_tid.into());
                }
            }
        }
        align_right(out, start, if narrow { 7 } else { 11 });
        out.push(' ');
        let start = out.len();
        if let Some(ns) = duration {
            write_duration(out, ns);
        }
        align_right(out, start, 8);
        out.push(' ');
    }

    /// Puts the call of `layout`, in the row that starts at `row`, together again without the
    /// least telling details until the row fits.
    fn fit(&mut self, row: usize, layout: &Layout) {
        let columns = self.columns.saturating_sub(layout.call_at - row);
        if self.rows.len() - layout.call_at <= columns {
            return;
        }
        let details = &self.details;
        let mut keep: u32 = (1 << details.len()) - 1;
        // A path loses its folders before it goes, and before any argument does.
        let mut cut = false;
        while width_with(layout, details, keep, cut) > columns {
            // The least telling of those left, the last in the row among equals.
            let Some(drop) = (0..details.len())
                .filter(|&i| keep & 1 << i != 0)
                .max_by_key(|&i| (details[i].rank, i))
            else {
                break;
            };
            if !cut && (details[drop].arg || details[drop].cut.is_some()) {
                cut = details.iter().any(|d| d.cut.is_some());
                if cut {
                    continue;
                }
            }
            keep &= !(1 << drop);
        }
        // A long detail that had to go can leave room for shorter ones dropped before it;
        // zeros are not worth the room.
        let mut dropped: Vec<usize> = (0..details.len())
            .filter(|&i| keep & 1 << i == 0 && details[i].rank != Rank::Zero)
            .collect();
        dropped.sort_by_key(|&i| (details[i].rank, i));
        for i in dropped {
            if width_with(layout, details, keep | 1 << i, cut) <= columns {
                keep |= 1 << i;
            }
        }
        let (rows, out) = (&self.rows, &mut self.scratch);
        out.clear();
        out.push_str(&rows[layout.call_at..layout.args_at]);
        let mut first = true;
        let mut dropped = false;
        for (i, d) in details.iter().enumerate().filter(|(_, d)| d.arg) {
            if keep & 1 << i == 0 {
                dropped = true;
                continue;
            }
            if !first {
                out.push_str(", ");
            }
            d.write(rows, cut, out);
            first = false;
        }
        if dropped {
            out.push_str(if first { "..." } else { ", ..." });
        }
        out.push_str(&rows[layout.args_end..layout.call_end]);
        let mut first = true;
        for (i, d) in details.iter().enumerate() {
            if !d.arg && keep & 1 << i != 0 {
                out.push_str(if first { "  [" } else { "; " });
                d.write(rows, cut, out);
                first = false;
            }
        }
        if !first {
            out.push(']');
        }
        self.rows.truncate(layout.call_at);
        self.rows.push_str(&self.scratch);
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
        self.clock.update(e.ctx.timestamp);
        if self.day != Some(self.clock.day) {
            self.header();
            self.day = Some(self.clock.day);
        }
        let row = self.rows.len();
        // A kernel event is an instant: no duration to show.
        let duration = (e.def.ret != RetKind::None).then_some(e.duration_ns);
        self.who(e, duration);
        self.details.clear();
        let layout = write_call(&mut self.rows, &mut self.details, e);
        self.fit(row, &layout);
        clip(&mut self.rows, row, self.columns);
        self.rows.push('\n');
        self.write_if_full()
    }

    fn alert(&mut self, e: &Event, alert: &ProtAlert) -> io::Result<()> {
        let row = self.rows.len();
        self.who(e, None);
        self.rows.push_str("mem_prot_alert: ");
        self.rows.push_str(alert.alert.text());
        clip(&mut self.rows, row, self.columns);
        self.rows.push('\n');
        self.write_if_full()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(self.rows.as_bytes())?;
        self.rows.clear();
        self.columns = self.width.columns();
        self.out.flush()
    }

    fn held(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::tests::text;

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

    use mmtrace_events::enrich::{Enrichment, Locked, Mapping, MappingKind, OomLimit, Rss, Target};
    use mmtrace_events::event::Context;
    use mmtrace_events::{by_name, TracedText};
    use proptest::prelude::*;

    const DAY_NS: u64 = 86_400_000_000_000;

    fn event(name: &str, args: &[u64], ret: i64) -> Event {
        let mut raw_args = [0; 8];
        raw_args[..args.len()].copy_from_slice(args);
        Event {
            def: by_name(name).unwrap(),
            ctx: Context {
                // Noon UTC, so the local date is the same day in every time zone but the
                // farthest ones; tests that need the day compare dates, not a fixed one.
                timestamp: 20_000 * DAY_NS + DAY_NS / 2,
                thread_start: 0,
                process_start: 0,
                parent_start: 0,
                cpu: 0,
                pid: 4242,
                tid: 4243,
                ppid: 1,
                host_pid: 4242,
                host_tid: 4243,
                host_ppid: 1,
                uid: 0,
                gid: 0,
                cgroup_id: 1,
                mnt_ns: 1,
                pid_ns: 1,
                comm: "worker".into(),
                executable: None,
                container: None,
            },
            raw_args,
            absent: 0,
            ret,
            duration_ns: 5_800,
            enrich: None,
            stack: None,
        }
    }

    /// An mmap with every detail the table can show: wider than any terminal.
    fn wide_mmap(comm: &[u8], path: &[u8]) -> Event {
        let mut e = event("mmap", &[0, 8192, 3, 0x22, u64::MAX, 0], 0x7fea_2acc_9000);
        e.ctx.comm = TracedText::from(comm.to_vec());
        e.enrich = Some(Enrichment {
            mapping: Some(Mapping {
                kind: MappingKind::File,
                start: 0x7fea_2acc_9000,
                end: 0x7fea_2accb000,
                prot: 3,
                shared: false,
                locked: false,
                path: Some(TracedText::from(path.to_vec())),
                name: None,
            }),
            locked: Some(Locked {
                locked_bytes: 0,
                limit_bytes: Some(8 << 20),
                cap_ipc_lock: true,
            }),
            ..Enrichment::default()
        });
        e
    }

    /// What process_mrelease adds when it freed all 64 MiB of its target.
    fn victim_released() -> Option<Enrichment> {
        Some(Enrichment {
            target: Some(Target {
                host_pid: 77,
                pid: 77,
                comm: "victim".into(),
            }),
            rss_before: Some(Rss {
                anon: 64 << 20,
                file: 0,
                shmem: 0,
            }),
            rss_after: Some(Rss::default()),
            ..Enrichment::default()
        })
    }

    fn table(events: &[Event], columns: usize) -> String {
        let mut out = Vec::new();
        let mut t = Table::new(&mut out, Width::Columns(columns));
        for e in events {
            t.event(e).unwrap();
        }
        t.flush().unwrap();
        drop(t);
        String::from_utf8(out).unwrap()
    }

    /// A row too wide keeps the call's size first, then its names; a path loses its folders
    /// before an argument goes; zeros go first; narrower than 100 columns, no time of day.
    #[test]
    fn rows_fit_keeping_the_range_and_names_first() {
        let e = wide_mmap(b"worker", b"/usr/lib/x86_64-linux-gnu/libc.so.6");
        let row = |columns| {
            table(std::slice::from_ref(&e), columns)
                .lines()
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert!(
            row(1000).ends_with(" mmap(addr=0x0, length=8KiB, prot=PROT_READ|PROT_WRITE, flags=MAP_PRIVATE|MAP_ANONYMOUS, fd=-1, off=0) = 0x7fea2acc9000  [on file PROT_READ|PROT_WRITE /usr/lib/x86_64-linux-gnu/libc.so.6; locked 0B/8MiB, CAP_IPC_LOCK]"),
            "nothing is dropped when it fits: {}", row(1000)
        );
        let who = format!("{:<15} {:>7} {:>8} ", "worker", "4243", "5.8us");
        assert_eq!(
            row(80),
            format!("{who}mmap(length=8KiB, ...) = 0x7fea2acc9000")
        );
        assert_eq!(
            row(120),
            format!("12:00:00.000000 worker            4242/4243    5.8us mmap(length=8KiB, prot=PROT_READ|PROT_WRITE, ...) = 0x7fea2acc9000")
        );
        assert!(
            row(200).ends_with("flags=MAP_PRIVATE|MAP_ANONYMOUS, ...) = 0x7fea2acc9000  [on file PROT_READ|PROT_WRITE .../libc.so.6]"),
            "{}",
            row(200)
        );
        for columns in [40, 60, 80, 99, 100, 120, 160, 200] {
            let text = table(std::slice::from_ref(&e), columns);
            for line in text.lines() {
                assert!(line.len() <= columns, "{columns}: {line}");
            }
            let row = row(columns);
            assert_eq!(
                row.starts_with("12:00:00.000000 worker"),
                columns >= 100,
                "{row}"
            );
            assert!(!row.contains("addr=0x0"), "zeros go first: {row}");
        }
        // The wider, the more is kept, and what is kept stays.
        let kept = |columns| {
            ["length=", "prot=", "flags=", "on file", "locked"]
                .iter()
                .filter(|d| row(columns).contains(*d))
                .count()
        };
        assert!(kept(80) <= kept(120) && kept(120) <= kept(160) && kept(160) <= kept(200));
        assert!(kept(200) <= kept(1000) && kept(1000) == 5);
        // At 80 columns a range keeps its start and size, and a pidfd its target.
        let mut munmap = event("munmap", &[0x7f34_b1d6_e000, 4096], 0);
        munmap.ctx.host_tid = munmap.ctx.host_pid;
        let mut mrelease = munmap.clone();
        mrelease.def = by_name("process_mrelease").unwrap();
        mrelease.raw_args[..2].copy_from_slice(&[3, 0]);
        mrelease.enrich = victim_released();
        let text = table(&[munmap, mrelease], 80);
        let who = format!("{:<15} {:>7} {:>8} ", "worker", "4242", "5.8us");
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                format!("{who}munmap(addr=0x7f34b1d6e000, length=4KiB) = 0"),
                format!("{who}process_mrelease(...) = 0  [target 77 (victim)]"),
            ]
        );
    }

    /// The container that made a call stays when the row is full: it says who, as the
    /// columns before the call do.
    #[test]
    fn the_container_stays_in_a_full_row() {
        use mmtrace_events::container::{Container, Info, Runtime};
        let mut e = event("mprotect", &[0x5db000, 28 << 10, 1], 0);
        e.ctx.container = Some(std::sync::Arc::new(Container {
            id: format!("cc77e145c87a{}", "0".repeat(52)),
            runtime: Runtime::Podman,
            info: Info::default(),
        }));
        e.enrich = Some(Enrichment {
            mapping: Some(Mapping {
                kind: MappingKind::File,
                start: 0x5db000,
                end: 0x5e2000,
                prot: 5,
                shared: false,
                locked: false,
                path: Some("/usr/bin/busybox".into()),
                name: None,
            }),
            ..Enrichment::default()
        });
        for columns in [80, 120, 200] {
            let text = table(std::slice::from_ref(&e), columns);
            let row = text.lines().nth(1).unwrap();
            assert!(
                row.ends_with("  [container cc77e145c87a]")
                    || row.contains("[container cc77e145c87a; "),
                "{columns}: {row}"
            );
        }
    }

    /// Arguments the kernel takes wider than Tracee's int32 show as the kernel received
    /// them; an int shows its 32 bits.
    #[test]
    fn arguments_are_the_kernels() {
        let high = 1 << 32;
        let mmap = event(
            "mmap",
            &[0, 4096, 1 | high, 0x22 | high, 0xffff_ffff, 0],
            0x1000,
        );
        let row = table(&[mmap], 1000);
        assert!(
            row.contains(
                "prot=PROT_READ|0x100000000, flags=MAP_PRIVATE|MAP_ANONYMOUS|0x100000000, \
                 fd=4294967295, "
            ),
            "{row}"
        );
        // libc's -1, sign-extended to 64 bits, is Tracee's -1 too.
        let mmap = event("mmap", &[0, 4096, 1, 0x22, u64::MAX, 0], 0x1000);
        assert!(table(&[mmap], 1000).contains("fd=-1, "));
        let mlock2 = event("mlock2", &[0x1000, 4096, u64::MAX], -22);
        assert!(table(&[mlock2], 1000).contains("flags=MLOCK_ONFAULT|0xfffffffe)"));
    }

    /// The caller is the first frame outside libc, by name and offset, else by its module's
    /// file name and offset; a traced binary's function names are escaped like any name.
    #[test]
    fn the_caller_outside_libc_is_shown() {
        use mmtrace_events::stack::{Frame, Stack};
        let text = |s: &[u8]| Some(std::sync::Arc::new(TracedText::from(s.to_vec())));
        let frame = |module: &[u8], function: Option<&[u8]>| Frame {
            address: 0x55_0000_1181,
            module: text(module),
            module_offset: 0x1181,
            function: function.and_then(text),
            function_offset: 0x18,
            ..Frame::default()
        };
        let with = |frames: Vec<Frame>| {
            let mut e = event("mlock", &[0x1000, 4096], 0);
            e.stack = Some(Box::new(Stack {
                addresses: frames.iter().map(|f| f.address).collect(),
                sp_word: 0,
                frames,
            }));
            table(&[e], 200)
        };
        let libc = frame(b"/usr/lib/x86_64-linux-gnu/libc.so.6", Some(b"mlock"));
        let named = with(vec![
            libc.clone(),
            frame(b"/opt/app", Some(b"lock\x1b[2Jit")),
        ]);
        assert!(named.contains("[at lock\\33[2Jit+0x18]"), "{named}");
        assert!(!named.contains('\x1b'));
        let bare = with(vec![libc, frame(b"/opt/app", None)]);
        assert!(bare.contains("[at app+0x1181]"), "{bare}");
    }

    #[test]
    fn sizes_are_kib_and_mib_everywhere() {
        let exit = event("sched_process_exit", &[9, 33_705_984, 557_056, 0], 0);
        let mut mark = event(
            "oom_mark_victim",
            &[4242, 272_504, 32_916, 544, 0, 0, 128, 0],
            0,
        );
        mark.enrich = Some(Enrichment {
            oom_limit: Some(OomLimit {
                constraint: Some("CONSTRAINT_MEMCG".into()),
                cgroup: Some("/box\n".into()),
                usage_bytes: Some(96 << 20),
                limit_bytes: Some(96 << 20),
                ..OomLimit::default()
            }),
            ..Enrichment::default()
        });
        let mut mrelease = event("process_mrelease", &[3, 0], 0);
        mrelease.enrich = victim_released();
        let text = table(&[exit, mark, mrelease], 1000);
        assert!(
            text.contains(
                "sched_process_exit(exit_code=0, signal_code=SIGKILL, process_group_exit=true, \
                 anon=32.1MiB, file=544KiB, shmem=0B)"
            ),
            "{text}"
        );
        assert!(
            text.contains("oom_mark_victim(pid=4242, total_vm=266.1MiB, anon_rss=32.1MiB, file_rss=544KiB, shmem_rss=0B, uid=0, pgtables=128KiB, oom_score_adj=0)  [limit cgroup /box\\n 96MiB/96MiB]"),
            "kB from the kernel, shown as the rest: {text}"
        );
        assert!(
            text.contains("process_mrelease(pidfd=3, flags=0) = 0  [target 77 (victim); freed 64MiB of 64MiB]"),
            "{text}"
        );
    }

    #[test]
    fn the_date_heads_the_table_once_a_day() {
        let mut a = event("munmap", &[0x1000, 4096], 0);
        let mut b = a.clone();
        let mut c = a.clone();
        a.ctx.host_tid = 4242;
        b.ctx.timestamp += 1_000;
        c.ctx.timestamp += DAY_NS;
        let text = table(&[a, b, c], 120);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let date = |line: &str| line.split_whitespace().next().unwrap().to_string();
        for header in [lines[0], lines[3]] {
            assert!(
                header.ends_with(&format!(" {:<15} {:>11} DURATION CALL", "COMM", "PID/TID")),
                "{header}"
            );
            assert_eq!(date(header).len(), "2024-10-04".len(), "{header}");
        }
        assert_ne!(date(lines[0]), date(lines[3]), "a new day, a new header");
        let who = |pid: &str| format!(" {:<15} {pid:>11} {:>8} munmap(", "worker", "5.8us");
        assert!(
            lines[1].contains(&format!("{}addr=0x1000, length=4KiB) = 0", who("4242"))),
            "the pid alone for a main thread: {}",
            lines[1]
        );
        assert!(lines[2].contains(&who("4242/4243")), "{}", lines[2]);
        assert_eq!(
            lines[1].find(':'),
            Some(2),
            "times of day in the rows: {}",
            lines[1]
        );
    }

    proptest! {
        /// Whatever a traced process calls itself or its files, its row is one line of
        /// printable ASCII within the width, and the mapping's path can still be read back.
        #[test]
        fn hostile_names_stay_in_their_row(
            comm in proptest::collection::vec(any::<u8>(), 0..16),
            path in proptest::collection::vec(any::<u8>(), 0..48),
            victim in proptest::collection::vec(any::<u8>(), 0..16),
            columns in 40usize..300,
        ) {
            let mut mrelease = event("process_mrelease", &[3, 0], -22);
            mrelease.ctx.comm = TracedText::from(comm.clone());
            mrelease.enrich = Some(Enrichment {
                target: Some(Target { host_pid: 77, pid: 1, comm: TracedText::from(victim) }),
                ..Enrichment::default()
            });
            let events = [wide_mmap(&comm, &path), mrelease];
            let text = table(&events, columns);
            prop_assert_eq!(text.lines().count(), 1 + 2, "{}", text);
            for line in text.lines() {
                prop_assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", line);
                prop_assert!(line.len() <= columns, "{}", line);
            }
            let wide = table(&events[..1], 4096);
            let mut escaped = String::from(" ");
            escape_into(&mut escaped, &path);
            prop_assert!(wide.contains(&format!("PROT_READ|PROT_WRITE{escaped}; locked")), "{}", wide);
        }
    }
}

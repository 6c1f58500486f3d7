//! Sizes, durations and paragraphs as mmtrace prints them, in one place so that the table,
//! the analysis report and `reap` scale a figure the same way. Two styles: the table's,
//! compact and built without `core::fmt` (`12KiB`, `4.56ms`), which it writes at a million
//! rows a second, and the reports', spaced and read by people (`12.0 KiB`, `4.6 ms`).

use std::fmt::Write as _;
use std::time::Duration;

/// Binary units, as VmLck and RLIMIT_MEMLOCK are.
const BYTE_UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `n` bytes in the largest unit it reaches: the value in that unit and the unit's index.
fn scale_bytes(n: u64) -> (f64, usize) {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < BYTE_UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    (v, unit)
}

/// The scale a duration reads best at.
#[derive(Clone, Copy)]
enum TimeUnit {
    Ns,
    Us,
    Ms,
    S,
}

fn time_unit(ns: u64) -> TimeUnit {
    match ns {
        0..1_000 => TimeUnit::Ns,
        1_000..1_000_000 => TimeUnit::Us,
        1_000_000..1_000_000_000 => TimeUnit::Ms,
        _ => TimeUnit::S,
    }
}

pub fn uint(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// `v` in at least `width` digits (up to 6), as `{v:0width$}`.
pub fn zero_padded(out: &mut String, v: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(v);
    out.push_str(&"000000"[..width.saturating_sub(digits.len())]);
    out.push_str(digits);
}

/// A duration at a readable scale, compact: 850ns, 12.3us, 4.56ms, 1.20s.
pub fn write_duration(out: &mut String, ns: u64) {
    match time_unit(ns) {
        TimeUnit::Ns => {
            uint(out, ns);
            out.push_str("ns");
        }
        TimeUnit::Us => rounded(out, ns, 1_000, 1, "us"),
        TimeUnit::Ms => rounded(out, ns, 1_000_000, 2, "ms"),
        // Past 2^53 ns the f64 itself is rounded: leave it all to the float formatting.
        TimeUnit::S => {
            let _ = write!(out, "{:.2}s", ns as f64 / 1e9);
        }
    }
}

/// A duration as the table's DURATION column writes it: "5.8us", "12.35ms".
pub fn duration_short(ns: u64) -> String {
    let mut out = String::new();
    write_duration(&mut out, ns);
    out
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

/// A size, compact: 512B, 12KiB, 1.5KiB, 64MiB.
pub fn write_bytes(out: &mut String, n: u64) {
    let (v, unit) = scale_bytes(n);
    if unit == 0 {
        uint(out, n);
    } else if v.fract() == 0.0 {
        // Whole sizes are the common ones (limits, pages): print them as integers, which they are.
        uint(out, v as u64);
    } else {
        let _ = write!(out, "{v:.1}");
    }
    out.push_str(BYTE_UNITS[unit]);
}

/// A size, for reading: "512 B", "4.0 KiB".
pub fn bytes(n: u64) -> String {
    match scale_bytes(n) {
        (_, 0) => format!("{n} B"),
        (v, unit) => format!("{v:.1} {}", BYTE_UNITS[unit]),
    }
}

/// A size in MiB whatever it is, so that figures side by side compare: "12.5 MiB".
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

/// A duration, for reading: "850 ns", "12.3 us", "4.6 ms", "1.20 s".
pub fn duration(ns: u64) -> String {
    match time_unit(ns) {
        TimeUnit::Ns => format!("{ns} ns"),
        TimeUnit::Us => format!("{:.1} us", ns as f64 / 1e3),
        TimeUnit::Ms => format!("{:.1} ms", ns as f64 / 1e6),
        TimeUnit::S => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A duration in milliseconds to the microsecond, so that timings side by side compare.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Paragraphs are a line each in the source; a terminal shows them better folded.
pub const WIDTH: usize = 92;

/// `text` filled to `width` columns, its first line after `first` and the rest after `rest`.
pub fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::from(first);
    let mut col = first.len();
    let mut line_empty = true;
    for word in text.split_whitespace() {
        if !line_empty && col + 1 + word.len() > width {
            out.push('\n');
            out.push_str(rest);
            col = rest.len();
            line_empty = true;
        }
        if !line_empty {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
        line_empty = false;
    }
    out.push('\n');
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// What `write` writes into an empty row.
    pub fn text(write: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        write(&mut out);
        out
    }

    #[test]
    fn compact_bytes() {
        let bytes = |n| text(|out| write_bytes(out, n));
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(12 << 10), "12KiB");
        assert_eq!(bytes(64 << 20), "64MiB");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(u64::MAX), "16777216TiB");
    }

    #[test]
    fn readable_bytes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(mib(3 << 19), "1.5 MiB");
    }

    #[test]
    fn compact_durations() {
        let duration = |ns| text(|out| write_duration(out, ns));
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_345), "12.3us");
        assert_eq!(duration(4_560_000), "4.56ms");
        assert_eq!(duration(1_200_000_000), "1.20s");
    }

    #[test]
    fn readable_durations() {
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(12_345), "12.3 us");
        assert_eq!(duration(4_560_000), "4.6 ms");
        assert_eq!(duration(1_200_000_000), "1.20 s");
        assert_eq!(ms(Duration::from_micros(1_234_567)), "1234.567 ms");
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
    fn wrapping() {
        assert_eq!(wrap("a b", "> ", "  ", WIDTH), "> a b\n");
        let long = "word ".repeat(40);
        let wrapped = wrap(&long, "- ", "  ", WIDTH);
        assert!(wrapped.lines().count() > 1);
        assert!(wrapped.lines().all(|l| l.len() <= WIDTH));
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("  word")));
    }
}

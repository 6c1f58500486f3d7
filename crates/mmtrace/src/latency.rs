//! The time one event's calls took: calls, failures, total, mean, percentiles, max and a log2
//! histogram as bpftrace's `hist` draws it; for trace's exit summary and for `analyze`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant digits the percentiles keep: a percentile is at most 1% above a duration
/// recorded, in about 30 KiB per event.
const SIGNIFICANT_DIGITS: u8 = 2;
/// The width of bpftrace's bars.
const BAR: u64 = 52;

/// The calls of one event and the time they took.
#[derive(Debug, Clone)]
pub struct Latency {
    pub calls: u64,
    pub errors: u64,
    /// Calls that have a duration: all of a syscall's, none of a kernel event's.
    timed: u64,
    total_ns: u64,
    max_ns: u64,
    /// Bucket b counts durations in [2^(b-1), 2^b): bucket 0 is 0 ns, as bpftrace's hist.
    log2: [u64; 65],
    percentiles: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            calls: 0,
            errors: 0,
            timed: 0,
            total_ns: 0,
            max_ns: 0,
            log2: [0; 65],
            // Resizes itself to the longest duration recorded.
            percentiles: Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits"),
        }
    }
}

/// The bucket of `ns`: 0 for 0, else 1 + floor(log2 ns).
fn bucket(ns: u64) -> usize {
    (u64::BITS - ns.leading_zeros()) as usize
}

/// Where bucket `b` starts: 0, 1, 2, 4, ...
fn bucket_start(b: usize) -> u64 {
    match b {
        0 => 0,
        b => 1 << (b - 1),
    }
}

/// One bucket of the histogram, durations in [from, to).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub from_ns: u64,
    /// None for the last bucket of u64.
    pub to_ns: Option<u64>,
    pub count: u64,
}

/// What a report says of one event's latency.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub event: &'static str,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// From the first bucket with a call to the last, the empty ones between included.
    pub buckets: Vec<Bucket>,
}

impl Latency {
    /// One call: `duration_ns` when the event has durations.
    pub fn record(&mut self, duration_ns: Option<u64>, failed: bool) {
        self.calls += 1;
        self.errors += u64::from(failed);
        let Some(ns) = duration_ns else {
            return;
        };
        self.timed += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        self.log2[bucket(ns)] += 1;
        // It grows to the duration; past what it can ever hold, the duration counts as its most.
        if self.percentiles.record(ns).is_err() {
            self.percentiles.saturating_record(ns);
        }
    }

    /// Whether its calls have durations (syscalls have, kernel events have not).
    pub fn timed(&self) -> bool {
        self.timed > 0
    }

    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn mean_ns(&self) -> u64 {
        self.total_ns.checked_div(self.timed).unwrap_or(0)
    }

    /// The duration `q` (0 to 1) of the calls took at most; never above the longest.
    pub fn quantile(&self, q: f64) -> u64 {
        match self.timed {
            0 => 0,
            _ => self.percentiles.value_at_quantile(q).min(self.max_ns),
        }
    }

    pub fn buckets(&self) -> Vec<Bucket> {
        let Some(first) = self.log2.iter().position(|&n| n > 0) else {
            return Vec::new();
        };
        let last = self.log2.iter().rposition(|&n| n > 0).unwrap_or(first);
        (first..=last)
            .map(|b| Bucket {
                from_ns: bucket_start(b),
                to_ns: (b < 64).then(|| bucket_start(b + 1)),
                count: self.log2[b],
            })
            .collect()
    }

    pub fn report(&self, event: &'static str) -> Report {
        Report {
            event,
            calls: self.calls,
            errors: self.errors,
            total_ns: self.total_ns,
            mean_ns: self.mean_ns(),
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            max_ns: self.max_ns,
            buckets: self.buckets(),
        }
    }

    /// Adds `other`'s calls to these.
    pub fn merge(&mut self, other: &Latency) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.timed += other.timed;
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.log2.iter_mut().zip(other.log2) {
            *a += b;
        }
        // Both resize themselves: adding cannot fail.
        let _ = self.percentiles.add(&other.percentiles);
    }
}

/// 512, 1K, 2M: bpftrace's labels of log2 buckets, in powers of 1024.
fn power_label(v: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut i = 0;
    let mut v = v;
    while v >= 1024 && v.is_multiple_of(1024) && i + 1 < SUFFIXES.len() {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", SUFFIXES[i])
}

/// The histogram of `buckets` as bpftrace prints `hist()`: `[1K, 2K)   12 |@@@@   |`.
pub fn write_histogram(out: &mut String, buckets: &[Bucket]) {
    let most = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    for b in buckets {
        let label = match (b.from_ns, b.to_ns) {
            (0, _) => "[0]".to_string(),
            (1, _) => "[1]".to_string(),
            (from, Some(to)) => format!("[{}, {})", power_label(from), power_label(to)),
            (from, None) => format!("[{}, ...)", power_label(from)),
        };
        let bar = (b.count * BAR / most) as usize;
        let _ = writeln!(out, "{label:<16} {:>8} |{:<52}|", b.count, "@".repeat(bar));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_bpftraces() {
        assert_eq!(
            [0, 1, 2, 3, 4, 1023, 1024].map(bucket),
            [0, 1, 2, 2, 3, 10, 11]
        );
        let mut l = Latency::default();
        for ns in [0, 1, 1500, 1024, 2047, 5000] {
            l.record(Some(ns), false);
        }
        l.record(Some(u64::MAX), true);
        let b = l.buckets();
        assert_eq!(b.first().map(|b| (b.from_ns, b.to_ns)), Some((0, Some(1))));
        assert_eq!(
            b.last().map(|b| (b.from_ns, b.to_ns)),
            Some((1 << 63, None))
        );
        let at = |from| b.iter().find(|b| b.from_ns == from).map(|b| b.count);
        assert_eq!((at(1024), at(2048), at(4096)), (Some(3), Some(0), Some(1)));
        let mut text = String::new();
        write_histogram(&mut text, &b[10..13]);
        assert_eq!(
            text,
            format!(
                "{:<16} {:>8} |{}|\n{:<16} {:>8} |{:<52}|\n{:<16} {:>8} |{:<52}|\n",
                "[512, 1K)",
                0,
                " ".repeat(52),
                "[1K, 2K)",
                3,
                "@".repeat(52),
                "[2K, 4K)",
                0,
                ""
            )
        );
        assert_eq!((l.calls, l.errors, l.max_ns), (7, 1, u64::MAX));
    }

    #[test]
    fn percentiles_are_within_one_percent_and_never_above_the_max() {
        let mut l = Latency::default();
        for ns in 1..=1000u64 {
            l.record(Some(ns * 1000), false);
        }
        let p99 = l.quantile(0.99);
        assert!((990_000..=999_900).contains(&p99), "{p99}");
        assert_eq!(l.quantile(1.0), 1_000_000);
        assert_eq!(l.mean_ns(), 500_500);
        let mut none = Latency::default();
        none.record(None, false);
        assert!(!none.timed());
        assert_eq!((none.quantile(0.99), none.mean_ns()), (0, 0));
    }
}

//! Locked memory per process: the kernel's VmLck when the recording carries it, else worked
//! out from the lock, unlock and unmap calls themselves.

use std::collections::BTreeMap;

use mmtrace_events::decode::{MAP_LOCKED, MCL_CURRENT, MCL_FUTURE};
use mmtrace_events::{ArgRole, Role};

use super::record::Record;

/// Locked ranges seen being created, as the calls say; locks do not nest, so a set of ranges.
#[derive(Debug)]
pub struct Ledger {
    /// The page size the kernel rounded the calls' ranges to.
    page: u64,
    ranges: BTreeMap<u64, u64>,
    bytes: u64,
    future: bool,
    /// mlockall(MCL_CURRENT) locked mappings made before the trace: the calls alone cannot say
    /// how much, so the figures from calls are a lower bound.
    pub incomplete: bool,
    pub peak: u64,
    /// The kernel's own figures, when the recording has them: (peak, final, final's time).
    pub kernel: Option<KernelLocked>,
}

#[derive(Debug, Clone, Copy)]
pub struct KernelLocked {
    pub peak: u64,
    pub last: u64,
    pub last_at: u64,
    pub limit: Option<u64>,
    pub cap_ipc_lock: bool,
}

impl Ledger {
    pub fn new(page: u64) -> Ledger {
        Ledger {
            page,
            ranges: BTreeMap::new(),
            bytes: 0,
            future: false,
            incomplete: false,
            peak: 0,
            kernel: None,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn apply(&mut self, r: &Record) {
        if let Some(l) = r.locked() {
            let k = self.kernel.get_or_insert(KernelLocked {
                peak: 0,
                last: 0,
                last_at: 0,
                limit: None,
                cap_ipc_lock: false,
            });
            k.peak = k.peak.max(l.locked_bytes);
            if r.end() >= k.last_at {
                k.last = l.locked_bytes;
                k.last_at = r.end();
                k.limit = l.limit_bytes;
                k.cap_ipc_lock = l.cap_ipc_lock;
            }
        }
        if !r.ok() {
            return;
        }
        match r.role() {
            Role::Locks => {
                if let Some((a, l)) = r.range() {
                    self.lock(a, l);
                }
            }
            Role::Unlocks | Role::Unmaps => {
                if let Some((a, l)) = r.range() {
                    self.unlock(a, l);
                }
            }
            Role::LocksAll => {
                let flags = r.flags().unwrap_or(0);
                self.incomplete |= flags & MCL_CURRENT != 0;
                self.future = flags & MCL_FUTURE != 0;
            }
            Role::UnlocksAll => {
                self.ranges.clear();
                self.bytes = 0;
                self.future = false;
                self.incomplete = false;
            }
            Role::Maps => {
                let flags = r.flags().unwrap_or(0);
                if self.future || flags & MAP_LOCKED != 0 {
                    if let Some(l) = r.size() {
                        self.lock(r.ret() as u64, l);
                    }
                }
            }
            Role::Remaps => {
                if let Some((a, old)) = r.range() {
                    // A locked mapping stays locked where it moves to, at its new size.
                    let was_locked = self.overlap(a, old) > 0;
                    self.unlock(a, old);
                    if was_locked || self.future {
                        self.lock(r.ret() as u64, r.by_role(ArgRole::NewSize).unwrap_or(0));
                    }
                }
            }
            _ => {}
        }
    }

    fn lock(&mut self, addr: u64, len: u64) {
        let (start, end) = pages(addr, len, self.page);
        if start >= end {
            return;
        }
        let mut start = start;
        let mut end = end;
        // Merge with every range that touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.bytes += end - start;
        self.peak = self.peak.max(self.bytes);
    }

    fn unlock(&mut self, addr: u64, len: u64) {
        let (start, end) = pages(addr, len, self.page);
        if start >= end {
            return;
        }
        let hit: Vec<(u64, u64)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            if s < start {
                self.ranges.insert(s, start);
                self.bytes += start - s;
            }
            if e > end {
                self.ranges.insert(end, e);
                self.bytes += e - end;
            }
        }
    }

    fn overlap(&self, addr: u64, len: u64) -> u64 {
        let (start, end) = pages(addr, len, self.page);
        self.ranges
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| e.min(end) - s.max(start))
            .sum()
    }
}

/// The whole pages a byte range touches, as the kernel rounds it; clamped so that no
/// argument overflows.
fn pages(addr: u64, len: u64, page: u64) -> (u64, u64) {
    let start = addr & !(page - 1);
    let end = addr.saturating_add(len).saturating_add(page - 1) & !(page - 1);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn call(name: &str, args: &str, ret: i64) -> Record {
        let line = format!(
            r#"{{"timestamp":1,"hostProcessId":7,"eventName":"{name}","returnValue":{ret},"args":[{args}]}}"#
        );
        Record::parse(line.as_bytes(), 1).unwrap()
    }

    fn range(name: &str, addr: u64, len: u64) -> Record {
        call(
            name,
            &format!(
                r#"{{"name":"addr","value":"{addr:#x}"}},{{"name":"len","value":{len}}},{{"name":"length","value":{len}}}"#
            ),
            0,
        )
    }

    #[test]
    fn locks_do_not_nest_and_unlocks_split() {
        let mut l = Ledger::new(PAGE);
        l.apply(&range("mlock", 0x10000, 3 * PAGE));
        l.apply(&range("mlock", 0x11000, 3 * PAGE));
        assert_eq!(l.bytes(), 4 * PAGE);
        l.apply(&range("munlock", 0x11000, PAGE));
        assert_eq!(l.bytes(), 3 * PAGE);
        l.apply(&range("munmap", 0x10000, 1));
        assert_eq!(l.bytes(), 2 * PAGE);
        assert_eq!(l.peak, 4 * PAGE);
        l.apply(&call("munlockall", "", 0));
        assert_eq!(l.bytes(), 0);
    }

    #[test]
    fn failed_calls_lock_nothing() {
        let mut l = Ledger::new(PAGE);
        l.apply(&call(
            "mlock",
            r#"{"name":"addr","value":"0x10000"},{"name":"len","value":4096}"#,
            -12,
        ));
        assert_eq!(l.peak, 0);
    }

    #[test]
    fn huge_ranges_do_not_overflow() {
        let mut l = Ledger::new(PAGE);
        l.apply(&range("mlock", u64::MAX - 10, u64::MAX));
        l.apply(&range("munlock", 0, u64::MAX));
        assert_eq!(l.bytes(), 0);
    }
}

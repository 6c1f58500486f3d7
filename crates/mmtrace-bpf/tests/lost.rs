//! Lost events are counted exactly: with a ring too small for a burst, delivered plus counted
//! lost equals calls made. Needs root: see common::bpf_allowed.

mod common;

use common::{tid, trace_with};

#[test]
fn delivered_plus_lost_equals_calls() {
    // One page holds about 25 records, so most of the burst cannot be delivered.
    let Some(mut t) = trace_with("mlock2", |o| o.ring_bytes = 4096) else {
        return;
    };
    const CALLS: u64 = 2000;
    for _ in 0..CALLS {
        // An invalid flag: nothing else in this process makes such a call.
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
    }
    let me = tid();
    let mut delivered = 0;
    t.drain(|e| {
        assert_eq!(e.ctx.host_tid, me);
        delivered += 1;
    });
    let lost: u64 = t.lost().iter().map(|&(_, n)| n).sum();
    assert!(
        delivered > 0 && lost > 0,
        "delivered {delivered}, lost {lost}"
    );
    assert_eq!(
        delivered + lost,
        CALLS,
        "delivered {delivered} + lost {lost}"
    );
}

//! Kernel OOM events for real: a child confined to a small memory cgroup outgrows it and the
//! kernel's OOM killer kills it, which is safe for the rest of the machine.
//! Needs root: see common::bpf_allowed.

mod common;

use common::trace_others;
use mmtrace_bpf::features::Feature;
use mmtrace_events::ArgValue;
use mmtrace_testkit::Memcg;

const LIMIT: u64 = 32 << 20;

#[test]
fn a_memcg_oom_kill_shows_victim_and_exit() {
    let Some(mut t) = trace_others("tag=oom,-pidfd*,-process_m*") else {
        return;
    };
    let memcg = Memcg::new("oom-test", LIMIT);
    let child = memcg.spawn_hog(2 * LIMIT as usize);
    let mut status = 0;
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the OOM killer killed it: {status:#x}"
    );
    // The reaper runs in its own thread a little later; give it a moment to report.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut got = Vec::new();
    t.drain(|e| {
        let victim = e.raw_args[0] == child as u64 && e.name().starts_with("oom_");
        if victim || (e.name() == "sched_process_exit" && e.ctx.host_pid == child as u32) {
            got.push(e)
        }
    });
    let names: Vec<&str> = got.iter().map(|e| e.name()).collect();
    let mark = got
        .iter()
        .find(|e| e.name() == "oom_mark_victim")
        .unwrap_or_else(|| panic!("{names:?}"));
    let target = mark
        .enrich
        .as_ref()
        .and_then(|x| x.target.as_ref())
        .unwrap();
    assert_eq!(target.host_pid, child as u32);
    // Before 6.9 the tracepoint has the pid alone: tests/features.rs checks that case.
    if t.features().has(Feature::VictimFields) {
        assert_eq!(
            target.comm, mark.ctx.comm,
            "a memcg OOM kills the allocating task itself"
        );
        let kib = |name: &str| mark.arg(name).unwrap().bits();
        assert!(
            kib("anon_rss") * 1024 >= LIMIT / 2,
            "anon_rss {} kB",
            kib("anon_rss")
        );
        assert!(
            kib("total_vm") * 1024 >= 2 * LIMIT,
            "total_vm {} kB",
            kib("total_vm")
        );
    }
    assert_eq!(mark.ret, 0);
    let exit = got
        .iter()
        .find(|e| e.name() == "sched_process_exit")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        exit.arg("signal_code"),
        Some(ArgValue::Signed(libc::SIGKILL.into())),
        "signal_code is the signal"
    );
    assert_eq!(exit.arg("exit_code"), Some(ArgValue::Signed(0)));
    assert_eq!(exit.arg("process_group_exit"), Some(ArgValue::Bool(true)));
    assert!(exit.ctx.timestamp >= mark.ctx.timestamp);
}

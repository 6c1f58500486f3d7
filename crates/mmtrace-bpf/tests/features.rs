//! Each kernel feature the loader probes, turned off (as on a kernel that lacks it): the rest
//! is still traced, and what needs it is reported missing and left out, never faked.
//! On a kernel that lacks a feature (6.1 has neither exit_memory nor victim_fields) the same
//! tests see it off either way. Needs root: see common::bpf_allowed.

mod common;

use common::{events_of, tid, trace_with};
use mmtrace_bpf::features::Feature;
use mmtrace_bpf::Tracer;
use mmtrace_events::scope::Scope;
use mmtrace_testkit::Memcg;
use std::ptr::null_mut;

const PAGE: u64 = 4096;

fn trace_without(events: &str, off: &[Feature], others: bool) -> Option<Tracer> {
    trace_with(events, |o| {
        o.features_off = off.to_vec();
        if others {
            o.scope = Scope::default();
            o.exclude_self = true;
        }
    })
}

fn reported_off(t: &Tracer, f: Feature) -> bool {
    let off = t.features().off().iter().any(|o| o.feature == f);
    let summary = t.features().summary(t.attached()).unwrap_or_default();
    assert_eq!(off, summary.contains(f.gives()), "{summary}");
    off
}

#[test]
fn without_find_vma_calls_keep_everything_but_the_mapping() {
    for off in [&[][..], &[Feature::FindVma]] {
        let Some(mut t) = trace_without("munmap", off, false) else {
            return;
        };
        let p = unsafe {
            libc::mmap(
                null_mut(),
                PAGE as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as u64;
        assert_eq!(unsafe { libc::munmap(p as *mut _, PAGE as usize) }, 0);
        let got = events_of(&mut t, tid());
        assert_eq!(got.len(), 1, "{got:#?}");
        let x = got[0].enrich.as_ref().unwrap();
        assert_eq!(got[0].arg("addr").unwrap().bits(), p);
        assert!(
            x.locked.is_some(),
            "the caller's locked memory stays: {x:?}"
        );
        let missing = reported_off(&t, Feature::FindVma);
        assert!(missing || off.is_empty());
        assert_eq!(x.mapping.is_none(), missing, "{x:?}");
    }
}

/// A child that maps and touches 8 MiB, then exits with status 3.
fn exiting_child() -> i32 {
    match unsafe { libc::fork() } {
        0 => {
            mmtrace_testkit::touch_anon(8 << 20);
            unsafe { libc::_exit(3) }
        }
        pid => pid,
    }
}

#[test]
fn without_exit_memory_the_exit_is_still_traced() {
    for off in [&[][..], &[Feature::ExitMemory]] {
        let Some(mut t) = trace_without("sched_process_exit", off, true) else {
            return;
        };
        let child = exiting_child();
        let mut status = 0;
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 3);
        let mut exits = Vec::new();
        t.drain(|e| {
            if e.ctx.host_pid == child as u32 {
                exits.push(e)
            }
        });
        assert_eq!(exits.len(), 1, "{exits:#?}");
        let exit = &exits[0];
        assert_eq!(exit.arg("exit_code").unwrap().bits(), 3);
        let anon = exit.arg("anon").map(|a| a.bits());
        if reported_off(&t, Feature::ExitMemory) {
            assert_eq!(anon, None, "absent, not 0");
            let names: Vec<_> = exit.args().map(|(def, ..)| def.name).collect();
            assert_eq!(names, ["exit_code", "signal_code", "process_group_exit"]);
        } else {
            assert!(anon.unwrap() >= 8 << 20, "held its 8 MiB at exit: {anon:?}");
        }
    }
}

#[test]
fn without_victim_fields_the_oom_kill_is_still_traced() {
    const LIMIT: u64 = 32 << 20;
    for off in [&[][..], &[Feature::VictimFields]] {
        let Some(mut t) = trace_without("oom_mark_victim,sched_process_exit", off, true) else {
            return;
        };
        let memcg = Memcg::new("features-test", LIMIT);
        let child = memcg.spawn_hog(2 * LIMIT as usize);
        let mut status = 0;
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        let mut got = Vec::new();
        t.drain(|e| {
            if e.raw_args[0] == child as u64 || e.ctx.host_pid == child as u32 {
                got.push(e)
            }
        });
        let mark = got.iter().find(|e| e.name() == "oom_mark_victim");
        let mark = mark.unwrap_or_else(|| panic!("{got:#?}"));
        assert!(
            got.iter().any(|e| e.name() == "sched_process_exit"),
            "{got:#?}"
        );
        assert_eq!(mark.arg("pid").unwrap().bits(), child as u64);
        let target = mark
            .enrich
            .as_ref()
            .and_then(|x| x.target.as_ref())
            .unwrap();
        assert_eq!(target.host_pid, child as u32);
        if reported_off(&t, Feature::VictimFields) {
            assert_eq!(mark.args().count(), 1, "pid alone: {mark:?}");
            assert_eq!(mark.arg("anon_rss"), None);
            assert_eq!(target.comm, "", "no name rather than a wrong one");
        } else {
            let anon = mark.arg("anon_rss").unwrap().bits() * 1024;
            assert!(anon >= LIMIT / 2, "anon_rss {anon}");
            assert_eq!(target.comm, mark.ctx.comm);
        }
    }
}

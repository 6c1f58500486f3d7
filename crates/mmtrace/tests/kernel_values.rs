//! Arguments as the kernel received them. A process calls with high bits set in arguments
//! that are an `unsigned long` to the kernel and an int32 to Tracee, and in a 32-bit flags
//! argument; the JSON line, its decoded names and the table row must show the values the
//! test passed, and the kernel's verdict on them, not Tracee's narrowed numbers.

use std::process::{Command, Stdio};

use mmtrace_events::catalog::{EventDef, Source, CATALOG};
use mmtrace_testkit::{bpf_allowed, kernel_has_syscall, Trace};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const PAGE: u64 = 4096;
const HIGH: u64 = 1 << 32;
const EINVAL: i64 = -(libc::EINVAL as i64);
/// 0xffffffff as a prot, as strace names it.
const ALL_PROT: &str =
    "PROT_READ|PROT_WRITE|PROT_EXEC|PROT_SEM|PROT_GROWSDOWN|PROT_GROWSUP|0xfcfffff0";

/// One call the child makes: its event, its six registers, and what the line must show of
/// the arguments with high bits set.
struct Call {
    event: &'static str,
    args: [u64; 6],
    wide: Vec<Wide>,
}

/// An argument with high bits set.
struct Wide {
    name: &'static str,
    /// Its names as the kernel received it; None where it has none.
    decoded: Option<&'static str>,
    /// Whether Tracee's int32 cannot hold what the kernel received.
    beyond: bool,
}

const fn wide(name: &'static str, decoded: Option<&'static str>, beyond: bool) -> Wide {
    Wide {
        name,
        decoded,
        beyond,
    }
}

/// The calls, those of syscalls this kernel lacks left out.
fn calls(addr: u64) -> Vec<Call> {
    let mut calls = every_call(addr);
    calls.retain(|c| kernel_has_syscall(c.event));
    calls
}

fn every_call(addr: u64) -> Vec<Call> {
    let read = libc::PROT_READ as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    vec![
        // Unknown prot and flag bits above 32 are ignored by mmap: it succeeds. The fd, -1
        // zero-extended, is 4294967295 to the kernel, which ignores it for MAP_ANONYMOUS;
        // sign-extended, as libc passes it, it is Tracee's -1. Two calls, so that each row
        // has room for what it must show.
        Call {
            event: "mmap",
            args: [0, PAGE, read | HIGH, anon, 0xffff_ffff, 0],
            wide: vec![
                wide("prot", Some("PROT_READ|0x100000000"), true),
                wide("fd", None, true),
            ],
        },
        Call {
            event: "mmap",
            args: [0, PAGE, read, anon | HIGH, u64::MAX, 0],
            wide: vec![wide(
                "flags",
                Some("MAP_PRIVATE|MAP_ANONYMOUS|0x100000000"),
                true,
            )],
        },
        // Every bit of an int32 -1, zero-extended: a W+X mapping, so mem_prot_alert follows,
        // whose prot Tracee's consumers parse as an int32 too.
        Call {
            event: "mmap",
            args: [0, PAGE, 0xffff_ffff, anon, u64::MAX, 0],
            wide: vec![wide("prot", Some(ALL_PROT), true)],
        },
        // The kernel refuses the bit Tracee's int32 cannot show.
        Call {
            event: "mprotect",
            args: [addr, PAGE, read | HIGH, 0, 0, 0],
            wide: vec![wide("prot", Some("PROT_READ|0x100000000"), true)],
        },
        // strace's test value.
        Call {
            event: "pkey_mprotect",
            args: [addr, PAGE, 0xdead_feed_00ca_7500, 0, 0, 0],
            wide: vec![wide("prot", Some("0xdeadfeed00ca7500"), true)],
        },
        Call {
            event: "mremap",
            args: [addr, PAGE, PAGE, libc::MREMAP_MAYMOVE as u64 | HIGH, 0, 0],
            wide: vec![wide("flags", Some("MREMAP_MAYMOVE|0x100000000"), true)],
        },
        // An int: the kernel reads 32 bits, Tracee's -1, and names them as strace does.
        Call {
            event: "mlock2",
            args: [addr, PAGE, u64::MAX, 0, 0, 0],
            wide: vec![wide("flags", Some("MLOCK_ONFAULT|0xfffffffe"), false)],
        },
    ]
}

/// Runs the calls in a forked child that makes only raw syscalls (the test process has other
/// threads), under `strace -o STRACE` where given; returns its pid, the address its calls
/// worked on and each call's result.
fn run_child(strace: Option<&str>) -> (i32, u64, Vec<i64>) {
    let (mut pipe, mut go) = ([0; 2], [0; 2]);
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // The address comes from the parent's own mapping, inherited: no allocation in the child.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let addr = addr as u64;
    let calls = calls(addr);
    let child = unsafe { libc::fork() };
    if child == 0 {
        // Not a call before strace is on.
        unsafe { libc::read(go[0], [0u8].as_mut_ptr().cast(), 1) };
        for c in &calls {
            let nr = match c.event {
                "mmap" => libc::SYS_mmap,
                "mprotect" => libc::SYS_mprotect,
                "pkey_mprotect" => libc::SYS_pkey_mprotect,
                "mremap" => libc::SYS_mremap,
                _ => libc::SYS_mlock2,
            };
            let a = c.args;
            let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
            let ret = match r {
                -1 => -(unsafe { *libc::__errno_location() } as i64),
                r => r,
            };
            unsafe { libc::write(pipe[1], (&ret as *const i64).cast(), 8) };
        }
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::close(pipe[1]) };
    let strace = strace.map(|out| {
        let events = "trace=mmap,mprotect,pkey_mprotect,mremap,mlock2";
        let pid = child.to_string();
        let strace = Command::new("strace")
            .args(["-qq", "-e", events, "-o", out, "-p", &pid])
            .spawn()
            .unwrap();
        let status = format!("/proc/{child}/status");
        let attached = |s: String| !s.contains("TracerPid:\t0\n");
        while !std::fs::read_to_string(&status).is_ok_and(attached) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        strace
    });
    unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) };
    let mut rets = vec![0i64; calls.len()];
    for r in &mut rets {
        let n = unsafe { libc::read(pipe[0], (r as *mut i64).cast(), 8) };
        assert_eq!(n, 8);
    }
    unsafe { libc::close(pipe[0]) };
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status), "{status:#x}");
    if let Some(mut strace) = strace {
        assert!(strace.wait().unwrap().success());
    }
    (child, addr, rets)
}

#[test]
fn lines_and_rows_show_what_the_kernel_received() {
    if !bpf_allowed() {
        return;
    }
    let dir = env!("CARGO_TARGET_TMPDIR");
    let json = format!("{dir}/kernel-values-{}.jsonl", std::process::id());
    let table = format!("{dir}/kernel-values-{}.txt", std::process::id());
    let tree = format!("tree={}", std::process::id());
    let mut events: Vec<&str> = calls(0).iter().map(|c| c.event).collect();
    events.dedup();
    events.push("mem_prot_alert");
    let events = events.join(",");
    let trace = Trace::start(
        BIN,
        &[
            "-e",
            &events,
            "-s",
            &tree,
            "-o",
            &format!("json:{json}"),
            "-o",
            &format!("table:{table}"),
        ],
        Stdio::null(),
    );
    let strace_out = format!("{dir}/kernel-values-{}.strace", std::process::id());
    let strace_runs = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !strace_runs {
        assert!(std::env::var_os("CI").is_none(), "CI must have strace");
        eprintln!("not comparing with strace: strace is missing (apt-get install strace)");
    }
    let (child, addr, rets) = run_child(strace_runs.then_some(strace_out.as_str()));
    let (code, err) = trace.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{err}");
    let calls = calls(addr);
    // The kernel's verdicts, which the narrowed values would not explain.
    assert!(
        rets[..3].iter().all(|&r| r > 0),
        "mmap ignores high bits: {rets:?}"
    );
    assert!(rets[3..].iter().all(|&r| r == EINVAL), "{rets:?}");

    // Every argument whose kernel type is wider than Tracee's is among the calls.
    let here =
        |e: &&EventDef| !matches!(e.source, Source::Syscall { .. }) || kernel_has_syscall(e.name);
    for e in CATALOG.iter().filter(here) {
        for a in e.args.iter().filter(|a| a.kernel.bits > a.ty.bits()) {
            assert!(
                calls
                    .iter()
                    .any(|c| c.event == e.name
                        && c.wide.iter().any(|w| w.beyond && w.name == a.name)),
                "{}.{} ({} to the kernel) untested",
                e.name,
                a.name,
                a.kernel.name
            );
        }
    }

    let text = std::fs::read_to_string(&json).unwrap();
    let (alerts, lines): (Vec<Value>, Vec<Value>) = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["hostProcessId"] == child)
        .partition(|v| v["eventName"] == "mem_prot_alert");
    // The alert of the W+X mmap: Tracee's int32 -1, and what the call passed.
    assert_eq!(alerts.len(), 1, "{text}");
    let prot = &alerts[0]["args"][3];
    assert_eq!(prot["name"], "prot");
    assert_eq!(prot["value"], -1, "{prot}");
    assert_eq!(prot["kernelValue"], 0xffff_ffffu64, "{prot}");
    assert_eq!(prot["decoded"], ALL_PROT, "{prot}");
    assert_eq!(lines.len(), calls.len(), "{text}");
    for ((line, call), ret) in lines.iter().zip(&calls).zip(&rets) {
        let name = call.event;
        assert_eq!(line["eventName"], name);
        assert_eq!(line["returnValue"], *ret, "{name}");
        let args = line["args"].as_array().unwrap();
        for (i, arg) in args.iter().enumerate() {
            let passed = call.args[i];
            let arg_name = arg["name"].as_str().unwrap();
            let wide = call.wide.iter().find(|w| w.name == arg_name);
            let what = format!("{name}.{arg_name}: {arg}");
            match arg["type"].as_str().unwrap() {
                // Tracee's type, Tracee's value: the low 32 bits, signed.
                "int32" => assert_eq!(arg["value"], passed as u32 as i32, "{what}"),
                "uint64" => assert_eq!(arg["value"], passed, "{what}"),
                "int64" => assert_eq!(arg["value"], passed as i64, "{what}"),
                "trace.Pointer" => assert_eq!(arg["value"], format!("{passed:#x}"), "{what}"),
                other => panic!("{what}: type {other}"),
            }
            match wide {
                Some(w) => {
                    assert_eq!(arg["decoded"].as_str(), w.decoded, "{what}");
                    let full = arg.get("kernelValue");
                    assert_eq!(
                        full,
                        w.beyond.then(|| Value::from(passed)).as_ref(),
                        "{what}"
                    );
                }
                None => assert!(arg.get("kernelValue").is_none(), "{what}"),
            }
        }
        if *ret == EINVAL {
            assert_eq!(line["returnError"], "EINVAL", "{name}");
        }
    }

    let rows = std::fs::read_to_string(&table).unwrap();
    let rows: Vec<&str> = rows
        .lines()
        .filter(|l| l.contains(&format!(" {child} ")) && !l.contains("mem_prot_alert:"))
        .collect();
    assert_eq!(rows.len(), calls.len(), "{rows:#?}");
    for (row, call) in rows.iter().zip(&calls) {
        assert!(row.contains(&format!(" {}(", call.event)), "{row}");
        for w in &call.wide {
            let i = CATALOG
                .iter()
                .find(|e| e.name == call.event)
                .and_then(|e| e.args.iter().position(|a| a.name == w.name))
                .unwrap();
            let shown = match w.decoded {
                Some(names) => names.to_string(),
                None => call.args[i].to_string(),
            };
            // An argument may give way where the row is short of room (the row says so; the
            // table's unit tests show them all in a wide row); what is shown is the kernel's.
            let left_out = row.contains(", ...)");
            let shows = |text: &str| row.contains(&format!("{}={text}", w.name));
            assert!(
                shows(&shown) || (left_out && !shows("")),
                "{}: {row}",
                w.name
            );
        }
        if call.event != "mmap" {
            assert!(row.contains(" = -22 EINVAL"), "{row}");
        }
    }

    if strace_runs {
        same_as_strace(&strace_out, &lines);
    }
}

/// strace, a second tool that reads the registers itself, names each argument as the lines
/// decode it, and saw the same results. Except mmap's flags: strace cuts them to 32 bits
/// (MAP_PRIVATE|MAP_ANONYMOUS for 0x100000022), which the kernel does not.
fn same_as_strace(path: &str, lines: &[Value]) {
    let text = std::fs::read_to_string(path).unwrap();
    let calls: Vec<&str> = text.lines().collect();
    assert_eq!(calls.len(), lines.len(), "{text}");
    for (call, line) in calls.iter().zip(lines) {
        let name = line["eventName"].as_str().unwrap();
        assert!(call.starts_with(&format!("{name}(")), "{call}");
        for arg in line["args"].as_array().unwrap() {
            let Some(decoded) = arg["decoded"].as_str() else {
                continue;
            };
            if name == "mmap" && arg["name"] == "flags" {
                continue;
            }
            // strace's arguments end in ", " or ")", or carry a comment: " /* PROT_??? */".
            let shown = [", ", ")", " /*"]
                .iter()
                .any(|end| call.contains(&format!(", {decoded}{end}")));
            assert!(shown, "{name}.{}: {decoded} in {call}", arg["name"]);
        }
        match line["returnError"].as_str() {
            Some(err) => assert!(call.contains(&format!(" = -1 {err} (")), "{call}"),
            None => assert!(
                call.ends_with(&format!(" = {:#x}", line["returnValue"].as_i64().unwrap())),
                "{call}"
            ),
        }
    }
}

//! Scopes and filters run in the kernel: out-of-scope and filtered-out calls never reach the
//! ring, and are counted. Needs root: see common::bpf_allowed.

mod common;

use common::{bpf_allowed, events_of, read_only_page, tid, trace_with};
use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::scope::Scope;
use mmtrace_events::select::parse_selection;

/// A child that waits for a byte on a pipe, makes `calls` invalid mlock2 calls, and exits.
struct Child {
    pid: i32,
    go: i32,
}

impl Child {
    fn spawn(calls: u32) -> Child {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        match unsafe { libc::fork() } {
            0 => unsafe {
                let mut b = 0u8;
                libc::close(fds[1]);
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                for _ in 0..calls {
                    libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64);
                }
                libc::_exit(0)
            },
            pid => {
                unsafe { libc::close(fds[0]) };
                Child { pid, go: fds[1] }
            }
        }
    }

    fn run(self) {
        unsafe {
            libc::write(self.go, [1u8].as_ptr().cast(), 1);
            libc::close(self.go);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn start(events: &[&str], scope: &[&str]) -> Option<Tracer> {
    if !bpf_allowed() {
        return None;
    }
    let sel = parse_selection(events).unwrap();
    let mut opts = Options::new(sel.events);
    opts.filters = sel.filters;
    opts.scope = Scope::parse(scope).unwrap();
    // Some tests make the calls from this very process, which is also the tracer's.
    opts.exclude_self = false;
    Some(Tracer::start(&opts).unwrap_or_else(|e| panic!("{e}")))
}

fn filtered(t: &Tracer, name: &str) -> u64 {
    t.filtered().iter().find(|(e, _)| e.name == name).unwrap().1
}

#[test]
fn only_the_matched_process_appears_and_the_other_is_counted() {
    let (a, b) = (Child::spawn(50), Child::spawn(50));
    let Some(mut t) = start(&["mlock2"], &[&format!("pid={}", a.pid)]) else {
        return;
    };
    let (pa, pb) = (a.pid as u32, b.pid as u32);
    a.run();
    b.run();
    let mut from = (0, 0, 0);
    t.drain(|e| match e.ctx.host_pid {
        p if p == pa => from.0 += 1,
        p if p == pb => from.1 += 1,
        _ => from.2 += 1,
    });
    assert_eq!(from, (50, 0, 0), "(matched, other, strangers)");
    assert!(
        filtered(&t, "mlock2") >= 50,
        "the other child's calls are counted as filtered"
    );
}

#[test]
fn comm_uid_and_range_scopes() {
    let me = std::process::id();
    let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let uid = rustix::process::getuid().as_raw();
    // A few values are compared in place, more go through a map: both ways are tried.
    let many = |n: u32, with_me: bool| {
        let others = (1..n).map(|i| format!(",{}", me + 100_000 + i));
        let first = if with_me { me } else { me + 100_000 };
        format!("pid={first}{}", others.collect::<String>())
    };
    let scopes: [(Vec<String>, bool); 10] = [
        (vec![many(4, true)], true),
        (vec![many(4, false)], false),
        (vec![many(9, true)], true),
        (vec![many(9, false)], false),
        (vec![format!("comm={}", name.trim())], true),
        (vec![format!("comm!={}", name.trim())], false),
        (
            vec![
                format!("uid={uid}"),
                format!("pid>={me}"),
                format!("pid<={me}"),
            ],
            true,
        ),
        (vec![format!("pid!={me}")], false),
        (vec![format!("tid={}", tid())], true),
        (vec!["container".into()], false),
    ];
    for (scope, want) in scopes {
        let refs: Vec<&str> = scope.iter().map(String::as_str).collect();
        let Some(mut t) = start(&["mlock2"], &refs) else {
            return;
        };
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
        let got = events_of(&mut t, tid()).len();
        assert_eq!(got, usize::from(want), "scope {scope:?}");
    }
}

#[test]
fn tree_follows_children_born_after_attaching() {
    // The tree's root is this process; the child is forked after the tracer attached.
    let Some(mut t) = start(&["mlock2"], &[&format!("tree={}", std::process::id())]) else {
        return;
    };
    let child = Child::spawn(3);
    let pid = child.pid as u32;
    child.run();
    let mut n = 0;
    t.drain(|e| n += u32::from(e.ctx.host_pid == pid));
    assert_eq!(n, 3);
}

#[test]
fn follow_takes_in_the_children_of_a_matched_process() {
    // The parent matches by name once it has renamed itself; its child, renamed to something
    // else, is in scope only through the follow mark it inherits at fork.
    let Some(mut t) = start(&["mlock2"], &["comm=mmt-followed", "follow"]) else {
        return;
    };
    let mlock2 = || unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, 0x8u64) };
    let rename = |name: &std::ffi::CStr| unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let mut report = [0; 2];
    assert_eq!(unsafe { libc::pipe(report.as_mut_ptr()) }, 0);
    let parent = match unsafe { libc::fork() } {
        0 => unsafe {
            rename(c"mmt-followed");
            mlock2();
            let child = libc::fork();
            if child == 0 {
                rename(c"mmt-child");
                mlock2();
                libc::_exit(0);
            }
            libc::write(report[1], (&child as *const i32).cast(), 4);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            libc::_exit(0)
        },
        pid => pid,
    };
    let mut child = 0i32;
    unsafe {
        libc::read(report[0], (&mut child as *mut i32).cast(), 4);
        libc::waitpid(parent, std::ptr::null_mut(), 0);
    }
    mlock2(); // this process matches neither way
    let mut pids = Vec::new();
    t.drain(|e| pids.push(e.ctx.host_pid as i32));
    assert_eq!(pids, [parent, child]);
}

#[test]
fn return_value_and_argument_filters() {
    let sel = [
        "mlock2.retval<0",
        "munmap.data.length=8K",
        "mlock.data.len!=4K",
    ];
    let Some(mut t) = trace_with("mlock2", |o| {
        let s = parse_selection(&sel).unwrap();
        o.events = s.events;
        o.filters = s.filters;
    }) else {
        return;
    };
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as u64;
    unsafe {
        libc::syscall(libc::SYS_mlock2, page, 4096u64, 0u64); // succeeds: filtered out
        libc::syscall(libc::SYS_mlock2, page, 4096u64, 0x8u64); // EINVAL: kept
        libc::syscall(libc::SYS_mlock, page, 4096u64); // len 4K: filtered out
        libc::syscall(libc::SYS_mlock, page, 8192u64); // kept
        libc::syscall(libc::SYS_munmap, page + 8192, 4096u64); // length 4K: filtered out
        libc::syscall(libc::SYS_munmap, page, 8192u64); // kept
    }
    let got: Vec<(String, Vec<u64>, i64)> = events_of(&mut t, tid())
        .into_iter()
        .map(|e| {
            (
                e.name().to_string(),
                e.raw_args[..e.def.args.len()].to_vec(),
                e.ret,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("mlock2".to_string(), vec![page, 4096, 8], -22),
            ("mlock".to_string(), vec![page, 8192], 0),
            ("munmap".to_string(), vec![page, 8192], 0),
        ]
    );
    for name in ["mlock2", "mlock", "munmap"] {
        assert!(filtered(&t, name) >= 1, "{name}");
    }
}

#[test]
fn flag_names_filter_in_the_kernel() {
    let Some(mut t) = trace_with("mlock2", |o| {
        o.filters = parse_selection(&["mlock2.data.flags=MLOCK_ONFAULT"])
            .unwrap()
            .filters;
    }) else {
        return;
    };
    for flags in [0u64, 1, 8] {
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, flags) };
    }
    let got: Vec<u64> = events_of(&mut t, tid())
        .iter()
        .map(|e| e.raw_args[2])
        .collect();
    assert_eq!(got, [1]);
}

/// Filters compare what the kernel received: prot is an unsigned long to it, so PROT_READ
/// with a high bit set, which it refuses, is not PROT_READ; mlock2's flags are an int, whose
/// high register bits it never reads.
#[test]
fn filters_compare_at_the_kernels_width() {
    let Some(mut t) = trace_with("mprotect,mlock2", |o| {
        o.filters = parse_selection(&["mprotect.data.prot=PROT_READ", "mlock2.data.flags=-1"])
            .unwrap()
            .filters;
    }) else {
        return;
    };
    let page = read_only_page() as u64;
    let high = 1u64 << 32;
    let mut rets = Vec::new();
    for prot in [1 | high, 1] {
        rets.push(unsafe { libc::syscall(libc::SYS_mprotect, page, 4096u64, prot) });
    }
    for flags in [u64::MAX, 0xffff_ffff, 1 | high] {
        unsafe { libc::syscall(libc::SYS_mlock2, 0x10000u64, 4096u64, flags) };
    }
    assert_eq!(rets, [-1, 0], "the kernel refuses the high bit");
    let got: Vec<(&str, u64)> = events_of(&mut t, tid())
        .iter()
        .map(|e| (e.name(), e.raw_args[2]))
        .collect();
    assert_eq!(
        got,
        [
            ("mprotect", 1),
            ("mlock2", u64::MAX),
            ("mlock2", 0xffff_ffff)
        ]
    );
}

/// The tracer's own calls are left out without being counted as filtered: the column says
/// what the user's scope left out (it read "mmap filtered 2" in every run, the ring's own
/// mmaps). pkey_mprotect, which nothing else on the machine calls, makes the count exact;
/// where the kernel has no protection keys (arm64 before 6.12) it has no pkey_mprotect, and
/// process_madvise, which nothing else calls either, stands in.
#[test]
fn the_tracers_own_calls_are_not_counted_as_filtered() {
    let pkeys = mmtrace_bpf::ensure_tracefs()
        .is_ok_and(|fs| fs.join("events/syscalls/sys_enter_pkey_mprotect").exists());
    let event = if pkeys {
        "pkey_mprotect"
    } else {
        "process_madvise"
    };
    let Some(t) = trace_with(event, |o| {
        o.scope = Scope::parse(&["pid=1"]).unwrap();
        o.exclude_self = true;
    }) else {
        return;
    };
    let p = read_only_page();
    for _ in 0..5 {
        if pkeys {
            unsafe { libc::syscall(libc::SYS_pkey_mprotect, p, 4096, libc::PROT_READ, -1) };
        } else {
            // No pidfd: EBADF, as good a call as any for the count.
            unsafe { libc::syscall(libc::SYS_process_madvise, -1, 0, 0, 0, 0) };
        }
    }
    assert_eq!(filtered(&t, event), 0);
    unsafe { libc::munmap(p, 4096) };
}

/// Runs `exe` (its startup maps the loader's and libc's pages) and returns its pid.
fn run_program(exe: &std::path::Path) -> u32 {
    let mut child = std::process::Command::new(exe).spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

#[test]
fn executable_scopes_match_the_file_not_the_name() {
    if !bpf_allowed() {
        return;
    }
    // On an overlayfs, as a container's programs are: its device is not the one its layer's
    // file system shows.
    let layers = common::Mounted::tmpfs("exe-layers");
    std::fs::create_dir_all(layers.path.join("lower")).unwrap();
    std::fs::copy("/bin/true", layers.path.join("lower/true-copy")).unwrap();
    let merged = common::Mounted::overlay("exe-merged", &layers);
    let copy = merged.path.join("true-copy");
    // Another name for the same file: a scope by one path matches a process run by the other.
    let link = layers.path.join("link");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    let (copy_s, link_s) = (copy.to_str().unwrap(), link.to_str().unwrap());

    for (scope, want_copy) in [
        (format!("executable={link_s}"), true),
        (format!("executable!={copy_s}"), false),
    ] {
        let mut t = start(&["mmap"], &[&scope]).unwrap();
        let (in_copy, in_true) = (run_program(&copy), run_program("/bin/true".as_ref()));
        let mut from = (0, 0);
        t.drain(|e| match e.ctx.host_pid {
            p if p == in_copy => from.0 += 1,
            p if p == in_true => from.1 += 1,
            _ => {}
        });
        // The dynamic loader maps libc and more at every start.
        let (seen, unseen) = if want_copy { from } else { (from.1, from.0) };
        assert!(seen >= 2, "{scope}: (copy, true) = {from:?}");
        assert_eq!(unseen, 0, "{scope}: (copy, true) = {from:?}");
        assert!(filtered(&t, "mmap") >= 2, "{scope}");
    }
}

#[test]
fn executable_scope_errors_name_the_path() {
    if !bpf_allowed() {
        return;
    }
    let err = |scope: &[&str]| {
        let mut opts = Options::new(parse_selection(&["mmap"]).unwrap().events);
        opts.scope = Scope::parse(scope).unwrap();
        Tracer::start(&opts).err().unwrap().to_string()
    };
    assert_eq!(
        err(&["executable=/no/such/program"]),
        "scope executable=/no/such/program: No such file or directory (os error 2): give the path of a program file"
    );
    assert!(err(&["executable=/tmp"]).contains("not a regular file"));
    assert!(
        err(&["executable=/bin/true", "executable=/bin/sh"]).contains("no file is in this list")
    );
}

/// The cgroup v2 hierarchy's root, or None (the test skips) where none is mounted.
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let root = mmtrace_bpf::cgroup2_root();
    if root.is_none() {
        mmtrace_testkit::skip(
            "no cgroup v2 hierarchy is mounted",
            "mount one: mount -t cgroup2 none /sys/fs/cgroup/unified",
        );
    }
    root
}

/// How many of each child's calls reach the ring, under `scope`, each child in a cgroup of
/// its own: `dirs`, under a folder of the test's own (a dir names its parent first), the
/// first `before` made before the trace began and the others after. None when the test
/// must skip.
fn seen_in_new_cgroups(scope: Scope, dirs: &[String], before: usize) -> Option<Vec<u32>> {
    if !bpf_allowed() {
        return None;
    }
    let root = cgroup2_root()?;
    let top = root.join(format!("mmtrace-watch-{}", std::process::id()));
    std::fs::create_dir(&top).unwrap();
    for dir in &dirs[..before] {
        std::fs::create_dir(top.join(dir)).unwrap();
    }
    let mut opts = Options::new(parse_selection(&["mlock2"]).unwrap().events);
    opts.scope = scope;
    let mut t = Tracer::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let mut pids = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let child = Child::spawn(20);
        if i >= before {
            std::fs::create_dir(top.join(dir)).unwrap();
        }
        std::fs::write(top.join(dir).join("cgroup.procs"), child.pid.to_string()).unwrap();
        pids.push(child.pid as u32);
        child.run();
    }
    let mut seen = vec![0; dirs.len()];
    t.drain(|e| {
        if let Some(i) = pids.iter().position(|&p| p == e.ctx.host_pid) {
            seen[i] += 1;
        }
    });
    for dir in dirs.iter().rev() {
        std::fs::remove_dir(top.join(dir)).unwrap();
    }
    std::fs::remove_dir(&top).unwrap();
    Some(seen)
}

/// A container's cgroup, made after the trace began, joins the scope in the kernel before
/// its first process enters it: by the id of a container not yet started, or any container's
/// with container=new, and the cgroups made under it too; conmon's and other cgroups do not.
/// A container started before the trace is on is in scope by its id (it started as mmtrace
/// was starting), not by container=new.
#[test]
fn cgroups_of_containers_started_later_join_the_scope() {
    let id = "4f1d2c".repeat(10) + "abcd";
    let other = "9e".repeat(32);
    let dirs: Vec<String> = [
        format!("docker-{id}.scope"),
        format!("docker-{id}.scope/sub"),
        format!("libpod-{id}"),
        format!("libpod-{id}/inner"),
        format!("libpod-conmon-{id}"),
        format!("libpod-{other}"),
        format!("docker-{other}.scope"),
        format!("crio-{id}.scope.x"),
        "system.slice".into(),
    ]
    .into();
    let pending = Scope {
        pending_containers: vec![id.clone()],
        ..Scope::default()
    };
    let Some(seen) = seen_in_new_cgroups(pending, &dirs, 2) else {
        return;
    };
    assert_eq!(seen, [20, 20, 20, 20, 0, 0, 0, 0, 0], "{dirs:?}");
    let new = Scope::parse(&["container=new"]).unwrap();
    let seen = seen_in_new_cgroups(new, &dirs, 2).unwrap();
    assert_eq!(seen, [0, 0, 20, 20, 0, 20, 20, 0, 0], "{dirs:?}");
}

/// Cgroups that belong in a watched scope but find the kernel's table of them full are counted
/// and their calls not traced, which the reader must say: the test makes as many cgroups as
/// the table holds, and ten more, under a container's cgroup made after the trace began.
#[test]
fn cgroups_beyond_the_watched_table_are_counted() {
    if !bpf_allowed() {
        return;
    }
    let Some(root) = cgroup2_root() else {
        return;
    };
    const MORE: usize = 10;
    let id = "5e".repeat(32);
    let top = root.join(format!("mmtrace-full-{}", std::process::id()));
    std::fs::create_dir(&top).unwrap();
    let mut opts = Options::new(parse_selection(&["mlock2"]).unwrap().events);
    opts.scope = Scope {
        pending_containers: vec![id.clone()],
        ..Scope::default()
    };
    let mut t = Tracer::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let container = top.join(format!("libpod-{id}"));
    std::fs::create_dir(&container).unwrap();
    // The container's cgroup takes one place; these the rest, and MORE beyond.
    let dirs: Vec<_> = (0..mmtrace_bpf::abi::MAX_WATCHED_CGROUPS as usize + MORE - 1)
        .map(|i| container.join(format!("c{i}")))
        .collect();
    for dir in &dirs {
        std::fs::create_dir(dir).unwrap();
    }
    let left_out = t.scope_overflow();
    // A process in the first cgroup under the container, which got a place, and in the last,
    // which did not.
    let mut seen = [0; 2];
    let mut pids = Vec::new();
    for dir in [&dirs[0], &dirs[dirs.len() - 1]] {
        let child = Child::spawn(20);
        std::fs::write(dir.join("cgroup.procs"), child.pid.to_string()).unwrap();
        pids.push(child.pid as u32);
        child.run();
    }
    t.drain(|e| {
        if let Some(i) = pids.iter().position(|&p| p == e.ctx.host_pid) {
            seen[i] += 1;
        }
    });
    for dir in dirs.iter().rev() {
        std::fs::remove_dir(dir).unwrap();
    }
    std::fs::remove_dir(&container).unwrap();
    std::fs::remove_dir(&top).unwrap();
    assert_eq!(
        left_out, MORE as u64,
        "the cgroups made past the table's room"
    );
    assert_eq!(seen, [20, 0], "in the table, and left out of it");
}

//! Shared by the real-kernel tests: the privilege gate and a tracer scoped to this process.
#![allow(dead_code)] // each test binary uses a different part

use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::scope::Scope;
use mmtrace_events::select::parse_events;
use mmtrace_events::Event;

#[allow(unused_imports)] // not every test binary needs both
pub use mmtrace_testkit::{bpf_allowed, cgroup_id, comm, tid};

/// A tracer of `events` limited to this test process; None when the test must skip.
pub fn trace(events: &str) -> Option<Tracer> {
    trace_with(events, |_| {})
}

pub fn trace_with(events: &str, tune: impl FnOnce(&mut Options)) -> Option<Tracer> {
    if !bpf_allowed() {
        return None;
    }
    let mut opts = Options::new(parse_events(Some(events)).unwrap());
    opts.scope = Scope::parse(&[&format!("pid={}", std::process::id())]).unwrap();
    opts.exclude_self = false;
    tune(&mut opts);
    let mut tracer = Tracer::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    // Setting up the ring buffer maps it from this thread, after the hooks are on: those
    // calls are real events, but not the test's.
    tracer.drain(|_| {});
    Some(tracer)
}

/// A tracer of `events` from every process but this one: for calls a test must make in a
/// child (a lock limit, mlockall, an OOM kill) that it cannot name before forking.
pub fn trace_others(events: &str) -> Option<Tracer> {
    trace_with(events, |o| {
        o.scope = Scope::default();
        o.exclude_self = true;
    })
}

/// The events of thread `tid` now in the ring. Records are committed before the syscall
/// returns, so no waiting is needed.
pub fn events_of(tracer: &mut Tracer, tid: u32) -> Vec<Event> {
    let mut out = Vec::new();
    tracer.drain(|e| {
        if e.ctx.host_tid == tid {
            out.push(e)
        }
    });
    out
}

/// A raw syscall's result the way the kernel returns it: the value or -errno.
pub fn kernel_ret(rc: libc::c_long) -> i64 {
    if rc < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap() as i64)
    } else {
        rc
    }
}

/// A folder with a file system of its own mounted on it, unmounted and removed on drop.
pub struct Mounted {
    pub path: std::path::PathBuf,
    c_path: std::ffi::CString,
}

impl Mounted {
    /// A tmpfs: files there are mapped as themselves.
    pub fn tmpfs(tag: &str) -> Mounted {
        Mounted::new(tag, c"tmpfs", None)
    }

    /// An overlayfs with its layers in `under`, as a container's root is: its files are
    /// mapped through their layer's file.
    pub fn overlay(tag: &str, under: &Mounted) -> Mounted {
        let layer = |name: &str| {
            let dir = under.path.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir.to_str().unwrap().to_string()
        };
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            layer("lower"),
            layer("upper"),
            layer("work")
        );
        Mounted::new(tag, c"overlay", Some(&data))
    }

    fn new(tag: &str, fstype: &std::ffi::CStr, data: Option<&str>) -> Mounted {
        let path = std::env::temp_dir().join(format!("mmtrace-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let data = data.map(|d| std::ffi::CString::new(d).unwrap());
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                c_path.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting {fstype:?} on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Mounted { path, c_path }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unsafe { libc::umount2(self.c_path.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A new anonymous read-only page: one mmap.
pub fn read_only_page() -> *mut libc::c_void {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p
}

/// One mmap and one munmap of an anonymous page: two calls any test can count on.
pub fn map_and_unmap_a_page() {
    unsafe { libc::munmap(read_only_page(), 4096) };
}

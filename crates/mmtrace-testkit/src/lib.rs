//! What mmtrace's real-kernel tests share: the privilege gate, and a memory cgroup in which
//! the kernel's OOM killer can be provoked without harming the machine.

use std::fs;
use std::path::PathBuf;

/// Tests that load BPF programs need root (or CAP_BPF + CAP_PERFMON). Without those they skip
/// with a message, except under CI, where skipping would hide a broken suite: there they fail.
pub fn bpf_allowed() -> bool {
    // The loader's own check, so the tests skip exactly when mmtrace would refuse to start.
    if mmtrace_bpf::check_privileges().is_ok() {
        return true;
    }
    let why = "loading BPF programs needs root, or CAP_BPF and CAP_PERFMON";
    if std::env::var_os("CI").is_some() {
        panic!("CI must run the BPF tests: {why}");
    }
    eprintln!("skipping: {why}, which this test lacks");
    false
}

/// The calling thread's id.
pub fn tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The calling thread's name, as the kernel keeps it.
pub fn comm() -> String {
    fs::read_to_string("/proc/thread-self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

/// The id of this process's cgroup v2 (its directory's inode), or None without cgroup v2.
pub fn cgroup_id() -> Option<u64> {
    cgroup_id_of("self")
}

/// The id of the cgroup v2 of process `pid` ("self" for this one), or None without cgroup v2.
pub fn cgroup_id_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let root = mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
    })?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(fs::metadata(format!("{root}{path}")).ok()?.ino())
}

/// A fresh memory cgroup limited to `limit` bytes, v1 or v2 as the machine has it; removed
/// on drop. A process that outgrows it is killed by the kernel's OOM killer, alone.
pub struct Memcg {
    pub dir: PathBuf,
}

impl Memcg {
    pub fn new(tag: &str, limit: u64) -> Memcg {
        let name = format!("mmtrace-{tag}-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
            return Memcg { dir };
        }
        let root = PathBuf::from("/sys/fs/cgroup");
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        assert!(
            controllers.contains("memory"),
            "no memory cgroup controller, v1 or v2"
        );
        let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.max"), limit.to_string()).unwrap();
        Memcg { dir }
    }

    /// Forks a child that joins the cgroup and touches `bytes` of anonymous memory; returns
    /// its pid. The child makes only syscalls, as a fork of a threaded test must.
    pub fn spawn_hog(&self, bytes: usize) -> i32 {
        let procs =
            std::ffi::CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        match unsafe { libc::fork() } {
            0 => unsafe {
                let mut digits = [0u8; 12];
                let mut n = libc::getpid() as u32;
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                libc::write(fd, digits[i..].as_ptr().cast(), digits.len() - i);
                libc::close(fd);
                touch_anon(bytes);
                libc::_exit(0)
            },
            pid => pid,
        }
    }
}

/// Maps `bytes` of private anonymous memory and touches every page, with syscalls and memset
/// alone, so a child forked from a threaded test may call it.
pub fn touch_anon(bytes: usize) {
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::memset(p, 1, bytes);
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// How long a test waits for mmtrace to attach, or for a process to react, before calling it
/// hung: generous, because under emulation (the other kernels' VMs run under TCG) verifying
/// the programs alone takes tens of seconds on a busy machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(180);

/// A running `mmtrace trace`, started and attached.
pub struct Trace {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    /// The line that said it was attached.
    pub ready: String,
}

impl Trace {
    /// Runs `bin trace ARGS` and returns once it says its hooks are attached.
    pub fn start(bin: &str, args: &[&str], stdout: std::process::Stdio) -> Trace {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .arg("trace")
            .args(args)
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        // Read to the end, not only to the ready line, so a full pipe never blocks it.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = loop {
            let line = rx.recv_timeout(PATIENCE).expect("mmtrace never attached");
            if line.starts_with("mmtrace: tracing") {
                break line;
            }
        };
        Trace {
            child,
            stderr: rx,
            ready,
        }
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with `signal`; returns its exit code and the rest of its stderr.
    pub fn stop(mut self, signal: i32) -> (Option<i32>, String) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.iter().collect();
        (status.code(), rest.join("\n"))
    }
}

/// A running `mmtrace serve`, killed if the test ends without stopping it: left running, it
/// would go on counting every call on the machine, its hooks on.
pub struct Served {
    child: std::process::Child,
    /// The port the kernel gave it.
    pub port: u16,
}

impl Served {
    /// `bin serve --listen 127.0.0.1:0 ARGS`, once it says it serves, on the port it names
    /// (picked by serve itself, so parallel tests never race for one). Fails the test with
    /// what it said if it exits first.
    pub fn start(bin: &str, args: &[&str]) -> Served {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "mmtrace serve exited ({:?}) after saying:\n{}",
                    child.wait(),
                    said.join("\n")
                );
            };
            if let Some((_, rest)) = line.split_once("serving http://127.0.0.1:") {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
            said.push(line);
        };
        // The rest of its messages go on being read, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, port }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends it `signal`; its exit status, within `limit`.
    pub fn stop(&mut self, signal: i32, limit: std::time::Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, failing the test after `limit`.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

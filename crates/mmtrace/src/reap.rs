//! `mmtrace reap PID`: kill a process the way a userspace OOM killer does (pidfd_open, signal
//! through the pidfd, process_mrelease, wait) and measure how soon its memory comes back.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mmtrace_events::decode::{signal_name, signal_number};
use mmtrace_events::TracedText;

use crate::units::{mib, ms};

/// How long to wait for the victim to exit before giving up on measuring it.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The victim's resident memory from /proc/PID/status, in bytes; 0 once its memory is gone.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    anon: u64,
    file: u64,
    shmem: u64,
}

impl Rss {
    fn total(self) -> u64 {
        self.anon + self.file + self.shmem
    }

    fn read(pid: i32) -> Rss {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            return Rss::default();
        };
        let kb = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |v| v * 1024)
        };
        Rss {
            anon: kb("RssAnon:"),
            file: kb("RssFile:"),
            shmem: kb("RssShmem:"),
        }
    }
}

/// What a signal does to a process that has no handler for it, when that is not dying: with
/// these the kill could never end in a release, and no handler is to blame.
fn harmless(sig: u64) -> Option<&'static str> {
    match sig as i32 {
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Some("stops a process"),
        libc::SIGCONT => Some("resumes a process"),
        libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH => {
            Some("is ignored by a process unless it handles it")
        }
        _ => None,
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn run(pid: i32, signal: &str, release: bool, force: bool) -> anyhow::Result<()> {
    let Some(sig) = signal_number(signal).filter(|&s| s > 0) else {
        bail!(
            "unknown signal '{signal}': give a name such as KILL or TERM, or a number from 1 to 64"
        );
    };
    let sig_name = signal_name(sig);
    if let Some(what) = harmless(sig) {
        bail!("{sig_name} {what}, it does not kill it: nothing would be reaped; use --signal KILL (the default) or TERM");
    }
    if pid <= 0 {
        bail!("pid {pid} is not a process: give the pid of one process");
    }
    if pid == 1 {
        bail!("pid 1 is the init of mmtrace's pid namespace: killing it ends every process in the namespace, so mmtrace refuses it, even with --force; nothing was sent");
    }
    if pid as u32 == std::process::id() {
        bail!("pid {pid} is mmtrace itself: give the pid of another process");
    }
    // Probed before the kill, so a kernel without it fails with the victim still alive.
    if release {
        // SAFETY: plain syscalls on integers; -1 is never a valid fd.
        let r = unsafe { libc::syscall(libc::SYS_process_mrelease, -1, 0) };
        if r == -1 && errno() == libc::ENOSYS {
            bail!("this kernel has no process_mrelease (it needs Linux 5.15): nothing was killed; use --no-release to kill without it");
        }
    }
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        match errno() {
            libc::ESRCH => bail!("no process {pid}: it has exited or never existed; check the pid with `ps -p {pid}`"),
            libc::ENOSYS => bail!("this kernel has no pidfd_open (it needs Linux 5.3)"),
            libc::EINVAL => bail!("pid {pid} is a thread, not a process: give the pid of its process (its Tgid in /proc/{pid}/status)"),
            libc::EMFILE | libc::ENFILE => bail!("no file descriptor left for the pidfd: close some or raise `ulimit -n`"),
            e => return Err(io::Error::from_raw_os_error(e)).context(format!("pidfd_open({pid}) failed")),
        }
    }
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The victim chose its name: kept as bytes and escaped wherever it is printed.
    let comm = fs::read(format!("/proc/{pid}/comm"))
        .map(|mut c| {
            c.pop_if(|b| *b == b'\n');
            TracedText::from(c)
        })
        .unwrap_or_default();
    refuse(pid, &comm, force)?;
    // Read through /proc, which names a pid, not the process the pidfd holds: if that one is
    // still alive, the pid was not reused and what was read is about the process to be killed.
    if send_signal(&pidfd, 0) < 0 && errno() == libc::ESRCH {
        bail!("no process {pid}: it exited as mmtrace looked at it; nothing was sent");
    }
    let before = Rss::read(pid);

    // Said before the kill, so that nothing stands between the signal and process_mrelease.
    println!(
        "mmtrace: sending {sig_name} to {pid} ({comm}) through a pidfd; it holds {} resident (anon {}, file {}, shmem {})",
        mib(before.total()),
        mib(before.anon),
        mib(before.file),
        mib(before.shmem)
    );
    let killed = Instant::now();
    if send_signal(&pidfd, sig as i32) < 0 {
        match errno() {
            libc::EPERM => bail!("not permitted to signal process {pid} ({comm}): run mmtrace as its owner or as root"),
            libc::ESRCH => bail!("process {pid} ({comm}) exited before it could be signalled: nothing to reap"),
            e => return Err(io::Error::from_raw_os_error(e)).context(format!("pidfd_send_signal({pid}, {sig_name}) failed")),
        }
    }

    let mut reaped = None;
    if release {
        let start = Instant::now();
        // SAFETY: the pidfd is open; flags must be 0.
        let r = unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0) };
        // Both clocks stop here: reading the victim's RSS below takes milliseconds on a slow
        // machine and is not part of getting the memory back.
        let (took, back) = (start.elapsed(), killed.elapsed());
        let failed = errno();
        let after = Rss::read(pid);
        if r == 0 {
            reaped = Some(back);
            println!(
                "mmtrace: process_mrelease took {} and freed {} ({} of anonymous memory); {} still resident",
                ms(took),
                mib(before.total().saturating_sub(after.total())),
                mib(before.anon.saturating_sub(after.anon)),
                mib(after.total())
            );
        } else {
            match failed {
                // The victim got to its own exit first and is freeing its memory itself.
                libc::ESRCH => println!(
                    "mmtrace: process_mrelease lost the race (ESRCH, after {}): {pid} had already let go of its memory and frees it as it exits",
                    ms(took)
                ),
                libc::EINVAL => bail!("process_mrelease refused: {pid} ({comm}) is not dying after {sig_name} (it handles or ignores that signal): kill it with --signal KILL"),
                e @ (libc::EAGAIN | libc::EINTR) => println!(
                    "mmtrace: process_mrelease could reap only part of the memory ({}); the exit frees the rest",
                    if e == libc::EAGAIN { "EAGAIN" } else { "EINTR" }
                ),
                e => return Err(io::Error::from_raw_os_error(e)).context("process_mrelease failed"),
            }
        }
    }

    if wait_exit(&pidfd)?.is_none() {
        let waited = EXIT_WAIT.as_secs();
        if sig as i32 == libc::SIGKILL {
            // Nothing survives SIGKILL: the process is dying, held up in the kernel.
            let state = stat_fields(pid)
                .and_then(|f| f.first().cloned())
                .unwrap_or_else(|| "?".into());
            bail!("{pid} ({comm}) did not exit within {waited} s of SIGKILL (state {state} in /proc/{pid}/stat; D is a wait in the kernel that a signal cannot cut short): it exits when that wait ends; mmtrace stopped waiting");
        }
        bail!("{pid} ({comm}) did not exit within {waited} s of {sig_name}: it handles or ignores the signal; try --signal KILL");
    }
    let exit = killed.elapsed();
    let (back, by) = match reaped {
        Some(t) if t < exit => (t, "process_mrelease"),
        _ => (exit, "exit"),
    };
    println!(
        "mmtrace: {pid} exited {} after the kill; memory back {} after the kill (by {by})",
        ms(exit),
        ms(back),
    );
    println!("mmtrace: freed {} in all", mib(before.total()));
    Ok(())
}

/// Sends `sig` (0 only checks that the process is alive) through the pidfd; -1 on failure,
/// with errno set.
fn send_signal(pidfd: &OwnedFd, sig: i32) -> libc::c_long {
    // SAFETY: the pidfd is open; info NULL means "as kill(2) would".
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<u8>(),
            0,
        )
    }
}

/// The fields of /proc/PID/stat after the command's name (which may hold spaces and
/// parentheses of its own), from the state on.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let at = stat.iter().rposition(|&b| b == b')')?;
    let rest = String::from_utf8_lossy(&stat[at + 1..]).into_owned();
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The kernel's flag for a kernel thread, in /proc/PID/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// The pids above mmtrace, its parent first, up to the top of its pid namespace.
fn ancestors() -> Vec<i32> {
    let mut chain = Vec::new();
    let mut pid = std::os::unix::process::parent_id() as i32;
    // Bounded all the same: a parent's parent is read at a later moment than the parent, and
    // a pid reused in between must not keep the walk going.
    while pid > 0 && chain.len() < 4096 && !chain.contains(&pid) {
        chain.push(pid);
        pid = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
    }
    chain
}

/// Fails, before anything is sent, when `pid` is a process mmtrace must not kill: a kernel
/// thread (which no signal ends, so the wait could only time out) always, and without
/// `force` an ancestor of mmtrace, such as the shell that runs it.
fn refuse(pid: i32, comm: &TracedText, force: bool) -> anyhow::Result<()> {
    let flags = stat_fields(pid)
        .and_then(|f| f.get(6).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        bail!("pid {pid} ({comm}) is a kernel thread: no signal ends it and it holds no user memory, so mmtrace refuses it, even with --force; nothing was sent");
    }
    if !force {
        if let Some(up) = ancestors().iter().position(|&a| a == pid) {
            let whose = match up {
                0 => "the parent of mmtrace".to_string(),
                n => format!("an ancestor of mmtrace, {} levels up", n + 1),
            };
            bail!("pid {pid} ({comm}) is {whose}: killing it would end what mmtrace runs under (a shell, a session); nothing was sent; give --force to kill it all the same");
        }
    }
    Ok(())
}

/// Waits for the pidfd to become readable, which the kernel does when the process exits.
fn wait_exit(pidfd: &OwnedFd) -> anyhow::Result<Option<()>> {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds = [libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                1,
                left.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        match n {
            1.. => return Ok(Some(())),
            0 => return Ok(None),
            _ if errno() == libc::EINTR => continue,
            _ => return Err(io::Error::last_os_error()).context("waiting for the process to exit"),
        }
    }
}

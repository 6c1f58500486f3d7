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

pub fn run(pid: i32, signal: &str, release: bool) -> anyhow::Result<()> {
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
    // The victim chose its name: kept as bytes and escaped wherever it is printed.
    let comm = fs::read(format!("/proc/{pid}/comm"))
        .map(|mut c| {
            c.pop_if(|b| *b == b'\n');
            TracedText::from(c)
        })
        .unwrap_or_default();
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
    // SAFETY: the pidfd is open; info NULL means "as kill(2) would".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
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
        bail!("{pid} ({comm}) did not exit within {} s of {sig_name}: it handles or ignores the signal; try --signal KILL", EXIT_WAIT.as_secs());
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

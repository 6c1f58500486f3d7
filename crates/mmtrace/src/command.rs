//! Starts the command to trace, held before exec until the tracer is attached, so nothing it
//! does is missed; then reports how it ended.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// A forked child waiting on a pipe before exec.
pub struct TracedCommand {
    pid: libc::pid_t,
    go: Option<std::os::fd::OwnedFd>,
    status: Option<i32>,
}

/// Who the command runs as, resolved before fork so the child makes only syscalls.
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl TracedCommand {
    /// Forks the child; it execs `argv` once `release` is called. With `stdout_to_stderr` its
    /// standard output is mmtrace's standard error, so it cannot mix into events on stdout.
    pub fn spawn(
        argv: &[String],
        user: Option<&str>,
        stdout_to_stderr: bool,
    ) -> anyhow::Result<TracedCommand> {
        let program = find_program(&argv[0])?;
        let identity = user.map(identity).transpose()?;
        let c_program = CString::new(program.as_os_str().as_bytes())?;
        let c_args: Vec<CString> = argv
            .iter()
            .map(|a| {
                CString::new(a.as_bytes()).context("an argument of the command holds a NUL byte")
            })
            .collect::<Result<_, _>>()?;
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());
        let (wait_end, go_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .context("creating the pipe that holds the command until tracing starts")?;

        // SAFETY: mmtrace has no other threads yet; the child only makes syscalls and execs.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("forking the command"),
            0 => {
                drop(go_end);
                // Rust ignores SIGPIPE, and an ignored signal stays ignored across exec: the
                // command must die of a closed pipe as it would under a shell.
                // SAFETY: async-signal-safe calls only.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
                if stdout_to_stderr {
                    // SAFETY: duplicates a descriptor this process holds.
                    unsafe { libc::dup2(2, 1) };
                }
                let mut byte = [0u8];
                // EOF instead of a byte means mmtrace gave up: do not run untraced.
                if rustix::io::read(&wait_end, &mut byte) != Ok(1) {
                    unsafe { libc::_exit(126) };
                }
                if let Some(id) = &identity {
                    // SAFETY: plain syscalls on values prepared before fork.
                    unsafe {
                        if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                            || libc::setgid(id.gid) != 0
                            || libc::setuid(id.uid) != 0
                        {
                            child_fail(b"mmtrace: error: cannot switch to the --user identity\n");
                        }
                    }
                }
                // SAFETY: argv is NUL-terminated and outlives the call.
                unsafe { libc::execv(c_program.as_ptr(), c_argv.as_ptr()) };
                child_fail(b"mmtrace: error: cannot execute the command\n");
            }
            pid => Ok(TracedCommand {
                pid,
                go: Some(go_end),
                status: None,
            }),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the child exec.
    pub fn release(&mut self) -> anyhow::Result<()> {
        if let Some(go) = self.go.take() {
            rustix::io::write(&go, &[1]).context("starting the command")?;
        }
        Ok(())
    }

    /// Passes `signal` on to the command, unless it has been reaped (its pid may be reused).
    pub fn signal(&mut self, signal: i32) {
        if self.poll_exit().is_none() {
            // SAFETY: signals only our own child, not yet reaped.
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// Whether the command is in mmtrace's process group, and so gets the terminal's Ctrl-C
    /// itself.
    pub fn in_our_group(&self) -> bool {
        // SAFETY: plain queries.
        unsafe { libc::getpgid(self.pid) == libc::getpgid(0) }
    }

    /// The exit code the shell would show, once the command has ended.
    pub fn poll_exit(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut status = 0;
            // SAFETY: waits only for our own child.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                self.status = Some(if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    libc::WEXITSTATUS(status)
                });
            }
        }
        self.status
    }
}

impl Drop for TracedCommand {
    /// A command never released is killed: it must not run untraced.
    fn drop(&mut self) {
        if self.go.is_some() {
            // SAFETY: signals and reaps only our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn child_fail(msg: &[u8]) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The program's path, searched in PATH as a shell would, so a typo fails before tracing.
fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let executable =
        |p: &Path| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file();
    if name.contains('/') {
        let p = PathBuf::from(name);
        if executable(&p) {
            return Ok(p);
        }
        let why = match p.metadata() {
            Err(_) => "no such file",
            Ok(m) if m.is_dir() => "it is a directory",
            Ok(_) => "it is not executable: set its execute permission (chmod +x) or run it through its interpreter",
        };
        bail!("cannot run '{name}': {why}");
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(OsStr::new(name)))
        .find(|p| executable(p))
        .ok_or_else(|| anyhow::anyhow!("command not found: '{name}' is not in PATH"))
}

fn identity(name: &str) -> anyhow::Result<Identity> {
    if !rustix::process::geteuid().is_root() {
        bail!("--user needs mmtrace to run as root (for example under sudo)");
    }
    let c_name = CString::new(name).context("--user holds a NUL byte")?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live buffers of the sizes given.
    unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    // A number that names no user is a uid, as for sudo -u '#UID' and chown.
    let uid = name.parse::<libc::uid_t>().ok();
    if let (true, Some(uid)) = (found.is_null(), uid) {
        // SAFETY: as above.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if found.is_null() {
            bail!("--user {name}: no user has uid {uid}: add one, or give a user name");
        }
    }
    if found.is_null() {
        bail!("--user {name}: no such user");
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: groups has room for n entries; n is updated to the count; pw_name points into buf.
    if unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut n) } < 0 {
        bail!("--user {name}: belongs to more than 256 groups");
    }
    groups.truncate(n as usize);
    Ok(Identity {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        groups,
    })
}

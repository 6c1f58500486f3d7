//! Which limit an OOM kill came from, as the kernel's own report of the kill says it in its
//! log (/dev/kmsg): the `oom-kill:constraint=...,oom_memcg=...,task_memcg=...,task=...,pid=N`
//! line the OOM killer prints just before it marks the victim and, for a memory cgroup, the
//! `memory: usage NkB, limit NkB, failcnt N` line of that cgroup a little before it.
//!
//! Why the log and not the kernel side: oom:mark_victim carries neither the constraint nor
//! the cgroup, and working out in BPF which ancestor's page counter reached its max would
//! guess, across kernels' layouts and cgroup versions, what the kernel already states. Why
//! not the cgroup's files: read when the event arrives, they have moved on (the victim is
//! exiting, failcnt keeps counting), while the report's figures are those the kernel decided
//! on. The report is printed before the tracepoint fires, so it is in the log by the time
//! its event is read from the ring.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use mmtrace_events::enrich::{OomLimit, Psi};
use mmtrace_events::TracedText;

/// Reports kept for victims whose event has not come yet: a burst of kills is at most a few.
const KEEP: usize = 64;

/// The kernel log, read from where it stood when tracing began.
pub struct KernelLog {
    log: Result<File, String>,
    /// The latest `memory: usage` line: usage, limit (kB) and failcnt, for the report after it.
    usage: Option<[u64; 3]>,
    /// Reports not yet claimed by their event, oldest first.
    reports: VecDeque<(u32, OomLimit)>,
    hierarchy: Option<Hierarchy>,
}

/// Where the memory controller's cgroups are mounted, and its version.
struct Hierarchy {
    /// The mount point, and the cgroup it shows: not the hierarchy's root in a cgroup
    /// namespace, while the kernel's paths start at that root.
    point: PathBuf,
    root: Vec<u8>,
    version: u8,
}

impl KernelLog {
    /// Opens the log at its end: only kills from now on are matched.
    pub fn open() -> KernelLog {
        let log = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .and_then(|mut f| f.seek(SeekFrom::End(0)).map(|_| f))
            .map_err(|e| format!("/dev/kmsg is unreadable ({e})"));
        KernelLog {
            log,
            usage: None,
            reports: VecDeque::new(),
            hierarchy: Hierarchy::find(),
        }
    }

    /// Why kills cannot say which limit fired, if they cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.log.as_ref().err().map(String::as_str)
    }

    /// The limit behind the kill of `pid` (the host's pid, as oom:mark_victim gives it).
    pub fn limit_of(&mut self, pid: u32) -> OomLimit {
        if let Err(why) = &self.log {
            return unknown(why.clone());
        }
        self.read_new();
        let Some(i) = self.reports.iter().rposition(|(p, _)| *p == pid) else {
            return unknown(
                "the kernel's log has no report of this kill (it reports at most 10 OOM \
                 kills in 5 s, or its buffer wrapped)"
                    .into(),
            );
        };
        let (_, mut limit) = self.reports.remove(i).unwrap_or_default();
        if let (Some(h), Some(cgroup)) = (&self.hierarchy, &limit.cgroup) {
            limit.cgroup_version = Some(h.version);
            if h.version == 2 {
                limit.pressure = h.pressure(cgroup.as_bytes());
            }
        }
        limit
    }

    /// Everything the log gained since the last read.
    fn read_new(&mut self) {
        let Ok(log) = &mut self.log else { return };
        // One record per read; the kernel refuses a buffer smaller than the record.
        let mut buf = vec![0u8; 8192];
        loop {
            match log.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let message = message(&buf[..n]);
                    if let Some(u) = usage_line(message) {
                        self.usage = Some(u);
                    } else if let Some((pid, mut limit)) = report_line(message) {
                        // The usage line belongs to a memory cgroup's report only.
                        if let (Some([usage, max, failcnt]), Some(_)) =
                            (self.usage.take(), &limit.cgroup)
                        {
                            limit.usage_bytes = Some(usage * 1024);
                            limit.limit_bytes = Some(max * 1024);
                            limit.failcnt = Some(failcnt);
                        }
                        if self.reports.len() == KEEP {
                            self.reports.pop_front();
                        }
                        self.reports.push_back((pid, limit));
                    }
                }
                // Records were overwritten before they were read: the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                // EAGAIN: nothing more for now.
                Err(_) => break,
            }
        }
    }
}

fn unknown(why: String) -> OomLimit {
    OomLimit {
        unread: Some(why),
        ..OomLimit::default()
    }
}

impl Hierarchy {
    /// The memory controller's mount, from this process's mountinfo: a cgroup2 mount whose
    /// root offers the memory controller, else a v1 mount with the memory option.
    fn find() -> Option<Hierarchy> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut v1 = None;
        for line in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS] - FSTYPE SOURCE SUPEROPTIONS
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let (Some(root), Some(point)) = (l.nth(3), l.next()) else {
                continue;
            };
            let mut r = right.split(' ');
            let (fstype, options) = (r.next(), r.nth(1).unwrap_or(""));
            let (point, root) = (
                PathBuf::from(unescape_mount(point)),
                unescape_mount(root).into_bytes(),
            );
            match fstype {
                Some("cgroup2") => {
                    let controllers =
                        fs::read_to_string(point.join("cgroup.controllers")).unwrap_or_default();
                    if controllers.split_whitespace().any(|c| c == "memory") {
                        return Some(Hierarchy {
                            point,
                            root,
                            version: 2,
                        });
                    }
                }
                Some("cgroup") if options.split(',').any(|o| o == "memory") => {
                    v1 = Some(Hierarchy {
                        point,
                        root,
                        version: 1,
                    });
                }
                _ => {}
            }
        }
        v1
    }

    fn pressure(&self, cgroup: &[u8]) -> Option<Psi> {
        use std::os::unix::ffi::OsStrExt;
        let root = self.root.strip_suffix(b"/").unwrap_or(&self.root);
        let below = cgroup
            .strip_prefix(root)
            .filter(|b| b.is_empty() || b.starts_with(b"/"))?;
        let below = std::ffi::OsStr::from_bytes(below.strip_prefix(b"/").unwrap_or(below));
        Psi::parse(&fs::read_to_string(self.point.join(below).join("memory.pressure")).ok()?)
    }
}

/// mountinfo writes space, tab, newline and backslash in octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A /dev/kmsg record's message: after `PRI,SEQ,TS,FLAGS;`, up to the line that ends it
/// (dictionary lines may follow).
fn message(record: &[u8]) -> &str {
    let text = record
        .iter()
        .position(|&b| b == b';')
        .map_or(&[][..], |i| &record[i + 1..]);
    let text = text.split(|&b| b == b'\n').next().unwrap_or_default();
    // The kernel escapes every byte outside printable ASCII as \xNN.
    std::str::from_utf8(text).unwrap_or_default()
}

/// `memory: usage 32768kB, limit 32768kB, failcnt 78`: usage, limit, failcnt.
fn usage_line(message: &str) -> Option<[u64; 3]> {
    let rest = message.strip_prefix("memory: usage ")?;
    let (usage, rest) = rest.split_once("kB, limit ")?;
    let (limit, failcnt) = rest.split_once("kB, failcnt ")?;
    Some([
        usage.parse().ok()?,
        limit.parse().ok()?,
        failcnt.parse().ok()?,
    ])
}

/// `oom-kill:constraint=C,nodemask=..,cpuset=..,mems_allowed=..[,oom_memcg=X],task_memcg=Y,
/// task=COMM,pid=N,uid=U`: the victim's pid and what the line says of the limit.
fn report_line(message: &str) -> Option<(u32, OomLimit)> {
    let rest = message.strip_prefix("oom-kill:")?;
    let constraint = rest.strip_prefix("constraint=")?.split(',').next()?;
    // The pid from the end, where only numbers are. The victim's name, its own choice, may
    // hold anything, and comes after the cgroups: they end at the first ",task=". A cgroup
    // named with ",task=" in it (by whoever may make cgroups) could still mislead this.
    let (rest, _uid) = rest.rsplit_once(",uid=")?;
    let (rest, pid) = rest.rsplit_once(",pid=")?;
    // Without the memory controller the kernel names no cgroups at all.
    let (head, task_cgroup) = match rest.split_once(",task_memcg=") {
        Some((head, tail)) => (head, tail.split_once(",task=").map(|(c, _)| c)),
        None => (rest, None),
    };
    let cgroup = head.rsplit_once(",oom_memcg=").map(|(_, c)| c);
    Some((
        pid.parse().ok()?,
        OomLimit {
            constraint: Some(constraint.to_string()),
            cgroup: cgroup.map(unescape_kmsg),
            task_cgroup: task_cgroup.map(unescape_kmsg),
            ..OomLimit::default()
        },
    ))
}

/// The bytes behind the kernel's \xNN escapes.
fn unescape_kmsg(s: &str) -> TracedText {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes();
    while let Some((&b, rest)) = bytes.split_first() {
        let hex = rest
            .strip_prefix(b"x")
            .and_then(|r| r.get(..2))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b, hex) {
            (b'\\', Some(v)) => {
                out.push(v);
                bytes = &rest[3..];
            }
            _ => {
                out.push(b);
                bytes = rest;
            }
        }
    }
    TracedText::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as this machine's kernel (6.18, cgroup v1) wrote them for a memcg OOM kill.
    #[test]
    fn a_memcg_report_reads_into_its_figures() {
        let usage = b"6,1234,421641956,-;memory: usage 32768kB, limit 32768kB, failcnt 78\n";
        assert_eq!(usage_line(message(usage)), Some([32768, 32768, 78]));
        let report = b"3,1300,421642277,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\
            cpuset=/,mems_allowed=0,oom_memcg=/oomfmt-probe,task_memcg=/oomfmt-probe/inner,\
            task=python3,pid=27768,uid=0\n SUBSYSTEM=x\n";
        let (pid, limit) = report_line(message(report)).unwrap();
        assert_eq!(pid, 27768);
        assert_eq!(limit.scope(), "cgroup");
        assert_eq!(limit.cgroup.unwrap(), "/oomfmt-probe");
        assert_eq!(limit.task_cgroup.unwrap(), "/oomfmt-probe/inner");
    }

    #[test]
    fn a_system_report_has_no_cgroup_limit() {
        let report = b"3,9,1,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,\
            mems_allowed=0,global_oom,task_memcg=/user.slice,task=big,pid=4242,uid=1000";
        let (pid, limit) = report_line(message(report)).unwrap();
        assert_eq!((pid, limit.scope()), (4242, "system"));
        assert_eq!(limit.cgroup, None);
        assert_eq!(limit.task_cgroup.unwrap(), "/user.slice");
    }

    #[test]
    fn a_hostile_name_and_escaped_paths_do_not_mislead() {
        // The victim named itself to look like more fields; its cgroup has a space and a
        // newline, which the kernel escapes.
        let report = b"3,9,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,\
            mems_allowed=0,oom_memcg=/a\\x20b,task_memcg=/a\\x20b/c\\x0a,task=x,task_memcg=/y,pid=1,uid=2,pid=77,uid=0";
        let (pid, limit) = report_line(message(report)).unwrap();
        assert_eq!(pid, 77);
        assert_eq!(limit.cgroup.unwrap(), "/a b");
        assert_eq!(limit.task_cgroup.unwrap(), "/a b/c\n");
    }
}

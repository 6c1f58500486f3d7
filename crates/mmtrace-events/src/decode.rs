//! Decoders from raw syscall values to the names users know: flags, advice, signals, errnos.

use std::fmt::{self, Write};

/// A named bit set: each (bit, name) pair; bits not in the table print as hex.
type Bits = &'static [(u64, &'static str)];

/// The bits the enrichment and the analysis test, named once for them and for the tables.
pub const PROT_WRITE: u64 = 0x2;
pub const PROT_EXEC: u64 = 0x4;
pub const MAP_LOCKED: u64 = 0x2000;
pub const MCL_CURRENT: u64 = 0x1;
pub const MCL_FUTURE: u64 = 0x2;
pub const MCL_ONFAULT: u64 = 0x4;

/// Whether a protection is writable and executable at once: what Tracee's W+X alerts and
/// the analysis look for.
pub fn write_and_exec(prot: u64) -> bool {
    prot & (PROT_WRITE | PROT_EXEC) == PROT_WRITE | PROT_EXEC
}

const PROT: Bits = &[
    (0x1, "PROT_READ"),
    (PROT_WRITE, "PROT_WRITE"),
    (PROT_EXEC, "PROT_EXEC"),
    (0x8, "PROT_SEM"),
    (0x0100_0000, "PROT_GROWSDOWN"),
    (0x0200_0000, "PROT_GROWSUP"),
];

/// MAP_* bits after the mapping type (the low nibble) is taken out.
const MAP: Bits = &[
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x40, "MAP_32BIT"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (MAP_LOCKED, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x10_0000, "MAP_FIXED_NOREPLACE"),
    (0x400_0000, "MAP_UNINITIALIZED"),
];
const MAP_HUGETLB: u64 = 0x40000;
const MAP_HUGE_SHIFT: u32 = 26;

const MLOCK: Bits = &[(0x1, "MLOCK_ONFAULT")];
const MCL: Bits = &[
    (MCL_CURRENT, "MCL_CURRENT"),
    (MCL_FUTURE, "MCL_FUTURE"),
    (MCL_ONFAULT, "MCL_ONFAULT"),
];
const MREMAP: Bits = &[
    (0x1, "MREMAP_MAYMOVE"),
    (0x2, "MREMAP_FIXED"),
    (0x4, "MREMAP_DONTUNMAP"),
];
const CLOEXEC: Bits = &[(0x80000, "O_CLOEXEC")];
const PIDFD_OPEN: Bits = &[(0x80, "PIDFD_THREAD"), (0x800, "PIDFD_NONBLOCK")];
const PIDFD_SIGNAL: Bits = &[
    (0x1, "PIDFD_SIGNAL_THREAD"),
    (0x2, "PIDFD_SIGNAL_THREAD_GROUP"),
    (0x4, "PIDFD_SIGNAL_PROCESS_GROUP"),
];

const MADV: &[(u64, &str)] = &[
    (0, "MADV_NORMAL"),
    (1, "MADV_RANDOM"),
    (2, "MADV_SEQUENTIAL"),
    (3, "MADV_WILLNEED"),
    (4, "MADV_DONTNEED"),
    (8, "MADV_FREE"),
    (9, "MADV_REMOVE"),
    (10, "MADV_DONTFORK"),
    (11, "MADV_DOFORK"),
    (12, "MADV_MERGEABLE"),
    (13, "MADV_UNMERGEABLE"),
    (14, "MADV_HUGEPAGE"),
    (15, "MADV_NOHUGEPAGE"),
    (16, "MADV_DONTDUMP"),
    (17, "MADV_DODUMP"),
    (18, "MADV_WIPEONFORK"),
    (19, "MADV_KEEPONFORK"),
    (20, "MADV_COLD"),
    (21, "MADV_PAGEOUT"),
    (22, "MADV_POPULATE_READ"),
    (23, "MADV_POPULATE_WRITE"),
    (24, "MADV_DONTNEED_LOCKED"),
    (25, "MADV_COLLAPSE"),
    (100, "MADV_HWPOISON"),
    (101, "MADV_SOFT_OFFLINE"),
    (102, "MADV_GUARD_INSTALL"),
    (103, "MADV_GUARD_REMOVE"),
];

const SIGNALS: [&str; 32] = [
    "0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];
const SIGRTMIN: u64 = 32;
const SIGRTMAX: u64 = 64;

/// Linux errno names, indexed by number (asm-generic/errno-base.h and errno.h).
const ERRNOS: [&str; 134] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// Kernel-internal restart codes a traced thread can see at syscall exit (include/linux/errno.h).
const KERNEL_ERRNOS: [(u64, &str); 5] = [
    (512, "ERESTARTSYS"),
    (513, "ERESTARTNOINTR"),
    (514, "ERESTARTNOHAND"),
    (515, "ENOIOCTLCMD"),
    (516, "ERESTART_RESTARTBLOCK"),
];

/// How a raw argument value turns into names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// No names: the raw value is the whole story.
    None,
    Prot,
    MapFlags,
    MlockFlags,
    MclFlags,
    Madvise,
    MremapFlags,
    Signal,
    CloexecFlags,
    PidfdOpenFlags,
    PidfdSignalFlags,
}

impl Decoder {
    /// The decoded form of `raw`, or None where there is nothing to name.
    pub fn decode(self, raw: u64) -> Option<String> {
        let mut out = String::new();
        self.write(raw, &mut out).ok()?.then_some(out)
    }

    /// Writes the decoded form of `raw` to `out`; Ok(false), with nothing written, where there
    /// is nothing to name. The outputs write straight into their line: a String for each
    /// decoded value cost more than the rest of a JSON line.
    pub fn write(self, raw: u64, out: &mut impl Write) -> Result<bool, fmt::Error> {
        match self {
            Decoder::None => return Ok(false),
            Decoder::Prot if raw == 0 => out.write_str("PROT_NONE")?,
            Decoder::Prot => bits(out, PROT, raw)?,
            Decoder::MapFlags => map_flags(out, raw)?,
            Decoder::MlockFlags => bits(out, MLOCK, raw)?,
            Decoder::MclFlags => bits(out, MCL, raw)?,
            Decoder::Madvise => enumerated(out, MADV, raw)?,
            Decoder::MremapFlags => bits(out, MREMAP, raw)?,
            Decoder::Signal => write_signal(out, raw)?,
            Decoder::CloexecFlags => bits(out, CLOEXEC, raw)?,
            Decoder::PidfdOpenFlags => bits(out, PIDFD_OPEN, raw)?,
            Decoder::PidfdSignalFlags => bits(out, PIDFD_SIGNAL, raw)?,
        }
        Ok(true)
    }

    /// Every name this decoder knows with its value, for documentation and for filters that
    /// accept names in place of numbers.
    pub fn names(self) -> Vec<(&'static str, u64)> {
        let table: &[(u64, &str)] = match self {
            Decoder::None => &[],
            Decoder::Prot => PROT,
            Decoder::MapFlags => MAP,
            Decoder::MlockFlags => MLOCK,
            Decoder::MclFlags => MCL,
            Decoder::Madvise => MADV,
            Decoder::MremapFlags => MREMAP,
            Decoder::CloexecFlags => CLOEXEC,
            Decoder::PidfdOpenFlags => PIDFD_OPEN,
            Decoder::PidfdSignalFlags => PIDFD_SIGNAL,
            Decoder::Signal => {
                return (1..SIGNALS.len()).map(|n| (SIGNALS[n], n as u64)).collect();
            }
        };
        let mut names: Vec<_> = table.iter().map(|&(v, n)| (n, v)).collect();
        match self {
            Decoder::Prot => names.insert(0, ("PROT_NONE", 0)),
            Decoder::MapFlags => names
                .splice(
                    0..0,
                    [
                        ("MAP_SHARED", 1),
                        ("MAP_PRIVATE", 2),
                        ("MAP_SHARED_VALIDATE", 3),
                    ],
                )
                .for_each(drop),
            _ => {}
        }
        names
    }

    /// The flags `write` wrote as `text` (names joined by '|', an unnamed rest in hex), as a
    /// recording holds them; None when a part names nothing.
    pub fn parse_flags(self, text: &str) -> Option<u64> {
        text.split('|').try_fold(0, |value, part| {
            let bits = match part.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => self.value_of(part)?,
            };
            Some(value | bits)
        })
    }

    /// The value of one name, for filters such as `mlock2.data.flags=MLOCK_ONFAULT`.
    pub fn value_of(self, name: &str) -> Option<u64> {
        if self == Decoder::Signal {
            return signal_number(name);
        }
        self.names()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The names of the bits of `raw` joined by '|', with any unnamed rest in hex.
fn bits(out: &mut impl Write, table: Bits, raw: u64) -> fmt::Result {
    let mut parts = Parts::new(out);
    let mut rest = raw;
    for &(bit, name) in table {
        if raw & bit == bit {
            parts.next()?.write_str(name)?;
            rest &= !bit;
        }
    }
    if rest != 0 || !parts.written {
        write!(parts.next()?, "{rest:#x}")?;
    }
    Ok(())
}

/// Puts '|' between parts.
struct Parts<'a, W: Write> {
    out: &'a mut W,
    written: bool,
}

impl<'a, W: Write> Parts<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Parts {
            out,
            written: false,
        }
    }

    /// Where the next part goes, after its separator.
    fn next(&mut self) -> Result<&mut W, fmt::Error> {
        if self.written {
            self.out.write_char('|')?;
        }
        self.written = true;
        Ok(self.out)
    }
}

fn map_flags(out: &mut impl Write, raw: u64) -> fmt::Result {
    let mut rest = raw & !0xf;
    let mut parts = Parts::new(out);
    match raw & 0xf {
        1 => parts.next()?.write_str("MAP_SHARED")?,
        2 => parts.next()?.write_str("MAP_PRIVATE")?,
        3 => parts.next()?.write_str("MAP_SHARED_VALIDATE")?,
        0 if rest != 0 => {}
        other => write!(parts.next()?, "{other:#x}")?,
    }
    // With MAP_HUGETLB bits 26-31 carry log2 of the page size, not MAP_UNINITIALIZED; bits
    // above them are no size (flags are an unsigned long to the kernel).
    let shift = (rest >> MAP_HUGE_SHIFT) & 0x3f;
    if raw & MAP_HUGETLB != 0 && shift != 0 {
        rest &= !(0x3f << MAP_HUGE_SHIFT);
        write!(parts.next()?, "MAP_HUGE_{}", huge_size(shift))?;
    }
    if rest != 0 {
        bits(parts.next()?, MAP, rest)?;
    }
    Ok(())
}

fn huge_size(shift: u64) -> String {
    match shift {
        30.. => format!("{}GB", 1u64 << (shift - 30)),
        20.. => format!("{}MB", 1u64 << (shift - 20)),
        10.. => format!("{}KB", 1u64 << (shift - 10)),
        _ => format!("{}B", 1u64 << shift),
    }
}

fn enumerated(out: &mut impl Write, table: &[(u64, &str)], raw: u64) -> fmt::Result {
    match table.iter().find(|&&(v, _)| v == raw) {
        Some(&(_, name)) => out.write_str(name),
        None => write!(out, "{raw}"),
    }
}

fn write_signal(out: &mut impl Write, sig: u64) -> fmt::Result {
    match sig {
        1..32 => out.write_str(SIGNALS[sig as usize]),
        SIGRTMIN => out.write_str("SIGRTMIN"),
        33..=SIGRTMAX => write!(out, "SIGRTMIN+{}", sig - SIGRTMIN),
        _ => write!(out, "{sig}"),
    }
}

/// `SIGKILL`, `SIGRTMIN+3`, or the number for anything else.
pub fn signal_name(sig: u64) -> String {
    let mut out = String::new();
    let _ = write_signal(&mut out, sig);
    out
}

/// Accepts `SIGKILL`, `KILL`, `sigkill`, `SIGRTMIN+2` or a number.
pub fn signal_number(name: &str) -> Option<u64> {
    if let Ok(n) = name.parse::<u64>() {
        return (n <= SIGRTMAX).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse::<u64>().ok()?
        };
        return (SIGRTMIN + off <= SIGRTMAX).then_some(SIGRTMIN + off);
    }
    (1..SIGNALS.len())
        .find(|&n| &SIGNALS[n][3..] == bare)
        .map(|n| n as u64)
}

/// `EINVAL` for 22; None for numbers with no name.
pub fn errno_name(errno: u64) -> Option<&'static str> {
    match ERRNOS.get(errno as usize) {
        Some(name) if !name.is_empty() => Some(name),
        _ => KERNEL_ERRNOS
            .iter()
            .find(|&&(n, _)| n == errno)
            .map(|&(_, name)| name),
    }
}

/// The number of an errno name such as `EINVAL` (case-insensitive).
pub fn errno_number(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    ERRNOS
        .iter()
        .position(|n| !n.is_empty() && *n == upper)
        .map(|n| n as u64)
        .or_else(|| {
            KERNEL_ERRNOS
                .iter()
                .find(|(_, n)| *n == upper)
                .map(|&(v, _)| v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_flags_read_back() {
        for prot in (0..64).chain([0x0100_0007, 0x4000_0001]) {
            let text = Decoder::Prot.decode(prot).unwrap();
            assert_eq!(Decoder::Prot.parse_flags(&text), Some(prot), "{text}");
        }
        assert_eq!(Decoder::Prot.parse_flags(""), None);
        assert_eq!(Decoder::Prot.parse_flags("PROT_READ|PROT_WRONG"), None);
    }

    #[test]
    fn prot() {
        assert_eq!(Decoder::Prot.decode(0).unwrap(), "PROT_NONE");
        assert_eq!(Decoder::Prot.decode(3).unwrap(), "PROT_READ|PROT_WRITE");
        assert_eq!(
            Decoder::Prot.decode(7).unwrap(),
            "PROT_READ|PROT_WRITE|PROT_EXEC"
        );
        assert_eq!(Decoder::Prot.decode(0x11).unwrap(), "PROT_READ|0x10");
    }

    #[test]
    fn map_flags() {
        assert_eq!(
            Decoder::MapFlags.decode(0x22).unwrap(),
            "MAP_PRIVATE|MAP_ANONYMOUS"
        );
        assert_eq!(
            Decoder::MapFlags.decode(0x2001).unwrap(),
            "MAP_SHARED|MAP_LOCKED"
        );
        assert_eq!(
            Decoder::MapFlags.decode(0x3).unwrap(),
            "MAP_SHARED_VALIDATE"
        );
        // MAP_HUGETLB with MAP_HUGE_2MB (21 << 26).
        assert_eq!(
            Decoder::MapFlags
                .decode(0x22 | 0x40000 | (21 << 26))
                .unwrap(),
            "MAP_PRIVATE|MAP_HUGE_2MB|MAP_ANONYMOUS|MAP_HUGETLB"
        );
        assert_eq!(
            Decoder::MapFlags.decode(0x22 | 0x400_0000).unwrap(),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_UNINITIALIZED"
        );
        assert_eq!(
            Decoder::MapFlags
                .decode(0x22 | 0x40000 | (1 << 32))
                .unwrap(),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|0x100000000"
        );
        assert_eq!(Decoder::MapFlags.decode(0x0).unwrap(), "0x0");
        assert_eq!(
            Decoder::MapFlags.decode(0x2 | 0x8000_0000_0000).unwrap(),
            "MAP_PRIVATE|0x800000000000"
        );
    }

    #[test]
    fn lock_flags() {
        assert_eq!(Decoder::MlockFlags.decode(1).unwrap(), "MLOCK_ONFAULT");
        assert_eq!(Decoder::MlockFlags.decode(0).unwrap(), "0x0");
        assert_eq!(Decoder::MlockFlags.decode(3).unwrap(), "MLOCK_ONFAULT|0x2");
        assert_eq!(
            Decoder::MclFlags.decode(7).unwrap(),
            "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT"
        );
        assert_eq!(Decoder::MclFlags.decode(0x10).unwrap(), "0x10");
    }

    #[test]
    fn advice_and_remap() {
        assert_eq!(Decoder::Madvise.decode(4).unwrap(), "MADV_DONTNEED");
        assert_eq!(Decoder::Madvise.decode(103).unwrap(), "MADV_GUARD_REMOVE");
        assert_eq!(Decoder::Madvise.decode(77).unwrap(), "77");
        assert_eq!(
            Decoder::MremapFlags.decode(3).unwrap(),
            "MREMAP_MAYMOVE|MREMAP_FIXED"
        );
    }

    #[test]
    fn pidfd_and_secret_flags() {
        assert_eq!(Decoder::CloexecFlags.decode(0x80000).unwrap(), "O_CLOEXEC");
        assert_eq!(
            Decoder::PidfdOpenFlags.decode(0x800).unwrap(),
            "PIDFD_NONBLOCK"
        );
        assert_eq!(
            Decoder::PidfdSignalFlags.decode(2).unwrap(),
            "PIDFD_SIGNAL_THREAD_GROUP"
        );
        assert_eq!(Decoder::None.decode(5), None);
    }

    #[test]
    fn signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(0), "0");
        assert_eq!(signal_name(34), "SIGRTMIN+2");
        assert_eq!(signal_name(65), "65");
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+2"), Some(34));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+40"), None);
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number(""), None);
    }

    #[test]
    fn errnos() {
        assert_eq!(errno_name(22), Some("EINVAL"));
        assert_eq!(errno_name(3), Some("ESRCH"));
        assert_eq!(errno_name(133), Some("EHWPOISON"));
        assert_eq!(errno_name(512), Some("ERESTARTSYS"));
        assert_eq!(errno_name(41), None);
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(9999), None);
        assert_eq!(errno_number("einval"), Some(22));
        assert_eq!(errno_number("ERESTARTSYS"), Some(512));
        assert_eq!(errno_number("EBOGUS"), None);
        for n in 1..ERRNOS.len() as u64 {
            if let Some(name) = errno_name(n) {
                assert_eq!(errno_number(name), Some(n), "{name}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for d in [
            Decoder::Prot,
            Decoder::MapFlags,
            Decoder::MlockFlags,
            Decoder::MclFlags,
            Decoder::Madvise,
            Decoder::MremapFlags,
            Decoder::Signal,
            Decoder::CloexecFlags,
            Decoder::PidfdOpenFlags,
            Decoder::PidfdSignalFlags,
        ] {
            let names = d.names();
            assert!(!names.is_empty(), "{d:?}");
            for (name, value) in names {
                assert_eq!(d.value_of(name), Some(value), "{d:?} {name}");
                assert_eq!(d.decode(value).as_deref(), Some(name), "{d:?} {value}");
            }
        }
        assert_eq!(Decoder::MlockFlags.value_of("mlock_onfault"), Some(1));
        assert_eq!(Decoder::None.value_of("X"), None);
    }
}

/// Parses a byte count with an optional binary suffix: `4096`, `4K`, `2M`, `1G`, `8MiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("-4K"), None);
        assert_eq!(parse_size("99999999999999999999T"), None);
        assert_eq!(parse_size("16777216T"), None);
    }
}

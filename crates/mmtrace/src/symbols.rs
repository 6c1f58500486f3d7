//! Turns the return addresses of `--stack` into functions, modules and source lines, in the
//! reader, never in the kernel. A process's mappings are read from /proc/PID/maps when its
//! first stack arrives (and again when an address falls outside them, after a dlopen), and
//! kept by pid and start, so a process that exits later still gets its frames; one that has
//! exited before its first stack is read keeps bare addresses. Modules are symbolized through
//! one blazesym symbolizer, which keeps each file it opened, and each (module, offset) is
//! looked up once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use mmtrace_events::stack::{Frame, Stack};
use mmtrace_events::{Event, TracedText};

/// Past this many processes the mappings are forgotten and read again as needed: a bound
/// under process churn.
const MAX_PROCESSES: usize = 4096;
/// And past this many looked-up frames, those.
const MAX_FRAMES: usize = 1 << 18;

/// Rereads of a process's maps on a miss whatever the time of the call: its start-up maps
/// its libraries in a burst the reader may catch half-way.
const FREE_REREADS: u32 = 8;

/// A call: its process (host pid, start) and its entry, ns since the epoch.
type Call = ((u32, u64), u64);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One line of /proc/PID/maps with a file behind it.
#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    /// The file offset of `start`.
    offset: u64,
    exec: bool,
    /// As the process's maps name it.
    path: Arc<TracedText>,
    /// Where mmtrace opens it: the same path, or through /proc/PID/root for a process in
    /// another mount namespace (a container's), as long as it runs. Files are known by it.
    file: Arc<TracedText>,
}

/// What a (module, file offset) symbolizes to.
#[derive(Debug, Clone, Default)]
struct Symbol {
    function: Option<Arc<TracedText>>,
    /// The function's start, as a file offset's distance back from the address looked up.
    back: u64,
    file: Option<Arc<TracedText>>,
    line: u32,
}

pub struct Symbols {
    symbolizer: Symbolizer,
    /// By host pid and process start: when they were read (ns since the epoch), how often
    /// again, and what.
    maps: HashMap<(u32, u64), (u64, u32, Vec<Region>)>,
    symbols: HashMap<(Arc<TracedText>, u64), Symbol>,
    /// Whether the bytes before (module, offset) are a call instruction.
    calls: HashMap<(Arc<TracedText>, u64), bool>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbolizer: Symbolizer::builder().enable_code_info(true).build(),
            maps: HashMap::new(),
            symbols: HashMap::new(),
            calls: HashMap::new(),
        }
    }
}

impl Symbols {
    /// Gives `e`'s stack its frames, and its missing frame back (see `stack_tail` in
    /// mmtrace.h): the word at the stack pointer, where it is a return address.
    pub fn fill(&mut self, e: &mut Event) {
        let Some(stack) = e.stack.as_deref_mut() else {
            return;
        };
        let key = (e.ctx.host_pid, e.ctx.process_start);
        if self.maps.len() >= MAX_PROCESSES && !self.maps.contains_key(&key) {
            self.maps.clear();
        }
        if self.symbols.len() >= MAX_FRAMES {
            self.symbols.clear();
            self.calls.clear();
        }
        self.maps
            .entry(key)
            .or_insert_with(|| (now(), 0, read_maps(key.0)));
        let at = (key, e.ctx.timestamp);
        // The call's own code is in a file mapping: where the maps read lack it, they are
        // read again before the word at the stack pointer is looked up, which must not
        // reread them itself (it is most often no code at all).
        if let Some(&ip) = stack.addresses.first() {
            self.region(at, ip, true);
        }
        self.recover_caller(at, stack);
        stack.frames = stack
            .addresses
            .iter()
            .enumerate()
            .map(|(i, &address)| self.frame(at, address, i > 0))
            .collect();
    }

    /// The region holding `address` in the process `at` names when it made the call `at`
    /// stamps, reading its maps again if none does and `reread` allows: what it mapped
    /// since (libc, while ld.so starts it; a dlopen) is then there. Past `FREE_REREADS`,
    /// only for a call made after they were read, so a miss in code no file backs (JIT)
    /// rereads them at most once per batch of calls.
    fn region(&mut self, at: Call, address: u64, reread: bool) -> Option<Region> {
        let (key, call) = at;
        let find = |regions: &[Region]| {
            regions
                .iter()
                .find(|r| (r.start..r.end).contains(&address))
                .cloned()
        };
        let (read_at, rereads, regions) = self.maps.get_mut(&key)?;
        if let Some(r) = find(regions) {
            return Some(r);
        }
        if !reread || (call < *read_at && *rereads >= FREE_REREADS) {
            return None;
        }
        *read_at = now();
        *rereads += 1;
        let again = read_maps(key.0);
        // An exited process reads as nothing: keep what was known.
        if again.is_empty() {
            return None;
        }
        *regions = again;
        find(regions)
    }

    fn recover_caller(&mut self, at: Call, stack: &mut Stack) {
        let w = stack.sp_word;
        if stack.addresses.is_empty() || stack.addresses.get(1) == Some(&w) {
            return;
        }
        let Some(r) = self.region(at, w, false).filter(|r| r.exec) else {
            return;
        };
        let offset = w - r.start + r.offset;
        let is_call = *self
            .calls
            .entry((r.file.clone(), offset))
            .or_insert_with(|| after_call(&r.file, offset));
        if is_call {
            stack.addresses.insert(1, w);
        }
    }

    /// A return address (`ret`) is looked up one byte back, in the call that made it.
    fn frame(&mut self, at: Call, address: u64, ret: bool) -> Frame {
        let Some(r) = self.region(at, address, true) else {
            return Frame {
                address,
                ..Frame::default()
            };
        };
        let module_offset = address - r.start + r.offset;
        let lookup = module_offset - u64::from(ret && module_offset > 0);
        let sym = match self.symbols.get(&(r.file.clone(), lookup)) {
            Some(s) => s.clone(),
            None => {
                let s = self.symbolize(&r.file, lookup);
                self.symbols.insert((r.file.clone(), lookup), s.clone());
                s
            }
        };
        Frame {
            address,
            module: Some(r.path),
            module_offset,
            function_offset: sym.back + (module_offset - lookup),
            function: sym.function,
            file: sym.file,
            line: sym.line,
        }
    }

    fn symbolize(&self, module: &TracedText, offset: u64) -> Symbol {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(module.as_bytes()));
        // Debug information the symbolizer cannot read (compressed in a way it does not
        // know) fails the lookup: the ELF symbols alone still name the function.
        let found = [true, false].into_iter().find_map(|debug_syms| {
            let mut elf = Elf::new(&path);
            elf.debug_syms = debug_syms;
            self.symbolizer
                .symbolize_single(&Source::Elf(elf), Input::FileOffset(offset))
                .ok()
        });
        let Some(Symbolized::Sym(sym)) = found else {
            return Symbol::default();
        };
        let text = |s: &[u8]| Some(Arc::new(TracedText::from(s.to_vec())));
        let code = sym.code_info.as_deref();
        Symbol {
            function: text(sym.name.as_bytes()),
            back: sym.offset as u64,
            file: code.and_then(|c| text(c.file.as_bytes())),
            line: code.and_then(|c| c.line).unwrap_or(0),
        }
    }
}

/// The file-backed regions of a process, empty when it is gone or unreadable.
fn read_maps(pid: u32) -> Vec<Region> {
    let Ok(text) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let root = match same_mount_namespace(pid) {
        true => String::new(),
        false => format!("/proc/{pid}/root"),
    };
    text.split(|&b| b == b'\n')
        .filter_map(parse_line)
        .map(|mut r| {
            if !root.is_empty() {
                let mut file = root.as_bytes().to_vec();
                file.extend_from_slice(r.path.as_bytes());
                r.file = Arc::new(TracedText::from(file));
            }
            r
        })
        .collect()
}

fn same_mount_namespace(pid: u32) -> bool {
    let ns = |p: String| std::fs::read_link(p).ok();
    ns(format!("/proc/{pid}/ns/mnt")) == ns("/proc/self/ns/mnt".to_string())
}

/// `start-end perms offset dev inode path`; the path (which may hold spaces) is what
/// follows the fifth field's spaces.
fn parse_line(line: &[u8]) -> Option<Region> {
    let mut rest = line;
    let mut field = || {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        Some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    // Device and inode: some filesystems (9p, FUSE) give files inode 0, so only the path
    // tells a file from anonymous memory.
    let (_dev, _inode) = (field()?, field()?);
    let path = rest.trim_ascii_start();
    if !path.starts_with(b"/") {
        return None;
    }
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    let path = Arc::new(TracedText::from(path.to_vec()));
    let dash = range.iter().position(|&b| b == b'-')?;
    Some(Region {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        offset: hex(offset)?,
        exec: perms.get(2) == Some(&b'x'),
        path: path.clone(),
        file: path,
    })
}

/// The `N` bytes of the file `module` that end at `offset`, if it has them.
fn bytes_before<const N: usize>(module: &TracedText, offset: u64) -> Option<[u8; N]> {
    use std::os::unix::ffi::OsStrExt;
    let mut b = [0u8; N];
    let at = offset.checked_sub(N as u64)?;
    let f = File::open(std::ffi::OsStr::from_bytes(module.as_bytes())).ok()?;
    f.read_exact_at(&mut b, at).ok()?;
    Some(b)
}

/// Whether the instruction that ends at `offset` of the file is a call, as before a return
/// address: `call rel32`, `call *reg`, `call *disp8(reg)` or `call *disp32(%rip)`.
#[cfg(not(target_arch = "aarch64"))]
fn after_call(module: &TracedText, offset: u64) -> bool {
    bytes_before::<7>(module, offset).is_some_and(|b| {
        b[2] == 0xe8
            || (b[5] == 0xff && b[6] & 0xf8 == 0xd0)
            || (b[4] == 0xff && b[5] & 0xf8 == 0x50)
            || (b[1] == 0xff && b[2] == 0x15)
    })
}

/// Whether the instruction that ends at `offset` of the file is a call, as before a return
/// address: `bl imm26` or `blr reg` (arm64's instructions are 4 little-endian bytes).
#[cfg(target_arch = "aarch64")]
fn after_call(module: &TracedText, offset: u64) -> bool {
    bytes_before::<4>(module, offset).is_some_and(|b| {
        let insn = u32::from_le_bytes(b);
        insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let r = parse_line(b"5581a2c4e000-5581a2c4f000 r-xp 00001000 fe:01 1234   /tmp/a dir/prog")
            .unwrap();
        assert_eq!(
            (r.start, r.end, r.offset, r.exec),
            (0x5581a2c4e000, 0x5581a2c4f000, 0x1000, true)
        );
        assert_eq!(r.path.as_bytes(), b"/tmp/a dir/prog");
        assert!(parse_line(b"7ffd1000-7ffd2000 rw-p 00000000 00:00 0   [stack]").is_none());
        assert!(parse_line(b"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").is_none());
        let no_inode = parse_line(b"7f00-7f10 r-xp 00000000 00:1f 0   /usr/lib/libc.so.6").unwrap();
        assert_eq!(no_inode.path.as_bytes(), b"/usr/lib/libc.so.6");
        assert!(parse_line(b"garbage").is_none());
    }
}

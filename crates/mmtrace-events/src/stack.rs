//! The caller's user stack of a call, as the kernel side captured it (`--stack`), and its
//! frames once user space has symbolized them.

use std::sync::Arc;

use crate::TracedText;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    /// Return addresses, innermost first: the instruction after the syscall, then each caller.
    pub addresses: Vec<u64>,
    /// The word at the user stack pointer (x86_64) or the link register (arm64), which may be
    /// the return address into the caller of a syscall wrapper that keeps no frame: the reader
    /// keeps it only where it is one.
    pub sp_word: u64,
    /// One per address, once symbolized; empty until then (or when nothing was known).
    pub frames: Vec<Frame>,
}

/// What is known of one address. Everything in it comes from the traced process's files,
/// so it is as hostile as a comm: escaped before a terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub address: u64,
    /// The file mapped at the address, as the process's /proc/PID/maps names it.
    pub module: Option<Arc<TracedText>>,
    /// The address as an offset into `module`'s file.
    pub module_offset: u64,
    pub function: Option<Arc<TracedText>>,
    /// From the start of `function`.
    pub function_offset: u64,
    /// Source file and line, where the module has debug information.
    pub file: Option<Arc<TracedText>>,
    pub line: u32,
}

/// A frame's name where call sites are counted: its function, else its module's file name
/// and the offset in it, else its address.
pub fn frame_name(
    function: Option<&[u8]>,
    module: Option<&[u8]>,
    module_offset: u64,
    address: u64,
) -> String {
    match (function, module) {
        (Some(f), _) => String::from_utf8_lossy(f).into_owned(),
        (None, Some(m)) => format!(
            "{}+{module_offset:#x}",
            String::from_utf8_lossy(base_name(m))
        ),
        (None, None) => format!("{address:#x}"),
    }
}

fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or_default()
}

impl Frame {
    /// The frame as one short word: `function+0x1b`, else `module+0x11a9`, else the address.
    pub fn short(&self) -> String {
        match &self.function {
            Some(f) => format!("{}+{:#x}", f.to_str_lossy(), self.function_offset),
            None => self.name(),
        }
    }

    /// See `frame_name`.
    pub fn name(&self) -> String {
        frame_name(
            self.function.as_ref().map(|f| f.as_bytes()),
            self.module.as_ref().map(|m| m.as_bytes()),
            self.module_offset,
            self.address,
        )
    }

    /// Whether the frame is in the C library, whose syscall wrappers are not the caller a
    /// user is after.
    pub fn in_libc(&self) -> bool {
        self.module.as_ref().is_some_and(|m| {
            let name = base_name(m.as_bytes());
            name.starts_with(b"libc.so")
                || name.starts_with(b"libc-")
                || name.starts_with(b"ld-musl")
        })
    }
}

//! The signals that end a trace: SIGINT, SIGTERM and SIGHUP. The handler only notes them; the
//! trace loop stops on them, or passes them on to the command it runs, as strace would have the
//! command receive them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

const ENDING: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Signals received and not yet taken: bit N for signal N, and bit 32 + N when the kernel sent
/// it, which is how a terminal's Ctrl-C and hangup arrive.
pub struct Signals(Arc<AtomicU64>);

/// One signal received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Sent by the kernel for the terminal, to the whole foreground process group.
    pub by_terminal: bool,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        let bits = Arc::new(AtomicU64::new(0));
        for signal in ENDING {
            let bits = Arc::clone(&bits);
            // The plain flag of signal_hook cannot tell a terminal's signal from a kill; the
            // registry under it hands over the siginfo.
            // SAFETY: the action does one atomic or, which is async-signal-safe.
            unsafe {
                signal_hook_registry::register_sigaction(signal, move |info| {
                    let mut bit = 1u64 << signal;
                    if info.si_code == libc::SI_KERNEL {
                        bit |= 1 << (32 + signal);
                    }
                    bits.fetch_or(bit, Ordering::Relaxed);
                })
            }
            .context("installing the signal handlers")?;
        }
        // A command's exit wakes the trace's wait at once, as Ctrl-C does, so that the time
        // traced ends when the command did, not at the wait's next timeout.
        // SAFETY: the action does nothing.
        unsafe { signal_hook_registry::register_sigaction(libc::SIGCHLD, |_| {}) }
            .context("installing the signal handlers")?;
        Ok(Signals(bits))
    }

    /// The signals received since the last call.
    pub fn take(&self) -> Vec<Received> {
        let bits = self.0.swap(0, Ordering::Relaxed);
        ENDING
            .into_iter()
            .filter(|&s| bits & (1 << s) != 0)
            .map(|signal| Received {
                signal,
                by_terminal: bits & (1 << (32 + signal)) != 0,
            })
            .collect()
    }
}

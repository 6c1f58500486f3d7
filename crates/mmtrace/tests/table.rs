//! The table as a person reads it: `mmtrace trace` in tmux panes of 80 and 120 columns, the
//! rows of the calls this test makes read back with capture-pane against the rows it expects.

use mmtrace_testkit::{bpf_allowed, comm, tid, Pane, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");

#[test]
fn rows_keep_the_range_and_names_at_80_and_120_columns() {
    if !bpf_allowed() {
        return;
    }
    for columns in [80u16, 120] {
        let Some(pane) = Pane::start("table", columns, 40) else {
            return;
        };
        let scope = format!("tid={}", tid());
        pane.keys(&[
            &format!("{BIN} trace -e mmap,munmap,mprotect -s {scope}"),
            "Enter",
        ]);
        pane.wait_for(PATIENCE, "the trace attached", |s| {
            s.contains("mmtrace: tracing ")
        });
        let len = 64 << 10;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, rw, anon, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(unsafe { libc::mprotect(p, 4096, libc::PROT_READ) }, 0);
        assert_eq!(unsafe { libc::munmap(p, len) }, 0);
        assert_eq!(unsafe { libc::munmap(0x10001 as *mut _, 4096) }, -1);
        let screen = pane.wait_for(PATIENCE, "the rows", |s| s.contains("EINVAL"));
        let p = format!("{p:?}");
        // This thread's own allocations map and unmap too: the rows of the test's calls are
        // those of its addresses.
        let rows: Vec<&str> = screen
            .lines()
            .filter(|l| l.contains(&comm()) && (l.contains(&p) || l.contains("0x10001")))
            .collect();
        let calls: Vec<&str> = rows
            .iter()
            .map(|r| {
                let at = ["mmap(", "mprotect(", "munmap("]
                    .iter()
                    .filter_map(|c| r.find(c))
                    .min()
                    .unwrap_or_else(|| panic!("no call in {r}"));
                &r[at..]
            })
            .collect();
        let expected = match columns {
            80 => [
                format!("mmap(length=64KiB, ...) = {p}"),
                format!("mprotect(addr={p}, ...) = 0"),
                format!("munmap(addr={p}, length=64KiB) = 0"),
                "munmap(addr=0x10001, length=4KiB) = -22 EINVAL".to_string(),
            ],
            _ => [
                format!("mmap(length=64KiB, prot=PROT_READ|PROT_WRITE, ...) = {p}"),
                format!("mprotect(addr={p}, len=4KiB, prot=PROT_READ) = 0"),
                format!("munmap(addr={p}, length=64KiB) = 0"),
                "munmap(addr=0x10001, length=4KiB) = -22 EINVAL".to_string(),
            ],
        };
        for (call, want) in calls.iter().zip(&expected) {
            assert!(
                call.starts_with(want.as_str()),
                "{columns} columns: {call:?}, expected {want:?}:\n{screen}"
            );
        }
        assert_eq!(calls.len(), 4, "{screen}");
        for row in &rows {
            assert!(row.len() <= columns.into(), "{row}");
            // The time of day only where there is room for it; COMM as the kernel has it.
            assert_eq!(row.as_bytes()[2] == b':', columns >= 100, "{row}");
        }
        pane.keys(&["C-c"]);
    }
}

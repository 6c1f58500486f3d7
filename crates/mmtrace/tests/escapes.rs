//! What traced processes name reaches the terminal escaped, as strace escapes it: a process
//! that names itself with an escape sequence and a newline, and maps a file whose path holds
//! them, traced for real.

use std::ffi::CString;
use std::process::{Command, Stdio};

use mmtrace_testkit::{bpf_allowed, Trace};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
/// What a hostile process calls itself: recolours the terminal and forges a row.
const COMM: &[u8] = b"ev\x1b[31mRED\n";
/// Clears the screen after a newline. Kept short, so that the row has room for it.
const LEAF: &[u8] = b"\n\x1b[2J";

/// Only newlines, and only between rows: nothing else below a space, nothing at or above DEL.
fn assert_plain(text: &[u8]) {
    let bad: Vec<(usize, u8)> = text
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, b)| (b < b' ' && b != b'\n') || b >= 0x7f)
        .collect();
    assert!(
        bad.is_empty(),
        "raw control bytes {bad:?} in:\n{}",
        String::from_utf8_lossy(text)
    );
}

#[test]
fn table_escapes_hostile_names_and_paths() {
    if !bpf_allowed() {
        return;
    }
    let out = format!(
        "{}/escapes-{}.txt",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    let dir = format!("/tmp/mmt{}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    let mut path = dir.clone().into_bytes();
    path.push(b'/');
    path.extend_from_slice(LEAF);
    let file = CString::new(path.clone()).unwrap();
    std::fs::write(
        std::ffi::OsStr::new(std::str::from_utf8(&path).unwrap()),
        [1u8; 4096],
    )
    .unwrap();
    let name = CString::new(COMM).unwrap();
    let tree = format!("tree={}", std::process::id());
    // Wide enough for the whole path: a narrower row shortens it, then leaves it out.
    let trace = Trace::start_with(
        BIN,
        &[
            "-e",
            "mmap,munmap",
            "-s",
            &tree,
            "-o",
            &format!("table:{out}"),
        ],
        Stdio::null(),
        |c| {
            c.env("COLUMNS", "200");
        },
    );
    // A child, so its main thread makes the calls; it makes only syscalls, as a fork of a
    // threaded test must.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            let fd = libc::open(file.as_ptr(), libc::O_RDONLY);
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            libc::munmap(p, 4096);
            libc::_exit(if p == libc::MAP_FAILED { 1 } else { 0 });
        }
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    let (code, err) = trace.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let text = std::fs::read(&out).unwrap();
    assert_plain(&text);
    let text = String::from_utf8(text).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!(" {child} ")))
        .collect();
    assert_eq!(rows.len(), 2, "one row for each call, none forged:\n{text}");
    for row in &rows {
        assert!(row.len() <= 200, "{row}");
        assert!(
            row.contains(r" ev\33[31mRED\n "),
            "the name, escaped: {row}"
        );
    }
    let escaped_path = format!("{dir}/\\n\\33[2J");
    assert!(
        rows.iter()
            .any(|r| r.contains(&format!("[on file PROT_READ {escaped_path};"))),
        "the path, escaped, where the row has room for it: {rows:#?}"
    );
    // Every line is the header or a row that starts with a time: nothing split a row.
    for line in text.lines().skip(1) {
        assert_eq!(line.as_bytes()[2], b':', "{line}");
    }
}

#[test]
fn reap_escapes_the_victims_name() {
    let name = CString::new(COMM).unwrap();
    // Only a process can rename itself (/proc/PID/comm is for its own threads): a child that
    // renames itself and waits to be killed, making only syscalls.
    let victim = unsafe { libc::fork() };
    if victim == 0 {
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            loop {
                libc::pause();
            }
        }
    }
    let comm = format!("/proc/{victim}/comm");
    while std::fs::read(&comm).unwrap() != [COMM, b"\n"].concat() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = Command::new(BIN)
        .args(["reap", &victim.to_string()])
        .output()
        .unwrap();
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(victim, &mut status, 0) }, victim);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_plain(&out.stdout);
    assert!(
        stdout.contains(&format!("to {victim} (ev\\33[31mRED\\n) through a pidfd")),
        "{stdout}"
    );
}

#[test]
fn errors_escape_what_they_quote() {
    let out = Command::new(BIN)
        .args([
            "trace",
            "-s",
            "comm=\x1b[2J\n",
            "-e",
            "mlock\x1b]0;pwned\x07",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_plain(&out.stderr);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(r"unknown event 'mlock\33]0;pwned\7'"), "{err}");
}

//! `mmtrace top` as a person sees it: run in tmux at 80x24 beside a busy process this test
//! starts, read with capture-pane, driven with send-keys. The figures on the screen are
//! checked against what the busy process counted itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmtrace_testkit::{bpf_allowed, Pane, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
/// Where the busy helper writes its counts; set, it makes the test below the helper.
const HELPER_COUNTS: &str = "MMTRACE_TOP_COUNTS";
/// The helper's name, with an ESC in it as a hostile process might choose, and as the view
/// must show it: escaped.
const BUSY: &str = "mmtop\x1bbusy";
const BUSY_SHOWN: &str = "mmtop\\33busy";
/// Iterations of the helper a second, each an munmap that succeeds and an mlock that fails:
/// far more than anything else in the test's tree (top is scoped to it), and few enough that
/// a debug build of top under QEMU's emulation (the other kernels' VMs, on a busy machine:
/// 200 events a second seen) reads every call as it comes: its rates are compared with the
/// helper's own counts.
const RATE: u64 = 50;
const PROMPT: &str = Pane::PROMPT;

/// Run as the busy process of the test below: paced calls under a name of its own, counted
/// into a file every 100 ms ("calls failures elapsed_ns") until it is killed.
#[test]
fn helper_busy() {
    let Some(path) = std::env::var_os(HELPER_COUNTS) else {
        return;
    };
    rustix::thread::set_name(c"mmtop\x1bbusy").unwrap();
    assert_eq!(mmtrace_testkit::comm(), BUSY);
    let start = Instant::now();
    let (mut calls, mut failures) = (0u64, 0u64);
    let mut next_report = Duration::ZERO;
    for iteration in 0u64.. {
        // An absolute schedule: a late iteration is made up by the next ones, so any second
        // holds RATE iterations however the sleeps went.
        let due = Duration::from_secs(iteration) / RATE as u32;
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        // Nothing is ever mapped below mmap_min_addr: munmap of nothing succeeds, and mlock
        // of it fails with ENOMEM.
        let ok = unsafe { libc::munmap(0x1000 as *mut _, 4096) };
        let failed = unsafe { libc::mlock(0x1000 as *const _, 4096) };
        assert!(ok == 0 && failed == -1);
        calls += 2;
        failures += 1;
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            let tmp = format!("{}.tmp", path.to_str().unwrap());
            std::fs::write(&tmp, format!("{calls} {failures} {}", elapsed.as_nanos())).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            next_report = elapsed + Duration::from_millis(100);
        }
    }
}

/// The busy helper and the pane, both ended however the test ends.
struct Setup {
    busy: Child,
    counts: std::path::PathBuf,
    pane: Pane,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.busy.kill();
        let _ = self.busy.wait();
        let _ = std::fs::remove_file(&self.counts);
    }
}

impl Setup {
    /// The pane is off the alternate screen and shows the cursor, as a shell expects.
    fn assert_main_screen_and_cursor(&self, after: &str) {
        let state = self.pane.tmux(&[
            "display-message",
            "-p",
            "-t",
            "test",
            "#{alternate_on} #{cursor_flag}",
        ]);
        assert_eq!(
            state.trim(),
            "0 1",
            "alternate screen and cursor after {after}"
        );
    }

    /// The helper's counts: calls, failures, and when, in its own clock.
    fn counts(&self) -> (u64, u64, u64) {
        let text = std::fs::read_to_string(&self.counts).unwrap();
        let f: Vec<u64> = text.split(' ').map(|v| v.parse().unwrap()).collect();
        (f[0], f[1], f[2])
    }
}

/// One row of the table, read back from the screen.
#[derive(Debug)]
struct Row {
    pid: u32,
    name: String,
    time_ns: f64,
    calls: f64,
    failures: f64,
}

/// The table's rows: the lines between its header and the kills. Read from the right, as a
/// name may hold spaces; the time takes two words ("2.8 ms").
fn rows(screen: &str) -> Vec<Row> {
    screen
        .lines()
        .skip_while(|l| !l.contains("PID COMM"))
        .skip(1)
        .take_while(|l| !l.starts_with("Recent kills"))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f.len();
            let scale = match f[n - 5] {
                "ns" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                unit => panic!("unit {unit} in {l}"),
            };
            Row {
                pid: f[0].parse().unwrap(),
                name: f[1..n - 7].join(" "),
                time_ns: f[n - 6].parse::<f64>().unwrap() * scale,
                calls: f[n - 4].parse().unwrap(),
                failures: f[n - 3].parse().unwrap(),
            }
        })
        .collect()
}

fn descending(values: impl Iterator<Item = f64>) -> bool {
    let v: Vec<f64> = values.collect();
    v.windows(2).all(|w| w[0] >= w[1])
}

#[test]
fn a_busy_process_leads_keys_sort_and_filter_and_q_restores_the_terminal() {
    if !bpf_allowed() {
        return;
    }
    let Some(pane) = Pane::start("top", 80, 24) else {
        return;
    };
    let counts = std::env::temp_dir().join(format!("mmtrace-top-{}", std::process::id()));
    let busy = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_busy", "--nocapture", "--test-threads=1"])
        .env(HELPER_COUNTS, &counts)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let setup = Setup { busy, counts, pane };
    let busy_pid = setup.busy.id();
    // Other work on the machine (builds, other suites) may make more calls than the helper:
    // the scope keeps the ranking to this test's processes, as `trace -s` would.
    setup.pane.keys(&[
        &format!("{BIN} top -s tree={}", std::process::id()),
        "Enter",
    ]);

    // The helper made calls for a whole second since attaching.
    let busy_row = |s: &str| rows(s).into_iter().find(|r| r.pid == busy_pid);
    let screen = setup.pane.wait_for(PATIENCE, "busy process", |s| {
        busy_row(s).is_some_and(|r| r.calls > 0.0)
    });
    assert!(screen.contains("processes by time in calls"), "{screen}");
    assert_eq!(busy_row(&screen).unwrap().name, BUSY_SHOWN, "{screen}");
    assert!(!screen.contains('\x1b'), "{screen}");
    assert!(
        descending(rows(&screen).iter().map(|r| r.time_ns)),
        "{screen}"
    );
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 24, "{screen}");
    assert!(lines.iter().all(|l| l.len() <= 80));
    assert!(
        lines[0].contains(", lost "),
        "the header counts losses: {screen}"
    );

    // By calls, it leads.
    setup.pane.keys(&["c"]);
    let screen = setup
        .pane
        .wait_for(Duration::from_secs(10), "sort by calls", |s| {
            s.contains("processes by calls")
        });
    assert!(
        descending(rows(&screen).iter().map(|r| r.calls)),
        "{screen}"
    );
    assert_eq!(rows(&screen)[0].pid, busy_pid, "{screen}");

    // Filtered by its name, alone or nearly; its figures against its own counts.
    setup.pane.keys(&["/", "mmtop", "Enter"]);
    let before = setup.counts();
    std::thread::sleep(Duration::from_millis(2500));
    let screen = setup.pane.screen();
    let after = setup.counts();
    assert!(screen.contains("filter: mmtop"), "{screen}");
    let shown = rows(&screen);
    assert!(!shown.is_empty() && shown.iter().all(|r| r.name.contains("mmtop")));
    let row = busy_row(&screen).unwrap();
    let secs = (after.2 - before.2) as f64 / 1e9;
    let calls = (after.0 - before.0) as f64 / secs;
    let failures = (after.1 - before.1) as f64 / secs;
    for (what, shown, counted) in [
        ("calls", row.calls, calls),
        ("failures", row.failures, failures),
    ] {
        assert!(
            (shown - counted).abs() <= 0.3 * counted,
            "{what}/s shown {shown}, counted {counted}:\n{screen}"
        );
    }

    // By container: the helper runs on the host, whose row sums it with the test's own calls.
    // Apart, or the terminal reads ESC p as Alt-p.
    setup.pane.keys(&["Escape"]);
    setup
        .pane
        .wait_for(Duration::from_secs(10), "no filter", |s| {
            !s.contains("filter:")
        });
    setup.pane.keys(&["p"]);
    setup
        .pane
        .wait_for(Duration::from_secs(10), "containers", |s| {
            s.contains("containers by calls") && s.contains("(host)")
        });
    // The helper's rate over the same seconds as the screen's: on a loaded VM it drifts from
    // one window to the next.
    let before = setup.counts();
    std::thread::sleep(Duration::from_millis(2500));
    let screen = setup.pane.screen();
    let after = setup.counts();
    let calls = (after.0 - before.0) as f64 / ((after.2 - before.2) as f64 / 1e9);
    let host = screen.lines().find(|l| l.contains("(host)")).unwrap();
    let host_calls: f64 = host
        .split_whitespace()
        .nth_back(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!(host_calls >= 0.5 * calls, "{screen}");
    setup.pane.keys(&["p"]);
    setup
        .pane
        .wait_for(Duration::from_secs(10), "processes", |s| {
            s.contains("processes by calls")
        });

    // q gives the shell its terminal back: the prompt on the main screen, the cursor
    // shown, and the line discipline cooked again.
    setup.pane.keys(&["q"]);
    setup
        .pane
        .wait_for(Duration::from_secs(30), "prompt after q", |s| {
            s.lines().filter(|l| l.starts_with(PROMPT)).count() >= 2 && !s.contains("mmtrace top:")
        });
    setup.assert_main_screen_and_cursor("q");
    setup.pane.keys(&[
        "stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ,",
        "Enter",
    ]);
    setup
        .pane
        .wait_for(Duration::from_secs(10), "cooked terminal", |s| {
            s.contains("icanon,echo,")
        });

    // So does Ctrl-C, which raw mode turns into a key.
    setup.pane.keys(&[
        "clear",
        "Enter",
        &format!("{BIN} top -s tree={}", std::process::id()),
        "Enter",
    ]);
    setup
        .pane
        .wait_for(PATIENCE, "the view again", |s| s.contains("mmtrace top:"));
    setup.pane.keys(&["C-c"]);
    setup
        .pane
        .wait_for(Duration::from_secs(30), "prompt after Ctrl-C", |s| {
            !s.contains("mmtrace top:") && s.lines().any(|l| l.starts_with(PROMPT))
        });
    setup.assert_main_screen_and_cursor("Ctrl-C");
}

#[test]
fn without_a_terminal_it_says_so_in_one_line() {
    let out = Command::new(BIN)
        .arg("top")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not one: run it in a terminal"), "{stderr}");
}

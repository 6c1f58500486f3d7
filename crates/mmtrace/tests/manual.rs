//! What ships beside the binary says what the binary does: `--version` names the commit the
//! checkout is at, `explain MMT-NNN` gives the detection's page, the man pages cover every
//! command `--help` lists, and the completion scripts load in their shells.

use std::process::Command;

use mmtrace_testkit::{skip, TEST_DEPS};

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");

fn stdout(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mmtrace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn version_names_the_commit_of_the_checkout() {
    let head = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let said = stdout(&["--version"]);
    match head {
        Ok(out) if out.status.success() => {
            let commit = String::from_utf8(out.stdout).unwrap();
            let version = env!("CARGO_PKG_VERSION");
            assert_eq!(
                said.trim(),
                format!("mmtrace {version} (commit {})", commit.trim())
            );
        }
        // Built from a tarball: nothing to hold it to but the form.
        _ => assert!(said.contains("(commit "), "{said}"),
    }
}

/// Words and their order, whatever the wrapping.
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn explain_gives_a_detections_page() {
    let said = stdout(&["explain", "mmt-004"]);
    let page = std::fs::read_to_string(root().join("docs/detections/MMT-004.md")).unwrap();
    let section = |text: &str, from: &str, to: &str| -> String {
        let start = text.find(from).unwrap() + from.len();
        let end = start + text[start..].find(to).unwrap();
        text[start..end].to_string()
    };
    assert!(
        said.starts_with("MMT-004: memory lock failed (severity medium)\n"),
        "{said}"
    );
    for (heading, next) in [
        ("What it means", "What raises it"),
        ("What raises it", "What to do"),
    ] {
        assert_eq!(
            words(&section(&said, heading, next)),
            words(&section(
                &page,
                &format!("## {heading}"),
                &format!("## {next}")
            )),
            "{heading}"
        );
    }
    let out = Command::new(BIN)
        .args(["explain", "MMT-099"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no detection is called MMT-099"), "{err}");
}

#[test]
fn a_man_page_for_every_command_help_lists() {
    let dir = std::env::temp_dir().join(format!("mmtrace-man.{}", std::process::id()));
    let out = Command::new(BIN)
        .args(["docs-man", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The commands as --help lists them, between "Commands:" and the options.
    let help = stdout(&["--help"]);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&c| c != "help")
        .collect();
    assert!(
        commands.contains(&"trace") && commands.contains(&"serve"),
        "{commands:?}"
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = commands.iter().map(|c| format!("mmtrace-{c}.1")).collect();
    expected.push("mmtrace.1".into());
    expected.sort();
    assert_eq!(pages, expected);
    // Each page names its command and carries its options, as --help does.
    let trace = std::fs::read_to_string(dir.join("mmtrace-trace.1")).unwrap();
    assert!(trace.contains("mmtrace\\-trace"), "{trace:.300}");
    for option in ["buffer\\-size", "no\\-enrich", "analyze"] {
        assert!(trace.contains(option), "{option}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completion_scripts_load_in_their_shells() {
    for (shell, check) in [
        ("bash", "source /dev/stdin && complete -p mmtrace"),
        (
            "zsh",
            "autoload -U compinit && compinit -u && source /dev/stdin && whence -w _mmtrace",
        ),
        ("fish", "source - && complete -c mmtrace | head -1"),
    ] {
        let script = stdout(&["completions", shell]);
        let run = Command::new(shell)
            .args(["-c", check])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match run {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                skip(&format!("{shell} is not installed"), TEST_DEPS);
                continue;
            }
            Err(e) => panic!("{shell}: {e}"),
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("mmtrace"),
            "{shell}: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_misspelt_command_is_pointed_at_commands_users_run_only() {
    let said = |arg: &str| {
        let out = Command::new(BIN).arg(arg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{arg}");
        String::from_utf8(out.stderr).unwrap()
    };
    let doc = said("doc");
    assert!(doc.contains("unrecognized subcommand 'doc'"), "{doc}");
    // docs, docs-detections and docs-man write the reference pages at build time.
    assert!(!doc.contains("tip:") && !doc.contains("'docs"), "{doc}");
    let trac = said("trac");
    assert!(
        trac.contains("a similar subcommand exists: 'trace'"),
        "{trac}"
    );
}

//! deploy/: the systemd unit passes systemd's own check, the DaemonSet is well-formed and asks
//! for what mmtrace needs and no more, and what both grant is enough: mmtrace traces with
//! CAP_BPF and CAP_PERFMON alone, and refuses with either missing.

use std::path::PathBuf;
use std::process::{Command, Output};

use mmtrace_testkit::{bpf_allowed, skip, TEST_DEPS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
/// Where both the unit and the DaemonSet install or find the binary, and what they run.
const INSTALLED: &str = "/usr/local/bin/mmtrace";
const SERVE: &str = "serve --listen 0.0.0.0:9477";

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

/// Runs a tool the check needs; None (the test skips) when it is not installed.
fn run(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip(&format!("{program} is not installed"), TEST_DEPS);
            None
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy("mmtrace.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(exec, format!("{INSTALLED} {SERVE}"));
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap();
    assert_eq!(caps, "CAP_BPF CAP_PERFMON");
    // verify checks that the program exists: the one just built stands in for the installed.
    let dir = std::env::temp_dir().join(format!("mmtrace-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mmtrace.service");
    std::fs::write(&path, unit.replace(INSTALLED, BIN)).unwrap();
    let out = run("systemd-analyze", &["verify", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let Some(out) = out else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown or misspelt setting is only a warning to systemd: a failure here.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_daemonset_asks_for_what_mmtrace_needs_and_no_more() {
    let path = deploy("daemonset.yaml");
    let Some(out) = run(
        "python3",
        &[
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
            path.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ds["kind"], "DaemonSet");
    let template = &ds["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"],
        ds["spec"]["selector"]["matchLabels"]
    );
    let notes = &template["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true");
    assert_eq!(notes["prometheus.io/port"], "9477");
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    let pod = &template["spec"];
    assert_eq!(pod["hostPID"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.join(" "), SERVE);
    assert_eq!(c["ports"][0]["containerPort"], 9477);
    let security = &c["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON"])
    );
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(c["resources"][kind][what].is_string(), "{kind}.{what}");
        }
    }
    // Every mount has its volume, from the host, and mmtrace writes to none of them.
    let volumes = pod["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "{m}");
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("its volume");
        assert!(v["hostPath"]["path"].is_string(), "{v}");
    }
    let mounted: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounted.contains(&"/sys/kernel/tracing") && mounted.contains(&"/sys/fs/cgroup"));
}

#[test]
fn capabilities_bpf_and_perfmon_are_enough_and_both_needed() {
    if !bpf_allowed() {
        return;
    }
    // As in the unit and the pod: root's uid, and a bounding set of these alone.
    let traced = |caps: &str| {
        run(
            "setpriv",
            &[
                &format!("--bounding-set=-all,{caps}"),
                "--inh-caps=-all",
                "--",
                BIN,
                "trace",
                "-o",
                "json",
                "-e",
                "mmap",
                "--",
                "/bin/true",
            ],
        )
    };
    let Some(out) = traced("+bpf,+perfmon") else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Debian's kernels (6.1, 6.12) set it to 3, where perf_event_open wants CAP_SYS_ADMIN: the
    // docs/metrics.md's fleet section says what to do, and mmtrace says it before loading anything.
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let enough = if paranoid > 2 {
        assert!(
            !out.status.success()
                && stderr.lines().count() == 1
                && stderr.contains(&format!("kernel.perf_event_paranoid is {paranoid}"))
                && stderr.contains("sysctl kernel.perf_event_paranoid=2"),
            "{stderr}"
        );
        "+bpf,+perfmon,+sys_admin"
    } else {
        "+bpf,+perfmon"
    };
    let out = traced(enough).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(r#""eventName":"mmap""#),
        "{enough}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serves_with(enough);
    for fewer in ["+bpf", "+perfmon"] {
        let out = traced(fewer).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("CAP_BPF and CAP_PERFMON"),
            "{fewer}: {stderr}"
        );
    }
}

/// What the unit and the pod run, with their capabilities: it serves metrics, and SIGTERM,
/// as systemd and the kubelet stop it, ends it cleanly. On a free port of loopback rather than
/// 0.0.0.0:9477, which another server of the machine may hold.
fn serves_with(caps: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = SERVE.replace("0.0.0.0:9477", &listen);
    let mut child = Stopped(
        Command::new("setpriv")
            .args([
                &format!("--bounding-set=-all,{caps}"),
                "--inh-caps=-all",
                "--",
                BIN,
            ])
            .args(args.split(' '))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // Attaching takes seconds under emulation (the other kernels' VMs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let metrics = loop {
        if let Some(body) = get(&listen, "/metrics") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "serve never answered");
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("serve exited ({status}): {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(metrics.contains("mmtrace_syscalls_total"), "{metrics}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// A child killed if the test fails before it is stopped: a server left behind would hold
/// the port, and CI's output pipe open.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of an HTTP GET, or None while nothing answers.
fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

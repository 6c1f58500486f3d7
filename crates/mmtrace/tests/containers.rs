//! A real container: podman with runc runs a static busybox from a local rootfs. Its calls
//! carry the id podman gives it, the runtime, and the name podman's service answers with;
//! `-s container=PREFIX` keeps exactly its calls; the host's calls carry no container.
//! A container created and not started is scoped from its first call, as are those started
//! after the trace with `container=new`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmtrace_testkit::{bpf_allowed, cgroup_id_of, skip, tid, Trace, PATIENCE, TEST_DEPS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mmtrace");
const EVENTS: &str = "brk,mmap,munmap,mprotect";

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// podman, runc and a static busybox (Debian's busybox-static).
fn prerequisites() -> bool {
    let have = runs("podman", &["--version"])
        && runs("runc", &["--version"])
        && runs("dpkg", &["-s", "busybox-static"]);
    if !have {
        skip("podman, runc or busybox-static is not installed", TEST_DEPS);
    }
    have
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What the test made, removed however it ends.
struct Setup {
    dir: PathBuf,
    name: String,
    /// Containers besides `name`: `name` and a suffix.
    more: Vec<String>,
    service: Option<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", &self.name])
            .args(&self.more)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut s) = self.service.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    /// A folder of the test's own under `tag`, with a rootfs holding a static busybox, and
    /// podman's API service on a socket in it.
    fn new(tag: &str) -> Setup {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut setup = Setup {
            dir,
            name: format!("mmtrace-{tag}-{}", std::process::id()),
            more: Vec::new(),
            service: None,
        };
        std::fs::create_dir_all(setup.rootfs().join("bin")).unwrap();
        std::fs::copy("/bin/busybox", setup.rootfs().join("bin/busybox")).unwrap();
        setup.service = Some(service(&setup.socket()));
        setup
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("podman.sock")
    }

    /// The name of another container of the test's, removed with the rest.
    fn another(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.name);
        self.more.push(name.clone());
        name
    }
}

/// podman's API service on a socket of the test's own, once it answers.
fn service(socket: &Path) -> Child {
    let child = Command::new("podman")
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !runs(
        "podman",
        &["--url", &format!("unix://{}", socket.display()), "version"],
    ) {
        assert!(
            start.elapsed() < PATIENCE,
            "podman's service never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// A container named `name` running `script` in busybox's sh on `rootfs`, started; its id.
fn run_container(name: &str, rootfs: &Path, script: &str) -> String {
    container(&["run", "-d"], name, rootfs, script)
}

/// `podman VERB` (run -d, create) of a container named `name` running `script` in busybox's
/// sh on `rootfs`; its id.
fn container(verb: &[&str], name: &str, rootfs: &Path, script: &str) -> String {
    // Options before --rootfs: podman takes everything after the rootfs as the command.
    output(
        "podman",
        &[
            &["--runtime", "runc"],
            verb,
            &[
                "--name",
                name,
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--rootfs",
                rootfs.to_str().unwrap(),
                "/bin/busybox",
                "sh",
                "-c",
                script,
            ],
        ]
        .concat(),
    )
}

/// A FIFO at `path`: a container reads it, waiting without a call until the test writes.
fn fifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Lets the container waiting on the FIFO at `path` go on.
fn release(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| !e["eventName"].as_str().unwrap().starts_with("mmtrace_"))
        .collect()
}

/// What both traces see alike of a call: each tracer reads the clock for itself.
fn key(e: &Value) -> (u64, String, i64, String) {
    (
        e["hostThreadId"].as_u64().unwrap(),
        e["eventName"].as_str().unwrap().to_string(),
        e["returnValue"].as_i64().unwrap(),
        e["args"].to_string(),
    )
}

#[test]
fn a_podman_container_is_named_and_scoped() {
    if !bpf_allowed() || !prerequisites() {
        return;
    }
    let setup = Setup::new("containers");
    let (dir, rootfs, socket) = (setup.dir.clone(), setup.rootfs(), setup.socket());

    // It waits for /go, so both traces are on before the calls compared, and for the margin
    // the comparison leaves; then it runs a few programs, each making its own calls.
    let script = "while [ ! -e /go ]; do sleep 0.1; done; sleep 0.5; \
                  i=0; while [ $i -lt 5 ]; do /bin/busybox true; i=$((i+1)); done";
    let id = run_container(&setup.name, &rootfs, script);
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(
        output("podman", &["inspect", "--format", "{{.Id}}", &setup.name]),
        id
    );
    assert!(
        output("podman", &["ps", "--no-trunc", "--format", "{{.ID}}"])
            .lines()
            .any(|l| l == id)
    );
    let image = output(
        "podman",
        &["inspect", "--format", "{{.ImageName}}", &setup.name],
    );
    let pid = output(
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", &setup.name],
    );
    let cgroup = cgroup_id_of(&pid).expect("the container's cgroup v2");

    let cri = format!("podman:{}", socket.display());
    let trace = |more: &[&str]| {
        let args = [&["-e", EVENTS, "--cri", &cri][..], more].concat();
        Trace::start(BIN, &args, Stdio::null())
    };
    let all_path = dir.join("all.json");
    let all = trace(&["-o", &format!("json:{}", all_path.display())]);
    let scoped_path = dir.join("scoped.json");
    let table_path = dir.join("scoped.txt");
    let scoped = trace(&[
        "-s",
        &format!("container={}", &id[..12]),
        "-o",
        &format!("json:{}", scoped_path.display()),
        "-o",
        &format!("table:{}", table_path.display()),
    ]);
    let both_on = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // A call of the host's: this test's own.
    let me = tid();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::munmap(p, 4096);
    }
    std::fs::write(rootfs.join("go"), "").unwrap();
    assert_eq!(output("podman", &["wait", &setup.name]), "0");
    let (code, err) = scoped.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = all.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("lost because"), "{err}");

    let all = events(&all_path);
    // The container's calls, by the cgroup the kernel put its process in.
    let theirs: Vec<&Value> = all.iter().filter(|e| e["cgroupId"] == cgroup).collect();
    assert!(
        theirs.len() >= 10,
        "too few of the container's calls: {}",
        theirs.len()
    );
    for e in &theirs {
        assert_eq!(e["containerId"], id.as_str(), "{e}");
        let c = &e["container"];
        assert_eq!(c["id"], id.as_str(), "{e}");
        assert_eq!(c["runtime"], "podman", "{e}");
        // What podman's service said.
        assert_eq!(c["name"], setup.name.as_str(), "{e}");
        match image.is_empty() {
            true => assert!(c.get("image").is_none(), "{e}"),
            false => assert_eq!(c["image"], image.as_str(), "{e}"),
        }
        assert!(e.get("kubernetes").is_none(), "no pod: {e}");
    }
    // Only its calls carry its id.
    for e in all.iter().filter(|e| e["containerId"] == id.as_str()) {
        assert_eq!(e["cgroupId"], cgroup, "{e}");
    }
    let host: Vec<&Value> = all.iter().filter(|e| e["hostThreadId"] == me).collect();
    assert!(host.len() >= 2, "the test's own mmap and munmap");
    for e in host {
        for k in ["containerId", "container", "kubernetes"] {
            assert!(e.get(k).is_none(), "a host call has {k}: {e}");
        }
    }

    // The scoped trace has exactly the container's calls, of those made once both were on.
    let scoped = events(&scoped_path);
    assert!(!scoped.is_empty());
    for e in &scoped {
        assert_eq!(e["containerId"], id.as_str(), "{e}");
    }
    // Its calls after /go come after its half second of sleep: the boundary falls between.
    let after = |e: &Value| e["timestamp"].as_u64().unwrap() > both_on + 250_000_000;
    let mut kept: Vec<_> = scoped.iter().filter(|e| after(e)).map(key).collect();
    let mut made: Vec<_> = theirs.iter().filter(|e| after(e)).map(|e| key(e)).collect();
    kept.sort();
    made.sort();
    assert!(made.len() >= 10, "{}", made.len());
    assert_eq!(kept, made);
    // The table names the container by its short id, on every row.
    let table = std::fs::read_to_string(&table_path).unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), scoped.len(), "{table}");
    let short = format!("[container {}", &id[..12]);
    assert!(rows.iter().all(|r| r.contains(&short)), "{table}");
}

/// strace's count of each traced syscall over its traced processes (`strace -c -o FILE`):
/// name -> (calls, errors).
fn strace_counts(path: &Path) -> std::collections::BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    // Rows: % time, seconds, usecs/call, calls, errors (blank when none), syscall.
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (calls, errors) = match f.len() {
            5 => (f[3], "0"),
            6 => (f[3], f[4]),
            _ => continue,
        };
        if let (Ok(calls), Ok(errors)) = (calls.parse(), errors.parse()) {
            if f[f.len() - 1] != "total" {
                counts.insert(f[f.len() - 1].to_string(), (calls, errors));
            }
        }
    }
    counts
}

/// `mmtrace serve`'s per-container series against strace's count of the same container's
/// calls, scraped once the container has ended and its cgroup is gone, as a short job's are.
#[test]
fn serve_counts_a_containers_calls_as_strace_does() {
    if !bpf_allowed() || !prerequisites() {
        return;
    }
    if !runs("strace", &["-V"]) {
        skip("strace is not installed", TEST_DEPS);
        return;
    }
    let setup = Setup::new("serve-containers");
    let (dir, rootfs, socket) = (setup.dir.clone(), setup.rootfs(), setup.socket());
    // The container waits on it without making a call until both counters are on.
    let go = rootfs.join("go");
    fifo(&go);
    // A short job: a few programs, then half a second more.
    let script = "read x < /go; i=0; while [ $i -lt 5 ]; do /bin/busybox true; i=$((i+1)); done; \
                  /bin/busybox sleep 0.5";
    let id = run_container(&setup.name, &rootfs, script);
    let pid = output(
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", &setup.name],
    );

    let cri = format!("podman:{}", socket.display());
    let mut served = mmtrace_testkit::Served::start(
        BIN,
        &["-e", "brk,mprotect", "--forget-after", "1", "--cri", &cri],
    );
    let port = served.port;
    let counted = dir.join("strace.txt");
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=brk,mprotect", "-o"])
        .arg(&counted)
        .args(["-p", &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(strace.stderr.take().unwrap()).lines();
    loop {
        let line = said.next().expect("strace exited").unwrap();
        if line.contains("attached") {
            break;
        }
    }
    std::thread::spawn(move || said.for_each(drop));

    release(&go);
    assert_eq!(output("podman", &["wait", &setup.name]), "0");
    assert!(strace.wait().unwrap().success());
    let want = strace_counts(&counted);
    assert!(want.get("brk").is_some_and(|&(n, _)| n >= 10), "{want:?}");
    // Gone as its job would be: its cgroup with it.
    output("podman", &["rm", &setup.name]);

    let scrape = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let text = scrape();
    let series = |event: &str, result: &str| -> u64 {
        let head = format!(
            "mmtrace_container_syscalls_total{{container_id=\"{id}\",container_name=\"{}\",event=\"{event}\",result=\"{result}\"}} ",
            setup.name
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&head)?.parse().ok())
            .unwrap_or(0)
    };
    for (event, &(calls, errors)) in &want {
        let ok = calls - errors;
        assert_eq!(
            series(event, "ok"),
            ok,
            "{event}: successful calls, as strace counts them\n{text}"
        );
        let failed: u64 = text
            .lines()
            .filter(|l| l.starts_with("mmtrace_container_syscalls_total") && l.contains(&id))
            .filter(|l| l.contains(&format!("event=\"{event}\"")) && !l.contains("result=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(
            failed, errors,
            "{event}: failed calls, as strace counts them\n{text}"
        );
    }
    // A second after it has gone its series are dropped; the totals stay.
    let start = Instant::now();
    while scrape().contains(&id) {
        assert!(start.elapsed() < PATIENCE, "its series are never dropped");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(scrape().contains("mmtrace_syscalls_total{event=\"brk\",result=\"ok\"}"));
    assert_eq!(
        served.stop(libc::SIGTERM, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// `-s container=ID` of a container created and not started, and `container=new`: each
/// scoped trace has every call the container made from its very first (runc's init in the
/// new cgroup, before its exec of busybox), as an unscoped trace sees them in the container's
/// cgroup, which the test reads from /proc, but a call begun before its thread was moved in;
/// `container=new` leaves out a container started before it. An id no runtime knows is a
/// one-line error.
#[test]
fn containers_not_started_yet_are_scoped_from_their_first_call() {
    if !bpf_allowed() || !prerequisites() {
        return;
    }
    let mut setup = Setup::new("pending");
    let (dir, rootfs, socket) = (setup.dir.clone(), setup.rootfs(), setup.socket());
    let cri = format!("podman:{}", socket.display());
    // Each waits on its FIFO, then runs a few programs.
    let script = |go: &str| {
        format!("read x < /{go}; i=0; while [ $i -lt 3 ]; do /bin/busybox true; i=$((i+1)); done")
    };
    for go in ["go-before", "go-created", "go-new"] {
        fifo(&rootfs.join(go));
    }
    let before_name = setup.name.clone();
    let before = run_container(&before_name, &rootfs, &script("go-before"));
    let created_name = setup.another("created");
    let created = container(&["create"], &created_name, &rootfs, &script("go-created"));
    assert_eq!(
        output(
            "podman",
            &["inspect", "--format", "{{.State.Status}}", &created]
        ),
        "created"
    );

    let unknown = Command::new(BIN)
        .args(["trace", "--cri", &cri, "-s", "container=0123456789abcdef"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{said}");
    assert_eq!(
        said.trim(),
        "mmtrace: error: scope container=0123456789abcdef: no container's id starts with '0123456789abcdef', running or created: `podman ps -a` or `docker ps -a` lists them"
    );

    let trace = |more: &[&str], name: &str| {
        let path = dir.join(name);
        let out = format!("json:{}", path.display());
        let args = [&["-e", EVENTS, "--cri", &cri, "-o", &out][..], more].concat();
        (Trace::start(BIN, &args, Stdio::null()), path)
    };
    let (all, all_path) = trace(&[], "all.json");
    let (by_id, by_id_path) = trace(&["-s", &format!("container={}", &created[..12])], "id.json");
    let (new, new_path) = trace(&["-s", "container=new"], "new.json");

    output("podman", &["start", &created]);
    let new_name = setup.another("new");
    let started = run_container(&new_name, &rootfs, &script("go-new"));
    let cgroup = |id: &str| {
        let pid = output("podman", &["inspect", "--format", "{{.State.Pid}}", id]);
        (
            pid.parse::<u64>().unwrap(),
            cgroup_id_of(&pid).expect("the container's cgroup v2"),
        )
    };
    let (_, before_cg) = cgroup(&before);
    let (created_pid, created_cg) = cgroup(&created);
    let (_, new_cg) = cgroup(&started);
    for (go, id) in [
        ("go-before", &before),
        ("go-created", &created),
        ("go-new", &started),
    ] {
        release(&rootfs.join(go));
        assert_eq!(output("podman", &["wait", id]), "0");
    }
    let mut stopped = Vec::new();
    for t in [new, by_id, all] {
        let (code, err) = t.stop(libc::SIGINT);
        assert_eq!(code, Some(0), "{err}");
        assert!(!err.contains("lost because"), "{err}");
        stopped.push(err);
    }

    let all = events(&all_path);
    let calls_in = |cgroups: &[u64]| -> Vec<(u64, String, i64, String)> {
        let mut calls: Vec<_> = all
            .iter()
            .filter(|e| cgroups.contains(&e["cgroupId"].as_u64().unwrap()))
            .map(key)
            .collect();
        calls.sort();
        calls
    };
    let keys = |events: &[Value]| {
        let mut calls: Vec<_> = events.iter().map(key).collect();
        calls.sort();
        calls
    };
    // The created container's init: runc's, then busybox after its exec, in its cgroup.
    let init: Vec<&Value> = all
        .iter()
        .filter(|e| e["hostProcessId"] == created_pid && e["cgroupId"] == created_cg)
        .collect();
    let first_busybox = init
        .iter()
        .position(|e| e["processName"] == "busybox")
        .expect("the init's calls after its exec");
    assert!(
        first_busybox > 0 && init[0]["processName"].as_str().unwrap().starts_with("runc"),
        "the init's calls before its exec: {:?}",
        init.iter().map(|e| &e["processName"]).collect::<Vec<_>>()
    );

    // A call in progress when runc moves a thread into the container's cgroup began outside
    // it: the scope, decided at a call's entry, leaves it out, where the unscoped record, made
    // at its return, names the cgroup. Only a thread's first call there can be one.
    let firsts = |cgroups: &[u64]| {
        let mut first: std::collections::HashMap<u64, &Value> = Default::default();
        for e in all
            .iter()
            .filter(|e| cgroups.contains(&e["cgroupId"].as_u64().unwrap()))
        {
            let earlier = |f: &&Value| f["timestamp"].as_u64() < e["timestamp"].as_u64();
            let kept = first
                .entry(e["hostThreadId"].as_u64().unwrap())
                .or_insert(e);
            if !earlier(kept) {
                *kept = e;
            }
        }
        first.into_values().map(key).collect::<Vec<_>>()
    };
    let by_id = events(&by_id_path);
    let theirs = calls_in(&[created_cg]);
    assert!(theirs.len() >= 10, "{}", theirs.len());
    let kept = keys(&by_id);
    let straddling = firsts(&[created_cg]);
    for call in &theirs {
        assert!(
            kept.binary_search(call).is_ok() || straddling.contains(call),
            "container={} misses {call:?}",
            &created[..12]
        );
    }
    for call in &kept {
        assert!(
            theirs.binary_search(call).is_ok(),
            "container={} has {call:?}, not the container's",
            &created[..12]
        );
    }
    for e in &by_id {
        assert_eq!(e["containerId"], created.as_str(), "{e}");
    }

    // Every call of the two started after it, none of the one started before; other
    // containers started meanwhile on this machine may be there too.
    let new = events(&new_path);
    let kept = keys(&new);
    let straddling = firsts(&[created_cg, new_cg]);
    for call in calls_in(&[created_cg, new_cg]) {
        assert!(
            kept.binary_search(&call).is_ok() || straddling.contains(&call),
            "container=new misses {call:?}"
        );
    }
    assert!(calls_in(&[before_cg]).len() >= 10);
    for e in &new {
        assert_ne!(e["cgroupId"], before_cg, "a container started before: {e}");
        assert!(e.get("containerId").is_some(), "not a container's: {e}");
    }
}

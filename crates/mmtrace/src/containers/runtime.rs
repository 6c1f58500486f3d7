//! What the container runtimes say of a container: name, image and Kubernetes pod, asked of
//! docker and podman (the Docker API) and CRI-O (its inspect API) on their Unix sockets, and
//! read from containerd's task bundles.
//!
//! The requests are plain HTTP/1.1 GETs over a Unix socket, written by hand: the HTTP crates
//! that speak over Unix sockets (hyperlocal, the docker clients) all run on tokio, a runtime
//! and dozens of crates for a few requests per container in a single-threaded reader.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmtrace_events::container::{Info, Runtime};
use serde_json::Value;

/// How long one container's lookup may take in all: the reader waits for it, once per
/// container.
pub const LOOKUP: Duration = Duration::from_millis(500);
/// The most of an answer read: an inspect document is a few KiB.
const MAX_ANSWER: u64 = 4 << 20;

const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Where a runtime answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub runtime: Runtime,
    pub path: PathBuf,
}

impl Socket {
    /// Where each runtime listens unless told otherwise, Tracee's list.
    pub fn defaults() -> Vec<Socket> {
        [
            (Runtime::Docker, "/var/run/docker.sock"),
            (Runtime::Podman, "/run/podman/podman.sock"),
            (Runtime::Crio, "/var/run/crio/crio.sock"),
            (Runtime::Containerd, "/run/containerd/containerd.sock"),
        ]
        .into_iter()
        .map(|(runtime, path)| Socket {
            runtime,
            path: path.into(),
        })
        .collect()
    }

    /// `RUNTIME:SOCKET`, as `--cri` takes it.
    pub fn parse(text: &str) -> anyhow::Result<Socket> {
        let names = "docker, podman, crio or containerd";
        let Some((name, path)) = text.split_once(':') else {
            anyhow::bail!("--cri '{text}' is not RUNTIME:SOCKET: give {names}, a colon and the runtime's socket, as in podman:/run/podman/podman.sock");
        };
        let runtime = Runtime::by_name(name).ok_or_else(|| {
            anyhow::anyhow!("--cri '{text}': unknown runtime '{name}': give {names}")
        })?;
        anyhow::ensure!(
            !path.is_empty(),
            "--cri '{text}': the socket's path is empty"
        );
        Ok(Socket {
            runtime,
            path: path.into(),
        })
    }

    /// Whether the runtime answers there now.
    pub fn answers(&self) -> bool {
        let deadline = Instant::now() + LOOKUP;
        match self.runtime {
            Runtime::Docker | Runtime::Podman => get(&self.path, "/_ping", deadline).is_ok(),
            Runtime::Crio => get(&self.path, "/info", deadline).is_ok(),
            Runtime::Containerd => self.tasks().is_dir(),
            Runtime::Garden | Runtime::Unknown => false,
        }
    }

    /// What the runtime says of container `id`.
    pub fn inspect(&self, id: &str) -> Result<Info, String> {
        // The id comes from a cgroup's name, which a process may have chosen: only what runtime
        // ids are made of goes into a request or a path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{id}' is no id a runtime gives"));
        }
        let deadline = Instant::now() + LOOKUP;
        match self.runtime {
            Runtime::Docker | Runtime::Podman => docker(&self.path, id, deadline),
            Runtime::Crio => Ok(crio(&get_json(
                &self.path,
                &format!("/containers/{id}"),
                deadline,
            )?)),
            Runtime::Containerd => containerd(&self.tasks(), id),
            Runtime::Garden | Runtime::Unknown => Err("no runtime to ask".into()),
        }
    }

    /// The whole id of the container whose id starts with `prefix`, as the runtime knows it,
    /// running or not: the Docker API's inspect (podman's too) lists created containers and
    /// takes a unique prefix. CRI-O's and containerd's know running containers alone.
    pub fn whole_id(&self, prefix: &str) -> Result<String, String> {
        if !matches!(self.runtime, Runtime::Docker | Runtime::Podman) {
            return Err(format!(
                "{} is not asked of containers not running",
                self.runtime.name()
            ));
        }
        // The prefix is checked as hex (or Garden's dashes) by the scope's parser.
        let c = get_json(
            &self.path,
            &format!("/containers/{prefix}/json"),
            Instant::now() + LOOKUP,
        )?;
        text(&c["Id"])
            .map(|id| id.to_ascii_lowercase())
            .filter(|id| id.starts_with(prefix))
            .ok_or_else(|| format!("its answer has no Id starting with '{prefix}'"))
    }

    /// containerd's task bundles, beside its socket: its API is gRPC, but each running
    /// container's OCI spec is there, with the CRI plugin's annotations.
    fn tasks(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("/run/containerd"))
            .join("io.containerd.runtime.v2.task")
    }
}

/// The Docker API's inspect (which podman's service answers too), and the image's, for its
/// name in the registry, as Tracee asks.
fn docker(socket: &Path, id: &str, deadline: Instant) -> Result<Info, String> {
    let c = get_json(socket, &format!("/containers/{id}/json"), deadline)?;
    let mut info = labelled(&c["Config"]["Labels"]);
    if info.name.is_none() {
        info.name = text(&c["Name"]).map(|n| n.trim_start_matches('/').to_string());
    }
    info.image = text(&c["Config"]["Image"]);
    info.pod_sandbox = c["Config"]["Labels"]["io.kubernetes.docker.type"] == "sandbox";
    if let Some(image_id) =
        text(&c["Image"]).filter(|i| i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':'))
    {
        if let Ok(image) = get_json(socket, &format!("/images/{image_id}/json"), deadline) {
            if let Some(tag) = text(&image["RepoTags"][0]) {
                info.image = Some(tag);
            }
            info.image_digest = text(&image["RepoDigests"][0]);
        }
    }
    Ok(info)
}

/// CRI-O's inspect answer.
fn crio(c: &Value) -> Info {
    let mut info = labelled(&c["labels"]);
    if info.name.is_none() {
        info.name = text(&c["name"]);
    }
    info.image = text(&c["image"]);
    info.image_digest = text(&c["image_ref"]);
    info.pod_sandbox = c["annotations"]["io.kubernetes.cri-o.ContainerType"] == "sandbox";
    info
}

/// The CRI plugin's annotations in a containerd bundle's config.json, in any namespace.
fn containerd(tasks: &Path, id: &str) -> Result<Info, String> {
    let namespaces = std::fs::read_dir(tasks).map_err(|e| format!("{}: {e}", tasks.display()))?;
    for ns in namespaces.flatten() {
        let Ok(text) = std::fs::read_to_string(ns.path().join(id).join("config.json")) else {
            continue;
        };
        let spec: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let a = &spec["annotations"];
        let cri = |key: &str| self::text(&a[format!("io.kubernetes.cri.{key}")]);
        return Ok(Info {
            name: cri("container-name"),
            image: cri("image-name"),
            image_digest: None,
            pod_name: cri("sandbox-name"),
            pod_namespace: cri("sandbox-namespace"),
            pod_uid: cri("sandbox-uid"),
            pod_sandbox: cri("container-type").as_deref() == Some("sandbox"),
        });
    }
    Err(format!("no task {id} under {}", tasks.display()))
}

/// The name and pod the kubelet's labels give.
fn labelled(labels: &Value) -> Info {
    Info {
        name: text(&labels[CONTAINER_NAME]),
        pod_name: text(&labels[POD_NAME]),
        pod_namespace: text(&labels[POD_NAMESPACE]),
        pod_uid: text(&labels[POD_UID]),
        ..Info::default()
    }
}

/// A non-empty string, or None: runtimes give "" for what they do not know.
fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn get_json(socket: &Path, path: &str, deadline: Instant) -> Result<Value, String> {
    let body = get(socket, path, deadline)?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
}

/// The body of a 200 answer to `GET path` from the server on `socket`, by `deadline`.
fn get(socket: &Path, path: &str, deadline: Instant) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", socket.display());
    let mut s = UnixStream::connect(socket).map_err(fail)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{}: no answer within {LOOKUP:?}", socket.display()))
    };
    s.set_write_timeout(Some(left()?)).map_err(fail)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(fail)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        }
        if answer.len() as u64 > MAX_ANSWER {
            return Err(format!("GET {path}: an answer over {MAX_ANSWER} bytes"));
        }
    }
    body(&answer).map_err(|e| format!("GET {path}: {e}"))
}

/// The body of a whole HTTP/1.1 answer, when its status is 200.
fn body(answer: &[u8]) -> Result<Vec<u8>, String> {
    let end = find(answer, b"\r\n\r\n").ok_or("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("answered '{}'", status.escape_debug()));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let rest = &answer[end + 4..];
    match chunked {
        true => dechunk(rest),
        false => Ok(rest.to_vec()),
    }
}

/// A chunked body's data: each chunk is its size in hex, CRLF, the data, CRLF; size 0 ends it.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or("a chunk with no size line")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("a chunk size '{}'", size_text.escape_debug()))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = rest.get(..size).ok_or("a chunk cut short")?;
        out.extend_from_slice(data);
        rest = rest.get(size + 2..).ok_or("a chunk cut short")?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_plain_and_chunked() {
        let plain =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(body(plain).unwrap(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\na;x=1\r\n:[1,2,3]}\n\r\n0\r\n\r\n";
        assert_eq!(body(chunked).unwrap(), b"{\"a\":[1,2,3]}\n");
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            body(missing).unwrap_err(),
            "answered 'HTTP/1.1 404 Not Found'"
        );
        assert!(body(b"HTTP/1.1 200 OK\r\n").is_err());
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc";
        assert_eq!(body(cut).unwrap_err(), "a chunk cut short");
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(body(bad).unwrap_err().starts_with("a chunk size"));
    }

    /// Abridged from what docker 27 and CRI-O 1.30 answer for a pod's container.
    #[test]
    fn kubernetes_labels_name_the_pod() {
        let docker: Value = serde_json::from_str(
            r#"{"Name":"/k8s_app_web-0_shop_1b2c_0","Image":"sha256:ab",
                "Config":{"Image":"nginx:1.27","Labels":{
                    "io.kubernetes.container.name":"app","io.kubernetes.pod.name":"web-0",
                    "io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1b2c"}}}"#,
        )
        .unwrap();
        let info = labelled(&docker["Config"]["Labels"]);
        assert_eq!(
            (
                info.name.as_deref(),
                info.pod_name.as_deref(),
                info.pod_namespace.as_deref(),
                info.pod_uid.as_deref()
            ),
            (Some("app"), Some("web-0"), Some("shop"), Some("1b2c"))
        );
        assert_eq!(labelled(&Value::Null), Info::default());
        let crio_answer: Value = serde_json::from_str(
            r#"{"name":"k8s_app_web-0_shop_1b2c_0","image":"docker.io/library/nginx:1.27",
                "image_ref":"docker.io/library/nginx@sha256:cd","labels":{
                    "io.kubernetes.container.name":"app","io.kubernetes.pod.name":"web-0",
                    "io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1b2c"},
                "annotations":{"io.kubernetes.cri-o.ContainerType":"container"}}"#,
        )
        .unwrap();
        let info = crio(&crio_answer);
        assert_eq!(info.name.as_deref(), Some("app"));
        assert_eq!(info.image.as_deref(), Some("docker.io/library/nginx:1.27"));
        assert_eq!(
            info.image_digest.as_deref(),
            Some("docker.io/library/nginx@sha256:cd")
        );
        assert_eq!(info.pod_name.as_deref(), Some("web-0"));
        assert!(!info.pod_sandbox);
    }

    #[test]
    fn containerd_bundles() {
        let tasks = std::env::temp_dir().join(format!("mmtrace-tasks-{}", std::process::id()));
        let bundle = tasks.join("k8s.io").join("ab12");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-name":"app",
                "io.kubernetes.cri.image-name":"nginx:1.27","io.kubernetes.cri.sandbox-name":"web-0",
                "io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"1b2c",
                "io.kubernetes.cri.container-type":"container"}}"#,
        )
        .unwrap();
        let info = containerd(&tasks, "ab12").unwrap();
        assert_eq!(info.name.as_deref(), Some("app"));
        assert_eq!(info.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(info.pod_uid.as_deref(), Some("1b2c"));
        assert!(containerd(&tasks, "cd34").is_err());
        std::fs::remove_dir_all(&tasks).unwrap();
    }

    #[test]
    fn sockets_and_ids() {
        assert_eq!(
            Socket::parse("podman:/tmp/p.sock").unwrap(),
            Socket {
                runtime: Runtime::Podman,
                path: "/tmp/p.sock".into()
            }
        );
        for (text, error) in [
            ("podman", "is not RUNTIME:SOCKET"),
            ("lxc:/x", "unknown runtime 'lxc'"),
            ("docker:", "the socket's path is empty"),
        ] {
            let e = Socket::parse(text).unwrap_err().to_string();
            assert!(e.contains(error), "{e}");
        }
        let nowhere = Socket {
            runtime: Runtime::Docker,
            path: "/nonexistent/docker.sock".into(),
        };
        assert!(!nowhere.answers());
        assert!(nowhere
            .inspect("../../etc")
            .unwrap_err()
            .contains("no id a runtime gives"));
    }
}

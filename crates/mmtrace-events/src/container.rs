//! Which container a cgroup belongs to, from its path alone, by Tracee's rules
//! (pkg/datastores/container/containers.go), so that mmtrace and Tracee name the same
//! container for the same process.

/// A container, with what its runtime said of it: what an event's context names when the
/// call came from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub runtime: Runtime,
    pub info: Info,
}

/// What a runtime says of a container, as Tracee's `container` and `kubernetes` keys carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub name: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_sandbox: bool,
}

/// The container runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Garden,
    /// A bare 64-hex id under a parent that names no runtime.
    Unknown,
}

impl Runtime {
    /// The name JSON and messages give it; Tracee's spelling where it has one.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Garden => "garden",
            Runtime::Unknown => "unknown",
        }
    }

    /// Any runtime, by the name JSON gives it.
    pub fn from_name(name: &str) -> Option<Runtime> {
        [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
            Runtime::Garden,
            Runtime::Unknown,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }

    /// The runtimes that answer on a socket, by the name `--cri` takes.
    pub fn by_name(name: &str) -> Option<Runtime> {
        [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }
}

/// The container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathContainer<'a> {
    pub id: &'a str,
    pub runtime: Runtime,
    /// Whether the path's last part named the container: its cgroup's root, rather than a
    /// cgroup inside it.
    pub root: bool,
}

/// The container of `path` (a cgroup path relative to the hierarchy's root, as
/// /proc/PID/cgroup shows it), or None for a cgroup outside any container. The parts are
/// scanned from the last, so a container nested in another is named by the inner one.
pub fn from_cgroup_path(path: &str) -> Option<PathContainer<'_>> {
    let parts: Vec<&str> = path.split('/').collect();
    for (i, &part) in parts.iter().enumerate().rev() {
        // Every id form below is at least 28 characters long (Garden's uuid).
        if part.len() < 28 {
            continue;
        }
        let root = i == parts.len() - 1;
        let found = |id, runtime| Some(PathContainer { id, runtime, root });
        let name = part.strip_suffix(".scope").unwrap_or(part);
        let prefixed = [
            ("docker-", Runtime::Docker),
            ("crio-", Runtime::Crio),
            ("cri-containerd-", Runtime::Containerd),
            ("libpod-", Runtime::Podman),
        ];
        if let Some((id, runtime)) = prefixed
            .into_iter()
            .find_map(|(prefix, rt)| name.strip_prefix(prefix).map(|id| (id, rt)))
        {
            // conmon, the monitor CRI-O and podman run beside a container, is no container.
            if id.starts_with("conmon-") {
                continue;
            }
            return found(id, runtime);
        }
        // systemd's cgroup driver under Kubernetes: `cri-containerd:<id>` after the slice.
        const CRI_CONTAINERD: &str = ":cri-containerd:";
        if let Some(at) = part.rfind(CRI_CONTAINERD) {
            return found(&part[at + CRI_CONTAINERD.len()..], Runtime::Containerd);
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) && i > 0 {
            let runtime = match parts[i - 1] {
                "docker" | "actions_job" => Runtime::Docker,
                // The kubelet's cgroupfs layout, kubepods/<qos>/pod<uid>/<id>: Tracee
                // takes it for containerd's.
                parent if parent.starts_with("pod") => Runtime::Containerd,
                _ => Runtime::Unknown,
            };
            return found(name, runtime);
        }
        if is_garden_id(name) {
            return found(name, Runtime::Garden);
        }
    }
    None
}

/// Garden's container ids: a uuid cut short, 8 hex digits then four groups of 4.
fn is_garden_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 4])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The id as `docker ps` and `podman ps` show it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

/// The one id of `ids` that starts with `prefix`, as Tracee's `container=` accepts it, or
/// why there is none.
pub fn by_prefix<'a>(
    prefix: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<&'a str, String> {
    let mut matches: Vec<&str> = ids
        .into_iter()
        .filter(|id| id.starts_with(prefix))
        .collect();
    matches.sort_unstable();
    matches.dedup();
    match matches[..] {
        [id] => Ok(id),
        [] => Err(format!(
            "no running container's id starts with '{prefix}': `podman ps` or `docker ps` lists them"
        )),
        _ => Err(format!(
            "{} running containers' ids start with '{prefix}' ({}): give more of the id",
            matches.len(),
            matches
                .iter()
                .map(|id| short_id(id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "54357e926e3f4f3c7a7582610943af8a52f494c2ee3ff0f213d32c4f7a368ecc";

    fn parse(path: &str) -> Option<(String, Runtime, bool)> {
        from_cgroup_path(path).map(|c| (c.id.to_string(), c.runtime, c.root))
    }

    /// Paths as each runtime lays them out, under systemd's cgroup driver and cgroupfs.
    #[test]
    fn real_path_shapes() {
        let id = ID.to_string();
        for (path, runtime, root) in [
            // podman with runc, cgroupfs (this machine's) and systemd
            (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman, true),
            (format!("/machine.slice/libpod-{ID}.scope"), Runtime::Podman, true),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Runtime::Podman,
                false,
            ),
            // docker, systemd and cgroupfs drivers, and GitHub Actions' jobs
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker, true),
            (format!("/docker/{ID}"), Runtime::Docker, true),
            (format!("/actions_job/{ID}"), Runtime::Docker, true),
            // CRI-O under the kubelet
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1d6e2c_8a9b_4c3d_9e8f_7a6b5c4d3e2f.slice/crio-{ID}.scope"),
                Runtime::Crio,
                true,
            ),
            // containerd: its systemd driver, systemd's `:cri-containerd:` form, cgroupfs
            (
                format!("/system.slice/cri-containerd-{ID}.scope"),
                Runtime::Containerd,
                true,
            ),
            (
                format!("/kubepods-burstable-pod0f1d6e2c_8a9b.slice:cri-containerd:{ID}"),
                Runtime::Containerd,
                true,
            ),
            (
                format!("/kubepods/burstable/pod0f1d6e2c-8a9b-4c3d-9e8f-7a6b5c4d3e2f/{ID}"),
                Runtime::Containerd,
                true,
            ),
            // a bare id under a parent that names no runtime
            (format!("/somewhere/{ID}"), Runtime::Unknown, true),
        ] {
            assert_eq!(parse(&path), Some((id.clone(), runtime, root)), "{path}");
        }
        let garden = "0f1d6e2c-8a9b-4c3d-9e8f-7a6b";
        assert_eq!(
            parse(&format!("/garden/{garden}")),
            Some((garden.to_string(), Runtime::Garden, true))
        );
    }

    #[test]
    fn what_is_no_container() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/systemd-journald.service",
            &format!("/libpod_parent/libpod-conmon-{ID}"),
            &format!("/kubepods.slice/crio-conmon-{ID}.scope"),
            // 64 hex digits with nothing above them
            ID,
            // one digit short, and not hex
            &format!("/docker/{}", &ID[1..]),
            &format!("/docker/{}", ID.replace('e', "g")),
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }

    /// A container run inside another (as with a nested podman) is named by the inner one;
    /// the outer's conmon scope is skipped, not taken for a container.
    #[test]
    fn the_innermost_part_wins() {
        let inner = ID.replace('5', "6");
        let path = format!("/system.slice/docker-{ID}.scope/libpod_parent/libpod-{inner}");
        assert_eq!(parse(&path), Some((inner.clone(), Runtime::Podman, true)));
        let path = format!("/system.slice/docker-{ID}.scope/libpod-conmon-{inner}");
        assert_eq!(parse(&path), Some((ID.to_string(), Runtime::Docker, false)));
    }

    #[test]
    fn short_ids_and_prefixes() {
        assert_eq!(short_id(ID), "54357e926e3f");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
        let other = ID.replace("54357e92", "54357f00");
        let ids = [ID, other.as_str(), ID];
        assert_eq!(by_prefix("54357e", ids), Ok(ID));
        assert_eq!(by_prefix(ID, ids), Ok(ID));
        let err = by_prefix("5435", ids).unwrap_err();
        assert!(
            err.starts_with(
                "2 running containers' ids start with '5435' (54357e926e3f, 54357f006e3f)"
            ),
            "{err}"
        );
        assert!(by_prefix("ff", ids)
            .unwrap_err()
            .starts_with("no running container's id starts with 'ff'"));
    }

    #[test]
    fn runtime_names_round_trip() {
        for r in [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
        ] {
            assert_eq!(Runtime::by_name(r.name()), Some(r));
        }
        assert_eq!(Runtime::by_name("garden"), None);
        assert_eq!(Runtime::by_name("lxc"), None);
    }
}

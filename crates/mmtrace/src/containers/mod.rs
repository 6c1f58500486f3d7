//! Which container made a call: the caller's cgroup id (the kernel records its cgroup v2
//! directory's inode) to the cgroup's path, the path to a container id and runtime by
//! Tracee's rules, and the id to a name, an image and a pod by asking the runtime, once per
//! container.
//!
//! The answers are kept per thread, for the one thread that reads the ring: it names each
//! event's container in the event's context (`fill`) before any output sees the event, and
//! top and serve ask of the same cache for their rows and series.

mod runtime;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use mmtrace_bpf::{all_cgroups, cgroups};
use mmtrace_events::container::{self, Runtime};
use mmtrace_events::scope::Scope;

pub use mmtrace_events::container::Container;
use mmtrace_events::container::Info;
pub use runtime::Socket;

/// The cache stays below this many cgroups and containers: past it, it starts again.
const MAX_KNOWN: usize = 16 << 10;

struct Containers {
    /// Where cgroup v2 is mounted, if it is.
    root: Option<PathBuf>,
    /// Each cgroup id asked of, with its container's id and runtime.
    by_cgroup: HashMap<u64, Option<(Rc<str>, Runtime)>>,
    by_id: HashMap<Rc<str>, Arc<Container>>,
    /// The runtimes that answered at start.
    sockets: Vec<Socket>,
    /// What to say when the first container is seen, if it was not said at start.
    untold: Option<String>,
}

thread_local! {
    static CONTAINERS: RefCell<Containers> = RefCell::new(Containers {
        root: mmtrace_bpf::cgroup2_root(),
        by_cgroup: HashMap::new(),
        by_id: HashMap::new(),
        sockets: Vec::new(),
        untold: None,
    });
}

/// Finds the runtimes that answer, on the sockets `given` (`--cri`) and where the others
/// listen by default. Returns what to say about it: a line for each given socket that does
/// not answer and, when none does, that containers are shown by id alone, at once if there
/// are containers or else when the first one is seen.
pub fn start(given: &[Socket]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut sockets = Vec::new();
    for s in given {
        match s.answers() {
            true => sockets.push(s.clone()),
            false => lines.push(format!(
                "mmtrace: {} does not answer on {}",
                s.runtime.name(),
                s.path.display()
            )),
        }
    }
    for s in Socket::defaults() {
        if !given.iter().any(|g| g.runtime == s.runtime) && s.answers() {
            sockets.push(s);
        }
    }
    CONTAINERS.with_borrow_mut(|c| {
        let untold = sockets.is_empty().then(|| {
            "mmtrace: no container runtime answers on its socket (docker, podman, CRI-O, containerd): containers are shown by their id alone; --cri RUNTIME:SOCKET names another socket".to_string()
        });
        let any = c.root.as_deref().is_some_and(|r| !ids(r).is_empty());
        match (untold, any || !given.is_empty()) {
            (Some(line), true) => lines.push(line),
            (untold, _) => c.untold = untold,
        }
        c.sockets = sockets;
    });
    lines
}

/// The container of the cgroup with id `cgroup_id`, or None for a cgroup outside any.
pub fn of_cgroup(cgroup_id: u64) -> Option<Arc<Container>> {
    if cgroup_id == 0 {
        return None;
    }
    CONTAINERS.with_borrow_mut(|c| c.of_cgroup(cgroup_id))
}

impl Containers {
    fn of_cgroup(&mut self, cgroup_id: u64) -> Option<Arc<Container>> {
        if !self.by_cgroup.contains_key(&cgroup_id) {
            self.rescan(cgroup_id);
        }
        let (id, runtime) = self.by_cgroup.get(&cgroup_id)?.clone()?;
        if let Some(known) = self.by_id.get(&id) {
            return Some(Arc::clone(known));
        }
        if let Some(line) = self.untold.take() {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        let container = Arc::new(Container {
            id: id.to_string(),
            runtime,
            info: self.ask(&id, runtime),
        });
        if self.by_id.len() >= MAX_KNOWN {
            self.by_id.clear();
        }
        self.by_id.insert(id, Arc::clone(&container));
        Some(container)
    }

    /// Learns every container cgroup there is now, and that `cgroup_id` is in none if it
    /// is not among them. A cgroup's id is never given to another, so what is learnt stays
    /// true; one that is gone by now was in no container as far as mmtrace can tell.
    fn rescan(&mut self, cgroup_id: u64) {
        if self.by_cgroup.len() >= MAX_KNOWN {
            self.by_cgroup.clear();
        }
        if let Some(root) = &self.root {
            for (ino, path) in cgroups(root) {
                if let Some(pc) = container::from_cgroup_path(&path) {
                    let id = match self.by_id.get_key_value(pc.id) {
                        Some((id, _)) => Rc::clone(id),
                        None => Rc::from(pc.id),
                    };
                    self.by_cgroup.insert(ino, Some((id, pc.runtime)));
                }
            }
        }
        self.by_cgroup.entry(cgroup_id).or_insert(None);
    }

    /// What the first runtime that knows the container says of it; nothing when none does.
    fn ask(&self, id: &str, runtime: Runtime) -> Info {
        self.sockets
            .iter()
            .filter(|s| runtime == Runtime::Unknown || s.runtime == runtime)
            .find_map(|s| s.inspect(id).ok())
            .unwrap_or_default()
    }
}

/// The ids of every cgroup there is now, or None where no cgroup v2 hierarchy is mounted or
/// the walk could not read it all.
pub fn live_cgroups() -> Option<std::collections::HashSet<u64>> {
    CONTAINERS.with_borrow(|c| {
        let root = c.root.as_ref()?;
        Some(all_cgroups(root)?.into_iter().map(|(ino, _)| ino).collect())
    })
}

/// Cgroups left out of a watched scope (`container=new`, a container not yet started) for
/// want of room in the kernel's table: their calls were not traced, which must be said.
/// `n` is the tracer's count of them (Tracer::scope_overflow).
pub fn scope_overflow_warning(n: u64) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "mmtrace: warning: {n} cgroups of containers in scope were left out, their calls untraced: the kernel's table of {} such cgroups was full",
            mmtrace_bpf::abi::MAX_WATCHED_CGROUPS
        )
    })
}

/// The containers running now: each id with its cgroup roots' paths under `root`.
fn ids(root: &Path) -> HashMap<String, Vec<String>> {
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for (_, path) in cgroups(root) {
        if let Some(pc) = container::from_cgroup_path(&path).filter(|pc| pc.root) {
            ids.entry(pc.id.to_string()).or_default().push(path.clone());
        }
    }
    ids
}

/// Turns `container=ID` into the container's cgroups, which the kernel side scopes with
/// their descendants as it does `cgroup=`: each ID must be the start of exactly one running
/// container's id. One that no running container's id starts with is asked of the runtimes
/// (`given`, and the others where they listen by default): a container created and not
/// started has no cgroup yet, and the kernel side puts its cgroup in scope when it is made.
pub fn resolve_scope(scope: &mut Scope, given: &[Socket]) -> anyhow::Result<()> {
    if scope.container_ids.is_empty() && !scope.new_containers {
        return Ok(());
    }
    let Some(root) = mmtrace_bpf::cgroup2_root() else {
        anyhow::bail!("scope container=: no cgroup v2 hierarchy is mounted, and mmtrace finds containers by their cgroups");
    };
    let running = ids(&root);
    for prefix in &scope.container_ids {
        let id = match container::by_prefix(prefix, running.keys().map(String::as_str)) {
            Ok(id) => id,
            Err(_) if !running.keys().any(|id| id.starts_with(prefix.as_str())) => {
                let id = not_running(prefix, given)?;
                scope.pending_containers.push(id);
                continue;
            }
            Err(e) => anyhow::bail!("scope container={prefix}: {e}"),
        };
        for path in &running[id] {
            scope.cgroups.push(
                root.join(path.trim_start_matches('/'))
                    .display()
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// The whole id of a container that is not running, from the first runtime that knows it.
fn not_running(prefix: &str, given: &[Socket]) -> anyhow::Result<String> {
    let defaults = Socket::defaults()
        .into_iter()
        .filter(|s| !given.iter().any(|g| g.runtime == s.runtime));
    let (mut heard, mut why) = (false, Vec::new());
    for socket in given.iter().cloned().chain(defaults) {
        match socket.whole_id(prefix) {
            Ok(id) => return Ok(id),
            // Not Found: the runtime knows no such container.
            Err(e) if e.contains(" 404 ") => heard = true,
            // A socket that is not there is no runtime to hear from.
            Err(e) if socket.path.exists() => why.push(format!("{}: {e}", socket.runtime.name())),
            Err(_) => {}
        }
    }
    if !heard && why.is_empty() {
        why.push(
            "no container runtime answers on its socket; --cri RUNTIME:SOCKET names one".into(),
        );
    }
    let why: String = why.iter().map(|w| format!(" ({w})")).collect();
    anyhow::bail!(
        "scope container={prefix}: no container's id starts with '{prefix}', running or created{why}: `podman ps -a` or `docker ps -a` lists them"
    )
}

/// Names the container the event's call came from in its context, before any output sees it.
pub fn fill(event: &mut mmtrace_events::Event) {
    event.ctx.container = of_cgroup(event.ctx.cgroup_id);
}

/// The container's id as `podman ps` shows it, for a call from the cgroup `cgroup_id`.
pub fn short_id(cgroup_id: u64) -> Option<String> {
    of_cgroup(cgroup_id).map(|c| container::short_id(&c.id).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const ID: &str = "54357e926e3f4f3c7a7582610943af8a52f494c2ee3ff0f213d32c4f7a368ecc";

    /// A cgroup tree of directories, as /sys/fs/cgroup lays one out, with this machine's
    /// podman container in it.
    fn tree(tag: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("mmtrace-cgroups-{tag}-{}", std::process::id()));
        for dir in [
            format!("libpod_parent/libpod-{ID}/sub"),
            format!("libpod_parent/libpod-conmon-{ID}"),
            "system.slice/cron.service".to_string(),
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        root
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    fn lookups(root: &Path) -> Containers {
        Containers {
            root: Some(root.to_path_buf()),
            by_cgroup: HashMap::new(),
            by_id: HashMap::new(),
            sockets: Vec::new(),
            untold: None,
        }
    }

    #[test]
    fn cgroup_ids_to_containers() {
        let root = tree("ids");
        let mut c = lookups(&root);
        let top = root.join(format!("libpod_parent/libpod-{ID}"));
        let found = c.of_cgroup(ino(&top)).unwrap();
        assert_eq!((found.id.as_str(), found.runtime), (ID, Runtime::Podman));
        assert_eq!(found.info, Info::default(), "no runtime answers");
        // A cgroup inside the container is the container's; conmon's and the others are none.
        assert_eq!(c.of_cgroup(ino(&top.join("sub"))).unwrap().id, ID);
        let conmon = root.join(format!("libpod_parent/libpod-conmon-{ID}"));
        assert_eq!(c.of_cgroup(ino(&conmon)), None);
        assert_eq!(
            c.of_cgroup(ino(&root.join("system.slice/cron.service"))),
            None
        );
        // A container started after the last scan is found by scanning again.
        let later = ID.replace('5', "7");
        let new = root.join(format!("libpod_parent/libpod-{later}"));
        fs::create_dir_all(&new).unwrap();
        assert_eq!(c.of_cgroup(ino(&new)).unwrap().id, later);
        // One that is nowhere is remembered as none, without scanning again.
        assert_eq!(c.of_cgroup(u64::MAX), None);
        assert_eq!(c.by_cgroup.get(&u64::MAX), Some(&None));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn running_ids_are_the_roots() {
        let root = tree("roots");
        let running = ids(&root);
        assert_eq!(running.len(), 1);
        assert_eq!(running[ID], [format!("/libpod_parent/libpod-{ID}")]);
        fs::remove_dir_all(&root).unwrap();
    }
}

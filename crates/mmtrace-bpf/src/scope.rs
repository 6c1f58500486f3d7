//! Turns a parsed scope and argument filters into the kernel side's constants and map entries.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mmtrace_abi::{
    self as abi, CONTAINER_ANY, CONTAINER_ID_LEN, CONTAINER_INSIDE, CONTAINER_OUTSIDE, FEW, F_PID,
    F_TID, F_UID, MAX_CGROUPS, MAX_CONDS, MAX_EXES, OP_EQ, OP_GE, OP_GT, OP_LE, OP_LT, OP_NE,
    SCOPE_EQ, SCOPE_NE, TARGET_RET, WATCH_IDS, WATCH_NEW, WATCH_OFF,
};
use mmtrace_events::container;
use mmtrace_events::filter::{ArgFilter, Op, Target};
use mmtrace_events::scope::{Field, Scope};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("scope cgroup={0}: {1}")]
    Cgroup(String, String),
    #[error("scope executable={0}: {1}")]
    Executable(String, String),
    #[error("at most {MAX_EXES} executables can be in scope")]
    TooManyExecutables,
    #[error("at most {MAX_CGROUPS} cgroups can be in scope")]
    TooManyCgroups,
    #[error("scope container={0}: the container has not started, and mmtrace knows a container's cgroup before it starts only by an id of {CONTAINER_ID_LEN} hex digits (docker, podman, CRI-O, containerd)")]
    PendingContainer(String),
    #[error("{0} has more than {MAX_CONDS} filters: combine values into one condition")]
    TooManyFilters(&'static str),
}

/// Everything the kernel side needs for one scope.
#[derive(Debug, Default)]
pub struct KernelScope {
    /// The scope's part of the kernel side's configuration (`scope_*`), the rest left zero.
    pub config: abi::config,
    pub values: Vec<(abi::scope_key, u8)>,
    pub comms: Vec<([u8; 16], u8)>,
    pub exes: Vec<(abi::exe_key, u8)>,
    /// Processes in a traced tree now; their future children are added by the fork hook.
    pub tree_members: Vec<u32>,
    /// The ids of containers not started yet, whose cgroups the cgroup hooks put in scope.
    pub pending_containers: Vec<[u8; CONTAINER_ID_LEN as usize]>,
}

/// The kernel side's index of a field.
fn kernel_field(field: Field) -> usize {
    (match field {
        Field::Pid => F_PID,
        Field::Tid => F_TID,
        Field::Uid => F_UID,
    }) as usize
}

impl KernelScope {
    /// `roots` are extra tree roots (the command mmtrace started) besides the scope's own.
    pub fn build(scope: &Scope, roots: &[u32]) -> Result<KernelScope, ScopeError> {
        let mut c = abi::config::default();
        let mut values = Vec::new();
        for field in Field::ALL {
            let i = kernel_field(field);
            let bit = 1 << i;
            let fs = &scope.fields[field.index()];
            match &fs.eq {
                Some(eq) if eq.len() <= FEW as usize => {
                    c.scope_few_mask |= bit;
                    for (slot, &v) in c.scope_few[i].iter_mut().zip(eq) {
                        *slot = v;
                    }
                    c.scope_few_n[i] = eq.len() as u32;
                }
                Some(eq) => {
                    c.scope_eq_mask |= bit;
                    for &v in eq {
                        mark(&mut values, i, v, SCOPE_EQ);
                    }
                }
                None => {}
            }
            if !fs.ne.is_empty() {
                c.scope_ne_mask |= bit;
                for &v in &fs.ne {
                    mark(&mut values, i, v, SCOPE_NE);
                }
            }
            c.scope_min[i] = fs.min;
            c.scope_max[i] = fs.max;
            if fs.min != 0 || fs.max != u64::from(u32::MAX) {
                c.scope_range_mask |= bit;
            }
        }
        let mut comms: HashMap<[u8; 16], u8> = HashMap::new();
        for (names, mark) in [
            (scope.comm_eq.iter().flatten().collect::<Vec<_>>(), SCOPE_EQ),
            (scope.comm_ne.iter().collect(), SCOPE_NE),
        ] {
            if !names.is_empty() {
                c.scope_comm |= u32::from(mark);
            }
            for name in names {
                let mut key = [0u8; 16];
                key[..name.len()].copy_from_slice(name.as_bytes());
                *comms.entry(key).or_default() |= mark;
            }
        }
        let exes = executables(scope)?;
        if !exes.is_empty() {
            c.scope_exe = exes.iter().fold(0, |m, (_, mark)| m | u32::from(*mark));
        }
        let all_roots: Vec<u32> = scope.trees.iter().chain(roots).copied().collect();
        c.scope_tree = (!all_roots.is_empty()).into();
        c.scope_follow = scope.follow.into();
        c.scope_container = match scope.container {
            None => CONTAINER_ANY,
            Some(true) => CONTAINER_INSIDE,
            Some(false) => CONTAINER_OUTSIDE,
        };
        if scope.cgroups.len() > MAX_CGROUPS as usize {
            return Err(ScopeError::TooManyCgroups);
        }
        for (i, cg) in scope.cgroups.iter().enumerate() {
            (c.scope_cgroup_ids[i], c.scope_cgroup_levels[i]) = resolve_cgroup(cg)?;
        }
        c.scope_ncgroups = scope.cgroups.len() as u32;
        let pending = scope
            .pending_containers
            .iter()
            .map(|id| {
                <[u8; CONTAINER_ID_LEN as usize]>::try_from(id.as_bytes())
                    .ok()
                    .filter(|b| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
                    .ok_or_else(|| ScopeError::PendingContainer(id.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if pending.len() > MAX_CGROUPS as usize {
            return Err(ScopeError::TooManyCgroups);
        }
        c.scope_watch = match (scope.new_containers, pending.is_empty()) {
            (true, _) => WATCH_NEW,
            (false, false) => WATCH_IDS,
            (false, true) => WATCH_OFF,
        };
        Ok(KernelScope {
            config: c,
            values,
            comms: comms.into_iter().collect(),
            exes,
            tree_members: descendants(&all_roots),
            pending_containers: pending,
        })
    }

    /// Whether processes must be followed through fork.
    pub fn needs_process_hooks(&self) -> bool {
        self.config.scope_tree != 0 || self.config.scope_follow != 0
    }

    /// Whether containers' cgroups join the scope as they are made.
    pub fn needs_cgroup_hooks(&self) -> bool {
        self.config.scope_watch != WATCH_OFF
    }
}

/// Marks `value` of the field at kernel index `field` in the scope_values entries.
fn mark(values: &mut Vec<(abi::scope_key, u8)>, field: usize, value: u64, mark: u8) {
    let key = abi::scope_key {
        field: field as u32,
        value,
        ..Default::default()
    };
    match values
        .iter_mut()
        .find(|(k, _)| k.field == key.field && k.value == value)
    {
        Some((_, m)) => *m |= mark,
        None => values.push((key, mark)),
    }
}

/// The roots and every live descendant, from /proc.
fn descendants(roots: &[u32]) -> Vec<u32> {
    if roots.is_empty() {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parent_of(&s))
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut all = roots.to_vec();
    let mut i = 0;
    while i < all.len() {
        if let Some(kids) = children.get(&all[i]) {
            all.extend(kids.iter().filter(|k| !roots.contains(k)));
        }
        i += 1;
    }
    all
}

/// The ppid field of /proc/PID/stat, after the command name (which may hold spaces and ')').
fn parent_of(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Where cgroup v2 is mounted: /sys/fs/cgroup on unified systems, a subdirectory on hybrid ones.
pub fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A cgroup given as a path (absolute, or relative to the cgroup2 root) or an id, as the
/// (id, depth) pair the kernel side compares against the caller's ancestor at that depth.
fn resolve_cgroup(given: &str) -> Result<(u64, u32), ScopeError> {
    let root = cgroup2_root().ok_or_else(|| {
        ScopeError::Cgroup(given.into(), "no cgroup v2 hierarchy is mounted".into())
    })?;
    resolve_cgroup_under(&root, given)
}

/// The executables of `executable=` and `executable!=` scopes, as files, with their marks.
/// Several `executable=` must all hold: only files in every list stay.
fn executables(scope: &Scope) -> Result<Vec<(abi::exe_key, u8)>, ScopeError> {
    let key = |k: &abi::exe_key| (k.dev, k.ino);
    let mut marks: HashMap<(u32, u64), (abi::exe_key, u8)> = HashMap::new();
    let mut wanted: Option<Vec<(u32, u64)>> = None;
    for list in &scope.exe_eq {
        let files = list
            .iter()
            .map(|p| resolve_exe(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<(u32, u64)> = files.iter().map(key).collect();
        wanted = Some(match wanted {
            Some(old) => old.into_iter().filter(|id| ids.contains(id)).collect(),
            None => ids,
        });
        if wanted.as_ref().is_some_and(|w| w.is_empty()) {
            return Err(ScopeError::Executable(
                list.join(","),
                "no file is in this list and in an earlier executable= list".into(),
            ));
        }
        for f in files {
            marks.entry(key(&f)).or_insert((f, 0));
        }
    }
    let wanted = wanted.unwrap_or_default();
    marks.retain(|id, _| wanted.contains(id));
    for m in marks.values_mut() {
        m.1 |= SCOPE_EQ;
    }
    for path in &scope.exe_ne {
        let f = resolve_exe(path)?;
        marks.entry(key(&f)).or_insert((f, 0)).1 |= SCOPE_NE;
    }
    if marks.len() > MAX_EXES as usize {
        return Err(ScopeError::TooManyExecutables);
    }
    Ok(marks.into_values().collect())
}

/// The file at `path` as the kernel side sees a process's executable: the device of its file
/// system's superblock and its inode number. stat's device is not always the superblock's
/// (btrfs gives a subvolume's), so the superblock's comes from the mount's line in
/// /proc/self/mountinfo, found by the mount id statx gives.
fn resolve_exe(path: &str) -> Result<abi::exe_key, ScopeError> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let fail = |why: String| ScopeError::Executable(path.into(), why);
    let st = statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::INO | StatxFlags::TYPE | StatxFlags::MNT_ID,
    )
    .map_err(|e| {
        fail(format!(
            "{}: give the path of a program file",
            std::io::Error::from(e)
        ))
    })?;
    if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFREG {
        return Err(fail(
            "not a regular file: give the path of a program file".into(),
        ));
    }
    let from_stat = || (st.stx_dev_major << 20) | st.stx_dev_minor;
    let dev = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| mount_device(&m, st.stx_mnt_id))
        .unwrap_or_else(from_stat);
    Ok(abi::exe_key {
        ino: st.stx_ino,
        dev,
        ..Default::default()
    })
}

/// The kernel's dev_t (major << 20 | minor) of mount `id` in a mountinfo listing.
fn mount_device(mountinfo: &str, id: u64) -> Option<u32> {
    mountinfo.lines().find_map(|line| {
        let mut f = line.split(' ');
        if f.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let (major, minor) = f.nth(1)?.split_once(':')?;
        Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
    })
}

/// `resolve_cgroup` with the cgroup2 mount point given: a path is either a directory under the
/// mount point, or a cgroup as /proc/PID/cgroup names it (`0::/system.slice`), relative to it.
fn resolve_cgroup_under(root: &Path, given: &str) -> Result<(u64, u32), ScopeError> {
    let fail = |why: String| ScopeError::Cgroup(given.into(), why);
    let root = &root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let dir = match given.parse::<u64>() {
        Ok(id) => find_by_id(root, id)
            .ok_or_else(|| fail(format!("no cgroup has id {id} under {}", root.display())))?,
        Err(_) => {
            let path = Path::new(given);
            let dir = match path.strip_prefix(root) {
                Ok(rel) => root.join(rel),
                Err(_) => root.join(path.strip_prefix("/").unwrap_or(path)),
            };
            let dir = match dir.canonicalize() {
                Ok(dir) if dir.is_dir() && dir.starts_with(root) => dir,
                // A directory, but of another hierarchy (cgroup v1 or the tmpfs above the
                // cgroup2 mount on a hybrid system): the kernel side matches v2 cgroups only.
                _ if path.is_absolute() && path.is_dir() => {
                    return Err(fail(format!(
                        "{given} is not in the cgroup v2 hierarchy, which is mounted at {}: give a directory under it, or the path /proc/PID/cgroup shows after '0::'",
                        root.display()
                    )))
                }
                _ => {
                    return Err(fail(format!(
                        "no such cgroup: {} does not exist; give a directory under {}, the path /proc/PID/cgroup shows after '0::', or a cgroup id",
                        dir.display(),
                        root.display()
                    )))
                }
            };
            dir
        }
    };
    let id = fs::metadata(&dir).map_err(|e| fail(e.to_string()))?.ino();
    let depth = dir
        .strip_prefix(root)
        .map(|rel| rel.components().count())
        .unwrap_or(0);
    Ok((id, depth as u32))
}

fn find_by_id(root: &Path, id: u64) -> Option<PathBuf> {
    let (_, path) = cgroups(root).into_iter().find(|&(ino, _)| ino == id)?;
    Some(root.join(path.trim_start_matches('/')))
}

/// Every cgroup under `root`: its id and its path as /proc/PID/cgroup shows it, each before
/// the cgroups under it.
pub fn cgroups(root: &Path) -> Vec<(u64, String)> {
    walk_cgroups(root).0
}

/// Every cgroup under `root`, as `cgroups` gives them, or None where a folder could not be
/// read for another reason than its removal during the walk (no fd left, say): a caller that
/// takes a cgroup missing from the list as gone must not act on a partial one.
pub fn all_cgroups(root: &Path) -> Option<Vec<(u64, String)>> {
    let (found, whole) = walk_cgroups(root);
    whole.then_some(found)
}

fn walk_cgroups(root: &Path) -> (Vec<(u64, String)>, bool) {
    let mut found = Vec::new();
    let mut whole = true;
    let mut stack = vec![root.to_path_buf()];
    let removed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    while let Some(dir) = stack.pop() {
        let meta = match fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) => {
                whole &= removed(&e);
                continue;
            }
        };
        let path = match dir.strip_prefix(root) {
            Ok(rel) => format!("/{}", rel.to_string_lossy()),
            Err(_) => continue,
        };
        found.push((meta.ino(), path));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                whole &= removed(&e);
                continue;
            }
        };
        for entry in entries {
            match entry {
                Ok(entry) if entry.file_type().is_ok_and(|t| t.is_dir()) => {
                    stack.push(entry.path())
                }
                Ok(_) => {}
                Err(e) => whole &= removed(&e),
            }
        }
    }
    (found, whole)
}

/// The cgroups under `root` now of the containers with these ids, and those under them: a
/// container started between the scope's resolving and the cgroup hook's attaching has its
/// cgroup already.
pub fn pending_cgroups(root: &Path, ids: &[[u8; CONTAINER_ID_LEN as usize]]) -> Vec<u64> {
    cgroups(root)
        .into_iter()
        .filter(|(_, path)| {
            container::from_cgroup_path(path)
                .is_some_and(|pc| ids.iter().any(|id| id[..] == *pc.id.as_bytes()))
        })
        .map(|(ino, _)| ino)
        .collect()
}

/// The kernel-side condition table of each filtered event.
pub fn kernel_filters(filters: &[ArgFilter]) -> Result<Vec<(u32, abi::filter)>, ScopeError> {
    let mut by_event: Vec<(u32, abi::filter)> = Vec::new();
    for f in filters {
        let id = u32::from(f.event.id);
        let pos = match by_event.iter().position(|(i, _)| *i == id) {
            Some(pos) => pos,
            None => {
                by_event.push((id, abi::filter::default()));
                by_event.len() - 1
            }
        };
        let table = &mut by_event[pos].1;
        if table.n == MAX_CONDS {
            return Err(ScopeError::TooManyFilters(f.event.name));
        }
        let (signed, width) = f.signed_width();
        let mut cond = abi::cond {
            target: match f.target {
                Target::Arg(i) => i as u8,
                Target::Ret => TARGET_RET,
            },
            op: match f.op {
                Op::Eq => OP_EQ,
                Op::Ne => OP_NE,
                Op::Lt => OP_LT,
                Op::Gt => OP_GT,
                Op::Le => OP_LE,
                Op::Ge => OP_GE,
            },
            is_signed: signed.into(),
            width,
            nvals: f.values.len() as u8,
            ..Default::default()
        };
        cond.vals[..f.values.len()].copy_from_slice(&f.values);
        table.conds[table.n as usize] = cond;
        table.n += 1;
    }
    Ok(by_event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parent() {
        assert_eq!(parent_of("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("1 (systemd) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn scope_folds_into_masks() {
        let s = Scope::parse(&[
            "pid=1,2",
            "uid!=0",
            "tid<100",
            "comm=bash",
            "comm!=zsh",
            "container",
        ])
        .unwrap();
        let k = KernelScope::build(&s, &[]).unwrap();
        let c = &k.config;
        assert_eq!(
            (
                c.scope_few_mask,
                c.scope_eq_mask,
                c.scope_ne_mask,
                c.scope_range_mask
            ),
            (1, 0, 4, 2)
        );
        assert_eq!((c.scope_few[0], c.scope_few_n[0]), ([1, 2, 0, 0], 2));
        assert_eq!(c.scope_max[1], 99);
        assert_eq!(k.values.len(), 1);
        assert_eq!(c.scope_comm, 3);
        assert_eq!(k.comms.len(), 2);
        assert_eq!(c.scope_container, 1);
        assert!(!k.needs_process_hooks());
        assert!(!k.needs_cgroup_hooks());
        let mut s = Scope::parse(&["container=new"]).unwrap();
        assert_eq!(
            KernelScope::build(&s, &[]).unwrap().config.scope_watch,
            WATCH_NEW
        );
        s.new_containers = false;
        s.pending_containers = vec!["ab".repeat(32)];
        let k = KernelScope::build(&s, &[]).unwrap();
        assert!(k.needs_cgroup_hooks() && k.config.scope_watch == WATCH_IDS);
        assert_eq!(&k.pending_containers[0][..], "ab".repeat(32).as_bytes());
        s.pending_containers = vec!["0f1d6e2c-8a9b-4c1d-8e2f-0a1b".into()];
        let err = KernelScope::build(&s, &[]).unwrap_err().to_string();
        assert!(err.contains("has not started"), "{err}");
        let k = KernelScope::build(&Scope::default(), &[std::process::id()]).unwrap();
        assert!(k.config.scope_tree == 1 && k.tree_members.contains(&std::process::id()));
        let k = KernelScope::build(&Scope::parse(&["pid=1,2,3,4,5"]).unwrap(), &[]).unwrap();
        let c = &k.config;
        assert_eq!(
            (c.scope_few_mask, c.scope_eq_mask, k.values.len()),
            (0, 1, 5)
        );
    }

    #[test]
    fn cgroups_resolve_or_explain() {
        if let Some(root) = cgroup2_root() {
            let (id, depth) = resolve_cgroup(root.to_str().unwrap()).unwrap();
            assert_eq!((id, depth), (fs::metadata(&root).unwrap().ino(), 0));
            assert_eq!(resolve_cgroup(&id.to_string()).unwrap(), (id, 0));
        }
        let err = resolve_cgroup("/no/such/group").unwrap_err().to_string();
        assert!(err.starts_with("scope cgroup=/no/such/group:"), "{err}");
    }

    #[test]
    fn cgroups_of_pending_containers() {
        let root = std::env::temp_dir().join(format!("mmtrace-pending-{}", std::process::id()));
        let id = "ab".repeat(32);
        let other = "cd".repeat(32);
        for dir in [
            format!("libpod_parent/libpod-{id}/sub"),
            format!("libpod_parent/libpod-conmon-{id}"),
            format!("libpod_parent/libpod-{other}"),
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let ino = |p: String| fs::metadata(root.join(p)).unwrap().ino();
        let mut found = pending_cgroups(&root, &[id.as_bytes().try_into().unwrap()]);
        found.sort();
        let mut want = vec![
            ino(format!("libpod_parent/libpod-{id}")),
            ino(format!("libpod_parent/libpod-{id}/sub")),
        ];
        want.sort();
        assert_eq!(found, want);
        fs::remove_dir_all(&root).unwrap();
    }

    /// As on a hybrid system, where cgroup2 is mounted below the v1 hierarchies' tmpfs.
    #[test]
    fn cgroup_paths_under_a_mount_point_below_another() {
        let top = std::env::temp_dir().join(format!("mmtrace-cg-{}", std::process::id()));
        let root = top.join("unified");
        fs::create_dir_all(root.join("a/b")).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let b = (ino(&root.join("a/b")), 2);
        let text = |p: &Path| p.to_str().unwrap().to_string();
        assert_eq!(
            resolve_cgroup_under(&root, "/a/b").unwrap(),
            b,
            "as /proc/PID/cgroup names it"
        );
        assert_eq!(resolve_cgroup_under(&root, "a/b/").unwrap(), b);
        assert_eq!(
            resolve_cgroup_under(&root, &text(&root.join("a/b"))).unwrap(),
            b
        );
        assert_eq!(
            resolve_cgroup_under(&root, &text(&root.join("a/../a/b"))).unwrap(),
            b
        );
        assert_eq!(
            resolve_cgroup_under(&root, &text(&root)).unwrap(),
            (ino(&root), 0)
        );
        let err = resolve_cgroup_under(&root, &text(&top))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "is not in the cgroup v2 hierarchy, which is mounted at {}",
                root.display()
            )),
            "{err}"
        );
        let err = resolve_cgroup_under(&root, "/no/such")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such cgroup"), "{err}");
        fs::remove_dir_all(&top).unwrap();
    }
}

//! The `-s/--scope` syntax, Tracee's: which processes are traced. Values after one `=` are
//! alternatives; every flag applies.

use std::collections::BTreeSet;

use crate::filter::{split_op, Op};

/// The numeric process fields a scope can compare, in the order the kernel side indexes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Pid,
    Tid,
    Uid,
}

impl Field {
    pub const ALL: [Field; 3] = [Field::Pid, Field::Tid, Field::Uid];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// All the conditions on one numeric field, folded into what the kernel checks: a set the
/// value must be in (when any `=` was given), a set it must not be in, and an inclusive range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldScope {
    pub eq: Option<BTreeSet<u64>>,
    pub ne: BTreeSet<u64>,
    pub min: u64,
    pub max: u64,
}

impl Default for FieldScope {
    fn default() -> Self {
        FieldScope {
            eq: None,
            ne: BTreeSet::new(),
            min: 0,
            max: u64::from(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Indexed by `Field::index`.
    pub fields: [FieldScope; 3],
    pub comm_eq: Option<BTreeSet<String>>,
    pub comm_ne: BTreeSet<String>,
    /// Paths of executables, one list per `executable=` (a process's must be in every list),
    /// and those it must not be. Compared as files, not as names, once resolved.
    pub exe_eq: Vec<Vec<String>>,
    pub exe_ne: Vec<String>,
    /// Roots whose processes and descendants, present and future, are traced.
    pub trees: Vec<u32>,
    /// cgroup v2 paths or ids, as given; their descendants count too.
    pub cgroups: Vec<String>,
    /// Some(true): only processes in a container; Some(false): only those outside.
    pub container: Option<bool>,
    /// Container ids or unique prefixes of them, as given: their cgroups are scoped as
    /// `cgroups` are, once resolved.
    pub container_ids: Vec<String>,
    /// `container=new`, Tracee's: the containers started after the trace, as their cgroups
    /// are made.
    pub new_containers: bool,
    /// The whole ids of containers created but not started, as their runtime gives them:
    /// their cgroups join the scope when they are made.
    pub pending_containers: Vec<String>,
    /// Descendants of matching processes are traced too, including ones born later.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scope '{expr}': {problem}")]
pub struct ScopeSyntaxError {
    pub expr: String,
    pub problem: String,
}

/// What a scope can name, for the errors that list them.
const FIELDS: &str = "pid, tid, uid, comm, executable, tree, cgroup, container, container=ID, container=new, not-container or follow";

/// Longest comm the kernel keeps (TASK_COMM_LEN less the NUL).
pub const COMM_MAX: usize = 15;

impl Scope {
    pub fn parse(flags: &[&str]) -> Result<Scope, ScopeSyntaxError> {
        let mut scope = Scope::default();
        for flag in flags {
            scope.add(flag.trim()).map_err(|problem| ScopeSyntaxError {
                expr: flag.to_string(),
                problem,
            })?;
        }
        Ok(scope)
    }

    fn add(&mut self, expr: &str) -> Result<(), String> {
        match expr {
            "container" | "not-container" => {
                let want = expr == "container";
                if self.container.is_some_and(|c| c != want) {
                    return Err("container and not-container exclude each other".into());
                }
                self.container = Some(want);
                return Ok(());
            }
            "follow" => {
                self.follow = true;
                return Ok(());
            }
            "" => return Err(format!("empty scope: expected {FIELDS}")),
            _ => {}
        }
        let Some((field, op, rhs)) = split_op(expr) else {
            return Err(format!(
                "'{expr}' is not a scope: expected FIELD OP VALUES (pid, tid, uid, comm, executable, tree, cgroup, container) or container, not-container, follow"
            ));
        };
        let values: Vec<&str> = rhs.split(',').map(str::trim).collect();
        if rhs.trim().is_empty() {
            return Err(format!("empty value after '{}'", op.symbol()));
        }
        if values.iter().any(|v| v.is_empty()) {
            return Err(format!(
                "empty item in '{}': remove the extra comma",
                rhs.trim()
            ));
        }
        match field.trim() {
            "pid" => self.numeric(Field::Pid, op, &values, "a process id such as 1234"),
            "tid" => self.numeric(Field::Tid, op, &values, "a thread id such as 1234"),
            "uid" => self.numeric(Field::Uid, op, &values, "a user id such as 1000"),
            "comm" => self.comm(op, &values),
            // Tracee's name and its aliases.
            "executable" | "exec" | "binary" | "bin" => {
                let paths = values.iter().map(|v| v.to_string());
                match op {
                    Op::Eq => self.exe_eq.push(paths.collect()),
                    Op::Ne => self.exe_ne.extend(paths),
                    _ => return Err(format!("executable takes = or !=, not '{}'", op.symbol())),
                }
                Ok(())
            }
            "tree" => {
                only_eq(op, "tree")?;
                once(&self.trees, "tree")?;
                self.trees = ids(&values, "a process id such as 1234")?
                    .into_iter()
                    .map(|v| v as u32)
                    .collect();
                Ok(())
            }
            "cgroup" => {
                only_eq(op, "cgroup")?;
                once(&self.cgroups, "cgroup")?;
                self.cgroups = values.iter().map(|v| v.to_string()).collect();
                self.cgroups_or_containers()
            }
            "container" => {
                only_eq(op, "container")?;
                if self.new_containers {
                    return Err(
                        "container is given twice: list every value after one container=".into(),
                    );
                }
                once(&self.container_ids, "container")?;
                let (new, ids): (Vec<&str>, Vec<&str>) = values.iter().partition(|v| **v == "new");
                if let Some(bad) = ids.iter().find(|v| !is_container_id(v)) {
                    return Err(format!(
                        "'{bad}' is not a container id: expected hex digits, the start of an id `podman ps -a` or `docker ps -a` shows, or new (the containers started from now on)"
                    ));
                }
                self.new_containers = !new.is_empty();
                self.container_ids = ids.iter().map(|v| v.to_ascii_lowercase()).collect();
                self.cgroups_or_containers()
            }
            flag @ ("not-container" | "follow") => Err(format!(
                "{flag} takes no value: {}",
                match flag {
                    "follow" => "give follow alone, after the scopes whose descendants it adds",
                    _ =>
                        "it selects every process outside a container (in the host's pid namespace)",
                }
            )),
            other => Err(format!("unknown scope field '{other}': expected {FIELDS}")),
        }
    }

    fn numeric(&mut self, field: Field, op: Op, values: &[&str], what: &str) -> Result<(), String> {
        let nums = ids(values, what)?;
        let fs = &mut self.fields[field.index()];
        if values.len() > 1 && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!(
                "'{}' takes a single value; lists are for = and !=",
                op.symbol()
            ));
        }
        let v = nums[0];
        match op {
            Op::Eq => {
                let new: BTreeSet<u64> = nums.into_iter().collect();
                let both: BTreeSet<u64> = match fs.eq.take() {
                    Some(old) => old.intersection(&new).copied().collect(),
                    None => new,
                };
                if both.is_empty() {
                    return Err(
                        "no value can satisfy this and an earlier '=' on the same field".into(),
                    );
                }
                fs.eq = Some(both);
            }
            Op::Ne => fs.ne.extend(nums),
            Op::Lt => fs.max = fs.max.min(v.checked_sub(1).ok_or("nothing is below 0")?),
            Op::Le => fs.max = fs.max.min(v),
            Op::Gt => fs.min = fs.min.max(v + 1),
            Op::Ge => fs.min = fs.min.max(v),
        }
        if fs.min > fs.max {
            return Err("no value can satisfy this range with the earlier ones".into());
        }
        Ok(())
    }

    fn comm(&mut self, op: Op, values: &[&str]) -> Result<(), String> {
        if let Some(long) = values.iter().find(|v| v.len() > COMM_MAX) {
            return Err(format!("'{long}' is longer than {COMM_MAX} bytes, the most the kernel keeps of a command name"));
        }
        let names: BTreeSet<String> = values.iter().map(|v| v.to_string()).collect();
        match op {
            Op::Eq => {
                let both = match self.comm_eq.take() {
                    Some(old) => old.intersection(&names).cloned().collect(),
                    None => names,
                };
                if both.is_empty() {
                    return Err("no name can satisfy this and an earlier comm=".into());
                }
                self.comm_eq = Some(both);
            }
            Op::Ne => self.comm_ne.extend(names),
            _ => return Err(format!("comm takes = or !=, not '{}'", op.symbol())),
        }
        Ok(())
    }
}

impl Scope {
    /// Both are cgroups for the kernel side, which takes either alone: together they would
    /// widen each other rather than narrow.
    fn cgroups_or_containers(&self) -> Result<(), String> {
        match self.cgroups.is_empty() || (self.container_ids.is_empty() && !self.new_containers) {
            true => Ok(()),
            false => Err("cgroup= and container= exclude each other: give one of them".into()),
        }
    }
}

/// Container ids are hex (docker, podman, CRI-O, containerd), Garden's have dashes as well.
fn is_container_id(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn only_eq(op: Op, field: &str) -> Result<(), String> {
    match op {
        Op::Eq => Ok(()),
        _ => Err(format!("{field} takes '=', not '{}'", op.symbol())),
    }
}

fn once<T>(have: &[T], field: &str) -> Result<(), String> {
    match have.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{field} is given twice: list every value after one {field}="
        )),
    }
}

fn ids(values: &[&str], what: &str) -> Result<Vec<u64>, String> {
    values
        .iter()
        .map(|v| match v.parse::<u32>() {
            Ok(n) => Ok(u64::from(n)),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(format!(
                "'{v}' is out of range: expected {what}, at most {}",
                u32::MAX
            )),
            Err(_) => Err(format!("'{v}' is not a number: expected {what}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(flags: &[&str]) -> Scope {
        Scope::parse(flags).unwrap()
    }

    fn err(flags: &[&str]) -> String {
        Scope::parse(flags).unwrap_err().to_string()
    }

    #[test]
    fn numeric_fields_fold_into_sets_and_ranges() {
        let s = scope(&["pid=1,2,3", "pid!=2", "uid>=1000", "uid<2000", "tid>5"]);
        let pid = &s.fields[Field::Pid.index()];
        assert_eq!(
            pid.eq.as_ref().unwrap().iter().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(pid.ne.contains(&2));
        let uid = &s.fields[Field::Uid.index()];
        assert_eq!((uid.min, uid.max), (1000, 1999));
        assert_eq!(s.fields[Field::Tid.index()].min, 6);
        assert_eq!(scope(&[]), Scope::default());
        assert!(
            scope(&["pid=1,2", "pid=2,3"]).fields[0]
                .eq
                .as_ref()
                .unwrap()
                .len()
                == 1
        );
    }

    #[test]
    fn names_trees_and_flags() {
        let s = scope(&[
            "comm=bash,sshd",
            "comm!=zsh",
            "tree=1,42",
            "cgroup=/system.slice",
            "follow",
            "container",
        ]);
        assert_eq!(s.comm_eq.unwrap().len(), 2);
        assert!(s.comm_ne.contains("zsh"));
        assert_eq!(s.trees, [1, 42]);
        assert_eq!(s.cgroups, ["/system.slice"]);
        assert!(s.follow);
        assert_eq!(s.container, Some(true));
        assert_eq!(scope(&["not-container"]).container, Some(false));
        let s = scope(&["container", "container=4F1D2C,0f1d6e2c-8a9b"]);
        assert_eq!(s.container, Some(true));
        assert_eq!(s.container_ids, ["4f1d2c", "0f1d6e2c-8a9b"]);
        assert!(!s.new_containers);
        let s = scope(&["container=new"]);
        assert!(s.new_containers && s.container_ids.is_empty());
        let s = scope(&["container=new,4f1d"]);
        assert!(s.new_containers);
        assert_eq!(s.container_ids, ["4f1d"]);
        let s = scope(&["executable=/bin/a,/bin/b", "bin=/bin/b", "exec!=/bin/c"]);
        assert_eq!(s.exe_eq, [vec!["/bin/a", "/bin/b"], vec!["/bin/b"]]);
        assert_eq!(s.exe_ne, ["/bin/c"]);
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            err(&["pid>abc"]),
            "scope 'pid>abc': 'abc' is not a number: expected a process id such as 1234"
        );
        assert!(err(&["pdi=1"]).contains("unknown scope field 'pdi'"));
        assert!(err(&["pid"]).contains("is not a scope"));
        assert!(err(&["pid="]).contains("empty value"));
        assert!(err(&["pid<1,2"]).contains("single value"));
        assert!(err(&["pid=1", "pid=2"]).contains("no value can satisfy"));
        assert!(err(&["uid>10", "uid<5"]).contains("no value can satisfy this range"));
        assert!(err(&["pid<0"]).contains("nothing is below 0"));
        assert!(err(&["comm=averyveryverylongname"]).contains("longer than 15 bytes"));
        assert!(err(&["comm>a"]).contains("comm takes = or !="));
        assert!(err(&["executable>/bin/a"]).contains("executable takes = or !="));
        assert!(err(&["executable=/a,,/b"]).contains("empty item"));
        assert!(err(&["tree!=1"]).contains("tree takes '='"));
        assert!(err(&["tree=1", "tree=2"]).contains("given twice"));
        assert!(err(&["container", "not-container"]).contains("exclude each other"));
        assert!(err(&[""]).contains("empty scope"));
        assert_eq!(
            err(&["pid=99999999999999"]),
            "scope 'pid=99999999999999': '99999999999999' is out of range: expected a process id such as 1234, at most 4294967295"
        );
        assert_eq!(
            err(&["tree=1,2,,3"]),
            "scope 'tree=1,2,,3': empty item in '1,2,,3': remove the extra comma"
        );
        assert!(err(&["pid=-1"]).contains("'-1' is not a number"));
        assert_eq!(
            err(&["container=4f1d2c,xyz"]),
            "scope 'container=4f1d2c,xyz': 'xyz' is not a container id: expected hex digits, the start of an id `podman ps -a` or `docker ps -a` shows, or new (the containers started from now on)"
        );
        assert!(err(&["container=new", "container=4f"]).contains("given twice"));
        assert!(err(&["container=new", "cgroup=/a"]).contains("exclude each other"));
        assert!(err(&["container!=4f"]).contains("container takes '='"));
        assert!(err(&["container=4f", "container=5e"]).contains("given twice"));
        assert!(err(&["container=4f", "cgroup=/a"]).contains("exclude each other"));
        assert!(err(&["cgroup=/a", "container=4f"]).contains("exclude each other"));
        assert!(err(&["not-container=x"]).contains("not-container takes no value"));
        assert!(err(&["follow=1"]).contains("follow takes no value"));
    }
}

//! The JSON line mmtrace writes, as types: Tracee's keys in Tracee's order, then mmtrace's,
//! each with what it means. The writer (`mmtrace`'s output/json.rs) stays hand-written, for
//! speed; `mmtrace analyze` reads lines into these types; `explain` and the event pages list
//! the keys from here; and a property test checks that every line the writer writes parses
//! into them with the values of the event it came from.

use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A key's value, kept as the line's own text until it is read, and read leniently: a value
/// of another type than expected reads as None, which costs that key, not the line. A key
/// nobody reads is only scanned past, which is most of what reading a recording saves.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a, T> {
    raw: Option<&'a RawValue>,
    of: PhantomData<T>,
}

impl<T> Default for Key<'_, T> {
    fn default() -> Self {
        Key {
            raw: None,
            of: PhantomData,
        }
    }
}

impl<'a, T: Deserialize<'a>> Key<'a, T> {
    /// The value, if the line has the key with a value of its type.
    pub fn get(&self) -> Option<T> {
        serde_json::from_str(self.raw?.get()).ok()
    }

    /// Whether the line has the key with a value, null being none.
    pub fn present(&self) -> bool {
        self.raw.is_some_and(|r| r.get() != "null")
    }
}

impl<'de: 'a, 'a, T> Deserialize<'de> for Key<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Key {
            raw: Some(<&RawValue>::deserialize(d)?),
            of: PhantomData,
        })
    }
}

/// One line. Documented in `KEYS` and the extras' consts below, in this order.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Line<'a> {
    #[serde(borrow)]
    pub timestamp: Key<'a, u64>,
    #[serde(borrow)]
    pub thread_start_time: Key<'a, u64>,
    #[serde(borrow)]
    pub processor_id: Key<'a, u16>,
    #[serde(borrow)]
    pub process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub cgroup_id: Key<'a, u64>,
    #[serde(borrow)]
    pub thread_id: Key<'a, u32>,
    #[serde(borrow)]
    pub parent_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_thread_id: Key<'a, u32>,
    #[serde(borrow)]
    pub host_parent_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub user_id: Key<'a, u32>,
    #[serde(borrow)]
    pub mount_namespace: Key<'a, u32>,
    #[serde(borrow)]
    pub pid_namespace: Key<'a, u32>,
    #[serde(borrow)]
    pub process_name: Key<'a, String>,
    #[serde(borrow)]
    pub executable: Key<'a, Executable<'a>>,
    #[serde(borrow)]
    pub host_name: Key<'a, String>,
    #[serde(borrow)]
    pub container_id: Key<'a, String>,
    #[serde(borrow)]
    pub container: Key<'a, Map<String, Value>>,
    #[serde(borrow)]
    pub kubernetes: Key<'a, Map<String, Value>>,
    /// A decimal number, as a string.
    #[serde(borrow)]
    pub event_id: Key<'a, String>,
    #[serde(borrow)]
    pub event_name: Key<'a, String>,
    #[serde(borrow)]
    pub matched_policies: Key<'a, Vec<String>>,
    #[serde(borrow)]
    pub args_num: Key<'a, u64>,
    #[serde(borrow)]
    pub return_value: Key<'a, i64>,
    #[serde(borrow)]
    pub syscall: Key<'a, String>,
    #[serde(borrow)]
    pub stack_addresses: Key<'a, Vec<u64>>,
    #[serde(borrow)]
    pub context_flags: Key<'a, ContextFlags>,
    #[serde(borrow)]
    pub thread_entity_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_entity_id: Key<'a, u32>,
    #[serde(borrow)]
    pub parent_entity_id: Key<'a, u32>,
    /// Read whole: a line whose arguments are not a list of arguments is no event.
    pub args: Option<Vec<Arg>>,
    #[serde(borrow)]
    pub duration: Key<'a, u64>,
    #[serde(borrow)]
    pub process_start_time: Key<'a, u64>,
    #[serde(borrow)]
    pub return_error: Key<'a, String>,
    #[serde(borrow)]
    pub target: Key<'a, Target<'a>>,
    #[serde(borrow)]
    pub memory: Key<'a, Memory<'a>>,
    #[serde(borrow)]
    pub reason: Key<'a, String>,
    #[serde(borrow)]
    pub locked: Key<'a, Locked<'a>>,
    #[serde(borrow)]
    pub mapping: Key<'a, Mapping<'a>>,
    #[serde(borrow)]
    pub unlocked_bytes: Key<'a, u64>,
    #[serde(borrow)]
    pub limit: Key<'a, Limit>,
    #[serde(borrow)]
    pub stack: Key<'a, Vec<StackFrame>>,
}

/// `limit`: which limit an OOM kill came from. Small and rare: read whole; the analysis
/// writes it as it read it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failcnt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the writer writes of a live event's `OomLimit`, as a recording reads it back.
impl From<&crate::enrich::OomLimit> for Limit {
    fn from(o: &crate::enrich::OomLimit) -> Limit {
        let lossy = |t: &Option<crate::TracedText>| t.as_ref().map(|t| t.to_str_lossy().into());
        Limit {
            scope: Some(o.scope().to_string()),
            constraint: o.constraint.clone(),
            cgroup: lossy(&o.cgroup),
            task_cgroup: lossy(&o.task_cgroup),
            usage_bytes: o.usage_bytes,
            limit_bytes: o.limit_bytes,
            failcnt: o.failcnt,
            cgroup_version: o.cgroup_version,
            pressure: o.pressure.map(|p| Pressure {
                some_avg10: f64::from(p.some_avg10) / 100.0,
                full_avg10: f64::from(p.full_avg10) / 100.0,
            }),
            reason: o.unread.clone(),
        }
    }
}

/// PSI avg10 figures, percent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    pub some_avg10: f64,
    pub full_avg10: f64,
}

/// One frame of `stack`, innermost first; what the symbolizer did not know is left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackFrame {
    pub address: Option<String>,
    pub function: Option<String>,
    pub offset: Option<String>,
    pub module: Option<String>,
    pub module_offset: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One argument; its `type` is the catalog's (`ArgType::tracee_name`), so values say
/// what they are: pointers as hex strings, numbers, strings, booleans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Arg {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: Value,
    /// The value's names (`PROT_READ|PROT_WRITE`), where the catalog's decoder has some.
    pub decoded: Option<String>,
    /// The value the kernel received, where Tracee's type cannot hold it (`KEYS`).
    #[serde(rename = "kernelValue")]
    pub kernel_value: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Executable<'a> {
    #[serde(borrow, default)]
    pub path: Key<'a, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextFlags {
    pub container_started: bool,
    pub is_compat: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Target<'a> {
    #[serde(borrow)]
    pub host_process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_id: Key<'a, u32>,
    #[serde(borrow)]
    pub process_name: Key<'a, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Memory<'a> {
    #[serde(borrow)]
    pub before: Key<'a, Rss>,
    /// null when no memory was left.
    #[serde(borrow)]
    pub after: Key<'a, Rss>,
    #[serde(borrow)]
    pub freed_bytes: Key<'a, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Locked<'a> {
    #[serde(borrow)]
    pub locked_bytes: Key<'a, u64>,
    /// null when unlimited.
    #[serde(borrow)]
    pub limit_bytes: Key<'a, u64>,
    #[serde(borrow)]
    pub cap_ipc_lock: Key<'a, bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Mapping<'a> {
    /// Hex strings, as pointers are.
    #[serde(borrow)]
    pub start: Key<'a, String>,
    #[serde(borrow)]
    pub end: Key<'a, String>,
    /// `MappingKind::name`.
    #[serde(borrow)]
    pub kind: Key<'a, String>,
    /// Decoded, as `PROT_READ|PROT_WRITE`.
    #[serde(borrow)]
    pub prot: Key<'a, String>,
    #[serde(borrow)]
    pub shared: Key<'a, bool>,
    #[serde(borrow)]
    pub locked: Key<'a, bool>,
    #[serde(borrow)]
    pub path: Key<'a, String>,
    #[serde(borrow)]
    pub name: Key<'a, String>,
}

impl Line<'_> {
    /// Reads `text` as a line; the error says why it is none.
    pub fn parse(text: &[u8]) -> Result<Line<'_>, serde_json::Error> {
        // Text known to be UTF-8 lends each key's value as it is; bytes would be checked
        // again for every key, which cost a third of reading a recording. A line that is
        // not UTF-8 is still read as far as it can be, as a reader of bytes does.
        match std::str::from_utf8(text) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(text),
        }
    }
}

/// The keys every line has, in order, with what each holds; `returnError` only on failure. A
/// test in `mmtrace` holds the captured examples to this list.
/// mmtrace's additions of each event follow (`EventDef::extra_fields`).
pub const KEYS: &[(&str, &str)] = &[
    (
        "timestamp",
        "when the call entered the kernel, ns since the epoch",
    ),
    (
        "threadStartTime",
        "when the calling thread started, ns since the epoch",
    ),
    ("processorId", "the CPU the call returned on"),
    (
        "processId",
        "the caller's pid, as its own pid namespace numbers it",
    ),
    ("cgroupId", "the caller's cgroup (v2) id"),
    (
        "threadId",
        "the caller's thread id, in its own pid namespace",
    ),
    (
        "parentProcessId",
        "the caller's parent, in its own pid namespace",
    ),
    ("hostProcessId", "the caller's pid as the host sees it"),
    ("hostThreadId", "the caller's thread id as the host sees it"),
    (
        "hostParentProcessId",
        "the parent's pid as the host sees it",
    ),
    ("userId", "the caller's user id"),
    (
        "mountNamespace",
        "inode number of the caller's mount namespace",
    ),
    ("pidNamespace", "inode number of the caller's pid namespace"),
    (
        "processName",
        "the calling thread's name (comm, 15 characters at most)",
    ),
    (
        "executable",
        "{path}: the process's executable, read in the kernel from its address space \
         (mm->exe_file) once per process and again after an exec; left out where the kernel \
         gave none (a process seen only by kernel events, --no-enrich, a kernel before 5.17)",
    ),
    ("hostName", "the name of the machine mmtrace runs on"),
    (
        "containerId",
        "the caller's container id, from its cgroup by Tracee's rules; left out outside a container",
    ),
    (
        "container",
        "{id, name, image, imageDigest, runtime}: name, image and digest as the container's \
         runtime gives them, each left out when no runtime answers; left out outside a container",
    ),
    (
        "kubernetes",
        "{podName, podNamespace, podUID, podSandbox} from the runtime's io.kubernetes.pod.* \
         labels; left out outside a pod",
    ),
    (
        "eventId",
        "Tracee's id for the event, as a decimal string: the x86_64 syscall number for a \
         syscall, Tracee's own id for its other events, 1500-1999 for events Tracee lacks \
         (`mmtrace list` shows them)",
    ),
    ("eventName", "the event name, as `mmtrace list` shows it"),
    ("matchedPolicies", "[]: kept for Tracee"),
    ("argsNum", "how many arguments follow in args"),
    (
        "returnValue",
        "what the kernel returned: the result, or -errno on failure",
    ),
    ("syscall", "the syscall name"),
    (
        "stackAddresses",
        "with --stack, the caller's user stack: return addresses as numbers, innermost \
         first (Tracee's key); [] without",
    ),
    (
        "contextFlags",
        "{containerStarted, isCompat}: kept for Tracee, both false",
    ),
    (
        "threadEntityId",
        "Tracee's id of the calling thread: a hash of its host thread id and threadStartTime \
         (to 100 ms), as Tracee computes it",
    ),
    (
        "processEntityId",
        "Tracee's id of the calling process: a hash of hostProcessId and processStartTime \
         (to 100 ms); the threadEntityId of its main thread",
    ),
    (
        "parentEntityId",
        "Tracee's id of the parent process: the processEntityId its own events carry",
    ),
    (
        "args",
        "one {name, type, value} object per argument, with decoded where the value has names \
         (at the kernel's width), and kernelValue, the number the kernel received, where \
         Tracee's narrower type cannot hold it (mprotect's prot is an int32 to Tracee, an \
         unsigned long to the kernel)",
    ),
    ("duration", "ns from entering the kernel to returning"),
    (
        "processStartTime",
        "when the calling process (its main thread) started, ns since the epoch: with \
         hostProcessId, what tells it from a later process that got the same pid",
    ),
    (
        "returnError",
        "the errno name, present only when the call failed",
    ),
];

/// mmtrace's additions, each added by the catalog's `Extra`s that gather it.
pub const TARGET: (&str, &str) = (
    "target",
    "the process the pidfd refers to: hostProcessId, processId (as its own pid \
     namespace numbers it, so 1 for a container's init), processName (empty once \
     reaped)",
);
pub const VICTIM: (&str, &str) = (
    "target",
    "the process the OOM killer chose: hostProcessId, processId, processName",
);
pub const MEMORY: (&str, &str) = (
    "memory",
    "the target's resident memory in bytes when the call started (before) and \
     returned (after; null when no memory is left), each {anon, file, shmem}, \
     and freedBytes, the difference",
);
pub const REASON: (&str, &str) = (
    "reason",
    "on failure, why in words (EINVAL: the target is not dying yet)",
);
pub const LOCKED: (&str, &str) = (
    "locked",
    "the caller's locked memory after the call: lockedBytes (VmLck), limitBytes \
     (RLIMIT_MEMLOCK soft limit, null when unlimited), capIpcLock (whether the \
     limit applies at all)",
);
pub const MAPPING_BEFORE: (&str, &str) = (
    "mapping",
    "the mapping at addr before the call: start, end, kind (anon, file, stack, \
     heap, shared-anon, memfd, sysv-shm, secretmem, kernel-file), prot, \
     shared, locked, path for files and name for memfds (their name), SysV \
     segments (their key) and kernel files; only {\"kind\":\"unmapped\"} \
     when nothing is mapped there, and {\"kind\":\"unread\"} when another \
     thread held the address space's lock throughout",
);
pub const MAPPING_AFTER: (&str, &str) = (
    "mapping",
    "the mapping the call created: start, end, kind, prot, shared, locked, path \
     for files and name for memfds, SysV segments and kernel files; only \
     {\"kind\":\"unread\"} when another thread held the address space's lock \
     throughout",
);
/// With --stack, on every syscall's line, after all the others.
pub const STACK: (&str, &str) = (
    "stack",
    "with --stack, the frames of stackAddresses symbolized, innermost first: address, \
     function and offset (from its start), module (the mapped file) and moduleOffset, file \
     and line where the module has debug information; what is not known is left out",
);
pub const UNLOCKED_BYTES: (&str, &str) = (
    "unlockedBytes",
    "locked memory the call released without a munlock",
);
pub const LIMIT: (&str, &str) = (
    "limit",
    "which limit the OOM kill came from, as the kernel's own report of it (/dev/kmsg) says: \
     scope (system: the whole machine ran out; cgroup: a memory cgroup's limit; cpuset, \
     mempolicy; unknown, with reason, when the report was not read), constraint (the \
     kernel's CONSTRAINT_*), and for a cgroup: cgroup (the path, dmesg's oom_memcg), \
     taskCgroup (the victim's, task_memcg), usageBytes, limitBytes and failcnt at the kill, \
     cgroupVersion, and on cgroup v2 its own pressure {someAvg10, fullAvg10} (v1 keeps none \
     per cgroup)",
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{self, Visitor};

    /// The field names a struct's Deserialize asks for, in order: serde hands them to
    /// `deserialize_struct`.
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Fields(Option<&'static [&'static str]>);
        impl<'de> Deserializer<'de> for &mut Fields {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("only structs"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = Some(fields);
                Err(de::Error::custom("seen"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut f = Fields(None);
        let _ = T::deserialize(&mut f);
        f.0.expect("a struct")
    }

    #[test]
    fn the_documented_keys_are_the_lines_in_order() {
        let keys: Vec<&str> = KEYS.iter().map(|&(k, _)| k).collect();
        let extras = [
            TARGET,
            MEMORY,
            REASON,
            LOCKED,
            MAPPING_BEFORE,
            UNLOCKED_BYTES,
            LIMIT,
            STACK,
        ];
        let all: Vec<&str> = keys
            .iter()
            .copied()
            .chain(extras.iter().map(|&(k, _)| k))
            .collect();
        assert_eq!(fields::<Line>(), all);
        for (a, b) in [(TARGET, VICTIM), (MAPPING_BEFORE, MAPPING_AFTER)] {
            assert_eq!(a.0, b.0);
        }
    }

    #[test]
    fn a_key_of_another_type_costs_the_key_not_the_line() {
        let line = Line::parse(
            br#"{"timestamp":"soon","hostProcessId":7,"locked":{"lockedBytes":4096,"limitBytes":null},"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(line.timestamp.get(), None);
        assert!(line.timestamp.present());
        assert_eq!(line.host_process_id.get(), Some(7));
        let locked = line.locked.get().unwrap();
        assert_eq!(locked.locked_bytes.get(), Some(4096));
        assert_eq!(locked.limit_bytes.get(), None);
        assert!(!locked.cap_ipc_lock.present());
        assert!(!line.mapping.present());
    }
}

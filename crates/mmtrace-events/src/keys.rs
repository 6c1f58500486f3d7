//! The JSON line's keys and what each holds: Tracee's, in order, then mmtrace's additions,
//! each named by the catalog's extras that gather it. The reference pages and `explain` print
//! them; a test holds the line's own fields to them.

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
        "Tracee's id for the event, as a decimal string: the syscall number of the machine's \
         architecture for a syscall (x86_64's or arm64's, as Tracee's), Tracee's own id for its other events, 1500-1999 for events Tracee lacks \
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

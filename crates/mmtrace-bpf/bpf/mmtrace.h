/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Everything that crosses the boundary between mmtrace's kernel side (mmtrace.bpf.c) and user
 * space: the records and their flags, the kinds and ids they carry, the layouts of the maps
 * user space fills, and the configuration. scripts/build-bpf generates the Rust side
 * (crates/mmtrace-abi/src/bindings.rs) from this file, so each of them is written once; CI
 * fails when the generated file is stale. Kernel structures read through CO-RE are not here:
 * they are the kernel's, and user space never sees them.
 */
#ifndef MMTRACE_H
#define MMTRACE_H

#include <linux/types.h>

/* Event ids index arrays of this size, on both sides. */
#define MAX_IDS 1024

/* Kernel events: catalog ids of the entries with a tracepoint source. Enums with a type name
 * it for bindgen, so that each constant reaches Rust as the type of the field it goes in. */
enum kernel_event_id : __u16 {
	ID_OOM_MARK_VICTIM = 1000,
	ID_OOM_START_TASK_REAPING = 1001,
	ID_OOM_FINISH_TASK_REAPING = 1002,
	ID_OOM_SKIP_TASK_REAPING = 1003,
	ID_SCHED_PROCESS_EXIT = 1004,
	ID_EXIT_MMAP = 1005,
};

struct record {
	__u64 ts;           /* entry, CLOCK_BOOTTIME ns */
	__u64 duration;     /* ns */
	__u64 args[8];      /* a syscall's 6 registers, or a kernel event's fields */
	__s64 ret;
	__u64 cgroup_id;
	__u64 thread_start; /* CLOCK_BOOTTIME ns */
	/* The process's start (its leader's) and its parent's: with the pids, what tells a
	 * process from a later one that got the same pid (Tracee's entity ids). */
	__u64 leader_start, parent_start; /* CLOCK_BOOTTIME ns */
	__u32 pid, tid, ppid;          /* as the host sees them */
	__u32 ns_pid, ns_tid, ns_ppid; /* as the task's own pid namespace sees them */
	__u32 uid, gid;
	__u32 mnt_ns, pid_ns;
	__u16 id;           /* syscall number: the catalog's key */
	__u16 cpu;
	__u32 absent;       /* bit i: args[i] is a field this kernel does not have */
	__u8 comm[16];
};

/* What the catalog asks for, per event (`Extra` in Rust): the `want` bits, in cfg.extras. */
enum extra_bits : __u16 {
	X_TARGET_ARG0 = 1, /* arg 0 is a pidfd: name its process */
	X_TARGET_RET = 2,  /* the return value is a pidfd: name its process */
	X_RSS = 4,         /* the target's resident memory before and after */
	X_LOCKED = 8,      /* the caller's locked memory after, its limit and CAP_IPC_LOCK */
	X_VMA = 16,        /* the mapping at arg 0 before the call */
	X_UNLOCKED = 32,   /* locked memory the call released (munmap) */
	X_VMA_RET = 64,    /* the mapping at the returned address after the call (mmap) */
};

/* Which parts of `struct ext` a record carries. */
enum ext_flags {
	E_TARGET = 1,
	E_RSS_BEFORE = 2,
	E_RSS_AFTER = 4,
	E_LOCKED = 8,
	E_VMA = 16,
	E_UNLOCKED = 32,
	/* The path slot holds the caller's executable (mm->exe_file), sent once per process. */
	E_EXE = 64,
	/* The call asked for no extras: the record carries them only for the executable. */
	E_EXE_ONLY = 128,
};

/* VMA_INTERNAL: a file on a mount of the kernel's own (shared anonymous memory, memfd, SysV
 * shm, secretmem), which has a name but no path; user space tells them apart by the name.
 * VMA_UNREAD: the mmap lock stayed taken by another thread and the mapping was not read. */
enum vma_kind { VMA_UNMAPPED, VMA_ANON, VMA_FILE, VMA_STACK, VMA_HEAP, VMA_SHARED, VMA_INTERNAL, VMA_UNREAD };

/* The bits of vm_flags the kernel side and user space read (include/linux/mm.h). */
enum vm_flag_bits : __u64 {
	VM_SHARED = 0x8,
	VM_GROWSDOWN = 0x100,
	VM_LOCKED = 0x2000,
};

/* The mm's counters in the kernel's order (MM_* in include/linux/mm_types_task.h). */
enum rss_counter { MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES, NR_MM_COUNTERS };

/* Facts no raw syscall record has, gathered at the moment of the call. Ordered by how many
 * events gather them: a record carries the shortest prefix that holds its facts (EXT_CALLER,
 * EXT_TARGET or all), so a storm of the most frequent calls (munmap, mprotect, mlock) fills the
 * ring a third slower. */
struct ext {
	__u32 flags;         /* E_* */
	__u32 vma_kind;
	__u32 cap_ipc_lock;
	__u32 pad;
	__u64 locked_vm;     /* caller's, pages, after the call */
	__u64 locked_before; /* caller's, pages, at entry */
	__u64 memlock_cur;   /* RLIMIT_MEMLOCK soft limit, bytes */
	__u64 vma_start, vma_end, vma_flags;
	/* EXT_CALLER ends here: what every caller-side fact needs. */
	__u32 target_pid;    /* host view */
	__u32 target_ns_pid; /* in the target's own pid namespace */
	__u8 target_comm[16];
	/* EXT_TARGET ends here. */
	__s64 rss_before[NR_MM_COUNTERS]; /* target's mm counters in pages */
	__s64 rss_after[NR_MM_COUNTERS];
};

/* The prefixes of `struct ext` a record can end with. An enum, so that bindgen has clang
 * work the offsets out and user space gets them as numbers. */
enum ext_prefix {
	EXT_CALLER = __builtin_offsetof(struct ext, target_pid),
	EXT_TARGET = __builtin_offsetof(struct ext, rss_before),
};

#define PATH_BUF 512

/* Sizes of record a call can have: bare, with a prefix of its extras, with all of them and a
 * file path. Most calls need no extras, and most mappings have no file path. */
struct record_ext {
	struct record base;
	struct ext ext;
};

struct record_path {
	struct record base;
	struct ext ext;
	/* File path components, leaf first, each followed by '/': the mapping's, or with E_EXE
	 * the caller's executable. */
	char path[PATH_BUF];
};

/* With cfg.stack, each syscall's record is followed by its caller's user stack: the return
 * addresses the kernel's frame-pointer walk found (innermost first, at most MAX_STACK), then a
 * struct stack_tail. A tail rather than a field, so a trace without --stack sends nothing
 * more, and a stack sends only the frames it has; user space, which asked for stacks, finds
 * the tail at the record's end. */
#define MAX_STACK 32

struct stack_tail {
	/* The word at the user stack pointer (x86_64) or the link register (arm64): the return
	 * address into the caller of a syscall wrapper that keeps no frame of its own (libc's),
	 * which the frame-pointer walk skips. User space keeps it only where it is one. */
	__u64 sp_word;
	__u32 nframes;
	__u32 pad;
};

/* Scope fields compared by value: indexes of the cfg.scope_* arrays and bits of their masks. */
enum scope_field { F_PID, F_TID, F_UID, NFIELDS };

/* Up to this many '=' values of a field are compared in place (cfg.scope_few); more go to the
 * scope_values map, whose lookup is a helper call that every call out of scope would pay. */
#define FEW 4
#define MAX_CGROUPS 8

/* Marks in the scope_values and scope_comms maps, and cfg.scope_comm's bits. */
enum scope_mark : __u8 { SCOPE_EQ = 1, SCOPE_NE = 2 };

/* A process's two bits in the tracked map. */
enum tracked_mark : __u8 { TRACKED_TREE = 1, TRACKED_FOLLOW = 2 };

/* cfg.scope_container: any process, only those in a child pid namespace, only those outside. */
enum scope_container { CONTAINER_ANY, CONTAINER_INSIDE, CONTAINER_OUTSIDE };

/* cfg.scope_watch: which containers' cgroups join the scope as they are made, with the
 * cgroups made under them: none, those whose ids are in scope_container_ids (containers
 * created but not started), any container's (`container=new`). */
enum scope_watch { WATCH_OFF, WATCH_IDS, WATCH_NEW };

/* The runtimes' container ids (docker, podman, CRI-O, containerd): 64 hex digits. */
#define CONTAINER_ID_LEN 64
/* The most cgroups the watch keeps at once: a removed one leaves the map. */
#define MAX_WATCHED_CGROUPS 16384

/* Key of the scope_values map: values named by '=' (SCOPE_EQ) and '!=' (SCOPE_NE) scopes. */
struct scope_key {
	__u32 field; /* enum scope_field */
	__u32 pad;
	__u64 value;
};

/* Key of the scope_exes map: an executable as a file, by its file system's device (the
 * kernel's dev_t of the superblock, as /proc/self/mountinfo shows it) and inode number. Not
 * by path: one file has many, and any process can give a file any name. */
#define MAX_EXES 64
struct exe_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

/* Argument and return-value conditions, per event id: the arg_filters map's values. */
#define MAX_CONDS 8
#define MAX_VALS 8
/* cond.target past the arguments: the return value. */
enum cond_target : __u8 { TARGET_RET = 6 };
enum filter_op : __u8 { OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE };

struct cond {
	__u8 target; /* argument index, or TARGET_RET */
	__u8 op;     /* enum filter_op */
	__u8 is_signed;
	__u8 width; /* bytes the raw register is narrowed to */
	__u8 nvals;
	__u8 pad[3];
	__u64 vals[MAX_VALS];
};

struct filter {
	__u32 n;
	__u32 pad;
	struct cond conds[MAX_CONDS];
};

/* Metrics (`mmtrace serve`): what a call adds to the in-kernel aggregates, by the part it plays
 * (the catalog's role). cfg.m_role holds one per event id. */
enum metric_role : __u8 {
	R_OTHER,
	R_MAPS,          /* mmap: mapped bytes; W+X; a failed MAP_LOCKED */
	R_PROTECTS,      /* mprotect, pkey_mprotect: W+X */
	R_UNMAPS,        /* munmap: unmapped bytes */
	R_REMAPS,        /* mremap: growth mapped, shrinking unmapped */
	R_LOCKS,         /* mlock, mlock2: locked bytes; failed locks */
	R_UNLOCKS,       /* munlock: unlocked bytes */
	R_LOCKS_ALL,     /* mlockall: failed locks; MCL_FUTURE without MCL_ONFAULT */
	R_SIGNALS_PID,   /* kill: a SIGKILL starts a kill */
	R_SIGNALS_PIDFD, /* pidfd_send_signal: the same, the victim named by its pidfd */
	R_RELEASES,      /* process_mrelease: freed bytes; its memory is back */
};

/* Events a metrics trace counts, each in a slot of its own (cfg.m_slot): the catalog has 26. */
#define M_SLOTS 32
/* Results of a call: index 0 is success, 1..M_RESULTS-2 the errno, the last any larger one
 * (the kernel's own restart codes, 512 and up, reach the exit hook). */
#define M_RESULTS 136
/* log2 buckets of nanoseconds: bucket b counts values over 2^(b-1) and at most 2^b, so that 2^b
 * is its inclusive upper bound, as Prometheus's le (bucket 0 counts 0 and 1); the last also
 * holds everything larger (over 2^38 ns, 4.6 minutes). Not a power of two: an index must be
 * bounded by comparison, never by a mask. */
#define M_BUCKETS 40
/* The detections one call can tell, counted in the kernel: each names its counter here, and
 * its Detection (crates/mmtrace/src/analyze/detections.rs) names the counter back. */
enum m_detection {
	MD_WRITE_EXEC,       /* MMT-001 */
	MD_LOCK_FAILED,      /* MMT-004 */
	MD_RELEASE_LIVE,     /* MMT-005 */
	MD_RELEASE_RACE,     /* MMT-006 */
	MD_MLOCKALL_FUTURE,  /* MMT-007 */
	M_DETECTIONS
};

/* Per CPU and per slot: the counts of one event. */
struct m_event {
	__u64 calls[M_RESULTS];
	__u64 duration[M_BUCKETS];
	__u64 duration_sum; /* ns */
};

enum m_bytes { MB_MAPPED, MB_UNMAPPED, MB_LOCKED, MB_UNLOCKED, MB_FREED, M_NBYTES };
enum m_kill { MK_SIGNAL, MK_OOM, M_NKILLS };

/* Per CPU: the counts of the whole trace. */
struct m_global {
	__u64 bytes[M_NBYTES];
	__u64 kills[M_NKILLS];
	__u64 detections[M_DETECTIONS];
	/* Calls not counted per cgroup because m_cgroups was full. */
	__u64 cgroup_overflow;
	/* From a kill to the victim's memory being back, log2 buckets of ns as m_event's. */
	__u64 back[M_BUCKETS];
	__u64 back_sum; /* ns */
};

/* Key of the per-cgroup counts: one series per cgroup, event slot and result. */
struct m_cgroup_key {
	__u64 cgroup_id;
	__u32 slot;
	__u32 result;
};

/* At most this many (cgroup, event, result) series are counted per cgroup; calls past it are
 * counted in m_global.cgroup_overflow. */
#define M_CGROUP_SERIES 16384

/* Set by the loader as one value before loading, and read-only to the programs: the verifier
 * knows every field as a constant and drops the code of an unused scope or a missing feature
 * unseen, so an unscoped trace pays for none of its checks. */
struct config {
	__u64 scope_few[NFIELDS][FEW];
	__u64 scope_min[NFIELDS]; /* fields in scope_range_mask are limited to [min, max] */
	__u64 scope_max[NFIELDS];
	__u64 scope_cgroup_ids[MAX_CGROUPS];
	/* Wake the reader only when unread data crosses this many bytes; it also polls on a
	 * timer. Every wakeup costs the traced thread about 12 us, so waking per event would
	 * dominate. */
	__u64 wakeup_bytes;
	/* The tracer's own process is left out, or its own reads and writes would feed the trace. */
	__u32 self_tgid;
	/* Fields with at most FEW '=' values, compared in place: a map lookup is a helper call,
	 * paid by every call out of scope. */
	__u32 scope_few_mask;
	__u32 scope_few_n[NFIELDS];
	__u32 scope_eq_mask;    /* fields whose value must be in scope_values */
	__u32 scope_ne_mask;    /* fields whose value must not be */
	__u32 scope_range_mask;
	__u32 scope_comm;       /* SCOPE_EQ: comm must be listed; SCOPE_NE: must not */
	__u32 scope_exe;        /* the same for the executable, in scope_exes */
	__u32 scope_tree;       /* only processes marked TRACKED_TREE */
	__u32 scope_follow;     /* descendants of matching processes match too */
	__u32 scope_container;  /* enum scope_container */
	__u32 scope_ncgroups;
	__u32 scope_cgroup_levels[MAX_CGROUPS];
	__u32 scope_watch;      /* enum scope_watch: the caller's cgroup in scope_cgroups also passes */
	__u32 has_arg_filters;
	__u32 page_size;
	/* What the running kernel offers, found by the loader's probes. */
	__u32 have_find_vma;  /* bpf_find_vma and bpf_loop (5.17) */
	__u32 exit_before_mm; /* sched_process_exit: group_dead, before exit_mm (6.16) */
	__u32 victim_fields;  /* oom:mark_victim's fields beyond pid (6.9) */
	__u32 send_exe;       /* send each process's executable path with its first call */
	__u16 extras[MAX_IDS]; /* X_* bits, per event id */
	/* Metrics only (`mmtrace serve`): calls update the m_* maps and no record is sent. */
	__u32 metrics;
	__u8 m_slot[MAX_IDS]; /* the event's slot in m_events, per event id */
	__u8 m_role[MAX_IDS]; /* enum metric_role, per event id */
	/* Counted at its exit alone, with no entry hook and no duration (serve --no-durations),
	 * per event id; m_no_durations says whether any is, so that with durations the
	 * verifier drops that path unseen (it costs attach time to walk). */
	__u8 m_at_exit[MAX_IDS];
	__u32 m_no_durations;
	/* The mount namespace of the host's init (0: unknown). A container always has a mount
	 * namespace of its own, so calls made in this one are not counted per cgroup: the
	 * per-cgroup hash is the dearest part of a counted call, and only containers' series
	 * are served. */
	__u32 m_host_mnt_ns;
	__u32 stack;          /* send each syscall's user stack (--stack) */
};

#endif /* MMTRACE_H */

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* mmtrace kernel side: times each traced syscall and ships one record per call at exit. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/*
 * Only the kernel fields we read, marked for CO-RE so the loader relocates them against the
 * running kernel's BTF. Declaring them here instead of including a generated vmlinux.h keeps
 * the object byte-for-byte reproducible from this file alone.
 */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct pid_namespace {
	unsigned int level;
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct mnt_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct mnt_namespace *mnt_ns;
	struct pid_namespace *pid_ns_for_children;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	unsigned long long start_boottime;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

/* Plain layouts of the syscall tracepoints' `format` files: vmlinux's own context types carry
 * flexible arrays that aya cannot relocate. */
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

/* sched_process_fork as a raw tracepoint: (parent, child); the plain tracepoint gives only
 * thread ids and cannot tell a new process from a new thread. */
struct fork_ctx {
	__u64 args[2];
};

/* Must match `Record` in src/record.rs (a test checks the size). */
struct record {
	__u64 ts;           /* entry, CLOCK_BOOTTIME ns */
	__u64 duration;     /* ns */
	__u64 args[6];
	__s64 ret;
	__u64 cgroup_id;
	__u64 thread_start; /* CLOCK_BOOTTIME ns */
	__u32 pid, tid, ppid;          /* as the host sees them */
	__u32 ns_pid, ns_tid, ns_ppid; /* as the task's own pid namespace sees them */
	__u32 uid, gid;
	__u32 mnt_ns, pid_ns;
	__u16 id;           /* syscall number: the catalog's key */
	__u16 cpu;
	__u32 pad;
	char comm[16];
};

_Static_assert(sizeof(struct record) == 152, "struct record must match Record in src/record.rs");

#define MAX_IDS 1024

/* Scope, set by the loader. Constants let the verifier drop every check that is unused, so
 * an unscoped trace pays for none of them. Field indexes match `scope::Field` in Rust. */
#define F_PID 0
#define F_TID 1
#define F_UID 2
#define NFIELDS 3
#define MAX_CGROUPS 8
/* The tracer's own process is left out, or its own reads and writes would feed the trace. */
const volatile __u32 self_tgid = 0;
const volatile __u32 scope_eq_mask = 0;    /* fields whose value must be in scope_values */
const volatile __u32 scope_ne_mask = 0;    /* fields whose value must not be */
const volatile __u32 scope_range_mask = 0; /* fields limited to [scope_min, scope_max] */
const volatile __u64 scope_min[NFIELDS] = {};
const volatile __u64 scope_max[NFIELDS] = {};
const volatile __u32 scope_comm = 0;       /* SCOPE_EQ: comm must be listed; SCOPE_NE: must not */
const volatile __u32 scope_tree = 0;       /* only processes marked TRACKED_TREE */
const volatile __u32 scope_follow = 0;     /* descendants of matching processes match too */
const volatile __u32 scope_container = 0;  /* 1: only in a child pid namespace; 2: only outside */
const volatile __u32 scope_ncgroups = 0;
const volatile __u64 scope_cgroup_ids[MAX_CGROUPS] = {};
const volatile __u32 scope_cgroup_levels[MAX_CGROUPS] = {};
const volatile __u32 has_arg_filters = 0;
/* Wake the reader only when unread data crosses this many bytes; it also polls on a timer.
 * Every wakeup costs the traced thread about 12 us, so waking per event would dominate. */
const volatile __u64 wakeup_bytes = 1 << 20;

#define SCOPE_EQ 1
#define SCOPE_NE 2
#define TRACKED_TREE 1
#define TRACKED_FOLLOW 2

/* Declared here because libbpf 1.1's headers predate it (helper 123, Linux 5.7). */
static __u64 (*get_current_ancestor_cgroup_id)(int ancestor_level) = (void *)123;

struct scope_key {
	__u32 field;
	__u32 pad;
	__u64 value;
};

/* Values named by '=' (SCOPE_EQ) and '!=' (SCOPE_NE) scopes, per field. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct scope_key);
	__type(value, __u8);
} scope_values SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[16]);
	__type(value, __u8);
} scope_comms SEC(".maps");

/* Processes (by tgid) in a traced tree or followed; children inherit their parent's mark. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tracked SEC(".maps");

/* Argument and return-value conditions, per event id. Layout matches src/filters.rs. */
#define MAX_CONDS 8
#define MAX_VALS 8
#define TARGET_RET 6
enum { OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE };

struct cond {
	__u8 target; /* argument index, or TARGET_RET */
	__u8 op;
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct filter);
} arg_filters SEC(".maps");

struct inflight {
	__u64 ts;
	__u64 args[8]; /* 6 used; 8 so a masked index needs no further bounds check */
};

/* Task-local storage: freed with the thread, so a thread killed inside a syscall leaves
 * nothing behind, and lookups hit the task's own cache instead of hashing. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Calls that reached a hook but could not be delivered, per event id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_IDS);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Calls left out by the scope or by argument filters, per event id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_IDS);
	__type(key, __u32);
	__type(value, __u64);
} filtered SEC(".maps");

static __always_inline void count(void *counters, __u32 id)
{
	__u64 *n = bpf_map_lookup_elem(counters, &id);

	if (n)
		*n += 1;
}

static __always_inline int field_in_scope(__u32 field, __u64 v)
{
	__u32 bit = 1 << field;

	if ((scope_eq_mask | scope_ne_mask) & bit) {
		struct scope_key k = { .field = field, .value = v };
		__u8 *found = bpf_map_lookup_elem(&scope_values, &k);
		__u8 marks = found ? *found : 0;

		if ((scope_eq_mask & bit) && !(marks & SCOPE_EQ))
			return 0;
		if ((scope_ne_mask & bit) && (marks & SCOPE_NE))
			return 0;
	}
	if ((scope_range_mask & bit) &&
	    (v < scope_min[field & 3] || v > scope_max[field & 3]))
		return 0;
	return 1;
}

/* Every scope criterion but the process tree. */
static __always_inline int criteria_match(__u64 pid_tgid)
{
	if (!field_in_scope(F_PID, pid_tgid >> 32) || !field_in_scope(F_TID, (__u32)pid_tgid))
		return 0;
	if ((scope_eq_mask | scope_ne_mask | scope_range_mask) & (1 << F_UID) &&
	    !field_in_scope(F_UID, (__u32)bpf_get_current_uid_gid()))
		return 0;
	if (scope_comm) {
		char comm[16] = {};
		__u8 *found, marks;

		bpf_get_current_comm(comm, sizeof(comm));
		found = bpf_map_lookup_elem(&scope_comms, comm);
		marks = found ? *found : 0;
		if ((scope_comm & SCOPE_EQ) && !(marks & SCOPE_EQ))
			return 0;
		if ((scope_comm & SCOPE_NE) && (marks & SCOPE_NE))
			return 0;
	}
	if (scope_container) {
		struct task_struct *t = bpf_get_current_task_btf();
		int inside = t->thread_pid->level > 0;

		if (inside != (scope_container == 1))
			return 0;
	}
	if (scope_ncgroups) {
		int hit = 0;

		for (int i = 0; i < MAX_CGROUPS; i++) {
			if (i >= scope_ncgroups)
				break;
			if (get_current_ancestor_cgroup_id(scope_cgroup_levels[i]) ==
			    scope_cgroup_ids[i]) {
				hit = 1;
				break;
			}
		}
		if (!hit)
			return 0;
	}
	return 1;
}

static __always_inline int in_scope(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u8 mark = 0;

	if (tgid == self_tgid)
		return 0;
	if (scope_tree || scope_follow) {
		__u8 *found = bpf_map_lookup_elem(&tracked, &tgid);

		mark = found ? *found : 0;
	}
	if (scope_tree && !(mark & TRACKED_TREE))
		return 0;
	if (scope_follow && (mark & TRACKED_FOLLOW))
		return 1;
	if (!criteria_match(pid_tgid))
		return 0;
	if (scope_follow) {
		mark |= TRACKED_FOLLOW;
		bpf_map_update_elem(&tracked, &tgid, &mark, BPF_ANY);
	}
	return 1;
}

static __always_inline int cond_holds(const struct cond *c, __u64 v)
{
	int hit = 0;

	if (c->width == 4)
		v = c->is_signed ? (__u64)(__s64)(__s32)v : (__u32)v;
	switch (c->op) {
	case OP_EQ:
	case OP_NE:
		for (int i = 0; i < MAX_VALS; i++) {
			if (i >= c->nvals)
				break;
			if (c->vals[i] == v)
				hit = 1;
		}
		return c->op == OP_EQ ? hit : !hit;
	case OP_LT:
		return c->is_signed ? (__s64)v < (__s64)c->vals[0] : v < c->vals[0];
	case OP_GT:
		return c->is_signed ? (__s64)v > (__s64)c->vals[0] : v > c->vals[0];
	case OP_LE:
		return c->is_signed ? (__s64)v <= (__s64)c->vals[0] : v <= c->vals[0];
	case OP_GE:
		return c->is_signed ? (__s64)v >= (__s64)c->vals[0] : v >= c->vals[0];
	}
	return 0;
}

static __always_inline int passes_filters(__u32 id, const struct inflight *slot, __s64 ret)
{
	struct filter *f = bpf_map_lookup_elem(&arg_filters, &id);

	if (!f)
		return 1;
	for (int i = 0; i < MAX_CONDS; i++) {
		const struct cond *c = &f->conds[i];

		if (i >= f->n)
			break;
		if (!cond_holds(c, c->target == TARGET_RET ? ret : slot->args[c->target & 7]))
			return 0;
	}
	return 1;
}

static __always_inline int on_enter(struct sys_enter_ctx *ctx, int nargs)
{
	struct inflight *slot;

	if (!in_scope()) {
		count(&filtered, ctx->nr);
		return 0;
	}
	slot = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!slot) {
		count(&lost, ctx->nr);
		return 0;
	}
	/* Reading past this syscall's own arguments would fail at attach, hence one program per
	 * argument count with constant bounds. */
	for (int i = 0; i < 6; i++)
		if (i < nargs)
			slot->args[i] = ctx->args[i];
	slot->ts = bpf_ktime_get_boot_ns();
	return 0;
}

#define ENTER(n)                                              \
	SEC("tracepoint")                                     \
	int enter_##n(struct sys_enter_ctx *ctx)              \
	{                                                     \
		return on_enter(ctx, n);                      \
	}

ENTER(0)
ENTER(1)
ENTER(2)
ENTER(3)
ENTER(4)
ENTER(5)
ENTER(6)

/* The ns view of a struct pid at `level`; only reached for tasks in a child pid namespace. */
static __always_inline __u32 pid_at_level(struct pid *p, unsigned int level)
{
	struct upid up = {};

	if (!p || BPF_CORE_READ(p, level) < level)
		return 0;
	bpf_probe_read_kernel(&up, sizeof(up), (void *)p + bpf_core_field_offset(p->numbers) +
						       (__u64)(level & 31) * sizeof(struct upid));
	return up.nr;
}

static __always_inline void fill_task(struct record *r, __u64 pid_tgid)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct task_struct *parent = t->real_parent;
	struct pid_namespace *pidns = t->nsproxy->pid_ns_for_children;
	unsigned int level = pidns->level;

	r->pid = pid_tgid >> 32;
	r->tid = pid_tgid;
	r->ppid = parent->tgid;
	r->thread_start = t->start_boottime;
	r->mnt_ns = t->nsproxy->mnt_ns->ns.inum;
	r->pid_ns = pidns->ns.inum;
	if (level == 0) {
		r->ns_pid = r->pid;
		r->ns_tid = r->tid;
		r->ns_ppid = r->ppid;
	} else {
		r->ns_tid = pid_at_level(t->thread_pid, level);
		r->ns_pid = pid_at_level(t->group_leader->thread_pid, level);
		r->ns_ppid = pid_at_level(parent->group_leader->thread_pid, level);
	}
}

SEC("tracepoint")
int sys_exit(struct sys_exit_ctx *ctx)
{
	struct inflight *slot;
	struct record *r;
	__u64 pid_tgid, uid_gid, now, avail;
	__u32 id = ctx->nr;

	slot = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	/* No slot or no timestamp: the call began before we attached, or was out of scope. */
	if (!slot || !slot->ts)
		return 0;
	now = bpf_ktime_get_boot_ns();
	if (has_arg_filters && !passes_filters(id, slot, ctx->ret)) {
		slot->ts = 0;
		count(&filtered, id);
		return 0;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		slot->ts = 0;
		count(&lost, id);
		return 0;
	}
	pid_tgid = bpf_get_current_pid_tgid();
	uid_gid = bpf_get_current_uid_gid();
	r->ts = slot->ts;
	r->duration = now - slot->ts;
	__builtin_memcpy(r->args, slot->args, sizeof(r->args));
	slot->ts = 0;
	r->ret = ctx->ret;
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->uid = uid_gid;
	r->gid = uid_gid >> 32;
	r->id = id;
	r->cpu = bpf_get_smp_processor_id();
	r->pad = 0;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	fill_task(r, pid_tgid);

	/* Wake only on crossing the threshold, so a slow reader is not hammered with wakeups. */
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(r, avail >= wakeup_bytes && avail < wakeup_bytes + 2 * sizeof(*r) ?
				      BPF_RB_FORCE_WAKEUP :
				      BPF_RB_NO_WAKEUP);
	return 0;
}

/* A child inherits its parent's mark, so trees and followed processes stay whole. */
SEC("raw_tracepoint/sched_process_fork")
int on_fork(struct fork_ctx *ctx)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u8 *mark = bpf_map_lookup_elem(&tracked, &parent);
	__u32 tgid;
	__u8 copy;

	if (!mark)
		return 0;
	copy = *mark;
	tgid = BPF_CORE_READ(child, tgid);
	bpf_map_update_elem(&tracked, &tgid, &copy, BPF_ANY);
	return 0;
}

/* Forget a process when its leader exits, so its tgid can be reused by a stranger. A leader
 * that exits before its other threads takes them out of the trace with it. */
SEC("tracepoint")
int on_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	if ((__u32)pid_tgid == tgid)
		bpf_map_delete_elem(&tracked, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

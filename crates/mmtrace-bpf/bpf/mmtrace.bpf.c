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

/* Scope set by the loader; constants let the verifier prune the checks that are unused.
 * The tracer's own process is left out, or its reads and writes would feed the trace. */
const volatile __u32 target_tgid = 0;
const volatile __u32 self_tgid = 0;
/* Wake the reader only when unread data crosses this many bytes; it also polls on a timer.
 * Every wakeup costs the traced thread about 12 us, so waking per event would dominate. */
const volatile __u64 wakeup_bytes = 1 << 20;

struct inflight {
	__u64 ts;
	__u64 args[6];
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

static __always_inline void count_lost(__u32 id)
{
	__u64 *n = bpf_map_lookup_elem(&lost, &id);

	if (n)
		*n += 1;
}

static __always_inline int on_enter(struct sys_enter_ctx *ctx, int nargs)
{
	struct inflight *slot;

	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (target_tgid ? tgid != target_tgid : tgid == self_tgid)
		return 0;
	slot = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!slot) {
		count_lost(ctx->nr);
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
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		slot->ts = 0;
		count_lost(id);
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

char LICENSE[] SEC("license") = "Dual MIT/GPL";

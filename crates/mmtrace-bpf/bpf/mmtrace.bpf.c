// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* mmtrace kernel side: times each traced syscall and ships one record per call at exit.
 *
 * This file is the spine (the syscall enter and exit programs, the record and the ring); the
 * units it includes, compiled with it into one object, each have one job: kernel.h the
 * kernel's types, scope.bpf.h who is traced, enrich.bpf.h what is read around a call,
 * metrics.bpf.h the counts of `serve`, events.bpf.h the kernel's own events. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "mmtrace.h"

#include "kernel.h"

#define ENOENT 2
#define EBUSY 16
#define NAME_MAX_READ 256
#define PATH_DEPTH 24
#define RLIMIT_MEMLOCK 8
#define CAP_IPC_LOCK 14
#define PIDFS_MAGIC 0x50494446
#define MNT_NS_INTERNAL ((struct mnt_namespace *)-22L) /* ERR_PTR(-EINVAL), fs/mount.h */

/* Set by the loader, as one value (see struct config). */
const volatile struct config cfg = {};

/* Declared here because libbpf 1.1's headers predate it (helper 123, Linux 5.7). */
static __u64 (*get_current_ancestor_cgroup_id)(int ancestor_level) = (void *)123;

/* Bounds a stack's frame count for the verifier (see add_stack). */
#define STACK_MASK (2 * MAX_STACK - 1)

/* Task-local storage: the record of the thread's call in flight, assembled in place from
 * entry to exit and sent with one bpf_ringbuf_output of the prefix that holds what the call
 * gathered; base.ts is 0 when no traced call is in flight. Freed with the thread, so a thread
 * killed inside a syscall leaves nothing behind, and lookups hit the task's own cache
 * instead of hashing. */
struct inflight {
	struct record_path r;
	/* Room for a stack tail after the longest record: the tail is written right after
	 * whichever record the call sends, so that one bpf_ringbuf_output still sends both. */
	__u8 stack_room[(STACK_MASK + 1) * 8 + sizeof(struct stack_tail)];
	/* The thread's process has been sent its executable: the per-call check is this load,
	 * the exe_sent lookup only a thread's first call after its start or an exec pays. */
	__u32 exe_sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* Processes (by tgid) whose executable was sent, with the start of the process it was sent
 * for: a tgid handed to a new process is not taken for the old one. An exec forgets it. An
 * LRU, as nothing else removes an entry: an evicted process is sent its path again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} exe_sent SEC(".maps");

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

#include "scope.bpf.h"
#include "enrich.bpf.h"

/* All six: user space reads only as many as the syscall takes. The registers the entry saved
 * hold them until the exit too. */
static __always_inline void read_args(struct record_path *slot, struct task_struct *t)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);

	slot->base.args[0] = SYSCALL_ARG0(regs);
	slot->base.args[1] = SYSCALL_ARG1(regs);
	slot->base.args[2] = SYSCALL_ARG2(regs);
	slot->base.args[3] = SYSCALL_ARG3(regs);
	slot->base.args[4] = SYSCALL_ARG4(regs);
	slot->base.args[5] = SYSCALL_ARG5(regs);
}

/* One program for every syscall: the arguments come from the registers, not the tracepoint's
 * record, whose size differs per syscall (reading past it fails at attach). Each program costs
 * the verifier tens of milliseconds at start, so one instead of one per argument count. */
SEC("tracepoint")
int sys_enter(struct sys_enter_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct record_path *slot;
	struct inflight *in;
	__u16 want;

	/* The tracer's own calls (its reads, the ring's mmaps) are not traced, nor counted as
	 * filtered: that column is about what the user's scope and filters left out. */
	if (t->tgid == cfg.self_tgid)
		return 0;
	if (!in_scope(t)) {
		count(&filtered, ctx->nr);
		return 0;
	}
	in = bpf_task_storage_get(&inflight, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		count(&lost, ctx->nr);
		return 0;
	}
	slot = &in->r;
	read_args(slot, t);
	want = cfg.extras[ctx->nr & (MAX_IDS - 1)];
	if (want)
		enter_extras(slot, t, want);
	slot->base.ts = bpf_ktime_get_boot_ns();
	return 0;
}

/* Who is running: every context field of a record but the time, read from the task itself
 * (each helper call costs more than the loads it would replace). But each load of a pointer
 * through the task costs the verifier scans of the kernel's whole BTF (on 6.5+), in every
 * program that fills a context: the cgroup's three comes from a helper, and the pid chains of
 * containers, taken only there, through reads the verifier does not follow. */
static __always_inline void fill_context(struct record *r, struct task_struct *t, __u32 id)
{
	struct task_struct *parent = t->real_parent;
	struct nsproxy *ns = t->nsproxy;
	struct pid_namespace *pidns = ns->pid_ns_for_children;
	const struct cred *cred = t->cred;
	unsigned int level = pidns->level;

	r->id = id;
	r->cpu = bpf_get_smp_processor_id();
	r->absent = 0;
	r->uid = cred->uid.val;
	r->gid = cred->gid.val;
	r->cgroup_id = bpf_get_current_cgroup_id();
	__builtin_memcpy(r->comm, t->comm, sizeof(r->comm));
	r->pid = t->tgid;
	r->tid = t->pid;
	r->ppid = parent->tgid;
	r->thread_start = t->start_boottime;
	/* As Tracee reads them. A thread's real_parent is its leader's (copy_process gives
	 * CLONE_THREAD children their creator's parent), possibly another thread of the parent
	 * process, whose start is its leader's; exec by another thread gives it the leader's
	 * start (de_thread), so a process keeps its start for life. */
	r->leader_start = t->group_leader->start_boottime;
	r->parent_start = parent->group_leader->start_boottime;
	r->mnt_ns = ns->mnt_ns->ns.inum;
	r->pid_ns = pidns->ns.inum;
	if (level == 0) {
		r->ns_pid = r->pid;
		r->ns_tid = r->tid;
		r->ns_ppid = r->ppid;
	} else {
		r->ns_tid = pid_at_level(BPF_CORE_READ(t, thread_pid), level);
		r->ns_pid = pid_at_level(BPF_CORE_READ(t, group_leader, thread_pid), level);
		r->ns_ppid = pid_at_level(BPF_CORE_READ(parent, group_leader, thread_pid), level);
	}
}

/* Wake only on crossing the threshold, so a slow reader is not hammered with wakeups. */
static __always_inline __u64 wakeup(void)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	return avail >= cfg.wakeup_bytes && avail < cfg.wakeup_bytes + 2 * sizeof(struct record_path) ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

static __always_inline void submit(void *r)
{
	bpf_ringbuf_submit(r, wakeup());
}

/* How much of the slot a call's record needs: the whole extras and path when it found a
 * file, else the shortest prefix of the extras that holds what it gathered. */
static __always_inline __u32 record_size(const struct record_path *slot, __u16 want)
{
	__u32 flags = slot->ext.flags;

	if (!want)
		return sizeof(struct record);
	if ((flags & E_VMA) && slot->path[0])
		return sizeof(struct record_path);
	if (flags & (E_RSS_BEFORE | E_RSS_AFTER))
		return sizeof(struct record_ext);
	return sizeof(struct record) + (flags & E_TARGET ? EXT_TARGET : EXT_CALLER);
}

/* The caller's executable into the path slot of a record that has no mapping path there,
 * unless its process was sent it already. Returns whether it did. */
static __always_inline int add_exe(struct inflight *in, struct task_struct *t, __u16 want)
{
	struct record_path *slot = &in->r;
	__u32 tgid = slot->base.pid;
	__u64 *sent = bpf_map_lookup_elem(&exe_sent, &tgid);
	struct file *exe;

	if (sent && *sent == slot->base.leader_start) {
		in->exe_sent = 1;
		return 0;
	}
	/* Reads, not loads: a cold path, kept off the verifier's BTF scans (see fill_context). */
	exe = BPF_CORE_READ(t, mm, exe_file);
	if (!exe)
		return 0;
	read_path(BPF_CORE_READ(exe, f_path.mnt), BPF_CORE_READ(exe, f_path.dentry), slot->path);
	if (!slot->path[0])
		return 0;
	/* Without extras the slot's are left from an earlier call. */
	slot->ext.flags = want ? slot->ext.flags | E_EXE : E_EXE | E_EXE_ONLY;
	return 1;
}

#include "metrics.bpf.h"

/* The caller's user stack, after the `size` bytes of record the call sends; returns the new
 * size. Taken at exit, not entry: the exit tracepoint still has the caller's user registers,
 * and a call the filters drop never pays for a walk. */
static __always_inline __u32 add_stack(struct sys_exit_ctx *ctx, struct inflight *in,
				       struct task_struct *t, __u32 size)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
	struct stack_tail tail = {};
	void *at = (void *)&in->r + size;
	long got;
	__u32 n;

	got = bpf_get_stack(ctx, at, MAX_STACK * 8, BPF_F_USER_STACK);
	n = got > 0 ? got / 8 : 0;
	/* At most MAX_STACK already: a bound the verifier can follow, as a mask (a comparison
	 * clang is free to move after the use). */
	n &= STACK_MASK;
	CALLER_OF_WRAPPER(regs, tail.sp_word);
	tail.nframes = n;
	__builtin_memcpy(at + n * 8, &tail, sizeof(tail));
	return size + n * 8 + sizeof(tail);
}

SEC("tracepoint")
int sys_exit(struct sys_exit_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct inflight *in = NULL;
	struct record_path *slot;
	__u32 id = ctx->nr, size;
	int exe = 0, timed = 1;
	__u16 want;

	/* One path on to metrics_exit for both kinds of slot: each inlined copy of it costs the
	 * verifier at attach. */
	if (cfg.metrics && cfg.m_no_durations && cfg.m_at_exit[id & (MAX_IDS - 1)]) {
		slot = exit_only_slot(ctx, t);
		if (!slot)
			return 0;
		timed = 0;
	} else {
		/* A task that never had a slot (out of scope, most often) is told by one load, not
		 * a helper call: that is most of what an out-of-scope call costs here. */
		if (!t->bpf_storage)
			return 0;
		in = bpf_task_storage_get(&inflight, t, 0, 0);
		/* No slot or no timestamp: the call began before we attached, or was out of
		 * scope. */
		if (!in || !in->r.base.ts)
			return 0;
		slot = &in->r;
		slot->base.duration = bpf_ktime_get_boot_ns() - slot->base.ts;
	}
	if (cfg.has_arg_filters && !passes_filters(id, slot, ctx->ret)) {
		slot->base.ts = 0;
		count(&filtered, id);
		return 0;
	}
	if (cfg.metrics) {
		metrics_exit(slot, t, id, ctx->ret, timed);
		slot->base.ts = 0;
		return 0;
	}
	slot->base.ret = ctx->ret;
	/* Before the extras' branches: the verifier then walks the context's loads once, and
	 * each of them costs it scans of the kernel's BTF (the attach time). */
	fill_context(&slot->base, t, id);
	want = cfg.extras[id & (MAX_IDS - 1)];
	if (want)
		exit_extras(slot, t, want, ctx->ret);
	/* One copy into the ring: cheaper than a reservation filled field by field, and a
	 * single path for the verifier whatever the size. */
	size = record_size(slot, want);
	if (cfg.send_exe && !in->exe_sent && size < sizeof(struct record_path)) {
		exe = add_exe(in, t, want);
		if (exe)
			size = sizeof(struct record_path);
	}
	if (cfg.stack)
		size = add_stack(ctx, in, t, size);
	if (bpf_ringbuf_output(&events, slot, size, wakeup())) {
		count(&lost, id);
	} else if (exe) {
		__u32 tgid = slot->base.pid;
		__u64 start = slot->base.leader_start;

		bpf_map_update_elem(&exe_sent, &tgid, &start, BPF_ANY);
		in->exe_sent = 1;
	}
	slot->base.ts = 0;
	return 0;
}

#include "events.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

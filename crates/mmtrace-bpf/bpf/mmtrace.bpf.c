// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* mmtrace kernel side: times each traced syscall and ships one record per call at exit. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "mmtrace.h"

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

struct hlist_node {
	struct hlist_node *next;
} __attribute__((preserve_access_index));

struct hlist_head {
	struct hlist_node *first;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct hlist_head tasks[4];
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct percpu_counter {
	long long count;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long total_vm;
	unsigned long locked_vm;
	unsigned long start_brk;
	unsigned long brk;
	unsigned long start_stack;
	struct percpu_counter rss_stat[4];
	struct file *exe_file;
} __attribute__((preserve_access_index));

/* Before 6.2 the mm's counters were four atomic longs in a struct of their own. */
struct mm_rss_stat {
	long long count[4];
} __attribute__((preserve_access_index));

struct mm_struct___pre62 {
	struct mm_rss_stat rss_stat;
} __attribute__((preserve_access_index));

struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

/* const as in newer kernels, plain as in older ones: aya's CO-RE matching does not look
 * through qualifiers, so each kernel matches one of the two. */
struct dentry {
	struct dentry *d_parent;
	const struct qstr d_name;
} __attribute__((preserve_access_index));

struct dentry___plain {
	struct qstr d_name;
} __attribute__((preserve_access_index));

static __always_inline const unsigned char *dentry_name(struct dentry *d)
{
	struct dentry___plain *plain = (void *)d;

	if (bpf_core_field_exists(d->d_name))
		return BPF_CORE_READ(d, d_name.name);
	return BPF_CORE_READ(plain, d_name.name);
}

struct vfsmount {
	struct dentry *mnt_root;
} __attribute__((preserve_access_index));

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));

/* Since 6.8 a mapping of an overlayfs file (every file of a podman or docker container) holds
 * the layer's real file, on the layer's private mount, and the path the process opened beside
 * it; in 6.18 inside an anonymous union, which CO-RE finds by the field's name. */
struct backing_file___user {
	struct path user_path;
} __attribute__((preserve_access_index));

struct super_block {
	unsigned int s_dev;
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
	void *i_private;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
	struct inode *f_inode;
	void *private_data;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct rlimit {
	unsigned long rlim_cur;
} __attribute__((preserve_access_index));

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
	struct rlimit rlim[16];
} __attribute__((preserve_access_index));

/* A u64 since 6.3, two u32s before: the same 8 bytes on a little-endian machine. */
typedef struct {
	unsigned long long val;
} kernel_cap_t;

typedef struct {
	unsigned int val;
} kuid_t;

typedef struct {
	unsigned int val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kernel_cap_t cap_effective;
} __attribute__((preserve_access_index));

struct kernfs_node {
	const char *name;
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct cgroup_subsys_state *parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct cgroup_subsys_state self;
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	unsigned long long start_boottime;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct nsproxy *nsproxy;
	unsigned int flags;
	int exit_code;
	struct mm_struct *mm;
	struct files_struct *files;
	struct signal_struct *signal;
	const struct cred *cred;
	void *bpf_storage;
	struct hlist_node pid_links[4];
	char comm[16];
} __attribute__((preserve_access_index));

/* Plain layouts of the syscall tracepoints' `format` files: vmlinux's own context types carry
 * flexible arrays that aya cannot relocate. */
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
};

/* The registers a native x86-64 syscall takes its arguments in, as syscall_get_arguments()
 * reads them for the tracepoint (the syscall tracepoints skip compat calls). The layout is
 * the architecture's ABI (ptrace's user_regs_struct), so no CO-RE: each relocated type costs
 * the loader a walk of the kernel's whole BTF at start. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp;
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

/* The oom tracepoints, laid out as their `format` files say. */
struct mark_victim_ctx {
	__u64 common;
	__s32 pid;
	__u32 comm_loc; /* __data_loc: offset in the low 16 bits */
	__u64 total_vm, anon_rss, file_rss, shmem_rss;
	__u32 uid;
	__u32 pad;
	__u64 pgtables;
	__s16 oom_score_adj;
};

struct reaping_ctx {
	__u64 common;
	__s32 pid;
};

struct exit_ctx {
	__u64 common;
	char comm[16];
	__s32 pid;
	__s32 prio;
	__u8 group_dead;
};

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXES);
	__type(key, struct exe_key);
	__type(value, __u8);
} scope_exes SEC(".maps");

/* The ids of the containers whose cgroups join the scope when they are made (WATCH_IDS). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CGROUPS);
	__type(key, char[CONTAINER_ID_LEN]);
	__type(value, __u8);
} scope_container_ids SEC(".maps");

/* The cgroups (v2 ids) the watch has put in scope: containers' made since the trace began,
 * and the cgroups made under them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_WATCHED_CGROUPS);
	__type(key, __u64);
	__type(value, __u8);
} scope_cgroups SEC(".maps");

/* Cgroups that should have joined scope_cgroups but found it full: their calls go untraced,
 * which the reader must say. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} scope_overflow SEC(".maps");

/* Processes (by tgid) in a traced tree or followed: two bits each (TRACKED_*), 32 processes a
 * word. The verifier inlines an array lookup, where a hash lookup is a helper call that every
 * syscall on the machine would pay. Sized for pid_max 4194304; the loader sets the machine's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 17);
	__type(key, __u32);
	__type(value, __u64);
} tracked SEC(".maps");

static __always_inline __u64 *tracked_word(__u32 tgid)
{
	__u32 idx = tgid / 32;

	return bpf_map_lookup_elem(&tracked, &idx);
}

static __always_inline __u8 tracked_marks(__u32 tgid)
{
	__u64 *w = tracked_word(tgid);

	return w ? (*w >> (tgid % 32 * 2)) & 3 : 0;
}

/* Atomic, as the fork and exit hooks of other processes in the same word run concurrently. */
static __always_inline void tracked_add(__u32 tgid, __u8 marks)
{
	__u64 *w = tracked_word(tgid);

	if (w)
		__sync_fetch_and_or(w, (__u64)marks << (tgid % 32 * 2));
}

static __always_inline void tracked_clear(__u32 tgid)
{
	__u64 *w = tracked_word(tgid);

	if (w)
		__sync_fetch_and_and(w, ~(3ULL << (tgid % 32 * 2)));
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct filter);
} arg_filters SEC(".maps");

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

/* Whether a value with these marks in a scope map (none: not listed) passes a scope that
 * wants it listed with '=' (SCOPE_EQ in `want`) and not listed with '!=' (SCOPE_NE). */
static __always_inline int marks_pass(__u32 want, const __u8 *found)
{
	__u8 marks = found ? *found : 0;

	if ((want & SCOPE_EQ) && !(marks & SCOPE_EQ))
		return 0;
	return !((want & SCOPE_NE) && (marks & SCOPE_NE));
}

static __always_inline int field_in_scope(__u32 field, __u64 v)
{
	__u32 bit = 1 << field;

	if (cfg.scope_few_mask & bit) {
		int hit = 0;

		for (int i = 0; i < FEW; i++)
			if (i < cfg.scope_few_n[field & 3] && cfg.scope_few[field & 3][i] == v)
				hit = 1;
		if (!hit)
			return 0;
	}
	if ((cfg.scope_eq_mask | cfg.scope_ne_mask) & bit) {
		struct scope_key k = { .field = field, .value = v };
		__u32 want = (cfg.scope_eq_mask & bit ? SCOPE_EQ : 0) |
			     (cfg.scope_ne_mask & bit ? SCOPE_NE : 0);

		if (!marks_pass(want, bpf_map_lookup_elem(&scope_values, &k)))
			return 0;
	}
	if ((cfg.scope_range_mask & bit) &&
	    (v < cfg.scope_min[field & 3] || v > cfg.scope_max[field & 3]))
		return 0;
	return 1;
}

/* Every scope criterion but the process tree. Context comes from the task itself, not from
 * helpers: every call costs more than the loads it replaces. */
static __always_inline int criteria_match(struct task_struct *t)
{
	if (!field_in_scope(F_PID, (__u32)t->tgid) || !field_in_scope(F_TID, (__u32)t->pid))
		return 0;
	if ((cfg.scope_eq_mask | cfg.scope_ne_mask | cfg.scope_range_mask) & (1 << F_UID) &&
	    !field_in_scope(F_UID, t->cred->uid.val))
		return 0;
	if (cfg.scope_comm) {
		char comm[16];

		/* The kernel pads comm with zeros, so its 16 bytes are a whole map key. */
		__builtin_memcpy(comm, t->comm, sizeof(comm));
		if (!marks_pass(cfg.scope_comm, bpf_map_lookup_elem(&scope_comms, comm)))
			return 0;
	}
	if (cfg.scope_exe) {
		/* Reads, not loads: only an executable scope pays for them (see fill_context). */
		struct inode *ino = BPF_CORE_READ(t, mm, exe_file, f_inode);
		struct exe_key k = {
			.ino = BPF_CORE_READ(ino, i_ino),
			.dev = BPF_CORE_READ(ino, i_sb, s_dev),
		};

		if (!marks_pass(cfg.scope_exe, bpf_map_lookup_elem(&scope_exes, &k)))
			return 0;
	}
	if (cfg.scope_container) {
		int inside = t->thread_pid->level > 0;

		if (inside != (cfg.scope_container == CONTAINER_INSIDE))
			return 0;
	}
	if (cfg.scope_ncgroups || cfg.scope_watch) {
		int hit = 0;

		for (int i = 0; i < MAX_CGROUPS; i++) {
			if (i >= cfg.scope_ncgroups)
				break;
			if (get_current_ancestor_cgroup_id(cfg.scope_cgroup_levels[i]) ==
			    cfg.scope_cgroup_ids[i]) {
				hit = 1;
				break;
			}
		}
		if (!hit && cfg.scope_watch) {
			__u64 cgroup = bpf_get_current_cgroup_id();

			hit = bpf_map_lookup_elem(&scope_cgroups, &cgroup) != 0;
		}
		if (!hit)
			return 0;
	}
	return 1;
}

static __always_inline int in_scope(struct task_struct *t)
{
	__u32 tgid = t->tgid;
	__u8 mark = 0;

	if (cfg.scope_tree || cfg.scope_follow)
		mark = tracked_marks(tgid);
	if (cfg.scope_tree && !(mark & TRACKED_TREE))
		return 0;
	if (cfg.scope_follow && (mark & TRACKED_FOLLOW))
		return 1;
	if (!criteria_match(t))
		return 0;
	if (cfg.scope_follow)
		tracked_add(tgid, TRACKED_FOLLOW);
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

static __always_inline int passes_filters(__u32 id, const struct record_path *slot, __s64 ret)
{
	struct filter *f = bpf_map_lookup_elem(&arg_filters, &id);

	if (!f)
		return 1;
	for (int i = 0; i < MAX_CONDS; i++) {
		const struct cond *c = &f->conds[i];

		if (i >= f->n)
			break;
		if (!cond_holds(c, c->target == TARGET_RET ? ret : slot->base.args[c->target & 7]))
			return 0;
	}
	return 1;
}

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

/* The struct pid behind a pidfd of the current task, or NULL. Since 6.9 pidfds live on pidfs
 * and keep it in the inode; before, on an anonymous inode, in the file. */
static __always_inline struct pid *pid_of_fd(long fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	struct inode *ino;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	ino = BPF_CORE_READ(f, f_inode);
	if (BPF_CORE_READ(ino, i_sb, s_magic) == PIDFS_MAGIC)
		return BPF_CORE_READ(ino, i_private);
	return BPF_CORE_READ(f, private_data);
}

/* The task a struct pid names, while it still has one. */
static __always_inline struct task_struct *task_of_pid(struct pid *p)
{
	struct hlist_node *first = BPF_CORE_READ(p, tasks[0].first);

	if (!first)
		return NULL;
	return (void *)first - bpf_core_field_offset(struct task_struct, pid_links);
}

/* The mm's four counters, addressed by hand: aya steps through an array by the local element
 * size, not the kernel's, so the stride comes from a type-size relocation. Before 6.2 they
 * are plain atomic longs; the relocation of the layout a kernel lacks fails, and the
 * verifier never reaches it. */
static __always_inline void read_rss(struct task_struct *task, __s64 *out)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u64 stride, base = (__u64)mm;

	if (bpf_core_type_exists(struct mm_rss_stat)) {
		stride = sizeof(long long);
		base += bpf_core_field_offset(struct mm_struct___pre62, rss_stat);
	} else {
		stride = bpf_core_type_size(struct percpu_counter);
		base += bpf_core_field_offset(struct mm_struct, rss_stat) +
			bpf_core_field_offset(struct percpu_counter, count);
	}

	for (int i = 0; i < NR_MM_COUNTERS; i++) {
		out[i] = 0;
		if (mm)
			bpf_probe_read_kernel(&out[i], sizeof(out[i]), (void *)(base + i * stride));
		/* The global count of a percpu counter lags its per-CPU parts and can dip below
		 * zero while memory is being freed; none is the honest reading then. */
		if (out[i] < 0)
			out[i] = 0;
	}
}

static __always_inline void fill_target(struct ext *x, struct pid *p, int rss_after)
{
	struct task_struct *task;

	if (!p)
		return;
	x->flags |= E_TARGET;
	x->target_pid = BPF_CORE_READ(p, numbers[0].nr);
	/* As Tracee's processId: the pid in the target's own namespace (1 for a container's
	 * init), beside the host's. */
	x->target_ns_pid = pid_at_level(p, BPF_CORE_READ(p, level));
	task = task_of_pid(p);
	if (!task)
		return;
	bpf_probe_read_kernel_str(x->target_comm, sizeof(x->target_comm), &task->comm);
	if (rss_after) {
		read_rss(task, x->rss_after);
		x->flags |= E_RSS_AFTER;
	}
}

/* Loads, not reads: this runs on every munmap and each read costs it tens of ns; the three
 * loads cost the verifier a few ms of BTF scans at start (see fill_context). */
static __always_inline void fill_locked(struct ext *x, struct task_struct *t)
{
	__u64 caps = 0;

	x->locked_vm = t->mm->locked_vm;
	x->memlock_cur = t->signal->rlim[RLIMIT_MEMLOCK].rlim_cur;
	bpf_probe_read_kernel(&caps, sizeof(caps), &t->cred->cap_effective);
	x->cap_ipc_lock = (caps >> CAP_IPC_LOCK) & 1;
	x->flags |= E_LOCKED;
}

struct vma_ctx {
	__u64 start, end, flags;
	struct file *file;
	__u32 kind;
};

static long vma_found(struct task_struct *task, struct vm_area_struct *vma, struct vma_ctx *c)
{
	struct mm_struct *mm = task->mm;

	c->start = vma->vm_start;
	c->end = vma->vm_end;
	c->flags = vma->vm_flags;
	c->file = vma->vm_file;
	if (c->file)
		c->kind = VMA_FILE;
	else if ((c->flags & VM_GROWSDOWN) ||
		 (mm->start_stack >= c->start && mm->start_stack < c->end))
		c->kind = VMA_STACK;
	else if (c->start >= mm->start_brk && c->start < mm->brk) /* the vma ends page-aligned, brk need not */
		c->kind = VMA_HEAP;
	else if (c->flags & VM_SHARED)
		c->kind = VMA_SHARED;
	else
		c->kind = VMA_ANON;
	return 0;
}

/* A file's path is assembled here: the task-local slot is not stack memory, which is all a
 * bpf_loop callback's context may point to. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[PATH_BUF]);
} path_scratch SEC(".maps");

struct path_walk {
	struct dentry *d;
	struct mount *mnt;
	__u32 off;
};

/* One component per step, leaf first, each followed by '/', crossing mounts; user space puts
 * them in order. bpf_d_path is not allowed from these hooks, and an unrolled walk is more than
 * the verifier will follow, hence bpf_loop. */
static long path_step(__u64 i, struct path_walk *w)
{
	/* Locals, not w->..., inside BPF_CORE_READ: it would relocate path_walk against the
	 * kernel's BTF, where it does not exist. */
	struct dentry *d = w->d;
	struct mount *mnt = w->mnt;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	__u32 zero = 0, off = w->off;
	char *buf;
	long n;

	if (d == BPF_CORE_READ(mnt, mnt.mnt_root) || d == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt)
			return 1;
		w->d = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	buf = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!buf || off >= PATH_BUF - NAME_MAX_READ)
		return 1;
	n = bpf_probe_read_kernel_str(buf + off, NAME_MAX_READ, dentry_name(d));
	if (n <= 1)
		return 1;
	off += n;
	buf[(off - 1) & (PATH_BUF - 1)] = '/';
	w->off = off;
	w->d = parent;
	return 0;
}

static __always_inline void read_path(struct vfsmount *vfs, struct dentry *d, char *out)
{
	struct path_walk w = {
		.d = d,
		.mnt = (void *)vfs - bpf_core_field_offset(struct mount, mnt),
	};
	__u32 zero = 0;
	char *buf = bpf_map_lookup_elem(&path_scratch, &zero);

	if (!buf)
		return;
	bpf_loop(PATH_DEPTH, path_step, &w, 0);
	buf[w.off & (PATH_BUF - 1)] = 0;
	__builtin_memcpy(out, buf, PATH_BUF);
}

/* A mount of the kernel's own, in no namespace: a kern_mount, or a private clone such as an
 * overlayfs layer's. */
static __always_inline int private_mount(struct vfsmount *vfs)
{
	struct mount *mnt = (void *)vfs - bpf_core_field_offset(struct mount, mnt);

	return BPF_CORE_READ(mnt, mnt_ns) == MNT_NS_INTERNAL;
}

/* bpf_find_vma only try-locks the mmap lock, so any thread of the caller that maps, unmaps
 * or faults at the same moment makes it fail with -EBUSY. The holder keeps the lock for
 * microseconds, so the read is tried again, a bounded number of times, before the mapping is
 * given up as unread. */
#define VMA_TRIES 512

struct vma_try {
	__u64 addr;
	long err;
	struct vma_ctx c;
};

static long vma_try(__u32 i, struct vma_try *v)
{
	v->err = bpf_find_vma(bpf_get_current_task_btf(), v->addr, vma_found, &v->c, 0);
	return v->err != -EBUSY;
}

static __always_inline void fill_vma(struct ext *x, char *path, struct task_struct *t, __u64 addr)
{
	struct vma_try v = { .addr = addr };
	struct vfsmount *vfs;
	struct dentry *d;
	struct vma_ctx c;
	struct file *file;

	path[0] = 0;
	/* The slot is reused from call to call: nothing of an earlier mapping may stay. */
	x->vma_start = x->vma_end = x->vma_flags = 0;
	/* Tried once directly, and in bpf_loop only if the lock was held: the loop costs every
	 * call a helper, an indirect call and a second lookup of the task. */
	v.err = bpf_find_vma(t, addr, vma_found, &v.c, 0);
	if (v.err == -EBUSY)
		bpf_loop(VMA_TRIES, vma_try, &v, 0);
	if (v.err && v.err != -ENOENT && v.err != -EBUSY)
		return;
	x->flags |= E_VMA;
	/* Unread is said as such, never as "unmapped". */
	if (v.err) {
		x->vma_kind = v.err == -EBUSY ? VMA_UNREAD : VMA_UNMAPPED;
		return;
	}
	c = v.c;
	x->vma_start = c.start;
	x->vma_end = c.end;
	x->vma_flags = c.flags;
	x->vma_kind = c.kind;
	/* A local, not c.file, inside BPF_CORE_READ: it would relocate vma_ctx against the
	 * kernel's BTF, where it does not exist. */
	file = c.file;
	if (!file)
		return;
	vfs = BPF_CORE_READ(file, f_path.mnt);
	d = BPF_CORE_READ(file, f_path.dentry);
	if (private_mount(vfs)) {
		/* A file made by the kernel for itself (alloc_file_pseudo) rather than opened by
		 * path: its dentry is its own parent, and it has a name but no path. */
		if (BPF_CORE_READ(d, d_parent) == d) {
			x->vma_kind = VMA_INTERNAL;
			bpf_probe_read_kernel_str(path, NAME_MAX_READ, dentry_name(d));
			return;
		}
		/* An overlayfs layer's file: the path is the one the process opened. Before 6.8
		 * the file's own path is that one already. */
		if (bpf_core_field_exists(struct backing_file___user, user_path)) {
			struct backing_file___user *bf = (void *)file;

			vfs = BPF_CORE_READ(bf, user_path.mnt);
			d = BPF_CORE_READ(bf, user_path.dentry);
		}
	}
	read_path(vfs, d, path);
}

/* Facts that must be read before the call changes them. */
static __always_inline void enter_extras(struct record_path *slot, struct task_struct *t, __u16 want)
{
	struct ext *x = &slot->ext;

	x->flags = 0;
	if (want & X_RSS) {
		struct pid *p = pid_of_fd(slot->base.args[0]);
		struct task_struct *task = p ? task_of_pid(p) : NULL;

		if (task) {
			read_rss(task, x->rss_before);
			x->flags |= E_RSS_BEFORE;
		}
	}
	if (cfg.have_find_vma && (want & X_VMA))
		fill_vma(x, slot->path, t, slot->base.args[0]);
	if (want & X_UNLOCKED) {
		x->locked_before = t->mm->locked_vm;
		x->flags |= E_UNLOCKED;
	}
}

/* Facts of the call's outcome, gathered into the slot before the record's size is chosen. */
static __always_inline void exit_extras(struct record_path *slot, struct task_struct *t, __u16 want,
					__s64 ret)
{
	struct ext *x = &slot->ext;

	if (want & X_TARGET_ARG0)
		fill_target(x, pid_of_fd(slot->base.args[0]), want & X_RSS);
	else if ((want & X_TARGET_RET) && ret >= 0)
		fill_target(x, pid_of_fd(ret), 0);
	if (want & X_LOCKED)
		fill_locked(x, t);
	if (cfg.have_find_vma && (want & X_VMA_RET) && (ret < -4095 || ret >= 0))
		fill_vma(x, slot->path, t, ret);
}

/* All six: user space reads only as many as the syscall takes. The registers the entry saved
 * hold them until the exit too. */
static __always_inline void read_args(struct record_path *slot, struct task_struct *t)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);

	slot->base.args[0] = regs->di;
	slot->base.args[1] = regs->si;
	slot->base.args[2] = regs->dx;
	slot->base.args[3] = regs->r10;
	slot->base.args[4] = regs->r8;
	slot->base.args[5] = regs->r9;
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

/*
 * Metrics (`mmtrace serve`): with cfg.metrics set, a call adds itself to per-CPU aggregates
 * and no record is reserved, so an always-on node pays little more than the hooks' floor.
 * User space sums the CPUs when Prometheus scrapes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, M_SLOTS);
	__type(key, __u32);
	__type(value, struct m_event);
} m_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct m_global);
} m_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, M_CGROUP_SERIES);
	__type(key, struct m_cgroup_key);
	__type(value, __u64);
} m_cgroups SEC(".maps");

/* A kill whose victim's memory is not back yet: the victim's tgid and the kill's time. And
 * the other way round, a teardown that ended before the killer's call returned (the victim
 * runs on another CPU): its tgid and the time. LRUs, as a kill that never ends, or a
 * teardown nobody killed, is never matched. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} m_killed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} m_back SEC(".maps");

#define SIGKILL 9
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_LOCKED 0x2000
#define MCL_FUTURE 2
#define MCL_ONFAULT 4
#define EPERM 1
#define ESRCH 3
#define EAGAIN 11
#define ENOMEM 12
#define EINVAL 22

static __always_inline struct m_global *m_global_counts(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&m_global, &zero);
}

/* The log2 bucket of v (see M_BUCKETS): the bit length of v - 1, so that a power of two is
 * counted in the bucket it bounds, without a loop the verifier must walk. */
static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;

	if (v)
		v -= 1;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { v >>= 1; r += 1; }
	r += v;
	return r < M_BUCKETS ? r : M_BUCKETS - 1;
}

/* Bytes of the whole pages the range [addr, addr+len) touches, as the kernel rounds it. */
static __always_inline __u64 pages_bytes(__u64 addr, __u64 len)
{
	__u64 mask = (__u64)cfg.page_size - 1;

	return ((addr + len + mask) & ~mask) - (addr & ~mask);
}

static __always_inline void observe_back(struct m_global *g, __u64 ns)
{
	g->back[log2_bucket(ns)] += 1;
	g->back_sum += ns;
}

/* A kill (at `ts`) and its victim's memory back (at `back`) met: whichever side deletes the
 * kill's entry times it, so it is timed once. */
static __always_inline void kill_met(struct m_global *g, __u32 tgid, __u64 ts, __u64 back)
{
	if (back < ts || bpf_map_delete_elem(&m_killed, &tgid))
		return;
	bpf_map_delete_elem(&m_back, &tgid);
	if (g)
		observe_back(g, back - ts);
}

/*
 * A kill and its victim's teardown can end at once on two CPUs. Each side first records
 * itself, then looks for the other: at least one of them finds the other (each map update
 * is a full barrier), and kill_met's delete lets only one time the kill.
 */

/* A kill of `tgid` at `ts`: timed now if its memory is back already, else when it is. */
static __always_inline void killed(struct m_global *g, __u32 tgid, __u64 ts, __u32 kind)
{
	__u64 *back;

	g->kills[kind & 1] += 1;
	/* The first kill counts: later signals find the victim dying already. */
	if (bpf_map_update_elem(&m_killed, &tgid, &ts, BPF_NOEXIST))
		return;
	back = bpf_map_lookup_elem(&m_back, &tgid);
	if (back)
		kill_met(g, tgid, ts, *back);
}

/* The memory of `tgid` is back at `now`: a teardown's end, the OOM reaper's, a
 * process_mrelease's return; the first of them ends its kill's time. */
static __always_inline void memory_back(__u32 tgid, __u64 now)
{
	__u64 *ts;

	bpf_map_update_elem(&m_back, &tgid, &now, BPF_ANY);
	ts = bpf_map_lookup_elem(&m_killed, &tgid);
	if (ts)
		kill_met(m_global_counts(), tgid, *ts, now);
}

/* A kernel event in a metrics trace: counted, its instant returned for what follows. */
static __always_inline __u64 metrics_instant(__u32 id)
{
	__u32 slot = cfg.m_slot[id & (MAX_IDS - 1)];
	struct m_event *m = bpf_map_lookup_elem(&m_events, &slot);

	if (m)
		m->calls[0] += 1;
	return bpf_ktime_get_boot_ns();
}

static __always_inline void count_cgroup(struct m_global *g, struct task_struct *t, __u32 slot,
					 __u32 result)
{
	struct m_cgroup_key k;
	__u64 one = 1, *n;

	if (cfg.m_host_mnt_ns && t->nsproxy->mnt_ns->ns.inum == cfg.m_host_mnt_ns)
		return;
	k = (struct m_cgroup_key){
		.cgroup_id = bpf_get_current_cgroup_id(),
		.slot = slot,
		.result = result,
	};
	n = bpf_map_lookup_elem(&m_cgroups, &k);
	if (n)
		*n += 1;
	else if (!bpf_map_update_elem(&m_cgroups, &k, &one, BPF_NOEXIST))
		/* A new series: user space is told at once (the ring carries nothing else in a
		 * metrics trace), to find its container while the cgroup still names it. */
		bpf_ringbuf_output(&events, &k.cgroup_id, sizeof(k.cgroup_id), 0);
	else if (g)
		g->cgroup_overflow += 1;
}

/* A lock the kernel refused for want of room or of the right to lock (MMT-004). */
static __always_inline int lock_refused(__u32 errno)
{
	return errno == ENOMEM || errno == EPERM || errno == EAGAIN;
}

/* What the call's role adds to the trace's counts: bytes, kills, memory back, detections. */
static __always_inline void metrics_role(struct m_global *g, struct record_path *slot, __u8 role,
					 __u32 errno)
{
	__u64 *a = slot->base.args;
	__u32 err = errno;

	switch (role) {
	case R_MAPS:
	case R_PROTECTS:
		if (!err && (a[2] & (PROT_WRITE | PROT_EXEC)) == (PROT_WRITE | PROT_EXEC))
			g->detections[0] += 1; /* MMT-001 */
		if (role == R_PROTECTS)
			break;
		if (!err)
			g->bytes[MB_MAPPED] += pages_bytes(0, a[1]);
		else if ((a[3] & MAP_LOCKED) && lock_refused(errno))
			g->detections[3] += 1; /* MMT-004 */
		break;
	case R_UNMAPS:
		if (!err)
			g->bytes[MB_UNMAPPED] += pages_bytes(a[0], a[1]);
		break;
	case R_REMAPS:
		if (!err) {
			__u64 old = pages_bytes(0, a[1]), new = pages_bytes(0, a[2]);

			if (new > old)
				g->bytes[MB_MAPPED] += new - old;
			else
				g->bytes[MB_UNMAPPED] += old - new;
		}
		break;
	case R_LOCKS:
	case R_LOCKS_ALL:
		if (lock_refused(errno))
			g->detections[3] += 1; /* MMT-004 */
		if (role == R_LOCKS && !err)
			g->bytes[MB_LOCKED] += pages_bytes(a[0], a[1]);
		if (role == R_LOCKS_ALL && !err && (a[0] & MCL_FUTURE) && !(a[0] & MCL_ONFAULT))
			g->detections[6] += 1; /* MMT-007 */
		break;
	case R_UNLOCKS:
		if (!err)
			g->bytes[MB_UNLOCKED] += pages_bytes(a[0], a[1]);
		break;
	case R_SIGNALS_PID:
		if (!err && a[1] == SIGKILL && (__s32)a[0] > 0)
			killed(g, (__u32)a[0], slot->base.ts, MK_SIGNAL);
		break;
	case R_SIGNALS_PIDFD:
		if (!err && a[1] == SIGKILL && (slot->ext.flags & E_TARGET))
			killed(g, slot->ext.target_pid, slot->base.ts, MK_SIGNAL);
		break;
	case R_RELEASES:
		if (errno == EINVAL && a[1] == 0)
			g->detections[4] += 1; /* MMT-005 */
		if (errno == ESRCH)
			g->detections[5] += 1; /* MMT-006 */
		if (!err && (slot->ext.flags & E_RSS_BEFORE)) {
			__u64 freed = 0;

			for (int i = 0; i < NR_MM_COUNTERS; i++) {
				/* As the enrichment's freedBytes: anon, file and shmem, not swap. */
				if (i == MM_SWAPENTS)
					continue;
				if (slot->ext.rss_before[i] > slot->ext.rss_after[i])
					freed += slot->ext.rss_before[i] - slot->ext.rss_after[i];
			}
			g->bytes[MB_FREED] += freed * cfg.page_size;
		}
		if (!err && (slot->ext.flags & E_TARGET))
			memory_back(slot->ext.target_pid, slot->base.ts + slot->base.duration);
		break;
	}
}

/* The metrics path of a syscall's exit: its counts, in place of a record. */
static __always_inline void metrics_exit(struct record_path *slot, struct task_struct *t, __u32 id,
					 __s64 ret, int timed)
{
	__u32 err = ret < 0 && ret >= -4095 ? -ret : 0;
	__u32 result = err < M_RESULTS - 1 ? err : M_RESULTS - 1;
	__u32 m_slot = cfg.m_slot[id & (MAX_IDS - 1)];
	__u8 role = cfg.m_role[id & (MAX_IDS - 1)];
	struct m_event *m = bpf_map_lookup_elem(&m_events, &m_slot);
	__u64 ns = slot->base.duration;
	struct m_global *g;
	__u16 want;

	if (!m)
		return;
	if (result < M_RESULTS)
		m->calls[result] += 1;
	if (timed) {
		m->duration[log2_bucket(ns)] += 1;
		m->duration_sum += ns;
	}
	g = m_global_counts();
	count_cgroup(g, t, m_slot, result);
	if (!g || role == R_OTHER)
		return;
	want = cfg.extras[id & (MAX_IDS - 1)];
	if (want)
		exit_extras(slot, t, want, ret);
	metrics_role(g, slot, role, err);
}

/* The slot of a call counted at its exit alone: per CPU, as no entry reserved a task's. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct record_path);
} exit_slot SEC(".maps");

/* The slot of a call counted at its exit alone (cfg.m_at_exit): no entry hook, no clock read,
 * so it costs the exit hook and its counts. Its role needs nothing from the call's entry (the
 * loader hooks the entry of those that do). NULL when the call is not counted. */
static __always_inline struct record_path *exit_only_slot(struct sys_exit_ctx *ctx,
							  struct task_struct *t)
{
	struct record_path *slot;
	__u32 zero = 0;

	if (t->tgid == cfg.self_tgid)
		return NULL;
	if (!in_scope(t)) {
		count(&filtered, ctx->nr);
		return NULL;
	}
	slot = bpf_map_lookup_elem(&exit_slot, &zero);
	if (!slot)
		return NULL;
	read_args(slot, t);
	slot->ext.flags = 0;
	return slot;
}

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
	bpf_probe_read_user(&tail.sp_word, sizeof(tail.sp_word), (void *)regs->sp);
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

/* A child inherits its parent's mark, so trees and followed processes stay whole. A new
 * process starts from its parent's marks alone: its tgid may be that of a tracked process
 * that has exited. Tracking is forgotten here, when the tgid is handed out again, and not at
 * exit: a process's teardown (exit_mmap) can end after every one of its exit hooks has run,
 * in whichever thread let go of the address space last, and it must still be in scope. */
SEC("raw_tracepoint/sched_process_fork")
int on_fork(struct fork_ctx *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u8 marks = tracked_marks(bpf_get_current_task_btf()->tgid);
	__u32 tgid = BPF_CORE_READ(child, tgid);

	/* The child has not run yet, and no live task has its tgid: nobody reads its marks
	 * between the two updates. */
	if (BPF_CORE_READ(child, pid) == tgid)
		tracked_clear(tgid);
	if (marks)
		tracked_add(tgid, marks);
	return 0;
}

/* An exec gives the process another executable, to be sent again with its next call. Only
 * the exec'ing thread is left in the process by now, the others are gone. */
SEC("raw_tracepoint/sched_process_exec")
int on_exec(void *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct inflight *in = bpf_task_storage_get(&inflight, t, 0, 0);
	__u32 tgid = t->tgid;

	bpf_map_delete_elem(&exe_sent, &tgid);
	if (in)
		in->exe_sent = 0;
	return 0;
}

/* A cgroup directory's name, read whole if it is a container's. */
#define CGROUP_NAME 128

static __always_inline int name_is(const char *name, int at, const char *want, int n)
{
	for (int i = 0; i < n; i++)
		if (name[(at + i) & (CGROUP_NAME - 1)] != want[i])
			return 0;
	return 1;
}

/* Whether `name` is the directory a runtime makes for a container, as the reader's rules
 * (mmtrace-events' container::from_cgroup_path) read it for 64-digit ids: the id alone
 * (cgroupfs), or after libpod-, docker-, crio-, cri-containerd- or kubelet's
 * `...:cri-containerd:`, and before an optional .scope (systemd). The id is copied to `id`.
 * conmon's (libpod-conmon-ID) is not a container's. */
static __always_inline int container_cgroup(const char *name, int len, char *id)
{
	int end = len;
	int at;

	if (len >= CONTAINER_ID_LEN + 6 && name_is(name, len - 6, ".scope", 6))
		end = len - 6;
	at = end - CONTAINER_ID_LEN;
	if (at < 0)
		return 0;
	if (!(at == 0 || (at == 7 && (name_is(name, 0, "libpod-", 7) ||
				       name_is(name, 0, "docker-", 7))) ||
	      (at == 5 && name_is(name, 0, "crio-", 5)) ||
	      (at == 15 && name_is(name, 0, "cri-containerd-", 15)) ||
	      (at >= 16 && name_is(name, at - 16, ":cri-containerd:", 16))))
		return 0;
	for (int i = 0; i < CONTAINER_ID_LEN; i++) {
		char c = name[(at + i) & (CGROUP_NAME - 1)];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return 0;
		id[i] = c;
	}
	return 1;
}

/* cgroup_mkdir and cgroup_rmdir as raw tracepoints: (cgroup, path). */
struct cgroup_ctx {
	__u64 args[2];
};

/* Puts a cgroup in scope, or counts it as left out where the table is full. */
static __always_inline void watch_cgroup(__u64 cgroup)
{
	__u32 zero = 0;
	__u8 one = 1;
	__u64 *full;

	if (bpf_map_update_elem(&scope_cgroups, &cgroup, &one, BPF_ANY) == 0)
		return;
	full = bpf_map_lookup_elem(&scope_overflow, &zero);
	if (full)
		*full += 1;
}

/* A cgroup made in the v2 hierarchy (hierarchy 0; a v1 hierarchy numbers its cgroups
 * apart) joins the scope before any process can enter it: no container's first call is
 * missed, as a reader that learnt of the cgroup and then filled the map would. */
SEC("raw_tracepoint/cgroup_mkdir")
int on_cgroup_mkdir(struct cgroup_ctx *ctx)
{
	struct cgroup *cgrp = (struct cgroup *)ctx->args[0];
	__u64 cgroup = BPF_CORE_READ(cgrp, kn, id);
	__u64 parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	char name[CGROUP_NAME];
	char id[CONTAINER_ID_LEN];
	int len;

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	if (bpf_map_lookup_elem(&scope_cgroups, &parent)) {
		watch_cgroup(cgroup);
		return 0;
	}
	len = bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(cgrp, kn, name)) - 1;
	/* Longer than the buffer: no container's name. */
	if (len < CONTAINER_ID_LEN || len >= CGROUP_NAME - 1)
		return 0;
	/* The checked copy of len, not the helper's unchecked return, indexes the name. */
	barrier_var(len);
	if (!container_cgroup(name, len, id))
		return 0;
	if (cfg.scope_watch == WATCH_NEW || bpf_map_lookup_elem(&scope_container_ids, id))
		watch_cgroup(cgroup);
	return 0;
}

/* A removed cgroup leaves the scope: its id is never given again, and the room is kept for
 * the containers to come. */
SEC("raw_tracepoint/cgroup_rmdir")
int on_cgroup_rmdir(struct cgroup_ctx *ctx)
{
	struct cgroup *cgrp = (struct cgroup *)ctx->args[0];
	__u64 cgroup = BPF_CORE_READ(cgrp, kn, id);

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) == 0)
		bpf_map_delete_elem(&scope_cgroups, &cgroup);
	return 0;
}

/* A kernel event is an instant: stamped when it fires, no duration, no result. */
static __always_inline void stamp(struct record *r, __u32 id)
{
	r->ts = bpf_ktime_get_boot_ns();
	r->duration = 0;
	r->ret = 0;
	fill_context(r, bpf_get_current_task_btf(), id);
}

SEC("tracepoint")
int oom_mark_victim(struct mark_victim_ctx *ctx)
{
	struct record_ext *rx;
	__u64 *a;

	if (cfg.metrics) {
		__u64 now = metrics_instant(ID_OOM_MARK_VICTIM);
		struct m_global *g = m_global_counts();

		if (g)
			killed(g, ctx->pid, now, MK_OOM);
		return 0;
	}
	rx = bpf_ringbuf_reserve(&events, sizeof(struct record) + EXT_TARGET, 0);
	if (!rx) {
		count(&lost, ID_OOM_MARK_VICTIM);
		return 0;
	}
	a = rx->base.args;
	__builtin_memset(a, 0, sizeof(rx->base.args));
	__builtin_memset(rx->ext.target_comm, 0, sizeof(rx->ext.target_comm));
	a[0] = ctx->pid;
	rx->ext.flags = E_TARGET;
	rx->ext.target_pid = ctx->pid;
	rx->ext.target_ns_pid = ctx->pid;
	stamp(&rx->base, ID_OOM_MARK_VICTIM);
	/* Before 6.9 the tracepoint has the pid alone, and reading past it fails the attach. */
	if (cfg.victim_fields) {
		a[1] = ctx->total_vm;
		a[2] = ctx->anon_rss;
		a[3] = ctx->file_rss;
		a[4] = ctx->shmem_rss;
		a[5] = ctx->uid;
		a[6] = ctx->pgtables;
		a[7] = ctx->oom_score_adj;
		bpf_probe_read_kernel_str(rx->ext.target_comm, sizeof(rx->ext.target_comm),
					  (void *)ctx + (ctx->comm_loc & 0xffff));
	} else {
		rx->base.absent = 0xfe;
	}
	submit(rx);
	return 0;
}

static __always_inline int reaping(struct reaping_ctx *ctx, __u32 id)
{
	struct record *r;

	if (cfg.metrics) {
		__u64 now = metrics_instant(id);

		if (id == ID_OOM_FINISH_TASK_REAPING)
			memory_back(ctx->pid, now);
		return 0;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count(&lost, id);
		return 0;
	}
	__builtin_memset(r->args, 0, sizeof(r->args));
	r->args[0] = ctx->pid;
	stamp(r, id);
	submit(r);
	return 0;
}

SEC("tracepoint")
int oom_start_task_reaping(struct reaping_ctx *ctx)
{
	return reaping(ctx, ID_OOM_START_TASK_REAPING);
}

SEC("tracepoint")
int oom_finish_task_reaping(struct reaping_ctx *ctx)
{
	return reaping(ctx, ID_OOM_FINISH_TASK_REAPING);
}

SEC("tracepoint")
int oom_skip_task_reaping(struct reaping_ctx *ctx)
{
	return reaping(ctx, ID_OOM_SKIP_TASK_REAPING);
}

/* Whether the exiting thread is the process's last. Since 6.16 the tracepoint says so; before,
 * the count of live threads is already down when it fires (and reading group_dead there
 * would fail the attach). */
static __always_inline int group_dead(struct exit_ctx *ctx, struct task_struct *t)
{
	if (cfg.exit_before_mm)
		return ctx->group_dead;
	return t->signal->live.counter == 0;
}

/* Since 6.16 the tracepoint fires before exit_mm, so the memory is still there; before, the
 * mm is gone and the memory fields are absent, not zero. */
SEC("tracepoint")
int on_exit(struct exit_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();

	if (t->tgid != cfg.self_tgid && group_dead(ctx, t)) {
		if (!in_scope(t)) {
			count(&filtered, ID_SCHED_PROCESS_EXIT);
		} else if (cfg.metrics) {
			metrics_instant(ID_SCHED_PROCESS_EXIT);
		} else {
			struct record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
			__s64 rss[NR_MM_COUNTERS];

			if (!r) {
				count(&lost, ID_SCHED_PROCESS_EXIT);
			} else {
				__builtin_memset(r->args, 0, sizeof(r->args));
				r->args[0] = t->exit_code;
				stamp(r, ID_SCHED_PROCESS_EXIT);
				if (cfg.exit_before_mm) {
					read_rss(t, rss);
					r->args[1] = rss[MM_ANONPAGES] * cfg.page_size;
					r->args[2] = rss[MM_FILEPAGES] * cfg.page_size;
					r->args[3] = rss[MM_SHMEMPAGES] * cfg.page_size;
				} else {
					r->absent = 0xe;
				}
				submit(r);
			}
		}
	}
	return 0;
}

#define PF_EXITING 0x4

struct exit_mmap_ctx {
	__u64 common;
	struct mm_struct *mm;
	void *mt;
};

/* The end of exit_mmap(): the address space's pages and page tables are freed. It runs in
 * whoever dropped the last reference to the mm. The process's own teardown is the one in
 * exit_mm(), which clears current->mm first, in a task already marked PF_EXITING; exec's
 * teardown of the old mm runs with the new one in place, and a teardown by another holder of
 * the last reference (a /proc reader, khugepaged) with that holder's own mm or none: neither
 * is reported, the victim's memory is not what they say. total_vm is intact here: only the
 * unmapping of a range (munmap, mremap, brk, MAP_FIXED) lowers it, and exit_mmap() frees
 * the mappings without that accounting. */
SEC("tracepoint")
int on_exit_mmap(struct exit_mmap_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	/* Read apart: inside BPF_CORE_READ the context's own type would be relocated too. */
	struct mm_struct *mm = ctx->mm;
	struct record *r;

	if (t->mm || !(t->flags & PF_EXITING) || t->tgid == cfg.self_tgid)
		return 0;
	if (!in_scope(t)) {
		count(&filtered, ID_EXIT_MMAP);
		return 0;
	}
	if (cfg.metrics) {
		memory_back(t->tgid, metrics_instant(ID_EXIT_MMAP));
		return 0;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count(&lost, ID_EXIT_MMAP);
		return 0;
	}
	__builtin_memset(r->args, 0, sizeof(r->args));
	r->args[0] = BPF_CORE_READ(mm, total_vm) * cfg.page_size;
	stamp(r, ID_EXIT_MMAP);
	submit(r);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

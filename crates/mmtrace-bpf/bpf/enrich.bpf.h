// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Included by mmtrace.bpf.c. The enrichment: facts read in the kernel around a call (targets, RSS, locked memory, mappings and paths). */

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

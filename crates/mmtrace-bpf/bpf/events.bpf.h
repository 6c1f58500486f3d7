// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Included by mmtrace.bpf.c. The kernel's own events: forks, execs, cgroups made and removed, OOM kills and reaping, exits and teardowns. */

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

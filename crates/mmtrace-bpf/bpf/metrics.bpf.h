// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Included by mmtrace.bpf.c. Metrics (`mmtrace serve`): calls counted in per-CPU aggregates instead of sent. */

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

/* A lock the kernel refused for want of room or of the right to lock (MD_LOCK_FAILED). */
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
			g->detections[MD_WRITE_EXEC] += 1;
		if (role == R_PROTECTS)
			break;
		if (!err)
			g->bytes[MB_MAPPED] += pages_bytes(0, a[1]);
		else if ((a[3] & MAP_LOCKED) && lock_refused(errno))
			g->detections[MD_LOCK_FAILED] += 1;
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
			g->detections[MD_LOCK_FAILED] += 1;
		if (role == R_LOCKS && !err)
			g->bytes[MB_LOCKED] += pages_bytes(a[0], a[1]);
		if (role == R_LOCKS_ALL && !err && (a[0] & MCL_FUTURE) && !(a[0] & MCL_ONFAULT))
			g->detections[MD_MLOCKALL_FUTURE] += 1;
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
			g->detections[MD_RELEASE_LIVE] += 1;
		if (errno == ESRCH)
			g->detections[MD_RELEASE_RACE] += 1;
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

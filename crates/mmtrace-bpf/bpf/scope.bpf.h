// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Included by mmtrace.bpf.c. Who is traced: the scope's maps and checks, tracked trees, argument filters. */

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

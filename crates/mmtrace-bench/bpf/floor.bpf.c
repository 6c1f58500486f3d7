// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The floor of an enter+exit tracer: programs on mmtrace's hooks that do nothing at all; and
 * its limits: what any tracer that times calls must do to send them, or to count them in a
 * histogram, and no more. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* 0, as mmtrace's programs return: with 1 the kernel would go on to build a perf sample for
 * each call, which is what bpftrace's empty programs cost. */
SEC("tracepoint")
int floor_enter(void *ctx)
{
	return 0;
}

SEC("tracepoint")
int floor_exit(void *ctx)
{
	return 0;
}

/* The floor of the other design: one raw tracepoint program on every syscall's entry and one
 * on its exit (raw_syscalls), which would pick the traced ones by number. Empty: what every
 * syscall of the machine, traced or not, pays for the hooks alone. */
SEC("raw_tracepoint/sys_enter")
int raw_enter(void *ctx)
{
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int raw_exit(void *ctx)
{
	return 0;
}

/* The limit: the entry's time kept with the thread, and at exit a second clock read and one
 * record the size of mmtrace's bare one (struct record, 192 bytes) written to a ring, with no
 * wakeup: the reader looks every millisecond. */
struct task_struct;

struct sys_exit_ctx {
	__u64 common;
	long nr;
	long ret;
};

struct timed {
	__u64 ts, duration;
	long nr, ret;
	__u64 pid_tgid;
	__u8 rest[152];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} started SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} ring SEC(".maps");

/* Records the ring had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

SEC("tracepoint")
int limit_enter(void *ctx)
{
	__u64 *ts = bpf_task_storage_get(&started, bpf_get_current_task_btf(), 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (ts)
		*ts = bpf_ktime_get_boot_ns();
	return 0;
}

SEC("tracepoint")
int limit_exit(struct sys_exit_ctx *ctx)
{
	__u64 *ts = bpf_task_storage_get(&started, bpf_get_current_task_btf(), 0, 0);
	struct timed r = {};

	if (!ts || !*ts)
		return 0;
	r.ts = *ts;
	r.duration = bpf_ktime_get_boot_ns() - *ts;
	r.nr = ctx->nr;
	r.ret = ctx->ret;
	r.pid_tgid = bpf_get_current_pid_tgid();
	if (bpf_ringbuf_output(&ring, &r, sizeof(r), BPF_RB_NO_WAKEUP)) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
	}
	*ts = 0;
	return 0;
}

/* The limit of counting in the kernel (serve): limit_enter's time, and at exit a second clock
 * read and the duration's log2 bucket counted per CPU, as a histogram a scrape sums. */
#define BUCKETS 64

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[BUCKETS]);
} histogram SEC(".maps");

SEC("tracepoint")
int count_exit(struct sys_exit_ctx *ctx)
{
	__u64 *ts = bpf_task_storage_get(&started, bpf_get_current_task_btf(), 0, 0);
	__u32 zero = 0;
	__u64 *buckets, ns;

	if (!ts || !*ts)
		return 0;
	ns = bpf_ktime_get_boot_ns() - *ts;
	*ts = 0;
	buckets = bpf_map_lookup_elem(&histogram, &zero);
	if (buckets)
		buckets[(64 - __builtin_clzll(ns | 1)) & (BUCKETS - 1)] += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

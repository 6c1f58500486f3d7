// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The floor of an enter+exit tracer: programs on mmtrace's hooks that do nothing at all. */

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

char LICENSE[] SEC("license") = "Dual MIT/GPL";

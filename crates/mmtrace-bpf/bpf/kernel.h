// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The kernel's own types, as far as mmtrace reads them: structures and tracepoint contexts. */

#ifndef MMTRACE_KERNEL_H
#define MMTRACE_KERNEL_H

/*
 * Only the kernel fields we read, marked for CO-RE so the loader relocates them against the
 * running kernel's BTF. Declaring them here instead of including a generated vmlinux.h keeps
 * the object byte-for-byte reproducible from these sources alone.
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

/* The registers a native syscall takes its arguments in, as syscall_get_arguments() reads
 * them for the tracepoint (the syscall tracepoints skip compat calls), and the user stack
 * pointer. The layout is the architecture's ABI (ptrace's user_regs_struct, which begins the
 * kernel's pt_regs), so no CO-RE: each relocated type costs the loader a walk of the kernel's
 * whole BTF at start. scripts/build-bpf compiles one object per architecture. */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp;
};
#define SYSCALL_ARG0(r) ((r)->di)
#define SYSCALL_ARG1(r) ((r)->si)
#define SYSCALL_ARG2(r) ((r)->dx)
#define SYSCALL_ARG3(r) ((r)->r10)
#define SYSCALL_ARG4(r) ((r)->r8)
#define SYSCALL_ARG5(r) ((r)->r9)
#define USER_SP(r) ((r)->sp)
/* Where the return address into a frameless syscall wrapper's caller is: the word at the
 * stack pointer, which the call pushed. */
#define CALLER_OF_WRAPPER(r, dst) bpf_probe_read_user(&(dst), sizeof(dst), (void *)USER_SP(r))
#elif defined(__TARGET_ARCH_arm64)
/* x0-x5, but x0 is overwritten by the return value: the kernel keeps the first argument in
 * orig_x0, right after user_pt_regs (arch/arm64/include/asm/ptrace.h), and reads it there. */
struct pt_regs {
	unsigned long regs[31];
	unsigned long sp, pc, pstate;
	unsigned long orig_x0;
};
#define SYSCALL_ARG0(r) ((r)->orig_x0)
#define SYSCALL_ARG1(r) ((r)->regs[1])
#define SYSCALL_ARG2(r) ((r)->regs[2])
#define SYSCALL_ARG3(r) ((r)->regs[3])
#define SYSCALL_ARG4(r) ((r)->regs[4])
#define SYSCALL_ARG5(r) ((r)->regs[5])
#define USER_SP(r) ((r)->sp)
/* The link register: bl leaves the return address there, and a leaf wrapper keeps it. */
#define CALLER_OF_WRAPPER(r, dst) ((dst) = (r)->regs[30])
#else
#error "define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

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

#endif

//! The prose of the event reference: what each call does, its errors and its traps for users.

/// The hand-written part of one event's reference: only what the catalog cannot say. Names,
/// types, tags, numbers, flag tables and versions are read from the catalog by the renderers.
#[derive(Debug)]
pub struct EventDoc {
    /// What the call really does, in a few sentences.
    pub description: &'static str,
    /// What each argument means, in catalog order.
    pub args: &'static [&'static str],
    /// Every errno the kernel can fail this call with, as (name, what it means here).
    pub errnos: &'static [(&'static str, &'static str)],
    /// Why a user would trace this event.
    pub use_case: &'static str,
    /// What surprises people reading these events.
    pub pitfalls: &'static [&'static str],
    /// Catalog names of events worth reading alongside this one.
    pub related: &'static [&'static str],
    /// Why the reference shows no captured example, for an event no test can provoke safely.
    pub no_example: Option<&'static str>,
}

/// The OOM reaper's events: it acts only on a victim still alive two seconds after the kill.
const REAPER_UNPROVOKED: &str =
    "None captured: the kernel's OOM reaper acts only on a victim still alive two \
    seconds after the kill, which a test cannot arrange safely. A victim that exits in time, as \
    in the oom_mark_victim example, fires no reaping event at all.";

const EINTR_LOCK: (&str, &str) = (
    "EINTR",
    "a fatal signal arrived while the call waited for the address-space lock; the caller is \
     being killed and never sees this value, but a tracer does",
);

/// mlock and mlock2 fault the range in while locking it, and fail alike.
const EAGAIN_FAULT_IN: (&str, &str) = (
    "EAGAIN",
    "memory ran out while faulting the range in, so part of it could not be locked",
);

const EINTR_FAULT_IN: (&str, &str) = (
    "EINTR",
    "a fatal signal arrived while waiting for the address-space lock or while faulting pages in",
);

pub static MMAP: EventDoc = EventDoc {
    description: "Creates a new mapping in the caller's address space: anonymous memory \
        (MAP_ANONYMOUS with fd -1) or a window onto a file or device, private (copy-on-write) \
        or shared. The kernel chooses the address; addr is only a hint unless MAP_FIXED or \
        MAP_FIXED_NOREPLACE forces it. Pages are allocated when first touched, except that \
        MAP_POPULATE faults them in at once and MAP_LOCKED also locks them as mlock does.",
    args: &[
        "where to place the mapping: 0 lets the kernel choose; a hint unless MAP_FIXED or \
         MAP_FIXED_NOREPLACE is given",
        "bytes to map, rounded up to whole pages; must not be 0",
        "the access allowed: PROT_NONE, or PROT_READ, PROT_WRITE and PROT_EXEC combined",
        "the mapping type (MAP_SHARED, MAP_PRIVATE or MAP_SHARED_VALIDATE) plus modifiers; with \
         MAP_HUGETLB the top bits carry the huge page size, decoded as MAP_HUGE_2MB and so on",
        "the file to map; -1 with MAP_ANONYMOUS",
        "offset into the file, a multiple of the page size",
    ],
    errnos: &[
        (
            "EACCES",
            "fd is not open for reading, MAP_SHARED with PROT_WRITE on a file not opened for \
             writing, or a security module refused",
        ),
        (
            "EAGAIN",
            "the mapping is to be locked (MAP_LOCKED, or mlockall(MCL_FUTURE) earlier) and would \
             exceed RLIMIT_MEMLOCK",
        ),
        (
            "EBADF",
            "fd is not an open file descriptor and MAP_ANONYMOUS was not given",
        ),
        (
            "EEXIST",
            "MAP_FIXED_NOREPLACE and the range overlaps an existing mapping",
        ),
        EINTR_LOCK,
        (
            "EINVAL",
            "length 0, off or a fixed addr not page-aligned, no or an unknown mapping type, or \
             MAP_HUGETLB with a size the system lacks or on a file that is not hugetlbfs",
        ),
        (
            "ENFILE",
            "a shared anonymous or hugetlb mapping needed an internal file and the system-wide \
             file limit was reached",
        ),
        (
            "ENODEV",
            "the filesystem or device behind fd does not support mmap",
        ),
        (
            "ENOMEM",
            "no free address range, vm.max_map_count reached, RLIMIT_AS or the overcommit limit \
             exceeded",
        ),
        (
            "EOPNOTSUPP",
            "MAP_SHARED_VALIDATE with a flag the file does not support, such as MAP_SYNC on a \
             file without DAX",
        ),
        (
            "EOVERFLOW",
            "off plus length does not fit the file offset range",
        ),
        (
            "EPERM",
            "PROT_EXEC on a noexec mount, MAP_LOCKED with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK, a \
             file seal forbids the mapping, or MAP_FIXED over memory sealed by mseal",
        ),
        (
            "ETXTBSY",
            "a writable shared mapping of a file that is in use as swap",
        ),
    ],
    use_case: "Find out where a process's address space comes from: memory allocators take \
        large blocks from the kernel with anonymous mmaps (glibc malloc above 128 KiB, \
        jemalloc, Go and JVM heaps), and loaders map libraries with it. A mapping with both \
        PROT_WRITE and PROT_EXEC points at a JIT engine or at injected code.",
    pitfalls: &[
        "A successful mmap returns an address, so returnValue is a large positive number; only \
         values from -4095 to -1 are errors.",
        "mmap reserves address space; RSS grows only as pages are touched, unless MAP_POPULATE \
         or MAP_LOCKED is given.",
        "MAP_FIXED silently replaces whatever was mapped in the range; MAP_FIXED_NOREPLACE \
         fails with EEXIST instead.",
        "Allocators call mmap from inside malloc, so the calling code is often not the code \
         that asked for memory.",
    ],
    related: &[
        "munmap",
        "mremap",
        "mprotect",
        "madvise",
        "mlock",
        "memfd_secret",
    ],
    no_example: None,
};

pub static MPROTECT: EventDoc = EventDoc {
    description: "Changes the access protection of every page in [addr, addr+len) of the \
        caller's mappings; the whole range must be mapped. An access against the new \
        protection raises SIGSEGV. Mappings are split at the range ends where needed, and \
        making a private file mapping writable charges it against the overcommit limit.",
    args: &[
        "start of the range, page-aligned",
        "bytes, rounded up to whole pages; 0 does nothing",
        "the new protection: PROT_NONE, or PROT_READ, PROT_WRITE and PROT_EXEC combined; \
         PROT_GROWSDOWN or PROT_GROWSUP extend it to the whole stack-like mapping",
    ],
    errnos: &[
        (
            "EACCES",
            "a mapping cannot get that access: PROT_WRITE on a shared mapping of a file opened \
             read-only, PROT_EXEC on a noexec mount, or a security module or memory-deny-write-\
             execute refused",
        ),
        EINTR_LOCK,
        (
            "EINVAL",
            "addr not page-aligned, unknown prot bits, both PROT_GROWSDOWN and PROT_GROWSUP, or \
             a combination the architecture rejects",
        ),
        (
            "ENOMEM",
            "part of the range is not mapped, the end overflows, splitting would pass \
             vm.max_map_count, or making private pages writable exceeds the overcommit limit",
        ),
        ("EPERM", "part of the range is sealed by mseal"),
    ],
    use_case: "Spot code that makes memory executable: JIT compilers, unpackers and injected \
        shellcode write a buffer and then mprotect it to PROT_EXEC. With `-o json`, select the \
        events whose prot decodes with PROT_EXEC.",
    pitfalls: &[
        "Allocators and thread libraries mprotect guard pages to PROT_NONE all the time; those \
         calls are routine.",
        "One call can change many mappings; the event shows the range asked for, not the \
         mappings split or merged.",
        "JIT runtimes (V8, the JVM, .NET) flip pages between writable and executable \
         constantly, which is why write-then-execute detections are noisy.",
    ],
    related: &["pkey_mprotect", "mmap", "mseal", "madvise"],
    no_example: None,
};

pub static MUNMAP: EventDoc = EventDoc {
    description: "Removes the mappings in [addr, addr+length) from the caller's address \
        space. Any page range can be unmapped, whatever calls created it: a range covering \
        part of a mapping splits it, a range covering several removes them all, and holes are \
        skipped. Locked pages in the range are unlocked. Anonymous memory is freed once no \
        other mapping (a forked child's) shares it.",
    args: &[
        "start of the range, page-aligned",
        "bytes, rounded up to whole pages; must not be 0",
    ],
    errnos: &[
        EINTR_LOCK,
        (
            "EINVAL",
            "addr not page-aligned, length 0, or the range runs past the end of the user \
             address space",
        ),
        (
            "ENOMEM",
            "unmapping the middle of a mapping would split it past vm.max_map_count, or memory \
             for the split ran out",
        ),
        ("EPERM", "part of the range is sealed by mseal"),
    ],
    use_case: "Pair with mmap to find address-space leaks: a process whose mmaps are not \
        matched by munmaps of the same ranges keeps growing. Summing length per processId over \
        both events shows who holds what.",
    pitfalls: &[
        "Unmapping a range where nothing is mapped succeeds with 0, so munmap cannot reveal a \
         caller's bookkeeping errors.",
        "The length need not match the one given to mmap; allocators unmap parts of mappings \
         routinely.",
        "munmap of a locked range unlocks it: VmLck drops without any munlock being traced.",
    ],
    related: &["mmap", "mremap", "mlock", "mseal", "brk"],
    no_example: None,
};

pub static BRK: EventDoc = EventDoc {
    description: "Moves the program break, the end of the heap that starts after the \
        program's data segment. Growing it maps new anonymous pages (faulted in when touched, \
        or at once under mlockall(MCL_FUTURE)); shrinking it unmaps them. Any address below \
        the start of the heap, usually 0, just asks for the current break. glibc's malloc \
        grows its main-thread heap this way; other threads' heaps and large blocks come from \
        mmap.",
    args: &["the requested new break; 0 only asks for the current one"],
    errnos: &[(
        "EINTR",
        "a fatal signal arrived while brk waited for the address-space lock; this -4 is the \
         only negative value brk returns, and the only failure of brk that returnError names",
    )],
    use_case: "Watch the main heap of C programs grow: a steadily rising returned break is \
        malloc taking memory, and a break that stops short of the requested one is a failed \
        allocation (RLIMIT_DATA reached, or the heap ran into another mapping).",
    pitfalls: &[
        "brk reports an ordinary failure by returning the old break, not an errno: compare \
         returnValue with addr. The C library turns that into ENOMEM itself.",
        "The break covers only the main heap; multi-threaded programs and large allocations \
         mostly use mmap.",
        "Address-space randomization places the heap at a random distance from the data \
         segment, so break values differ between runs.",
    ],
    related: &["mmap", "munmap", "mlockall"],
    no_example: None,
};

pub static MREMAP: EventDoc = EventDoc {
    description: "Resizes or moves an existing mapping. Shrinking unmaps the tail; growing \
        extends the mapping in place when the addresses after it are free, and otherwise \
        fails unless MREMAP_MAYMOVE lets the kernel move it, page tables and all, without \
        copying the data. MREMAP_FIXED moves it to new_address, replacing what was there; \
        MREMAP_DONTUNMAP moves the pages and leaves the old range mapped but empty.",
    args: &[
        "start of the existing mapping, page-aligned",
        "bytes of it to remap; 0 on a shared mapping creates a second mapping of the same \
         pages",
        "the new size in bytes; must not be 0",
        "MREMAP_MAYMOVE, MREMAP_FIXED (which needs MREMAP_MAYMOVE) or MREMAP_DONTUNMAP",
        "the target address with MREMAP_FIXED or MREMAP_DONTUNMAP; ignored otherwise",
    ],
    errnos: &[
        (
            "EAGAIN",
            "growing a locked mapping would exceed RLIMIT_MEMLOCK",
        ),
        (
            "EFAULT",
            "the old range is not inside one mapped area, or a mapping that cannot grow (a \
             device or PFN mapping) was asked to",
        ),
        EINTR_LOCK,
        (
            "EINVAL",
            "unknown flags, old_address or new_address not page-aligned, new_size 0, \
             MREMAP_FIXED or MREMAP_DONTUNMAP without MREMAP_MAYMOVE, overlapping old and new \
             ranges, MREMAP_DONTUNMAP with a size change or on an unsuitable mapping, or \
             old_size 0 on a private mapping",
        ),
        (
            "ENOMEM",
            "the mapping cannot grow in place and MREMAP_MAYMOVE was not given, there is no \
             free range to move it to, or RLIMIT_AS, vm.max_map_count or the overcommit limit \
             would be exceeded",
        ),
        ("EPERM", "the mapping is sealed by mseal"),
    ],
    use_case: "Follow the growth of large buffers: glibc's realloc of a block that lives in its \
        own mapping calls mremap with MREMAP_MAYMOVE, so a growing vector or hash table shows \
        up as a chain of mremaps whose result changes when the block moved.",
    pitfalls: &[
        "returnValue is the mapping's address after the call; compare it with old_address to \
         see whether it moved.",
        "A moved mapping keeps its contents but not its address: pointers into it become \
         dangling, which is why only MREMAP_MAYMOVE permits a move.",
        "Growing a mapping does not make the new pages resident; they fault in when touched.",
    ],
    related: &["mmap", "munmap", "mseal", "mlock"],
    no_example: None,
};

pub static MADVISE: EventDoc = EventDoc {
    description: "Tells the kernel how a range of the caller's memory will be used, or asks it \
        to act on the range now. Hints (MADV_SEQUENTIAL, MADV_RANDOM, MADV_WILLNEED, \
        MADV_HUGEPAGE, MADV_MERGEABLE, ...) steer readahead, transparent huge pages and KSM. \
        Actions discard pages (MADV_DONTNEED: private anonymous memory reads back as zeros; \
        MADV_FREE: the kernel may reclaim it lazily; MADV_REMOVE: punch a hole in the file), \
        age or reclaim them (MADV_COLD, MADV_PAGEOUT), fill page tables (MADV_POPULATE_READ \
        and _WRITE), collapse them into huge pages (MADV_COLLAPSE) or install guard pages \
        (MADV_GUARD_INSTALL).",
    args: &[
        "start of the range, page-aligned",
        "bytes, rounded up to whole pages; 0 does nothing",
        "what to do: one MADV_ value, not a bit set",
    ],
    errnos: &[
        (
            "EACCES",
            "MADV_REMOVE on a mapping that is not shared and writable",
        ),
        (
            "EAGAIN",
            "a passing shortage of kernel memory while changing mapping flags, or a passing \
             MADV_COLLAPSE failure; calling again may succeed",
        ),
        (
            "EBADF",
            "MADV_WILLNEED on anonymous memory of a kernel built without swap",
        ),
        (
            "EBUSY",
            "MADV_COLLAPSE could not charge the huge page to the memory cgroup, or \
             MADV_HWPOISON or MADV_SOFT_OFFLINE could not handle the page",
        ),
        (
            "EFAULT",
            "MADV_POPULATE_READ or _WRITE hit a page that faults with SIGBUS or SIGSEGV (a file \
             page past the end of the file), or MADV_HWPOISON or MADV_SOFT_OFFLINE on an \
             unmapped address",
        ),
        (
            "EHWPOISON",
            "MADV_POPULATE_READ or _WRITE hit a page with a hardware memory error",
        ),
        (
            "EINTR",
            "a fatal signal arrived while waiting for the address-space lock or while \
             populating pages",
        ),
        (
            "EINVAL",
            "addr not page-aligned, an unknown advice or one this kernel was built without \
             (KSM, huge pages, memory failure), or an advice that does not fit the mapping \
             (MADV_DONTNEED or MADV_COLD on locked or PFN-mapped memory, MADV_FREE on a file \
             mapping, ...)",
        ),
        (
            "EIO",
            "MADV_REMOVE got an I/O error from the filesystem, or MADV_SOFT_OFFLINE failed",
        ),
        (
            "ENOMEM",
            "part of the range is not mapped (the mapped parts were still advised), or memory \
             ran out",
        ),
        (
            "EOPNOTSUPP",
            "MADV_REMOVE on a filesystem that cannot punch holes",
        ),
        (
            "EPERM",
            "MADV_HWPOISON or MADV_SOFT_OFFLINE without CAP_SYS_ADMIN, or a discarding advice on \
             read-only anonymous memory sealed by mseal",
        ),
        (
            "ERESTARTNOINTR",
            "MADV_GUARD_INSTALL kept losing races with page faults and asked for a restart; \
             the kernel repeats the call, so the caller never sees this value, but a tracer \
             does",
        ),
    ],
    use_case: "See who gives memory back and how: MADV_DONTNEED and MADV_FREE come from \
        allocators returning free blocks (jemalloc, Go's scavenger), MADV_PAGEOUT and \
        MADV_COLD from memory managers, MADV_HUGEPAGE and MADV_COLLAPSE from programs tuning \
        huge pages. Counting the decoded advice over a trace gives the mix.",
    pitfalls: &[
        "Pages given up with MADV_FREE stay in RSS until the kernel needs the memory; \
         MADV_DONTNEED drops them at once.",
        "advice is an enumeration: values do not combine, and 8 is MADV_FREE, not a flag bit.",
        "ENOMEM for a range with holes comes after the mapped parts were advised: the call did \
         part of its work.",
        "When MADV_GUARD_INSTALL is restarted, a tracer shows the ERESTARTNOINTR return and \
         then the same call again.",
    ],
    related: &["process_madvise", "mmap", "munmap", "mlock"],
    no_example: None,
};

pub static MLOCK: EventDoc = EventDoc {
    description: "Locks the pages of [addr, addr+len) in RAM: they are faulted in before the \
        call returns and stay resident, never swapped or reclaimed, until unlocked. The range \
        is widened to whole pages. Locked memory counts against RLIMIT_MEMLOCK (mm->locked_vm, \
        shown as VmLck in /proc/PID/status) unless the caller has CAP_IPC_LOCK.",
    args: &[
        "start of the range; rounded down to a page boundary",
        "bytes; the range is widened to whole pages",
    ],
    errnos: &[
        EAGAIN_FAULT_IN,
        EINTR_FAULT_IN,
        ("EINVAL", "addr plus len overflows"),
        (
            "ENOMEM",
            "part of the range is not mapped, the lock would exceed RLIMIT_MEMLOCK without \
             CAP_IPC_LOCK, splitting a mapping failed, or a page could not be faulted in",
        ),
        (
            "EPERM",
            "RLIMIT_MEMLOCK is 0 and the caller lacks CAP_IPC_LOCK",
        ),
    ],
    use_case: "Audit who pins memory: databases locking buffer pools, real-time and audio \
        programs, and crypto libraries keeping keys out of swap all call mlock. Together with \
        VmLck in /proc/PID/status it explains memory that reclaim cannot touch.",
    pitfalls: &[
        "Locks do not nest: one munlock or munmap undoes any number of mlocks of the same \
         pages.",
        "Locks are not inherited by fork and are dropped by exec.",
        "The default RLIMIT_MEMLOCK is 8 MiB since Linux 5.16 (64 KiB before), so an \
         unprivileged mlock of a larger buffer fails with ENOMEM.",
        "mlock faults every page in before returning, so on a large range the call itself is \
         slow: look at duration.",
    ],
    related: &[
        "mlock2",
        "munlock",
        "mlockall",
        "munlockall",
        "memfd_secret",
        "process_mrelease",
    ],
    no_example: None,
};

pub static MUNLOCK: EventDoc = EventDoc {
    description: "Unlocks the pages of [addr, addr+len): they become ordinary reclaimable \
        memory again and stop counting against RLIMIT_MEMLOCK. Locks do not nest, so this \
        undoes every earlier mlock and mlock2 of those pages at once. The pages stay resident \
        until reclaim picks them.",
    args: &[
        "start of the range; rounded down to a page boundary",
        "bytes; the range is widened to whole pages",
    ],
    errnos: &[
        EINTR_LOCK,
        ("EINVAL", "addr plus len overflows"),
        (
            "ENOMEM",
            "part of the range is not mapped, or splitting a mapping failed",
        ),
    ],
    use_case: "Check that locks are released: tracing mlock, mlock2 and munlock together \
        shows whether a program unlocks what it locked, or keeps VmLck until it exits.",
    pitfalls: &[
        "munlock needs no privilege and succeeds on pages that were never locked.",
        "It unlocks pages that mlockall(MCL_CURRENT) locked but leaves MCL_FUTURE in force: \
         later mappings are still locked until munlockall.",
        "munmap unlocks too, without any munlock being traced.",
    ],
    related: &["mlock", "mlock2", "munlockall", "munmap"],
    no_example: None,
};

pub static MLOCKALL: EventDoc = EventDoc {
    description: "Locks every mapping of the process. MCL_CURRENT locks what is mapped now, \
        faulting it in; MCL_FUTURE makes every later mapping (mmap, brk, stack growth) locked \
        too; MCL_ONFAULT, with either, locks pages as they are touched instead of faulting \
        them all in. The whole address space counts against RLIMIT_MEMLOCK unless the caller \
        has CAP_IPC_LOCK.",
    args: &[
        "MCL_CURRENT and/or MCL_FUTURE, optionally with MCL_ONFAULT (other values on \
        alpha, powerpc and sparc)",
    ],
    errnos: &[
        EINTR_LOCK,
        (
            "EINVAL",
            "flags is 0, has unknown bits, or is MCL_ONFAULT alone",
        ),
        (
            "ENOMEM",
            "with MCL_CURRENT, the process's mapped size exceeds RLIMIT_MEMLOCK and the caller \
             lacks CAP_IPC_LOCK",
        ),
        (
            "EPERM",
            "RLIMIT_MEMLOCK is 0 and the caller lacks CAP_IPC_LOCK",
        ),
    ],
    use_case: "Find processes that lock everything: real-time programs, some databases and \
        key-handling daemons call mlockall at start-up, and one of them with a large heap \
        takes a big share of RAM out of reclaim.",
    pitfalls: &[
        "Under MCL_FUTURE, later mmap calls fail with EAGAIN, and brk returns the old break, \
         once the locked total would pass RLIMIT_MEMLOCK: the failure shows up far from the \
         mlockall that caused it.",
        "With MCL_CURRENT the limit is checked against the whole mapped size (VmSize), not \
         what is resident.",
        "Pages that cannot be faulted in are skipped silently: mlockall still returns 0.",
        "Not inherited by fork, dropped by exec.",
    ],
    related: &["munlockall", "mlock", "mlock2", "mmap", "brk"],
    no_example: None,
};

pub static MUNLOCKALL: EventDoc = EventDoc {
    description: "Unlocks every mapping of the process and clears MCL_FUTURE, so later \
        mappings are no longer locked either. The pages stay resident until reclaim takes \
        them.",
    args: &[],
    errnos: &[EINTR_LOCK],
    use_case: "Confirm that a process undid mlockall, for instance a service that locks its \
        memory for a latency-critical phase and unlocks it afterwards.",
    pitfalls: &[
        "It needs no privilege and returns 0 even when nothing was locked.",
        "It also undoes every mlock and mlock2 of the process.",
    ],
    related: &["mlockall", "munlock", "mlock"],
    no_example: None,
};

pub static MLOCK2: EventDoc = EventDoc {
    description: "mlock with flags. MLOCK_ONFAULT marks the range locked without faulting it \
        in: pages are locked as they are first touched and are never swapped out after that. \
        With flags 0 it is mlock. The whole range counts against RLIMIT_MEMLOCK at once.",
    args: &[
        "start of the range; rounded down to a page boundary",
        "bytes; the range is widened to whole pages",
        "0 or MLOCK_ONFAULT",
    ],
    errnos: &[
        EAGAIN_FAULT_IN,
        EINTR_FAULT_IN,
        (
            "EINVAL",
            "flags has bits other than MLOCK_ONFAULT, or addr plus len overflows",
        ),
        (
            "ENOMEM",
            "part of the range is not mapped, the lock would exceed RLIMIT_MEMLOCK without \
             CAP_IPC_LOCK, splitting a mapping failed, or a page could not be faulted in",
        ),
        (
            "EPERM",
            "RLIMIT_MEMLOCK is 0 and the caller lacks CAP_IPC_LOCK",
        ),
    ],
    use_case: "Lock large, sparsely used buffers without paying to fault them all in, as key \
        stores and sparse tables do; tracing mlock2 shows which programs rely on \
        MLOCK_ONFAULT.",
    pitfalls: &[
        "MLOCK_ONFAULT charges RLIMIT_MEMLOCK and VmLck for the whole range at once, although \
         pages become resident only when touched, so VmLck overstates locked RAM.",
        "glibc wraps it as mlock2() only since 2.27; older programs call it through syscall().",
        "As with mlock, locks do not nest and are dropped by fork and exec.",
    ],
    related: &["mlock", "munlock", "mlockall", "munlockall"],
    no_example: None,
};

pub static PKEY_MPROTECT: EventDoc = EventDoc {
    description: "mprotect that also tags the pages with a memory protection key allocated by \
        pkey_alloc. Every access is then checked against the thread's key rights register \
        (PKRU on x86) as well as the page protection, so a thread can revoke its own access \
        to tagged memory without a system call. pkey -1 means no key: plain mprotect.",
    args: &[
        "start of the range, page-aligned",
        "bytes, rounded up to whole pages; 0 does nothing",
        "the new protection, as for mprotect",
        "a protection key from pkey_alloc, or -1 for none",
    ],
    errnos: &[
        (
            "EACCES",
            "a mapping cannot get that access: PROT_WRITE on a shared mapping of a file opened \
             read-only, PROT_EXEC on a noexec mount, or a security module refused",
        ),
        EINTR_LOCK,
        (
            "EINVAL",
            "addr not page-aligned, bad prot, or pkey is not a key this process allocated \
             (always so on a CPU without protection keys)",
        ),
        (
            "ENOMEM",
            "part of the range is not mapped, the end overflows, splitting would pass \
             vm.max_map_count, or making private pages writable exceeds the overcommit limit",
        ),
        ("EPERM", "part of the range is sealed by mseal"),
    ],
    use_case: "Spot processes that fence memory with protection keys, as some JIT engines and \
        crypto libraries do; the pkey value ties each range to a key from pkey_alloc.",
    pitfalls: &[
        "With pkey -1 it is exactly mprotect.",
        "A key restricts data access per thread only; the page protection in prot still \
         applies on top.",
        "x86 has 16 keys and key 0 is the default of all memory, so pkey 0 is not \"no key\".",
    ],
    related: &["mprotect", "mmap", "mseal"],
    no_example: None,
};

pub static PIDFD_SEND_SIGNAL: EventDoc = EventDoc {
    description: "Sends a signal to the process a pidfd refers to. Unlike kill(2), a pidfd \
        names one process for its whole life: once that process has been reaped the call \
        fails with ESRCH instead of signalling whichever process reused the pid. flags can \
        choose the thread, the thread group or the process group as target; info, when not \
        NULL, supplies the siginfo.",
    args: &[
        "a pidfd (from pidfd_open or clone with CLONE_PIDFD) or an open /proc/PID directory",
        "the signal number; 0 only checks that the process exists and may be signalled",
        "a siginfo_t to send; NULL lets the kernel fill it in as kill(2) does",
        "0, or one of PIDFD_SIGNAL_THREAD, PIDFD_SIGNAL_THREAD_GROUP and \
         PIDFD_SIGNAL_PROCESS_GROUP",
    ],
    errnos: &[
        ("EAGAIN", "the target's queue of real-time signals is full"),
        (
            "EBADF",
            "pidfd is not an open descriptor, or neither a pidfd nor a /proc/PID directory",
        ),
        ("EFAULT", "info points at unreadable memory"),
        (
            "EINVAL",
            "unknown flags or more than one target flag, an invalid signal number, sig not \
             matching info's si_signo, or a target outside the caller's pid namespace and its \
             descendants",
        ),
        (
            "EPERM",
            "no permission to signal the target, or info carries a kernel-only si_code for a \
             process other than the caller",
        ),
        ("ESRCH", "the process has exited and been reaped"),
    ],
    use_case: "Follow userspace OOM killers and supervisors that kill through pidfds: a \
        pidfd_send_signal with SIGKILL followed by process_mrelease on the same pidfd is one \
        kill-and-reap decision, and the events' timestamps show how long it took.",
    pitfalls: &[
        "sig 0 sends nothing: it is a liveness and permission check, common in polling loops.",
        "Success means the signal was queued, not that the process is gone; it exits only \
         when it next runs.",
        "A zombie still accepts signals (returns 0); ESRCH comes only after its parent has \
         reaped it.",
    ],
    related: &["pidfd_open", "process_mrelease", "process_madvise"],
    no_example: None,
};

pub static PIDFD_OPEN: EventDoc = EventDoc {
    description: "Returns a file descriptor (always close-on-exec) that refers to a process, \
        or with PIDFD_THREAD to one thread. The descriptor keeps naming that process after it \
        exits, so signalling or reaping through it cannot hit a process that reused the pid, \
        and it polls readable when the process exits. It is the handle that \
        pidfd_send_signal, process_mrelease and process_madvise take.",
    args: &[
        "the process to open (a thread-group leader, or any thread with PIDFD_THREAD), as the \
         caller's pid namespace numbers it; must be positive",
        "0, PIDFD_NONBLOCK (waitid on it does not block) and/or PIDFD_THREAD",
    ],
    errnos: &[
        ("EINVAL", "unknown flags, or pid is not positive"),
        (
            "EMFILE",
            "the process's open file descriptor limit is reached",
        ),
        ("ENFILE", "the system-wide open file limit is reached"),
        (
            "ENOENT",
            "pid is a thread that does not lead its thread group and PIDFD_THREAD was not \
             given (Linux 6.15 and later; older kernels say EINVAL)",
        ),
        ("ENOMEM", "no memory for the new file"),
        (
            "ESRCH",
            "no such pid in the caller's pid namespace, or the process has already been reaped",
        ),
    ],
    use_case: "See which tools take process handles: OOM killers and supervisors open a \
        pidfd per candidate, and the returned descriptor is the pidfd argument of the \
        pidfd_send_signal or process_mrelease that follows.",
    pitfalls: &[
        "pid is read in the caller's pid namespace; inside a container the number names a \
         different process than on the host.",
        "Opening by pid races with pid reuse just as kill does: the pid must be known to \
         belong to the intended process when pidfd_open runs, for example an unreaped child.",
        "A zombie can still be opened; ESRCH comes only once it has been reaped.",
    ],
    related: &["pidfd_send_signal", "process_mrelease", "process_madvise"],
    no_example: None,
};

pub static PROCESS_MADVISE: EventDoc = EventDoc {
    description: "Applies one madvise advice to a list of address ranges in the process a \
        pidfd refers to. For another process only MADV_COLD, MADV_PAGEOUT, MADV_WILLNEED and \
        MADV_COLLAPSE are allowed, and the caller needs CAP_SYS_NICE and ptrace read access \
        to the target; for its own address space recent kernels accept any advice madvise \
        does. It returns how many bytes were advised.",
    args: &[
        "the target process",
        "the ranges to advise, an array of struct iovec in the caller's memory",
        "how many iovec entries; at most 1024",
        "the MADV_ value to apply to every range",
        "must be 0",
    ],
    errnos: &[
        (
            "EACCES",
            "the caller may not read the target as ptrace would (PTRACE_MODE_READ)",
        ),
        (
            "EAGAIN",
            "MADV_COLLAPSE met a passing failure before any range was advised",
        ),
        ("EBADF", "pidfd is not a pidfd"),
        ("EFAULT", "the iovec array is unreadable"),
        (
            "EINTR",
            "a fatal signal arrived while waiting for the target's exec or address-space lock",
        ),
        (
            "EINVAL",
            "flags not 0, vlen above 1024, an unknown advice, an advice not allowed on another \
             process, or a misaligned range",
        ),
        (
            "ENOMEM",
            "the first range is not mapped, or no memory to copy the iovec array",
        ),
        ("EPERM", "advising another process without CAP_SYS_NICE"),
        (
            "ESRCH",
            "the target has exited, or has no address space left",
        ),
    ],
    use_case: "Watch proactive reclaim: Android's activity manager compacts cached apps with \
        MADV_COLD and MADV_PAGEOUT through process_madvise, and userspace memory managers do \
        the same; returnValue shows how much each call advised.",
    pitfalls: &[
        "returnValue counts bytes advised, not bytes reclaimed: MADV_PAGEOUT skips pages it \
         cannot reclaim and counts them anyway.",
        "A failure after the first range returns the bytes done so far, not an errno: compare \
         returnValue with the total length of the ranges.",
        "vec is read from the caller's memory during the call; mmtrace records the pointer, \
         not the ranges.",
    ],
    related: &["madvise", "pidfd_open", "process_mrelease"],
    no_example: None,
};

pub static MEMFD_SECRET: EventDoc = EventDoc {
    description: "Creates a file descriptor for secret memory. Once mapped with MAP_SHARED and \
        touched, its pages are removed from the kernel's direct map, so neither other \
        processes nor the kernel's own accesses through the direct map can read them; they \
        are also locked, never swapped and left out of core dumps. While any secret memory \
        exists, hibernation is refused.",
    args: &["0 or O_CLOEXEC; nothing else is allowed"],
    errnos: &[
        ("EINVAL", "flags other than O_CLOEXEC"),
        (
            "EMFILE",
            "the process's open file descriptor limit is reached",
        ),
        (
            "ENFILE",
            "the system-wide open file limit is reached, or the count of secret memory users \
             overflowed",
        ),
        ("ENOMEM", "no memory for the new file"),
        (
            "ENOSYS",
            "secret memory is off: the kernel was built without CONFIG_SECRETMEM, booted with \
             secretmem.enable=0, or cannot remove pages from its direct map",
        ),
    ],
    use_case: "Find processes that keep secrets out of the kernel's reach, such as key agents \
        and cryptographic libraries that support it; each call is followed by an ftruncate and \
        a MAP_SHARED mmap of the returned descriptor.",
    pitfalls: &[
        "The memory limit bites at mmap, not here: mapping the descriptor charges \
         RLIMIT_MEMLOCK as mlock does and fails with EAGAIN past it.",
        "Only MAP_SHARED mappings of it work; MAP_PRIVATE fails with EINVAL.",
        "ENOSYS does not mean an old kernel: a kernel that has the syscall returns it when \
         secret memory is off, and mmtrace list still shows the event as available.",
    ],
    related: &["mmap", "mlock", "mseal"],
    no_example: None,
};

pub static PROCESS_MRELEASE: EventDoc = EventDoc {
    description: "Reaps the address space of a process that is already dying: it frees the \
        victim's private memory at once, on the caller's CPU, at the caller's priority and \
        charged to the caller's CPU time, instead of waiting for the victim to be scheduled \
        and run its own exit path. Userspace OOM killers (Android lmkd, Meta oomd, earlyoom \
        since 1.8; systemd-oomd does not use it) send SIGKILL through a pidfd and then call \
        process_mrelease on the same pidfd. It does the work of the kernel's OOM reaper but \
        fires none of the tracepoints of the oom group (oom:mark_victim and the others).",
    args: &[
        "a pidfd of the victim (from pidfd_open or clone with CLONE_PIDFD); a /proc/PID \
         directory is refused",
        "must be 0",
    ],
    errnos: &[
        (
            "EAGAIN",
            "part of the address space could not be reaped without blocking (a driver with MMU \
             notifiers, such as KVM, holds it); calling again may finish the job",
        ),
        ("EBADF", "pidfd is not an open descriptor, or not a pidfd"),
        (
            "EINTR",
            "a fatal signal arrived while waiting for the victim's address-space lock",
        ),
        (
            "EINVAL",
            "flags is not 0; or the victim is not dying (no fatal signal yet, or it handles \
             SIGTERM), is dumping core, or shares its memory with a live process outside its \
             thread group",
        ),
        (
            "ESRCH",
            "no thread of the victim still holds its memory: it has passed that point of its \
             exit, or has been reaped",
        ),
    ],
    use_case: "Measure a userspace OOM killer: trace the oom set (`-e tag=oom`) and read the \
        pidfd_send_signal with SIGKILL and the process_mrelease on the same pidfd; the time \
        from the first's timestamp to the end of the second is how long the system waited \
        for memory. On the project's 2-core VM a 2 GiB victim was reaped in 150 to 300 ms, \
        while a victim starved of CPU kept its memory for over 30 s with the kill alone.",
    pitfalls: &[
        "EINVAL when the victim handles SIGTERM: only a fatal signal makes a process dying, so \
         a killer that sends SIGTERM first and then calls process_mrelease gets EINVAL from \
         every victim that catches or ignores SIGTERM (a real earlyoom bug). SIGTERM without \
         a handler is fatal and works.",
        "ESRCH race: a victim that gets a CPU first runs its own exit, and once it has let go \
         of its memory there is nothing left to reap: process_mrelease returns ESRCH although \
         the kill worked, and the victim's exit frees the memory, perhaps still doing so.",
        "No mlocked memory is reaped before Linux 5.18: a victim that locked its memory \
         (mlockall) keeps it until its own exit runs.",
        "0 does not prove this call freed anything: it also returns 0 when the victim's exit \
         or the kernel's OOM reaper already did the work.",
    ],
    related: &[
        "pidfd_send_signal",
        "pidfd_open",
        "process_madvise",
        "mlockall",
    ],
    no_example: None,
};

pub static MSEAL: EventDoc = EventDoc {
    description: "Seals the mappings in [addr, addr+len) for the rest of the process's life: \
        they can no longer be unmapped, moved or resized (munmap, mremap), mapped over \
        (mmap with MAP_FIXED), have their protection changed (mprotect, pkey_mprotect), or \
        have read-only anonymous contents discarded (madvise); those calls fail with EPERM. \
        A seal cannot be removed; it is kept across fork and ends with exec.",
    args: &[
        "start of the range, page-aligned",
        "bytes, rounded up to whole pages; 0 does nothing",
        "must be 0",
    ],
    errnos: &[
        EINTR_LOCK,
        (
            "EINVAL",
            "flags not 0, addr not page-aligned, or addr plus len overflows",
        ),
        (
            "ENOMEM",
            "part of the range is not mapped, or splitting a mapping failed",
        ),
    ],
    use_case: "Check that hardening is in place: a process that seals its code and read-only \
        data shows one mseal per region at start-up, and later EPERM failures of munmap, \
        mprotect or mremap on those ranges are the seal at work, or an attack stopped.",
    pitfalls: &[
        "Sealing an already sealed range succeeds and changes nothing.",
        "Sealed memory is freed only at exit or exec: a program that seals heap mappings can \
         never give them back.",
        "Failures caused by a seal show as EPERM on the other calls, never on mseal itself.",
        "Only 64-bit kernels have it, and Tracee has no mseal event.",
    ],
    related: &["mprotect", "munmap", "mremap", "madvise", "mmap"],
    no_example: None,
};

pub static KILL: EventDoc = EventDoc {
    description: "Sends a signal to the process pid names: to its process group when pid is 0 \
        or negative (-pid), to every process the caller may signal when it is -1. Signal 0 \
        only checks that the target exists and may be signalled. Unlike pidfd_send_signal it \
        names the target by number, which may by then belong to another process.",
    args: &[
        "the target: a pid, 0 for the caller's process group, -1 for all it may signal, or \
         -PGID",
        "the signal; 0 checks without sending",
    ],
    errnos: &[
        ("EINVAL", "sig is not a valid signal number"),
        (
            "EPERM",
            "the caller may not signal the target (or any of the group)",
        ),
        ("ESRCH", "no process or process group has that pid"),
    ],
    use_case: "See the kill of a userspace OOM killer that does not use pidfds, and join it \
        with the victim's exit; or find who sends SIGKILL to a service.",
    pitfalls: &[
        "A pid can be reused between reading it and the kill: that race is why \
         pidfd_send_signal exists.",
        "kill(pid, 0) is a probe, not a kill: it shows up as often as monitors poll.",
    ],
    related: &[
        "pidfd_send_signal",
        "pidfd_open",
        "process_mrelease",
        "sched_process_exit",
    ],
    no_example: None,
};

pub static OOM_MARK_VICTIM: EventDoc = EventDoc {
    description: "The kernel's OOM killer, out of memory in the whole system or in a memory \
        cgroup, has chosen the process with the highest badness (its memory, weighed by \
        oom_score_adj) and is killing it with SIGKILL. The event fires in the context of the \
        task whose allocation failed, so processId and processName are the allocator's; the \
        victim is in target. Its memory counts are a snapshot at the kill: total_vm and the \
        three rss counters in kB.",
    args: &[
        "the victim's pid, as the host numbers it",
        "the victim's address space size, kB",
        "its resident anonymous memory, kB",
        "its resident file-backed memory, kB",
        "its resident shared memory, kB",
        "the victim's user id",
        "memory in its page tables, kB",
        "its oom_score_adj, -1000 to 1000",
    ],
    errnos: &[],
    use_case: "Tell kernel OOM kills from userspace ones: a mark_victim with its reaping and \
        the victim's sched_process_exit is the kernel's doing, while a pidfd_send_signal and a \
        process_mrelease is an OOM daemon's.",
    pitfalls: &[
        "Fields beyond pid exist only since Linux 6.9.",
        "A memory cgroup's OOM kill fires it too, when the group reaches memory.max or \
         memory.limit_in_bytes: the machine may have plenty of free memory. limit says which \
         limit fired, from the kernel's own report of the kill, and needs /dev/kmsg readable \
         (root, or CAP_SYSLOG when kernel.dmesg_restrict is 1).",
        "The kernel reports at most 10 OOM kills in 5 s (it rate-limits the report, not the \
         kills): a kill beyond that has limit.scope unknown.",
        "Userspace OOM killers (lmkd, oomd, earlyoom) never fire it: they kill with signals.",
    ],
    related: &[
        "oom_start_task_reaping",
        "oom_finish_task_reaping",
        "sched_process_exit",
        "process_mrelease",
    ],
    no_example: None,
};

pub static OOM_START_TASK_REAPING: EventDoc = EventDoc {
    description: "The kernel's OOM reaper thread (oom_reaper) starts unmapping a victim's \
        private memory without waiting for the victim to run its own exit, which may be \
        stuck on a lock. It is what process_mrelease does for userspace killers.",
    args: &["the victim's pid, as the host numbers it"],
    errnos: &[],
    use_case: "Measure how long after mark_victim the kernel began reclaiming, and with \
        oom_finish_task_reaping, how long reaping took.",
    pitfalls: &[
        "The context is the oom_reaper kernel thread, not the victim.",
        "Often none fires: the reaper waits two seconds, and a victim that has exited by then \
         is left alone without any reaping event.",
    ],
    related: &[
        "oom_mark_victim",
        "oom_finish_task_reaping",
        "oom_skip_task_reaping",
    ],
    no_example: Some(REAPER_UNPROVOKED),
};

pub static OOM_FINISH_TASK_REAPING: EventDoc = EventDoc {
    description: "The OOM reaper has unmapped what it could of a victim's memory. Memory the \
        reaper cannot touch (mlocked before 5.18, or held by drivers) stays until the victim \
        exits.",
    args: &["the victim's pid, as the host numbers it"],
    errnos: &[],
    use_case: "Close the kill-to-memory-back timeline of a kernel OOM kill.",
    pitfalls: &[
        "Finishing does not mean every page came back: compare with the victim's \
        sched_process_exit.",
    ],
    related: &[
        "oom_start_task_reaping",
        "oom_mark_victim",
        "sched_process_exit",
    ],
    no_example: Some(REAPER_UNPROVOKED),
};

pub static OOM_SKIP_TASK_REAPING: EventDoc = EventDoc {
    description: "The OOM reaper found a victim's memory already marked as not to be reaped \
        (MMF_OOM_SKIP), typically because the victim is tearing its own address space down \
        right then. A victim that has finished exiting before the reaper's two-second delay \
        fires nothing at all.",
    args: &["the victim's pid, as the host numbers it"],
    errnos: &[],
    use_case: "Explain a kernel OOM kill that freed less memory than expected.",
    pitfalls: &["A skip means the victim is freeing its own memory: normal, not a failure."],
    related: &["oom_start_task_reaping", "oom_mark_victim"],
    no_example: Some(REAPER_UNPROVOKED),
};

pub static SCHED_PROCESS_EXIT: EventDoc = EventDoc {
    description: "A whole process exits (its last thread), in scope like any event. mmtrace \
        reads the memory it still held at that moment: since Linux 6.16 the tracepoint fires \
        before the process lets go of its address space, so anon, file and shmem are what its \
        exit is about to free, in bytes.",
    args: &[
        "the exit status the process passed to exit(), as Tracee reads it: task->exit_code \
         >> 8 (0 when a signal killed it)",
        "the signal that killed it, as Tracee reads it: the low byte of task->exit_code, with \
         0x80 added when it dumped core; 0 for a normal exit",
        "true: mmtrace reports only the exit of a whole process, the last of its threads",
        "resident anonymous memory still held, bytes",
        "resident file-backed memory still held, bytes",
        "resident shared memory still held, bytes",
    ],
    errnos: &[],
    use_case: "End a kill-and-reap timeline: the victim's exit shows how much memory it still \
        held after process_mrelease or the OOM reaper, which is what the reaping missed.",
    pitfalls: &[
        "Threads exiting alone are not reported, only the process.",
        "Before Linux 6.16 the memory has already been released when it fires: anon, file and \
         shmem then read 0.",
    ],
    related: &[
        "exit_mmap",
        "oom_mark_victim",
        "process_mrelease",
        "pidfd_send_signal",
    ],
    no_example: None,
};

pub static EXIT_MMAP: EventDoc = EventDoc {
    description: "A process has torn its address space down: the kernel's exit_mmap() has \
        unmapped every mapping and freed the pages and page tables, so the memory the process \
        held is back (file pages stay in the page cache, and shared pages while others map them). \
        It fires at the \
        end of the teardown, in the context of the exiting process's last thread to let go of \
        the address space, and is in scope like any event. Since Linux 6.16 the process's \
        sched_process_exit comes before it, when the teardown has not begun; before 6.16, \
        after it.",
    args: &[
        "the size of the address space torn down, bytes: its total_vm, what VmSize in \
        /proc/PID/status showed, mapped and unmapped pages alike",
    ],
    errnos: &[],
    use_case: "End a kill-to-memory-back timeline where neither process_mrelease nor the OOM \
        reaper freed the memory: `mmtrace analyze` counts the memory back from the fatal \
        signal to this event (\"by teardown\") instead of the exit's start, which comes before \
        any memory is freed.",
    pitfalls: &[
        "Only a process's own teardown is reported, when it exits. Exec frees the old address \
         space too, but the process lives on: that teardown is not reported.",
        "When another process holds the last reference to the address space at the exit (a \
         /proc reader, khugepaged), that holder runs the teardown a little later \
         and nothing is reported: the analysis then falls back on the exit's start.",
        "Processes that share one address space without being threads (CLONE_VM) tear it down \
         once, in the last of them to exit: the event names that one.",
        "After process_mrelease or the OOM reaper the pages are already gone: the event still \
         comes, when the rest (page tables, mapping structures) is freed.",
        "Kernels before 6.1 have no mmap:exit_mmap tracepoint: `mmtrace list` shows the event \
         as not available there, and the analysis falls back on the exit's start.",
    ],
    related: &[
        "sched_process_exit",
        "process_mrelease",
        "oom_finish_task_reaping",
    ],
    no_example: None,
};

pub static MEM_PROT_ALERT: EventDoc = EventDoc {
    description: "Raised after a successful call that leaves memory writable and executable or \
        makes it executable: mmap with PROT_WRITE|PROT_EXEC, and mprotect or pkey_mprotect \
        adding PROT_EXEC, going from executable to writable and executable, or from writable \
        to executable. These are Tracee's four alerts, with Tracee's texts and arguments. \
        Tracee raises it from LSM hooks; mmtrace raises it from the call's own record and the \
        mapping the kernel side read before an mprotect, so it follows that call's line, \
        with the same context.",
    args: &[
        "which of Tracee's four alerts, as Tracee's text: \"Mmaped region with W+E \
         permissions!\", \"Protection changed to Executable!\", \"Protection changed from E \
         to W+E!\" or \"Protection changed from W to E!\"",
        "start of the range: where mmap placed the mapping, or mprotect's addr",
        "bytes in the range, as the call asked",
        "the protection the call set",
        "the protection of the mapping before the call (0 for mmap: there was none)",
        "the file mapped there, empty for anonymous memory or when the mapping was not read \
         (--no-enrich)",
        "the file's device: 0, not gathered yet",
        "the file's inode: 0, not gathered yet",
        "the file's inode change time: 0, not gathered yet",
    ],
    errnos: &[],
    use_case: "Catch code injection and unpacking: shellcode loaders and packers map or flip \
        memory to executable after writing it. `-e mem_prot_alert` traces the three calls but \
        prints only the alerts.",
    pitfalls: &[
        "JIT runtimes (V8, the JVM, .NET, LuaJIT) raise it all the time; scope them out with \
         -s comm!=NAME rather than reading every alert.",
        "An mprotect alert needs the mapping read before the call: with --no-enrich only \
         mmap's alert is raised.",
        "An mprotect over several mappings is judged by the first one, at addr.",
    ],
    related: &["mmap", "mprotect", "pkey_mprotect"],
    no_example: None,
};

#[cfg(test)]
mod tests {
    use crate::catalog::{by_name, CATALOG};
    use crate::decode::errno_number;

    /// The errnos each call can return, read from the Linux 6.18 sources; the documented
    /// list must match it exactly, so no error is missing and none is invented.
    fn kernel_errnos(event: &str) -> &'static [&'static str] {
        match event {
            // arch/x86/kernel/sys_x86_64.c (EINVAL for off), mm/mmap.c ksys_mmap_pgoff (EBADF,
            // EINVAL for MAP_HUGETLB), mm/util.c vm_mmap_pgoff (security_mmap_file EACCES and
            // EPERM, mmap_write_lock_killable EINTR), do_mmap (EINVAL, ENOMEM, EOVERFLOW,
            // EEXIST, EPERM for MAP_LOCKED and noexec, EAGAIN from mlock_future_ok, EACCES,
            // ETXTBSY for swap files, ENODEV, EOPNOTSUPP for MAP_SHARED_VALIDATE),
            // shmem_zero_setup and hugetlb_file_setup (ENFILE), mm/vma.c (EPERM on sealed).
            "mmap" => &[
                "EACCES",
                "EAGAIN",
                "EBADF",
                "EEXIST",
                "EINTR",
                "EINVAL",
                "ENFILE",
                "ENODEV",
                "ENOMEM",
                "EOPNOTSUPP",
                "EOVERFLOW",
                "EPERM",
                "ETXTBSY",
            ],
            // mm/mprotect.c do_mprotect_pkey: EINVAL, ENOMEM, EINTR, EACCES (VM_MAY* bits,
            // map_deny_write_exec, security_file_mprotect), EPERM from mprotect_fixup on a
            // sealed VMA; pkey_mprotect adds EINVAL for an unallocated key.
            "mprotect" | "pkey_mprotect" => &["EACCES", "EINTR", "EINVAL", "ENOMEM", "EPERM"],
            // mm/vma.c do_vmi_munmap (EINVAL), do_vmi_align_munmap (ENOMEM on split or
            // map_count, EPERM on sealed), __vm_munmap (EINTR).
            "munmap" => &["EINTR", "EINVAL", "ENOMEM", "EPERM"],
            // mm/mmap.c SYSCALL_DEFINE1(brk): mmap_write_lock_killable is the only -errno;
            // every other failure returns the old break.
            "brk" => &["EINTR"],
            // mm/mremap.c: check_mremap_params (EINVAL), check_prep_vma (EFAULT, EINVAL,
            // EAGAIN from mlock_future_ok, ENOMEM from may_expand_vm), sealed VMA (EPERM),
            // mmap_write_lock_killable (EINTR), expansion and move failures (ENOMEM).
            "mremap" => &["EAGAIN", "EFAULT", "EINTR", "EINVAL", "ENOMEM", "EPERM"],
            // mm/madvise.c: madvise_do_behavior and the per-advice handlers; restart_syscall()
            // in madvise_guard_install is the ERESTARTNOINTR a sys_exit tracepoint sees.
            "madvise" => &[
                "EACCES",
                "EAGAIN",
                "EBADF",
                "EBUSY",
                "EFAULT",
                "EHWPOISON",
                "EINTR",
                "EINVAL",
                "EIO",
                "ENOMEM",
                "EOPNOTSUPP",
                "EPERM",
                "ERESTARTNOINTR",
            ],
            // mm/mlock.c do_mlock: can_do_mlock (EPERM), mmap_write_lock_killable (EINTR),
            // apply_vma_lock_flags (EINVAL, ENOMEM), __mlock_posix_error_return (EFAULT to
            // ENOMEM, ENOMEM to EAGAIN) on __mm_populate, which passes EINTR through; mlock2
            // adds EINVAL for flags.
            "mlock" | "mlock2" => &["EAGAIN", "EINTR", "EINVAL", "ENOMEM", "EPERM"],
            // mm/mlock.c munlock: mmap_write_lock_killable, apply_vma_lock_flags.
            "munlock" => &["EINTR", "EINVAL", "ENOMEM"],
            // mm/mlock.c mlockall: flag check, can_do_mlock, lock, total_vm against the limit;
            // mm_populate's errors are ignored.
            "mlockall" => &["EINTR", "EINVAL", "ENOMEM", "EPERM"],
            // mm/mlock.c munlockall: apply_mlockall_flags(0) cannot fail.
            "munlockall" => &["EINTR"],
            // kernel/signal.c pidfd_send_signal and do_pidfd_send_signal (EINVAL, EBADF,
            // EFAULT, EPERM), kill_pid_info_type and check_kill_permission (EINVAL, EPERM,
            // ESRCH), __send_signal_locked (EAGAIN for a full real-time queue).
            "pidfd_send_signal" => &["EAGAIN", "EBADF", "EFAULT", "EINVAL", "EPERM", "ESRCH"],
            // kernel/pid.c pidfd_open (EINVAL, ESRCH), kernel/fork.c pidfd_prepare (ESRCH,
            // ENOENT, get_unused_fd EMFILE), pidfs_alloc_file (ENFILE, ENOMEM).
            "pidfd_open" => &["EINVAL", "EMFILE", "ENFILE", "ENOENT", "ENOMEM", "ESRCH"],
            // mm/madvise.c process_madvise: flags, import_iovec (EINVAL, EFAULT, ENOMEM),
            // pidfd_get_task (EBADF, ESRCH), mm_access (EINTR, EACCES, ESRCH),
            // process_madvise_remote_valid (EINVAL), CAP_SYS_NICE (EPERM), vector_madvise.
            "process_madvise" => &[
                "EACCES", "EAGAIN", "EBADF", "EFAULT", "EINTR", "EINVAL", "ENOMEM", "EPERM",
                "ESRCH",
            ],
            // mm/secretmem.c memfd_secret: secretmem_enable and can_set_direct_map (ENOSYS),
            // flags (EINVAL), secretmem_users (ENFILE), get_unused_fd_flags (EMFILE),
            // secretmem_file_create (ENOMEM, ENFILE).
            "memfd_secret" => &["EINVAL", "EMFILE", "ENFILE", "ENOMEM", "ENOSYS"],
            // mm/oom_kill.c process_mrelease: flags (EINVAL), pidfd_get_task (EBADF, ESRCH),
            // find_lock_task_mm (ESRCH), task_will_free_mem (EINVAL),
            // mmap_read_lock_killable (EINTR), __oom_reap_task_mm (EAGAIN).
            "process_mrelease" => &["EAGAIN", "EBADF", "EINTR", "EINVAL", "ESRCH"],
            // mm/mseal.c do_mseal: flags and alignment (EINVAL), mmap_write_lock_killable
            // (EINTR), range_contains_unmapped and vma_modify_flags (ENOMEM).
            "mseal" => &["EINTR", "EINVAL", "ENOMEM"],
            // kill_something_info, check_kill_permission, the group and pid lookups.
            "kill" => &["EINVAL", "EPERM", "ESRCH"],
            // Kernel events are not calls: nothing fails.
            "oom_mark_victim"
            | "oom_start_task_reaping"
            | "oom_finish_task_reaping"
            | "oom_skip_task_reaping"
            | "sched_process_exit"
            | "exit_mmap" => &[],
            other => panic!("{other} has no kernel errno list here: read its source and add one"),
        }
    }

    #[test]
    fn every_event_has_every_section() {
        for e in CATALOG {
            let d = e.doc;
            assert!(d.description.len() > 80, "{}: description", e.name);
            assert!(!d.use_case.is_empty(), "{}: use case", e.name);
            assert!(!d.pitfalls.is_empty(), "{}: pitfalls", e.name);
            assert!(d.pitfalls.iter().all(|p| !p.is_empty()), "{}", e.name);
            assert!(!d.related.is_empty(), "{}: related", e.name);
            assert_eq!(
                d.args.len(),
                e.args.len(),
                "{}: one text per argument",
                e.name
            );
            assert!(d.args.iter().all(|a| !a.is_empty()), "{}", e.name);
            let call = matches!(e.source, crate::catalog::Source::Syscall { .. });
            assert_eq!(
                !d.errnos.is_empty(),
                call,
                "{}: errors exactly for calls",
                e.name
            );
            for (name, meaning) in d.errnos {
                assert!(!meaning.is_empty(), "{} {name}", e.name);
            }
        }
    }

    #[test]
    fn errnos_are_the_ones_the_kernel_returns() {
        for e in CATALOG {
            let documented: Vec<&str> = e.doc.errnos.iter().map(|&(n, _)| n).collect();
            for name in &documented {
                assert!(
                    errno_number(name).is_some(),
                    "{}: {name} is no errno",
                    e.name
                );
            }
            let mut sorted = documented.clone();
            sorted.sort_unstable();
            assert_eq!(documented, sorted, "{}: keep errnos sorted", e.name);
            assert_eq!(documented, kernel_errnos(e.name), "{}", e.name);
        }
    }

    #[test]
    fn related_events_exist() {
        for e in CATALOG {
            for r in e.doc.related {
                assert!(
                    by_name(r).is_some(),
                    "{}: unknown related event {r}",
                    e.name
                );
                assert_ne!(*r, e.name, "{}: related to itself", e.name);
            }
        }
    }
}

//! Command-line syntax: the subcommands and their options.

use clap::{Args, Parser, Subcommand};

/// Where `serve` listens unless told: loopback, as exposing a node's port is the user's choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// The version and the commit it was built from (build.rs), as `--version` and serve's
/// `mmtrace_build_info` give them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MMTRACE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "mmtrace",
    version = VERSION,
    about = "Trace what Linux processes do with memory: mmap, mlock, process_mrelease and friends, decoded, cheaply"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace memory-management syscalls until Ctrl-C, SIGTERM or SIGHUP (or until CMD ends),
    /// then print a summary.
    Trace(TraceArgs),
    /// List every event with its id, sets, arguments and whether this kernel offers it.
    List,
    /// Explain one event: what the call does, arguments, errors, hooks, pitfalls, an example;
    /// or one detection (MMT-004): what it means, what raises it, what to do.
    Explain {
        /// The event, as `mmtrace list` names it, or a detection's id, as `analyze` gives it.
        event: String,
    },
    /// Write the event reference, README.md and one EVENT.md per event, into DIR.
    #[command(hide = true)]
    Docs {
        /// Where to write the pages; created if missing.
        dir: std::path::PathBuf,
    },
    /// Analyze a recording made with `mmtrace trace -o json:FILE`: locked memory per process,
    /// failed calls, kill-and-reap timelines and detections.
    Analyze {
        /// The JSON-lines recording; - for standard input.
        file: std::path::PathBuf,
        /// Report format.
        #[arg(long = "format", value_enum, default_value = "text")]
        format: crate::analyze::Format,
        /// Also draw the calls by call stack (a recording made with `trace --stack`) as a
        /// flame graph into this SVG file.
        #[arg(long = "flamegraph", value_name = "OUT.svg")]
        flamegraph: Option<std::path::PathBuf>,
        /// What the flame graph's widths measure.
        #[arg(
            long = "weight",
            value_enum,
            default_value = "bytes",
            requires = "flamegraph"
        )]
        weight: crate::analyze::Weight,
    },
    /// Kill PID as a userspace OOM killer does (pidfd_open, signal through the pidfd,
    /// process_mrelease, wait) and report how much memory came back and how fast.
    Reap {
        /// The process to kill.
        pid: i32,
        /// The signal to send (name or number).
        #[arg(long = "signal", value_name = "SIG", default_value = "KILL")]
        signal: String,
        /// Only kill: skip process_mrelease, to measure what it buys.
        #[arg(long = "no-release")]
        no_release: bool,
        /// Kill PID even when it is an ancestor of mmtrace (the shell that runs it, say).
        /// Kernel threads, pid 1 and mmtrace itself are refused all the same.
        #[arg(long = "force")]
        force: bool,
    },
    /// Count memory-management calls in the kernel and serve the counts to Prometheus at
    /// http://ADDR/metrics (and /healthz) until SIGTERM, SIGINT or SIGHUP.
    Serve(ServeArgs),
    /// A live view in the terminal, refreshed each second: the processes or containers busiest
    /// in memory syscalls, their locked memory and RSS, failures, recent kills and detections.
    Top(TopArgs),
    /// Write the detection reference, README.md and one ID.md per detection, into DIR.
    #[command(hide = true)]
    DocsDetections {
        /// Where to write the pages; created if missing.
        dir: std::path::PathBuf,
    },
    /// Print the shell completion script for SHELL (`mmtrace completions bash >
    /// /etc/bash_completion.d/mmtrace`); the Debian package installs bash's, zsh's and fish's.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages, mmtrace.1 and mmtrace-COMMAND.1 for each command, into DIR.
    #[command(hide = true)]
    DocsMan {
        /// Where to write the pages; created if missing.
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub who: WhoAndWhat,

    /// Run CMD as this user, a name or a numeric uid (mmtrace itself runs as root, as under sudo).
    #[arg(long = "user", value_name = "USER", requires = "command")]
    pub user: Option<String>,

    /// Start CMD and trace it and all its descendants from its first instruction; mmtrace
    /// passes SIGINT, SIGTERM and SIGHUP on to it and exits with CMD's exit status. CMD's
    /// stdout goes to stderr when the events go to stdout.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Output: table, json or none, optionally :PATH; repeat it for several outputs of the
    /// same events (at most one on stdout). Default: table on a terminal, else json.
    #[arg(short = 'o', long = "output", value_name = "FORMAT[:PATH]", action = clap::ArgAction::Append)]
    pub output: Vec<String>,

    /// Ring buffer size (power of two, at least 4K; suffixes K, M, G). Raise it if events are lost.
    #[arg(long = "buffer-size", value_name = "SIZE", default_value = "8M")]
    pub buffer_size: String,

    /// Record the calls alone, the cheapest trace: no pidfd targets, freed or locked memory or
    /// mapping kinds, which the kernel side otherwise gathers at each call (and so no mprotect alerts).
    #[arg(long = "no-enrich")]
    pub no_enrich: bool,

    /// Record each call's user stack (by frame pointers, up to 32 frames) and symbolize it:
    /// `stackAddresses` and `stack` in JSON, the caller outside libc in the table.
    #[arg(long = "stack")]
    pub stack: bool,

    /// List every event traced in the exit summary, those that saw no call too; by default,
    /// as strace -c, only those with a call seen, lost or filtered out.
    #[arg(long = "summary-all")]
    pub summary_all: bool,

    /// Also give each event's duration distribution in the exit summary: its percentiles and
    /// its log2 histogram, as bpftrace's hist() draws one.
    #[arg(long = "summary")]
    pub summary: bool,

    /// Analyze the events as they come and print the report at exit, as `mmtrace analyze`
    /// would for the recording: on stdout, or on stderr when the events go to stdout.
    #[arg(long = "analyze")]
    pub analyze: bool,

    /// Format of the --analyze report.
    #[arg(
        long = "format",
        value_enum,
        default_value = "text",
        requires = "analyze"
    )]
    pub format: crate::analyze::Format,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, IP:PORT (port 0: any free port, named in the start line).
    #[arg(long = "listen", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Count calls without timing them: most calls are then counted at their exit alone, for
    /// about a third of the cost per call (BENCHMARKS.md); kills and process_mrelease are
    /// still timed.
    #[arg(long = "no-durations")]
    pub no_durations: bool,

    /// Seconds the series of a container that has ended are still served; then they are
    /// dropped, and their room in the kernel's table (16384 series) is free again.
    #[arg(long = "forget-after", value_name = "SECONDS", default_value_t = 300)]
    pub forget_after: u64,

    #[command(flatten)]
    pub who: WhoAndWhat,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub who: WhoAndWhat,

    /// Ring buffer size (power of two, at least 4K; suffixes K, M, G). Raise it if events are lost.
    #[arg(long = "buffer-size", value_name = "SIZE", default_value = "8M")]
    pub buffer_size: String,
}

/// Which calls (-e) of which processes (-s), and the runtimes that name containers (--cri):
/// trace's, serve's and top's.
#[derive(Debug, Args)]
pub struct WhoAndWhat {
    /// Events to trace: names, -NAME to exclude, tag=SET, PREFIX*; comma separated. Default: all.
    /// Filters, one per flag: EVENT.data.ARG OP VALUES or EVENT.retval OP VALUES, OP among
    /// = != < > <= >= (munmap.retval=-EINVAL, mlock2.data.flags=MLOCK_ONFAULT, mmap.data.length>=2M).
    // Values may start with '-' (`-e -mlock`, an exclusion), as the syntax above promises.
    #[arg(short = 'e', long = "events", value_name = "LIST", action = clap::ArgAction::Append, allow_hyphen_values = true)]
    pub events: Vec<String>,

    /// Which processes, one condition per flag, all applying: pid, tid, uid with = != < > <= >=;
    /// comm=NAMES, comm!=NAMES, executable=PATHS, executable!=PATHS, tree=PIDS, cgroup=PATH|ID,
    /// container=IDS (unique prefixes, of running or created containers), container=new
    /// (containers started from now on),
    /// container (in a pid namespace of its own), not-container, follow.
    #[arg(short = 's', long = "scope", value_name = "EXPR", action = clap::ArgAction::Append)]
    pub scope: Vec<String>,

    /// Where a container runtime answers, RUNTIME:SOCKET (docker, podman, crio, containerd),
    /// for containers' names, images and pods; repeat it for several. The default sockets
    /// are asked as well.
    #[arg(long = "cri", value_name = "RUNTIME:SOCKET", action = clap::ArgAction::Append)]
    pub cri: Vec<String>,
}

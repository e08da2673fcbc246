//! Types shared by the kernel programs (`collector-ebpf`) and the agent (`collector`).
//!
//! Everything here is `#[repr(C)]` with explicit padding: the kernel writes these bytes and
//! the agent reads them back out of maps, so both sides must agree on the layout exactly.
#![no_std]

pub mod events;
pub mod histogram;
pub mod http;
pub mod sched;
pub mod sockets;

/// Target ids as stored in the kernel: `0` means "not a target", so a zeroed map slot is
/// never mistaken for target 0. The agent converts with [`TargetId::slot`] / [`TargetId::from_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(pub u32);

impl TargetId {
    pub const fn slot(self) -> u32 {
        self.0 + 1
    }

    pub const fn from_slot(slot: u32) -> Option<Self> {
        match slot {
            0 => None,
            s => Some(TargetId(s - 1)),
        }
    }
}

/// Set in a `TARGET_OF` value that came from `--pid` (the named process or one of its
/// descendants): an explicit PID outranks any cgroup, so cgroup moves leave such a value
/// alone. The rest of the value is the [`TargetId::slot`].
pub const PID_TREE: u32 = 1 << 31;

/// The `TARGET_OF` value of a process that left its target (moved out of its cgroup, or
/// dropped by the agent): no target, but its threads may hold `ENTRY` slots with entries
/// made while they were one, which `sys_exit` clears. A process that never was a target has
/// no `TARGET_OF` entry, and its syscalls pay no slot lookup at all.
pub const LEFT_TARGET: u32 = 1 << 30;

/// The [`TargetId::slot`] in a `TARGET_OF` value.
pub const fn target_slot(value: u32) -> u32 {
    value & !(PID_TREE | LEFT_TARGET)
}

/// A target thread's state between `sys_enter` and `sys_exit`, in the `ENTRY` slot the
/// thread holds for its life (`THREAD_SLOTS`). `enter_ns == 0` means "not inside a traced
/// syscall".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EntrySlot {
    pub enter_ns: u64,
    pub nr: u32,
    /// [`TargetId::slot`] of the thread's process at entry.
    pub target: u32,
}

/// The syscall filter's per-CPU cache entry (`CURRENT`): the last thread seen in a syscall on
/// a CPU, by its `struct pt_regs` address, its target slot and its `ENTRY` slot, as of
/// `TARGETS_GENERATION` `generation`. Whoever changes `TARGET_OF` for a process that may be
/// running (a cgroup move in the kernel, the agent) bumps the generation afterwards, so no
/// CPU keeps an old answer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CurrentTask {
    pub regs: u64,
    /// `TARGETS_GENERATION` when read, before `TARGET_OF`.
    pub generation: u64,
    /// [`TargetId::slot`], 0 = not a target.
    pub target: u32,
    /// The thread's index in `ENTRY`, [`NO_ENTRY`] when it has none. A thread of a process
    /// that left its target ([`LEFT_TARGET`]) may have one with target 0.
    pub entry: u32,
    /// The thread's id: `sched_switch` takes the target of the thread leaving the CPU from
    /// here, when this entry is that thread's (`collector-ebpf/src/sched.rs`).
    pub tid: u32,
    pub _pad: u32,
}

/// [`CurrentTask::entry`] of a thread that is no target, or found no free `ENTRY` slot.
pub const NO_ENTRY: u32 = u32::MAX;

/// Key of the per-(target, syscall) aggregation maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    /// [`TargetId::slot`].
    pub target: u32,
    pub nr: u32,
}

/// Latency aggregate of one (target, syscall) on one CPU. The call count is the sum of the
/// buckets, so a histogram's `_count` equals the call counter by construction.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStats {
    pub sum_ns: u64,
    pub buckets: [u64; histogram::BUCKETS],
}

impl SyscallStats {
    pub const ZERO: SyscallStats = SyscallStats {
        sum_ns: 0,
        buckets: [0; histogram::BUCKETS],
    };
}

/// Syscall numbers a target's [`SeriesRow`] covers: the same range as the syscall I/O table.
pub const SERIES_ROW_SYSCALLS: usize = sockets::SYSCALL_IO_ENTRIES;
// The kernel masks a row index with `SERIES_ROW_SYSCALLS - 1` (`collector-ebpf/src/maps.rs`).
const _: () = assert!(SERIES_ROW_SYSCALLS.is_power_of_two());

/// One target's `SYSCALL_STATS` index for each syscall number, + 1 (0: not known here, look
/// it up in `SYSCALL_SERIES`). A cache: `SYSCALL_SERIES` is the truth. `u16`, so a row is
/// 1 KiB; an index of 65535 or more is never cached.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SeriesRow {
    pub series: [u16; SERIES_ROW_SYSCALLS],
}

impl SeriesRow {
    pub const EMPTY: SeriesRow = SeriesRow {
        series: [0; SERIES_ROW_SYSCALLS],
    };
}

/// Key of `EXIT_CLAIMS`: a process by its identity (tgid and its leader's start time), so a
/// recycled tgid or a reused `signal_struct` is never mistaken for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitClaim {
    pub tgid: u32,
    pub _pad: u32,
    pub start_ns: u64,
}

/// Key of the per-(target, syscall, errno) error counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ErrorKey {
    /// [`TargetId::slot`].
    pub target: u32,
    pub nr: u32,
    /// Positive errno (the syscall returned `-errno`).
    pub errno: u32,
    pub _pad: u32,
}

/// Byte offsets of the kernel struct fields the programs read, found by the agent in the
/// running kernel's BTF (aya has no CO-RE relocations for Rust programs) and handed to the
/// programs as a global before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_start_time: u32,
    pub task_group_leader: u32,
    pub binprm_filename: u32,
    /// `struct sock` (its `__sk_common` is its first member, so these are offsets into both).
    pub sock_family: u32,
    pub sock_protocol: u32,
    pub sock_err: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_dport: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    /// `struct inet_sock.inet_sport`: the local port, kept when the port is released at close.
    pub inet_sport: u32,
    /// The path from the current task to the socket behind a file descriptor.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `struct pt_regs`' syscall number (x86 `orig_ax`, arm64 `syscallno`).
    pub regs_syscall_nr: u32,
    /// `struct pt_regs`' first four syscall arguments (x86-64: di, si, dx, r10), which the
    /// kernel leaves as the caller passed them until the syscall returns.
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    pub regs_arg2: u32,
    pub regs_arg3: u32,
    /// `struct pt_regs.cs`: the code segment the syscall came from (32-bit or 64-bit).
    pub regs_cs: u32,
    /// file->f_inode->i_mode: whether an fd is a socket (S_IFSOCK).
    pub file_inode: u32,
    pub inode_mode: u32,
    /// task->cgroups->dfl_cgrp (the cgroup v2 cgroup) ->level, ->ancestors[], ->kn->id.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// task->signal->live: the threads a process takes along when it changes target.
    pub task_signal: u32,
    pub signal_live: u32,
    /// What the scheduler and the fault handler count per thread (`sched::ThreadSched`),
    /// and the thread's state (`__state`, `state` before 5.14).
    pub task_state: u32,
    pub task_flags: u32,
    pub task_sum_exec_runtime: u32,
    pub task_run_delay: u32,
    pub task_pcount: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    /// An OOM victim's name and resident pages: task->comm, task->mm, and mm->rss_stat's
    /// file, anon and shmem counters (an array of percpu_counter since 6.2, of atomic_long_t
    /// in `struct mm_rss_stat` before).
    pub task_comm: u32,
    pub task_mm: u32,
    pub mm_rss_file: u32,
    pub mm_rss_anon: u32,
    pub mm_rss_shmem: u32,
    /// A block request's first bio, its operation and flags, and its bytes left.
    pub request_bio: u32,
    pub request_cmd_flags: u32,
    pub request_data_len: u32,
}

/// Facts about the running kernel that are not struct offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelFeatures {
    /// What each syscall number moves through a socket it is given, as a
    /// [`sockets::SyscallIo`] (accept(2) and accept4(2) included: their return is where an
    /// inbound connection gets its owner). Indexed by this architecture's numbers.
    pub syscall_io: [u8; sockets::SYSCALL_IO_ENTRIES],
    /// 1 when `struct cgroup` holds its ancestors' ids (`ancestor_ids[]`, before Linux 6.0)
    /// rather than pointers to them (`ancestors[]`).
    pub cgroup_ancestor_ids: u32,
}

// The kernel side initialises it as u32s (`collector-ebpf/src/globals.rs`).
const _: () = assert!(size_of::<KernelFeatures>().is_multiple_of(size_of::<u32>()));

/// Index into the `MAP_ERRORS` per-CPU array: which map an update failed on.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapErrorSite {
    SyscallStats = 0,
    SyscallErrors = 1,
    TargetOf = 2,
    Sockets = 3,
    SocketBytes = 4,
    /// A target thread found no free `ENTRY` slot: its syscalls are not timed.
    ThreadSlots = 5,
    /// A connection's HTTP state did not fit: its requests are not counted.
    HttpConns = 6,
    /// A new (target, side, method, status, route) did not fit: its requests are not counted.
    HttpStats = 7,
    /// A request's path was evicted before its response (more requests waited than
    /// `HTTP_PATHS` holds): its `http.request` event has no path.
    HttpPaths = 8,
    /// A target thread's scheduler counters did not fit: until it fits, its switches,
    /// faults and CPU time are not counted.
    SchedThreads = 9,
}

impl MapErrorSite {
    pub const ALL: [MapErrorSite; 10] = [
        MapErrorSite::SyscallStats,
        MapErrorSite::SyscallErrors,
        MapErrorSite::TargetOf,
        MapErrorSite::Sockets,
        MapErrorSite::SocketBytes,
        MapErrorSite::ThreadSlots,
        MapErrorSite::HttpConns,
        MapErrorSite::HttpStats,
        MapErrorSite::HttpPaths,
        MapErrorSite::SchedThreads,
    ];

    /// The map's name, as used in the `map` label of `collector_bpf_map_errors_total`.
    pub const fn map_name(self) -> &'static str {
        match self {
            MapErrorSite::SyscallStats => "SYSCALL_STATS",
            MapErrorSite::SyscallErrors => "SYSCALL_ERRORS",
            MapErrorSite::TargetOf => "TARGET_OF",
            MapErrorSite::Sockets => "SOCKETS",
            MapErrorSite::SocketBytes => "SOCKET_BYTES",
            MapErrorSite::ThreadSlots => "THREAD_SLOTS",
            MapErrorSite::HttpConns => "HTTP_CONNS",
            MapErrorSite::HttpStats => "HTTP_STATS",
            MapErrorSite::HttpPaths => "HTTP_PATHS",
            MapErrorSite::SchedThreads => "SCHED_THREADS",
        }
    }
}

/// Names and sizes of the maps, shared so the agent sizes and looks them up by the same names
/// the kernel crate declares.
pub mod maps {
    pub const TARGET_OF: &str = "TARGET_OF";
    pub const ENTRY: &str = "ENTRY";
    pub const THREAD_SLOTS: &str = "THREAD_SLOTS";
    pub const FREE_SLOTS: &str = "FREE_SLOTS";
    pub const TARGET_COUNTS: &str = "TARGET_COUNTS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_DROPS: &str = "EVENT_DROPS";
    pub const SYSCALL_STATS: &str = "SYSCALL_STATS";
    pub const SYSCALL_SERIES: &str = "SYSCALL_SERIES";
    pub const FREE_SERIES: &str = "FREE_SERIES";
    pub const SERIES_ROWS: &str = "SERIES_ROWS";
    pub const SYSCALL_ERRORS: &str = "SYSCALL_ERRORS";
    pub const MAP_ERRORS: &str = "MAP_ERRORS";
    pub const SOCKETS: &str = "SOCKETS";
    pub const SOCKET_BYTES: &str = "SOCKET_BYTES";
    pub const TCP_COUNTS: &str = "TCP_COUNTS";
    pub const CGROUP_TARGETS: &str = "CGROUP_TARGETS";
    pub const CURRENT: &str = "CURRENT";
    pub const TARGETS_GENERATION: &str = "TARGETS_GENERATION";
    pub const SWITCHES: &str = "SWITCHES";
    pub const EXIT_CLAIMS: &str = "EXIT_CLAIMS";
    pub const HTTP_CONNS: &str = "HTTP_CONNS";
    pub const HTTP_STATS: &str = "HTTP_STATS";
    pub const HTTP_PROGRAM: &str = "HTTP_PROGRAM";
    pub const HTTP_CALL: &str = "HTTP_CALL";
    pub const HTTP_WINDOW: &str = "HTTP_WINDOW";
    pub const HTTP_METHODS: &str = "HTTP_METHODS";
    pub const HTTP_ROUTES: &str = "HTTP_ROUTES";
    pub const HTTP_PATHS: &str = "HTTP_PATHS";
    pub const EVENTS_WANTED: &str = "EVENTS_WANTED";
    pub const SCHED_THREADS: &str = "SCHED_THREADS";
    pub const SCHED_STATS: &str = "SCHED_STATS";
    pub const FD_BYTES: &str = "FD_BYTES";
    pub const BIO_OWNERS: &str = "BIO_OWNERS";
    pub const OOM_CLAIMS: &str = "OOM_CLAIMS";
    pub const BLOCK_REQUESTS: &str = "BLOCK_REQUESTS";
    pub const BLOCK_STATS: &str = "BLOCK_STATS";
    /// Paths of requests waiting for their responses, kept while `http.request` events are
    /// wanted: least recently used evicted.
    pub const HTTP_PATHS_ENTRIES: u32 = 2048;

    /// Index in `SWITCHES` set to 1 once the tcp family is attached: only then may
    /// `sys_exit` hand accepted connections over to it.
    pub const SWITCH_TCP: u32 = 0;
    /// Set once the socket_bytes family is on: only then does `sys_exit` count the bytes of
    /// send and receive calls.
    pub const SWITCH_SOCKET_BYTES: u32 = 1;
    /// Set once the http family is on: only then does `sys_exit` hand calls on followed
    /// connections to it, and `tcp_destroy_sock` close their HTTP state.
    pub const SWITCH_HTTP: u32 = 2;
    /// Set when `--http-route` gave routes (`HTTP_ROUTES`): only then does the http family
    /// read a request's path.
    pub const SWITCH_HTTP_ROUTES: u32 = 3;
    /// Set once the sched family is on: only then does `sched_switch` read the counters of
    /// target threads, and a target's fork note its child's.
    pub const SWITCH_SCHED: u32 = 4;
    /// Entries of `SWITCHES`.
    pub const SWITCHES_ENTRIES: u32 = 8;

    // Sizes the kernel crate declares its maps with. The agent sets the real sizes at load
    // (`collector/src/kernel/probes.rs`, `MapSizes`), from its flags, whose defaults these are.

    /// Distinct (target, syscall) pairs the kernel aggregates (`--max-syscall-series`):
    /// `SYSCALL_STATS` slots, and the `SYSCALL_SERIES` and `FREE_SERIES` entries that hand
    /// them out; beyond this, a new pair's calls are counted in `MAP_ERRORS` instead.
    pub const SYSCALL_STATS_ENTRIES: u32 = 8192;
    /// Distinct (target, syscall, errno) error counters (`--max-error-series`).
    pub const SYSCALL_ERRORS_ENTRIES: u32 = 8192;
    /// Open TCP connections of targets followed at once (`--max-connections`); beyond this,
    /// new ones are counted in `MAP_ERRORS` and not followed.
    pub const SOCKETS_ENTRIES: u32 = 16384;
    /// Distinct (target, family, protocol) byte counters (`--max-socket-series`).
    pub const SOCKET_BYTES_ENTRIES: u32 = 4096;
    /// Connections whose HTTP state the kernel keeps at once (`--max-http-connections`);
    /// beyond this, a new one's requests are counted in `MAP_ERRORS` instead.
    pub const HTTP_CONNS_ENTRIES: u32 = 8192;
    /// Distinct (target, side, method, status, route) HTTP aggregates (`--max-http-series`).
    pub const HTTP_STATS_ENTRIES: u32 = 1024;
    /// Size of the `EVENTS` ring buffer in bytes, a power of two (`--ring-buffer-size`).
    pub const EVENTS_DEFAULT_BYTES: u32 = 1 << 20;
    /// Most targets the agent can name (`--max-targets` is at most this); the maps with one
    /// entry per target (`CGROUP_TARGETS`, `TARGET_COUNTS`, `TCP_COUNTS`, `SERIES_ROWS`) are sized to
    /// `--max-targets`.
    pub const MAX_TARGETS: u32 = 1024;
    /// Target processes followed at once (`--max-target-processes`): `TARGET_OF` entries.
    /// Beyond this a new process of a target is counted in `MAP_ERRORS` and not followed.
    pub const TARGET_PROCESSES_ENTRIES: u32 = 16384;
    /// Target threads timed at once (`--max-target-threads`): `ENTRY` slots, and the
    /// `THREAD_SLOTS` and `FREE_SLOTS` entries that hand them out. Beyond this a new thread's
    /// syscalls are counted in `MAP_ERRORS` and not timed.
    pub const TARGET_THREADS_ENTRIES: u32 = 16384;
}

/// Names of the globals the agent sets before load (`.data`, not `.rodata`: see
/// `collector-ebpf/src/globals.rs`).
pub mod globals {
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const KERNEL_FEATURES: &str = "KERNEL_FEATURES";
    pub const HTTP_BOUNDS: &str = "HTTP_BOUNDS";
    pub const SLOW_SYSCALL_NS: &str = "SLOW_SYSCALL_NS";
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        EntrySlot, ErrorKey, ExitClaim, KernelFeatures, KernelOffsets, SeriesRow, SyscallKey, SyscallStats,
        sched::{BlockStats, FdBytes, SchedStats, ThreadSched},
    };
    unsafe impl aya::Pod for EntrySlot {}
    unsafe impl aya::Pod for SeriesRow {}
    unsafe impl aya::Pod for SyscallKey {}
    unsafe impl aya::Pod for SyscallStats {}
    unsafe impl aya::Pod for ErrorKey {}
    unsafe impl aya::Pod for ExitClaim {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for KernelFeatures {}
    unsafe impl aya::Pod for SchedStats {}
    unsafe impl aya::Pod for FdBytes {}
    unsafe impl aya::Pod for BlockStats {}
    unsafe impl aya::Pod for ThreadSched {}
}

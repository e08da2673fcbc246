//! What the scheduler and the memory manager count for each target thread, and the
//! per-target aggregates the kernel keeps of it (`collector-ebpf/src/sched.rs`); the bytes
//! of reads and writes by fd type (`socket_bytes.rs`) and the block requests of targets
//! (`block.rs`).
use crate::histogram;

/// A target thread's counters as last read at one of its context switches (or at its
/// fork), by tid in `SCHED_THREADS`: the next switch adds the differences to its target.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSched {
    /// [`crate::TargetId::slot`] the values were read under: a thread found under another
    /// target takes new values and adds nothing (what it did in between was not the new
    /// target's).
    pub target: u32,
    pub _pad: u32,
    /// task->se.sum_exec_runtime: ns on a CPU.
    pub runtime_ns: u64,
    /// task->sched_info.run_delay: ns spent runnable, waiting for a CPU.
    pub run_delay_ns: u64,
    /// task->sched_info.pcount: times it got a CPU (each ends one such wait).
    pub arrivals: u64,
    /// task->nvcsw, task->nivcsw: switches away while blocking, and while still runnable.
    pub voluntary: u64,
    pub involuntary: u64,
    /// task->min_flt, task->maj_flt: page faults served without and with I/O.
    pub minor_faults: u64,
    pub major_faults: u64,
    /// task->start_time: which thread these are of (a tid is reused).
    pub start_ns: u64,
    /// `bpf_ktime_get_ns()` when these were read.
    pub at_ns: u64,
}

/// One target's scheduler and fault aggregate on one CPU (`SCHED_STATS`, by target id).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedStats {
    pub cpu_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Off a CPU and not runnable: the time between two readings neither on a CPU nor
    /// waiting for one (sleeping, blocked on I/O or a lock).
    pub blocked_ns: u64,
    /// Run-queue waits: their total, and how many fell in each log2 bucket
    /// ([`histogram::bucket_of`], as the syscall latencies).
    pub runqueue_sum_ns: u64,
    pub runqueue_buckets: [u64; histogram::BUCKETS],
}

impl SchedStats {
    pub const ZERO: SchedStats = SchedStats {
        cpu_ns: 0,
        voluntary: 0,
        involuntary: 0,
        minor_faults: 0,
        major_faults: 0,
        blocked_ns: 0,
        runqueue_sum_ns: 0,
        runqueue_buckets: [0; histogram::BUCKETS],
    };
}

/// What a file descriptor is, for the bytes read and written through it (`FD_BYTES`, by
/// target id * [`FD_TYPES`] + type). From the inode's mode (include/uapi/linux/stat.h).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdType {
    /// A regular file (S_IFREG).
    File = 0,
    Socket = 1,
    /// A pipe or FIFO (S_IFIFO).
    Pipe = 2,
    /// Anything else: a terminal or other character device, an eventfd, a block device.
    Other = 3,
}

pub const FD_TYPES: u32 = 4;

/// [`FdType`] by the file-type bits of an inode's mode (`mode >> 12`, 16 values): the
/// kernel looks a type up here rather than branching on it (`collector-ebpf/src/fds.rs`).
pub const FD_TYPE_OF_MODE: [u8; 16] = {
    let mut table = [0u8; 16];
    let mut nibble = 0;
    while nibble < 16 {
        table[nibble] = FdType::of_mode((nibble as u16) << 12) as u8;
        nibble += 1;
    }
    table
};

impl FdType {
    pub const ALL: [FdType; FD_TYPES as usize] = [FdType::File, FdType::Socket, FdType::Pipe, FdType::Other];

    /// The type of an inode of mode `mode`.
    pub const fn of_mode(mode: u16) -> FdType {
        const S_IFMT: u16 = 0o170000;
        match mode & S_IFMT {
            0o100000 => FdType::File,
            0o140000 => FdType::Socket,
            0o010000 => FdType::Pipe,
            _ => FdType::Other,
        }
    }

    /// The `fd_type` label.
    pub const fn label(self) -> &'static str {
        match self {
            FdType::File => "file",
            FdType::Socket => "socket",
            FdType::Pipe => "pipe",
            FdType::Other => "other",
        }
    }
}

/// Bytes a target moved through fds of one type, on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdBytes {
    pub read: u64,
    pub written: u64,
}

/// A block request's direction (include/linux/blk_types.h: REQ_OP_READ 0, REQ_OP_WRITE 1;
/// flushes, discards and the rest are not counted).
pub const BLOCK_OPS: u32 = 2;

/// The `op` label of a block request direction.
pub const fn block_op_label(op: u32) -> &'static str {
    if op == 0 { "read" } else { "write" }
}

/// Block requests of one target and direction (`BLOCK_STATS`, by target id *
/// [`BLOCK_OPS`] + op): issue-to-completion time in log2 buckets, and bytes completed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockStats {
    pub bytes: u64,
    pub sum_ns: u64,
    pub buckets: [u64; histogram::BUCKETS],
}

impl BlockStats {
    pub const ZERO: BlockStats = BlockStats {
        bytes: 0,
        sum_ns: 0,
        buckets: [0; histogram::BUCKETS],
    };
}

/// A request issued for a target (`BLOCK_REQUESTS`, by `struct request` address).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockRequest {
    pub issued_ns: u64,
    /// [`crate::TargetId::slot`].
    pub target: u32,
    pub op: u32,
}

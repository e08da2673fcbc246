//! Block I/O of target processes: per target and direction, the time from a request's
//! issue to the device until its completion (log2 buckets, as `biolatency` shows it) and the
//! bytes completed, aggregated in `BLOCK_STATS`.
//!
//! Whose a request is must be learnt where the submitter is running: a request is issued
//! to the driver from a plug flush or kblockd's worker, and completes in interrupt context.
//! So (include/trace/events/block.h, block/blk-core.c, block/blk-mq.c):
//!   block_bio_queue(struct bio *bio)   submit_bio_noacct_nocheck(), in the submitting task
//!                                      (before 5.11: (struct request_queue *q, struct bio
//!                                      *bio); the agent loads the program that fits), once
//!                                      per bio (BIO_TRACE_COMPLETION): a target's bio ->
//!                                      BIO_OWNERS[bio] = its target; another's bio takes
//!                                      out an entry left at its address by a target's bio
//!                                      that was merged or stacked and never issued first;
//!   block_split(struct bio *split, unsigned int new_sector)
//!                                      block/blk-merge.c, in the submitting task: the front
//!                                      part of a bio too large for the queue, a new bio that
//!                                      block_bio_queue never sees (the rest keeps the
//!                                      original's address and entry): it gets the entry too
//!                                      (before 5.11: (q, split, new_sector));
//!   block_rq_issue(struct request *rq) blk_mq_start_request(): the request's first bio
//!                                      (rq->bio) names its owner -> BLOCK_REQUESTS[rq];
//!   block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes)
//!                                      blk_update_request()/blk_complete_request(): bytes
//!                                      completed; the last completion (nr_bytes covers
//!                                      rq->__data_len) ends the request's time.
//! What cannot be attributed, and is not counted: writeback of dirty page cache (submitted by
//! the flusher threads, long after the target's write(), which the fd bytes count), journal
//! and metadata I/O of filesystems, readahead a kernel thread issues, I/O a stacking driver
//! (dm, md) resubmits from its own threads, and the bios merged into a request another
//! process's bio started (the request is its first bio's). A target's own page-cache
//! misses, O_DIRECT and synchronous I/O are its own. Non-targets pay a `TARGET_OF` lookup
//! and a `BIO_OWNERS` lookup per bio, and a `BLOCK_REQUESTS` lookup per issued request.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap},
    programs::RawTracePointContext,
};
use collector_common::{
    TargetId, histogram,
    maps::MAX_TARGETS,
    sched::{BLOCK_OPS, BlockRequest, BlockStats},
};

use crate::{
    globals::{offset, read_field},
    maps::target_of_current,
};

/// include/linux/blk_types.h: the operation is the low REQ_OP_BITS (8) of cmd_flags.
const REQ_OP_MASK: u32 = 0xff;

/// Bios of targets not yet issued, by `struct bio` address: least recently used evicted, as
/// a bio merged into another's request is never issued as a first bio. Sized for the
/// requests in flight at once (a device queue holds some hundreds), not for every target
/// thread: 4096 entries, 330 KiB.
#[map]
static BIO_OWNERS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

/// Requests of targets issued and not completed, by `struct request` address (LRU: a
/// request requeued and freed without completing must not hold an entry for good).
#[map]
static BLOCK_REQUESTS: LruHashMap<u64, BlockRequest> = LruHashMap::with_max_entries(4096, 0);

/// Not per-CPU: a request completes at most some hundred thousand times a second, in
/// interrupt context on any CPU, and a per-CPU copy of a histogram per target and direction
/// would take half a MiB of kernel memory per CPU; atomic adds instead (`BPF_XADD`, which
/// Linux 5.10 has).
#[map]
pub static BLOCK_STATS: Array<BlockStats> = Array::with_max_entries(MAX_TARGETS * BLOCK_OPS, 0);

/// `*counter += n` for every CPU at once; the result unused, so the plain `BPF_XADD`.
#[inline(always)]
fn add(counter: &mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// Linux 5.11+: `block_bio_queue(struct bio *bio)`.
#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn collector_bio_queue(ctx: RawTracePointContext) -> i32 {
    submitted(ctx.arg(0));
    0
}

/// Before 5.11: `block_bio_queue(struct request_queue *q, struct bio *bio)`.
#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn collector_bio_queue_q(ctx: RawTracePointContext) -> i32 {
    submitted(ctx.arg(1));
    0
}

/// Linux 5.11+: `block_split(struct bio *split, unsigned int new_sector)`.
#[raw_tracepoint(tracepoint = "block_split")]
pub fn collector_bio_split(ctx: RawTracePointContext) -> i32 {
    submitted(ctx.arg(0));
    0
}

/// Before 5.11: `block_split(struct request_queue *q, struct bio *split, unsigned int new_sector)`.
#[raw_tracepoint(tracepoint = "block_split")]
pub fn collector_bio_split_q(ctx: RawTracePointContext) -> i32 {
    submitted(ctx.arg(1));
    0
}

/// The current task submits `bio`: a target's is noted; any other's clears a stale note at
/// its address (bios come from a slab, and an address is reused at once).
#[inline(always)]
fn submitted(bio: u64) {
    match target_of_current() {
        Some((target, _)) => {
            let _ = BIO_OWNERS.insert(&bio, &target, 0);
        }
        None if unsafe { BIO_OWNERS.get(&bio) }.is_some() => {
            let _ = BIO_OWNERS.remove(&bio);
        }
        None => {}
    }
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn collector_rq_issue(ctx: RawTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let Ok(bio) = read_field::<u64>(rq, offset!(request_bio)) else {
        return 0;
    };
    let Some(&target) = (unsafe { BIO_OWNERS.get(&bio) }) else {
        // Not a target's: a note left at this address by a target's request that never
        // completed (requeued and freed) must not pass to this one.
        if unsafe { BLOCK_REQUESTS.get(&(rq as u64)) }.is_some() {
            let _ = BLOCK_REQUESTS.remove(&(rq as u64));
        }
        return 0;
    };
    let _ = BIO_OWNERS.remove(&bio);
    let op = read_field::<u32>(rq, offset!(request_cmd_flags)).unwrap_or(u32::MAX) & REQ_OP_MASK;
    if op >= BLOCK_OPS {
        return 0; // a flush, a discard...
    }
    let request = BlockRequest {
        issued_ns: unsafe { bpf_ktime_get_ns() },
        target,
        op,
    };
    let _ = BLOCK_REQUESTS.insert(&(rq as u64), &request, 0);
    0
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn collector_rq_complete(ctx: RawTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let Some(&request) = (unsafe { BLOCK_REQUESTS.get(&(rq as u64)) }) else {
        return 0;
    };
    let bytes = ctx.arg::<u64>(2) & u64::from(u32::MAX);
    let Some(stats) =
        TargetId::from_slot(request.target).and_then(|t| BLOCK_STATS.get_ptr_mut(t.0 * BLOCK_OPS + request.op))
    else {
        return 0;
    };
    let stats = unsafe { &mut *stats };
    add(&mut stats.bytes, bytes);
    let left = u64::from(read_field::<u32>(rq, offset!(request_data_len)).unwrap_or(0));
    if bytes < left {
        return 0; // a partial completion: the request goes on
    }
    let _ = BLOCK_REQUESTS.remove(&(rq as u64));
    let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(request.issued_ns);
    add(&mut stats.sum_ns, took);
    if let Some(n) = stats.buckets.get_mut(histogram::bucket_of(took)) {
        add(n, 1);
    }
    0
}

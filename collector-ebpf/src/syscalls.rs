//! Syscall latency and errors of target processes, aggregated per (target, syscall) in the
//! kernel: nothing goes to userspace per call.
//!
//! Hooks: `raw_syscalls:sys_enter` and `raw_syscalls:sys_exit`, include/trace/events/syscalls.h:
//!   TRACE_EVENT_FN(sys_enter, TP_PROTO(struct pt_regs *regs, long id), ...)
//!   TRACE_EVENT_FN(sys_exit,  TP_PROTO(struct pt_regs *regs, long ret), ...)
//! As raw tracepoints, arg(1) is `id` at entry and `ret` at exit. Both fire in the context of
//! the calling thread, so `bpf_get_current_pid_tgid` names the caller.
//!
//! On the same exit path, the return of a target's accept() hands its connection to the tcp
//! family (`sockets.rs`), and its send and receive calls count their bytes
//! (`socket_bytes.rs`); which syscalls those are is a table by number (`syscall_io`).
//!
//! Whether the caller is a target is one per-CPU load and a compare (`syscall_target`, a
//! cache keyed by the caller's pt_regs; see `maps.rs`), so other processes pay no helper
//! call at all, except once after each context switch.
//!
//! Entry state lives in `ENTRY`, an array indexed by thread id, not a hash map keyed by it:
//! a getppid loop measured on these machines took ~870-1010 ns/call with a hash insert +
//! delete per call against ~555 ns with an array slot. Only target threads ever write a slot, and every slot
//! is cleared when its syscall returns or its thread exits (`processes.rs`), so a non-zero slot
//! always belongs to a live target thread inside a syscall. An empty slot at `sys_exit` is a
//! call that began before we attached, or a child's return from fork: neither has an entry
//! time, and neither is counted.

use aya_ebpf::{EbpfContext as _, helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use collector_common::{
    EntrySlot, ErrorKey, MapErrorSite, SyscallKey, SyscallStats, histogram,
    maps::{SWITCH_SOCKET_BYTES, SWITCH_TCP},
    sockets::SyscallIo,
};

use crate::{
    globals::{offset, read_field, syscall_io},
    maps::{ENTRY, SYSCALL_ERRORS, SYSCALL_STATS, get_or_insert, switched_on, syscall_target},
    socket_bytes, sockets,
};

/// Largest errno a syscall can return (include/linux/err.h: MAX_ERRNO).
const MAX_ERRNO: i64 = 4095;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn collector_sys_enter(ctx: RawTracePointContext) -> i32 {
    let (target, _) = syscall_target(ctx.arg(0));
    if target == 0 {
        return 0;
    }
    if let Some(slot) = ENTRY.get_ptr_mut(ctx.pid()) {
        let nr: i64 = ctx.arg(1);
        unsafe {
            *slot = EntrySlot {
                enter_ns: bpf_ktime_get_ns(),
                nr: nr as u32,
                target,
            };
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn collector_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let (target, looked_up) = syscall_target(regs as u64);
    if target == 0 {
        if looked_up {
            // The thread may have stopped being a target during this syscall (moved out of
            // its cgroup while blocked): its entry would otherwise stay behind. A target
            // change always clears the cache, so checking on a miss is enough.
            if let Some(slot) = ENTRY.get_ptr_mut(ctx.pid()) {
                unsafe { (*slot).enter_ns = 0 };
            }
        }
        return 0;
    }
    let Some(slot) = ENTRY.get_ptr_mut(ctx.pid()) else {
        return 0;
    };
    let entry = unsafe { *slot };
    let ret: i64 = ctx.arg(1);
    if entry.enter_ns == 0 {
        // Not timed (see above), but an accept() that was already waiting when we attached
        // still hands a connection to its caller: a server idle in accept() must not lose
        // its first one. The number comes from the registers, as there is no entry.
        if let Ok(nr) = read_field::<u64>(regs, offset!(regs_syscall_nr))
            && syscall_io(nr as u32) == SyscallIo::Accept
        {
            accept_returned(ret, target);
        }
        return 0;
    }
    unsafe { (*slot).enter_ns = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    record(entry, now.saturating_sub(entry.enter_ns), ret);
    match syscall_io(entry.nr) {
        SyscallIo::None => {}
        SyscallIo::Accept => accept_returned(ret, entry.target),
        // Bytes of a call that began before attach are not counted, like the call itself.
        io if switched_on(SWITCH_SOCKET_BYTES) => socket_bytes::returned(io, ret, regs, entry.target),
        _ => {}
    }
    0
}

/// Where an inbound connection gets its owner; see sockets.rs.
#[inline(always)]
fn accept_returned(ret: i64, target: u32) {
    if ret >= 0 && switched_on(SWITCH_TCP) {
        sockets::accepted(ret as u64, target);
    }
}

#[inline(always)]
fn record(entry: EntrySlot, duration_ns: u64, ret: i64) {
    let key = SyscallKey {
        target: entry.target,
        nr: entry.nr,
    };
    if let Some(stats) = get_or_insert(&SYSCALL_STATS, &key, &SyscallStats::ZERO, MapErrorSite::SyscallStats) {
        let stats = unsafe { &mut *stats };
        stats.sum_ns += duration_ns;
        let b = histogram::bucket_of(duration_ns);
        if let Some(n) = stats.buckets.get_mut(b) {
            *n += 1;
        }
    }
    if (-MAX_ERRNO..0).contains(&ret) {
        let key = ErrorKey {
            target: entry.target,
            nr: entry.nr,
            errno: (-ret) as u32,
            _pad: 0,
        };
        if let Some(n) = get_or_insert(&SYSCALL_ERRORS, &key, &0, MapErrorSite::SyscallErrors) {
            unsafe { *n += 1 };
        }
    }
}

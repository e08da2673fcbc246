//! Syscall latency and errors of target processes, aggregated per (target, syscall) in the
//! kernel: nothing goes to userspace per call.
//!
//! Hooks: `raw_syscalls:sys_enter` and `raw_syscalls:sys_exit`, include/trace/events/syscalls.h:
//!   TRACE_EVENT_FN(sys_enter, TP_PROTO(struct pt_regs *regs, long id), ...)
//!   TRACE_EVENT_FN(sys_exit,  TP_PROTO(struct pt_regs *regs, long ret), ...)
//! As raw tracepoints, arg(1) is `id` at entry and `ret` at exit. Both fire in the context of
//! the calling thread, so `bpf_get_current_pid_tgid` names the caller.
//!
//! A call slower than `--slow-syscall` is also sent as a `syscall.slow` record (`events.rs`):
//! one compare per target call, and a ring-buffer record only for the slow ones.
//!
//! On the same exit path, the return of a target's accept() hands its connection to the tcp
//! family (`sockets.rs`), and its send and receive calls count their bytes
//! (`socket_bytes.rs`), and those on a followed connection go on to the http family
//! (`http.rs`); which syscalls those are is a table by number (`syscall_io`).
//!
//! Whether the caller is a target is a per-CPU load and two compares (`syscall_target`, a
//! cache keyed by the caller's pt_regs and checked against the targets' generation; see
//! `maps.rs`), so other processes pay no helper
//! call at all, except once after each context switch.
//!
//! Entry state lives in `ENTRY`, an array of one slot per target thread (`maps.rs`), not a
//! hash map keyed by tid: a getppid loop measured on these machines took ~870-1010 ns/call
//! with a hash insert + delete per call against ~555 ns with an array slot. Only target
//! threads ever write a slot, every entry is cleared when its syscall returns, and a thread
//! that leaves its target gives its slot back cleared at its next cache miss, so a set entry
//! belongs to a target thread inside a syscall entered as one. An empty one at `sys_exit` is
//! a call that began before we attached, or a child's return from fork: neither has an entry
//! time, and neither is counted.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use collector_common::{
    EntrySlot, ErrorKey, MapErrorSite, histogram,
    maps::{SWITCH_HTTP, SWITCH_SOCKET_BYTES, SWITCH_TCP},
    sockets::SyscallIo,
};

use crate::{
    events,
    globals::{offset, read_field, slow_syscall_ns, syscall_io},
    http::{self, HttpCall},
    maps::{SYSCALL_ERRORS, entry_slot, get_or_insert, switched_on, syscall_stats, syscall_target},
    socket_bytes, sockets,
};

/// Largest errno a syscall can return (include/linux/err.h: MAX_ERRNO).
const MAX_ERRNO: i64 = 4095;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn collector_sys_enter(ctx: RawTracePointContext) -> i32 {
    let current = syscall_target(ctx.arg(0), true);
    if current.target == 0 {
        return 0;
    }
    if let Some(entry) = entry_slot(current.entry) {
        let nr: i64 = ctx.arg(1);
        *entry = EntrySlot {
            enter_ns: unsafe { bpf_ktime_get_ns() },
            nr: nr as u32,
            target: current.target,
        };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
// The body goes into the program itself: left to LLVM, the `asm!` in `maps::syscall_stats`
// made it a BPF-to-BPF call, which costs a call and a return per syscall.
#[inline(always)]
pub fn collector_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let current = syscall_target(regs as u64, false);
    if current.target == 0 {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    // One exit for both ways of having no entry, so the verifier walks what follows once
    // (Linux 5.10 stops at a million instructions, and the byte loops come close).
    let Some(slot) = entry_slot(current.entry).filter(|e| e.enter_ns != 0) else {
        untimed_returned(regs, ret, current.target);
        return 0;
    };
    let entry = *slot;
    slot.enter_ns = 0;
    let now = unsafe { bpf_ktime_get_ns() };
    let duration_ns = now.saturating_sub(entry.enter_ns);
    record(entry, duration_ns, ret);
    // `--slow-syscall`: the one compare every target call pays for it (u64::MAX when off).
    if duration_ns > slow_syscall_ns() {
        events::emit_slow_syscall(entry.target, entry.nr, ret, duration_ns, now);
    }
    match syscall_io(entry.nr) {
        SyscallIo::None => {}
        SyscallIo::Accept => accept_returned(ret, entry.target),
        // Bytes of a call that began before attach are not counted, like the call itself.
        io if switched_on(SWITCH_SOCKET_BYTES) => {
            if let Some((sk, direction)) = socket_bytes::returned(io, ret, regs, entry.target)
                && switched_on(SWITCH_HTTP)
            {
                // Last: a tail call does not return.
                http::hand_over(
                    &ctx,
                    HttpCall {
                        sk,
                        enter_ns: entry.enter_ns,
                        target: entry.target,
                        io: io as u8,
                        direction,
                        _pad: [0; 2],
                        data: 0,
                        len: 0,
                        now,
                    },
                );
            }
        }
        _ => {}
    }
    0
}

/// A call that is not timed (see above, or its thread found no free slot): an accept()
/// still hands its connection to its caller, so that a server idle in accept() when we
/// attached does not lose its first one. The number comes from the registers, as there is
/// no entry.
#[inline(always)]
fn untimed_returned(regs: *const u8, ret: i64, target: u32) {
    if let Ok(nr) = read_field::<u64>(regs, offset!(regs_syscall_nr))
        && syscall_io(nr as u32) == SyscallIo::Accept
    {
        accept_returned(ret, target);
    }
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
    if let Some(stats) = syscall_stats(entry.target, entry.nr) {
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

//! The benchmark's floor: empty programs on the same hooks as `syscalls.rs` and
//! `processes.rs`'s `sched_switch`, so `cargo xtask bench` can measure what any design pays
//! just to be called on every syscall and every context switch.
//! Only the bench helper (`tests/src/bin/bench_helper.rs`) attaches them; the agent never does.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bench_floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bench_floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn bench_floor_switch(_ctx: RawTracePointContext) -> i32 {
    0
}

//! Following target processes: children join their parent's target, exits leave it.
//!
//! The agent puts the processes named on the command line (and their existing descendants)
//! into `TARGET_OF`; these hooks keep it current while running. Threads need nothing: they
//! share their process's tgid, which is what `TARGET_OF` is indexed by.
//!
//! Hooks (include/trace/events/sched.h, TP_PROTO as of Linux 6.18):
//!   sched_process_fork(struct task_struct *parent, struct task_struct *child)
//!     called from kernel/fork.c:kernel_clone() in the parent's context, after the child's
//!     pid is assigned and before it first runs.
//!   sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
//!     called from fs/exec.c:exec_binprm() in the exec'ing task, after de_thread(): when a
//!     non-leader thread execs it takes the leader's pid, so `old_pid` differs from its pid.
//!   sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
//!                unsigned int prev_state)
//!     called from kernel/sched/core.c:__schedule() on the CPU switching to `next`, before
//!     `next` runs: every change of the current task on a CPU passes here, which keeps
//!     `CURRENT_TARGET` right. A target already running when the agent attaches is seen at
//!     its next switch (blocked or preempted), at most one timeslice later.
//!   sched_process_exit(struct task_struct *p, bool group_dead)
//!     called from kernel/exit.c:do_exit() in the exiting thread; `group_dead` is true for
//!     the last thread of the process (signal->live reached 0). Kernels before 6.16 pass only
//!     `p`; the agent says which through `KERNEL_FEATURES`.
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use collector_common::{EntrySlot, KernelFeatures, MapErrorSite, TargetId, TaskOffsets};

use crate::maps::{CURRENT_TARGET, ENTRY, TARGET_OF, TARGET_PROC_DELTA, count_map_error};

// Globals the agent overrides before load, by the names in `collector_common::globals`.
//
// They are `static mut` (section .data), not immutable statics (.rodata), on purpose: the
// linker may merge a constant the code takes the address of (say a `&0u64` passed to a map
// helper) with any read-only global holding the same bytes, and overriding the global at load
// would then silently change that constant too. We saw exactly that: a zero inserted into
// SYSCALL_ERRORS came out as these offsets. Mutable data is never a merge target. The
// non-zero initial values keep them out of .bss, which aya cannot patch, and mark "not set".

/// `task_struct` field offsets from the running kernel's BTF.
#[unsafe(no_mangle)]
static mut TASK_OFFSETS: TaskOffsets = TaskOffsets {
    pid: u32::MAX,
    tgid: u32::MAX,
};

#[unsafe(no_mangle)]
static mut KERNEL_FEATURES: KernelFeatures = KernelFeatures {
    exit_has_group_dead: u32::MAX,
};

/// Reads a global the agent set at load; volatile so the compiler cannot fold in the
/// initial value.
#[inline(always)]
fn load<T: Copy>(global: *const T) -> T {
    unsafe { core::ptr::read_volatile(global) }
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn collector_sched_switch(ctx: RawTracePointContext) -> i32 {
    let next: *const u8 = ctx.arg(2);
    let offset = load(&raw const TASK_OFFSETS).tgid as usize;
    let target = match unsafe { bpf_probe_read_kernel(next.add(offset) as *const i32) } {
        Ok(tgid) => TARGET_OF.get(tgid as u32).copied().unwrap_or(0),
        Err(_) => 0,
    };
    if let Some(current) = CURRENT_TARGET.get_ptr_mut(0) {
        unsafe { *current = target };
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn collector_fork(ctx: RawTracePointContext) -> i32 {
    // The parent is the current task.
    let Some(&target) = TARGET_OF.get(ctx.tgid()) else {
        return 0;
    };
    let Some(target_id) = TargetId::from_slot(target) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(1);
    let offsets = load(&raw const TASK_OFFSETS);
    let read = |offset: u32| unsafe { bpf_probe_read_kernel(child.add(offset as usize) as *const i32) };
    let (Ok(pid), Ok(tgid)) = (read(offsets.pid), read(offsets.tgid)) else {
        // The child cannot be followed: count it as a lost TARGET_OF update.
        count_map_error(MapErrorSite::TargetOf);
        return 0;
    };
    // A new thread is covered by its tgid already; only a new process joins the target.
    if pid == tgid {
        if TARGET_OF.set(pid as u32, target, 0).is_err() {
            count_map_error(MapErrorSite::TargetOf);
            warn!(&ctx, "cannot follow child {} of a target: pid beyond TARGET_OF", pid);
            return 0;
        }
        add_processes(target_id, 1);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn collector_exec(ctx: RawTracePointContext) -> i32 {
    let Some(&target) = TARGET_OF.get(ctx.tgid()) else {
        return 0;
    };
    if target == 0 {
        return 0;
    }
    let old_pid: i32 = ctx.arg(1);
    let pid = ctx.pid();
    if old_pid as u32 == pid {
        return 0;
    }
    // A non-leader thread exec'd and now has the leader's pid: its execve() entry is in the
    // slot of its old thread id, and its exit will be looked up under the new one.
    if let (Some(old), Some(new)) = (ENTRY.get_ptr_mut(old_pid as u32), ENTRY.get_ptr_mut(pid)) {
        unsafe {
            *new = *old;
            *old = EntrySlot::default();
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn collector_exit(ctx: RawTracePointContext) -> i32 {
    let tgid = ctx.tgid();
    let Some(&target) = TARGET_OF.get(tgid) else { return 0 };
    let Some(target_id) = TargetId::from_slot(target) else {
        return 0;
    };
    // The thread dies inside exit()/exit_group() (or a fatal signal), whose sys_exit never
    // comes: clear its slot so a future thread with this id starts empty.
    if let Some(slot) = ENTRY.get_ptr_mut(ctx.pid()) {
        unsafe { *slot = EntrySlot::default() };
    }
    let group_dead = if load(&raw const KERNEL_FEATURES).exit_has_group_dead == 1 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        ctx.pid() == tgid
    };
    if group_dead {
        if TARGET_OF.set(tgid, 0u32, 0).is_err() {
            count_map_error(MapErrorSite::TargetOf);
        }
        add_processes(target_id, -1);
    }
    0
}

#[inline(always)]
fn add_processes(target: TargetId, n: i64) {
    if let Some(delta) = TARGET_PROC_DELTA.get_ptr_mut(target.0) {
        unsafe { *delta += n };
    }
}

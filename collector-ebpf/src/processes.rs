//! The lifecycle of target processes: following children into their parent's target,
//! counting each target's processes and threads, and sending `process.start/exec/exit`
//! events. Only target processes produce events.
//!
//! The agent puts the processes named on the command line (and their existing descendants)
//! into `TARGET_OF`; these hooks keep it current while running. Threads need nothing there:
//! they share their process's tgid, which is what `TARGET_OF` is keyed by. They are
//! counted, not evented, and give back their `ENTRY` slot when they exit.
//!
//! Hooks (include/trace/events/sched.h, TP_PROTO as of Linux 6.18):
//!   sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
//!                unsigned int prev_state)
//!     called from kernel/sched/core.c:__schedule() on the CPU switching to `next`, before
//!     `next` runs. It hands the leaving thread to the sched family (`sched.rs`), then clears
//!     the CPU's cached syscall target (`maps.rs`, `CURRENT`), which
//!     is keyed by the thread's pt_regs, so an entry never outlives the thread it was made
//!     for even when a new thread reuses the stack.
//!   sched_process_fork(struct task_struct *parent, struct task_struct *child)
//!     called from kernel/fork.c:kernel_clone() in the parent's context, after the child's
//!     pid is assigned and before it first runs; for threads too.
//!   sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
//!     called from fs/exec.c:exec_binprm() in the exec'ing task after the new image is set
//!     up (comm is already the new program's). A non-leader thread that execs has taken the
//!     leader's pid in de_thread(), so `old_pid` differs from its pid.
//!   sched_process_exit(struct task_struct *p, bool group_dead)
//!     called from kernel/exit.c:do_exit() in each exiting thread, after `p->exit_code` is
//!     set; `group_dead` is true for the last thread of the process (signal->live reached
//!     0). Kernels before 6.16 pass only `p`, and refuse to attach a program that reads a
//!     second argument (kernel/bpf/syscall.c: bpf_raw_tp_link_attach checks the program's
//!     `max_ctx_offset` against the tracepoint's arguments), so there are two programs and
//!     the agent loads the one the kernel's BTF says fits (`btf_trace_sched_process_exit`).
//!     The older one reads `p->signal->live`: do_exit() decrements it
//!     (`group_dead = atomic_dec_and_test(&tsk->signal->live)`) before that tracepoint, so
//!     0 there means the last thread.
use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use collector_common::{ExitClaim, MapErrorSite, PID_TREE, TargetId, events::EventKind, target_slot};

use crate::{
    cgroups::cgroup_target_of,
    events::{Process, emit_exec, emit_process},
    globals::{offset, read_field},
    maps::{
        add_counts, count_map_error, forget_current_task, release_entry_of, rename_entry_of, set_target_value,
        target_of_current, target_value,
    },
    oom, sched,
};

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn collector_sched_switch(ctx: RawTracePointContext) -> i32 {
    // First: it takes the leaving thread's target from the cache this clears.
    sched::switched_out(&ctx);
    forget_current_task();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn collector_fork(ctx: RawTracePointContext) -> i32 {
    // The parent is the current task.
    let parent = target_value(ctx.tgid());
    let child: *const u8 = ctx.arg(1);
    let (Ok(pid), Ok(tgid)) = (
        read_field::<i32>(child, offset!(task_pid)),
        read_field::<i32>(child, offset!(task_tgid)),
    ) else {
        // The child cannot be followed: count it as a lost TARGET_OF update.
        count_map_error(MapErrorSite::TargetOf);
        return 0;
    };
    let is_process = pid == tgid;
    // A new process stays in its parent's --pid tree; otherwise its cgroup decides, which
    // also catches a child that clone3(CLONE_INTO_CGROUP) started in another cgroup. A new
    // thread is in its process.
    let value = if !is_process || parent & PID_TREE != 0 {
        parent
    } else {
        cgroup_target_of(child)
    };
    // Written for every new process, 0 (a removal) included: an entry left by an earlier
    // process with this pid (one the agent added as it exited) must not pass to the newcomer.
    if is_process && !set_target_value(pid as u32, value) && value != 0 {
        warn!(
            &ctx,
            "cannot follow child {} of a target: TARGET_OF is full (--max-target-processes)", pid
        );
        return 0;
    }
    let Some(target_id) = TargetId::from_slot(target_slot(value)) else {
        return 0;
    };
    add_counts(target_id, is_process as i64, 1);
    sched::born(child, pid as u32, target_slot(value));
    if is_process {
        let p = Process {
            target: target_slot(value),
            pid: pid as u32,
            ppid: ctx.tgid(),
            // The start record's use of the field: the parent's target, if any.
            exit_code: target_slot(parent),
            start_ns: 0,
        };
        emit_process(EventKind::ProcessStart, &p);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn collector_exec(ctx: RawTracePointContext) -> i32 {
    let old_pid: i32 = ctx.arg(1);
    let pid = ctx.pid();
    if old_pid as u32 != pid {
        // A non-leader thread exec'd and now has the leader's pid: its slot, which may hold
        // its execve() entry, must be found under the new one (whatever its target now, so
        // that the slot still goes back at its exit).
        rename_entry_of(old_pid as u32, pid);
        sched::renamed(old_pid as u32, pid);
    }
    let Some((target, _)) = target_of_current() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(2);
    let filename = read_field::<*const u8>(bprm, offset!(binprm_filename)).unwrap_or(core::ptr::null());
    let p = Process {
        target,
        pid: ctx.tgid(),
        ppid: 0,
        exit_code: 0,
        start_ns: 0,
    };
    emit_exec(&p, filename);
    0
}

/// Linux 6.16+: the tracepoint says whether the group is dead.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn collector_exit(ctx: RawTracePointContext) -> i32 {
    on_exit(&ctx, |ctx, _| ctx.arg::<u64>(1) & 0xff != 0)
}

/// Threads of a process that found `signal->live` at 0 on their way out: the first to claim
/// the process reports its exit. LRU, so claims of long-gone processes make room; a claim is
/// only needed for the moment the process's threads are dying.
#[map]
static EXIT_CLAIMS: LruHashMap<ExitClaim, u8> = LruHashMap::with_max_entries(1024, 0);

/// Before 6.16: the group is dead once its live threads reach 0. Several threads can see 0
/// (those whose decrement came before the last one, still on their way to the tracepoint:
/// exit_mm() lies between), so the first to claim the process is the one that ends it.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn collector_exit_live(ctx: RawTracePointContext) -> i32 {
    on_exit(&ctx, |ctx, task| {
        let live = read_field::<*const u8>(task, offset!(task_signal))
            .and_then(|signal| read_field::<i32>(signal, offset!(signal_live)));
        if live != Ok(0) {
            return false;
        }
        let leader = read_field::<*const u8>(task, offset!(task_group_leader)).unwrap_or(task);
        let claim = ExitClaim {
            tgid: ctx.tgid(),
            _pad: 0,
            start_ns: read_field::<u64>(leader, offset!(task_start_time)).unwrap_or(0),
        };
        EXIT_CLAIMS.insert(&claim, &0, u64::from(BPF_NOEXIST)).is_ok()
    })
}

#[inline(always)]
fn on_exit(ctx: &RawTracePointContext, group_dead: impl Fn(&RawTracePointContext, *const u8) -> bool) -> i32 {
    // The thread dies inside exit()/exit_group() (or a fatal signal), whose sys_exit never
    // comes: its ENTRY slot goes back, cleared. Whatever its target now: it may have left
    // its target while inside that syscall.
    release_entry_of(ctx.pid());
    let tgid = ctx.tgid();
    let value = target_value(tgid);
    // Before the group's exit takes its TARGET_OF entry, with which the thread's last
    // switch would find its counters.
    sched::exited(ctx.arg(0), ctx.pid(), target_slot(value));
    if value == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    let group_dead = group_dead(ctx, task);
    let target = target_slot(value);
    let Some(target_id) = TargetId::from_slot(target) else {
        // It left its target (LEFT_TARGET): only its mark goes, with the process.
        if group_dead {
            set_target_value(tgid, 0);
        }
        return 0;
    };
    add_counts(target_id, -(group_dead as i64), -1);
    if !group_dead {
        return 0;
    }
    set_target_value(tgid, 0);
    // The process's lifetime runs from its leader's start, whichever thread dies last.
    let leader = read_field::<*const u8>(task, offset!(task_group_leader)).unwrap_or(task);
    let p = Process {
        target,
        pid: tgid,
        ppid: 0,
        exit_code: read_field::<i32>(task, offset!(task_exit_code)).unwrap_or(0) as u32,
        start_ns: read_field::<u64>(leader, offset!(task_start_time)).unwrap_or(0),
    };
    emit_process(EventKind::ProcessExit, &p);
    oom::forget(tgid, p.start_ns);
    0
}

//! On-CPU time, run-queue latency, context switches and page faults of target threads,
//! aggregated per target in the kernel (`SCHED_STATS`): nothing goes to userspace per switch.
//!
//! The kernel already counts all of these per thread, exactly, in `struct task_struct`
//! (include/linux/sched.h). This family reads a target thread's counters each time it leaves
//! a CPU and adds what they grew by since the last time to its target:
//!   se.sum_exec_runtime   ns on a CPU, brought up to date by update_curr() when the thread
//!                         is dequeued or put back (kernel/sched/fair.c) before the
//!                         tracepoint fires;
//!   sched_info.run_delay  ns runnable but waiting for a CPU, and sched_info.pcount the
//!   sched_info.pcount     number of such waits that ended (kernel/sched/stats.h
//!                         sched_info_arrive(): one per arrival on a CPU; the wait starts
//!                         at the wakeup's enqueue, or at sched_info_depart() when the
//!                         thread was preempted while runnable: what `runqlat` measures);
//!   nvcsw, nivcsw         voluntary and involuntary switches: __schedule() increments one
//!                         of them (kernel/sched/core.c: `switch_count`) just before
//!                         trace_sched_switch();
//!   min_flt, maj_flt      page faults without and with I/O (mm/memory.c
//!                         mm_account_fault()).
//! Each switch-out ends exactly one arrival (the one that put the thread on this CPU), so the
//! run_delay difference is that one wait, which goes into a log2 bucket as the syscall
//! latencies do. Off-CPU time by reason follows: runnable (waiting for a CPU, after a
//! wakeup or a preemption) is run_delay; blocked (sleeping, waiting for I/O or a lock) is
//! the rest of the wall time between two readings, less the time on a CPU and the waits
//! (so it also holds interrupt and hypervisor steal time where the kernel keeps those out
//! of sum_exec_runtime: CONFIG_IRQ_TIME_ACCOUNTING, CONFIG_PARAVIRT_TIME_ACCOUNTING). This needs CONFIG_SCHED_INFO (`sched_info` is in BTF only then); before
//! Linux 5.14 its accounting also needs `sched_info_on()` (CONFIG_SCHEDSTATS, or delay
//! accounting, which those kernels enable by default).
//!
//! Why not the tracepoints' own arguments: `sched_switch`'s `prev_state` came with Linux
//! 5.18, and `preempt` says neither that the thread blocked (a pending signal makes a
//! sleep a preemption) nor how long it waited; no tracepoint says whether a fault was
//! minor or major (`exceptions:page_fault_user`, x86 only, fires before the fault is
//! handled); and a program per fault or per wakeup would cost every process on the host,
//! where this costs non-targets nothing beyond `sched_switch`'s target check.
//!
//! Hook: sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
//! (include/trace/events/sched.h), from __schedule() before context_switch(): `prev` is still
//! `current`. Called by `processes.rs`'s program (one program per switch, not two), behind
//! `SWITCH_SCHED`. A thread's counts end at `sched_process_exit` (kernel/exit.c: do_exit()),
//! which adds what they grew by since its last switch and deletes its `SCHED_THREADS`
//! entry, whatever its target then: its last switch (TASK_DEAD, in do_task_dead()) comes
//! after the group's exit deleted its `TARGET_OF` entry, so that switch could not find the
//! entry of a thread whose process had left (or whose switch missed the cache). What the
//! thread does between the two (exit_mm(), exit_files(), the last switch) is not counted:
//! microseconds, a switch, no fault.
//!
//! A thread's first switch-out as a target only takes its counters as the starting point,
//! unless it was forked by a target (`born`), whose starting point is its counters at fork:
//! so a new process is counted from its first instruction.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use collector_common::{
    MapErrorSite, TargetId, histogram,
    maps::{MAX_TARGETS, SWITCH_SCHED, TARGET_THREADS_ENTRIES},
    sched::{SchedStats, ThreadSched},
};

use crate::{
    globals::{offset, read_field},
    maps::{count_map_error, switched_on, target_of_running},
};

/// include/linux/sched.h: the state of a thread's last switch, and the flag exit_signals()
/// sets at the start of do_exit().
const TASK_DEAD: u32 = 0x80;
const PF_EXITING: u32 = 0x4;

/// Each target thread's counters as last read, by tid.
#[map]
pub static SCHED_THREADS: HashMap<u32, ThreadSched> = HashMap::with_max_entries(TARGET_THREADS_ENTRIES, 0);

/// Per target id: what its threads' counters grew by.
#[map]
pub static SCHED_STATS: PerCpuArray<SchedStats> = PerCpuArray::with_max_entries(MAX_TARGETS, 0);

/// `prev` leaves this CPU.
#[inline(always)]
pub fn switched_out(ctx: &RawTracePointContext) {
    if !switched_on(SWITCH_SCHED) {
        return;
    }
    let Some((target, tid)) = target_of_running() else {
        return;
    };
    let prev: *const u8 = ctx.arg(1);
    let Some(now) = read(prev, target) else {
        return;
    };
    match SCHED_THREADS.get_ptr_mut(&tid) {
        Some(last) => {
            let last = unsafe { &mut *last };
            add(target, last, &now, true);
            if read_field::<u32>(prev, offset!(task_state)).is_ok_and(|s| s & TASK_DEAD != 0) {
                let _ = SCHED_THREADS.remove(&tid);
            } else {
                *last = now;
            }
        }
        // An exiting thread starts no entry: its last switch may not find it.
        None if read_field::<u32>(prev, offset!(task_flags)).is_ok_and(|f| f & PF_EXITING == 0) => keep(tid, &now),
        None => {}
    }
}

/// A target forked `child` (a process or a thread of `target`): its counters now are where
/// it starts from.
#[inline(always)]
pub fn born(child: *const u8, tid: u32, target: u32) {
    if !switched_on(SWITCH_SCHED) {
        return;
    }
    if let Some(now) = read(child, target) {
        keep(tid, &now);
    }
}

/// Thread `tid` (`task`, current) exits, its process now in `target` (0: none). One lookup
/// for every thread that exits on the host. An entry of a thread no longer in a target goes.
/// A target thread's counters are settled as they are now (its CPU time is as of its last
/// tick or switch: update_curr() runs at those) and its entry kept for its last switch,
/// which adds the rest (the exit's last slice of CPU time, and the blocked time over the
/// whole interval) and deletes it. That switch may not find it (the last thread's group
/// exit deleted `TARGET_OF`, and a switch during the exit cleared `CURRENT`): then only that
/// rest is lost, and the entry stays until its target's id is freed; its tid reused by
/// another thread is told apart by the thread's start time.
#[inline(always)]
pub fn exited(task: *const u8, tid: u32, target: u32) {
    let Some(last) = SCHED_THREADS.get_ptr_mut(&tid) else {
        return;
    };
    if target == 0 {
        let _ = SCHED_THREADS.remove(&tid);
        return;
    }
    let last = unsafe { &mut *last };
    if let Some(now) = read(task, target) {
        add(target, last, &now, false);
        // The blocked time is taken over the whole interval at the last switch.
        *last = ThreadSched {
            at_ns: last.at_ns,
            ..now
        };
    }
}

/// A non-leader thread exec'd and took the leader's pid (`old_tid` -> `tid`): its counters
/// go on under the new one (the leader's entry went at its exit).
#[inline(always)]
pub fn renamed(old_tid: u32, tid: u32) {
    let Some(&last) = (unsafe { SCHED_THREADS.get(&old_tid) }) else {
        return;
    };
    if SCHED_THREADS.remove(&old_tid).is_ok() {
        keep(tid, &last);
    }
}

#[inline(always)]
fn keep(tid: u32, now: &ThreadSched) {
    if SCHED_THREADS.insert(&tid, now, 0).is_err() {
        count_map_error(MapErrorSite::SchedThreads);
    }
}

/// `task`'s counters, under `target`.
#[inline(always)]
fn read(task: *const u8, target: u32) -> Option<ThreadSched> {
    Some(ThreadSched {
        target,
        _pad: 0,
        runtime_ns: read_field(task, offset!(task_sum_exec_runtime)).ok()?,
        run_delay_ns: read_field(task, offset!(task_run_delay)).ok()?,
        arrivals: read_field(task, offset!(task_pcount)).ok()?,
        voluntary: read_field(task, offset!(task_nvcsw)).ok()?,
        involuntary: read_field(task, offset!(task_nivcsw)).ok()?,
        minor_faults: read_field(task, offset!(task_min_flt)).ok()?,
        major_faults: read_field(task, offset!(task_maj_flt)).ok()?,
        start_ns: read_field(task, offset!(task_start_time)).ok()?,
        at_ns: unsafe { bpf_ktime_get_ns() },
    })
}

/// Adds what the counters grew by from `last` to `now` to `target`'s aggregate, if `last`
/// was read under that target and from the same thread (a tid is reused; its start time
/// tells the threads apart), and, with `blocked`, the time between them off a CPU and not
/// runnable.
#[inline(always)]
fn add(target: u32, last: &ThreadSched, now: &ThreadSched, blocked: bool) {
    if last.target != target || last.start_ns != now.start_ns {
        return;
    }
    let Some(stats) = TargetId::from_slot(target).and_then(|t| SCHED_STATS.get_ptr_mut(t.0)) else {
        return;
    };
    let stats = unsafe { &mut *stats };
    stats.cpu_ns += now.runtime_ns.wrapping_sub(last.runtime_ns);
    stats.voluntary += now.voluntary.wrapping_sub(last.voluntary);
    stats.involuntary += now.involuntary.wrapping_sub(last.involuntary);
    stats.minor_faults += now.minor_faults.wrapping_sub(last.minor_faults);
    stats.major_faults += now.major_faults.wrapping_sub(last.major_faults);
    // The total always (a wait cut short by a dequeue adds to run_delay without ending in an
    // arrival: kernel/sched/stats.h sched_info_dequeue()), so that the sum is /proc's.
    let waited = now.run_delay_ns.wrapping_sub(last.run_delay_ns);
    stats.runqueue_sum_ns += waited;
    // The rest of the time between the readings: off a CPU and not runnable.
    let ran = now.runtime_ns.wrapping_sub(last.runtime_ns);
    let between = now.at_ns.wrapping_sub(last.at_ns);
    if blocked && between > ran + waited {
        stats.blocked_ns += between - ran - waited;
    }
    let waits = now.arrivals.wrapping_sub(last.arrivals);
    if waits == 0 {
        return;
    }
    // One wait per switch-out; several only when switches went unseen (then their mean).
    let bucket = histogram::bucket_of(waited / waits);
    if let Some(n) = stats.runqueue_buckets.get_mut(bucket) {
        *n += waits;
    }
}

//! Cgroup targets: every process in a target cgroup v2 (or below it) belongs to the deepest
//! target cgroup above it, unless a `--pid` tree claims it (`PID_TREE`).
//!
//! Membership lives in `TARGET_OF` like PID targets, so the syscall path costs the same
//! for both. It is computed from the task's own cgroup v2:
//! task->cgroups (struct css_set) ->dfl_cgrp (its cgroup on the default, v2, hierarchy),
//! then ->ancestors[level..0] (include/linux/cgroup-defs.h: ancestors[i] is the ancestor at
//! level i, ancestors[level] the cgroup itself), each ->kn->id (the cgroup id: the inode
//! number of its directory) looked up in `CGROUP_TARGETS`. Before Linux 6.0 the array held
//! the ids themselves, `u64 ancestor_ids[]` (Linux 5.10 include/linux/cgroup-defs.h, filled
//! with cgroup_id() = kn->id by kernel/cgroup/cgroup.c:cgroup_create()); the agent says which
//! the kernel has (`KernelFeatures::cgroup_ancestor_ids`). Not the hook's `dst_cgrp`: on
//! hybrid hosts attaches to v1 hierarchies fire too, and kernfs ids of different
//! hierarchies can collide.
//!
//! Hook (include/trace/events/cgroup.h, Linux 6.18):
//!   cgroup:cgroup_attach_task(struct cgroup *dst_cgrp, const char *path,
//!                             struct task_struct *task, bool threadgroup)
//!     fired by kernel/cgroup/cgroup.c:cgroup_attach_task() after a successful migration
//!     (task->cgroups already points at the new css_set), once for the moved process's
//!     leader, in the task that wrote cgroup.procs. Forks are handled in `processes.rs`
//!     (a child can start in another cgroup with CLONE_INTO_CGROUP).
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};
use collector_common::{LEFT_TARGET, PID_TREE, TargetId, maps::MAX_TARGETS, target_slot};

use crate::{
    globals::{kernel_feature, offset, read_field},
    maps::{add_counts, set_target_value, target_value, targets_changed},
};

/// Levels of cgroup nesting looked at: a cgroup nested deeper than this is matched only by
/// its ancestors at levels 0..=31 (the agent applies the same limit).
const MAX_DEPTH: i32 = 32;

/// Target cgroups: cgroup id -> [`TargetId::slot`]. Written by the agent.
#[map]
pub static CGROUP_TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The slot of the deepest target cgroup `task` is in or below; 0 when none.
#[inline(always)]
pub fn cgroup_target_of(task: *const u8) -> u32 {
    let Ok(css_set) = read_field::<*const u8>(task, offset!(task_cgroups)) else {
        return 0;
    };
    let Ok(cgroup) = read_field::<*const u8>(css_set, offset!(css_set_dfl_cgrp)) else {
        return 0;
    };
    let level = read_field::<i32>(cgroup, offset!(cgroup_level)).unwrap_or(0);
    let ancestors = offset!(cgroup_ancestors);
    let mut i = level.min(MAX_DEPTH - 1);
    for _ in 0..MAX_DEPTH {
        if i < 0 {
            break;
        }
        let at = ancestors + (i as u32) * size_of::<u64>() as u32;
        if let Some(id) = ancestor_id(cgroup, at)
            && let Some(slot) = unsafe { CGROUP_TARGETS.get(&id) }
        {
            return *slot;
        }
        i -= 1;
    }
    0
}

/// The id of the ancestor whose entry is `at` bytes into `cgroup`: the entry itself before
/// Linux 6.0, else ->kn->id of the cgroup it points to.
#[inline(always)]
fn ancestor_id(cgroup: *const u8, at: u32) -> Option<u64> {
    if kernel_feature!(cgroup_ancestor_ids) == 1 {
        return read_field::<u64>(cgroup, at).ok();
    }
    let ancestor = read_field::<*const u8>(cgroup, at).ok()?;
    let kn = read_field::<*const u8>(ancestor, offset!(cgroup_kn)).ok()?;
    read_field::<u64>(kn, offset!(kernfs_node_id)).ok()
}

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn collector_cgroup_attach_task(ctx: RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(2);
    let Ok(tgid) = read_field::<i32>(task, offset!(task_tgid)) else {
        return 0;
    };
    let tgid = tgid as u32;
    let old = target_value(tgid);
    if old & PID_TREE != 0 {
        return 0;
    }
    // Leaving a target leaves a mark: its threads may be inside syscalls entered as one.
    let new = match cgroup_target_of(task) {
        0 if old != 0 => LEFT_TARGET,
        slot => slot,
    };
    if new == old {
        return 0;
    }
    if !set_target_value(tgid, new) {
        return 0;
    }
    // The process takes its live threads along from the old target to the new one
    // (signal->live drops before a thread's exit tracepoint, which counted it out already;
    // nr_threads only drops later, at release).
    let threads = read_field::<*const u8>(task, offset!(task_signal))
        .and_then(|signal| read_field::<i32>(signal, offset!(signal_live)))
        .unwrap_or(1) as i64;
    if let Some(id) = TargetId::from_slot(target_slot(old)) {
        add_counts(id, -1, -threads);
    }
    if let Some(id) = TargetId::from_slot(target_slot(new)) {
        add_counts(id, 1, threads);
    }
    // Its threads may be running on other CPUs (or this one: the writer may have moved
    // itself); their next syscall looks TARGET_OF up again.
    targets_changed();
    0
}

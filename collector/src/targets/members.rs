//! Putting processes that already exist into their targets, in the kernel's `TARGET_OF` and
//! in each target's starting counts: the named PIDs, their descendants, the members of
//! target cgroups. From then on the kernel's fork, exit and cgroup-attach probes keep
//! membership current; every write here re-checks the process afterwards, so a process that
//! exited (or a PID that was reused) meanwhile never keeps or inherits a target.
use std::collections::HashMap;

use collector_common::{TargetId, events::TargetCounts};

use super::{
    cgroup::{fs::Cgroup, proc_path},
    error::TargetError,
    proc::{self, Seen},
    set::TargetSet,
};
use crate::kernel::maps::{KernelMapError, KernelMaps, Membership};

/// Passes over /proc for pre-existing descendants before giving up on a fixpoint.
const DESCENDANT_PASSES: usize = 5;

/// Makes `pid` a member of `target` in the kernel, provided it is still the process seen
/// started at `started`, and returns what it adds to the target's counts. A process that
/// exited in between, or whose PID was reused, must not stay a target: its entry is taken
/// back out, unless the exit probe saw it exit as a target, cleared the entry and counted the
/// exit (then the returned counts balance that).
pub(super) fn insert_pid(
    maps: &mut KernelMaps,
    pid: u32,
    target: TargetId,
    started: u64,
) -> Result<Option<TargetCounts>, KernelMapError> {
    let counts = TargetCounts {
        processes: 1,
        threads: proc::thread_count(pid),
    };
    maps.set_target(pid, Some((target, Membership::PidTree)))?;
    if proc::start_time(pid) == Some(started) || maps.target_of(pid)?.is_none() {
        return Ok(Some(counts));
    }
    undo(maps, pid, None)?;
    Ok(None)
}

/// Takes back the `TARGET_OF` entry just written for `pid`, which exited or changed since it
/// was seen: what it was `before`, or none at all if the process is gone.
fn undo(maps: &mut KernelMaps, pid: u32, before: Option<(TargetId, Membership)>) -> Result<(), KernelMapError> {
    if proc::start_time(pid).is_none() {
        maps.forget_process(pid)
    } else {
        maps.set_target(pid, before)
    }
}

/// Puts the descendants of the named PIDs that existed before the fork probe attached into
/// their target, repeating until a pass finds none new (a child forked by a not-yet-known
/// descendant during a pass is found by the next).
pub(super) fn follow_descendants(set: &mut TargetSet, maps: &mut KernelMaps) -> Result<(), TargetError> {
    let roots: HashMap<u32, TargetId> = set.pids().iter().copied().collect();
    for _ in 0..DESCENDANT_PASSES {
        let mut added = 0;
        let tree = proc::process_tree()?;
        let parents: Vec<(u32, u32)> = tree.iter().map(|&(pid, ppid, _)| (pid, ppid)).collect();
        let started: HashMap<u32, u64> = tree.iter().map(|&(pid, _, start)| (pid, start)).collect();
        for (pid, target) in descendants(&parents, &roots) {
            if matches!(maps.target_of(pid)?, Some((_, Membership::PidTree))) {
                continue; // already followed by the kernel, or by an earlier pass
            }
            if let Some(counts) = insert_pid(maps, pid, target, started[&pid])? {
                set.add_initial(target, counts.processes, counts.threads);
                added += 1;
            }
        }
        if added == 0 {
            return Ok(());
        }
        tracing::debug!(added, "followed existing descendants");
    }
    tracing::warn!(
        "processes kept forking while descendants were being discovered; later forks are followed by the kernel"
    );
    Ok(())
}

/// The processes that descend from `roots`, each with the target of its nearest root
/// ancestor (a PID named on the command line beats an ancestor's target). `processes` is
/// every (pid, ppid) on the host; roots themselves are not returned.
pub fn descendants(processes: &[(u32, u32)], roots: &HashMap<u32, TargetId>) -> Vec<(u32, TargetId)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in processes {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut stack: Vec<(u32, TargetId)> = roots.iter().map(|(&pid, &t)| (pid, t)).collect();
    while let Some((parent, target)) = stack.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if roots.contains_key(&child) {
                continue; // a root of its own, walked from there
            }
            found.push((child, target));
            stack.push((child, target));
        }
    }
    found
}

/// Adds `cgroup` as a target, in the agent's set and in the kernel's `CGROUP_TARGETS`.
/// `None` when --max-targets are taken (counted in the set), or when the kernel map
/// refused it (then the target is taken back out: it would never see a process).
pub(super) fn add_cgroup(
    set: &mut TargetSet,
    maps: &mut KernelMaps,
    name: String,
    cgroup: &Cgroup,
) -> Option<TargetId> {
    let Some(target) = set.add_cgroup(name, proc_path(cgroup), cgroup.id) else {
        tracing::warn!(cgroup = %cgroup.path.display(), "--max-targets reached; the cgroup is not observed");
        return None;
    };
    if let Err(e) = maps.add_cgroup(cgroup.id, target) {
        tracing::warn!(cgroup = %cgroup.path.display(), "cannot add the cgroup to the kernel's targets: {e}");
        set.free(target);
        return None;
    }
    Some(target)
}

/// Puts each process `seen` into the deepest target cgroup it is in, unless a `--pid` tree
/// has it, and counts it into that target's starting processes and threads. A process that
/// exited, or moved, since it was seen is left as the kernel has it (the fork, exit and
/// attach probes keep those current), so a recycled PID never inherits a target from here.
pub(super) fn join(set: &mut TargetSet, maps: &mut KernelMaps, seen: &[Seen]) -> Result<(), KernelMapError> {
    for p in seen {
        let before = maps.target_of(p.pid)?;
        if matches!(before, Some((_, Membership::PidTree))) {
            continue;
        }
        let Some(target) = set.deepest_cgroup_target(&p.path) else {
            continue;
        };
        if before == Some((target, Membership::Cgroup)) {
            continue; // the kernel got there first (a fork or a move)
        }
        maps.set_target(p.pid, Some((target, Membership::Cgroup)))?;
        let threads = proc::thread_count(p.pid);
        let unchanged =
            proc::start_time(p.pid) == Some(p.started) && proc::v2_path_of(p.pid).as_deref() == Some(&p.path);
        if !unchanged {
            undo(maps, p.pid, before)?;
            continue;
        }
        if let Some((old, _)) = before {
            set.add_initial(old, -1, -threads);
        }
        set.add_initial(target, 1, threads);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_take_the_target_of_their_nearest_named_ancestor() {
        // 1 -> 10 (target a) -> 11 -> 12 (target b) -> 13; 1 -> 20 (not a target)
        let procs = [(10, 1), (11, 10), (12, 11), (13, 12), (20, 1), (21, 20)];
        let roots = HashMap::from([(10, TargetId(0)), (12, TargetId(1))]);
        let mut found = descendants(&procs, &roots);
        found.sort();
        assert_eq!(found, vec![(11, TargetId(0)), (13, TargetId(1))]);
    }
}

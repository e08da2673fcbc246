//! Putting processes that already exist into their targets, in the kernel's `TARGET_OF` and
//! in each target's starting counts: the named PIDs, their descendants, the members of
//! target cgroups; and taking them out of targets a reload removed. From then on the kernel's fork, exit and cgroup-attach probes keep
//! membership current; every write here re-checks the process afterwards, so a process that
//! exited (or a PID that was reused) meanwhile never keeps or inherits a target.
use std::collections::HashMap;

use collector_common::TargetId;

use super::{
    cgroup::{Named, proc_path},
    error::TargetError,
    proc::{self, Seen},
    set::TargetSet,
};
use crate::kernel::maps::{KernelMapError, KernelMaps, Membership};

/// Passes over /proc for pre-existing descendants before giving up on a fixpoint.
const DESCENDANT_PASSES: usize = 5;

/// Makes `pid` a member of `target` in the kernel, provided it is still the process seen
/// started at `started`, and counts it into the target's starting counts (out of the
/// target it was in, if any). A process that exited in between, or whose PID was reused,
/// must not stay a target: its entry is taken back out, unless the exit probe saw it exit
/// as a target, cleared the entry and counted the exit (then these counts balance that).
/// Returns whether it was added.
pub(super) fn insert_pid(
    set: &mut TargetSet,
    maps: &mut KernelMaps,
    pid: u32,
    target: TargetId,
    started: u64,
) -> Result<bool, KernelMapError> {
    let before = maps.target_of(pid)?;
    let threads = proc::thread_count(pid);
    maps.set_target(pid, Some((target, Membership::PidTree)))?;
    if proc::start_time(pid) == Some(started) || maps.target_of(pid)?.is_none() {
        if let Some((old, _)) = before {
            set.add_initial(old, -1, -threads);
        }
        set.add_initial(target, 1, threads);
        return Ok(true);
    }
    undo(maps, pid, before)?;
    Ok(false)
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

/// Puts the existing descendants of `roots` (named PIDs) into their target, repeating until
/// a pass finds none new (a child forked by a not-yet-known descendant during a pass is
/// found by the next). One already in another `--pid` tree moves when its nearest root is
/// one of `roots` (a PID a reload named inside another's tree).
pub(super) fn follow_descendants(
    set: &mut TargetSet,
    maps: &mut KernelMaps,
    roots: &[(u32, TargetId)],
) -> Result<(), TargetError> {
    let mut nearest: HashMap<u32, Option<TargetId>> = set.pids().iter().map(|&(pid, _)| (pid, None)).collect();
    nearest.extend(roots.iter().map(|&(pid, t)| (pid, Some(t))));
    for _ in 0..DESCENDANT_PASSES {
        let mut added = 0;
        let tree = proc::process_tree()?;
        let parents: Vec<(u32, u32)> = tree.iter().map(|&(pid, ppid, _)| (pid, ppid)).collect();
        let started: HashMap<u32, u64> = tree.iter().map(|&(pid, _, start)| (pid, start)).collect();
        for (pid, target) in descendants(&parents, &nearest) {
            let Some(target) = target else {
                continue; // nearer to a root that is not being followed here
            };
            if maps.target_of(pid)? == Some((target, Membership::PidTree)) {
                continue; // already followed by the kernel, or by an earlier pass
            }
            if insert_pid(set, maps, pid, target, started[&pid])? {
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

/// The processes that descend from `roots`, each with the value of its nearest root
/// ancestor (a PID named on the command line beats an ancestor's target). `processes` is
/// every (pid, ppid) on the host; roots themselves are not returned.
pub fn descendants<T: Copy>(processes: &[(u32, u32)], roots: &HashMap<u32, T>) -> Vec<(u32, T)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in processes {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut stack: Vec<(u32, T)> = roots.iter().map(|(&pid, &t)| (pid, t)).collect();
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

/// Adds a cgroup as a target, in the agent's set and in the kernel's `CGROUP_TARGETS`.
/// `None` when --max-targets are taken (counted in the set), or when the kernel map
/// refused it (then the target is taken back out: it would never see a process).
pub(super) fn add_cgroup(set: &mut TargetSet, maps: &mut KernelMaps, named: &Named) -> Option<TargetId> {
    let cgroup = &named.cgroup;
    let Some(target) = set.add_cgroup(named.name.clone(), proc_path(cgroup), cgroup.id, named.workload.clone()) else {
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

/// Puts each process `seen` into the deepest live target cgroup it is in, or out of the
/// cgroup target it was in when it is in none any more (that target was removed), unless a
/// `--pid` tree has it.
pub(super) fn join(set: &mut TargetSet, maps: &mut KernelMaps, seen: &[Seen]) -> Result<(), KernelMapError> {
    for p in seen {
        let before = maps.target_of(p.pid)?;
        if matches!(before, Some((_, Membership::PidTree))) {
            continue;
        }
        let to = set.deepest_cgroup_target(&p.path).map(|t| (t, Membership::Cgroup));
        move_process(set, maps, p, before, to)?;
    }
    Ok(())
}

/// Takes the processes of PID target `target` that came from `root`, a root a reload no
/// longer names, out of it and into the deepest live target cgroup each is in, if any. When
/// `root` was its last root, that is every process the kernel has in it: found in
/// `TARGET_OF` itself (a daemon reparented to init goes too), pass after pass until none
/// moves (a child forked during one is found by the next). Else it is `root` and the
/// descendants no other root is nearer to, by /proc.
pub(super) fn leave_pid_tree(
    set: &mut TargetSet,
    maps: &mut KernelMaps,
    root: u32,
    target: TargetId,
) -> Result<(), TargetError> {
    let last = !set.pids().iter().any(|&(pid, t)| t == target && pid != root);
    let tree: Vec<u32> = if last {
        Vec::new()
    } else {
        let parents: Vec<(u32, u32)> = proc::process_tree()?
            .iter()
            .map(|&(pid, ppid, _)| (pid, ppid))
            .collect();
        let mut roots: HashMap<u32, bool> = set.pids().iter().map(|&(pid, _)| (pid, false)).collect();
        roots.insert(root, true);
        let below = descendants(&parents, &roots).into_iter();
        std::iter::once(root)
            .chain(below.filter_map(|(pid, leaving)| leaving.then_some(pid)))
            .collect()
    };
    for _ in 0..DESCENDANT_PASSES {
        let leaving = if last {
            let members = maps.members(target).into_iter();
            members
                .filter(|&(_, m)| m == Membership::PidTree)
                .map(|(pid, _)| pid)
                .collect()
        } else {
            tree.clone()
        };
        let mut moved = 0;
        for pid in leaving {
            let before = maps.target_of(pid)?;
            let Some(started) = proc::start_time(pid) else {
                continue; // gone: the exit probe took its entry
            };
            if before != Some((target, Membership::PidTree)) {
                continue;
            }
            // No v2 cgroup (a host without one, a cgroup being removed): no cgroup target.
            let path = proc::v2_path_of(pid);
            let to = path.as_deref().and_then(|p| set.deepest_cgroup_target(p));
            let p = Seen {
                pid,
                path: path.unwrap_or_default(),
                started,
            };
            move_process(set, maps, &p, before, to.map(|t| (t, Membership::Cgroup)))?;
            moved += 1;
        }
        if !last || moved == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// Moves process `p` from target `before` to `to` in the kernel and in the starting counts
/// of both. A process that exited, or moved, since it was seen is left as the kernel has it
/// (the fork, exit and attach probes keep those current), so a recycled PID never inherits
/// a target from here.
fn move_process(
    set: &mut TargetSet,
    maps: &mut KernelMaps,
    p: &Seen,
    before: Option<(TargetId, Membership)>,
    to: Option<(TargetId, Membership)>,
) -> Result<(), KernelMapError> {
    if before == to {
        return Ok(()); // the kernel got there first (a fork or a move), or nothing to do
    }
    maps.set_target(p.pid, to)?;
    let threads = proc::thread_count(p.pid);
    let unchanged = proc::start_time(p.pid) == Some(p.started) && proc::v2_path_of(p.pid).unwrap_or_default() == p.path;
    if !unchanged {
        return undo(maps, p.pid, before);
    }
    if let Some((old, _)) = before {
        set.add_initial(old, -1, -threads);
    }
    if let Some((new, _)) = to {
        set.add_initial(new, 1, threads);
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

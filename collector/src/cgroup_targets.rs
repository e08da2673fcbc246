//! Cgroup targets in the agent: resolving `--cgroup` and `--cgroup-pattern` at start, putting
//! the processes already in target cgroups into `TARGET_OF`, and a thread that follows
//! cgroups appearing and disappearing while running (`cgroups::watch`).
//!
//! The kernel does the rest (`collector-ebpf/src/cgroups.rs`): children are followed at
//! fork and processes that move are re-targeted at `cgroup_attach_task`, both from
//! `CGROUP_TARGETS`, which this module fills.
//!
//! Which target a process belongs to (documented in the README): an explicit `--pid` tree
//! first, then the deepest target cgroup at or above the process's cgroup v2.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use collector_common::TargetId;

use crate::{
    agent::Failure,
    cgroups::{self, Cgroup, CgroupChange, CgroupFs, CgroupPattern, CgroupSpec, CgroupWatcher},
    kernel_maps::{KernelMapError, KernelMaps, Membership},
    state::AgentState,
    targets::Targets,
};

/// The cgroup side of the command line, resolved.
pub struct CgroupTargets {
    /// `--cgroup` targets (name, cgroup) and the current matches of the patterns.
    pub initial: Vec<(String, Cgroup)>,
    /// Changes to the patterns' matches after `initial`, and what produces them.
    pub changes: Option<(Receiver<CgroupChange>, CgroupWatcher)>,
}

/// Resolves `--cgroup` and `--cgroup-pattern` and starts watching the patterns. A bad path
/// or pattern is a usage error; a pattern that matches nothing only warns.
pub fn resolve(specs: &[CgroupSpec], patterns: &[String]) -> Result<CgroupTargets, Failure> {
    if specs.is_empty() && patterns.is_empty() {
        return Ok(CgroupTargets {
            initial: Vec::new(),
            changes: None,
        });
    }
    let fs = CgroupFs::discover().map_err(|e| Failure::Runtime(e.into()))?;
    let mut initial = Vec::new();
    for spec in specs {
        let cgroup = fs
            .resolve(&spec.path)
            .map_err(|e| Failure::Usage(format!("--cgroup {}: {e}", spec.path)))?;
        initial.push((spec.target_name(&cgroup), cgroup));
    }
    let patterns: Vec<CgroupPattern> = patterns
        .iter()
        .map(|p| CgroupPattern::parse(p, &fs).map_err(|e| Failure::Usage(format!("--cgroup-pattern {p}: {e}"))))
        .collect::<Result<_, _>>()?;
    let changes = if patterns.is_empty() {
        None
    } else {
        let texts: Vec<String> = patterns.iter().map(|p| p.as_str().to_owned()).collect();
        let (matched, changes, watcher) =
            cgroups::watch(fs, patterns, Duration::from_secs(1)).map_err(|e| Failure::Runtime(e.into()))?;
        if matched.is_empty() {
            tracing::warn!(
                patterns = texts.join(", "),
                "no cgroup matches --cgroup-pattern yet; cgroups created later are picked up"
            );
        }
        initial.extend(matched.into_iter().map(|c| (c.name.clone(), c)));
        Some((changes, watcher))
    };
    Ok(CgroupTargets { initial, changes })
}

/// `cgroup` as it appears in /proc/PID/cgroup: relative to the mount, with a leading `/`.
fn proc_path(cgroup: &Cgroup) -> String {
    match cgroup.name.as_str() {
        "/" => "/".to_owned(),
        name => format!("/{name}"),
    }
}

/// Adds `cgroup` as a target, in the agent's set and in the kernel's `CGROUP_TARGETS`.
/// `None` when --max-targets are taken (counted in the set).
pub fn add(targets: &mut Targets, maps: &mut KernelMaps, name: String, cgroup: &Cgroup) -> Option<TargetId> {
    let Some(target) = targets.add_cgroup(name.clone(), proc_path(cgroup), cgroup.id) else {
        tracing::warn!(cgroup = %cgroup.path.display(), "--max-targets reached; the cgroup is not observed");
        return None;
    };
    if let Err(e) = maps.add_cgroup(cgroup.id, target) {
        tracing::warn!(cgroup = %cgroup.path.display(), "cannot add the cgroup to the kernel's targets: {e}");
    }
    Some(target)
}

/// Puts each of `pids` into the deepest target cgroup it is in, unless a `--pid` tree has
/// it, and counts it into that target's starting processes and threads.
pub fn join(targets: &mut Targets, maps: &mut KernelMaps, pids: impl IntoIterator<Item = u32>) -> Result<(), KernelMapError> {
    for pid in pids {
        let Some(path) = cgroups::v2_path_of(pid) else {
            continue; // exited meanwhile
        };
        let before = maps.target_of(pid)?;
        if matches!(before, Some((_, Membership::PidTree))) {
            continue;
        }
        let Some(target) = targets.deepest_cgroup_target(&path) else {
            continue;
        };
        if before == Some((target, Membership::Cgroup)) {
            continue; // the kernel got there first (a fork or a move)
        }
        maps.set_target(pid, Some((target, Membership::Cgroup)))?;
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(1, |d| d.count()) as i64;
        if let Some((old, _)) = before {
            targets.add_initial(old, -1, -threads);
        }
        targets.add_initial(target, 1, threads);
    }
    Ok(())
}

/// Every process on the host.
pub fn all_pids() -> Vec<u32> {
    procfs::process::all_processes()
        .map(|all| all.filter_map(|p| p.ok().map(|p| p.pid as u32)).collect())
        .unwrap_or_default()
}

/// Follows the patterns' cgroups while running: a new match becomes a target at once, with
/// the processes already in it; a removed cgroup leaves `CGROUP_TARGETS` at once and its
/// series after `ttl`.
pub fn spawn_watcher(
    state: Arc<AgentState>,
    changes: Option<(Receiver<CgroupChange>, CgroupWatcher)>,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("cgroup-watcher".into())
        .spawn(move || {
            let (changes, _watcher) = match changes {
                Some((rx, w)) => (Some(rx), Some(w)),
                None => (None, None),
            };
            while !stop.load(Ordering::Relaxed) {
                let change = match &changes {
                    Some(rx) => match rx.recv_timeout(Duration::from_millis(250)) {
                        Ok(change) => Some(change),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            tracing::warn!("the cgroup watcher stopped; new cgroups are no longer picked up");
                            return;
                        }
                    },
                    None => {
                        std::thread::sleep(Duration::from_millis(250));
                        None
                    }
                };
                if let Some(change) = change {
                    apply(&state, change);
                }
                expire(&state, ttl);
            }
        })
        .expect("spawn the cgroup watcher")
}

fn apply(state: &AgentState, change: CgroupChange) {
    let mut targets = state.targets.write().expect("never poisoned");
    let mut maps = state.maps();
    match change {
        CgroupChange::Added(cgroup) => {
            let Some(target) = add(&mut targets, &mut maps, cgroup.name.clone(), &cgroup) else {
                return;
            };
            tracing::info!(target = %cgroup.name, "cgroup target added");
            // Processes moved in between mkdir and now were not seen by the kernel hook.
            let pids = cgroups::procs_recursive(&cgroup.path).unwrap_or_default();
            if let Err(e) = join(&mut targets, &mut maps, pids) {
                tracing::warn!(target = %cgroup.name, "cannot add the cgroup's processes: {e}");
            }
            let _ = target;
        }
        CgroupChange::Removed(cgroup) => {
            if targets.remove_cgroup(cgroup.id, Instant::now()).is_some() {
                if let Err(e) = maps.remove_cgroup(cgroup.id) {
                    tracing::warn!(target = %cgroup.name, "cannot remove the cgroup from the kernel's targets: {e}");
                }
                tracing::info!(target = %cgroup.name, "cgroup target removed; its series expire after --series-ttl");
            }
        }
    }
}

/// Deletes what the kernel aggregated for targets removed more than `ttl` ago, drops their
/// series, and frees their ids.
fn expire(state: &AgentState, ttl: Duration) {
    let expired = state.targets().expired(ttl, Instant::now());
    for (id, name) in expired {
        if let Err(e) = state.maps().forget_target(id) {
            tracing::warn!(target = %name, "cannot delete the target's kernel aggregates: {e}");
            continue;
        }
        state.event_metrics.forget_target(&name);
        state.targets.write().expect("never poisoned").free(id);
        tracing::debug!(target = %name, "series of the removed target expired");
    }
}

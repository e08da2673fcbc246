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
    collections::HashMap,
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
    agent::{Failure, start_time},
    cgroups::{self, Cgroup, CgroupChange, CgroupFs, CgroupPattern, CgroupSpec, CgroupWatcher},
    kernel_maps::{KernelMapError, KernelMaps, Membership},
    state::AgentState,
    targets::Targets,
};

/// The cgroup side of the command line, resolved.
pub struct CgroupTargets {
    /// `--cgroup` targets (name, cgroup) and the current matches of the patterns.
    pub initial: Vec<(String, Cgroup)>,
    /// Changes to the watched cgroups after `initial`, what produces them, and the names
    /// `--cgroup NAME=PATH` gave (by path relative to the mount).
    pub changes: Option<Watched>,
}

pub struct Watched {
    changes: Receiver<CgroupChange>,
    _watcher: CgroupWatcher,
    names: HashMap<String, String>,
}

/// Resolves `--cgroup` and `--cgroup-pattern` and starts watching both: a `--cgroup` path is
/// watched as a pattern matching just itself, so a service whose cgroup is removed and made
/// anew (a restart) stays observed. A bad path or pattern is a usage error; a pattern that
/// matches nothing only warns.
pub fn resolve(specs: &[CgroupSpec], patterns: &[String]) -> Result<CgroupTargets, Failure> {
    if specs.is_empty() && patterns.is_empty() {
        return Ok(CgroupTargets {
            initial: Vec::new(),
            changes: None,
        });
    }
    let fs = CgroupFs::discover().map_err(|e| Failure::Runtime(e.into()))?;
    let mut initial = Vec::new();
    let mut names = HashMap::new();
    let mut watched = Vec::new();
    for spec in specs {
        let cgroup = fs
            .resolve(&spec.path)
            .map_err(|e| Failure::Usage(format!("--cgroup {}: {e}", spec.path)))?;
        let name = spec.target_name(&cgroup);
        if cgroup.name != "/" {
            // (The root cgroup is never removed, and patterns do not match it.)
            let literal = CgroupPattern::parse(&glob_literal(&cgroup.name), &fs)
                .map_err(|e| Failure::Usage(format!("--cgroup {}: {e}", spec.path)))?;
            watched.push(literal);
            names.insert(cgroup.name.clone(), name.clone());
        }
        initial.push((name, cgroup));
    }
    for p in patterns {
        let pattern = CgroupPattern::parse(p, &fs).map_err(|e| Failure::Usage(format!("--cgroup-pattern {p}: {e}")))?;
        watched.push(pattern);
    }
    if watched.is_empty() {
        return Ok(CgroupTargets { initial, changes: None });
    }
    let (matched, changes, watcher) =
        cgroups::watch(fs, watched, Duration::from_secs(1)).map_err(|e| Failure::Runtime(e.into()))?;
    let from_patterns: Vec<Cgroup> = matched.into_iter().filter(|c| !names.contains_key(&c.name)).collect();
    if !patterns.is_empty() && from_patterns.is_empty() {
        tracing::warn!(
            patterns = patterns.join(", "),
            "no cgroup matches --cgroup-pattern yet; cgroups created later are picked up"
        );
    }
    initial.extend(from_patterns.into_iter().map(|c| (c.name.clone(), c)));
    Ok(CgroupTargets {
        initial,
        changes: Some(Watched {
            changes,
            _watcher: watcher,
            names,
        }),
    })
}

/// A glob matching exactly `path`: each glob metacharacter as a one-character class.
fn glob_literal(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// `cgroup` as it appears in /proc/PID/cgroup: relative to the mount, with a leading `/`.
fn proc_path(cgroup: &Cgroup) -> String {
    match cgroup.name.as_str() {
        "/" => "/".to_owned(),
        name => format!("/{name}"),
    }
}

/// Adds `cgroup` as a target, in the agent's set and in the kernel's `CGROUP_TARGETS`.
/// `None` when --max-targets are taken (counted in the set), or when the kernel map
/// refused it (then the target is taken back out: it would never see a process).
pub fn add(targets: &mut Targets, maps: &mut KernelMaps, name: String, cgroup: &Cgroup) -> Option<TargetId> {
    let Some(target) = targets.add_cgroup(name.clone(), proc_path(cgroup), cgroup.id) else {
        tracing::warn!(cgroup = %cgroup.path.display(), "--max-targets reached; the cgroup is not observed");
        return None;
    };
    if let Err(e) = maps.add_cgroup(cgroup.id, target) {
        tracing::warn!(cgroup = %cgroup.path.display(), "cannot add the cgroup to the kernel's targets: {e}");
        targets.free(target);
        return None;
    }
    Some(target)
}

/// A process seen in /proc before the locks are taken: its cgroup v2 path and start time.
pub struct Seen {
    pid: u32,
    path: String,
    started: u64,
}

/// Reads, for each of `pids` that is a live process (not a zombie), its cgroup and start.
pub fn look_at(pids: impl IntoIterator<Item = u32>) -> Vec<Seen> {
    pids.into_iter()
        .filter_map(|pid| {
            let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
            if matches!(stat.state, 'Z' | 'X') {
                return None; // exited: its entry would outlive it
            }
            let path = cgroups::v2_path_of(pid)?;
            Some(Seen {
                pid,
                path,
                started: stat.starttime,
            })
        })
        .collect()
}

/// Puts each process `seen` into the deepest target cgroup it is in, unless a `--pid` tree
/// has it, and counts it into that target's starting processes and threads. A process that
/// exited, or moved, since it was seen is left as the kernel has it (the fork, exit and
/// attach probes keep those current), so a recycled PID never inherits a target from here.
pub fn join(targets: &mut Targets, maps: &mut KernelMaps, seen: &[Seen]) -> Result<(), KernelMapError> {
    for p in seen {
        let before = maps.target_of(p.pid)?;
        if matches!(before, Some((_, Membership::PidTree))) {
            continue;
        }
        let Some(target) = targets.deepest_cgroup_target(&p.path) else {
            continue;
        };
        if before == Some((target, Membership::Cgroup)) {
            continue; // the kernel got there first (a fork or a move)
        }
        maps.set_target(p.pid, Some((target, Membership::Cgroup)))?;
        let threads = std::fs::read_dir(format!("/proc/{}/task", p.pid)).map_or(1, |d| d.count()) as i64;
        let unchanged = start_time(p.pid) == Some(p.started) && cgroups::v2_path_of(p.pid).as_deref() == Some(&p.path);
        if !unchanged {
            maps.set_target(p.pid, before)?;
            continue;
        }
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
    watched: Option<Watched>,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("cgroup-watcher".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let change = match &watched {
                    Some(w) => match w.changes.recv_timeout(Duration::from_millis(250)) {
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
                if let (Some(change), Some(w)) = (change, &watched) {
                    apply(&state, change, &w.names);
                }
                expire(&state, ttl);
            }
        })
        .expect("spawn the cgroup watcher")
}

fn apply(state: &AgentState, change: CgroupChange, names: &HashMap<String, String>) {
    match change {
        CgroupChange::Added(cgroup) => {
            // /proc is read before the locks: the ring-buffer reader and scrapes wait on them.
            // Processes moved in between mkdir and now were not seen by the kernel hook.
            let seen = look_at(cgroups::procs_recursive(&cgroup.path).unwrap_or_default());
            let name = names.get(&cgroup.name).cloned().unwrap_or_else(|| cgroup.name.clone());
            let mut targets = state.targets.write().expect("never poisoned");
            let mut maps = state.maps();
            if add(&mut targets, &mut maps, name.clone(), &cgroup).is_none() {
                return;
            }
            tracing::info!(target = %name, "cgroup target added");
            if let Err(e) = join(&mut targets, &mut maps, &seen).and_then(|()| maps.forget_current_tasks()) {
                tracing::warn!(target = %name, "cannot add the cgroup's processes: {e}");
            }
        }
        CgroupChange::Removed(cgroup) => {
            let mut targets = state.targets.write().expect("never poisoned");
            if targets.remove_cgroup(cgroup.id, Instant::now()).is_some() {
                if let Err(e) = state.maps().remove_cgroup(cgroup.id) {
                    tracing::warn!(cgroup = %cgroup.name, "cannot remove the cgroup from the kernel's targets: {e}");
                }
                tracing::info!(cgroup = %cgroup.name, "cgroup target removed; its series expire after --series-ttl");
            }
        }
    }
}

/// Deletes what the kernel aggregated for targets removed more than `ttl` ago, drops their
/// series, and frees their ids.
fn expire(state: &AgentState, ttl: Duration) {
    let expired = state.targets().expired(ttl, Instant::now());
    if expired.is_empty() {
        return;
    }
    // Processes still pointing at an expired target (its cgroup was renamed out of the
    // pattern rather than removed) leave it before the id can serve another target.
    let everyone = all_pids();
    for (id, name) in expired {
        let mut targets = state.targets.write().expect("never poisoned");
        let mut maps = state.maps();
        if let Err(e) = maps
            .forget_target(id, &everyone)
            .and_then(|()| maps.forget_current_tasks())
        {
            tracing::warn!(target = %name, "cannot delete the target's kernel state: {e}");
            continue;
        }
        targets.free(id);
        drop((maps, targets));
        state.event_metrics.forget_target(&name);
        tracing::debug!(target = %name, "series of the removed target expired");
    }
}

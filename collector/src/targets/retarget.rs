//! Changing the targets while running (a config reload): the new request is checked in the
//! caller's thread as at start (the named PIDs run, the cgroups exist, the patterns parse),
//! and a bad one changes nothing; the watcher thread then applies it between two rounds of
//! cgroup changes, and answers with what changed. A target the request no longer names is
//! removed as a removed cgroup is: its processes leave it at once (into the deepest target
//! cgroup they are in, if any), its series stay until `--series-ttl`.
use std::{
    collections::HashMap,
    io::{PipeWriter, Write as _},
    sync::{Arc, mpsc},
    time::Instant,
};

use super::{
    cgroup::{self, Watched, fs::CgroupFs, walk::procs_recursive},
    error::TargetError,
    handle::{State, Targets},
    members, proc,
    request::Request,
    set::{TargetKind, TargetSet},
};
use crate::sync::lock;

/// A checked request, for the watcher thread to apply.
pub struct Plan {
    /// Every PID the request names: its target name, and its start time if it is new.
    pids: Vec<(u32, String, Option<u64>)>,
    cgroups: cgroup::Resolved,
}

/// The targets a plan added and removed, by name, and the steps that failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retargeted {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

pub(super) type Inbox = mpsc::Receiver<(Plan, mpsc::SyncSender<Retargeted>)>;

/// Hands plans to the watcher thread and waits for its answer.
#[derive(Clone, Debug)]
pub struct Retargeter {
    targets: Targets,
    sender: mpsc::Sender<(Plan, mpsc::SyncSender<Retargeted>)>,
    /// One byte per plan wakes the watcher from its poll.
    wake: Arc<std::sync::Mutex<PipeWriter>>,
}

impl Retargeter {
    pub(super) fn new(targets: Targets, wake: PipeWriter) -> (Retargeter, Inbox) {
        let (sender, inbox) = mpsc::channel();
        let wake = Arc::new(std::sync::Mutex::new(wake));
        (Retargeter { targets, sender, wake }, inbox)
    }

    /// Checks `request` against the host, as at start; nothing changes yet.
    pub fn check(&self, request: &Request<'_>) -> Result<Plan, TargetError> {
        let wanted = TargetSet::from_specs(request.pids, request.max_targets)?;
        let running: HashMap<u32, String> = {
            let view = self.targets.read();
            let set = view.set();
            set.pids()
                .iter()
                .filter_map(|&(pid, t)| Some((pid, set.name(t)?.to_owned())))
                .collect()
        };
        let pids = wanted
            .pids()
            .iter()
            .map(|&(pid, t)| {
                let name = wanted.name(t).unwrap_or_default().to_owned();
                let started = match running.get(&pid) {
                    Some(now) if *now == name => None,
                    _ => Some(proc::check_named(pid)?),
                };
                Ok((pid, name, started))
            })
            .collect::<Result<_, TargetError>>()?;
        let cgroups = cgroup::resolve(request.cgroups, request.patterns, request.naming)?;
        Ok(Plan { pids, cgroups })
    }

    /// Has the watcher thread apply `plan`; says what it changed.
    pub fn apply(&self, plan: Plan) -> Result<Retargeted, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || "the targets watcher has stopped (the agent is shutting down)".to_owned();
        self.sender.send((plan, reply)).map_err(|_| stopped())?;
        lock(&self.wake).write_all(&[1]).map_err(|_| stopped())?;
        // No timeout: a plan given up on would still be applied later, under a reload
        // already counted as failed. The watcher's steps are map writes and /proc reads.
        answer.recv().map_err(|_| stopped())
    }
}

/// Applies `plan` (on the watcher thread): the PID roots it drops leave, the new ones are
/// put in with their descendants, the cgroup targets it no longer matches are removed and
/// the new ones added; then its cgroup watch replaces `watched`. A step that fails (a
/// kernel map refusing a write, --max-targets taken) does not stop the others, and is said.
pub(super) fn apply(targets: &Targets, plan: Plan, watched: &mut Option<Watched>) -> Retargeted {
    let Plan { pids, cgroups } = plan;
    let now = Instant::now();
    let mut changed = Retargeted::default();
    let mut state = targets.write();
    let State { set, maps } = &mut *state;
    let wanted = |pid: u32| pids.iter().find(|(p, ..)| *p == pid).map(|(_, name, _)| name.as_str());
    for (pid, t) in set.pids().to_vec() {
        let name = set.name(t).unwrap_or_default().to_owned();
        if wanted(pid) == Some(&name) {
            continue;
        }
        if let Err(e) = members::leave_pid_tree(set, maps, pid, t) {
            changed.errors.push(format!("PID {pid} leaving {name}: {e}"));
        }
        set.remove_pid(pid, now);
        if set.get(t).is_some_and(|t| t.removed_at.is_some()) {
            changed.removed.push(name);
        }
    }
    let mut new_roots = Vec::new();
    for (pid, name, started) in &pids {
        let Some(started) = started else { continue };
        if cgroup_targets(set).any(|(live, ..)| live == name) {
            // A pattern's target named by its workload since the plan was checked.
            changed.errors.push(format!(
                "PID {pid}: the cgroup target {name} has that name; give the PID another"
            ));
            continue;
        }
        let Some(t) = set.add_pid(*pid, name.clone()) else {
            changed
                .errors
                .push(format!("--max-targets reached: PID {pid} ({name}) is not observed"));
            continue;
        };
        match members::insert_pid(set, maps, *pid, t, *started) {
            Ok(true) => {
                new_roots.push((*pid, t));
                if !changed.added.contains(name) {
                    changed.added.push(name.clone());
                }
            }
            Ok(false) => changed
                .errors
                .push(format!("PID {pid} ({name}) exited during the reload")),
            Err(e) => changed.errors.push(format!("PID {pid} ({name}): {e}")),
        }
    }
    if let Err(e) = members::follow_descendants(set, maps, &new_roots) {
        changed.errors.push(format!("following the new PIDs' descendants: {e}"));
    }
    // Cgroup targets the plan no longer matches leave CGROUP_TARGETS first, so that no process
    // joins them from here on (the fork and attach probes read it); then their processes,
    // read without the lock (the ring-buffer reader and scrapes wait on it), move on.
    let going: Vec<(u64, String)> = cgroup_targets(set)
        .filter(|&(name, _, id)| {
            !cgroups
                .initial
                .iter()
                .any(|n| n.cgroup.id == id && named_as(name, &n.name, id))
        })
        .map(|(_, path, id)| (id, path.to_owned()))
        .collect();
    for (id, _) in &going {
        if let Some(t) = set.remove_cgroup(*id, now) {
            changed.removed.extend(set.name(t).map(str::to_owned));
        }
        if let Err(e) = maps.remove_cgroup(*id) {
            changed.errors.push(format!("removing cgroup {id}: {e}"));
        }
    }
    drop(state);
    let mount = CgroupFs::discover().map(|fs| fs.mount().to_path_buf());
    let procs = going.iter().flat_map(|(_, path)| {
        let dir = mount.as_ref().ok().map(|m| m.join(path.trim_start_matches('/')));
        dir.and_then(|d| procs_recursive(&d).ok()).unwrap_or_default()
    });
    let seen = proc::look_at(procs.collect::<Vec<_>>());
    let mut state = targets.write();
    let State { set, maps } = &mut *state;
    if let Err(e) = members::join(set, maps, &seen) {
        changed
            .errors
            .push(format!("moving the removed cgroups' processes: {e}"));
    }
    let new: Vec<_> = cgroups
        .initial
        .iter()
        .filter(|new| !cgroup_targets(set).any(|(n, _, id)| id == new.cgroup.id && named_as(n, &new.name, id)))
        .cloned()
        .collect();
    drop(state);
    for named in new {
        if targets.add_cgroup(&named) {
            changed.added.push(named.name);
        } else {
            changed.errors.push(format!(
                "cgroup {} is not observed (--max-targets, or the kernel map refused it)",
                named.name
            ));
        }
    }
    *watched = cgroups.watched;
    changed
}

/// Whether a live cgroup target named `live` has the name a plan gives cgroup `id`: also
/// when it is `planned#<id>`, the name it was given because another target had `planned`
/// (so that a reload does not remove and add it again each time).
fn named_as(live: &str, planned: &str, id: u64) -> bool {
    live == planned || live.strip_prefix(planned).and_then(|rest| rest.strip_prefix('#')) == Some(&id.to_string())
}

/// (name, /proc path, id) of each live cgroup target.
fn cgroup_targets(set: &TargetSet) -> impl Iterator<Item = (&str, &str, u64)> {
    set.live().filter_map(|(_, t)| match &t.kind {
        TargetKind::Cgroup { path, id, .. } => Some((t.name.as_str(), path.as_str(), *id)),
        TargetKind::Pid => None,
    })
}

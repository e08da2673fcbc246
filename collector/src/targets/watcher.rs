//! The one thread that keeps cgroup targets current while running: a new match becomes a
//! target at once, with the processes already in it; a removed cgroup leaves
//! `CGROUP_TARGETS` at once and its series after the TTL. It sleeps in the cgroup watch
//! until a cgroup may have changed, the next removed target is due to expire, or shutdown.
use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    cgroup::{Watched, walk::procs_recursive, watch::CgroupChange},
    error::TargetError,
    handle::{Following, State, Targets},
    members, proc,
};
use crate::shutdown::Shutdown;

/// How soon an expiry that failed (a kernel map refused a delete) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the thread that adds and removes cgroup targets as their cgroups come and go,
/// and expires removed ones after `ttl`, calling `on_expired` with each expired target's
/// name once its kernel state is gone. No thread when no cgroup is watched.
pub fn spawn_watcher(
    targets: &Targets,
    following: Following,
    ttl: Duration,
    stop: Shutdown,
    on_expired: impl Fn(&str) + Send + 'static,
) -> Result<Option<JoinHandle<()>>, TargetError> {
    let Following(Some(mut watched)) = following else {
        return Ok(None);
    };
    let targets = targets.clone();
    let thread = std::thread::Builder::new()
        .name("cgroup-watcher".into())
        .spawn(move || {
            let mut retry = None;
            loop {
                let next_expiry = targets.read().set().next_expiry(ttl);
                let until = retry.or(next_expiry);
                let Some(changes) = watched.watch.next_changes(&stop, until) else {
                    return;
                };
                for change in changes {
                    apply(&targets, change, &watched);
                }
                let failed = expire(&targets, ttl, &on_expired);
                retry = failed.then(|| Instant::now() + RETRY);
            }
        });
    thread.map(Some).map_err(TargetError::Spawn)
}

fn apply(targets: &Targets, change: CgroupChange, watched: &Watched) {
    match change {
        CgroupChange::Added(cgroup) => {
            // /proc is read before the lock: the ring-buffer reader and scrapes wait on it.
            // Processes moved in between mkdir and now were not seen by the kernel hook.
            let seen = proc::look_at(procs_recursive(&cgroup.path).unwrap_or_default());
            let name = watched.name_of(&cgroup);
            let mut state = targets.write();
            let State { set, maps } = &mut *state;
            if members::add_cgroup(set, maps, name.clone(), &cgroup).is_none() {
                return;
            }
            tracing::info!(target = %name, "cgroup target added");
            if let Err(e) = members::join(set, maps, &seen) {
                tracing::warn!(target = %name, "cannot add the cgroup's processes: {e}");
            }
        }
        CgroupChange::Removed(cgroup) => {
            let mut state = targets.write();
            let State { set, maps } = &mut *state;
            if set.remove_cgroup(cgroup.id, Instant::now()).is_some() {
                if let Err(e) = maps.remove_cgroup(cgroup.id) {
                    tracing::warn!(cgroup = %cgroup.name, "cannot remove the cgroup from the kernel's targets: {e}");
                }
                tracing::info!(cgroup = %cgroup.name, "cgroup target removed; its series expire after --series-ttl");
            }
        }
    }
}

/// Deletes what the kernel aggregated for targets removed at least `ttl` ago, frees their
/// ids, and then tells `on_expired` (which drops their event-defined series). Returns
/// whether one could not be deleted (it stays expired, to be tried again).
fn expire(targets: &Targets, ttl: Duration, on_expired: &impl Fn(&str)) -> bool {
    let expired = targets.read().set().expired(ttl, Instant::now());
    if expired.is_empty() {
        return false;
    }
    let mut failed = false;
    // Processes still pointing at an expired target (its cgroup was renamed out of the
    // pattern rather than removed) leave it before the id can serve another target.
    let everyone = proc::all_pids();
    for (id, name) in expired {
        let mut state = targets.write();
        let State { set, maps } = &mut *state;
        if let Err(e) = maps.forget_target(id, &everyone) {
            tracing::warn!(target = %name, "cannot delete the target's kernel state: {e}");
            failed = true;
            continue;
        }
        set.free(id);
        drop(state);
        on_expired(&name);
        tracing::debug!(target = %name, "series of the removed target expired");
    }
    failed
}

//! The one thread that keeps targets current while running: a new cgroup match becomes a
//! target at once, with the processes already in it; a removed cgroup leaves
//! `CGROUP_TARGETS` at once and its series after the TTL; a target whose workload the
//! host's files had no name for yet is renamed once they do (checked every second); a
//! reload's targets (`retarget.rs`) are applied here too, so that one thread alone changes
//! the watch. It sleeps in the cgroup watch until a cgroup may have changed, its next
//! rescan, the next removed target is due to expire, a reload comes, or shutdown.
use std::{
    collections::HashMap,
    io::Read as _,
    os::fd::{AsFd as _, BorrowedFd},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use collector_common::TargetId;

use super::{
    cgroup::{Watched, watch::CgroupChange},
    error::TargetError,
    handle::{Following, State, Targets},
    retarget::{self, Retargeter},
    set::TargetKind,
    workload::{Workload, host::Index},
};
use crate::shutdown::{Shutdown, poll_timeout};

/// How soon an expiry that failed (a kernel map refused a delete) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// How often targets whose workload has no name yet are looked up again.
const NAMING: Duration = Duration::from_secs(1);

/// Starts the thread that adds and removes cgroup targets as their cgroups come and go,
/// names them as the host's files name their workloads, applies reloaded targets, and
/// expires removed targets after `ttl`, calling `on_forgotten` with each name whose series
/// are gone (an expired target's, once its kernel state is gone; a renamed target's old one,
/// or its name when a field of `labels` (`--target-labels`) changed) and the target set's
/// naming generation from then on (`TargetSet::naming`).
pub fn spawn_watcher(
    targets: &Targets,
    following: Following,
    (ttl, labels): (Duration, Vec<&'static str>),
    stop: Shutdown,
    on_forgotten: impl Fn(&str, u64) + Send + 'static,
) -> Result<(JoinHandle<()>, Retargeter), TargetError> {
    let Following(mut watched) = following;
    let (mut woken, wake) = std::io::pipe().map_err(TargetError::Pipe)?;
    // The thread keeps a write end of its own: were the retargeter's the only one (dropped
    // when there is no config file to reload), the read end would poll as ready for ever.
    let kept = wake.try_clone().map_err(TargetError::Pipe)?;
    let (retargeter, inbox) = Retargeter::new(targets.clone(), wake);
    let targets = targets.clone();
    let thread = std::thread::Builder::new()
        .name("targets-watcher".into())
        .spawn(move || {
            let _kept = kept;
            let mut retry = None;
            let mut next_naming = Instant::now();
            let mut lookups = Lookups::default();
            loop {
                let next_expiry = targets.read().set().next_expiry(ttl);
                let until = retry.or(next_expiry);
                let changes = match &mut watched {
                    Some(w) => w.watch.next_changes(&stop, woken.as_fd(), until),
                    None => sleep(&stop, woken.as_fd(), until).then(Vec::new),
                };
                let Some(changes) = changes else {
                    return;
                };
                if let Some(w) = &watched {
                    let added = changes.iter().any(|c| matches!(c, CgroupChange::Added(_)));
                    let index = if added {
                        w.naming.files.index()
                    } else {
                        Index::default()
                    };
                    for change in changes {
                        apply(&targets, change, w, &index);
                    }
                    if Instant::now() >= next_naming {
                        next_naming = Instant::now() + NAMING;
                        name_workloads(&targets, w, &mut lookups, &labels, &on_forgotten);
                    }
                }
                while let Ok((plan, reply)) = inbox.try_recv() {
                    // Its byte is written right after it is sent: this read waits at most
                    // for that write.
                    let _ = woken.read_exact(&mut [0]);
                    let _ = reply.send(retarget::apply(&targets, plan, &mut watched));
                }
                let failed = expire(&targets, ttl, &on_forgotten);
                retry = failed.then(|| Instant::now() + RETRY);
            }
        });
    Ok((thread.map_err(TargetError::Spawn)?, retargeter))
}

/// Sleeps until `stop`, `wake` or `until`, with no cgroup to watch. False once stopped.
fn sleep(stop: &Shutdown, wake: BorrowedFd<'_>, until: Option<Instant>) -> bool {
    let timeout = until.map_or(PollTimeout::NONE, |t| {
        poll_timeout(t.saturating_duration_since(Instant::now()))
    });
    let mut fds = [
        PollFd::new(stop.fd(), PollFlags::POLLIN),
        PollFd::new(wake, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        // Only for lack of kernel memory: keep the loop's pace rather than spin.
        Err(_) => std::thread::sleep(Duration::from_millis(100)),
    }
    !stop.is_triggered()
}

fn apply(targets: &Targets, change: CgroupChange, watched: &Watched, index: &Index) {
    match change {
        CgroupChange::Added(cgroup) => {
            let named = watched.name_of(&cgroup, index);
            if targets.add_cgroup(&named) {
                tracing::info!(target = %named.name, cgroup = %cgroup.name, "cgroup target added");
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
fn expire(targets: &Targets, ttl: Duration, on_expired: &impl Fn(&str, u64)) -> bool {
    let expired = targets.read().set().expired(ttl, Instant::now());
    if expired.is_empty() {
        return false;
    }
    let mut failed = false;
    for (id, name) in expired {
        let mut state = targets.write();
        let State { set, maps } = &mut *state;
        if let Err(e) = maps.forget_target(id) {
            tracing::warn!(target = %name, "cannot delete the target's kernel state: {e}");
            failed = true;
            continue;
        }
        set.free(id);
        let naming = set.naming();
        drop(state);
        on_expired(&name, naming);
        tracing::debug!(target = %name, "series of the removed target expired");
    }
    failed
}

/// When each live cgroup target that may still be named is looked up next: every second at
/// first, then less often (a pause container never gets a log link, a Docker config may be
/// unreadable), at most once a minute; and at once for all when the host's directories
/// that name workloads changed (`HostFiles::stamp`).
#[derive(Default)]
struct Lookups {
    /// By target: its cgroup id (a freed id may be given to another target), the lookups
    /// that found nothing new, and when the next is due.
    next: HashMap<TargetId, (u64, u32, Instant)>,
    stamp: Vec<Option<SystemTime>>,
}

impl Lookups {
    fn due(&self, id: TargetId, cgroup: u64, now: Instant) -> bool {
        self.next
            .get(&id)
            .is_none_or(|&(of, _, next)| of != cgroup || now >= next)
    }

    fn missed(&mut self, id: TargetId, cgroup: u64, now: Instant) {
        let tries = match self.next.get(&id) {
            Some(&(of, tries, _)) if of == cgroup => tries + 1,
            _ => 0,
        };
        let wait = Duration::from_secs(1 << tries.min(6)).min(Duration::from_secs(60));
        self.next.insert(id, (cgroup, tries, now + wait));
    }
}

/// Looks up the names of live cgroup targets whose workload the host's files did not name
/// yet (a kubelet writes a container's log link after starting it), and of those named
/// `#<cgroup id>` (their name was taken), and renames those that have a better name now.
/// A removed target that had the new name (the container before a restart) keeps its
/// kernel series until they expire, as `<name>#<its cgroup id>` (a removed PID target's
/// are deleted); event-defined series are kept by name, so those of a name that passes to
/// another target are forgotten, as are a renamed target's under its old name, and its own
/// when a `--target-labels` field changes. `on_forgotten` gets each such name with the
/// naming generation after the change.
fn name_workloads(
    targets: &Targets,
    watched: &Watched,
    lookups: &mut Lookups,
    labels: &[&'static str],
    on_forgotten: &impl Fn(&str, u64),
) {
    let now = Instant::now();
    let stamp = watched.naming.files.stamp();
    if stamp != lookups.stamp {
        lookups.next.clear();
        lookups.stamp = stamp;
    }
    let candidates: Vec<(TargetId, u64, String, Workload)> = {
        let view = targets.read();
        let set = view.set();
        lookups
            .next
            .retain(|id, _| set.get(*id).is_some_and(|t| t.removed_at.is_none()));
        set.live()
            .filter_map(|(id, t)| match &t.kind {
                TargetKind::Cgroup {
                    path,
                    workload,
                    id: cgroup,
                } if (workload.unresolved()
                    || t.name.rsplit_once('#').is_some_and(|(_, id)| id.parse() == Ok(*cgroup)))
                    && lookups.due(id, *cgroup, now) =>
                {
                    Some((id, *cgroup, path.clone(), workload.clone()))
                }
                _ => None,
            })
            .collect()
    };
    if candidates.is_empty() {
        return;
    }
    let index = watched.naming.files.index();
    for (id, cgroup, path, before) in candidates {
        let (name, workload) = watched.describe(path.trim_start_matches('/'), &index);
        if targets.read().set().name(id) == Some(name.as_str()) && workload == before {
            lookups.missed(id, cgroup, now);
            continue;
        }
        let mut state = targets.write();
        let State { set, maps } = &mut *state;
        let mut forgotten = Vec::new();
        if set.name(id) != Some(name.as_str())
            && let Some(old) = set.removed_named(&name)
        {
            match set.get(old).map(|t| t.kind.clone()) {
                Some(TargetKind::Cgroup { id: of, workload, .. }) => {
                    set.rename_cgroup(old, format!("{name}#{of}"), workload);
                }
                _ => {
                    if let Err(e) = maps.forget_target(old) {
                        tracing::warn!(target = %name, "cannot delete a removed target's kernel state: {e}");
                        continue;
                    }
                    set.free(old);
                }
            }
            forgotten.push(name.clone());
        }
        let labels_changed = labels.iter().any(|f| before.field(f) != workload.field(f));
        let resolved = !workload.unresolved();
        let Some(was) = set.rename_cgroup(id, name, workload) else {
            continue;
        };
        let now_named = set.name(id).unwrap_or_default().to_owned();
        let naming = set.naming();
        drop(state);
        if resolved && !now_named.contains('#') {
            lookups.next.remove(&id);
        } else {
            lookups.missed(id, cgroup, now);
        }
        if was != now_named {
            tracing::info!(target = %now_named, was = %was, "cgroup target renamed: its workload's names are known now");
        }
        if was != now_named || labels_changed {
            forgotten.push(was);
        }
        for name in &forgotten {
            on_forgotten(name, naming);
        }
    }
}

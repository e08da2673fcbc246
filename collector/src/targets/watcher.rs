//! The one thread that keeps targets current while running: a new cgroup match becomes a
//! target at once, with the processes already in it; a removed cgroup leaves
//! `CGROUP_TARGETS` at once and its series after the TTL; a reload's targets
//! (`retarget.rs`) are applied here too, so that one thread alone changes the watch. It
//! sleeps in the cgroup watch until a cgroup may have changed, the next removed target is
//! due to expire, a reload comes, or shutdown.
use std::{
    io::Read as _,
    os::fd::{AsFd as _, BorrowedFd},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use super::{
    cgroup::{Watched, watch::CgroupChange},
    error::TargetError,
    handle::{Following, State, Targets},
    retarget::{self, Retargeter},
};
use crate::shutdown::{Shutdown, poll_timeout};

/// How soon an expiry that failed (a kernel map refused a delete) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the thread that adds and removes cgroup targets as their cgroups come and go,
/// applies reloaded targets, and expires removed targets after `ttl`, calling `on_expired`
/// with each expired target's name once its kernel state is gone.
pub fn spawn_watcher(
    targets: &Targets,
    following: Following,
    ttl: Duration,
    stop: Shutdown,
    on_expired: impl Fn(&str) + Send + 'static,
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
                    for change in changes {
                        apply(&targets, change, w);
                    }
                }
                while let Ok((plan, reply)) = inbox.try_recv() {
                    // Its byte is written right after it is sent: this read waits at most
                    // for that write.
                    let _ = woken.read_exact(&mut [0]);
                    let _ = reply.send(retarget::apply(&targets, plan, &mut watched));
                }
                let failed = expire(&targets, ttl, &on_expired);
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

fn apply(targets: &Targets, change: CgroupChange, watched: &Watched) {
    match change {
        CgroupChange::Added(cgroup) => {
            let name = watched.name_of(&cgroup);
            if targets.add_cgroup(&name, &cgroup) {
                tracing::info!(target = %name, "cgroup target added");
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
    for (id, name) in expired {
        let mut state = targets.write();
        let State { set, maps } = &mut *state;
        if let Err(e) = maps.forget_target(id) {
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

//! [`Targets`], the owner of the target set and of the kernel maps that hold it, and the
//! [`View`] everyone else reads them through.
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use collector_common::{TargetId, events::TargetCounts};

use super::{
    cgroup::{self, Named, walk::procs_recursive},
    error::TargetError,
    members, proc,
    request::Checked,
    set::TargetSet,
};
use crate::kernel::maps::KernelMaps;

/// Follows the watched cgroups once running: handed to [`super::spawn_watcher`].
pub struct Following(pub(super) Option<cgroup::Watched>);

pub(super) struct State {
    pub(super) set: TargetSet,
    pub(super) maps: KernelMaps,
}

/// The owner of the target set and of the kernel maps that hold it. Cloning shares it.
#[derive(Clone)]
pub struct Targets {
    state: Arc<RwLock<State>>,
}

/// A consistent read of the target set and the kernel maps: nothing is added, freed or
/// deleted while it is held.
pub struct View<'a>(RwLockReadGuard<'a, State>);

impl View<'_> {
    pub fn set(&self) -> &TargetSet {
        &self.0.set
    }

    pub fn maps(&self) -> &KernelMaps {
        &self.0.maps
    }

    /// The `target` label of a kernel target slot.
    pub fn label(&self, slot: u32) -> String {
        match TargetId::from_slot(slot).and_then(|id| self.0.set.name(id)) {
            Some(name) => name.to_owned(),
            // The agent deletes a target's entries before its id is reused, so this is a bug;
            // show it rather than drop it.
            None => format!("unknown-{slot}"),
        }
    }

    /// Live processes and threads of `target` now: those the agent put there plus the
    /// kernel's forks, joins, exits and departures since. `None` if the map cannot be read.
    pub fn counts(&self, target: TargetId) -> Option<TargetCounts> {
        let initial = self.0.set.get(target)?.initial;
        let delta = self.0.maps.target_counts(target).ok()?;
        Some(TargetCounts {
            processes: initial.processes + delta.processes,
            threads: initial.threads + delta.threads,
        })
    }
}

impl Targets {
    /// Writes the named PIDs (as `--pid` trees) and the cgroups into the kernel's maps.
    /// Called once the object is loaded and before any probe is attached.
    pub fn install(checked: Checked, mut maps: KernelMaps) -> Result<(Targets, Following), TargetError> {
        let Checked {
            mut set,
            started,
            cgroups,
        } = checked;
        for (pid, target) in set.pids().to_vec() {
            if !members::insert_pid(&mut set, &mut maps, pid, target, started[&pid])? {
                tracing::warn!(pid, "the process exited during start-up");
            }
        }
        for named in &cgroups.initial {
            members::add_cgroup(&mut set, &mut maps, named);
        }
        let targets = Targets {
            state: Arc::new(RwLock::new(State { set, maps })),
        };
        Ok((targets, Following(cgroups.watched)))
    }

    /// Puts the processes that existed before the follow probes attached into their
    /// targets: the descendants of the named PIDs, then every process already in a target
    /// cgroup (a `--pid` tree keeps its own).
    pub fn discover_existing(&self) -> Result<(), TargetError> {
        let mut state = self.write();
        let State { set, maps } = &mut *state;
        let roots = set.pids().to_vec();
        members::follow_descendants(set, maps, &roots)?;
        drop(state);
        // /proc is read before the lock is taken again (it is not shared yet at start, but
        // the same order serves the watcher, where readers wait on it).
        let seen = proc::look_at(proc::all_pids());
        let mut state = self.write();
        let State { set, maps } = &mut *state;
        members::join(set, maps, &seen)?;
        Ok(())
    }

    /// Makes a cgroup a target with the processes already in it; false when it is not
    /// (--max-targets are taken, or the kernel map refused it).
    pub(super) fn add_cgroup(&self, named: &Named) -> bool {
        // Into the kernel's CGROUP_TARGETS first: from then on its attach hook puts a process
        // moved in into the target. Those moved in before (since mkdir) are read after that,
        // and not under the lock (the ring-buffer reader and scrapes wait on it). Read
        // before the insert, a process moved in between the two was in neither: seen in a
        // Linux 6.12 guest, a process moved in right after mkdir never counted.
        {
            let mut state = self.write();
            let State { set, maps } = &mut *state;
            if members::add_cgroup(set, maps, named).is_none() {
                return false;
            }
        }
        let seen = proc::look_at(procs_recursive(&named.cgroup.path).unwrap_or_default());
        let mut state = self.write();
        let State { set, maps } = &mut *state;
        if let Err(e) = members::join(set, maps, &seen) {
            tracing::warn!(target = %named.name, "cannot add the cgroup's processes: {e}");
        }
        true
    }

    pub fn read(&self) -> View<'_> {
        // Every writer leaves the set and the maps consistent at each point it can fail
        // (a kernel write it cannot confirm is undone), so a panic in one does not make the
        // state unusable: serving on beats every later reader panicking too.
        View(self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("set", self.read().set())
            .finish_non_exhaustive()
    }
}

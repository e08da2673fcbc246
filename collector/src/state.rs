//! What the HTTP handlers, the poller, the event reader and the cgroup watcher share.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, RwLockReadGuard, atomic::AtomicU64},
    time::Instant,
};

use collector_common::{TargetId, events::TargetCounts};

use crate::{
    kernel_maps::KernelMaps,
    targets::{SharedTargets, Targets},
    telemetry::{Telemetry, definitions::EventMetrics},
};

pub struct AgentState {
    pub targets: SharedTargets,
    /// Scrapes read the maps; the cgroup watcher writes targets into them.
    pub maps: Mutex<KernelMaps>,
    pub telemetry: Arc<Telemetry>,
    /// The metrics defined on events, so a removed target's series can be dropped.
    pub event_metrics: Arc<EventMetrics>,
    /// Probe name -> attached, as of the end of start-up.
    pub probes_attached: BTreeMap<&'static str, bool>,
    pub started: Instant,
    /// Kernel map entries the scrape-time collectors could not read, since start.
    pub map_read_errors: AtomicU64,
}

impl AgentState {
    pub fn targets(&self) -> RwLockReadGuard<'_, Targets> {
        self.targets.read().expect("the target set lock is never poisoned")
    }

    pub fn maps(&self) -> MutexGuard<'_, KernelMaps> {
        self.maps.lock().expect("the kernel maps lock is never poisoned")
    }

    /// Live processes and threads of `target` now: those the agent put there plus the
    /// kernel's forks, joins, exits and departures since.
    pub fn counts(&self, target: TargetId) -> Option<TargetCounts> {
        let initial = self.targets().get(target)?.initial;
        let delta = self.maps().target_counts(target).ok()?;
        Some(TargetCounts {
            processes: initial.processes + delta.processes,
            threads: initial.threads + delta.threads,
        })
    }

    /// The `target` label of a kernel target slot.
    pub fn target_label(targets: &Targets, slot: u32) -> String {
        match TargetId::from_slot(slot).and_then(|id| targets.name(id)) {
            Some(name) => name.to_owned(),
            // The agent deletes a target's entries before its id is reused, so this is a bug;
            // show it rather than drop it.
            None => format!("unknown-{slot}"),
        }
    }
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

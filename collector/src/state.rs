//! What the HTTP handlers, the poller and the event reader share.
use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use collector_common::{TargetId, events::TargetCounts};

use crate::{kernel_maps::KernelMaps, targets::Targets, telemetry::Telemetry};

pub struct AgentState {
    pub targets: Targets,
    pub maps: KernelMaps,
    pub telemetry: Arc<Telemetry>,
    /// Probe name -> attached, as of the end of start-up.
    pub probes_attached: BTreeMap<&'static str, bool>,
    /// Processes and threads the agent itself put into each target (indexed by target id);
    /// the kernel's `TARGET_COUNTS` counts what changed since.
    pub initial_counts: Vec<TargetCounts>,
    pub started: Instant,
    /// Kernel map entries the scrape-time collectors could not read, since start.
    pub map_read_errors: AtomicU64,
}

impl AgentState {
    /// The `target` label of a kernel target slot.
    pub fn target_label(&self, slot: u32) -> String {
        match TargetId::from_slot(slot).and_then(|id| self.targets.name(id)) {
            Some(name) => name.to_owned(),
            // Only the agent writes target ids, so this is a bug; show it rather than drop it.
            None => format!("unknown-{slot}"),
        }
    }

    /// Live processes and threads of `target` now: those found at start plus the kernel's
    /// forks minus exits.
    pub fn counts(&self, target: TargetId) -> Option<TargetCounts> {
        let initial = *self.initial_counts.get(target.0 as usize)?;
        let delta = self.maps.target_counts(target).ok()?;
        Some(TargetCounts {
            processes: initial.processes + delta.processes,
            threads: initial.threads + delta.threads,
        })
    }
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

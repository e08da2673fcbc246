//! What the HTTP handlers share: the targets, the kernel maps, and start-up facts.
use std::{collections::BTreeMap, time::Instant};

use collector_common::TargetId;

use crate::{kernel_maps::KernelMaps, targets::Targets};

pub struct AgentState {
    pub targets: Targets,
    pub maps: KernelMaps,
    /// Probe name -> attached, as of the end of start-up.
    pub probes_attached: BTreeMap<&'static str, bool>,
    /// Processes the agent itself put into each target (indexed by target id); the kernel's
    /// `TARGET_PROC_DELTA` counts what changed since.
    pub initial_processes: Vec<i64>,
    pub started: Instant,
}

impl AgentState {
    /// Live processes of `target` now: those found at start plus the kernel's forks minus exits.
    pub fn processes(&self, target: TargetId) -> Option<i64> {
        let initial = *self.initial_processes.get(target.0 as usize)?;
        Some(initial + self.maps.process_delta(target).ok()?)
    }
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

//! What the user asked to observe, and checking it against the host before anything loads.
use std::collections::HashMap;

use super::{
    cgroup,
    error::TargetError,
    proc,
    set::TargetSet,
    spec::{CgroupSpec, PidSpec},
    workload::naming::Naming,
};

/// What the user asked to observe.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub pids: &'a [PidSpec],
    pub cgroups: &'a [CgroupSpec],
    pub patterns: &'a [String],
    pub max_targets: usize,
    /// How pattern targets are named.
    pub naming: &'a Naming,
}

/// A request checked against the host, before anything is loaded: the named PIDs run (with
/// their start times), the cgroups exist, the patterns are valid and watched.
pub struct Checked {
    pub(super) set: TargetSet,
    pub(super) started: HashMap<u32, u64>,
    pub(super) cgroups: cgroup::Resolved,
}

impl Checked {
    pub fn check(request: &Request<'_>) -> Result<Checked, TargetError> {
        let set = TargetSet::from_specs(request.pids, request.max_targets)?;
        let started = set
            .pids()
            .iter()
            .map(|&(pid, _)| proc::check_named(pid).map(|start| (pid, start)))
            .collect::<Result<_, _>>()?;
        let cgroups = cgroup::resolve(request.cgroups, request.patterns, request.naming)?;
        Ok(Checked { set, started, cgroups })
    }
}

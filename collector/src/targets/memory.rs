//! Each target's memory now, for `collector_resident_memory_bytes`, read at scrape time: the
//! kernel keeps no per-target total that a tracepoint could aggregate (RSS changes on every
//! fault and reclaim), but it answers per cgroup and per process on demand.
//!
//! A cgroup target with the memory controller on the v2 hierarchy: its `memory.current`
//! (Documentation/admin-guide/cgroup-v2.rst: all memory charged to the cgroup and its
//! descendants: anonymous, page cache, kernel). Otherwise (a PID target, or the memory
//! controller not enabled for the cgroup, as on a hybrid host where it is on v1): the sum of
//! its processes' resident sets, `/proc/PID/statm`'s second field (man 5 proc_pid_statm),
//! over the processes the kernel has in the target. Shared pages count once per process.
use std::{collections::HashMap, path::PathBuf, sync::OnceLock};

use collector_common::TargetId;

use super::{TargetKind, View, cgroup::fs::CgroupFs};

/// Every live target's memory in bytes.
pub fn resident_bytes(view: &View<'_>) -> Vec<(TargetId, u64)> {
    let mut bytes: HashMap<TargetId, u64> = HashMap::new();
    let mut by_processes = Vec::new();
    for (id, target) in view.set().all().filter(|(_, t)| t.removed_at.is_none()) {
        let current = match &target.kind {
            TargetKind::Cgroup { path, .. } => memory_current(path),
            TargetKind::Pid => None,
        };
        bytes.insert(id, current.unwrap_or(0));
        if current.is_none() {
            by_processes.push(id);
        }
    }
    if !by_processes.is_empty() {
        let page = procfs::page_size();
        for (pid, id, _) in view.maps().processes() {
            if by_processes.contains(&id)
                && let Some(pages) = resident_pages(pid)
            {
                *bytes.entry(id).or_default() += pages * page;
            }
        }
    }
    bytes.into_iter().collect()
}

/// `memory.current` of the cgroup at `path` (relative to the v2 mount), if it has one.
fn memory_current(path: &str) -> Option<u64> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let mount = MOUNT.get_or_init(|| CgroupFs::discover().ok().map(|fs| fs.mount().to_owned()));
    let file = mount
        .as_ref()?
        .join(path.trim_start_matches('/'))
        .join("memory.current");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Resident pages of process `pid`; `None` when it is gone.
fn resident_pages(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

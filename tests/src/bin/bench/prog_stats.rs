//! A. Which programs a call runs, and what each costs: the kernel's own accounting of every
//! BPF program's runs and run time (`kernel.bpf_stats_enabled=1`; kernel/bpf/syscall.c
//! counts them in `bpf_prog_run` only while it is on), read with `bpftool prog show`.
//! Wall-clock arms on these shared VMs move by 20 % between passes; counts of program runs
//! do not, and run time per program names where the cost of an arm goes.
use std::{collections::BTreeMap, process::Command};

use serde::Serialize;
use serde_json::Value;
use tests::bpf_ids_held_by;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` set to 1 while this lives, then put back.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn new() -> StatsEnabled {
        let before = std::fs::read_to_string(STATS_SYSCTL).expect("read kernel.bpf_stats_enabled");
        std::fs::write(STATS_SYSCTL, "1").expect("set kernel.bpf_stats_enabled=1");
        StatsEnabled { before }
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, self.before.trim());
    }
}

/// Runs and run time of each program a process holds, by program name.
#[derive(Clone, Default)]
pub struct Snapshot(BTreeMap<String, (u64, u64)>);

impl Snapshot {
    pub fn of(pid: u32) -> Snapshot {
        let held = bpf_ids_held_by(pid, "prog_id:");
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show"])
            .output()
            .expect("run bpftool");
        let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prog show: JSON");
        let mut by_name = BTreeMap::new();
        for p in progs.as_array().into_iter().flatten() {
            if !p["id"].as_u64().is_some_and(|id| held.contains(&id)) {
                continue;
            }
            let field = |f: &str| p[f].as_u64().unwrap_or(0);
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            let e: &mut (u64, u64) = by_name.entry(name).or_default();
            e.0 += field("run_cnt");
            e.1 += field("run_time_ns");
        }
        Snapshot(by_name)
    }

    /// Each program's runs and time between `self` (before) and `after`, per loop call.
    pub fn per_call(&self, after: &Snapshot, calls: u64) -> Vec<ProgramCost> {
        after
            .0
            .iter()
            .filter_map(|(name, &(cnt, ns))| {
                let (cnt0, ns0) = self.0.get(name).copied().unwrap_or_default();
                let runs = cnt.checked_sub(cnt0)?;
                (runs > 0).then(|| ProgramCost {
                    program: name.clone(),
                    runs_per_call: crate::stats::round3(runs as f64 / calls as f64),
                    ns_per_run: crate::stats::round1((ns - ns0) as f64 / runs as f64),
                    ns_per_call: crate::stats::round1((ns - ns0) as f64 / calls as f64),
                })
            })
            .collect()
    }
}

/// One program's share of a loop: how often it ran per call, and for how long.
#[derive(Clone, Serialize)]
pub struct ProgramCost {
    pub program: String,
    pub runs_per_call: f64,
    pub ns_per_run: f64,
    pub ns_per_call: f64,
}

//! E. Kernel memory: every map the agent holds, as the kernel charges it to the agent's
//! memory cgroup (`bytes_memlock` of `bpftool map show`), with the host's `pid_max` at
//! 32,768 (the kernel's default) and at 4,194,304 (what systemd sets on 64-bit hosts), set for
//! the run and put back after; and the agent's RSS at each.
use std::{collections::BTreeMap, path::Path, process::Command};

use serde::Serialize;
use serde_json::Value;
use tests::{Collector, PidMaxSet, Workload, bpf_ids_held_by, collector_bin};

use crate::{
    Config,
    limits::{Check, KERNEL_MAPS_MIB, KERNEL_MAPS_PID_MAX},
    process::rss_kib,
    stats::round1,
};

#[derive(Serialize)]
pub struct Memory {
    pub runs: Vec<MemoryRun>,
    pub targets: Vec<Check>,
}

/// The agent's maps with the host at one `pid_max`.
#[derive(Serialize)]
pub struct MemoryRun {
    /// Whether this is the `--baseline` binary.
    pub baseline: bool,
    pub pid_max: u32,
    /// Bytes charged, by map name.
    pub maps: BTreeMap<String, u64>,
    pub total_bytes: u64,
    pub rss_mib: f64,
}

/// With `--baseline`, that binary is measured too, after this one.
pub fn kernel_memory(config: &Config) -> Memory {
    let pid_maxes = [32_768, KERNEL_MAPS_PID_MAX];
    let mut runs: Vec<MemoryRun> = pid_maxes.iter().map(|&p| maps_at(&collector_bin(), false, p)).collect();
    if let Some(baseline) = &config.baseline {
        runs.extend(pid_maxes.iter().map(|&p| maps_at(baseline, true, p)));
    }
    let total_mib = |run: &MemoryRun| run.total_bytes as f64 / f64::from(1 << 20);
    let targets = runs
        .iter()
        .filter(|run| run.pid_max == KERNEL_MAPS_PID_MAX && !run.baseline)
        .map(|run| {
            Check::new(
                format!("all maps <= {KERNEL_MAPS_MIB} MiB at pid_max {KERNEL_MAPS_PID_MAX}"),
                total_mib(run) <= KERNEL_MAPS_MIB,
            )
        })
        .collect();
    Memory { runs, targets }
}

fn maps_at(bin: &Path, baseline: bool, pid_max: u32) -> MemoryRun {
    let _pid_max = PidMaxSet::to(pid_max);
    let sleeper = Workload::spawn();
    let c = Collector::start_bin(bin, &["--pid", &format!("memory={}", sleeper.pid)]);
    let mut maps = BTreeMap::new();
    for id in bpf_ids_held_by(c.pid(), "map_id:") {
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id.to_string()])
            .output()
            .expect("run bpftool");
        let map: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j map show: JSON");
        let name = map["name"].as_str().unwrap_or("?").to_owned();
        *maps.entry(name).or_default() += map["bytes_memlock"].as_u64().unwrap_or(0);
    }
    let total_bytes = maps.values().sum();
    let rss_mib = round1(rss_kib(c.pid()) as f64 / 1024.0);
    eprintln!(
        "bench: {} pid_max {pid_max}: maps {total_bytes} bytes, agent RSS {rss_mib} MiB",
        bin.display()
    );
    MemoryRun {
        baseline,
        pid_max,
        maps,
        total_bytes,
        rss_mib,
    }
}

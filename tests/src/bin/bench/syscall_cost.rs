//! A. Cost per syscall: a fixed loop timed under each arm, over alternating passes.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    Config,
    arms::{Arm, Run, run_arm},
    limits::{BASELINE_RATIOS, Ratio, RatioCheck},
    prog_stats::{ProgramCost, StatsEnabled},
    stats::{median, round1, round3},
};

/// One workload's loop under each arm.
#[derive(Serialize)]
pub struct SyscallCost {
    pub workload: &'static str,
    pub calls_per_run: u64,
    /// By arm key (`a`...`g`).
    pub arms: BTreeMap<&'static str, ArmCost>,
    /// Every ratio of the section's limits by name, `None` where an arm was not run.
    pub ratios: BTreeMap<String, Option<f64>>,
    pub targets: Vec<RatioCheck>,
    /// With `--baseline`: each collector arm's added cost over its baseline twin's.
    pub compared: BTreeMap<String, f64>,
    /// By collector arm key: the programs one call ran, from one run with bpf stats on.
    pub programs: BTreeMap<&'static str, Vec<ProgramCost>>,
}

/// One arm's medians and runs.
#[derive(Serialize)]
pub struct ArmCost {
    pub arm: &'static str,
    pub ns_per_call: f64,
    pub added_ns: f64,
    pub runs_ns: Vec<f64>,
    /// What the arm's tool counted in each run (`None` for arms that count nothing).
    pub counted: Vec<Option<u64>>,
    pub expected_count: u64,
}

/// `limits`: the ratios checked for this workload (those whose arms it runs).
pub fn syscall_cost(
    config: &Config,
    workload: &'static str,
    calls: u64,
    arms: &[Arm],
    limits: &[Ratio],
) -> SyscallCost {
    // With --baseline, each collector arm runs beside its twin of the baseline binary.
    let arms: Vec<Arm> = arms
        .iter()
        .flat_map(|&arm| [Some(arm), arm.baseline().filter(|_| config.baseline.is_some())])
        .flatten()
        .collect();
    let mut runs: BTreeMap<Arm, Vec<Run>> = BTreeMap::new();
    for pass in 0..config.passes {
        // A B C ... then ... C B A: drift over the run hits every arm alike.
        let order: Vec<Arm> = if pass % 2 == 0 {
            arms.clone()
        } else {
            arms.iter().rev().copied().collect()
        };
        for arm in order {
            let run = run_arm(arm, workload, calls, config.baseline.as_deref(), false);
            eprintln!(
                "bench: {workload} pass {pass} {:<45} {:>8.1} ns/call",
                arm.label(),
                run.ns_per_call
            );
            runs.entry(arm).or_default().push(run);
        }
    }
    // One more run of each collector arm with the kernel's program accounting on, apart from
    // the timed passes (the accounting itself costs time on every program run).
    let programs: BTreeMap<&'static str, Vec<ProgramCost>> = {
        let _stats = StatsEnabled::new();
        arms.iter()
            .filter(|arm| arm.is_collector())
            .map(|&arm| {
                (
                    arm.key(),
                    run_arm(arm, workload, calls, config.baseline.as_deref(), true).programs,
                )
            })
            .collect()
    };
    let median_of = |arm: Arm| {
        runs.get(&arm)
            .map(|r| median(r.iter().map(|r| r.ns_per_call).collect()))
    };
    let bare = median_of(Arm::Bare).unwrap();
    let arm_costs = runs
        .iter()
        .map(|(&arm, runs)| {
            let ns = median_of(arm).unwrap();
            let cost = ArmCost {
                arm: arm.label(),
                ns_per_call: round1(ns),
                added_ns: round1(ns - bare),
                runs_ns: runs.iter().map(|r| round1(r.ns_per_call)).collect(),
                counted: runs.iter().map(|r| r.counted).collect(),
                expected_count: calls,
            };
            (arm.key(), cost)
        })
        .collect();
    let added = |arm| median_of(arm).map(|ns| ns - bare);
    let mut ratios = BTreeMap::new();
    let mut targets = Vec::new();
    for limit in limits {
        let ratio = match (added(limit.over), added(limit.under)) {
            (Some(x), Some(y)) if y > 0.0 => Some(round3(x / y)),
            _ => None,
        };
        ratios.insert(limit.name(), ratio);
        if let Some(ratio) = ratio {
            targets.push(limit.check(ratio));
        }
    }
    let mut compared = BTreeMap::new();
    for (new, old) in BASELINE_RATIOS {
        if let (Some(x), Some(y)) = (added(new), added(old))
            && y > 0.0
        {
            compared.insert(format!("({}-a)/({}-a)", new.key(), old.key()), round3(x / y));
        }
    }
    SyscallCost {
        workload,
        calls_per_run: calls,
        arms: arm_costs,
        ratios,
        targets,
        compared,
        programs,
    }
}

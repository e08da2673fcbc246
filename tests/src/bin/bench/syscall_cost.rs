//! A. Cost per syscall: a fixed loop timed under each arm, over alternating passes.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    Config,
    arms::{Arm, Run, run_arm},
    limits::{RatioCheck, SYSCALL_RATIOS},
    stats::{median, round1, round3},
};

/// One workload's loop under each arm.
#[derive(Serialize)]
pub struct SyscallCost {
    pub workload: &'static str,
    pub calls_per_run: u64,
    /// By arm key (`a`...`g`).
    pub arms: BTreeMap<&'static str, ArmCost>,
    /// Every ratio of `SYSCALL_RATIOS` by name, `None` where an arm was not run.
    pub ratios: BTreeMap<String, Option<f64>>,
    pub targets: Vec<RatioCheck>,
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

/// `checked`: whether the per-syscall targets apply to this workload (they are about the
/// syscall hooks; a socket send also runs the byte probes, which have no target).
pub fn syscall_cost(config: &Config, workload: &'static str, calls: u64, arms: &[Arm], checked: bool) -> SyscallCost {
    let mut runs: BTreeMap<Arm, Vec<Run>> = BTreeMap::new();
    for pass in 0..config.passes {
        // A B C ... then ... C B A: drift over the run hits every arm alike.
        let order: Vec<Arm> = if pass % 2 == 0 {
            arms.to_vec()
        } else {
            arms.iter().rev().copied().collect()
        };
        for arm in order {
            let run = run_arm(arm, workload, calls);
            eprintln!(
                "bench: {workload} pass {pass} {:<45} {:>8.1} ns/call",
                arm.label(),
                run.ns_per_call
            );
            runs.entry(arm).or_default().push(run);
        }
    }
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
    for limit in &SYSCALL_RATIOS {
        let ratio = match (added(limit.over), added(limit.under)) {
            (Some(x), Some(y)) if y > 0.0 => Some(round3(x / y)),
            _ => None,
        };
        ratios.insert(limit.name(), ratio);
        if let Some(ratio) = ratio.filter(|_| checked) {
            targets.push(limit.check(ratio));
        }
    }
    SyscallCost {
        workload,
        calls_per_run: calls,
        arms: arm_costs,
        ratios,
        targets,
    }
}

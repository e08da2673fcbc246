//! A. The arms a timed loop runs under, and one timed run under one arm.
use tests::{CgroupTree, Collector, Workload};

use crate::{
    peers::{Floor, Peer, Tool},
    process::{AGENT_CPU, LOOP_CPU, pin_process},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arm {
    /// (a) nothing attached
    Bare,
    /// (b) empty programs on sys_enter and sys_exit
    Floor,
    /// (c) collector running, the looping process not a target
    CollectorOther,
    /// (d) collector, the looping process a PID target
    CollectorTarget,
    /// (e) collector, the looping process in a cgroup target
    CollectorCgroup,
    /// (f) bpftrace: per-syscall latency histogram for that pid
    Bpftrace,
    /// (g) libbpf-tools syscount -L -p PID
    Syscount,
}

impl Arm {
    pub const ALL: [Arm; 7] = [
        Arm::Bare,
        Arm::Floor,
        Arm::CollectorOther,
        Arm::CollectorTarget,
        Arm::CollectorCgroup,
        Arm::Bpftrace,
        Arm::Syscount,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Arm::Bare => "(a) nothing attached",
            Arm::Floor => "(b) floor: empty sys_enter+sys_exit programs",
            Arm::CollectorOther => "(c) collector, process not a target",
            Arm::CollectorTarget => "(d) collector, process a PID target",
            Arm::CollectorCgroup => "(e) collector, process in a cgroup target",
            Arm::Bpftrace => "(f) bpftrace latency histogram for the pid",
            Arm::Syscount => "(g) libbpf-tools syscount -L -p PID",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Arm::Bare => "a",
            Arm::Floor => "b",
            Arm::CollectorOther => "c",
            Arm::CollectorTarget => "d",
            Arm::CollectorCgroup => "e",
            Arm::Bpftrace => "f",
            Arm::Syscount => "g",
        }
    }
}

/// One timed loop under one arm: ns per call, and the calls the arm's tool counted.
pub struct Run {
    pub ns_per_call: f64,
    pub counted: Option<u64>,
}

/// Starts `arm`'s tool, times the loop in a fresh pinned workload, stops the tool.
pub fn run_arm(arm: Arm, workload: &str, calls: u64) -> Run {
    let mut w = Workload::spawn();
    w.run(&format!("pin {LOOP_CPU}"));
    let warmup_calls = calls / 20;
    let command = format!("time_{workload} {calls}");
    let warmup = format!("time_{workload} {warmup_calls}");
    let time = |w: &mut Workload| {
        w.run(&warmup);
        w.run(&command).parse::<f64>().unwrap() / calls as f64
    };
    let counts_getppid = workload == "getppid";
    match arm {
        Arm::Bare => Run {
            ns_per_call: time(&mut w),
            counted: None,
        },
        Arm::Floor => {
            let _floor = Floor::attach();
            Run {
                ns_per_call: time(&mut w),
                counted: None,
            }
        }
        Arm::CollectorOther | Arm::CollectorTarget | Arm::CollectorCgroup => {
            let bystander = Workload::spawn();
            // (e): a fresh cgroup holding only the looping process, removed after the arm.
            let cgroup = (arm == Arm::CollectorCgroup).then(|| {
                let tree = CgroupTree::create("collector-bench").expect("a cgroup v2 hierarchy");
                tree.move_in(w.pid, "");
                tree
            });
            let target = match (arm, &cgroup) {
                (Arm::CollectorCgroup, Some(tree)) => ["--cgroup".to_owned(), format!("bench={}", tree.root.display())],
                (Arm::CollectorTarget, _) => ["--pid".to_owned(), format!("bench={}", w.pid)],
                _ => ["--pid".to_owned(), format!("bench={}", bystander.pid)],
            };
            let c = Collector::start(&[&target[0], &target[1]]);
            pin_process(c.pid(), AGENT_CPU);
            let before = getppid_count(&c);
            let ns_per_call = time(&mut w);
            let counted =
                (arm != Arm::CollectorOther && counts_getppid).then(|| getppid_count(&c) - before - warmup_calls);
            drop(c);
            drop(cgroup);
            Run { ns_per_call, counted }
        }
        Arm::Bpftrace | Arm::Syscount => {
            let tool = if arm == Arm::Bpftrace {
                Tool::Bpftrace
            } else {
                Tool::Syscount
            };
            let peer = Peer::start(tool, w.pid);
            let ns_per_call = time(&mut w);
            let counted = peer.stop_and_count_getppid();
            Run {
                ns_per_call,
                counted: counted.filter(|_| counts_getppid).map(|n| n - warmup_calls),
            }
        }
    }
}

fn getppid_count(c: &Collector) -> u64 {
    c.metrics()
        .value(
            "collector_syscalls_total",
            &[("target", "bench"), ("syscall", "getppid")],
        )
        .unwrap_or(0.0) as u64
}

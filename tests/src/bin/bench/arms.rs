//! A. The arms a timed loop runs under, and one timed run under one arm.
use std::path::Path;

use tests::{CgroupTree, Collector, OtlpReceiver, Workload, collector_bin};

use crate::{
    peers::{Floor, Peer, Tool},
    process::{AGENT_CPU, LOOP_CPU, pin_process},
    prog_stats::{ProgramCost, Snapshot},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arm {
    /// (a) nothing attached
    Bare,
    /// (b) empty programs on sys_enter and sys_exit
    Floor,
    /// (bs) empty programs on sys_enter, sys_exit and sched_switch
    FloorSwitch,
    /// (c) collector running, the looping process not a target
    CollectorOther,
    /// (cn) as (c), with the sched family disabled
    OtherNoSched,
    /// (d) collector, the looping process a PID target
    CollectorTarget,
    /// (e) collector, the looping process in a cgroup target
    CollectorCgroup,
    /// (d) with `--slow-syscall 10ms`: the threshold's compare on every target call
    TargetSlowSyscall,
    /// (d) with OTLP export of every signal (traces with slow syscalls, metrics, logs) to a
    /// receiver in the bench
    TargetOtlp,
    /// (c') as (c), with the `--baseline` binary: a before/after comparison in one run
    BaselineOther,
    /// (d') as (d), with the `--baseline` binary
    BaselineTarget,
    /// (f) bpftrace: per-syscall latency histogram for that pid
    Bpftrace,
    /// (g) libbpf-tools syscount -L -p PID
    Syscount,
    /// (r) libbpf-tools runqlat -p PID
    Runqlat,
}

impl Arm {
    pub const ALL: [Arm; 9] = [
        Arm::Bare,
        Arm::Floor,
        Arm::CollectorOther,
        Arm::CollectorTarget,
        Arm::CollectorCgroup,
        Arm::TargetSlowSyscall,
        Arm::TargetOtlp,
        Arm::Bpftrace,
        Arm::Syscount,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Arm::Bare => "(a) nothing attached",
            Arm::Floor => "(b) floor: empty sys_enter+sys_exit programs",
            Arm::FloorSwitch => "(bs) floor: empty sys_enter+sys_exit+sched_switch programs",
            Arm::CollectorOther => "(c) collector, process not a target",
            Arm::OtherNoSched => "(cn) as (c), with --disable-family sched",
            Arm::CollectorTarget => "(d) collector, process a PID target",
            Arm::CollectorCgroup => "(e) collector, process in a cgroup target",
            Arm::TargetSlowSyscall => "(ds) as (d), with --slow-syscall 10ms",
            Arm::TargetOtlp => "(do) as (d), with OTLP export of traces, metrics and logs",
            Arm::BaselineOther => "(c') baseline collector, process not a target",
            Arm::BaselineTarget => "(d') baseline collector, process a PID target",
            Arm::Bpftrace => "(f) bpftrace latency histogram for the pid",
            Arm::Syscount => "(g) libbpf-tools syscount -L -p PID",
            Arm::Runqlat => "(r) libbpf-tools runqlat -p PID",
        }
    }

    /// Whether the arm runs the collector (this one or the baseline).
    pub fn is_collector(self) -> bool {
        matches!(
            self,
            Arm::CollectorOther
                | Arm::OtherNoSched
                | Arm::CollectorTarget
                | Arm::CollectorCgroup
                | Arm::TargetSlowSyscall
                | Arm::TargetOtlp
                | Arm::BaselineOther
                | Arm::BaselineTarget
        )
    }

    /// The baseline twin of a collector arm, for `--baseline` runs.
    pub fn baseline(self) -> Option<Arm> {
        match self {
            Arm::CollectorOther => Some(Arm::BaselineOther),
            Arm::CollectorTarget => Some(Arm::BaselineTarget),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Arm::Bare => "a",
            Arm::Floor => "b",
            Arm::FloorSwitch => "bs",
            Arm::CollectorOther => "c",
            Arm::OtherNoSched => "cn",
            Arm::CollectorTarget => "d",
            Arm::CollectorCgroup => "e",
            Arm::TargetSlowSyscall => "ds",
            Arm::TargetOtlp => "do",
            Arm::BaselineOther => "c'",
            Arm::BaselineTarget => "d'",
            Arm::Bpftrace => "f",
            Arm::Syscount => "g",
            Arm::Runqlat => "r",
        }
    }
}

/// One timed loop under one arm: ns per call, and the calls the arm's tool counted.
pub struct Run {
    pub ns_per_call: f64,
    pub counted: Option<u64>,
    /// The collector's programs that the timed loop ran (only with `accounting`).
    pub programs: Vec<ProgramCost>,
}

/// Starts `arm`'s tool, times the loop in a fresh pinned workload, stops the tool.
/// `baseline` is the binary of the baseline arms; with `accounting` (bpf stats on), a
/// collector arm also reads which of its programs the loop ran.
pub fn run_arm(arm: Arm, workload: &str, calls: u64, baseline: Option<&Path>, accounting: bool) -> Run {
    let mut w = Workload::spawn();
    w.run(&format!("pin {LOOP_CPU}"));
    let warmup_calls = calls / 20;
    let command = format!("time_{workload} {calls}");
    let warmup = format!("time_{workload} {warmup_calls}");
    let timed = |w: &mut Workload| w.run(&command).parse::<f64>().unwrap() / calls as f64;
    let time = |w: &mut Workload| {
        w.run(&warmup);
        timed(w)
    };
    let counts_getppid = workload == "getppid";
    match arm {
        Arm::Bare => Run {
            ns_per_call: time(&mut w),
            counted: None,
            programs: Vec::new(),
        },
        Arm::Floor | Arm::FloorSwitch => {
            let _floor = Floor::attach(arm == Arm::FloorSwitch);
            Run {
                ns_per_call: time(&mut w),
                counted: None,
                programs: Vec::new(),
            }
        }
        Arm::CollectorOther
        | Arm::OtherNoSched
        | Arm::CollectorTarget
        | Arm::CollectorCgroup
        | Arm::TargetSlowSyscall
        | Arm::TargetOtlp
        | Arm::BaselineOther
        | Arm::BaselineTarget => {
            let bystander = Workload::spawn();
            // (e): a fresh cgroup holding only the looping process, removed after the arm.
            let cgroup = (arm == Arm::CollectorCgroup).then(|| {
                let tree = CgroupTree::create("collector-bench").expect("a cgroup v2 hierarchy");
                tree.move_in(w.pid, "");
                tree
            });
            let target = match (arm, &cgroup) {
                (Arm::CollectorCgroup, Some(tree)) => ["--cgroup".to_owned(), format!("bench={}", tree.root.display())],
                (Arm::CollectorTarget | Arm::BaselineTarget | Arm::TargetSlowSyscall | Arm::TargetOtlp, _) => {
                    ["--pid".to_owned(), format!("bench={}", w.pid)]
                }
                _ => ["--pid".to_owned(), format!("bench={}", bystander.pid)],
            };
            let bin = match arm {
                Arm::BaselineOther | Arm::BaselineTarget => {
                    baseline.expect("baseline arms run with --baseline").to_owned()
                }
                _ => collector_bin(),
            };
            let receiver = (arm == Arm::TargetOtlp).then(OtlpReceiver::start);
            let mut args: Vec<String> = target.to_vec();
            if arm == Arm::OtherNoSched {
                args.extend(["--disable-family".into(), "sched".into()]);
            }
            if matches!(arm, Arm::TargetSlowSyscall | Arm::TargetOtlp) {
                args.extend(["--slow-syscall".into(), "10ms".into()]);
            }
            if let Some(receiver) = &receiver {
                args.extend(["--otlp-endpoint".into(), receiver.http_endpoint(), "--otlp-logs".into()]);
                args.extend(["--otlp-interval".into(), "1s".into()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let c = Collector::start_bin(&bin, &args);
            pin_process(c.pid(), AGENT_CPU);
            let before = getppid_count(&c);
            w.run(&warmup);
            let programs_before = accounting.then(|| Snapshot::of(c.pid()));
            let ns_per_call = timed(&mut w);
            let programs = programs_before.map_or_else(Vec::new, |b| b.per_call(&Snapshot::of(c.pid()), calls));
            let counted = (!matches!(arm, Arm::CollectorOther | Arm::OtherNoSched | Arm::BaselineOther)
                && counts_getppid)
                .then(|| getppid_count(&c) - before - warmup_calls);
            drop(c);
            drop(cgroup);
            Run {
                ns_per_call,
                counted,
                programs,
            }
        }
        Arm::Bpftrace | Arm::Syscount | Arm::Runqlat => {
            let tool = match arm {
                Arm::Bpftrace => Tool::Bpftrace,
                Arm::Syscount => Tool::Syscount,
                _ => Tool::Runqlat,
            };
            let peer = Peer::start(tool, w.pid);
            let ns_per_call = time(&mut w);
            let counted = peer.stop_and_count_getppid();
            Run {
                ns_per_call,
                counted: counted.filter(|_| counts_getppid).map(|n| n - warmup_calls),
                programs: Vec::new(),
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

//! `cargo xtask bench [--quick]`: what the collector costs, measured side by side with the
//! floor and with peers in one run (these machines are shared and noisy, so only ratios
//! inside one run mean anything). Writes report.md and report.json to `--out`.
//! BENCHMARKS.md explains the method; `limits.rs` holds every pass limit.
//!
//! A. cost per syscall: one pinned process times a fixed getppid loop (and a 4 KiB pread
//!    loop) under each arm; the agent and the peers run on the other CPU.
//! B. events: process exec and exit storms at fixed rates and flat out, the agent's CPU
//!    kept busy by a spinner, counting what was delivered and what was dropped where.
//! C. scrape: /metrics latency and size with synthetic series in the kernel map.
//! D. idle: agent CPU and RSS with no activity, scraped every 15 s.
//! E. memory: the kernel memory of every map, at pid_max 32,768 and 4,194,304.
//! F. HTTP under load: nginx's one worker under wrk, with nothing attached and with the
//!    collector targeting it, its HTTP family off and on, by turns.
mod arms;
mod events;
mod http_load;
mod idle;
mod limits;
mod memory;
mod peers;
mod process;
mod prog_stats;
mod report;
mod scrape;
mod stats;
mod syscall_cost;
mod wrk;

use std::{collections::BTreeMap, path::PathBuf};

use arms::Arm;
use limits::{PINGPONG_RATIOS, SYSCALL_RATIOS, UDP_SEND_RATIOS};
use peers::TracefsMount;
use report::{Machine, Report};
use syscall_cost::syscall_cost;
use tests::cgroup2_mount;

pub struct Config {
    pub quick: bool,
    out: PathBuf,
    pub passes: usize,
    /// `--baseline PATH`: another collector binary, benched beside this one in arms (c') and (d').
    pub baseline: Option<PathBuf>,
    getppid_calls: u64,
    pread_calls: u64,
    pingpong_round_trips: u64,
    fault_pages: u64,
}

impl Config {
    fn from_args() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let out = args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from);
        let baseline = args
            .iter()
            .position(|a| a == "--baseline")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from);
        if quick {
            Config {
                quick,
                out,
                baseline,
                passes: 1,
                getppid_calls: 200_000,
                pread_calls: 50_000,
                pingpong_round_trips: 10_000,
                fault_pages: 20_480,
            }
        } else {
            Config {
                quick,
                out,
                baseline,
                passes: 5,
                getppid_calls: 2_000_000,
                pread_calls: 500_000,
                pingpong_round_trips: 100_000,
                fault_pages: 204_800,
            }
        }
    }
}

fn main() {
    let config = Config::from_args();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("error: the benchmark loads eBPF programs: run it as root (cargo xtask bench)");
        std::process::exit(1);
    }
    if let Some(baseline) = config.baseline.as_ref().filter(|b| !b.is_file()) {
        eprintln!(
            "error: --baseline {}: no such file; give the path of another collector binary",
            baseline.display()
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(&config.out).unwrap();
    let _tracefs = TracefsMount::ensure();

    let machine = Machine::this();
    eprintln!(
        "bench: {} passes, {} getppid calls per run",
        config.passes, config.getppid_calls
    );
    // Arm (e) needs a cgroup v2 hierarchy to make its cgroup in.
    let mut not_measured = BTreeMap::new();
    let arms: Vec<Arm> = if cgroup2_mount().is_some() {
        Arm::ALL.to_vec()
    } else {
        not_measured.insert(
            "(e) cgroup target arm",
            "no cgroup v2 hierarchy is mounted here (no cgroup2 line in /proc/self/mountinfo)",
        );
        Arm::ALL.into_iter().filter(|&a| a != Arm::CollectorCgroup).collect()
    };
    let syscall = syscall_cost(&config, "getppid", config.getppid_calls, &arms, &SYSCALL_RATIOS);
    let pread = syscall_cost(
        &config,
        "pread",
        config.pread_calls,
        &[Arm::Bare, Arm::Floor, Arm::CollectorTarget],
        &SYSCALL_RATIOS,
    );
    // Socket sends: a target's bytes are counted on its sys_exit (socket_bytes.rs); a
    // non-target should pay no more than for any other syscall.
    let udp = syscall_cost(
        &config,
        "udp_send",
        config.pread_calls,
        &[Arm::Bare, Arm::Floor, Arm::CollectorOther, Arm::CollectorTarget],
        &UDP_SEND_RATIOS,
    );
    // Context switches (what `perf bench sched pipe` does, in the workload so that an arm
    // can target it): each syscall after one looks its caller's target up (TARGET_OF, and
    // for a target its ENTRY slot in THREAD_SLOTS), which a loop that never blocks skips;
    // each switch runs sched_switch, which reads a target's counters (the sched family).
    let pingpong = syscall_cost(
        &config,
        "pingpong",
        config.pingpong_round_trips,
        &[
            Arm::Bare,
            Arm::Floor,
            Arm::FloorSwitch,
            Arm::OtherNoSched,
            Arm::CollectorOther,
            Arm::CollectorTarget,
            Arm::Runqlat,
        ],
        &PINGPONG_RATIOS,
    );
    // Page faults: no program of the collector runs on one (the sched family reads the
    // fault counters at context switches); the loop's mmap/munmap calls are syscalls.
    let faults = syscall_cost(
        &config,
        "faults",
        config.fault_pages,
        &[Arm::Bare, Arm::OtherNoSched, Arm::CollectorOther, Arm::CollectorTarget],
        &[],
    );
    let events = events::event_throughput(&config);
    let scrape = scrape::scrape_cost(&config);
    let idle = idle::idle_cost(&config);
    let memory = memory::kernel_memory(&config);
    let http_load = match http_load::cannot_run(machine.cpus) {
        Some(why) => {
            not_measured.insert("F. HTTP under nginx and wrk", why);
            None
        }
        None => Some(http_load::nginx_under_wrk(&config)),
    };

    let report = Report {
        machine,
        quick: config.quick,
        passes: config.passes,
        syscall_cost: syscall,
        pread_cost: pread,
        udp_send_cost: udp,
        pingpong_cost: pingpong,
        faults_cost: faults,
        events,
        scrape,
        idle,
        memory,
        http_load,
        not_measured,
    };
    let md = report.write(&config.out);
    println!("{md}");
    eprintln!("bench: wrote {}/report.md and report.json", config.out.display());
}

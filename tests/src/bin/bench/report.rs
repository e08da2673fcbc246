//! The report: report.json (what every benchmark measured, as one document) and report.md
//! (the same, as the tables BENCHMARKS.md quotes).
use std::{collections::BTreeMap, path::Path, process::Command};

use serde::Serialize;

use crate::{
    events::Events, http_load::HttpLoad, idle::Idle, limits::Check, memory::Memory, scrape::Scrape, stats::round1,
    syscall_cost::SyscallCost,
};

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub passes: usize,
    pub syscall_cost: SyscallCost,
    pub pread_cost: SyscallCost,
    pub udp_send_cost: SyscallCost,
    pub pingpong_cost: SyscallCost,
    pub faults_cost: SyscallCost,
    pub events: Events,
    pub scrape: Vec<Scrape>,
    pub idle: Idle,
    pub memory: Memory,
    /// `None` where the host cannot run it (`not_measured` says why).
    pub http_load: Option<HttpLoad>,
    /// What this host could not measure, and why.
    pub not_measured: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    /// When the run started (UTC).
    pub date: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let output = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        Machine {
            kernel: output("uname", &["-r"]),
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            date: output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        }
    }
}

impl Report {
    /// Writes report.json and report.md into `out`; returns the markdown.
    pub fn write(&self, out: &Path) -> String {
        let md = self.markdown();
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(self).unwrap()).unwrap();
        std::fs::write(out.join("report.md"), &md).unwrap();
        md
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut md = format!(
            "# Benchmark report{}\n\n{} · {} CPUs ({}) · kernel {} · {} passes, medians\n\n",
            if self.quick {
                " (--quick: arms checked, figures not meaningful)"
            } else {
                ""
            },
            m.date,
            m.cpus,
            m.cpu,
            m.kernel,
            self.passes
        );
        md += &syscall_cost("A. Cost per syscall: getppid loop", &self.syscall_cost);
        md += &syscall_cost("A. Realistic: 4 KiB pread from tmpfs", &self.pread_cost);
        md += &syscall_cost("A. Socket sends: 64-byte UDP sendto on loopback", &self.udp_send_cost);
        md += &syscall_cost(
            "A. Context switches: one-byte pipe round trips with a partner on the same CPU",
            &self.pingpong_cost,
        );
        md += &syscall_cost(
            "A. Page faults: fresh anonymous pages touched in 4 MiB mappings (ns per fault)",
            &self.faults_cost,
        );
        md += &events(&self.events);
        md += &scrape(&self.scrape);
        md += &idle(&self.idle);
        md += &memory(&self.memory);
        md += &self.http_load.as_ref().map(http_load).unwrap_or_default();
        if !self.not_measured.is_empty() {
            md += "\n## Not measured yet\n\n";
        }
        for (what, why) in &self.not_measured {
            md += &format!("- {what}: {why}\n");
        }
        md
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**MISSED**" }
}

fn checks(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let note = c
                .note
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("- {}: {}{note}\n", c.target, verdict(c.met))
        })
        .collect()
}

fn syscall_cost(title: &str, section: &SyscallCost) -> String {
    let mut md = format!(
        "## {title} ({} calls per run)\n\n| arm | ns/call | added over (a) | counted / expected |\n|---|---|---|---|\n",
        section.calls_per_run
    );
    for arm in section.arms.values() {
        let counted: Vec<String> = arm.counted.iter().flatten().map(u64::to_string).collect();
        let counted = if counted.is_empty() {
            "-".to_owned()
        } else {
            format!("{} / {}", counted.join(", "), arm.expected_count)
        };
        md += &format!(
            "| {} | {} | {} | {} |\n",
            arm.arm, arm.ns_per_call, arm.added_ns, counted
        );
    }
    md += "\n";
    for t in &section.targets {
        md += &format!("- {}: ratio {} → {}\n", t.target, t.ratio, verdict(t.met));
    }
    for (name, ratio) in &section.compared {
        md += &format!("- against the baseline: {name} = {ratio}\n");
    }
    if section.programs.values().any(|p| !p.is_empty()) {
        md += "\nPrograms each call ran (one more run per arm, `kernel.bpf_stats_enabled=1`; those under \
               0.5 ns per call are only in report.json):\n\n";
        md += "| arm | program | runs per call | ns per run | ns per call |\n|---|---|---|---|---|\n";
        for (arm, programs) in &section.programs {
            for p in programs.iter().filter(|p| p.ns_per_call >= 0.5) {
                md += &format!(
                    "| ({arm}) | {} | {} | {} | {} |\n",
                    p.program, p.runs_per_call, p.ns_per_run, p.ns_per_call
                );
            }
        }
    }
    md + "\n"
}

fn events(ev: &Events) -> String {
    let mut md = format!(
        "## B. Events: process storms for {} s each, the agent's CPU kept busy by a spinner\n\n",
        ev.seconds
    );
    md += "| storm | requested | generated (per s) | delivered (per s) | dropped: kernel | dropped: queue | all accounted | agent CPU % |\n|---|---|---|---|---|---|---|---|\n";
    for row in ev.rows.iter().chain(&ev.definitions).chain(&ev.otlp) {
        md += &format!(
            "| {} | {} | {} ({}) | {} ({}) | {} | {} | {} | {} |\n",
            row.storm,
            row.requested,
            row.generated,
            row.generated_per_s,
            row.delivered,
            row.delivered_per_s,
            row.dropped_kernel,
            row.dropped_queue,
            row.accounted,
            row.agent_cpu_percent
        );
    }
    md += "\nWith OTLP export (the last rows): each exit a span, each event a log record, pushed over \
           OTLP/HTTP to a receiver in the bench process.\n\n\
           | requested | spans exported | spans dropped | every exit a span or a drop | log records exported | log records dropped |\n|---|---|---|---|---|---|\n";
    for row in &ev.otlp {
        if let Some(o) = &row.otlp {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row.requested, o.spans_exported, o.spans_dropped, o.spans_accounted, o.logs_exported, o.logs_dropped
            );
        }
    }
    md + "\n" + &checks(&ev.targets)
}

fn scrape(scrapes: &[Scrape]) -> String {
    let count = scrapes.first().map_or(0, |s| s.scrapes);
    let mut md = format!("\n## C. Scrape ({count} scrapes, OpenMetrics)\n\n")
        + "| series | samples | p50 ms | p99 ms | bytes | RSS before → after (KiB) | target |\n|---|---|---|---|---|---|---|\n";
    for s in scrapes {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} → {} | {} {} |\n",
            s.series_target,
            s.samples,
            s.p50_ms,
            s.p99_ms,
            s.bytes,
            s.rss_before_kib,
            s.rss_after_kib,
            s.target,
            verdict(s.met)
        );
    }
    md
}

fn idle(idle: &Idle) -> String {
    format!(
        "\n## D. Idle ({} s, a scrape every {} s, pid_max {})\n\nCPU {} % of one CPU, RSS {} MiB\n",
        idle.seconds, idle.scrape_every_s, idle.pid_max, idle.cpu_percent, idle.rss_mib
    ) + &checks(&idle.targets)
}

fn memory(memory: &Memory) -> String {
    let mut md = "\n## E. Kernel memory of the agent's maps (bytes_memlock)\n\n| map |".to_owned();
    for run in &memory.runs {
        let which = if run.baseline { "baseline, " } else { "" };
        md += &format!(" {which}pid_max {} |", run.pid_max);
    }
    md += &format!("\n|---|{}\n", "---|".repeat(memory.runs.len()));
    let names: std::collections::BTreeSet<&String> = memory.runs.iter().flat_map(|r| r.maps.keys()).collect();
    for name in names {
        md += &format!("| {name} |");
        for run in &memory.runs {
            md += &run
                .maps
                .get(name)
                .map_or_else(|| " - |".to_owned(), |b| format!(" {b} |"));
        }
        md += "\n";
    }
    md += "| **total, MiB** |";
    for run in &memory.runs {
        md += &format!(" **{:.2}** |", run.total_bytes as f64 / f64::from(1 << 20));
    }
    md += "\n| agent RSS, MiB |";
    for run in &memory.runs {
        md += &format!(" {} |", run.rss_mib);
    }
    md + "\n\n" + &checks(&memory.targets)
}

fn http_load(load: &HttpLoad) -> String {
    let mut md = format!(
        "\n## F. HTTP under load: nginx's one worker (CPU 0) serving a small file to wrk (CPU 1), \
         {} keep-alive connections, {} s per round, {}\n\n",
        load.connections,
        load.seconds,
        if load.rounds == 1 {
            "1 round".to_owned()
        } else {
            format!("{} rounds by turns", load.rounds)
        }
    );
    md += "| arm | requests/s | latency p50 µs | latency p99 µs | requests/s by round |\n|---|---|---|---|---|\n";
    for arm in &load.arms {
        let rounds: Vec<String> = arm
            .rounds
            .iter()
            .map(|r| round1(r.wrk.requests_per_s).to_string())
            .collect();
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            arm.arm,
            arm.median.requests_per_s,
            arm.median.p50_us,
            arm.median.p99_us,
            rounds.join(", ")
        );
    }
    md += "\n";
    for t in &load.targets {
        md += &format!("- {}: ratio {} → {}\n", t.target, t.ratio, verdict(t.met));
    }
    md + &checks(std::slice::from_ref(&load.counted))
}

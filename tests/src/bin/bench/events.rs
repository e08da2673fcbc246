//! B. Events: process exec and exit storms at fixed rates and flat out, the agent's CPU kept
//! busy by a spinner, counting what was delivered and what was dropped where; then the
//! flat-out exit storm (the fastest) again with 20 user metric definitions beside the built-ins;
//! and the exit storm at 10,000 events/s and flat out with OTLP export of spans and log
//! records to a receiver in the bench.
use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde::Serialize;
use tests::{Collector, OtlpReceiver, Workload};

use crate::{
    Config,
    limits::{
        ALL_ACCOUNTED_TARGET, Check, DEFINITIONS_MIN_THROUGHPUT, DEFINITIONS_TARGET, NO_DROPS_EVENTS_PER_S,
        NO_DROPS_REACHED_PER_S, NO_DROPS_TARGET,
    },
    process::{AGENT_CPU, LOOP_CPU, cpu_seconds, pin_process},
    stats::round1,
};

const PROCESS_EVENTS: [&str; 3] = ["process.start", "process.exec", "process.exit"];

/// Storm rates in events per second; 0 is as fast as the target can fork.
const EVENTS_PER_S: [u64; 3] = [1_000, NO_DROPS_EVENTS_PER_S, 0];

#[derive(Serialize)]
pub struct Events {
    pub seconds: u64,
    pub rows: Vec<Storm>,
    /// The flat-out exit storm with the built-ins alone, then with 20 user definitions too,
    /// then with one of them tagged by `exe` (which makes the agent read /proc per start).
    pub definitions: [Storm; 3],
    /// Delivered per second with the 20 definitions over without, and agent CPU per event.
    pub definitions_throughput_ratio: f64,
    pub definitions_cpu_per_event_ratio: f64,
    /// Agent CPU per event with the `exe` tag over without: the cost of reading /proc.
    pub exe_cpu_per_event_ratio: f64,
    /// The exit storm at 10,000 events/s and flat out, each exit a span and each event a
    /// log record pushed over OTLP/HTTP.
    pub otlp: [Storm; 2],
    pub targets: Vec<Check>,
}

/// One storm: events generated (children made times events per child), delivered to the
/// handlers, and dropped in the kernel or a handler queue.
#[derive(Serialize)]
#[allow(clippy::struct_field_names)] // `storm` is the report's JSON key
pub struct Storm {
    pub storm: &'static str,
    pub requested: String,
    #[serde(skip)]
    events_per_s: u64,
    pub generated: f64,
    pub generated_per_s: f64,
    pub delivered: f64,
    pub delivered_per_s: f64,
    pub dropped_kernel: f64,
    pub dropped_queue: f64,
    pub accounted: bool,
    pub agent_cpu_percent: f64,
    /// Every event measured by the metrics handler (the built-in exits counted) by the end.
    pub handled: bool,
    /// With OTLP export: what each signal exported and dropped.
    pub otlp: Option<OtlpCounts>,
}

/// Spans and log records of a storm with OTLP on, from `collector_otlp_*`.
#[derive(Serialize)]
pub struct OtlpCounts {
    pub spans_exported: f64,
    pub spans_dropped: f64,
    pub logs_exported: f64,
    pub logs_dropped: f64,
    /// Every exit the bus delivered is a span exported or counted as dropped.
    pub spans_accounted: bool,
}

pub fn event_throughput(config: &Config) -> Events {
    let seconds = if config.quick { 2 } else { 10 };
    let mut rows = Vec::new();
    // (storm, exec'ing children?, events per child: start, [exec,] exit)
    for (storm, exec, per_child) in [("exec", true, 3u64), ("exit", false, 2)] {
        for events_per_s in EVENTS_PER_S {
            rows.push(run_storm(storm, exec, per_child, events_per_s, seconds, &[]));
        }
    }
    let config_for = |name: &str, with_exe: bool| {
        let path = std::env::temp_dir().join(format!("collector-bench-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, twenty_definitions(with_exe)).unwrap();
        path
    };
    let (plain, with_exe) = (config_for("definitions", false), config_for("definitions-exe", true));
    let with_config = |path: &std::path::Path| vec!["--config".to_owned(), path.display().to_string()];
    let definitions = [
        run_storm("exit, built-ins", false, 2, 0, seconds, &[]),
        run_storm("exit, + 20 definitions", false, 2, 0, seconds, &with_config(&plain)),
        run_storm(
            "exit, + 20 definitions, one tagged by exe",
            false,
            2,
            0,
            seconds,
            &with_config(&with_exe),
        ),
    ];
    let otlp = [NO_DROPS_EVENTS_PER_S, 0].map(|rate| {
        let receiver = OtlpReceiver::start();
        let args = [
            "--otlp-endpoint".to_owned(),
            receiver.http_endpoint(),
            "--otlp-logs".to_owned(),
        ];
        run_storm("exit, + OTLP spans and logs", false, 2, rate, seconds, &args)
    });
    let _ = (std::fs::remove_file(plain), std::fs::remove_file(with_exe));
    let per_event = |s: &Storm| s.agent_cpu_percent / s.delivered_per_s;
    let throughput_ratio = definitions[1].delivered_per_s / definitions[0].delivered_per_s;
    let cpu_ratio = per_event(&definitions[1]) / per_event(&definitions[0]);
    let exe_cpu_ratio = per_event(&definitions[2]) / per_event(&definitions[1]);
    let kept_up = definitions[..2].iter().all(|s| s.handled && s.dropped_queue == 0.0);
    let at_limit: Vec<&Storm> = rows
        .iter()
        .filter(|r| r.events_per_s == NO_DROPS_EVENTS_PER_S)
        .collect();
    let reached = |r: &&Storm| r.generated_per_s >= NO_DROPS_REACHED_PER_S;
    let no_drops = at_limit
        .iter()
        .all(|r| r.dropped_kernel == 0.0 && r.dropped_queue == 0.0);
    let short: Vec<String> = at_limit
        .iter()
        .filter(|r| !reached(r))
        .map(|r| format!("{} storm reached only {}/s here", r.storm, r.generated_per_s))
        .collect();
    let no_drops = Check {
        note: Some(short.join("; ")),
        ..Check::new(NO_DROPS_TARGET, no_drops && at_limit.iter().any(reached))
    };
    let accounted = Check::new(ALL_ACCOUNTED_TARGET, rows.iter().all(|r| r.accounted));
    let definitions_check = Check {
        note: Some(format!(
            "throughput ratio {throughput_ratio:.3}, agent CPU per event ratio {cpu_ratio:.3}; \
             tagging one by exe: agent CPU per event x {exe_cpu_ratio:.3}"
        )),
        ..Check::new(
            DEFINITIONS_TARGET,
            kept_up && throughput_ratio >= DEFINITIONS_MIN_THROUGHPUT,
        )
    };
    Events {
        seconds,
        rows,
        definitions,
        definitions_throughput_ratio: throughput_ratio,
        definitions_cpu_per_event_ratio: cpu_ratio,
        exe_cpu_per_event_ratio: exe_cpu_ratio,
        otlp,
        targets: vec![no_drops, accounted, definitions_check],
    }
}

/// 20 definitions on the storm's events (start, exit), of every kind, tagged and filtered as
/// a user's would be on keys the kernel's records give; with `with_exe`, the first also
/// tagged by `exe`, which only /proc gives.
fn twenty_definitions(with_exe: bool) -> String {
    let mut text = String::new();
    for i in 0..5 {
        let exe = if with_exe && i == 0 { ", \"exe\"" } else { "" };
        text += &format!(
            "[[metric]]\nname = \"bench_workload_starts_{i}_total\"\nkind = \"counter\"\nevent = \"process.start\"\ntags = [\"target\", \"comm\"{exe}]\nkeep = {{ comm = \"work*\" }}\n\n\
             [[metric]]\nname = \"bench_exits_{i}_total\"\nkind = \"counter\"\nevent = \"process.exit\"\ntags = [\"target\", \"outcome\"]\ndrop = {{ outcome = {{ regex = \"sig.*\" }} }}\n\n\
             [[metric]]\nname = \"bench_lifetime_{i}_milliseconds\"\nkind = \"distribution\"\nevent = \"process.exit\"\nmeasurement = \"duration\"\nunit = \"millisecond\"\nbuckets = [1, 10, 100, 1000]\ntags = [\"target\"]\n\n\
             [[metric]]\nname = \"bench_starts_{i}_total\"\nkind = \"counter\"\nevent = [\"process.start\", \"process.exit\"]\ntags = [\"target\", \"comm\"]\n\n"
        );
    }
    text
}

fn run_storm(
    storm: &'static str,
    exec: bool,
    per_child: u64,
    events_per_s: u64,
    seconds: u64,
    extra: &[String],
) -> Storm {
    let _spinner = Spinner::start(AGENT_CPU);
    let mut w = Workload::spawn();
    w.run(&format!("pin {LOOP_CPU}"));
    let target = format!("storm={}", w.pid);
    let mut args = vec!["--pid", &target];
    args.extend(extra.iter().map(String::as_str));
    let c = Collector::start(&args);
    pin_process(c.pid(), AGENT_CPU);
    let (cpu_before, start) = (cpu_seconds(c.pid()), Instant::now());
    let out = w.run(&format!(
        "storm {seconds} {} {}",
        events_per_s / per_child,
        u8::from(exec)
    ));
    let mut out = out.split_whitespace().map(|v| v.parse::<f64>().unwrap());
    let (children, storm_ns) = (out.next().unwrap(), out.next().unwrap());
    let generated = children * per_child as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (delivered, kernel, queue) = loop {
        let t = event_totals(&c);
        if t.0 + t.1 + t.2 >= generated || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The metrics handler runs behind the bus: wait for it to have counted every exit the
    // bus gave it (stage queue is its alone: the sink and OTLP handlers drop under their own stages).
    let handled = loop {
        let m = c.metrics();
        let exits = m
            .value("collector_events_total", &[("event", "process.exit")])
            .unwrap_or(0.0)
            - m.value(
                "collector_events_dropped_total",
                &[("event", "process.exit"), ("stage", "queue")],
            )
            .unwrap_or(0.0);
        let counted = m.sum("collector_process_exits_total", &[]);
        if counted >= exits || Instant::now() > deadline {
            break counted == exits;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let exits = delivered / per_child as f64;
    let otlp_on = extra.iter().any(|a| a == "--otlp-endpoint");
    if otlp_on {
        wait_for_spans(&c, exits, deadline);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_percent = (cpu_seconds(c.pid()) - cpu_before) / wall * 100.0;
    let otlp = otlp_on.then(|| otlp_counts(&c, exits));
    let achieved = generated / (storm_ns / 1e9);
    let requested = if events_per_s == 0 {
        "max".to_owned()
    } else {
        format!("{events_per_s}/s")
    };
    eprintln!(
        "bench: {storm} storm {requested}: generated {generated} ({achieved:.0}/s), delivered {delivered}, \
         dropped kernel {kernel} queue {queue}, agent CPU {cpu_percent:.1} %"
    );
    Storm {
        storm,
        requested,
        events_per_s,
        generated,
        generated_per_s: round1(achieved),
        delivered,
        delivered_per_s: round1(delivered / (storm_ns / 1e9)),
        dropped_kernel: kernel,
        dropped_queue: queue,
        accounted: delivered + kernel + queue == generated,
        agent_cpu_percent: round1(cpu_percent),
        handled,
        otlp,
    }
}

/// What OTLP exported and dropped: (spans exported, dropped, log records exported, dropped).
fn otlp_totals(c: &Collector) -> (f64, f64, f64, f64) {
    let m = c.metrics();
    let exported = |signal| {
        m.value("collector_otlp_exported_total", &[("signal", signal)])
            .unwrap_or(0.0)
    };
    let dropped = |signal| m.sum("collector_otlp_dropped_total", &[("signal", signal)]);
    (exported("traces"), dropped("traces"), exported("logs"), dropped("logs"))
}

/// Waits (until `deadline`) for every one of `exits` to be a span exported or dropped: the
/// export's cost is part of the storm's.
fn wait_for_spans(c: &Collector, exits: f64, deadline: Instant) {
    while Instant::now() < deadline {
        let (exported, dropped, ..) = otlp_totals(c);
        if exported + dropped >= exits {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The storm's OTLP counts, once the log records (which trail the spans by at most a
/// batch's wait) have settled.
fn otlp_counts(c: &Collector, exits: f64) -> OtlpCounts {
    std::thread::sleep(Duration::from_secs(2));
    let (spans_exported, spans_dropped, logs_exported, logs_dropped) = otlp_totals(c);
    OtlpCounts {
        spans_exported,
        spans_dropped,
        logs_exported,
        logs_dropped,
        spans_accounted: spans_exported + spans_dropped == exits,
    }
}

/// (delivered, dropped in the kernel, dropped in a handler queue) over the process events.
fn event_totals(c: &Collector) -> (f64, f64, f64) {
    let m = c.metrics();
    let sum = |name: &str, stage: Option<&str>| -> f64 {
        PROCESS_EVENTS
            .iter()
            .map(|e| match stage {
                Some(stage) => m.value(name, &[("event", e), ("stage", stage)]),
                None => m.value(name, &[("event", e)]),
            })
            .map(|v| v.unwrap_or(0.0))
            .sum()
    };
    (
        sum("collector_events_total", None),
        sum("collector_events_dropped_total", Some("kernel")),
        sum("collector_events_dropped_total", Some("queue")),
    )
}

/// Keeps a CPU busy for as long as it lives.
struct Spinner(Child);

impl Spinner {
    fn start(cpu: usize) -> Spinner {
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("start a spinner");
        Spinner(child)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! Process lifecycle events and the metrics defined on them, end to end: the real collector,
//! real forks, execs, exits and signals, counted exactly; the JSON event sink read back.
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{Collector, Metrics, Workload, eventually, privileged, sink_events, sink_path, value};

#[test]
fn children_started_and_exited_are_counted_by_outcome_and_written_to_the_sink() {
    if !privileged() {
        return;
    }
    const K: usize = 60; // exit codes i % 3: 20 each of 0, 1, 2
    let sink = sink_path("spawn");
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    w.run(&format!("spawn_exit {K}"));
    let exits_of = |m: &Metrics, outcome| {
        value(
            m,
            "collector_process_exits_total",
            &[("target", "app"), ("outcome", outcome)],
        )
    };
    eventually("every exit counted", Duration::from_secs(10), || {
        let m = c.metrics();
        exits_of(&m, "success") + exits_of(&m, "failure") >= K as f64
    });
    let m = c.metrics();
    let starts = value(&m, "collector_process_starts_total", &[("target", "app")]);
    let (success, failure, signal) = (exits_of(&m, "success"), exits_of(&m, "failure"), exits_of(&m, "signal"));
    let lifetimes = value(&m, "collector_process_lifetime_seconds_count", &[("target", "app")]);
    println!("starts {starts}, exits success {success} failure {failure} signal {signal}, lifetimes {lifetimes}");
    assert_eq!(starts, K as f64);
    assert_eq!((success, failure, signal), (20.0, 40.0, 0.0));
    assert_eq!(lifetimes, K as f64);

    let events = sink_events(&sink);
    let of = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (started, exited) = (of("process.start"), of("process.exit"));
    println!(
        "sink: {} process.start, {} process.exit lines",
        started.len(),
        exited.len()
    );
    assert_eq!(started.len(), K);
    assert_eq!(exited.len(), K);
    for e in &started {
        assert_eq!(e["metadata"]["ppid"], w.pid, "{e}");
        assert_eq!(e["metadata"]["target"], "app", "{e}");
        assert_eq!(e["metadata"]["comm"], "workload", "{e}");
    }
    let mut codes: Vec<i64> = exited
        .iter()
        .map(|e| e["metadata"]["exit_code"].as_i64().unwrap())
        .collect();
    codes.sort_unstable();
    let mut want: Vec<i64> = (0..K as i64).map(|i| i % 3).collect();
    want.sort_unstable();
    assert_eq!(codes, want, "exit codes in the sink");
    for e in &exited {
        let d = e["measurements"]["duration"].as_f64().unwrap();
        assert!((0.0..10.0).contains(&d), "lifetime {d}: {e}");
        let pid = &e["metadata"]["pid"];
        assert!(
            started.iter().any(|s| &s["metadata"]["pid"] == pid),
            "exit of a pid never started: {e}"
        );
    }
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn exec_and_sigkill_are_reported_with_filename_and_signal() {
    if !privileged() {
        return;
    }
    let sink = sink_path("exec");
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    w.run("exec_true 1");
    w.run("kill_child");
    eventually("the killed child's exit", Duration::from_secs(10), || {
        value(
            &c.metrics(),
            "collector_process_exits_total",
            &[("target", "app"), ("outcome", "signal")],
        ) == 1.0
    });
    let m = c.metrics();
    assert_eq!(value(&m, "collector_process_execs_total", &[("target", "app")]), 1.0);
    assert_eq!(
        value(
            &m,
            "collector_process_exits_total",
            &[("target", "app"), ("outcome", "success")]
        ),
        1.0
    );

    eventually("the sink caught up", Duration::from_secs(10), || {
        sink_events(&sink)
            .iter()
            .filter(|e| e["event"] == "process.exit")
            .count()
            == 2
    });
    let events = sink_events(&sink);
    let execs: Vec<_> = events.iter().filter(|e| e["event"] == "process.exec").collect();
    println!("exec events: {execs:?}");
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0]["metadata"]["filename"], "/bin/true");
    assert_eq!(execs[0]["metadata"]["comm"], "true");
    let killed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "process.exit" && e["metadata"]["outcome"] == "signal")
        .collect();
    println!("killed: {killed:?}");
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0]["metadata"]["signal"], "SIGKILL");
    assert!(killed[0]["metadata"].get("exit_code").is_none());
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn the_process_gauge_follows_live_children_within_one_poll_period() {
    if !privileged() {
        return;
    }
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("pool={}", w.pid), "--poll-interval", "1s"]);
    let processes = |c: &Collector| c.metrics().value("collector_processes", &[("target", "pool")]);
    let threads = |c: &Collector| c.metrics().value("collector_threads", &[("target", "pool")]);
    eventually("one process polled", Duration::from_secs(3), || {
        processes(&c) == Some(1.0)
    });
    assert_eq!(threads(&c), Some(1.0));
    w.run("hold 5");
    // The kernel's count changes at once; the gauge at the next poll, at most one period
    // (1 s) later. The deadline adds 1 s for scrape granularity on a loaded 2-CPU machine.
    let held = Instant::now();
    eventually("six processes within a poll period", Duration::from_secs(2), || {
        processes(&c) == Some(6.0)
    });
    println!("6 processes seen {:?} after forking", held.elapsed());
    assert_eq!(threads(&c), Some(6.0));
    w.run("release");
    eventually("back to one within a poll period", Duration::from_secs(2), || {
        processes(&c) == Some(1.0)
    });
}

#[test]
fn with_a_tiny_ring_buffer_delivered_plus_dropped_equals_generated() {
    if !privileged() {
        return;
    }
    const N: usize = 400; // each child: process.start, process.exec, process.exit
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("storm={}", w.pid), "--ring-buffer-size", "4096"]);
    // The agent stopped, its reader drains nothing: the kernel's records must overflow the
    // ring, however fast or slow this machine is, and each that did not fit is counted.
    unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) };
    w.run(&format!("exec_storm {N}"));
    unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) };
    let names = ["process.start", "process.exec", "process.exit"];
    let totals = |m: &Metrics| {
        let delivered: f64 = names
            .iter()
            .map(|e| value(m, "collector_events_total", &[("event", e)]))
            .sum();
        let dropped: f64 = names
            .iter()
            .map(|e| {
                value(
                    m,
                    "collector_events_dropped_total",
                    &[("event", e), ("stage", "kernel")],
                )
            })
            .sum();
        (delivered, dropped)
    };
    eventually("every event delivered or dropped", Duration::from_secs(10), || {
        let (delivered, dropped) = totals(&c.metrics());
        delivered + dropped >= (3 * N) as f64
    });
    std::thread::sleep(Duration::from_millis(300)); // nothing more may arrive
    let (delivered, dropped) = totals(&c.metrics());
    println!(
        "generated {}, delivered {delivered}, dropped in the kernel {dropped}",
        3 * N
    );
    assert_eq!(delivered + dropped, (3 * N) as f64);
    assert!(
        dropped > 0.0,
        "a 4 KiB ring buffer not read during an exec storm should have dropped something"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("logged={}", w.pid), "--log-format", "json"]);
    let log = c.stop_and_read_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .collect();
    println!(
        "{} JSON log lines; first: {}",
        lines.len(),
        lines.first().map(std::string::ToString::to_string).unwrap_or_default()
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string() && l["timestamp"].is_string())
    );
    let ready = lines
        .iter()
        .find(|l| l["message"] == "collector ready")
        .expect("a ready line");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["targets"], "logged");
    assert!(ready["listen"].is_string() && ready["startup_ms"].is_u64(), "{ready}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "stopping" && l["signal"] == "SIGTERM"),
        "{log}"
    );
}

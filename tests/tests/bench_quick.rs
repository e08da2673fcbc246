//! `cargo xtask bench --quick` in the test suite: every benchmark arm runs, and what is exact
//! in it is checked exactly (call counts of the collector, bpftrace and syscount; every event
//! delivered or counted as dropped). Its timings are not checked: they mean nothing here.
//! It runs with this same binary as `--baseline`, so the baseline arms run too.
use std::process::Command;

use serde_json::Value;
use tests::{collector_bin, have_tool, privileged};

#[test]
fn every_bench_arm_runs_and_every_tool_counts_exactly() {
    if !privileged()
        || !have_tool("bpftrace", "bpftrace")
        || !have_tool("syscount", "libbpf-tools")
        || !have_tool("taskset", "util-linux")
    {
        return;
    }
    let out = std::env::temp_dir().join(format!("collector-bench-quick-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .arg("--baseline")
        .arg(collector_bin())
        .env("COLLECTOR_BIN", collector_bin())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "bench --quick failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);

    let arms = report["syscall_cost"]["arms"].as_object().unwrap();
    assert_eq!(
        arms.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c", "c'", "d", "d'", "do", "ds", "e", "f", "g"]
    );
    for counting in ["d", "d'", "do", "ds", "e", "f", "g"] {
        let arm = &arms[counting];
        for counted in arm["counted"].as_array().unwrap() {
            println!("{}: counted {counted} of {}", arm["arm"], arm["expected_count"]);
            assert_eq!(counted, &arm["expected_count"], "{}", arm["arm"]);
        }
    }
    // The baseline arm ran in every section (its ratio to the new build is left out when
    // noise puts its added cost at or below zero, which a --quick run of UDP sends did).
    for section in ["syscall_cost", "pread_cost", "udp_send_cost", "pingpong_cost"] {
        let arms = report[section]["arms"].as_object().unwrap();
        let baseline = &arms["d'"];
        assert!(
            baseline["runs_ns"].as_array().is_some_and(|runs| !runs.is_empty()),
            "{section}: the baseline arm did not run: {arms:?}"
        );
    }
    let storms = report["events"]["rows"].as_array().unwrap();
    assert_eq!(storms.len(), 6);
    for storm in storms {
        assert_eq!(storm["accounted"], true, "{storm}");
    }
    // With OTLP: every exit's span exported or counted as dropped.
    for storm in report["events"]["otlp"].as_array().unwrap() {
        assert_eq!(storm["accounted"], true, "{storm}");
        assert_eq!(storm["otlp"]["spans_accounted"], true, "{storm}");
    }
    assert_eq!(report["scrape"].as_array().unwrap().len(), 2);
    assert!(report["idle"]["rss_mib"].as_f64().unwrap() > 0.0);
    // This binary and the baseline, each at two pid_max settings; every map has a size, but
    // the route trie, which allocates per route and has none here.
    let memory = report["memory"]["runs"].as_array().unwrap();
    assert_eq!(memory.len(), 4);
    for run in memory {
        let maps = run["maps"].as_object().unwrap();
        let sized = |(name, bytes): (&String, &Value)| name == "HTTP_ROUTES" || bytes.as_u64() > Some(0);
        assert!(maps.contains_key("TARGET_OF") && maps.iter().all(sized), "{run}");
    }
    // nginx under wrk (where nginx and wrk are, else the report says why not): every arm
    // ran, and with HTTP on the collector counted what nginx logged (none with it off).
    let http = &report["http_load"];
    if http.is_null() {
        println!("skipping: section F: {}", report["not_measured"]);
    } else {
        assert_eq!(http["arms"].as_array().map(Vec::len), Some(3), "{http}");
        assert_eq!(http["counted"]["met"], true, "{http}");
    }
}

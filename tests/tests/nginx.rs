//! A load test with real programs: nginx (from Debian) as the target, wrk driving it on
//! loopback as fast as this machine goes, one request per connection. What the collector
//! reports must match nginx's own access log exactly, with nothing dropped.
use std::{process::Command, time::Duration};

use tests::{
    Collector, Nginx, count_lines_with, eventually, have_tool, http_requests, map_entries, privileged, sink_events,
    sink_path, value,
};

/// How long wrk runs.
const SECONDS: u32 = 5;

#[test]
fn nginx_under_wrk_accepts_exactly_what_its_access_log_says() {
    if !privileged() || !have_tool("nginx", "nginx-light") || !have_tool("wrk", "wrk") {
        return;
    }
    let nginx = Nginx::start("wrk", r#"location / { return 200 "ok\n"; }"#);
    let sink = sink_path("nginx");
    // The master's pid: its workers exist already and are found as descendants.
    let c = Collector::start(&[
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--events",
        sink.to_str().unwrap(),
    ]);
    // The readiness probe above was before the collector: it is not in what follows.
    let logged_before = nginx.access_log_lines();
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{SECONDS}s"),
            "-H",
            "Connection: close",
            &format!("http://127.0.0.1:{}/", nginx.port),
        ])
        .output()
        .expect("run wrk");
    let wrk = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {wrk}");
    let rate = wrk
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map_or("?", str::trim)
        .to_owned();

    // Every connection wrk made is closed once wrk has exited; nginx finishes its side.
    let accepted = |m: &tests::Metrics| {
        value(
            m,
            "collector_tcp_connections_opened_total",
            &[("target", "nginx"), ("direction", "inbound")],
        )
    };
    eventually("every inbound connection closed", Duration::from_secs(20), || {
        let m = c.metrics();
        value(
            &m,
            "collector_tcp_connections",
            &[("target", "nginx"), ("direction", "inbound")],
        ) == 0.0
            && value(
                &m,
                "collector_tcp_connection_duration_seconds_count",
                &[("target", "nginx"), ("direction", "inbound")],
            ) == accepted(&m)
    });
    let accepted_now = accepted(&c.metrics());
    eventually("every tcp.close in the sink", Duration::from_secs(20), || {
        count_lines_with(&sink, "\"event\":\"tcp.close\"") as f64 >= accepted_now
    });
    let m = c.metrics();
    let logged = nginx.access_log_lines() - logged_before;
    let connections = accepted(&m);
    let dropped: f64 = m.sum("collector_events_dropped_total", &[]);
    // A connection that carried a request: nginx read bytes from it. wrk stops mid-flight
    // (and reconnects after an error), so some connections close before sending their
    // request; nginx accepts those too but has nothing to log. Their number is printed, not
    // bounded: it depends on wrk's timing, not on the collector.
    let events = sink_events(&sink);
    let closes: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "tcp.close" && e["metadata"]["direction"] == "inbound")
        .collect();
    let requests = closes
        .iter()
        .filter(|e| e["measurements"]["bytes_received"].as_f64().unwrap_or(0.0) > 0.0)
        .count();
    let accepts = events.iter().filter(|e| e["event"] == "tcp.accept").count();
    let nginx_pids: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "tcp.accept")
        .map(|e| e["metadata"]["pid"].as_u64().unwrap())
        .collect();
    println!(
        "wrk {rate} requests/s for {SECONDS} s; nginx access log {logged} lines; collector: \
         {connections} inbound connections ({accepts} tcp.accept events), {requests} with a request, \
         {} without; events dropped {dropped}",
        closes.len() - requests
    );
    // The kernel's per-target byte counters and the per-connection ones agree.
    let summed = |key: &str| -> f64 { closes.iter().map(|e| e["measurements"][key].as_f64().unwrap()).sum() };
    let labels = [("target", "nginx"), ("family", "inet"), ("protocol", "tcp")];
    assert_eq!(
        summed("bytes_received"),
        value(&m, "collector_socket_received_bytes_total", &labels)
    );
    assert_eq!(
        summed("bytes_sent"),
        value(&m, "collector_socket_sent_bytes_total", &labels)
    );
    assert_eq!(dropped, 0.0, "events were dropped");
    let map_errors: f64 = m.sum("collector_bpf_map_errors_total", &[]);
    assert_eq!(map_errors, 0.0, "kernel map updates failed");
    // Each request nginx logged, per method and status, with its bytes; one it logged
    // without sending a byte (wrk gone first) is one the collector saw aborted.
    let mut log = nginx.requests_logged();
    let unanswered = log.values().filter(|v| v.2 == 0.0).fold(0.0, |n, v| n + v.0);
    log.retain(|_, v| v.2 > 0.0);
    let http = http_requests(&m, "nginx", "server");
    println!("HTTP: nginx logged {log:?} and {unanswered} unanswered; the collector counted {http:?}");
    assert_eq!(http, log);
    assert_eq!(
        value(
            &m,
            "collector_http_server_requests_aborted_total",
            &[("target", "nginx")]
        ),
        unanswered
    );
    assert_eq!(m.sum("collector_http_untracked_total", &[]), 0.0);
    assert!(
        map_entries(c.pid(), "HTTP_CONNS").is_empty(),
        "HTTP state left after every close"
    );
    assert!(logged > 1000, "wrk made only {logged} requests: {wrk}");
    assert_eq!(requests, logged, "connections with a request vs the access log");
    assert_eq!(connections, accepts as f64);
    assert_eq!(closes.len(), accepts);
    assert!(
        !nginx_pids.contains(&nginx.child.id().into()),
        "the master accepted? workers do"
    );
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

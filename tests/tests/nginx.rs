//! A load test with real programs: nginx (from Debian) as the target, wrk driving it on
//! loopback as fast as this machine goes, one request per connection. What the collector
//! reports must match nginx's own access log exactly, with nothing dropped.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{Collector, eventually, have_tool, privileged, sink_events, sink_path, value};

/// How long wrk runs.
const SECONDS: u32 = 5;

/// nginx in the foreground with its own prefix, config and logs under `dir`; stopped when
/// dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = std::env::temp_dir().join(format!("collector-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &dir.to_string_lossy(),
                "-c",
                &dir.join("nginx.conf").to_string_lossy(),
            ])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen: {}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    fn access_log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful shutdown, workers finish and exit.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn count_lines_with(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| l.contains(needle)).count())
}

#[test]
fn nginx_under_wrk_accepts_exactly_what_its_access_log_says() {
    if !privileged() || !have_tool("nginx", "nginx-light") || !have_tool("wrk", "wrk") {
        return;
    }
    let nginx = Nginx::start();
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

//! OTLP export, end to end: the real collector pushes to a real receiver in this test
//! process (`OtlpReceiver`: OTLP/HTTP and gRPC, decoded with the official protobuf
//! definitions), while target workloads make known connections, processes and syscalls.
use std::{collections::BTreeMap, time::Duration};

use opentelemetry_proto::tonic::{
    metrics::v1::{metric::Data, number_data_point},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tests::{Collector, OtlpReceiver, Workload, attribute, eventually, free_port, privileged, value};

const WAIT: Duration = Duration::from_secs(20);

/// The spans received whose name is `name`.
fn named(receiver: &OtlpReceiver, name: &str) -> Vec<Span> {
    receiver
        .spans()
        .into_iter()
        .map(|(_, span)| span)
        .filter(|s| s.name == name)
        .collect()
}

fn attr(span: &Span, key: &str) -> String {
    attribute(&span.attributes, key).unwrap_or_else(|| panic!("span {} has no {key}", span.name))
}

fn status(span: &Span) -> (i32, String) {
    let s = span.status.clone().unwrap_or_default();
    (s.code, s.message)
}

/// N connections from a target client to a target server on loopback: N client and N server
/// spans, each with exactly the bytes each side sent and received.
fn connections_become_spans_with_their_bytes(protocol: &str) {
    const N: usize = 10;
    const SENT: usize = 3000;
    const ANSWERED: usize = 700;
    let receiver = OtlpReceiver::start();
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let mut server = Workload::spawn();
    let mut client = Workload::spawn();
    let _c = Collector::start(&[
        "--pid",
        &format!("server={}", server.pid),
        "--pid",
        &format!("client={}", client.pid),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
        "--otlp-headers",
        "x-test=from%20the%20agent",
        "--otlp-resource-attributes",
        "team=ops",
    ]);
    let port = server.run("tcp_listen 127.0.0.1");
    let serving = std::thread::spawn(move || {
        server.run(&format!("tcp_accept {N} {SENT} {ANSWERED}"));
        server
    });
    let received = client.run(&format!("tcp_connect 127.0.0.1 {port} {N} {SENT}"));
    assert_eq!(received, (N * ANSWERED).to_string());
    let _server = serving.join().unwrap();

    eventually("every connection's two spans", WAIT, || {
        named(&receiver, "tcp connect").len() >= N && named(&receiver, "tcp accept").len() >= N
    });
    let clients = named(&receiver, "tcp connect");
    let servers = named(&receiver, "tcp accept");
    println!(
        "{protocol}: {} client spans, {} server spans",
        clients.len(),
        servers.len()
    );
    assert_eq!((clients.len(), servers.len()), (N, N));
    for span in &clients {
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(attr(span, "collector.target"), "client");
        assert_eq!(attr(span, "collector.tcp.bytes_sent"), SENT.to_string());
        assert_eq!(attr(span, "collector.tcp.bytes_received"), ANSWERED.to_string());
        assert_eq!(attr(span, "network.peer.port"), port);
        assert_eq!(attr(span, "network.peer.address"), "127.0.0.1");
        assert_eq!(
            (attr(span, "network.transport"), attr(span, "network.type")),
            ("tcp".into(), "ipv4".into())
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert!(
            !span.parent_span_id.is_empty(),
            "a connection is a child of its process"
        );
    }
    for span in &servers {
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(attr(span, "collector.target"), "server");
        assert_eq!(attr(span, "collector.tcp.bytes_received"), SENT.to_string());
        assert_eq!(attr(span, "collector.tcp.bytes_sent"), ANSWERED.to_string());
        assert_eq!(attr(span, "network.local.port"), port);
    }
    let (resource, _) = receiver.spans().into_iter().next().unwrap();
    assert_eq!(attribute(&resource, "service.name").as_deref(), Some("collector"));
    assert_eq!(attribute(&resource, "os.type").as_deref(), Some("linux"));
    assert_eq!(attribute(&resource, "team").as_deref(), Some("ops"));
    assert!(attribute(&resource, "host.name").is_some());
    assert!(
        receiver.with(|r| !r.x_test.is_empty() && r.x_test.iter().all(|h| h.as_deref() == Some("from the agent"))),
        "every export carries --otlp-headers"
    );
}

#[test]
fn connections_become_spans_with_their_bytes_over_http() {
    if privileged() {
        connections_become_spans_with_their_bytes("http/protobuf");
    }
}

#[test]
fn connections_become_spans_with_their_bytes_over_grpc() {
    if privileged() {
        connections_become_spans_with_their_bytes("grpc");
    }
}

/// A target that forks K children which exit with known codes, and K that exec /bin/true:
/// 2K process spans, children of the target's own span, each with its exit code (and exec);
/// and, with --otlp-logs, a log record per event.
#[test]
fn children_become_process_spans_under_their_parent() {
    if !privileged() {
        return;
    }
    const K: usize = 6;
    let receiver = OtlpReceiver::start();
    let mut w = Workload::spawn();
    let pid = w.pid;
    let c = Collector::start(&[
        "--pid",
        &format!("app={pid}"),
        "--otlp-endpoint",
        &receiver.http_endpoint(),
        "--otlp-logs",
    ]);
    w.run(&format!("spawn_exit {K}"));
    w.run(&format!("exec_true {K}"));
    w.finish();
    eventually("the target's own span", WAIT, || {
        named(&receiver, "process workload")
            .iter()
            .any(|s| attr(s, "process.pid") == pid.to_string())
    });
    let workloads = named(&receiver, "process workload");
    let (own, children): (Vec<Span>, Vec<Span>) = workloads
        .into_iter()
        .partition(|s| attr(s, "process.pid") == pid.to_string());
    let [own] = own.as_slice() else {
        panic!("{} spans of the target itself", own.len())
    };
    assert!(
        own.parent_span_id.is_empty(),
        "the target began before the agent: a root"
    );
    assert_eq!(status(own).0, StatusCode::Unset as i32);
    let execs = named(&receiver, "process true");
    println!("{} forked children, {} exec'd ones", children.len(), execs.len());
    assert_eq!((children.len(), execs.len()), (K, K));
    let mut codes = BTreeMap::new();
    for span in children.iter().chain(&execs) {
        assert_eq!(span.trace_id, own.trace_id, "{}", span.name);
        assert_eq!(span.parent_span_id, own.span_id, "{}", span.name);
        assert_eq!(attr(span, "process.parent_pid"), pid.to_string());
        *codes.entry(attr(span, "process.exit.code")).or_insert(0) += 1;
    }
    // spawn_exit: child i exits with i % 3; exec_true's children all with 0.
    assert_eq!(
        codes,
        BTreeMap::from([("0".into(), K / 3 + K), ("1".into(), K / 3), ("2".into(), K / 3)])
    );
    for span in &children {
        let code = attr(span, "process.exit.code");
        let expected = if code == "0" {
            StatusCode::Unset
        } else {
            StatusCode::Error
        };
        assert_eq!(status(span).0, expected as i32);
        assert!(span.events.is_empty());
    }
    for span in &execs {
        let [exec] = span.events.as_slice() else {
            panic!("{} exec events", span.events.len())
        };
        assert_eq!(exec.name, "exec");
        assert_eq!(
            attribute(&exec.attributes, "process.executable.path").as_deref(),
            Some("/bin/true")
        );
    }
    eventually("the log records", WAIT, || {
        receiver
            .log_records()
            .iter()
            .filter(|r| r.event_name == "process.exit")
            .count()
            > 2 * K
    });
    let logs = receiver.log_records();
    let count = |name: &str| logs.iter().filter(|r| r.event_name == name).count();
    assert_eq!(
        (count("process.start"), count("process.exec"), count("process.exit")),
        (2 * K, K, 2 * K + 1)
    );
    let metrics = c.metrics();
    assert_eq!(
        value(
            &metrics,
            "collector_otlp_dropped_total",
            &[("signal", "traces"), ("reason", "queue_full")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            "collector_otlp_dropped_total",
            &[("signal", "logs"), ("reason", "export_failed")]
        ),
        0.0
    );
}

/// With --slow-syscall 50ms, exactly the M calls that sleep 100 ms become spans; thousands of
/// fast calls do not.
#[test]
fn exactly_the_slow_syscalls_become_spans() {
    if !privileged() {
        return;
    }
    const M: usize = 4;
    let receiver = OtlpReceiver::start();
    let mut w = Workload::spawn();
    let _c = Collector::start(&[
        "--pid",
        &format!("app={}", w.pid),
        "--otlp-endpoint",
        &receiver.grpc_endpoint(),
        "--otlp-protocol",
        "grpc",
        "--slow-syscall",
        "50ms",
    ]);
    for _ in 0..M {
        w.run("getppid 5000");
        w.run("nanosleep 100");
        w.run("openat_missing 100");
    }
    eventually("the slow calls' spans", WAIT, || {
        named(&receiver, "nanosleep").len() >= M
    });
    std::thread::sleep(Duration::from_secs(2)); // a late extra span would show by now
    let slow = named(&receiver, "nanosleep");
    let others: Vec<String> = receiver
        .spans()
        .into_iter()
        .map(|(_, s)| s.name)
        .filter(|n| n != "nanosleep")
        .collect();
    println!("{} nanosleep spans; others: {others:?}", slow.len());
    assert_eq!(slow.len(), M);
    assert!(others.iter().all(|n| n != "getppid" && n != "openat"), "{others:?}");
    for span in &slow {
        let took = span.end_time_unix_nano - span.start_time_unix_nano;
        assert!((100_000_000..1_000_000_000).contains(&took), "took {took} ns");
        assert_eq!(attr(span, "thread.id"), w.pid.to_string());
        assert!(!span.parent_span_id.is_empty());
        assert_eq!(status(span).0, StatusCode::Unset as i32);
    }
}

/// After the workload ends, the counter and the histogram pushed over OTLP are the values
/// /metrics serves.
#[test]
fn pushed_metrics_equal_the_scrape() {
    if !privileged() {
        return;
    }
    const N: u64 = 25_000;
    let receiver = OtlpReceiver::start();
    let mut w = Workload::spawn();
    let c = Collector::start(&[
        "--pid",
        &format!("app={}", w.pid),
        "--otlp-endpoint",
        &receiver.http_endpoint(),
        "--otlp-interval",
        "500ms",
    ]);
    w.run(&format!("getppid {N}"));
    let labels = [("target", "app"), ("syscall", "getppid")];
    let scraped = value(&c.metrics(), "collector_syscalls_total", &labels);
    let scraped_count = value(&c.metrics(), "collector_syscall_duration_seconds_count", &labels);
    assert_eq!((scraped, scraped_count), (N as f64, N as f64));
    let pushes = receiver.metric_pushes().len();
    eventually("two more pushes", WAIT, || receiver.metric_pushes().len() >= pushes + 2);
    let last = receiver.metric_pushes().pop().unwrap();
    let point_of = |name: &str| {
        last.iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} pushed"))
            .data
            .clone()
    };
    let getppid = |attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        attribute(attributes, "target").as_deref() == Some("app")
            && attribute(attributes, "syscall").as_deref() == Some("getppid")
    };
    let Some(Data::Sum(sum)) = point_of("collector_syscalls") else {
        panic!("collector_syscalls is not a sum")
    };
    assert!(sum.is_monotonic);
    let point = sum.data_points.iter().find(|p| getppid(&p.attributes)).unwrap();
    assert_eq!(point.value, Some(number_data_point::Value::AsInt(N as i64)));
    let Some(Data::Histogram(h)) = point_of("collector_syscall_duration_seconds") else {
        panic!("collector_syscall_duration_seconds is not a histogram")
    };
    let point = h.data_points.iter().find(|p| getppid(&p.attributes)).unwrap();
    assert_eq!(point.count, N);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), N);
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    // The scrape's cumulative buckets, by bound: the pushed counts per bucket add up to them.
    let m = c.metrics();
    let scraped: Vec<(f64, f64)> = m
        .select("collector_syscall_duration_seconds_bucket", &labels)
        .iter()
        .map(|s| (s.labels["le"].parse().unwrap(), s.value))
        .collect();
    assert_eq!(scraped.len(), point.bucket_counts.len());
    let mut below = 0;
    for (i, (le, cumulative)) in scraped.iter().enumerate() {
        below += point.bucket_counts[i];
        assert_eq!(*cumulative, below as f64, "bucket le={le}");
        if let Some(bound) = point.explicit_bounds.get(i) {
            assert_eq!(bound, le);
        }
    }
}

/// A receiver down at start, started later, then killed: the agent never stops serving,
/// counts what it could not send, says so at /health, and sends once it can.
#[test]
fn a_receiver_down_then_up_then_gone_costs_only_what_is_counted() {
    if !privileged() {
        return;
    }
    let (http, grpc) = (free_port(), free_port());
    let mut w = Workload::spawn();
    let c = Collector::start(&[
        "--pid",
        &format!("app={}", w.pid),
        "--otlp-endpoint",
        &format!("http://{http}"),
        "--otlp-interval",
        "500ms",
    ]);
    let dropped = |signal: &str| {
        value(
            &c.metrics(),
            "collector_otlp_dropped_total",
            &[("signal", signal), ("reason", "export_failed")],
        )
    };
    w.run("spawn_exit 5");
    eventually("the failed exports counted", WAIT, || {
        dropped("traces") >= 5.0 && dropped("metrics") > 0.0
    });
    let (code, health) = c.health();
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")), "{health}");
    assert!(health["checks"]["otlp"]["failing"]["traces"].is_string(), "{health}");

    let receiver = OtlpReceiver::start_on(http, grpc);
    w.run("spawn_exit 5");
    eventually("spans once the receiver is up", Duration::from_secs(60), || {
        named(&receiver, "process workload").len() >= 5
    });
    eventually("healthy again", WAIT, || {
        c.health().1["checks"]["otlp"]["status"] == "pass"
    });

    drop(receiver);
    let before = dropped("traces");
    w.run("spawn_exit 5");
    eventually("the drops after the receiver went", Duration::from_secs(60), || {
        dropped("traces") >= before + 5.0
    });
    assert!(!c.metrics().0.is_empty(), "/metrics still serves");
    assert_eq!(c.health().1["status"], "degraded");
    // SIGTERM with the receiver gone: what is queued gets its few seconds, no more.
    w.run("spawn_exit 50");
    let mut c = c;
    let started = std::time::Instant::now();
    let status = c.terminate(Duration::from_secs(10)).expect("the collector stops");
    println!("stopped in {:?}: {status}", started.elapsed());
    assert!(status.success() && started.elapsed() < Duration::from_secs(6));
}

/// nginx as a target: each request on a keep-alive connection is a SERVER span named by its
/// method (and route), a child of its connection's span, with the status nginx answered.
#[test]
fn http_requests_become_spans_under_their_connection() {
    use std::io::{Read as _, Write as _};
    if !privileged() || !tests::have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = tests::Nginx::start("otlp", "location = /e500 { return 500 \"boom\\n\"; }");
    std::fs::write(nginx.html().join("index.html"), "hello\n").unwrap();
    let receiver = OtlpReceiver::start();
    let _c = Collector::start(&[
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--otlp-endpoint",
        &receiver.http_endpoint(),
        "--http-route",
        "/index.html",
    ]);
    let requests = [("/index.html", "200"), ("/missing?x=1", "404"), ("/e500", "500")];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    for (i, (path, _)) in requests.iter().enumerate() {
        let close = if i == requests.len() - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        // One write each (`write!` would make several), and one read each.
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{close}\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answers = String::new();
    s.read_to_string(&mut answers).unwrap();
    drop(s);
    let gets = || {
        let names: Vec<String> = receiver.spans().into_iter().map(|(_, s)| s.name).collect();
        names.into_iter().filter(|n| n.starts_with("GET")).count()
    };
    let waited = std::time::Instant::now();
    while (named(&receiver, "tcp accept").is_empty() || gets() < requests.len()) && waited.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let names: Vec<String> = receiver.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(
        (named(&receiver, "tcp accept").len(), gets()),
        (1, requests.len()),
        "spans received: {names:?}"
    );
    let connection = named(&receiver, "tcp accept").remove(0);
    let mut spans: Vec<Span> = receiver
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.name.starts_with("GET"))
        .collect();
    spans.sort_by_key(|s| s.start_time_unix_nano);
    for (span, (path, status_code)) in spans.iter().zip(requests) {
        println!(
            "{} {} -> {}",
            span.name,
            attr(span, "url.path"),
            attr(span, "http.response.status_code")
        );
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.parent_span_id, connection.span_id);
        assert_eq!(span.trace_id, connection.trace_id);
        assert_eq!(attr(span, "http.request.method"), "GET");
        assert_eq!(attr(span, "http.response.status_code"), status_code);
        assert_eq!(attr(span, "url.path"), path.split('?').next().unwrap());
        assert_eq!(attr(span, "server.port"), nginx.port.to_string());
        let error = if status_code == "500" {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        assert_eq!(status(span).0, error as i32, "{path}");
    }
    assert_eq!(spans[0].name, "GET /index.html");
    assert_eq!(attr(&spans[0], "http.route"), "/index.html");
    assert_eq!(attr(&spans[1], "url.query"), "x=1");
    assert_eq!(spans[1].name, "GET", "a path no route matches");
}

/// A bad endpoint or protocol, on the command line or in the environment, stops the start
/// with one line naming it, exit code 2, before anything is loaded.
#[test]
fn a_bad_endpoint_or_protocol_is_a_one_line_usage_error() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let pid = w.pid.to_string();
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut command = std::process::Command::new(tests::collector_bin());
        command.args(["--pid", &pid]).args(args);
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (args, env, needle) in [
        (
            &["--otlp-endpoint", "ftp://127.0.0.1:4318"][..],
            None,
            "the scheme is ftp, not http",
        ),
        (
            &["--otlp-endpoint", "https://collector:4318"][..],
            None,
            "https is not supported yet",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"][..],
            Some(("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")),
            "'udp' is not an OTLP protocol",
        ),
        (&[][..], Some(("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost")), "not a URL"),
    ] {
        let (code, stderr) = run(args, env);
        println!("{args:?} {env:?}: {stderr}");
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert_eq!(
            stderr.trim().lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{stderr}"
        );
    }
}

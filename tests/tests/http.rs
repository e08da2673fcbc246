//! HTTP/1.x requests counted from the syscalls of real servers and clients: nginx and a
//! Python client as targets (each side's counts and bytes against nginx's own access log),
//! pipelined and hard cases against nginx, request durations of a Python server, and bytes
//! that are not HTTP. Every connection's HTTP state must be gone from the kernel once it
//! has closed.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    Collector, Metrics, Nginx, Workload, events_reader, eventually, have_tool, http_get, http_requests, map_entries,
    privileged, python_after_go, serve_tcp, value,
};

/// nginx answering 200 for files, 404 for a missing one, 500 and 503 from `return`, 301
/// from a redirect; files (a large one among them) sent with sendfile.
const LOCATIONS: &str = r#"
        sendfile on;
        location = /e500 { return 500 "boom\n"; }
        location = /e503 { return 503; }
        location = /moved { return 301 /index.html; }
"#;

fn nginx_with_files(test: &str) -> Nginx {
    let nginx = Nginx::start(test, LOCATIONS);
    std::fs::write(nginx.html().join("index.html"), "hello\n").unwrap();
    // Larger than a socket buffer: sent in many sendfile calls.
    std::fs::write(nginx.html().join("big.bin"), vec![b'x'; 300_000]).unwrap();
    nginx
}

fn aborted(m: &Metrics, target: &str, side: &str) -> f64 {
    value(
        m,
        &format!("collector_http_{side}_requests_aborted_total"),
        &[("target", target)],
    )
}

fn untracked(m: &Metrics) -> f64 {
    m.sum("collector_http_untracked_total", &[])
}

/// Waits until the kernel holds no HTTP state for any connection.
fn http_state_is_gone(c: &Collector) {
    eventually(
        "no connection's HTTP state left in HTTP_CONNS",
        Duration::from_secs(10),
        || map_entries(c.pid(), "HTTP_CONNS").is_empty(),
    );
}

/// The requests the client makes: (method, path, how many), each as many times over one
/// keep-alive connection and then once per connection. No request has a body: nginx does not
/// count one it discards (`return`) in `$request_length`, which the collector does.
const CLIENT: &str = r#"
import http.client
port = int(sys.argv[1])
plan = [("GET", "/index.html", 5), ("GET", "/missing", 3), ("GET", "/e500", 2), ("GET", "/e503", 2),
        ("GET", "/moved", 2), ("HEAD", "/index.html", 3), ("GET", "/big.bin", 2), ("POST", "/e500", 2),
        ("DELETE", "/index.html", 1)]
c = http.client.HTTPConnection("127.0.0.1", port)
for method, path, n in plan:
    for _ in range(n):
        c.request(method, path)
        c.getresponse().read()
c.close()
for method, path, n in plan:
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request(method, path, headers={"Connection": "close"})
        c.getresponse().read()
        c.close()
print("done", flush=True)
"#;

#[test]
fn each_sides_requests_and_bytes_per_method_and_status_are_what_nginx_logged() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("sides");
    let (mut client, mut go) = python_after_go(CLIENT, &[&nginx.port.to_string()]);
    let c = Collector::start(&[
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--pid",
        &format!("client={}", client.id()),
    ]);
    writeln!(go, "go").unwrap();
    let status = client.wait().unwrap();
    assert!(status.success(), "the client failed");
    http_state_is_gone(&c);

    let log = nginx.requests_logged();
    let m = c.metrics();
    let (server, client) = (
        http_requests(&m, "nginx", "server"),
        http_requests(&m, "client", "client"),
    );
    println!("nginx logged {log:?}\nserver side {server:?}\nclient side {client:?}");
    assert_eq!(log.values().map(|v| v.0).sum::<f64>(), 2.0 * 22.0, "{log:?}");
    assert_eq!(server, log, "nginx's requests, as its access log has them");
    assert_eq!(client, log, "the client's requests, as nginx logged them");
    for (target, side) in [("nginx", "server"), ("client", "client")] {
        assert_eq!(aborted(&m, target, side), 0.0, "{side}");
    }
    assert_eq!(untracked(&m), 0.0);
    // The other side of each is no target: nothing counted for it.
    assert_eq!(
        http_requests(&m, "nginx", "client").len() + http_requests(&m, "client", "server").len(),
        0
    );
}

/// Writes each of `parts` (pausing between them so that the server reads them apart), then
/// reads until the server closes.
fn exchange(port: u16, parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        s.write_all(part).unwrap();
    }
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn pipelined_split_and_abandoned_requests_are_each_counted_once() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("pipelined");
    let c = Collector::start(&["--pid", &format!("nginx={}", nginx.child.id())]);
    // The client is this test: not a target.
    let port = nginx.port;
    let pipelined = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n\
        HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /e500 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
        GET /e503 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answers = exchange(port, &[pipelined]);
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 5, "{answers}");
    // Headers split across reads, and a response in many writes.
    let split = exchange(
        port,
        &[b"GET /big.bin HTTP/1.1\r\nHo", b"st: x\r\nConnection: close\r\n\r\n"],
    );
    assert!(split.starts_with("HTTP/1.1 200"), "{}", &split[..40]);
    // A client that goes away mid-request: nginx never answers it.
    let mut gone = TcpStream::connect(("127.0.0.1", port)).unwrap();
    gone.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gone.shutdown(Shutdown::Both).unwrap();
    drop(gone);
    http_state_is_gone(&c);

    let m = c.metrics();
    let mut log = nginx.requests_logged();
    // nginx logs the abandoned request as a 400 it never sent.
    assert_eq!(
        log.remove(&("GET".to_owned(), "400".to_owned())),
        Some((1.0, 35.0, 0.0)),
        "{log:?}"
    );
    let server = http_requests(&m, "nginx", "server");
    println!("nginx logged {log:?}\ncounted {server:?}");
    assert_eq!(log.values().map(|v| v.0).sum::<f64>(), 6.0, "{log:?}");
    assert_eq!(server, log);
    assert_eq!(aborted(&m, "nginx", "server"), 1.0, "the abandoned request");
    assert_eq!(untracked(&m), 0.0);
}

/// A Python HTTP/1.1 server: `/fast` at once, `/slow` after 500 ms, `/chunked` in three
/// chunks 200 ms apart, each its own write, `/upgrade` a 101 and then three frames of another
/// protocol 200 ms apart; prints its port.
const SERVER: &str = r#"
import http.server, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        if self.path == "/upgrade":
            self.send_response(101)
            self.send_header("Upgrade", "frames")
            self.end_headers()
            for _ in range(3):
                time.sleep(0.2)
                self.wfile.write(b"frame")
            self.close_connection = True
            return
        if self.path == "/slow":
            time.sleep(0.5)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(3):
                time.sleep(0.2)
                self.wfile.write(b"5\r\nhello\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[test]
fn durations_run_from_the_request_to_the_last_write_of_its_response() {
    if !privileged() {
        return;
    }
    const FAST: usize = 20;
    const SLOW: usize = 5;
    const CHUNKED: usize = 3;
    let mut server = Command::new("python3")
        .args(["-c", SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.as_mut().unwrap()), &mut port).unwrap();
    let port: u16 = port.trim().parse().unwrap();
    // One bound at 300 ms: a fast request stays under it even in a guest without KVM.
    let c = Collector::start(&["--pid", &format!("py={}", server.id()), "--http-buckets", "0.3,10"]);
    // One keep-alive connection from this test (no target).
    let client = format!(
        "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port})\n\
         for path, n in [('/fast', {FAST}), ('/slow', {SLOW}), ('/chunked', {CHUNKED})]:\n    \
         for _ in range(n):\n        c.request('GET', path)\n        c.getresponse().read()\nc.close()\n"
    );
    let ran = Command::new("python3").args(["-c", &client]).status().unwrap();
    assert!(ran.success());
    let upgraded = exchange(
        port,
        &[b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: frames\r\n\r\n"],
    );
    assert!(
        upgraded.starts_with("HTTP/1.1 101") && upgraded.ends_with("frameframeframe"),
        "{upgraded}"
    );
    http_state_is_gone(&c);
    let m = c.metrics();
    let _ = server.kill();
    let _ = server.wait();

    let labels = |le: &'static str| {
        [
            ("target", "py"),
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
            ("le", le),
        ]
    };
    let name = "collector_http_server_request_duration_seconds_bucket";
    let fast = value(&m, name, &labels("0.3"));
    let all = value(&m, name, &labels("+Inf"));
    let count = value(
        &m,
        "collector_http_server_request_duration_seconds_count",
        &labels("+Inf")[..3],
    );
    println!("{fast} of {all} requests took 300 ms or less (count {count})");
    assert_eq!(count, (FAST + SLOW + CHUNKED) as f64);
    assert_eq!(all, count);
    assert_eq!(fast, FAST as f64, "exactly the slow and chunked ones take longer");
    assert_eq!(aborted(&m, "py", "server"), 0.0);
    // The switch of protocols is counted at its status line: what follows is no response.
    let switched = |le| {
        value(
            &m,
            name,
            &[
                ("target", "py"),
                ("http_request_method", "GET"),
                ("http_response_status_code", "101"),
                ("le", le),
            ],
        )
    };
    assert_eq!((switched("0.3"), switched("+Inf")), (1.0, 1.0));
    // Its bytes are its head's alone, not the frames after it.
    let head = upgraded.len() - "frameframeframe".len();
    assert_eq!(
        value(
            &m,
            "collector_http_server_response_bytes_total",
            &[("target", "py"), ("http_response_status_code", "101")]
        ),
        head as f64
    );
}

#[test]
fn bytes_that_are_not_http_are_never_a_request() {
    if !privileged() {
        return;
    }
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid)]);
    // Server side: a client (this test) sends what looks almost like HTTP: a lowercase
    // request line, a status line where a request should be, and binary.
    let port: u16 = w.run("tcp_listen 127.0.0.1").parse().unwrap();
    let payloads: [&[u8]; 3] = [
        b"get /index.html http/1.1\r\nhost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1",
    ];
    const R: usize = 100;
    let client = std::thread::spawn(move || {
        for payload in payloads {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut bytes = payload.to_vec();
            bytes.resize(R, b' ');
            s.write_all(&bytes).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
        }
    });
    w.run(&format!("tcp_accept 3 {R} 50"));
    client.join().unwrap();
    // Client side: the target connects and sends bytes that are no request.
    let (peer, served) = serve_tcp("127.0.0.1".parse().unwrap(), 3, 50);
    w.run(&format!("tcp_connect 127.0.0.1 {peer} 3 100"));
    assert_eq!(served.join().unwrap(), vec![100; 3]);
    http_state_is_gone(&c);
    let m = c.metrics();
    assert_eq!(value(&m, "collector_probe_attached", &[("probe", "http")]), 1.0);
    let opened = |direction| {
        value(
            &m,
            "collector_tcp_connections_opened_total",
            &[("target", "app"), ("direction", direction)],
        )
    };
    assert_eq!((opened("inbound"), opened("outbound")), (3.0, 3.0));
    let http: Vec<_> = m.0.iter().filter(|s| s.name.starts_with("collector_http_")).collect();
    assert!(http.is_empty(), "{http:?}");
}

/// `--disable-family tcp` disables http too, which needs it: neither family's probes are
/// attached, `/health` lists both as disabled and stays healthy (the user asked for it),
/// nginx's requests leave no HTTP or TCP series, and the rest still counts.
#[test]
fn a_disabled_family_and_those_that_need_it_count_nothing_and_the_agent_stays_healthy() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("disabled");
    let c = Collector::start(&[
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--disable-family",
        "tcp",
    ]);
    let addr = format!("127.0.0.1:{}", nginx.port);
    for _ in 0..3 {
        assert_eq!(http_get(&addr, "/index.html").map(|(s, _)| s), Some(200));
    }
    eventually(
        "nginx's three responses in its socket bytes",
        Duration::from_secs(10),
        || {
            let sent = c.metrics().sum(
                "collector_socket_sent_bytes_total",
                &[("target", "nginx"), ("protocol", "tcp")],
            );
            sent >= 3.0 * 6.0
        },
    );
    assert_eq!(nginx.access_log_lines(), 3);
    let (code, health) = c.health();
    println!("health {health}");
    assert_eq!((code, health["status"].as_str()), (200, Some("healthy")));
    let disabled = health["checks"]["probes"]["disabled"].as_object().unwrap();
    assert_eq!(disabled.keys().collect::<Vec<_>>(), ["http", "tcp"]);
    assert_eq!(disabled["tcp"], "--disable-family");
    assert!(health["checks"]["probes"].get("off").is_none(), "{health}");
    let m = c.metrics();
    for probe in ["http", "http_pipelined", "tcp_retransmit_skb", "inet_sock_set_state"] {
        assert_eq!(
            value(&m, "collector_probe_attached", &[("probe", probe)]),
            0.0,
            "{probe}"
        );
    }
    assert_eq!(value(&m, "collector_probe_attached", &[("probe", "sys_exit")]), 1.0);
    let served: Vec<&str> =
        m.0.iter()
            .map(|s| s.name.as_str())
            .filter(|n| n.starts_with("collector_http_") || n.starts_with("collector_tcp_"))
            .collect();
    assert!(served.is_empty(), "series of disabled families: {served:?}");
    assert!(
        value(
            &m,
            "collector_syscalls_total",
            &[("target", "nginx"), ("syscall", "accept4")]
        ) >= 3.0
    );
}

/// Requests per (route, status) of one side of a target, from the duration histograms'
/// `_count`s.
fn per_route(m: &Metrics, target: &str, side: &str) -> std::collections::BTreeMap<(String, String), f64> {
    let name = format!("collector_http_{side}_request_duration_seconds_count");
    let mut counts = std::collections::BTreeMap::new();
    for s in m.select(&name, &[("target", target)]) {
        let label = |k: &str| s.labels.get(k).cloned().unwrap_or_else(|| format!("<no {k}>"));
        *counts
            .entry((label("http_route"), label("http_response_status_code")))
            .or_insert(0.0) += s.value;
    }
    counts
}

/// The client of the route test: each (path, how many) over one keep-alive connection.
const ROUTE_CLIENT: &str = r#"
import http.client
port = int(sys.argv[1])
plan = [("/index.html", 3), ("/index.html?x=1", 2), ("/index.htmlx", 1), ("/api/users/7", 2),
        ("/api/x", 2), ("/missing", 1)]
c = http.client.HTTPConnection("127.0.0.1", port)
for path, n in plan:
    for _ in range(n):
        c.request("GET", path)
        c.getresponse().read()
c.close()
"#;

/// `--http-route`: a request's path is matched in the kernel against the routes (the
/// longest prefix for those ending in `*`, the whole path with or without a query for the
/// others), on both sides and for pipelined requests; a path that matches none is `other`,
/// and no raw path is ever a label.
#[test]
fn requests_are_grouped_by_the_route_their_path_matches_and_no_path_is_a_label() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("routes");
    let (mut client, mut go) = python_after_go(ROUTE_CLIENT, &[&nginx.port.to_string()]);
    let routes = ["/api/*", "/api/users/*", "/index.html"];
    let mut args = vec![
        "--pid".to_owned(),
        format!("nginx={}", nginx.child.id()),
        "--pid".to_owned(),
        format!("client={}", client.id()),
    ];
    for route in routes {
        args.extend(["--http-route".to_owned(), route.to_owned()]);
    }
    let c = Collector::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    writeln!(go, "go").unwrap();
    assert!(client.wait().unwrap().success(), "the client failed");
    // Two more in one read, from a client that is not a target: the second is found by the
    // pipelined search.
    let answers = exchange(
        nginx.port,
        &[b"GET /api/users/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    );
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 2, "{answers}");
    http_state_is_gone(&c);

    let m = c.metrics();
    let key = |route: &str, status: &str| (route.to_owned(), status.to_owned());
    let client_side = [
        (key("/index.html", "200"), 5.0),
        (key("/api/users/*", "404"), 2.0),
        (key("/api/*", "404"), 2.0),
        (key("other", "404"), 2.0),
    ];
    let (server, client) = (per_route(&m, "nginx", "server"), per_route(&m, "client", "client"));
    println!("server side {server:?}\nclient side {client:?}");
    assert_eq!(client, client_side.iter().cloned().collect());
    let mut server_side: std::collections::BTreeMap<_, _> = client_side.into_iter().collect();
    *server_side.get_mut(&key("/index.html", "200")).unwrap() += 1.0;
    *server_side.get_mut(&key("/api/users/*", "404")).unwrap() += 1.0;
    assert_eq!(server, server_side);
    assert_eq!(nginx.access_log_lines(), 13);
    // Every HTTP series names a route, and only a route.
    for s in
        m.0.iter()
            .filter(|s| s.name.starts_with("collector_http_server_request_"))
    {
        let route = s.labels.get("http_route").map(String::as_str);
        assert!(route.is_some_and(|r| r == "other" || routes.contains(&r)), "{s:?}");
    }
}

/// `http.request` events: none leave the kernel while nothing takes them; an `/events`
/// reader that asks for them gets one per request (the first of a read and those the
/// pipelined search finds), each with what nginx logged for it and the connection's ends.
#[test]
fn http_request_events_are_sent_only_while_taken_and_say_what_nginx_logged() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("events");
    let c = Collector::start(&["--pid", &format!("nginx={}", nginx.child.id())]);
    let addr = format!("127.0.0.1:{}", nginx.port);
    for _ in 0..3 {
        assert_eq!(http_get(&addr, "/index.html").map(|(s, _)| s), Some(200));
    }
    http_state_is_gone(&c);
    let m = c.metrics();
    assert_eq!(
        http_requests(&m, "nginx", "server").values().map(|v| v.0).sum::<f64>(),
        3.0
    );
    assert_eq!(value(&m, "collector_events_total", &[("event", "http.request")]), 0.0);

    let (events, _reader) = events_reader(&c.addr, "event=http.request");
    let requests = [
        ("GET", "/index.html"),
        ("GET", "/missing"),
        ("HEAD", "/index.html"),
        ("GET", "/e500?q=1"),
    ];
    let mut pipelined = String::new();
    for (i, (method, path)) in requests.iter().enumerate() {
        let close = if i == requests.len() - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        pipelined.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{close}\r\n"));
    }
    let mut s = TcpStream::connect(&addr).unwrap();
    let client_port = s.local_addr().unwrap().port();
    s.write_all(pipelined.as_bytes()).unwrap();
    let mut answers = String::new();
    s.read_to_string(&mut answers).unwrap();
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 4, "{answers}");
    http_state_is_gone(&c);
    eventually("the reader has the four requests", Duration::from_secs(10), || {
        events.lock().unwrap().len() >= 4
    });
    std::thread::sleep(Duration::from_millis(300));
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 4, "{events:#?}");
    let logged = &nginx.access_log_entries()[3..];
    let workers = nginx.workers();
    for ((event, (method, path)), (_, status, request_bytes, response_bytes)) in events.iter().zip(requests).zip(logged)
    {
        let (meta, measured) = (&event["metadata"], &event["measurements"]);
        println!("{event}");
        assert_eq!(event["event"], "http.request");
        assert_eq!(meta["method"], method);
        assert_eq!(meta["path"], path);
        assert_eq!(meta["status_code"].to_string(), *status);
        assert_eq!(meta["direction"], "server");
        assert_eq!(
            (meta["target"].as_str(), meta["comm"].as_str()),
            (Some("nginx"), Some("nginx"))
        );
        assert!(workers.iter().any(|&w| meta["pid"] == w), "{workers:?}");
        assert_eq!(meta["local_port"], u64::from(nginx.port));
        assert_eq!(meta["peer_port"], u64::from(client_port));
        assert_eq!(meta["peer_address"], "127.0.0.1");
        assert_eq!(measured["request_bytes"].as_f64(), Some(*request_bytes));
        assert_eq!(measured["response_bytes"].as_f64(), Some(*response_bytes));
        assert!(
            measured["duration"].as_f64().is_some_and(|d| d > 0.0 && d < 1.0),
            "{event}"
        );
    }
    let m = c.metrics();
    assert_eq!(value(&m, "collector_events_total", &[("event", "http.request")]), 4.0);
    assert_eq!(
        m.sum("collector_events_dropped_total", &[("event", "http.request")]),
        0.0
    );
    assert_eq!(
        value(&m, "collector_bpf_map_errors_total", &[("map", "HTTP_PATHS")]),
        0.0
    );
}

/// A metric the user defines on `http.request` (here by path and status) counts each
/// request, and makes the kernel send the events from the start.
#[test]
fn a_metric_defined_on_http_requests_counts_each_by_its_path() {
    if !privileged() || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = nginx_with_files("event-metric");
    let config = std::env::temp_dir().join(format!("collector-http-metric-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[metric]]\nname = \"requests_by_path_total\"\nkind = \"counter\"\nevent = \"http.request\"\ntags = [\"path\", \"status_code\"]\n",
    )
    .unwrap();
    let c = Collector::start(&[
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--config",
        &config.to_string_lossy(),
    ]);
    let addr = format!("127.0.0.1:{}", nginx.port);
    for path in ["/index.html", "/missing", "/index.html"] {
        assert!(http_get(&addr, path).is_some());
    }
    http_state_is_gone(&c);
    eventually("three requests counted by path", Duration::from_secs(10), || {
        c.metrics().sum("requests_by_path_total", &[]) >= 3.0
    });
    let m = c.metrics();
    let by = |path: &str, status: &str| value(&m, "requests_by_path_total", &[("path", path), ("status_code", status)]);
    assert_eq!((by("/index.html", "200"), by("/missing", "404")), (2.0, 1.0));
    assert_eq!(value(&m, "collector_events_total", &[("event", "http.request")]), 3.0);
    let _ = std::fs::remove_file(config);
}

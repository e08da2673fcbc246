//! Socket and TCP activity of targets, end to end: real sockets on loopback between a target
//! workload and this test process (never a target), counted exactly, and the `tcp.*` events
//! read back from the JSON sink.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use serde_json::Value;
use tests::{Collector, Metrics, Workload, eventually, privileged, serve_tcp, sink_events, sink_path, value};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The sink's events named `name`.
fn events_named(sink: &Path, name: &str) -> Vec<Value> {
    sink_events(sink).into_iter().filter(|e| e["event"] == name).collect()
}

fn family_labels(addr: IpAddr) -> (&'static str, &'static str) {
    if addr.is_ipv4() {
        ("ipv4", "inet")
    } else {
        ("ipv6", "inet6")
    }
}

fn bytes(m: &Metrics, direction: &str, family: &str, protocol: &str) -> f64 {
    value(
        m,
        &format!("collector_socket_{direction}_bytes_total"),
        &[("target", "app"), ("family", family), ("protocol", protocol)],
    )
}

fn opened(m: &Metrics, direction: &str) -> f64 {
    value(
        m,
        "collector_tcp_connections_opened_total",
        &[("target", "app"), ("direction", direction)],
    )
}

fn outbound_connections_are_counted_exactly(addr: IpAddr) {
    const C: usize = 25;
    const S: usize = 3000;
    const R: usize = 700;
    let (family, family_label) = family_labels(addr);
    let sink = sink_path(&format!("tcp-out-{family}"));
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    let (port, server) = serve_tcp(addr, C, R);
    let received = w.run(&format!("tcp_connect {addr} {port} {C} {S}"));
    assert_eq!(received, (C * R).to_string(), "the workload's own count");
    assert_eq!(server.join().unwrap(), vec![S; C], "what the server read");

    eventually("every close event in the sink", Duration::from_secs(10), || {
        events_named(&sink, "tcp.close").len() >= C
    });
    let m = c.metrics();
    let (out, sent, recv) = (
        opened(&m, "outbound"),
        bytes(&m, "sent", family_label, "tcp"),
        bytes(&m, "received", family_label, "tcp"),
    );
    println!(
        "{family}: opened outbound {out}, sent {sent} (expected {}), received {recv} (expected {})",
        C * S,
        C * R
    );
    assert_eq!(out, C as f64);
    assert_eq!(opened(&m, "inbound"), 0.0, "the server is not a target");
    assert_eq!(sent, (C * S) as f64);
    assert_eq!(recv, (C * R) as f64);
    assert_eq!(
        value(&m, "collector_tcp_connect_duration_seconds_count", &[("target", "app")]),
        C as f64
    );
    assert_eq!(
        value(
            &m,
            "collector_tcp_connections",
            &[("target", "app"), ("direction", "outbound")]
        ),
        0.0,
        "all closed"
    );

    let closes = events_named(&sink, "tcp.close");
    let connects = events_named(&sink, "tcp.connect");
    assert_eq!((connects.len(), closes.len()), (C, C));
    for e in connects.iter().chain(&closes) {
        let meta = &e["metadata"];
        assert_eq!(meta["pid"], w.pid, "{e}");
        assert_eq!(meta["comm"], "workload", "{e}");
        assert_eq!(meta["target"], "app", "{e}");
        assert_eq!(meta["family"], family, "{e}");
        assert_eq!(meta["peer_address"], addr.to_string(), "{e}");
        assert_eq!(meta["local_address"], addr.to_string(), "{e}");
        assert_eq!(meta["peer_port"], port, "{e}");
        assert!(
            meta["local_port"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(port)),
            "{e}"
        );
        assert_eq!(meta["direction"], "outbound", "{e}");
        assert!(e["measurements"]["duration"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
    }
    for e in &closes {
        assert_eq!(e["measurements"]["bytes_sent"], S as f64, "{e}");
        assert_eq!(e["measurements"]["bytes_received"], R as f64, "{e}");
    }
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn outbound_ipv4_connections_and_bytes_are_counted_exactly() {
    if privileged() {
        outbound_connections_are_counted_exactly(V4);
    }
}

#[test]
fn outbound_ipv6_connections_and_bytes_are_counted_exactly() {
    if privileged() {
        outbound_connections_are_counted_exactly(V6);
    }
}

fn inbound_connections_belong_to_the_accepting_server(addr: IpAddr) {
    const C: usize = 20;
    const R: usize = 1500; // the client sends, the server receives
    const S: usize = 400;
    let (family, family_label) = family_labels(addr);
    let sink = sink_path(&format!("tcp-in-{family}"));
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    let port: u16 = w.run(&format!("tcp_listen {addr}")).parse().unwrap();
    // The client is this test process, not a target: its side must not be counted.
    let client = std::thread::spawn(move || {
        (0..C)
            .map(|_| {
                let mut s = TcpStream::connect((addr, port)).unwrap();
                s.write_all(&vec![b'q'; R]).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                got.len()
            })
            .sum::<usize>()
    });
    w.run(&format!("tcp_accept {C} {R} {S}"));
    assert_eq!(client.join().unwrap(), C * S);

    eventually("every close event in the sink", Duration::from_secs(10), || {
        events_named(&sink, "tcp.close").len() >= C
    });
    let m = c.metrics();
    let (inbound, recv, sent) = (
        opened(&m, "inbound"),
        bytes(&m, "received", family_label, "tcp"),
        bytes(&m, "sent", family_label, "tcp"),
    );
    println!(
        "{family}: opened inbound {inbound}, received {recv} (expected {}), sent {sent} (expected {})",
        C * R,
        C * S
    );
    assert_eq!(inbound, C as f64);
    assert_eq!(opened(&m, "outbound"), 0.0, "the client is not a target");
    assert_eq!(recv, (C * R) as f64);
    assert_eq!(sent, (C * S) as f64);

    let accepts = events_named(&sink, "tcp.accept");
    let closes = events_named(&sink, "tcp.close");
    assert_eq!((accepts.len(), closes.len()), (C, C));
    assert!(
        events_named(&sink, "tcp.connect").is_empty(),
        "the client's connect was seen"
    );
    for e in accepts.iter().chain(&closes) {
        let meta = &e["metadata"];
        assert_eq!(meta["pid"], w.pid, "the server's pid: {e}");
        assert_eq!(meta["local_port"], port, "{e}");
        assert_eq!(meta["family"], family, "{e}");
        assert_eq!(meta["direction"], "inbound", "{e}");
    }
    for e in &closes {
        assert_eq!(e["measurements"]["bytes_received"], R as f64, "{e}");
        assert_eq!(e["measurements"]["bytes_sent"], S as f64, "{e}");
    }
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn inbound_ipv4_connections_belong_to_the_accepting_server() {
    if privileged() {
        inbound_connections_belong_to_the_accepting_server(V4);
    }
}

#[test]
fn inbound_ipv6_connections_belong_to_the_accepting_server() {
    if privileged() {
        inbound_connections_belong_to_the_accepting_server(V6);
    }
}

#[test]
fn a_connect_to_a_closed_port_is_one_refused_connect_error() {
    if !privileged() {
        return;
    }
    let sink = sink_path("tcp-refused");
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let errno = w.run(&format!("tcp_refused 127.0.0.1 {closed_port}"));
    assert_eq!(errno, libc::ECONNREFUSED.to_string());
    wait_for_connect_error(&c, &sink);
    let m = c.metrics();
    let errors = value(&m, "collector_tcp_connect_errors_total", &[("target", "app")]);
    println!("connect errors {errors}, opened {}", opened(&m, "outbound"));
    assert_eq!(errors, 1.0);
    assert_eq!(opened(&m, "outbound"), 0.0);
    let e = events_named(&sink, "tcp.connect_error");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["metadata"]["reason"], "refused", "{}", e[0]);
    assert_eq!(e[0]["metadata"]["peer_port"], closed_port, "{}", e[0]);
    assert_eq!(e[0]["metadata"]["pid"], w.pid, "{}", e[0]);
    assert_eq!(
        value(
            &m,
            "collector_tcp_resets_total",
            &[("target", "app"), ("direction", "received")]
        ),
        1.0,
        "the RST that refused it"
    );
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn a_connect_whose_syns_go_unanswered_is_a_timeout_connect_error() {
    if !privileged() {
        return;
    }
    let sink = sink_path("tcp-timeout");
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid), "--events", sink.to_str().unwrap()]);
    // A listener with backlog 0 whose one queue slot is taken drops further SYNs
    // (net/ipv4/tcp_input.c: tcp_conn_request, sk_acceptq_is_full), so the target's connect
    // retries its SYN once (TCP_SYNCNT 1) and gives up with ETIMEDOUT, a few seconds later.
    let listener = socket_listening_with_backlog_0();
    let port = listener.local_addr().unwrap().port();
    let _queued = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let errno = w.run(&format!("tcp_timeout 127.0.0.1 {port}"));
    assert_eq!(errno, libc::ETIMEDOUT.to_string());
    wait_for_connect_error(&c, &sink);
    let e = events_named(&sink, "tcp.connect_error");
    println!("connect errors {}: {}", e.len(), e[0]);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["metadata"]["reason"], "timeout", "{}", e[0]);
    let m = c.metrics();
    assert_eq!(
        value(&m, "collector_tcp_connect_errors_total", &[("target", "app")]),
        1.0
    );
    assert!(
        value(&m, "collector_tcp_retransmits_total", &[("target", "app")]) >= 1.0,
        "the SYN was retransmitted"
    );
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

/// Waits until the target's connect error is both in the sink and counted. The sink and the
/// metrics are two handlers, each on its own thread: the sink having the event says nothing
/// of whether the metrics handler has counted it yet.
fn wait_for_connect_error(c: &Collector, sink: &Path) {
    eventually("the connect error in the sink", Duration::from_secs(10), || {
        !events_named(sink, "tcp.connect_error").is_empty()
    });
    eventually("the connect error counted", Duration::from_secs(10), || {
        value(&c.metrics(), "collector_tcp_connect_errors_total", &[("target", "app")]) > 0.0
    });
}

/// A TCP listener on 127.0.0.1 with an accept backlog of 0 (std's listen uses 128).
fn socket_listening_with_backlog_0() -> TcpListener {
    use std::os::fd::AsRawFd as _;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen() again on the socket std just bound and listened on, to shrink its queue.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    listener
}

#[test]
fn closing_with_unread_data_sends_a_reset_counted_for_the_target() {
    if !privileged() {
        return;
    }
    const C: usize = 5;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid)]);
    let port: u16 = w.run("tcp_listen 127.0.0.1").parse().unwrap();
    let client = std::thread::spawn(move || {
        (0..C)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"never read").unwrap();
                let mut buf = [0u8; 16];
                s.read(&mut buf).map_err(|e| e.kind())
            })
            .collect::<Vec<_>>()
    });
    w.run(&format!("tcp_accept_reset {C}"));
    let seen = client.join().unwrap();
    let m = c.metrics();
    let sent = value(
        &m,
        "collector_tcp_resets_total",
        &[("target", "app"), ("direction", "sent")],
    );
    println!("resets sent {sent}; the client saw {seen:?}");
    assert_eq!(sent, C as f64);
    assert!(
        seen.iter().all(|r| *r == Err(std::io::ErrorKind::ConnectionReset)),
        "{seen:?}"
    );
}

#[test]
fn udp_datagrams_sent_are_counted_in_bytes_exactly() {
    if !privileged() {
        return;
    }
    const U: usize = 333;
    const D: usize = 1200;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid)]);
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    w.run(&format!("udp_send 127.0.0.1 {port} {U} {D}"));
    let m = c.metrics();
    let sent = bytes(&m, "sent", "inet", "udp");
    println!("udp sent {sent}, expected {}", U * D);
    assert_eq!(sent, (U * D) as f64);
    assert_eq!(bytes(&m, "sent", "inet", "tcp"), 0.0);
}

/// Socket bytes are counted at the return of the syscalls that move them (`socket_bytes.rs`
/// in collector-ebpf): each kind counted once, a peek not at all, a pipe or a file never.
#[test]
fn every_kind_of_send_and_receive_call_counts_its_bytes_exactly() {
    if !privileged() {
        return;
    }
    const S: usize = 1000;
    const K: usize = 7;
    const D: usize = 300;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid)]);
    w.run(&format!("socket_io {S} {K} {D}"));
    let m = c.metrics();
    let unix = (
        bytes(&m, "sent", "unix", "other"),
        bytes(&m, "received", "unix", "other"),
    );
    let udp = (bytes(&m, "sent", "inet", "udp"), bytes(&m, "received", "inet", "udp"));
    println!("unix {unix:?}, expected {}; udp {udp:?}, expected {}", 6 * S, K * D);
    // write, writev, sendto, sendmsg, sendfile, splice; read, readv, recvfrom, recvmsg,
    // read (after the sendfile), splice.
    assert_eq!(unix, ((6 * S) as f64, (6 * S) as f64));
    assert_eq!(udp, ((K * D) as f64, (K * D) as f64));
    // Nothing else: not the pipe, the memfd or the workload's stdin and stdout.
    let all = |direction: &str| {
        m.sum(
            &format!("collector_socket_{direction}_bytes_total"),
            &[("target", "app")],
        )
    };
    assert_eq!(
        (all("sent"), all("received")),
        ((6 * S + K * D) as f64, (6 * S + K * D) as f64)
    );
}

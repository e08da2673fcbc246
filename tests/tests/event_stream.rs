//! `GET /events` end to end: concurrent readers of the live event stream each get every event
//! they asked for, a reader that stops reading loses only its own (counted), and the number
//! of readers is bounded.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::FromRawFd as _,
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use tests::{Collector, Metrics, Workload, events_reader, privileged, value};

/// A connection to `/events` with a 4 KiB receive buffer that reads the response head and
/// nothing more, and the status it got.
fn stuck_reader(addr: &str) -> (TcpStream, String) {
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(socket >= 0);
    let size: libc::c_int = 4096;
    let set = unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&size).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(set, 0);
    // SAFETY: a socket this function just made and owns.
    let stream = unsafe { TcpStream::from_raw_fd(socket) };
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let stream = {
        // std connects only a socket it makes itself; connect this one by hand.
        let std::net::SocketAddr::V4(v4) = addr else {
            panic!("{addr}")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = unsafe {
            libc::connect(
                socket,
                std::ptr::from_ref(&sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(connected, 0, "{}", std::io::Error::last_os_error());
        stream
    };
    let mut stream = stream;
    write!(stream, "GET /events HTTP/1.1\r\nHost: collector\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (stream, status)
}

fn count(lines: &Mutex<Vec<Value>>, name: &str) -> usize {
    lines.lock().unwrap().iter().filter(|e| e["event"] == name).count()
}

fn dropped(m: &Metrics, stage: &str) -> f64 {
    ["process.start", "process.exit"]
        .iter()
        .map(|e| value(m, "collector_events_dropped_total", &[("event", e), ("stage", stage)]))
        .sum()
}

#[test]
fn concurrent_readers_get_every_event_and_a_stuck_reader_loses_only_its_own() {
    if !privileged() {
        return;
    }
    const K: usize = 20_000;
    const BATCH: usize = 2_000;
    let mut w = Workload::spawn();
    // A ring buffer that holds every record of the storm: what is tested is the fan-out to
    // readers, so the kernel stage must not drop (a busy machine's reader thread can lag).
    let mut c = Collector::start(&["--pid", &format!("app={}", w.pid), "--ring-buffer-size", "16777216"]);
    let (exits, exit_reader) = events_reader(&c.addr, "event=process.exit");
    let (processes, process_reader) = events_reader(&c.addr, "event=process.*");
    let (stuck, status) = stuck_reader(&c.addr);
    assert!(status.contains(" 200 "), "{status}");

    // Up to the bound, and one more is refused.
    let more: Vec<_> = (0..5).map(|_| stuck_reader(&c.addr)).collect();
    assert!(more.iter().all(|(_, status)| status.contains(" 200 ")));
    let (_, refused) = stuck_reader(&c.addr);
    assert!(refused.contains(" 503 "), "{refused}");
    drop(more);

    // In batches that fit a reader's buffer (2 events each), each read before the next:
    // a reader that keeps up must lose nothing, however slow the machine is, while the
    // stuck one falls further behind with every batch.
    for batch in 1..=K / BATCH {
        w.run(&format!("spawn_exit {BATCH}"));
        let read =
            || count(&exits, "process.exit") >= batch * BATCH && count(&processes, "process.exit") >= batch * BATCH;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !read() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let m = c.metrics();
        assert!(
            read(),
            "not within 60 s: the readers have {} and {} of {} exits; dropped: kernel {}, queue {}, sink {}",
            count(&exits, "process.exit"),
            count(&processes, "process.exit"),
            batch * BATCH,
            dropped(&m, "kernel"),
            dropped(&m, "queue"),
            dropped(&m, "sink"),
        );
    }
    let m = c.metrics();
    let (lost_sink, lost_queue) = (dropped(&m, "sink"), dropped(&m, "queue"));
    println!(
        "readers: {} exits; {} starts and {} exits; the stuck reader lost {lost_sink}",
        count(&exits, "process.exit"),
        count(&processes, "process.start"),
        count(&processes, "process.exit")
    );
    assert_eq!(exits.lock().unwrap().len(), K, "only what it asked for");
    assert_eq!(
        (count(&processes, "process.start"), count(&processes, "process.exit")),
        (K, K)
    );
    assert!(
        processes
            .lock()
            .unwrap()
            .iter()
            .all(|e| e["metadata"]["target"] == "app")
    );
    assert!(
        lost_sink > 0.0,
        "the stuck reader lost nothing: its buffers held {} events?",
        2 * K
    );
    assert_eq!(lost_queue, 0.0);
    assert_eq!(m.sum("collector_process_exits_total", &[("target", "app")]), K as f64);
    assert_eq!(
        value(&m, "collector_process_starts_total", &[("target", "app")]),
        K as f64
    );
    // Open streams, the stuck one included, end with the agent: SIGTERM still stops it at once.
    let stopped = c.terminate(Duration::from_secs(2));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?} with readers open");
    drop(stuck);
    exit_reader.join().unwrap();
    process_reader.join().unwrap();
}

#[test]
fn a_filter_naming_no_event_is_refused() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let c = Collector::start(&["--pid", &w.pid.to_string()]);
    for (query, needle) in [
        ("event=process.nothing", "no event is named"),
        ("event=%5B", "not an event name or glob"),
    ] {
        let (status, body) = tests::http_get(&c.addr, &format!("/events?{query}")).unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
}

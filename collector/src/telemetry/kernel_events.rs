//! From kernel records to telemetry events: kernel times to wall-clock times, wait statuses
//! to outcomes, TCP endpoints to text, and the target's name and cgroup as metadata.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use collector_common::{
    TargetId,
    events::{Endpoints, EventKind, HttpRecord, OomRecord, PAGES_UNKNOWN, SyscallRecord, TcpRecord},
    http::{self, Method},
    sockets::{AF_INET6, close_reason, connect_error_reason, direction_label},
};

use super::{
    event::Event,
    process_info::{ProcessInfo, Processes},
};
use crate::{
    kernel::{
        http_routes,
        names::{errno_name, syscall_name},
        records::{Record, kernel_str},
    },
    targets::{Target, TargetKind, TargetSet},
};

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    boot: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        Clock {
            boot: SystemTime::now() - mono,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }
}

/// How a process ended, from its wait status (`task_struct.exit_code`): the `outcome` label,
/// and the exit status or the signal's name.
pub fn outcome(exit_code: u32) -> (&'static str, Result<i64, String>) {
    let signal = (exit_code & 0x7f) as i32;
    if signal != 0 {
        let name = nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str().to_owned());
        return ("signal", Err(name.unwrap_or_else(|_| signal.to_string())));
    }
    let status = i64::from((exit_code >> 8) & 0xff);
    (if status == 0 { "success" } else { "failure" }, Ok(status))
}

/// The telemetry event of a record. With `from_proc`, `processes` adds what /proc says of the
/// process (`process_info::FROM_PROC`); `routes` (`--http-route`) name a request's route.
pub fn to_event(
    record: &Record,
    targets: &TargetSet,
    clock: &Clock,
    processes: &mut Processes,
    from_proc: bool,
    routes: &[String],
) -> Event {
    let (header, comm) = match record {
        Record::Start(p) | Record::Exit(p) => (&p.header, &p.comm),
        Record::Exec(e) => (&e.process.header, &e.process.comm),
        Record::Tcp(t) => (&t.header, &t.comm),
        Record::Http(h) => (&h.header, &h.comm),
        Record::Syscall(c) => (&c.header, &c.comm),
        Record::OomKill(o) => (&o.header, &o.comm),
    };
    // The kind was checked when the record was decoded.
    let kind = EventKind::from_u32(header.kind).unwrap_or(EventKind::ProcessStart);
    let event = Event::new(kind.event_name(), clock.wall(header.ktime_ns))
        .named_at(targets.naming())
        .meta("pid", header.pid)
        .meta("comm", kernel_str(comm));
    let target = TargetId::from_slot(header.target).and_then(|id| targets.get(id));
    let event = match target {
        Some(target) => with_workload(event.meta("target", target.name.as_str()), target),
        None => event.meta("target", "unknown"),
    };
    let event = match record {
        Record::Tcp(t) => tcp_event(event, kind, t),
        Record::Http(h) => http_event(event, h, routes),
        Record::Syscall(c) => syscall_event(event, c),
        Record::OomKill(o) => oom_event(event, o),
        Record::Start(p) => {
            // The kernel gives the parent's target in the start record (`exit_code`).
            let parent = TargetId::from_slot(p.exit_code).and_then(|id| targets.get(id));
            let event = match parent {
                Some(parent) => event.meta("parent_target", parent.name.as_str()),
                None => event,
            };
            return process_event(event, record, target, processes, from_proc);
        }
        Record::Exec(_) | Record::Exit(_) => {
            return process_event(event, record, target, processes, from_proc);
        }
    };
    let cgroup = from_proc.then(|| processes.cgroup_of(header.pid)).flatten();
    match cgroup {
        Some(cgroup) => event.meta("cgroup", cgroup),
        None => with_target_cgroup(event, target),
    }
}

/// A `process.*` event's own part: what /proc says (with `from_proc`), the filename or the
/// outcome.
fn process_event(
    event: Event,
    record: &Record,
    target: Option<&Target>,
    processes: &mut Processes,
    from_proc: bool,
) -> Event {
    let process = match (record, from_proc) {
        (Record::Start(p), true) => processes.started(p.header.pid, p.ppid),
        (Record::Exec(e), true) => processes.executed(e.process.header.pid, &kernel_str(&e.filename)),
        (Record::Exit(p), true) => processes.exited(p.header.pid),
        (Record::Start(p), false) => ProcessInfo {
            ppid: Some(p.ppid),
            ..ProcessInfo::default()
        },
        (Record::Exit(p), false) => {
            processes.forget(p.header.pid);
            ProcessInfo::default()
        }
        (Record::Exec(_) | Record::Tcp(_) | Record::Http(_) | Record::Syscall(_) | Record::OomKill(_), _) => {
            ProcessInfo::default()
        }
    };
    let event = describe_process(event, process, target);
    match record {
        Record::Exec(e) => event.meta("filename", kernel_str(&e.filename)),
        Record::Exit(p) => {
            let lifetime = p.header.ktime_ns.saturating_sub(p.start_ns) as f64 / 1e9;
            let (outcome, detail) = outcome(p.exit_code);
            let event = event.measure("duration", lifetime).meta("outcome", outcome);
            match detail {
                Ok(status) => event.meta("exit_code", status),
                Err(signal) => event.meta("signal", signal),
            }
        }
        Record::Start(_) | Record::Tcp(_) | Record::Http(_) | Record::Syscall(_) | Record::OomKill(_) => event,
    }
}

/// A process event's `ppid`, `exe` and `cgroup` (the process's own; the target's when /proc
/// had nothing, as for a process gone before the agent read it). A key nothing knows is left
/// out, and a tag on it is empty.
fn describe_process(mut event: Event, process: ProcessInfo, target: Option<&Target>) -> Event {
    if let Some(ppid) = process.ppid {
        event = event.meta("ppid", ppid);
    }
    if let Some(exe) = process.exe {
        event = event.meta("exe", exe);
    }
    match process.cgroup {
        Some(cgroup) => event.meta("cgroup", cgroup),
        None => with_target_cgroup(event, target),
    }
}

/// A connection's endpoints as metadata. The socket's source is its local end for either
/// direction (`skc_rcv_saddr`, `skc_num`).
fn with_endpoints(event: Event, e: &Endpoints) -> Event {
    let (family, local, peer) = if e.family == AF_INET6 {
        (
            "ipv6",
            Ipv6Addr::from(e.saddr).to_string(),
            Ipv6Addr::from(e.daddr).to_string(),
        )
    } else {
        let v4 = |a: [u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string();
        ("ipv4", v4(e.saddr), v4(e.daddr))
    };
    event
        .meta("family", family)
        .meta("local_address", local)
        .meta("local_port", u32::from(e.sport))
        .meta("peer_address", peer)
        .meta("peer_port", u32::from(e.dport))
}

/// An `http.request` event: the request's method, path, route (with `--http-route`) and
/// status, who served or made it (`direction`: `server` or `client`), its duration and bytes.
fn http_event(event: Event, h: &HttpRecord, routes: &[String]) -> Event {
    let mut event = with_endpoints(event, &h.endpoints)
        .meta("direction", http::side_label(h.side))
        .meta("method", Method::from_u8(h.method).label())
        .meta("status_code", u32::from(h.status));
    if let Some(route) = http_routes::label(routes, h.route) {
        event = event.meta("route", route);
    }
    let event = if h.path_len > 0 {
        event.meta("path", request_path(h))
    } else {
        event
    };
    event
        .measure("duration", h.duration_ns as f64 / 1e9)
        .measure("request_bytes", h.request_bytes as f64)
        .measure("response_bytes", h.response_bytes as f64)
}

/// A `syscall.slow` event: which call of which thread, how long, and its errno if it failed.
fn syscall_event(event: Event, c: &SyscallRecord) -> Event {
    let event = event
        .meta("tid", c.tid)
        .meta("syscall", syscall_name(c.nr).into_owned())
        .measure("duration", c.duration_ns as f64 / 1e9);
    match c.ret {
        // include/linux/err.h: MAX_ERRNO
        -4095..=-1 => event.meta("errno", errno_name((-c.ret) as u32).into_owned()),
        _ => event,
    }
}

/// A `process.oom_kill` event: the thread the OOM killer marked, and the victim's resident
/// pages when its task could be read.
fn oom_event(event: Event, o: &OomRecord) -> Event {
    let event = event.meta("tid", o.tid);
    match o.pages {
        PAGES_UNKNOWN => event,
        pages => event.measure("pages", pages as f64),
    }
}

/// The request target up to the space that ends it, of what the kernel kept.
fn request_path(h: &HttpRecord) -> String {
    let kept = &h.path[..usize::from(h.path_len).min(h.path.len())];
    let end = kept.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(kept.len());
    String::from_utf8_lossy(&kept[..end]).into_owned()
}

/// The TCP part of a `tcp.*` event: endpoints and direction always, then what the kind has.
fn tcp_event(event: Event, kind: EventKind, t: &TcpRecord) -> Event {
    let event = with_endpoints(event, &t.endpoints).meta("direction", direction_label(t.direction));
    let seconds = t.duration_ns as f64 / 1e9;
    match kind {
        EventKind::TcpConnect => event.measure("duration", seconds),
        EventKind::TcpConnectError => event
            .measure("duration", seconds)
            .meta("reason", connect_error_reason(t.sk_err)),
        EventKind::TcpClose => event
            .measure("duration", seconds)
            .measure("bytes_sent", t.bytes_sent as f64)
            .measure("bytes_received", t.bytes_received as f64)
            .measure("retransmits", f64::from(t.retransmits))
            .meta("close_reason", close_reason(t.resets)),
        _ => event,
    }
}

/// Adds a target's metadata to `event`: `target`, and for a cgroup target `cgroup` and
/// what is known of its workload.
pub fn describe(event: Event, target: &Target) -> Event {
    let event = with_workload(event.meta("target", target.name.as_str()), target);
    with_target_cgroup(event, Some(target))
}

/// A cgroup target's workload fields (`namespace`, `pod`, ...: `targets/workload/`), those
/// known.
fn with_workload(mut event: Event, target: &Target) -> Event {
    if let TargetKind::Cgroup { workload, .. } = &target.kind {
        for (field, value) in workload.known() {
            event = event.meta(field, value);
        }
    }
    event
}

fn with_target_cgroup(event: Event, target: Option<&Target>) -> Event {
    match target.map(|t| &t.kind) {
        Some(TargetKind::Cgroup { path, .. }) => event.meta("cgroup", path.as_str()),
        _ => event,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use collector_common::events::EventKind;

    use super::*;
    use crate::{kernel::records::tests::process, targets::PidSpec};

    fn targets() -> TargetSet {
        TargetSet::from_specs(
            &[PidSpec {
                name: Some("web".into()),
                pid: 10,
            }],
            1000,
        )
        .unwrap()
    }

    #[test]
    fn wait_statuses_decode_to_outcomes() {
        assert_eq!(outcome(0), ("success", Ok(0)));
        assert_eq!(outcome(3 << 8), ("failure", Ok(3)));
        assert_eq!(outcome(9), ("signal", Err("SIGKILL".into())));
        let core_dumped = 0x80;
        assert_eq!(outcome(core_dumped | 0xb), ("signal", Err("SIGSEGV".into())));
    }

    #[test]
    fn an_exit_record_becomes_a_process_exit_event() {
        let clock = Clock {
            boot: SystemTime::UNIX_EPOCH,
        };
        let event = to_event(
            &Record::Exit(process(EventKind::ProcessExit, 42, 9)),
            &targets(),
            &clock,
            &mut Processes::default(),
            true,
            &[],
        );
        assert_eq!(event.name, "process.exit");
        assert_eq!(event.time, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(event.measurement("duration"), Some(2.0));
        assert_eq!(event.metadata("target"), Some(&"web".into()));
        assert_eq!(event.metadata("comm"), Some(&"worker".into()));
        assert_eq!(event.metadata("signal"), Some(&"SIGKILL".into()));
        assert_eq!(event.metadata("outcome"), Some(&"signal".into()));
        assert_eq!(event.metadata("exit_code"), None);
    }

    /// A record of every kind (two exits: a failure and a signal), as the kernel makes them.
    pub(crate) fn one_record_of_each_kind() -> Vec<Record> {
        use collector_common::events::{COMM_LEN, ExecRecord, FILENAME_LEN, PATH_BYTES};

        use crate::kernel::records::tests::comm;
        let endpoints = Endpoints {
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: 2,
            sport: 1,
            dport: 2,
            _pad: 0,
        };
        let tcp = |kind: EventKind| TcpRecord {
            header: collector_common::events::EventHeader {
                kind: kind as u32,
                size: 0,
                ktime_ns: 1,
                target: 1,
                pid: std::process::id(),
            },
            duration_ns: 1,
            bytes_sent: 2,
            bytes_received: 3,
            comm: [0; COMM_LEN],
            endpoints,
            direction: 0,
            resets: 0,
            _pad: [0; 2],
            sk_err: 111,
            retransmits: 4,
            _pad2: 0,
        };
        let mut path = [0; PATH_BYTES];
        path[..14].copy_from_slice(b"/a?b=1 HTTP/1.");
        let http = HttpRecord {
            header: collector_common::events::EventHeader {
                kind: EventKind::HttpRequest as u32,
                size: 0,
                ktime_ns: 1,
                target: 1,
                pid: std::process::id(),
            },
            duration_ns: 2_000_000,
            request_bytes: 10,
            response_bytes: 20,
            comm: [0; COMM_LEN],
            endpoints,
            status: 404,
            method: Method::Get as u8,
            side: http::SERVER,
            path_len: 14,
            _pad: 0,
            route: 1,
            path,
        };
        let me = std::process::id();
        let mut exec = ExecRecord {
            process: process(EventKind::ProcessExec, me, 0),
            filename: [0; FILENAME_LEN],
        };
        exec.process.comm = comm("true");
        vec![
            Record::Start(process(EventKind::ProcessStart, me, 1)),
            Record::Exec(exec),
            Record::Exit(process(EventKind::ProcessExit, me, 1 << 8)),
            Record::Exit(process(EventKind::ProcessExit, me, 9)),
            Record::Tcp(tcp(EventKind::TcpConnect)),
            Record::Tcp(tcp(EventKind::TcpAccept)),
            Record::Tcp(tcp(EventKind::TcpConnectError)),
            Record::Tcp(tcp(EventKind::TcpClose)),
            Record::Http(http),
            Record::Syscall(SyscallRecord {
                header: collector_common::events::EventHeader {
                    kind: EventKind::SyscallSlow as u32,
                    size: 0,
                    ktime_ns: 1,
                    target: 1,
                    pid: me,
                },
                duration_ns: 150_000_000,
                ret: -4,
                tid: me + 1,
                nr: 35,
                comm: comm("sleeper"),
            }),
            Record::OomKill(OomRecord {
                header: collector_common::events::EventHeader {
                    kind: EventKind::ProcessOomKill as u32,
                    size: 0,
                    ktime_ns: 1,
                    target: 1,
                    pid: me,
                },
                pages: 16384,
                tid: me,
                _pad: 0,
                comm: comm("hog"),
            }),
        ]
    }

    #[test]
    fn events_carry_exactly_what_the_catalogue_says() {
        use crate::telemetry::catalogue;
        let records = one_record_of_each_kind();
        let clock = Clock {
            boot: SystemTime::UNIX_EPOCH,
        };
        let mut processes = Processes::default();
        for record in &records {
            let event = to_event(record, &targets(), &clock, &mut processes, true, &["/a".into()]);
            let spec = catalogue::find(event.name).unwrap();
            for (key, _) in &event.metadata {
                assert!(
                    spec.carries(key),
                    "{} carries {key}, which the catalogue lacks",
                    event.name
                );
            }
            if event.name == "process.start" {
                assert_eq!(event.metadata("parent_target"), Some(&"web".into()));
            }
            if event.name == "syscall.slow" {
                assert_eq!(event.metadata("syscall"), Some(&"nanosleep".into()));
                assert_eq!(event.metadata("errno"), Some(&"EINTR".into()));
                assert_eq!(event.measurement("duration"), Some(0.15));
            }
            if event.name == "process.oom_kill" {
                assert_eq!(event.metadata("comm"), Some(&"hog".into()));
                assert_eq!(event.measurement("pages"), Some(16384.0));
            }
            if event.name == "tcp.close" {
                assert_eq!(event.metadata("close_reason"), Some(&"closed".into()));
                assert_eq!(event.measurement("retransmits"), Some(4.0));
            }
            if event.name == "http.request" {
                assert_eq!(event.metadata("path"), Some(&"/a?b=1".into()));
                assert_eq!(event.metadata("direction"), Some(&"server".into()));
                assert_eq!(event.metadata("route"), Some(&"/a".into()));
                assert_eq!(event.measurement("duration"), Some(0.002));
            }
            let measured: Vec<_> = event.measurements.iter().map(|(k, _)| *k).collect();
            let listed: Vec<_> = spec.measurements.iter().map(|(k, _)| *k).collect();
            assert_eq!(measured, listed, "{}", event.name);
            // Each key the catalogue lists is on the event, but the ones only some events
            // of a name have (exit_code or signal) and a cgroup a PID target lacks.
            for key in spec.metadata() {
                // (and a path the kernel could not keep)
                let optional = ["exit_code", "signal", "cgroup", "path", "errno", "parent_target"].contains(&key)
                    || crate::targets::workload::FIELDS.contains(&key);
                assert!(optional || event.metadata(key).is_some(), "{} lacks {key}", event.name);
            }
        }
    }
}

//! The metrics read from kernel maps at scrape time, described as data, the way
//! `telemetry/builtin.rs` describes the metrics defined on events: which map, the exposed
//! name and type, the labels and which key field each is decoded from, and which value
//! field each sample shows. `scrape.rs` reads the maps and encodes these rows; a new
//! kernel-side metric is a row here (and, for a new map, a [`Source`]).
//!
//! Names are the contract (README): `_total` on counters, base units.
use collector_common::http;

/// The kernel map a metric is read from (summed over CPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `SYSCALL_SERIES` and `SYSCALL_STATS`: (target, syscall) -> slot -> latency histogram.
    SyscallStats,
    /// `SYSCALL_ERRORS`: (target, syscall, errno) -> count.
    SyscallErrors,
    /// `SOCKET_BYTES`: (target, family, protocol) -> bytes sent and received.
    SocketBytes,
    /// `TCP_COUNTS`: target -> open connections, retransmits, resets.
    TcpCounts,
    /// `TARGET_COUNTS`: target -> processes and threads gained minus lost, plus what the
    /// agent put there at start (the numbers `/health` shows).
    TargetCounts,
    /// `MAP_ERRORS`: map -> failed updates.
    MapErrors,
    /// `HTTP_STATS`: (target, side, method, status) -> duration histogram and bytes.
    HttpStats,
    /// `SCHED_STATS`: target -> on-CPU time, context switches, page faults, run-queue waits.
    SchedStats,
    /// `FD_BYTES`: (target, fd type) -> bytes read and written.
    FdBytes,
    /// `BLOCK_STATS`: (target, op) -> block request latency histogram and bytes.
    BlockStats,
    /// Not a map: each target's resident memory, read from its cgroup or /proc at scrape
    /// (`targets/memory.rs`).
    Resident,
}

/// A label decoded from a field of the map's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The target's name.
    Target,
    /// The syscall's name on this architecture.
    Syscall,
    /// The errno's symbolic name.
    Errno,
    /// `inet`, `inet6`, `unix` or `other`.
    Family,
    /// `tcp`, `udp` or `other`.
    Protocol,
    /// The map an update failed on.
    Map,
    /// The HTTP request method, as the semantic conventions name it.
    Method,
    /// The HTTP response status code.
    Status,
    /// `server` or `client`.
    Side,
    /// The `--http-route` a request's path matched, or `other`; no label without routes.
    Route,
    /// Why a row counts no completed request: `unmatched_response`, `in_flight_full`.
    Untracked,
    /// `file`, `socket`, `pipe` or `other`.
    FdType,
    /// A block request's direction: `read` or `write`.
    Op,
}

/// The number a sample shows, from the map's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Calls: the sum of the latency buckets (so `_count` equals it by construction).
    Calls,
    /// The latency histogram, in seconds.
    Latency,
    /// A plain count (errors, failed updates).
    Count,
    BytesSent,
    BytesReceived,
    OpenOutbound,
    OpenInbound,
    Retransmits,
    ResetsSent,
    ResetsReceived,
    Processes,
    Threads,
    /// The duration histogram of completed requests of one side, in seconds.
    HttpDuration(u8),
    /// Requests of one side aborted (a row of `STATUS_ABORTED`).
    HttpAborted(u8),
    /// Bytes of completed requests and of their responses, of one side.
    HttpRequestBytes(u8),
    HttpResponseBytes(u8),
    /// Rows that are no completed request and no abort.
    HttpUntracked,
    /// Time on a CPU, in seconds.
    CpuSeconds,
    VoluntarySwitches,
    InvoluntarySwitches,
    MinorFaults,
    MajorFaults,
    /// Off a CPU and not runnable, in seconds.
    BlockedSeconds,
    /// Runnable and waiting for a CPU (the run-queue waits' sum), in seconds.
    RunnableSeconds,
    /// The run-queue wait histogram, in seconds.
    RunqueueLatency,
    BytesRead,
    BytesWritten,
    ResidentBytes,
    /// Block requests' issue-to-completion histogram, in seconds.
    BlockLatency,
    BlockBytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    /// In seconds.
    Histogram,
}

/// One metric family read from a kernel map.
#[derive(Clone, Copy, Debug)]
pub struct KernelMetric {
    /// The exposed name (with `_total` on counters, `_seconds` on histograms).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Type,
    pub source: Source,
    /// Labels from the key, in this order.
    pub labels: &'static [(&'static str, Key)],
    /// The samples of each map entry: one per element, each with an optional fixed label
    /// (after the key's) and the value it shows.
    pub samples: &'static [(Option<(&'static str, &'static str)>, Value)],
}

const TARGET: (&str, Key) = ("target", Key::Target);
const SYSCALL: (&str, Key) = ("syscall", Key::Syscall);
/// The semantic conventions' attribute names in Prometheus form, as Beyla exports them.
const HTTP_REQUEST: &[(&str, Key)] = &[
    TARGET,
    ("http_request_method", Key::Method),
    ("http_response_status_code", Key::Status),
    ("http_route", Key::Route),
];

pub const KERNEL_METRICS: &[KernelMetric] = &[
    KernelMetric {
        name: "collector_syscalls_total",
        help: "System calls made by target processes (counted when they return).",
        kind: Type::Counter,
        source: Source::SyscallStats,
        labels: &[TARGET, SYSCALL],
        samples: &[(None, Value::Calls)],
    },
    KernelMetric {
        name: "collector_syscall_errors_total",
        help: "System calls of target processes that returned an error, by errno.",
        kind: Type::Counter,
        source: Source::SyscallErrors,
        labels: &[TARGET, SYSCALL, ("errno", Key::Errno)],
        samples: &[(None, Value::Count)],
    },
    KernelMetric {
        name: "collector_syscall_duration_seconds",
        help: "Time from syscall entry to return, in log2 buckets measured in the kernel.",
        kind: Type::Histogram,
        source: Source::SyscallStats,
        labels: &[TARGET, SYSCALL],
        samples: &[(None, Value::Latency)],
    },
    KernelMetric {
        name: "collector_socket_sent_bytes_total",
        help: "Bytes target processes sent on sockets, by address family and protocol.",
        kind: Type::Counter,
        source: Source::SocketBytes,
        labels: &[TARGET, ("family", Key::Family), ("protocol", Key::Protocol)],
        samples: &[(None, Value::BytesSent)],
    },
    KernelMetric {
        name: "collector_socket_received_bytes_total",
        help: "Bytes target processes received from sockets, by address family and protocol.",
        kind: Type::Counter,
        source: Source::SocketBytes,
        labels: &[TARGET, ("family", Key::Family), ("protocol", Key::Protocol)],
        samples: &[(None, Value::BytesReceived)],
    },
    KernelMetric {
        name: "collector_tcp_connections",
        help: "TCP connections of targets open now: outbound (connect) or inbound (accept), since the agent started.",
        kind: Type::Gauge,
        source: Source::TcpCounts,
        labels: &[TARGET],
        samples: &[
            (Some(("direction", "outbound")), Value::OpenOutbound),
            (Some(("direction", "inbound")), Value::OpenInbound),
        ],
    },
    KernelMetric {
        name: "collector_tcp_retransmits_total",
        help: "TCP segments retransmitted on connections of targets.",
        kind: Type::Counter,
        source: Source::TcpCounts,
        labels: &[TARGET],
        samples: &[(None, Value::Retransmits)],
    },
    KernelMetric {
        name: "collector_tcp_resets_total",
        help: "TCP resets on connections of targets: sent by this host, or received from the peer.",
        kind: Type::Counter,
        source: Source::TcpCounts,
        labels: &[TARGET],
        samples: &[
            (Some(("direction", "sent")), Value::ResetsSent),
            (Some(("direction", "received")), Value::ResetsReceived),
        ],
    },
    KernelMetric {
        name: "collector_processes",
        help: "Live processes of each target.",
        kind: Type::Gauge,
        source: Source::TargetCounts,
        labels: &[TARGET],
        samples: &[(None, Value::Processes)],
    },
    KernelMetric {
        name: "collector_threads",
        help: "Live threads of each target.",
        kind: Type::Gauge,
        source: Source::TargetCounts,
        labels: &[TARGET],
        samples: &[(None, Value::Threads)],
    },
    KernelMetric {
        name: "collector_http_server_request_duration_seconds",
        help: "HTTP/1.x requests targets served: from the return of the read of the request's first bytes to the return of the response's last write.",
        kind: Type::Histogram,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpDuration(http::SERVER))],
    },
    KernelMetric {
        name: "collector_http_client_request_duration_seconds",
        help: "HTTP/1.x requests targets made: from the write of the request's first bytes to the return of the read of the response's status line.",
        kind: Type::Histogram,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpDuration(http::CLIENT))],
    },
    KernelMetric {
        name: "collector_http_server_requests_aborted_total",
        help: "HTTP requests targets read whose connection closed (or was reset) before they were answered.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: &[TARGET],
        samples: &[(None, Value::HttpAborted(http::SERVER))],
    },
    KernelMetric {
        name: "collector_http_client_requests_aborted_total",
        help: "HTTP requests targets sent whose connection closed (or was reset) before a response came.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: &[TARGET],
        samples: &[(None, Value::HttpAborted(http::CLIENT))],
    },
    KernelMetric {
        name: "collector_http_server_request_bytes_total",
        help: "Bytes of the HTTP requests targets served, headers included.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpRequestBytes(http::SERVER))],
    },
    KernelMetric {
        name: "collector_http_server_response_bytes_total",
        help: "Bytes of the HTTP responses targets sent, headers included.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpResponseBytes(http::SERVER))],
    },
    KernelMetric {
        name: "collector_http_client_request_bytes_total",
        help: "Bytes of the HTTP requests targets made, headers included.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpRequestBytes(http::CLIENT))],
    },
    KernelMetric {
        name: "collector_http_client_response_bytes_total",
        help: "Bytes of the HTTP responses targets received, headers included.",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: HTTP_REQUEST,
        samples: &[(None, Value::HttpResponseBytes(http::CLIENT))],
    },
    KernelMetric {
        name: "collector_http_untracked_total",
        help: "HTTP messages of targets not counted as requests: a response to a request not seen (unmatched_response), a request beyond the 8 a connection can have waiting (in_flight_full).",
        kind: Type::Counter,
        source: Source::HttpStats,
        labels: &[TARGET, ("side", Key::Side), ("reason", Key::Untracked)],
        samples: &[(None, Value::HttpUntracked)],
    },
    KernelMetric {
        name: "collector_cpu_seconds_total",
        help: "Time target threads spent on a CPU (the scheduler's sum_exec_runtime), counted each time a thread leaves its CPU.",
        kind: Type::Counter,
        source: Source::SchedStats,
        labels: &[TARGET],
        samples: &[(None, Value::CpuSeconds)],
    },
    KernelMetric {
        name: "collector_runqueue_latency_seconds",
        help: "Time target threads waited runnable for a CPU, from wakeup or preemption to running (as runqlat measures), in log2 buckets.",
        kind: Type::Histogram,
        source: Source::SchedStats,
        labels: &[TARGET],
        samples: &[(None, Value::RunqueueLatency)],
    },
    KernelMetric {
        name: "collector_off_cpu_seconds_total",
        help: "Time target threads spent off a CPU, counted when they leave one: blocked (sleeping, waiting for I/O or a lock) or runnable (waiting for a CPU after a wakeup or a preemption).",
        kind: Type::Counter,
        source: Source::SchedStats,
        labels: &[TARGET],
        samples: &[
            (Some(("reason", "blocked")), Value::BlockedSeconds),
            (Some(("reason", "runnable")), Value::RunnableSeconds),
        ],
    },
    KernelMetric {
        name: "collector_context_switches_total",
        help: "Context switches of target threads: voluntary (it blocked) or involuntary (preempted while runnable).",
        kind: Type::Counter,
        source: Source::SchedStats,
        labels: &[TARGET],
        samples: &[
            (Some(("kind", "voluntary")), Value::VoluntarySwitches),
            (Some(("kind", "involuntary")), Value::InvoluntarySwitches),
        ],
    },
    KernelMetric {
        name: "collector_page_faults_total",
        help: "Page faults of target threads: minor (served from memory) or major (needed I/O).",
        kind: Type::Counter,
        source: Source::SchedStats,
        labels: &[TARGET],
        samples: &[
            (Some(("kind", "minor")), Value::MinorFaults),
            (Some(("kind", "major")), Value::MajorFaults),
        ],
    },
    KernelMetric {
        name: "collector_read_bytes_total",
        help: "Bytes target processes read through read, receive, sendfile, splice and copy_file_range calls, by what the fd is.",
        kind: Type::Counter,
        source: Source::FdBytes,
        labels: &[TARGET, ("fd_type", Key::FdType)],
        samples: &[(None, Value::BytesRead)],
    },
    KernelMetric {
        name: "collector_written_bytes_total",
        help: "Bytes target processes wrote through write, send, sendfile, splice and copy_file_range calls, by what the fd is.",
        kind: Type::Counter,
        source: Source::FdBytes,
        labels: &[TARGET, ("fd_type", Key::FdType)],
        samples: &[(None, Value::BytesWritten)],
    },
    KernelMetric {
        name: "collector_block_io_duration_seconds",
        help: "Block I/O requests a target's own bios started (not writeback of its page cache), from issue to the device to completion, in log2 buckets.",
        kind: Type::Histogram,
        source: Source::BlockStats,
        labels: &[TARGET, ("op", Key::Op)],
        samples: &[(None, Value::BlockLatency)],
    },
    KernelMetric {
        name: "collector_block_io_bytes_total",
        help: "Bytes of the block I/O requests a target's own bios started, as completed.",
        kind: Type::Counter,
        source: Source::BlockStats,
        labels: &[TARGET, ("op", Key::Op)],
        samples: &[(None, Value::BlockBytes)],
    },
    KernelMetric {
        name: "collector_resident_memory_bytes",
        help: "Memory of each target now: its cgroup's memory.current, or for a PID target (or a cgroup without the memory controller) the resident set of its processes summed from /proc.",
        kind: Type::Gauge,
        source: Source::Resident,
        labels: &[TARGET],
        samples: &[(None, Value::ResidentBytes)],
    },
    KernelMetric {
        name: "collector_bpf_map_errors_total",
        help: "Map updates that failed in the kernel (map full, or a read of kernel memory failed).",
        kind: Type::Counter,
        source: Source::MapErrors,
        labels: &[("map", Key::Map)],
        samples: &[(None, Value::Count)],
    },
];

impl Source {
    /// The key fields an entry of this map has.
    pub fn keys(self) -> &'static [Key] {
        match self {
            Source::SyscallStats => &[Key::Target, Key::Syscall],
            Source::SyscallErrors => &[Key::Target, Key::Syscall, Key::Errno],
            Source::SocketBytes => &[Key::Target, Key::Family, Key::Protocol],
            Source::TcpCounts | Source::TargetCounts | Source::SchedStats | Source::Resident => &[Key::Target],
            Source::FdBytes => &[Key::Target, Key::FdType],
            Source::BlockStats => &[Key::Target, Key::Op],
            Source::MapErrors => &[Key::Map],
            Source::HttpStats => &[
                Key::Target,
                Key::Method,
                Key::Status,
                Key::Side,
                Key::Untracked,
                Key::Route,
            ],
        }
    }

    /// The values an entry of this map has.
    pub fn values(self) -> &'static [Value] {
        match self {
            Source::SyscallStats => &[Value::Calls, Value::Latency],
            Source::SyscallErrors | Source::MapErrors => &[Value::Count],
            Source::SocketBytes => &[Value::BytesSent, Value::BytesReceived],
            Source::TcpCounts => &[
                Value::OpenOutbound,
                Value::OpenInbound,
                Value::Retransmits,
                Value::ResetsSent,
                Value::ResetsReceived,
            ],
            Source::TargetCounts => &[Value::Processes, Value::Threads],
            Source::SchedStats => &[
                Value::CpuSeconds,
                Value::VoluntarySwitches,
                Value::InvoluntarySwitches,
                Value::MinorFaults,
                Value::MajorFaults,
                Value::BlockedSeconds,
                Value::RunnableSeconds,
                Value::RunqueueLatency,
            ],
            Source::FdBytes => &[Value::BytesRead, Value::BytesWritten],
            Source::Resident => &[Value::ResidentBytes],
            Source::BlockStats => &[Value::BlockLatency, Value::BlockBytes],
            Source::HttpStats => &[
                Value::HttpDuration(http::SERVER),
                Value::HttpDuration(http::CLIENT),
                Value::HttpAborted(http::SERVER),
                Value::HttpAborted(http::CLIENT),
                Value::HttpRequestBytes(http::SERVER),
                Value::HttpRequestBytes(http::CLIENT),
                Value::HttpResponseBytes(http::SERVER),
                Value::HttpResponseBytes(http::CLIENT),
                Value::HttpUntracked,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_reads_fields_its_map_has_and_follows_the_naming_rules() {
        for m in KERNEL_METRICS {
            for (_, key) in m.labels {
                assert!(m.source.keys().contains(key), "{}: {key:?}", m.name);
            }
            for (_, value) in m.samples {
                assert!(m.source.values().contains(value), "{}: {value:?}", m.name);
                let histogram = matches!(
                    value,
                    Value::Latency | Value::HttpDuration(_) | Value::RunqueueLatency | Value::BlockLatency
                );
                assert_eq!(histogram, m.kind == Type::Histogram, "{}", m.name);
            }
            assert!(m.name.starts_with("collector_"), "{}", m.name);
            assert_eq!(m.kind == Type::Counter, m.name.ends_with("_total"), "{}", m.name);
            assert_eq!(m.kind == Type::Histogram, m.name.ends_with("_seconds"), "{}", m.name);
        }
    }
}

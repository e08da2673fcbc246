//! The built-in metrics defined on events, as tables of [`MetricDef`]s: the first user of the
//! definition mechanism.
use super::definitions::{Kind, MetricDef};

/// Process lifetimes: 1 ms to a day, roughly x4 apart.
const LIFETIME_BUCKETS: &[f64] = &[
    0.001, 0.004, 0.016, 0.064, 0.25, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 86400.0,
];

/// The built-in metrics of the process lifecycle. The live process and thread counts are
/// read at scrape time from the kernel's counts instead (`export/kernel_metrics.rs`), the
/// same numbers `/health` shows.
pub const PROCESS_METRICS: &[MetricDef] = &[
    MetricDef {
        name: "collector_process_starts_total",
        help: "Processes created by target processes (fork or clone of a new process)",
        events: &["process.start"],
        kind: Kind::Counter,
        tags: &["target"],
        keep: None,
    },
    MetricDef {
        name: "collector_process_execs_total",
        help: "Programs executed by target processes",
        events: &["process.exec"],
        kind: Kind::Counter,
        tags: &["target"],
        keep: None,
    },
    MetricDef {
        name: "collector_process_exits_total",
        help: "Target processes that ended: outcome success (exit 0), failure (non-zero exit) or signal",
        events: &["process.exit"],
        kind: Kind::Counter,
        tags: &["target", "outcome"],
        keep: None,
    },
    MetricDef {
        name: "collector_process_lifetime_seconds",
        help: "Lifetime of target processes that ended, from start to exit",
        events: &["process.exit"],
        kind: Kind::Distribution {
            measurement: "duration",
            buckets: LIFETIME_BUCKETS,
            scale: 1.0,
        },
        tags: &["target"],
        keep: None,
    },
];

/// TCP handshakes: 16 µs (loopback) to 64 s (SYN retries), x4 apart.
const CONNECT_BUCKETS: &[f64] = &[
    0.000016, 0.000064, 0.000256, 0.001, 0.004, 0.016, 0.064, 0.25, 1.0, 4.0, 16.0, 64.0,
];

/// Connection lifetimes: 100 µs to a day.
const CONNECTION_BUCKETS: &[f64] = &[0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0];

/// The built-in metrics of TCP connections. Bytes, retransmits, resets and the open
/// connections gauge are kernel counters read at scrape time instead
/// (`export/kernel_metrics.rs`): they are too frequent for events, or must stay exact when
/// events are dropped.
pub const TCP_METRICS: &[MetricDef] = &[
    MetricDef {
        name: "collector_tcp_connections_opened_total",
        help: "TCP connections of targets that were established: outbound by connect(), inbound by accept()",
        events: &["tcp.connect", "tcp.accept"],
        kind: Kind::Counter,
        tags: &["target", "direction"],
        keep: None,
    },
    MetricDef {
        name: "collector_tcp_connect_errors_total",
        help: "connect() calls of targets whose connection was never established",
        events: &["tcp.connect_error"],
        kind: Kind::Counter,
        tags: &["target"],
        keep: None,
    },
    MetricDef {
        name: "collector_tcp_connect_duration_seconds",
        help: "Time from a target's SYN to the established connection",
        events: &["tcp.connect"],
        kind: Kind::Distribution {
            measurement: "duration",
            buckets: CONNECT_BUCKETS,
            scale: 1.0,
        },
        tags: &["target"],
        keep: None,
    },
    MetricDef {
        name: "collector_tcp_connection_duration_seconds",
        help: "Lifetime of closed TCP connections of targets, from established (outbound) or accepted (inbound) to closed",
        events: &["tcp.close"],
        kind: Kind::Distribution {
            measurement: "duration",
            buckets: CONNECTION_BUCKETS,
            scale: 1.0,
        },
        tags: &["target", "direction"],
        keep: None,
    },
];

/// Every built-in definition.
pub fn all() -> Vec<MetricDef> {
    [PROCESS_METRICS, TCP_METRICS].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_metrics_are_named_by_prometheus_conventions() {
        for def in all() {
            assert!(def.name.starts_with("collector_"), "{}", def.name);
            let is_counter = matches!(def.kind, Kind::Counter | Kind::Sum { .. });
            assert_eq!(is_counter, def.name.ends_with("_total"), "{}", def.name);
        }
    }
}

//! The one scrape-time collector of kernel maps: on every scrape it reads each map the
//! [`KERNEL_METRICS`] table uses once, summed over CPUs, names the keys while the target set
//! is held still, and encodes each row of the table. A map entry that cannot be read is
//! counted in `collector_map_read_errors_total`, never a failed scrape.
use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use collector_common::{
    ErrorKey, MapErrorSite, SyscallKey, SyscallStats, TargetId,
    events::TargetCounts,
    histogram,
    http::{self, HttpKey, HttpStats, Method},
    sched::{BLOCK_OPS, BlockStats, FdBytes, FdType, SchedStats, block_op_label},
    sockets::{Family, Protocol, SocketBytes, SocketBytesKey, TcpCounts},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};

use super::{
    exposition::counter,
    kernel_metrics::{KERNEL_METRICS, Key, Source, Type, Value},
};
use crate::{
    kernel::{
        http_routes,
        names::{errno_name, syscall_name},
    },
    targets::{Targets, View, memory::resident_bytes},
    telemetry::exposition_text::LabelValue,
};

/// One map entry, summed over CPUs.
#[derive(Clone, Copy, Debug)]
enum Row {
    Syscall(SyscallKey, SyscallStats),
    Error(ErrorKey, u64),
    Bytes(SocketBytesKey, SocketBytes),
    Tcp(TargetId, TcpCounts),
    Counts(TargetId, TargetCounts),
    MapError(MapErrorSite, u64),
    Http(HttpKey, HttpStats),
    Sched(TargetId, SchedStats),
    Fd(TargetId, FdType, FdBytes),
    Block(TargetId, u32, BlockStats),
    Resident(TargetId, u64),
}

/// What one sample shows.
enum Sample {
    Counter(u64),
    /// A counter of seconds.
    Seconds(f64),
    Gauge(i64),
    /// (sum in seconds, count, per-bucket counts with upper bounds in seconds; `f64::MAX`
    /// marks `+Inf` for the encoder).
    Histogram(f64, u64, Vec<(f64, u64)>),
}

#[derive(Debug)]
pub struct KernelCollector {
    pub targets: Targets,
    /// Shared with the agent's own metrics, which export it.
    pub read_errors: Arc<AtomicU64>,
    /// The HTTP duration buckets' upper bounds, in seconds (`--http-buckets`).
    pub http_bounds: Vec<f64>,
    /// `--http-route`, by `HttpKey::route - 1`.
    pub http_routes: Vec<String>,
    /// The metrics of families that are off or disabled: not served, since zeros would
    /// say "none happened" where nothing was measured.
    pub not_measured: Vec<&'static str>,
    /// `--target-labels`: workload fields added after `target`, where the target's
    /// workload has them.
    pub target_labels: Vec<&'static str>,
}

/// Entries read from a map as rows, with the count that could not be read.
fn tag<E>((entries, failed): (Vec<E>, u64), row: impl Fn(E) -> Row) -> (Vec<Row>, u64) {
    (entries.into_iter().map(row).collect(), failed)
}

/// Reads every entry of `source`; returns them and how many could not be read.
fn read(source: Source, view: &View<'_>) -> (Vec<Row>, u64) {
    let maps = view.maps();
    // Each live target's entries of the map (one, or one per fd type or direction), each
    // a row or `None` where it could not be read.
    let per_target = |read: &dyn Fn(TargetId) -> Vec<Option<Row>>| {
        let reads: Vec<Option<Row>> = view.set().ids().flat_map(|(id, _)| read(id)).collect();
        let failed = reads.iter().filter(|r| r.is_none()).count() as u64;
        (reads.into_iter().flatten().collect(), failed)
    };
    match source {
        Source::SyscallStats => tag(maps.syscall_stats(), |(k, v)| Row::Syscall(k, v)),
        Source::SyscallErrors => tag(maps.syscall_errors(), |(k, v)| Row::Error(k, v)),
        Source::SocketBytes => tag(maps.socket_bytes(), |(k, v)| Row::Bytes(k, v)),
        Source::HttpStats => tag(maps.http_stats(), |(k, v)| Row::Http(k, v)),
        Source::TcpCounts => per_target(&|id| vec![maps.tcp_counts(id).ok().map(|c| Row::Tcp(id, c))]),
        Source::TargetCounts => per_target(&|id| vec![view.counts(id).map(|c| Row::Counts(id, c))]),
        Source::SchedStats => per_target(&|id| vec![maps.sched_stats(id).ok().map(|s| Row::Sched(id, s))]),
        Source::FdBytes => per_target(&|id| {
            FdType::ALL
                .iter()
                .map(|&t| maps.fd_bytes(id, t).ok().map(|b| Row::Fd(id, t, b)))
                .collect()
        }),
        Source::BlockStats => per_target(&|id| {
            (0..BLOCK_OPS)
                .map(|op| maps.block_stats(id, op).ok().map(|s| Row::Block(id, op, s)))
                .collect()
        }),
        Source::Resident => (
            resident_bytes(view)
                .into_iter()
                .map(|(id, bytes)| Row::Resident(id, bytes))
                .collect(),
            0,
        ),
        Source::MapErrors => match maps.map_errors() {
            Ok(all) => (all.into_iter().map(|(site, n)| Row::MapError(site, n)).collect(), 0),
            Err(_) => (Vec::new(), 1),
        },
    }
}

impl Key {
    /// The label value of this key field of `row`; `None` if the row has no such field
    /// (the table test proves no row asks for one), or it is a route and none were given.
    fn decode(self, row: &Row, view: &View<'_>, routes: &[String]) -> Option<Cow<'static, str>> {
        let target = |slot: u32| Cow::Owned(view.label(slot));
        Some(match (self, row) {
            (Key::Target, Row::Syscall(k, _)) => target(k.target),
            (Key::Target, Row::Error(k, _)) => target(k.target),
            (Key::Target, Row::Bytes(k, _)) => target(k.target),
            (Key::Target, Row::Http(k, _)) => target(k.target),
            (Key::Method, Row::Http(k, _)) => Cow::Borrowed(Method::from_u8(k.method).label()),
            (Key::Status, Row::Http(k, _)) => Cow::Owned(k.status.to_string()),
            (Key::Side, Row::Http(k, _)) => Cow::Borrowed(http::side_label(k.side)),
            (Key::Route, Row::Http(k, _)) => Cow::Owned(http_routes::label(routes, k.route)?.to_owned()),
            (Key::Untracked, Row::Http(k, _)) => Cow::Borrowed(match k.status {
                http::STATUS_UNMATCHED => "unmatched_response",
                http::STATUS_IN_FLIGHT_FULL => "in_flight_full",
                _ => "none",
            }),
            (
                Key::Target,
                Row::Tcp(id, _)
                | Row::Counts(id, _)
                | Row::Sched(id, _)
                | Row::Fd(id, ..)
                | Row::Block(id, ..)
                | Row::Resident(id, _),
            ) => target(id.slot()),
            (Key::Op, Row::Block(_, op, _)) => Cow::Borrowed(block_op_label(*op)),
            (Key::FdType, Row::Fd(_, fd_type, _)) => Cow::Borrowed(fd_type.label()),
            (Key::Syscall, Row::Syscall(SyscallKey { nr, .. }, _) | Row::Error(ErrorKey { nr, .. }, _)) => {
                syscall_name(*nr)
            }
            (Key::Errno, Row::Error(k, _)) => errno_name(k.errno),
            (Key::Family, Row::Bytes(k, _)) => Cow::Borrowed(Family::from_u16(k.family).label()),
            (Key::Protocol, Row::Bytes(k, _)) => Cow::Borrowed(Protocol::from_u16(k.protocol).label()),
            (Key::Map, Row::MapError(site, _)) => Cow::Borrowed(site.map_name()),
            _ => return None,
        })
    }
}

/// Whether an HTTP row is a completed request of `side` (its status is a real one).
fn completed(k: HttpKey, side: u8) -> bool {
    k.side == side && k.status >= 100
}

impl Value {
    fn of(self, row: &Row, http_bounds: &[f64]) -> Option<Sample> {
        Some(match (self, row) {
            (Value::Calls, Row::Syscall(_, s)) => Sample::Counter(s.buckets.iter().sum()),
            (Value::Latency, Row::Syscall(_, s)) => {
                let (sum, count, buckets) = histogram_in_seconds(s.sum_ns, &s.buckets);
                Sample::Histogram(sum, count, buckets)
            }
            (Value::RunqueueLatency, Row::Sched(_, s)) => {
                let (sum, count, buckets) = histogram_in_seconds(s.runqueue_sum_ns, &s.runqueue_buckets);
                Sample::Histogram(sum, count, buckets)
            }
            (Value::CpuSeconds, Row::Sched(_, s)) => Sample::Seconds(s.cpu_ns as f64 / 1e9),
            (Value::BlockedSeconds, Row::Sched(_, s)) => Sample::Seconds(s.blocked_ns as f64 / 1e9),
            (Value::RunnableSeconds, Row::Sched(_, s)) => Sample::Seconds(s.runqueue_sum_ns as f64 / 1e9),
            (Value::VoluntarySwitches, Row::Sched(_, s)) => Sample::Counter(s.voluntary),
            (Value::InvoluntarySwitches, Row::Sched(_, s)) => Sample::Counter(s.involuntary),
            (Value::MinorFaults, Row::Sched(_, s)) => Sample::Counter(s.minor_faults),
            (Value::MajorFaults, Row::Sched(_, s)) => Sample::Counter(s.major_faults),
            (Value::BlockLatency, Row::Block(_, _, s)) => {
                let (sum, count, buckets) = histogram_in_seconds(s.sum_ns, &s.buckets);
                Sample::Histogram(sum, count, buckets)
            }
            (Value::BlockBytes, Row::Block(_, _, s)) => Sample::Counter(s.bytes),
            (Value::BytesRead, Row::Fd(_, _, b)) => Sample::Counter(b.read),
            (Value::BytesWritten, Row::Fd(_, _, b)) => Sample::Counter(b.written),
            (Value::ResidentBytes, Row::Resident(_, bytes)) => Sample::Gauge(*bytes as i64),
            (Value::HttpDuration(side), Row::Http(k, s)) if completed(*k, side) => {
                let (sum, count, buckets) = http_in_seconds(s, http_bounds);
                Sample::Histogram(sum, count, buckets)
            }
            (Value::HttpAborted(side), Row::Http(k, s)) if k.side == side && k.status == http::STATUS_ABORTED => {
                Sample::Counter(s.buckets.iter().sum())
            }
            (Value::HttpRequestBytes(side), Row::Http(k, s)) if completed(*k, side) => Sample::Counter(s.request_bytes),
            (Value::HttpResponseBytes(side), Row::Http(k, s)) if completed(*k, side) => {
                Sample::Counter(s.response_bytes)
            }
            (Value::HttpUntracked, Row::Http(k, s))
                if matches!(k.status, http::STATUS_UNMATCHED | http::STATUS_IN_FLIGHT_FULL) =>
            {
                Sample::Counter(s.buckets.iter().sum())
            }
            (Value::Count, Row::Error(_, n) | Row::MapError(_, n)) => Sample::Counter(*n),
            (Value::BytesSent, Row::Bytes(_, b)) => Sample::Counter(b.sent),
            (Value::BytesReceived, Row::Bytes(_, b)) => Sample::Counter(b.received),
            (Value::OpenOutbound, Row::Tcp(_, c)) => Sample::Gauge(c.open_outbound),
            (Value::OpenInbound, Row::Tcp(_, c)) => Sample::Gauge(c.open_inbound),
            (Value::Retransmits, Row::Tcp(_, c)) => Sample::Counter(c.retransmits),
            (Value::ResetsSent, Row::Tcp(_, c)) => Sample::Counter(c.resets_sent),
            (Value::ResetsReceived, Row::Tcp(_, c)) => Sample::Counter(c.resets_received),
            (Value::Processes, Row::Counts(_, c)) => Sample::Gauge(c.processes),
            (Value::Threads, Row::Counts(_, c)) => Sample::Gauge(c.threads),
            _ => return None,
        })
    }
}

type Labels = Vec<(&'static str, LabelValue<Cow<'static, str>>)>;
/// A row's key fields, decoded.
type Keys = Vec<(Key, Cow<'static, str>)>;

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Held across reading and naming, so no id is freed and reused in between.
        let view = self.targets.read();
        let mut rows: BTreeMap<Source, Vec<Row>> = BTreeMap::new();
        let mut failed = 0;
        let served = || KERNEL_METRICS.iter().filter(|m| !self.not_measured.contains(&m.name));
        for metric in served() {
            rows.entry(metric.source).or_insert_with(|| {
                let (read, unread) = read(metric.source, &view);
                failed += unread;
                read
            });
        }
        self.read_errors.fetch_add(failed, Ordering::Relaxed);
        // Each target's `--target-labels`, by its name (the `target` label a row decodes to).
        let workload_labels: HashMap<String, Vec<(&'static str, String)>> = if self.target_labels.is_empty() {
            HashMap::new()
        } else {
            view.set()
                .all()
                .filter_map(|(_, t)| {
                    let w = t.workload()?;
                    let labels = self
                        .target_labels
                        .iter()
                        .filter_map(|&f| Some((f, w.field(f)?.to_owned())))
                        .collect();
                    Some((t.name.clone(), labels))
                })
                .collect()
        };
        // Every row's key fields named under the view; the maps are not read again.
        let named: BTreeMap<Source, Vec<(Keys, Row)>> = rows
            .into_iter()
            .map(|(source, rows)| {
                let named = rows
                    .into_iter()
                    .map(|row| {
                        let keys = source
                            .keys()
                            .iter()
                            .filter_map(|&key| Some((key, key.decode(&row, &view, &self.http_routes)?)))
                            .collect();
                        (keys, row)
                    })
                    .collect();
                (source, named)
            })
            .collect();
        drop(view);

        for metric in served() {
            let (base, unit, kind) = match metric.kind {
                Type::Counter => (metric.name.strip_suffix("_total"), None, MetricType::Counter),
                Type::Gauge => (Some(metric.name), None, MetricType::Gauge),
                Type::Histogram => (
                    metric.name.strip_suffix("_seconds"),
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                ),
            };
            let mut family = encoder.encode_descriptor(base.unwrap_or(metric.name), metric.help, unit, kind)?;
            for (keys, row) in named.get(&metric.source).into_iter().flatten() {
                let mut labels: Labels = metric
                    .labels
                    .iter()
                    .filter_map(|(name, key)| Some((*name, LabelValue(label_of(keys, *key)?))))
                    .collect();
                if let Some(extra) = label_of(keys, Key::Target).and_then(|t| workload_labels.get(t.as_ref())) {
                    labels.extend(extra.iter().map(|(k, v)| (*k, LabelValue(Cow::Owned(v.clone())))));
                }
                // The key's labels (a route is one only when routes were given).
                let from_key = labels.len();
                for (fixed, value) in metric.samples {
                    labels.truncate(from_key);
                    labels.extend(fixed.map(|(k, v)| (k, LabelValue(Cow::Borrowed(v)))));
                    let Some(sample) = value.of(row, &self.http_bounds) else {
                        continue;
                    };
                    let mut sample_encoder = family.encode_family(&labels)?;
                    match sample {
                        Sample::Counter(n) => counter(sample_encoder, &n)?,
                        Sample::Seconds(s) => counter(sample_encoder, &s)?,
                        Sample::Gauge(n) => sample_encoder.encode_gauge(&n)?,
                        Sample::Histogram(sum, count, buckets) => {
                            sample_encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn label_of(labels: &[(Key, Cow<'static, str>)], key: Key) -> Option<Cow<'static, str>> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
}

/// The kernel's log2 buckets (`collector_common::histogram`) and their sum in ns as (sum in
/// seconds, count, per-bucket counts with upper bounds in seconds; `f64::MAX` marks `+Inf`
/// for the encoder).
fn histogram_in_seconds(sum_ns: u64, counts: &[u64; histogram::BUCKETS]) -> (f64, u64, Vec<(f64, u64)>) {
    let buckets = counts
        .iter()
        .enumerate()
        .map(|(b, &n)| (histogram::upper_bound_ns(b).map_or(f64::MAX, |ns| ns as f64 / 1e9), n))
        .collect();
    (sum_ns as f64 / 1e9, counts.iter().sum(), buckets)
}

/// The same for an HTTP aggregate, whose buckets end at `bounds` (then +Inf).
fn http_in_seconds(s: &HttpStats, bounds: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
    let count = s.buckets.iter().sum();
    let mut buckets: Vec<(f64, u64)> = bounds.iter().zip(s.buckets).map(|(&le, n)| (le, n)).collect();
    let rest = count - buckets.iter().map(|(_, n)| n).sum::<u64>();
    buckets.push((f64::MAX, rest));
    (s.sum_ns as f64 / 1e9, count, buckets)
}

#[cfg(test)]
mod tests {
    use collector_common::sockets::{AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    #[test]
    fn families_and_protocols_have_the_documented_labels() {
        let label = |af, proto| {
            let f = Family::from_af(af);
            (f.label(), Protocol::of(f, proto).label())
        };
        assert_eq!(label(AF_INET, IPPROTO_TCP), ("inet", "tcp"));
        assert_eq!(label(AF_INET6, IPPROTO_UDP), ("inet6", "udp"));
        assert_eq!(label(AF_INET, 1), ("inet", "other")); // ICMP
        assert_eq!(label(AF_UNIX, 0), ("unix", "other"));
        assert_eq!(label(16, 0), ("other", "other")); // netlink
        for f in [Family::Inet, Family::Inet6, Family::Unix, Family::Other] {
            assert_eq!(Family::from_u16(f as u16), f);
        }
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Other] {
            assert_eq!(Protocol::from_u16(p as u16), p);
        }
    }

    #[test]
    #[allow(clippy::float_cmp)] // the values are copied, not computed
    fn http_buckets_end_at_the_configured_bounds_then_inf() {
        let mut s = HttpStats::ZERO;
        // The kernel's buckets: one per bound (d <= bound), then +Inf at the first unused.
        s.buckets[0] = 2;
        s.buckets[1] = 1;
        s.buckets[2] = 4;
        s.sum_ns = 3_000_000_000;
        let (sum, count, buckets) = http_in_seconds(&s, &[0.1, 1.0]);
        assert_eq!((sum, count), (3.0, 7));
        assert_eq!(buckets, vec![(0.1, 2), (1.0, 1), (f64::MAX, 4)]);
    }

    #[test]
    #[allow(clippy::float_cmp)] // the bounds are exact powers of two
    fn histogram_buckets_are_the_kernel_buckets_in_seconds() {
        let mut s = SyscallStats::ZERO;
        s.buckets[histogram::bucket_of(50_000_000)] = 1; // one 50 ms call
        s.buckets[0] = 3;
        s.sum_ns = 50_000_600;
        let (sum, count, buckets) = histogram_in_seconds(s.sum_ns, &s.buckets);
        assert_eq!(count, 4);
        assert!((sum - 0.0500006).abs() < 1e-12);
        assert_eq!(buckets.len(), histogram::BUCKETS);
        assert_eq!(buckets[0], (256e-9, 3));
        let (le, n) = buckets[histogram::bucket_of(50_000_000)];
        assert_eq!(n, 1);
        assert!(
            le >= 0.05 && le / 2.0 < 0.05,
            "0.05 s must fall in the bucket ending at {le}"
        );
        assert_eq!(buckets.last().unwrap().0, f64::MAX);
    }
}

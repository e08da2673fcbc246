//! `/metrics`: the kernel maps, read and decoded at scrape time, in OpenMetrics text.
//!
//! Names and labels are the contract (README): counters get `_total` from the encoder,
//! histograms `_seconds` from their unit. A map entry that cannot be read is counted in
//! `collector_map_read_errors_total`, never a failed scrape.
use std::{
    borrow::Cow,
    sync::{Arc, atomic::Ordering},
};

use collector_common::{SyscallStats, histogram};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric as _, MetricEncoder, NoLabelSet},
    metrics::{MetricType, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    decode::{errno_name, syscall_name},
    own_process,
    socket_metrics::SocketCollector,
    state::AgentState,
    telemetry::DropStage,
};

/// OpenMetrics text, served to scrapers that ask for it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, served to everyone else (curl, promtool).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Rewrites prometheus-client's OpenMetrics text into the classic text format (0.0.4), which
/// differs only in what is converted here: a counter family is named with its `_total`
/// suffix in HELP/TYPE, and there are no `# UNIT` or `# EOF` lines. Samples are unchanged.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|t| t.strip_suffix(" counter")) {
            counters.insert(name.to_owned());
        }
    }
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta.and_then(|(p, rest)| Some((p, rest.split_once(' ')?))) {
            Some((prefix, (name, rest))) if counters.contains(name) => {
                out.push_str(&format!("{prefix}{name}_total {rest}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct SyscallLabels {
    target: String,
    syscall: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    target: String,
    syscall: Cow<'static, str>,
    errno: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Builds the registry `/metrics` encodes: one collector that reads the kernel on every scrape.
/// Adds the collectors that read the kernel and the agent at scrape time to `registry`
/// (which already holds the metrics defined on events).
pub fn register_collectors(registry: &mut Registry, state: Arc<AgentState>) {
    registry.register_collector(Box::new(KernelCollector { state: state.clone() }));
    registry.register_collector(Box::new(SocketCollector { state: state.clone() }));
    registry.register_collector(Box::new(AgentCollector { state }));
}

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encoding into a String");
    out
}

#[derive(Debug)]
struct KernelCollector {
    state: Arc<AgentState>,
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Targets first and held across the map reads (the lock order everywhere), so no id
        // is freed and reused between reading a key and naming it.
        let targets = self.state.targets();
        let ((stats, stats_failed), (errors, errors_failed), map_errors) = {
            let maps = self.state.maps();
            (maps.syscall_stats(), maps.syscall_errors(), maps.map_errors())
        };
        self.state.map_read_errors.fetch_add(
            stats_failed + errors_failed + map_errors.is_err() as u64,
            Ordering::Relaxed,
        );

        let stats: Vec<(SyscallLabels, SyscallStats)> = stats
            .into_iter()
            .map(|(k, v)| {
                (
                    SyscallLabels {
                        target: AgentState::target_label(&targets, k.target),
                        syscall: syscall_name(k.nr),
                    },
                    v,
                )
            })
            .collect();

        let mut family = encoder.encode_descriptor(
            "collector_syscalls",
            "System calls made by target processes (counted when they return).",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &stats {
            let count: u64 = s.buckets.iter().sum();
            counter(family.encode_family(labels)?, count)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_syscall_errors",
            "System calls of target processes that returned an error, by errno.",
            None,
            MetricType::Counter,
        )?;
        for (k, n) in errors {
            let labels = ErrorLabels {
                target: AgentState::target_label(&targets, k.target),
                syscall: syscall_name(k.nr),
                errno: errno_name(k.errno),
            };
            counter(family.encode_family(&labels)?, n)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_syscall_duration",
            "Time from syscall entry to return, in log2 buckets measured in the kernel.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, s) in &stats {
            let (sum, count, buckets) = histogram_in_seconds(s);
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_probe_attached",
            "Whether each probe is attached (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for (&probe, &attached) in self.state.probes_attached.iter() {
            ConstGauge::new(attached as i64).encode(family.encode_family(&ProbeLabels { probe })?)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_bpf_map_errors",
            "Map updates that failed in the kernel (map full, or a read of kernel memory failed).",
            None,
            MetricType::Counter,
        )?;
        for (site, n) in map_errors.unwrap_or_default() {
            counter(family.encode_family(&MapLabels { map: site.map_name() })?, n)?;
        }

        let family = encoder.encode_descriptor(
            "collector_map_read_errors",
            "Kernel map entries the agent failed to read during scrapes.",
            None,
            MetricType::Counter,
        )?;
        let n = self.state.map_read_errors.load(Ordering::Relaxed);
        counter(family, n)?;

        let mut family = encoder.encode_descriptor(
            "collector_build_info",
            "The collector's version; always 1.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(family.encode_family(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })?)?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    event: &'static str,
    stage: &'static str,
}

/// The agent itself: events it handled and lost, and its own resource use under the
/// standard `process_*` names.
#[derive(Debug)]
struct AgentCollector {
    state: Arc<AgentState>,
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.state.telemetry.stats();
        let mut family = encoder.encode_descriptor(
            "collector_events",
            "Telemetry events delivered to handlers, by event name.",
            None,
            MetricType::Counter,
        )?;
        for (event, n) in stats.executed() {
            counter(family.encode_family(&EventLabels { event })?, n)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_events_dropped",
            "Telemetry events lost: stage kernel (ring buffer full), queue (a handler behind), \
             sink (the event sink behind), decode (an unreadable record).",
            None,
            MetricType::Counter,
        )?;
        let kernel = self.state.maps().event_drops().unwrap_or_default();
        for (kind, n) in kernel {
            let labels = DropLabels {
                event: kind.event_name(),
                stage: DropStage::Kernel.as_str(),
            };
            counter(family.encode_family(&labels)?, n)?;
        }
        for ((event, stage), n) in stats.dropped() {
            let labels = DropLabels {
                event,
                stage: stage.as_str(),
            };
            counter(family.encode_family(&labels)?, n)?;
        }

        let (by_kind, rejected) = {
            let targets = self.state.targets();
            let count = |kind| targets.live().filter(|(_, t)| t.kind.label() == kind).count() as i64;
            ([("pid", count("pid")), ("cgroup", count("cgroup"))], targets.rejected())
        };
        let mut family = encoder.encode_descriptor(
            "collector_targets",
            "Targets observed now, by kind: pid (--pid) or cgroup (--cgroup, --cgroup-pattern).",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in by_kind {
            ConstGauge::new(n).encode(family.encode_family(&KindLabels { kind })?)?;
        }
        let family = encoder.encode_descriptor(
            "collector_targets_rejected",
            "Cgroups not observed because --max-targets targets existed already.",
            None,
            MetricType::Counter,
        )?;
        counter(family, rejected)?;

        let Ok(me) = own_process::read() else { return Ok(()) };
        let gauges: [(&str, &str, f64); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                me.resident_memory_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                me.open_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                me.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let family = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        counter(family, me.cpu_seconds)?;
        Ok(())
    }
}

/// Encodes one counter sample, without an exemplar.
pub(crate) fn counter(mut metric: MetricEncoder, value: impl EncodeCounterValue) -> Result<(), std::fmt::Error> {
    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// (sum in seconds, count, per-bucket counts with upper bounds in seconds; `f64::MAX` marks
/// `+Inf` for the encoder).
fn histogram_in_seconds(s: &SyscallStats) -> (f64, u64, Vec<(f64, u64)>) {
    let buckets = s
        .buckets
        .iter()
        .enumerate()
        .map(|(b, &n)| (histogram::upper_bound_ns(b).map_or(f64::MAX, |ns| ns as f64 / 1e9), n))
        .collect();
    (s.sum_ns as f64 / 1e9, s.buckets.iter().sum(), buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_with_total_and_drops_unit_and_eof() {
        let om = "# HELP a_calls Calls.\n# TYPE a_calls counter\na_calls_total{x=\"1\"} 3\n\
                  # HELP d_seconds Time.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\n\
                  d_seconds_count 1\n# HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_calls_total Calls.\n# TYPE a_calls_total counter\na_calls_total{x=\"1\"} 3\n\
             # HELP d_seconds Time.\n# TYPE d_seconds histogram\nd_seconds_count 1\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn openmetrics_is_served_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn histogram_buckets_are_the_kernel_buckets_in_seconds() {
        let mut s = SyscallStats::ZERO;
        s.buckets[histogram::bucket_of(50_000_000)] = 1; // one 50 ms call
        s.buckets[0] = 3;
        s.sum_ns = 50_000_600;
        let (sum, count, buckets) = histogram_in_seconds(&s);
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

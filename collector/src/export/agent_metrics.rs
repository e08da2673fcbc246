//! The agent's own metrics at scrape time: its probes, what it lost and where (events
//! dropped by stage, map entries it could not read), its targets, its version, and its own
//! resource use under the standard `process_*` names.
use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet},
    metrics::MetricType,
};

use super::exposition::counter;
use crate::{
    targets::{TargetKind, Targets},
    telemetry::{DropStage, Telemetry, exposition_text::LabelValue, own_process},
};

/// Every name this collector serves (a unit test checks the list against the code).
pub const NAMES: &[&str] = &[
    "collector_probe_attached",
    "collector_map_read_errors_total",
    "collector_build_info",
    "collector_events_total",
    "collector_events_dropped_total",
    "collector_targets",
    "collector_targets_rejected_total",
    "collector_target_info",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
];

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
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

#[derive(Debug)]
pub struct AgentCollector {
    pub targets: Targets,
    pub telemetry: Arc<Telemetry>,
    /// Probe name -> attached, as of the end of start-up.
    pub probes: BTreeMap<&'static str, bool>,
    /// Kernel map entries the scrape-time collector could not read, since start.
    pub read_errors: Arc<AtomicU64>,
}

/// A counter family of one sample without labels.
fn one_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &impl EncodeCounterValue,
) -> fmt::Result {
    counter(encoder.encode_descriptor(name, help, None, MetricType::Counter)?, value)
}

/// A gauge family of one sample without labels.
fn one_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: &impl EncodeGaugeValue) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(value)
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "collector_probe_attached",
            "Whether each probe is attached (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for (&probe, &attached) in &self.probes {
            family
                .encode_family(&ProbeLabels { probe })?
                .encode_gauge(&i64::from(attached))?;
        }
        one_counter(
            &mut encoder,
            "collector_map_read_errors",
            "Kernel map entries the agent failed to read during scrapes.",
            &self.read_errors.load(Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "collector_build_info",
            "The collector's version; always 1.",
            None,
            MetricType::Gauge,
        )?;
        let version = VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        };
        family.encode_family(&version)?.encode_gauge(&1_i64)?;

        self.encode_events(&mut encoder)?;
        self.encode_targets(&mut encoder)?;

        let Ok(me) = own_process::read() else { return Ok(()) };
        for (name, help, value) in [
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
        ] {
            one_gauge(&mut encoder, name, help, &value)?;
        }
        one_counter(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            &me.cpu_seconds,
        )
    }
}

impl AgentCollector {
    fn encode_events(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let stats = self.telemetry.stats();
        let mut family = encoder.encode_descriptor(
            "collector_events",
            "Telemetry events delivered to handlers, by event name.",
            None,
            MetricType::Counter,
        )?;
        for (event, n) in stats.executed() {
            counter(family.encode_family(&EventLabels { event })?, &n)?;
        }

        let mut family = encoder.encode_descriptor(
            "collector_events_dropped",
            "Telemetry events lost: stage kernel (ring buffer full), queue (a handler behind), \
             sink (the event sink or an /events reader behind), otlp (an OTLP handler behind), \
             decode (an unreadable record).",
            None,
            MetricType::Counter,
        )?;
        let kernel = self.targets.read().maps().event_drops().unwrap_or_default();
        let kernel = kernel
            .into_iter()
            .map(|(kind, n)| ((kind.event_name(), DropStage::Kernel), n));
        for ((event, stage), n) in kernel.chain(stats.dropped()) {
            let labels = DropLabels {
                event,
                stage: stage.as_str(),
            };
            counter(family.encode_family(&labels)?, &n)?;
        }
        Ok(())
    }

    /// One series per live target, always 1, labelled with what is known of it: the
    /// Prometheus info-metric convention, to join on `target` (`* on(target)
    /// group_left(namespace, pod) collector_target_info`).
    fn encode_target_info(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let infos: Vec<Vec<(&'static str, LabelValue<String>)>> = self
            .targets
            .read()
            .set()
            .live()
            .map(|(_, t)| {
                let mut labels = vec![
                    ("target", LabelValue(t.name.clone())),
                    ("kind", LabelValue(t.kind.label().to_owned())),
                ];
                if let TargetKind::Cgroup { path, workload, .. } = &t.kind {
                    labels.push(("cgroup", LabelValue(path.clone())));
                    labels.extend(workload.known().map(|(k, v)| (k, LabelValue(v.to_owned()))));
                }
                labels
            })
            .collect();
        let mut family = encoder.encode_descriptor(
            "collector_target_info",
            "Each target and what is known of it: kind, cgroup, and its workload's namespace, pod, \
             container, container_id, pod_uid, qos and systemd unit where known; always 1.",
            None,
            MetricType::Gauge,
        )?;
        for labels in infos {
            family.encode_family(&labels)?.encode_gauge(&1_i64)?;
        }
        Ok(())
    }

    fn encode_targets(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let (by_kind, rejected) = {
            let view = self.targets.read();
            let count = |kind| view.set().live().filter(|(_, t)| t.kind.label() == kind).count() as i64;
            (
                [("pid", count("pid")), ("cgroup", count("cgroup"))],
                view.set().rejected(),
            )
        };
        let mut family = encoder.encode_descriptor(
            "collector_targets",
            "Targets observed now, by kind: pid (--pid) or cgroup (--cgroup, --cgroup-pattern).",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in by_kind {
            family.encode_family(&KindLabels { kind })?.encode_gauge(&n)?;
        }
        self.encode_target_info(encoder)?;
        one_counter(
            encoder,
            "collector_targets_rejected",
            "Cgroups not observed because --max-targets targets existed already.",
            &rejected,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_lists_every_metric_this_file_encodes() {
        let code = include_str!("agent_metrics.rs");
        let code = &code[..code.find("#[cfg(test)]").unwrap()];
        let list_end = code.find("];").unwrap();
        for quoted in code[list_end..].split('"').skip(1).step_by(2) {
            if quoted.starts_with("collector_") || quoted.starts_with("process_") {
                let listed = super::NAMES
                    .iter()
                    .any(|n| n.strip_suffix("_total").unwrap_or(n) == quoted);
                assert!(listed, "{quoted} is encoded but not in NAMES");
            }
        }
    }
}

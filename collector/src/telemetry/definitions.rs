//! Metrics defined on events, after `telemetry_metrics`: each definition names an event, what
//! to do with it (count it, add or keep a measurement, or put it in a histogram), the metadata
//! keys that become labels, and optionally which events to keep.
//!
//! The built-in metrics are tables of definitions (`builtin.rs`); a new event-derived
//! metric is a new row there, not new code.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use super::{
    bus::{DropStage, EventFilter, Telemetry, TelemetryError},
    event::Event,
};
use crate::sync::lock;

/// What a definition does with each event it keeps.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Counts events.
    Counter,
    /// Adds up a measurement.
    Sum { measurement: &'static str },
    /// A gauge holding the latest value of a measurement.
    LastValue { measurement: &'static str },
    /// A histogram of a measurement, multiplied by `scale` first (unit conversion, e.g.
    /// `1e-9` for a measurement in nanoseconds shown in seconds).
    Distribution {
        measurement: &'static str,
        buckets: &'static [f64],
        scale: f64,
    },
}

/// One metric defined on one event.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// The exposed name; counters and sums end in `_total`.
    pub name: &'static str,
    pub help: &'static str,
    /// The events it is defined on: one, or several that mean the same thing for this
    /// metric (a connection opened by connect() or by accept()).
    pub events: &'static [&'static str],
    pub kind: Kind,
    /// Metadata keys that become labels, in this order; a missing key is an empty value.
    pub tags: &'static [&'static str],
    /// Only events for which this returns true are measured.
    pub keep: Option<fn(&Event) -> bool>,
}

type Labels = Vec<(String, String)>;

/// Builds histograms with a definition's buckets.
#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

#[derive(Clone)]
/// A definition's metric family, with the measurement it reads (and a distribution's scale).
enum Instrument {
    Counter(Family<Labels, Counter>),
    Sum(Family<Labels, Counter<f64, AtomicU64>>, &'static str),
    LastValue(Family<Labels, Gauge<f64, AtomicU64>>, &'static str),
    Distribution(Family<Labels, Histogram, Buckets>, &'static str, f64),
}

/// The metrics of a set of definitions, registered and updated from events.
pub struct EventMetrics {
    defined: Vec<(MetricDef, Instrument)>,
    /// The label sets created for each target name, by definition index, so a removed
    /// target's series can be dropped.
    by_target: Mutex<HashMap<String, HashSet<(usize, Labels)>>>,
}

impl EventMetrics {
    /// Registers one metric family per definition.
    pub fn register(defs: &[MetricDef], registry: &mut Registry) -> EventMetrics {
        let defined = defs
            .iter()
            .map(|def| {
                // prometheus-client appends `_total` to counters itself.
                let base = def.name.strip_suffix("_total").unwrap_or(def.name);
                let instrument = match def.kind {
                    Kind::Counter => {
                        let f = Family::default();
                        registry.register(base, def.help, f.clone());
                        Instrument::Counter(f)
                    }
                    Kind::Sum { measurement } => {
                        let f = Family::default();
                        registry.register(base, def.help, f.clone());
                        Instrument::Sum(f, measurement)
                    }
                    Kind::LastValue { measurement } => {
                        let f = Family::default();
                        registry.register(base, def.help, f.clone());
                        Instrument::LastValue(f, measurement)
                    }
                    Kind::Distribution {
                        measurement,
                        buckets,
                        scale,
                    } => {
                        let f = Family::new_with_constructor(Buckets(buckets));
                        registry.register(base, def.help, f.clone());
                        Instrument::Distribution(f, measurement, scale)
                    }
                };
                (*def, instrument)
            })
            .collect();
        EventMetrics {
            defined,
            by_target: Mutex::default(),
        }
    }

    /// The event names these metrics are defined on.
    pub fn events(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .defined
            .iter()
            .flat_map(|(d, _)| d.events.iter().copied())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Updates every metric defined on `event`'s name.
    pub fn handle(&self, event: &Event) {
        let defined = self.defined.iter().enumerate();
        for (index, (def, instrument)) in defined.filter(|(_, (d, _))| d.events.contains(&event.name)) {
            if def.keep.is_some_and(|keep| !keep(event)) {
                continue;
            }
            let labels: Labels = def
                .tags
                .iter()
                .map(|&tag| {
                    (
                        tag.to_owned(),
                        event
                            .metadata(tag)
                            .map(super::event::Value::to_label)
                            .unwrap_or_default(),
                    )
                })
                .collect();
            if let Some((_, target)) = labels.iter().find(|(k, _)| k == "target") {
                let mut by_target = lock(&self.by_target);
                let sets = by_target.entry(target.clone()).or_default();
                if !sets.contains(&(index, labels.clone())) {
                    sets.insert((index, labels.clone()));
                }
            }
            match instrument {
                Instrument::Counter(f) => {
                    f.get_or_create(&labels).inc();
                }
                Instrument::Sum(f, measurement) => {
                    if let Some(v) = event.measurement(measurement) {
                        f.get_or_create(&labels).inc_by(v);
                    }
                }
                Instrument::LastValue(f, measurement) => {
                    if let Some(v) = event.measurement(measurement) {
                        f.get_or_create(&labels).set(v);
                    }
                }
                Instrument::Distribution(f, measurement, scale) => {
                    if let Some(v) = event.measurement(measurement) {
                        f.get_or_create(&labels).observe(v * scale);
                    }
                }
            }
        }
    }

    /// Drops every series labelled `target="<name>"` (a target that is gone for good).
    pub fn forget_target(&self, name: &str) {
        let sets = lock(&self.by_target).remove(name);
        for (index, labels) in sets.into_iter().flatten() {
            match &self.defined[index].1 {
                Instrument::Counter(f) => f.remove(&labels),
                Instrument::Sum(f, _) => f.remove(&labels),
                Instrument::LastValue(f, _) => f.remove(&labels),
                Instrument::Distribution(f, ..) => f.remove(&labels),
            };
        }
    }

    /// Attaches these metrics to `telemetry` as the handler `id`.
    pub fn attach(self: Arc<Self>, telemetry: &Telemetry, id: &str, capacity: usize) -> Result<(), TelemetryError> {
        let filter = EventFilter::Names(self.events());
        telemetry.attach(id, filter, capacity, DropStage::Queue, move |e| self.handle(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn exit(target: &str, outcome: &str, duration_ns: f64) -> Event {
        Event::new("e.exit", SystemTime::now())
            .measure("duration", duration_ns)
            .meta("target", target)
            .meta("outcome", outcome)
    }

    #[test]
    fn each_kind_of_definition_measures_its_events() {
        const DEFS: &[MetricDef] = &[
            MetricDef {
                name: "t_exits_total",
                help: "h",
                events: &["e.exit"],
                kind: Kind::Counter,
                tags: &["target", "outcome"],
                keep: None,
            },
            MetricDef {
                name: "t_busy_seconds_total",
                help: "h",
                events: &["e.exit"],
                kind: Kind::Sum {
                    measurement: "duration",
                },
                tags: &["target"],
                keep: None,
            },
            MetricDef {
                name: "t_last",
                help: "h",
                events: &["e.exit"],
                kind: Kind::LastValue {
                    measurement: "duration",
                },
                tags: &[],
                keep: None,
            },
            MetricDef {
                name: "t_seconds",
                help: "h",
                events: &["e.exit"],
                kind: Kind::Distribution {
                    measurement: "duration",
                    buckets: &[1.0, 10.0],
                    scale: 1e-9,
                },
                tags: &["missing"],
                keep: None,
            },
        ];
        let mut registry = Registry::default();
        let metrics = EventMetrics::register(DEFS, &mut registry);
        metrics.handle(&exit("a", "success", 2e9));
        metrics.handle(&exit("a", "signal", 5e8));
        metrics.handle(&Event::new("other", SystemTime::now()).meta("target", "a"));
        let out = text(&registry);
        for line in [
            "t_exits_total{target=\"a\",outcome=\"success\"} 1",
            "t_exits_total{target=\"a\",outcome=\"signal\"} 1",
            "t_busy_seconds_total{target=\"a\"} 2500000000.0",
            "t_last{} 500000000.0",
            // nanoseconds converted to seconds: 2 s and 0.5 s
            "t_seconds_sum{missing=\"\"} 2.5",
            "t_seconds_bucket{le=\"1.0\",missing=\"\"} 1",
            "t_seconds_bucket{le=\"10.0\",missing=\"\"} 2",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn a_keep_predicate_filters_events() {
        const DEFS: &[MetricDef] = &[MetricDef {
            name: "t_failures_total",
            help: "h",
            events: &["e.exit"],
            kind: Kind::Counter,
            tags: &[],
            keep: Some(|e| e.metadata("outcome") != Some(&"success".into())),
        }];
        let mut registry = Registry::default();
        let metrics = EventMetrics::register(DEFS, &mut registry);
        for outcome in ["success", "failure", "signal", "success"] {
            metrics.handle(&exit("a", outcome, 1.0));
        }
        assert!(text(&registry).contains("t_failures_total{} 2"), "{}", text(&registry));
    }

    #[test]
    fn a_forgotten_target_loses_its_series_and_others_keep_theirs() {
        const DEFS: &[MetricDef] = &[MetricDef {
            name: "t_exits_total",
            help: "h",
            events: &["e.exit"],
            kind: Kind::Counter,
            tags: &["target", "outcome"],
            keep: None,
        }];
        let mut registry = Registry::default();
        let metrics = EventMetrics::register(DEFS, &mut registry);
        metrics.handle(&exit("a", "success", 1.0));
        metrics.handle(&exit("a", "failure", 1.0));
        metrics.handle(&exit("b", "success", 1.0));
        metrics.forget_target("a");
        let out = text(&registry);
        assert!(!out.contains("target=\"a\""), "{out}");
        assert!(
            out.contains("t_exits_total{target=\"b\",outcome=\"success\"} 1"),
            "{out}"
        );
    }
}

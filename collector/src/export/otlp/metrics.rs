//! The metrics of `/metrics`, pushed as OTLP every `--otlp-interval`: the scrape's own text
//! read back (`openmetrics.rs`) and mapped as the OpenTelemetry specification maps
//! Prometheus metrics (https://opentelemetry.io/docs/specs/otel/compatibility/
//! prometheus_and_openmetrics/), with cumulative temporality from the agent's start:
//! - a counter `X_total` is the monotonic sum `X` (its `_total` is the Prometheus text
//!   format's, which an OTLP-to-Prometheus exporter adds back);
//! - a gauge is a gauge, an info metric `X_info` the gauge `X_info` of value 1;
//! - a histogram keeps its bucket bounds: `le` bounds are OTLP's explicit bounds, and the
//!   cumulative bucket counts become the counts per bucket;
//! - the unit is the UCUM one (`s`, `By`), the description the HELP text;
//! - a sum's or histogram's start is the agent's start for a series of the first push, and
//!   the push before for one that appeared since or went back (an expired target's series
//!   made anew, a reloaded definition): OTLP's way to say a cumulative series was reset.
use std::{
    collections::HashMap,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;

use super::{
    batch::SignalStats,
    openmetrics::{self, Family, Sample},
    settings::Target,
    transport::MetricsSender,
};
use crate::{export::exposition, shutdown::Shutdown};

/// What the push thread needs.
pub struct Push {
    pub registry: Arc<Registry>,
    pub resource: Resource,
    pub interval: Duration,
    /// The start of every cumulative series: the agent's start.
    pub started: SystemTime,
    pub stats: Arc<SignalStats>,
}

/// Starts the thread that pushes the metrics every interval until `stop`.
pub fn spawn(push: Push, target: Target, runtime: Handle, stop: Shutdown) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("otlp-metrics".into()).spawn(move || {
        let mut sender = match MetricsSender::new(&target, &runtime) {
            Ok(sender) => sender,
            Err(e) => {
                push.stats.exported_or_failed(0, Err(e));
                return;
            }
        };
        let mut starts = Starts::default();
        while !stop.wait(push.interval) {
            let request = push.request(SystemTime::now(), &mut starts);
            let points = points(&request);
            push.stats.exported_or_failed(points, sender.send(request));
        }
    })
}

impl Push {
    /// The request of every metric the registry encodes now, its cumulative series started
    /// as `starts` says.
    pub fn request(&self, now: SystemTime, starts: &mut Starts) -> ExportMetricsServiceRequest {
        let (families, bad) = openmetrics::parse(&exposition::encode(&self.registry));
        if bad > 0 {
            tracing::warn!(
                lines = bad,
                "OTLP metrics: lines of the exposition that do not parse were left out"
            );
        }
        let now = nanos(now);
        let mut metrics: Vec<Metric> = families.iter().filter_map(|f| metric(f, now)).collect();
        starts.stamp(&mut metrics, nanos(self.started), now);
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: super::resource::SCOPE.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

/// When each cumulative series (a sum's or histogram's point, by metric and attributes)
/// started, and its value at the last push.
#[derive(Default)]
pub struct Starts {
    series: HashMap<String, (u64, f64)>,
    /// The last push's time; `None` before the first.
    last_push: Option<u64>,
}

impl Starts {
    /// Sets each cumulative point's start: kept while the series goes on, the last push's
    /// time for a series new since it or lower than it was (reset); at the first push,
    /// `agent_start` for all. A series absent from a push is forgotten.
    fn stamp(&mut self, metrics: &mut [Metric], agent_start: u64, now: u64) {
        let fresh = self.last_push.unwrap_or(agent_start);
        let mut series = HashMap::with_capacity(self.series.len());
        let mut start_of = |name: &str, attributes: &[KeyValue], value: f64| {
            let key = format!("{name}{attributes:?}");
            let start = match self.series.get(&key) {
                Some(&(start, before)) if value >= before => start,
                _ => fresh,
            };
            series.insert(key, (start, value));
            start
        };
        for m in metrics.iter_mut() {
            match &mut m.data {
                Some(Data::Sum(sum)) => {
                    for p in &mut sum.data_points {
                        let value = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            Some(number_data_point::Value::AsDouble(d)) => d,
                            None => 0.0,
                        };
                        p.start_time_unix_nano = start_of(&m.name, &p.attributes, value);
                    }
                }
                Some(Data::Histogram(h)) => {
                    for p in &mut h.data_points {
                        p.start_time_unix_nano = start_of(&m.name, &p.attributes, p.count as f64);
                    }
                }
                _ => {}
            }
        }
        self.series = series;
        self.last_push = Some(now);
    }
}

/// Data points in a request: what one push exports.
fn points(request: &ExportMetricsServiceRequest) -> u64 {
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    metrics
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        } as u64)
        .sum()
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A family as an OTLP metric at `now` (its points' starts are `Starts`'), `None` for one
/// without samples.
fn metric(family: &Family, now: u64) -> Option<Metric> {
    if family.samples.is_empty() {
        return None;
    }
    let number = |s: &Sample| NumberDataPoint {
        attributes: attributes(&s.labels),
        time_unix_nano: now,
        value: Some(match s.int {
            Some(i) => number_data_point::Value::AsInt(i),
            None => number_data_point::Value::AsDouble(s.value),
        }),
        ..NumberDataPoint::default()
    };
    let points = |suffix: &str| {
        family
            .samples
            .iter()
            .filter(|s| s.suffix == suffix)
            .map(number)
            .collect()
    };
    let (name, data) = match family.kind.as_str() {
        "counter" => (
            family.name.clone(),
            Data::Sum(Sum {
                data_points: points("_total"),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        "histogram" => (family.name.clone(), Data::Histogram(histogram(family, now))),
        "info" => (
            format!("{}_info", family.name),
            Data::Gauge(Gauge {
                data_points: points("_info"),
            }),
        ),
        _ => (
            family.name.clone(),
            Data::Gauge(Gauge {
                data_points: points(""),
            }),
        ),
    };
    Some(Metric {
        name,
        description: family.help.clone(),
        unit: ucum(&family.unit),
        data: Some(data),
        ..Metric::default()
    })
}

/// A histogram's series, each from its `_bucket` samples (cumulative, by `le`), `_sum` and
/// `_count`, grouped by their other labels.
fn histogram(family: &Family, now: u64) -> Histogram {
    let mut points: Vec<HistogramDataPoint> = Vec::new();
    let mut by_labels: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for sample in &family.samples {
        let labels: Vec<(String, String)> = sample.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let at = *by_labels.entry(labels).or_insert_with_key(|labels| {
            points.push(HistogramDataPoint {
                attributes: attributes(labels),
                time_unix_nano: now,
                ..HistogramDataPoint::default()
            });
            points.len() - 1
        });
        let point = &mut points[at];
        match sample.suffix.as_str() {
            "_bucket" => {
                // Cumulative up to this bound: what this bucket adds is the difference.
                let below: u64 = point.bucket_counts.iter().sum();
                point.bucket_counts.push((sample.value as u64).saturating_sub(below));
                let bound: f64 = sample
                    .label("le")
                    .and_then(|le| le.parse().ok())
                    .unwrap_or(f64::INFINITY);
                if bound.is_finite() {
                    point.explicit_bounds.push(bound);
                }
            }
            "_sum" => point.sum = Some(sample.value),
            "_count" => point.count = sample.value as u64,
            _ => {}
        }
    }
    Histogram {
        data_points: points,
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            }),
            ..KeyValue::default()
        })
        .collect()
}

/// OpenMetrics units as UCUM, which OTLP uses.
fn ucum(unit: &str) -> String {
    match unit {
        "seconds" => "s".into(),
        "bytes" => "By".into(),
        "ratios" => "1".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_infos_map_as_the_specification_says() {
        let text = "# HELP c Calls.\n# TYPE c counter\nc_total{t=\"a\"} 7\n\
                    # HELP h Time.\n# TYPE h histogram\n# UNIT h seconds\n\
                    h_bucket{t=\"a\",le=\"0.1\"} 2\nh_bucket{t=\"a\",le=\"1.0\"} 5\nh_bucket{t=\"a\",le=\"+Inf\"} 6\n\
                    h_sum{t=\"a\"} 3.5\nh_count{t=\"a\"} 6\n\
                    # HELP b Build.\n# TYPE b info\nb_info{version=\"1\"} 1\n# EOF\n";
        let (families, _) = openmetrics::parse(text);
        let metrics: Vec<Metric> = families.iter().filter_map(|f| metric(f, 2)).collect();
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            panic!()
        };
        assert!(sum.is_monotonic);
        assert_eq!(metrics[0].name, "c");
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(7)));
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!()
        };
        assert_eq!(metrics[1].unit, "s");
        let p = &h.data_points[0];
        assert_eq!((p.count, p.sum), (6, Some(3.5)));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [2, 3, 1]);
        assert_eq!(p.attributes.len(), 1, "le is not an attribute");
        assert_eq!(metrics[2].name, "b_info");
    }

    #[test]
    fn a_series_starts_at_the_agent_then_at_the_push_before_it_appeared_or_was_reset() {
        let sum = |values: &[(&str, i64)]| Metric {
            name: "c".into(),
            data: Some(Data::Sum(Sum {
                data_points: values
                    .iter()
                    .map(|&(t, v)| NumberDataPoint {
                        attributes: attributes(&[("t".into(), t.into())]),
                        value: Some(number_data_point::Value::AsInt(v)),
                        ..NumberDataPoint::default()
                    })
                    .collect(),
                ..Sum::default()
            })),
            ..Metric::default()
        };
        let starts_of = |m: &Metric| match &m.data {
            Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.start_time_unix_nano).collect::<Vec<_>>(),
            _ => panic!("a sum"),
        };
        let mut starts = Starts::default();
        let mut first = [sum(&[("a", 5)])];
        starts.stamp(&mut first, 1, 10);
        assert_eq!(starts_of(&first[0]), [1]);
        let mut second = [sum(&[("a", 7), ("b", 1)])];
        starts.stamp(&mut second, 1, 20);
        assert_eq!(starts_of(&second[0]), [1, 10], "b appeared after the push at 10");
        let mut third = [sum(&[("a", 2), ("b", 1)])];
        starts.stamp(&mut third, 1, 30);
        assert_eq!(starts_of(&third[0]), [20, 10], "a went back: reset");
        let mut fourth = [sum(&[("b", 1)])];
        starts.stamp(&mut fourth, 1, 40);
        let mut fifth = [sum(&[("a", 9), ("b", 1)])];
        starts.stamp(&mut fifth, 1, 50);
        assert_eq!(starts_of(&fifth[0]), [40, 10], "a was gone from the push at 40");
    }
}

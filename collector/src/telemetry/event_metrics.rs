//! The metrics of the loaded definitions: updated from events on the metrics handler's
//! thread, encoded at scrape time, and replaced as a whole on reload, where a definition that
//! did not change keeps its series and values.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
};

use super::{
    bus::{DropStage, EventFilter, Telemetry, TelemetryError},
    definitions::{Kind, MetricDef},
    event::Event,
    exposition_text::{self, LabelValue},
    process_info::FROM_PROC,
};
use crate::sync::lock;

type Labels = Vec<(String, LabelValue<String>)>;

/// Builds histograms with a definition's buckets.
#[derive(Clone)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A definition's metric family.
enum Instrument {
    Counter(Family<Labels, Counter>),
    Sum(Family<Labels, Counter<f64, AtomicU64>>),
    LastValue(Family<Labels, Gauge<f64, AtomicU64>>),
    Distribution(Family<Labels, Histogram, Buckets>),
}

/// A definition with its metric and the series it made.
struct Defined {
    def: MetricDef,
    instrument: Instrument,
    series: AtomicUsize,
    /// Events not measured because their label set would have passed `max_series`.
    overflow: AtomicU64,
}

impl Defined {
    /// Whether its series are labelled by target (and so forgotten with one).
    fn tagged_by_target(&self) -> bool {
        self.def.tags.iter().any(|t| t == "target")
    }

    fn new(def: MetricDef) -> Defined {
        let instrument = match &def.kind {
            Kind::Counter => Instrument::Counter(Family::default()),
            Kind::Sum(_) => Instrument::Sum(Family::default()),
            Kind::LastValue(_) => Instrument::LastValue(Family::default()),
            Kind::Distribution(_, buckets) => {
                Instrument::Distribution(Family::new_with_constructor(Buckets(buckets.as_slice().into())))
            }
        };
        Defined {
            def,
            instrument,
            series: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    fn exists(&self, labels: &Labels) -> bool {
        match &self.instrument {
            Instrument::Counter(f) => f.get(labels).is_some(),
            Instrument::Sum(f) => f.get(labels).is_some(),
            Instrument::LastValue(f) => f.get(labels).is_some(),
            Instrument::Distribution(f) => f.get(labels).is_some(),
        }
    }

    /// What `event` adds: 1 for a counter, else its measurement converted (`None` when it
    /// lacks it; the catalogue check makes that a bug).
    fn value_of(&self, event: &Event) -> Option<f64> {
        match self.def.kind.measured() {
            None => Some(1.0),
            Some(m) => Some(event.measurement(&m.measurement)? * m.scale),
        }
    }

    /// Measures `value` under `labels`.
    fn update(&self, labels: &Labels, value: f64) {
        match &self.instrument {
            Instrument::Counter(f) => {
                f.get_or_create(labels).inc();
            }
            Instrument::Sum(f) => {
                f.get_or_create(labels).inc_by(value);
            }
            Instrument::LastValue(f) => {
                f.get_or_create(labels).set(value);
            }
            Instrument::Distribution(f) => f.get_or_create(labels).observe(value),
        }
    }

    fn remove(&self, labels: &Labels) {
        let removed = match &self.instrument {
            Instrument::Counter(f) => f.remove(labels),
            Instrument::Sum(f) => f.remove(labels),
            Instrument::LastValue(f) => f.remove(labels),
            Instrument::Distribution(f) => f.remove(labels),
        };
        if removed {
            self.series.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (metric, kind): (&dyn EncodeMetric, MetricType) = match &self.instrument {
            Instrument::Counter(f) => (f, MetricType::Counter),
            Instrument::Sum(f) => (f, MetricType::Counter),
            Instrument::LastValue(f) => (f, MetricType::Gauge),
            Instrument::Distribution(f) => (f, MetricType::Histogram),
        };
        // prometheus-client appends `_total` to counters itself.
        let base = self.def.name.strip_suffix("_total").unwrap_or(&self.def.name);
        metric.encode(encoder.encode_descriptor(base, &exposition_text::help(&self.def.help), None, kind)?)
    }
}

/// The loaded definitions, and which of them each event name feeds.
#[derive(Default)]
struct Loaded {
    defined: Vec<Arc<Defined>>,
    by_event: HashMap<&'static str, Vec<usize>>,
}

/// What a reload changed, by definition name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// The metrics of the loaded definitions.
pub struct EventMetrics {
    loaded: RwLock<Loaded>,
    /// Whether a loaded definition uses a key only /proc gives (`process_info::FROM_PROC`).
    uses_proc: AtomicBool,
    /// The label sets made for each target name, with the definition that made each, so a
    /// removed target's series can be dropped.
    by_target: Mutex<HashMap<String, HashSet<(String, Labels)>>>,
    /// `--target-labels`: tags added to every definition tagged by `target`.
    target_labels: Vec<&'static str>,
    /// Target names whose series were forgotten in the last [`FORGOTTEN_FOR`], with the
    /// naming generation that forgot them (`Event::naming`) and when: an event named before
    /// (queued as they went) must not bring them back.
    forgotten: Mutex<HashMap<String, (u64, Instant)>>,
    /// Whether `forgotten` has any, so that `handle` locks it only then.
    any_forgotten: AtomicBool,
}

/// How long an event named before its target's series were forgotten is still looked for:
/// far longer than an event waits in the handler's queue.
const FORGOTTEN_FOR: Duration = Duration::from_secs(60);

impl std::fmt::Debug for EventMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.read().defined.iter().map(|d| d.def.name.clone()).collect();
        f.debug_struct("EventMetrics")
            .field("definitions", &names)
            .finish_non_exhaustive()
    }
}

impl EventMetrics {
    /// The metrics of `defs`; a definition tagged by `target` is also tagged by each of
    /// `target_labels` it does not have (`--target-labels`; events carry them as metadata).
    pub fn new(defs: Vec<MetricDef>, target_labels: &[&'static str]) -> EventMetrics {
        let metrics = EventMetrics {
            loaded: RwLock::default(),
            uses_proc: AtomicBool::new(false),
            by_target: Mutex::default(),
            target_labels: target_labels.to_vec(),
            forgotten: Mutex::default(),
            any_forgotten: AtomicBool::new(false),
        };
        metrics.replace(defs);
        metrics
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads `defs` in place of the current definitions. One equal to a current one keeps its
    /// series and values; the others start empty, and the ones not in `defs` go.
    pub fn replace(&self, defs: Vec<MetricDef>) -> Replaced {
        let mut loaded = self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut old = std::mem::take(&mut loaded.defined);
        let mut replaced = Replaced::default();
        for mut def in defs {
            if def.tags.iter().any(|t| t == "target") {
                for label in &self.target_labels {
                    if !def.tags.iter().any(|t| t == label) {
                        def.tags.push((*label).to_owned());
                    }
                }
            }
            let defined = match old.iter().position(|d| d.def == def) {
                Some(i) => {
                    replaced.kept.push(def.name);
                    old.swap_remove(i)
                }
                None => {
                    replaced.added.push(def.name.clone());
                    Arc::new(Defined::new(def))
                }
            };
            loaded.defined.push(defined);
        }
        replaced.removed = old.iter().map(|d| d.def.name.clone()).collect();
        // The series of a definition that changed or went are gone with it.
        for sets in lock(&self.by_target).values_mut() {
            sets.retain(|(name, _)| replaced.kept.contains(name));
        }
        let uses_proc = loaded
            .defined
            .iter()
            .any(|d| FROM_PROC.iter().any(|key| d.def.uses(key)));
        self.uses_proc.store(uses_proc, Ordering::Relaxed);
        loaded.by_event.clear();
        for (i, defined) in loaded.defined.clone().iter().enumerate() {
            for &event in &defined.def.events {
                loaded.by_event.entry(event).or_default().push(i);
            }
        }
        replaced
    }

    /// Whether a definition uses a metadata key that only /proc gives.
    pub fn uses_proc(&self) -> bool {
        self.uses_proc.load(Ordering::Relaxed)
    }

    /// Updates every metric defined on `event`'s name.
    pub fn handle(&self, event: &Event) {
        let loaded = self.read();
        // After the read lock: a forget that came first has left its mark by now.
        let stale = self.named_before_forgotten(event);
        for &i in loaded.by_event.get(event.name).into_iter().flatten() {
            let defined = &loaded.defined[i];
            if !defined.def.admits(event) || (stale && defined.tagged_by_target()) {
                continue;
            }
            let Some(value) = defined.value_of(event) else {
                continue;
            };
            let labels: Labels = defined
                .def
                .tags
                .iter()
                .map(|tag| {
                    let value = event.metadata(tag).map(super::Value::to_label);
                    (tag.clone(), LabelValue(value.unwrap_or_default()))
                })
                .collect();
            if !defined.exists(&labels) {
                if defined.series.load(Ordering::Relaxed) >= defined.def.max_series {
                    if defined.overflow.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            metric = defined.def.name,
                            max_series = defined.def.max_series,
                            "a metric definition reached its max_series; events that would make more series \
                             are counted in collector_metric_series_overflow_total"
                        );
                    }
                    continue;
                }
                defined.series.fetch_add(1, Ordering::Relaxed);
                if let Some((_, target)) = labels.iter().find(|(k, _)| k == "target") {
                    let mut by_target = lock(&self.by_target);
                    let sets = by_target.entry(target.0.clone()).or_default();
                    sets.insert((defined.def.name.clone(), labels.clone()));
                }
            }
            defined.update(&labels, value);
        }
    }

    /// Whether `event`'s target was named before that name's series were forgotten.
    fn named_before_forgotten(&self, event: &Event) -> bool {
        if !self.any_forgotten.load(Ordering::Acquire) {
            return false;
        }
        let mut forgotten = lock(&self.forgotten);
        forgotten.retain(|_, (_, at)| at.elapsed() < FORGOTTEN_FOR);
        self.any_forgotten.store(!forgotten.is_empty(), Ordering::Release);
        event
            .metadata("target")
            .map(super::Value::to_label)
            .and_then(|target| forgotten.get(&target))
            .is_some_and(|&(naming, _)| event.naming < naming)
    }

    /// Drops every series labelled `target="<name>"` (a target gone for good, renamed, or
    /// whose `--target-labels` fields changed), as of the target set's naming generation
    /// `naming`: an event named before it, still queued, is not measured by a definition
    /// tagged by `target`, or it would bring back a stale series.
    pub fn forget_target(&self, name: &str, naming: u64) {
        {
            let mut forgotten = lock(&self.forgotten);
            forgotten.insert(name.to_owned(), (naming, Instant::now()));
            self.any_forgotten.store(true, Ordering::Release);
        }
        // Written, not read: no event may be measured between finding a series and
        // counting it (`handle`), or a series could come back uncounted and unindexed.
        let loaded = self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sets = lock(&self.by_target).remove(name);
        for (def, labels) in sets.into_iter().flatten() {
            if let Some(defined) = loaded.defined.iter().find(|d| d.def.name == def) {
                defined.remove(&labels);
            }
        }
    }

    /// Attaches these metrics to `telemetry` as the handler `id`. It takes every event, so
    /// a reload may define metrics on any, and demands those a definition is on.
    pub fn attach(self: Arc<Self>, telemetry: &Telemetry, id: &str, capacity: usize) -> Result<(), TelemetryError> {
        let defines = {
            let metrics = self.clone();
            move |name: &str| metrics.read().by_event.contains_key(name)
        };
        let filter = EventFilter::Defined(Arc::new(defines));
        telemetry.attach(id, filter, capacity, DropStage::Queue, move |e| {
            self.handle(e);
        })
    }
}

/// Serves the definitions' metrics, and the overflow of each, at scrape time.
#[derive(Debug)]
pub struct EventMetricsCollector(pub Arc<EventMetrics>);

impl Collector for EventMetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loaded = self.0.read();
        for defined in &loaded.defined {
            defined.encode(&mut encoder)?;
        }
        let mut overflow = encoder.encode_descriptor(
            "collector_metric_series_overflow",
            "Events a metric definition did not measure because they would have made a series beyond its max_series",
            None,
            MetricType::Counter,
        )?;
        for defined in &loaded.defined {
            let labels = [("metric", defined.def.name.as_str())];
            let count = ConstCounter::new(defined.overflow.load(Ordering::Relaxed));
            count.encode(overflow.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::telemetry::definitions::Measured;

    fn text(metrics: &Arc<EventMetrics>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(EventMetricsCollector(metrics.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn exit(target: &str, outcome: &str, duration: f64) -> Event {
        Event::new("process.exit", SystemTime::now())
            .measure("duration", duration)
            .meta("target", target)
            .meta("outcome", outcome)
    }

    fn def(name: &str, kind: Kind, tags: &[&str]) -> MetricDef {
        MetricDef {
            name: name.into(),
            help: "h".into(),
            events: vec!["process.exit"],
            kind,
            tags: tags.iter().map(|&t| t.to_owned()).collect(),
            keep: vec![],
            drop: vec![],
            max_series: 1000,
        }
    }

    fn measured(scale: f64) -> Measured {
        Measured {
            measurement: "duration".into(),
            scale,
        }
    }

    #[test]
    fn each_kind_of_definition_measures_its_events() {
        let metrics = Arc::new(EventMetrics::new(
            vec![
                def("t_exits_total", Kind::Counter, &["target", "outcome"]),
                def("t_busy_milliseconds_total", Kind::Sum(measured(1e3)), &["target"]),
                def("t_last", Kind::LastValue(measured(1.0)), &[]),
                def(
                    "t_seconds",
                    Kind::Distribution(measured(1.0), vec![1.0, 10.0]),
                    &["missing"],
                ),
            ],
            &[],
        ));
        metrics.handle(&exit("a", "success", 2.0));
        metrics.handle(&exit("a", "signal", 0.5));
        metrics.handle(&Event::new("other", SystemTime::now()).meta("target", "a"));
        let out = text(&metrics);
        for line in [
            "t_exits_total{target=\"a\",outcome=\"success\"} 1",
            "t_exits_total{target=\"a\",outcome=\"signal\"} 1",
            "t_busy_milliseconds_total{target=\"a\"} 2500.0",
            "t_last{} 0.5",
            "t_seconds_sum{missing=\"\"} 2.5",
            "t_seconds_bucket{le=\"1.0\",missing=\"\"} 1",
            "t_seconds_bucket{le=\"10.0\",missing=\"\"} 2",
            "collector_metric_series_overflow_total{metric=\"t_exits_total\"} 0",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn target_labels_tag_every_definition_tagged_by_target() {
        let metrics = Arc::new(EventMetrics::new(
            vec![
                def("t_exits_total", Kind::Counter, &["target", "outcome"]),
                def("t_all_total", Kind::Counter, &[]),
            ],
            &["namespace", "pod"],
        ));
        metrics.handle(&exit("a", "success", 1.0).meta("namespace", "shop").meta("pod", "cart"));
        metrics.handle(&exit("b", "success", 1.0));
        let out = text(&metrics);
        for line in [
            "t_exits_total{target=\"a\",outcome=\"success\",namespace=\"shop\",pod=\"cart\"} 1",
            "t_exits_total{target=\"b\",outcome=\"success\",namespace=\"\",pod=\"\"} 1",
            "t_all_total{} 2",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn a_definition_holds_at_max_series_and_counts_the_rest() {
        let mut limited = def("t_exits_total", Kind::Counter, &["target"]);
        limited.max_series = 2;
        let metrics = Arc::new(EventMetrics::new(vec![limited], &[]));
        for target in ["a", "b", "c", "a", "d"] {
            metrics.handle(&exit(target, "success", 1.0));
        }
        let out = text(&metrics);
        assert!(out.contains("t_exits_total{target=\"a\"} 2"), "{out}");
        assert!(!out.contains("target=\"c\""), "{out}");
        assert!(
            out.contains("collector_metric_series_overflow_total{metric=\"t_exits_total\"} 2"),
            "{out}"
        );
        // A forgotten target makes room.
        metrics.forget_target("a", 1);
        metrics.handle(&exit("c", "success", 1.0));
        assert!(text(&metrics).contains("t_exits_total{target=\"c\"} 1"));
    }

    #[test]
    fn a_reload_keeps_unchanged_definitions_with_their_values() {
        let counter = def("t_exits_total", Kind::Counter, &["target"]);
        let metrics = Arc::new(EventMetrics::new(
            vec![counter.clone(), def("t_last", Kind::LastValue(measured(1.0)), &[])],
            &[],
        ));
        metrics.handle(&exit("a", "success", 3.0));
        let replaced = metrics.replace(vec![counter, def("t_new_total", Kind::Counter, &[])]);
        assert_eq!(
            replaced,
            Replaced {
                kept: vec!["t_exits_total".into()],
                added: vec!["t_new_total".into()],
                removed: vec!["t_last".into()],
            }
        );
        metrics.handle(&exit("a", "success", 3.0));
        let out = text(&metrics);
        assert!(out.contains("t_exits_total{target=\"a\"} 2"), "{out}");
        assert!(out.contains("t_new_total{} 1"), "{out}");
        assert!(!out.contains("t_last"), "{out}");
    }

    #[test]
    fn a_forgotten_target_loses_its_series_and_others_keep_theirs() {
        let metrics = Arc::new(EventMetrics::new(
            vec![
                def("t_exits_total", Kind::Counter, &["target", "outcome"]),
                def("t_all_total", Kind::Counter, &[]),
            ],
            &[],
        ));
        metrics.handle(&exit("a", "success", 1.0));
        metrics.handle(&exit("a", "failure", 1.0));
        metrics.handle(&exit("b", "success", 1.0));
        metrics.forget_target("a", 1);
        // An event named before (generation 0), still in the queue then, does not bring the
        // series back, but is measured by a definition not tagged by target; one named
        // after (a new target of that name) is measured by both.
        metrics.handle(&exit("a", "success", 1.0));
        let out = text(&metrics);
        assert!(!out.contains("target=\"a\""), "{out}");
        assert!(
            out.contains("t_exits_total{target=\"b\",outcome=\"success\"} 1"),
            "{out}"
        );
        assert!(out.contains("t_all_total{} 4"), "{out}");
        metrics.handle(&exit("a", "success", 1.0).named_at(1));
        let out = text(&metrics);
        assert!(
            out.contains("t_exits_total{target=\"a\",outcome=\"success\"} 1"),
            "{out}"
        );
        assert!(out.contains("t_all_total{} 5"), "{out}");
    }
}

//! `[[metric]]` tables: what a user writes, checked against the event catalogue and the
//! Prometheus naming rules, and built into [`MetricDef`]s. Every problem is reported with its
//! place; one table's problems do not hide another's.
use std::{collections::BTreeMap, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use crate::telemetry::{
    catalogue::{self, EventSpec, Unit},
    definitions::{Condition, Kind, Measured, MetricDef, Pattern},
};

/// Series a definition may make when it does not say.
pub const DEFAULT_MAX_SERIES: u64 = 1000;
const MOST_MAX_SERIES: u64 = 1_000_000;

/// Prometheus' default buckets (seconds), for a distribution that gives none.
const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    name: Spanned<String>,
    help: Option<String>,
    kind: Spanned<String>,
    event: Spanned<OneOrMany>,
    measurement: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    buckets: Option<Spanned<Vec<f64>>>,
    unit: Option<Spanned<String>>,
    #[serde(default)]
    keep: BTreeMap<Spanned<String>, Spanned<PatternSpec>>,
    #[serde(default)]
    drop: BTreeMap<Spanned<String>, Spanned<PatternSpec>>,
    max_series: Option<Spanned<i64>>,
}

/// `event = "name"` or `event = ["a", "b"]`, each name with its place. (Hand-written: an
/// untagged enum buffers its input, and the spans of the elements would be lost.)
#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event name or an array of event names")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(name.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element()? {
                    names.push(name);
                }
                Ok(OneOrMany::Many(names))
            }
        }
        deserializer.deserialize_any(Names)
    }
}

/// A filter's value: a string (exact, or a glob when it has `*?[{`), an integer, a
/// `{ regex = "..." }`, or a list of these (any matches).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PatternSpec {
    One(OnePattern),
    Any(Vec<OnePattern>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OnePattern {
    Text(String),
    Number(i64),
    Regex { regex: String },
}

/// Problems of the table being checked, placed in its file.
struct Check<'a> {
    source: &'a Source,
    problems: &'a mut Vec<String>,
}

impl Check<'_> {
    fn at(&mut self, span: Range<usize>, message: impl std::fmt::Display) {
        self.problems.push(self.source.at(Some(span), message));
    }
}

impl MetricSpec {
    pub fn name_span(&self) -> Range<usize> {
        self.name.span()
    }

    /// The definition, or `None` with its problems added to `problems`.
    pub fn build(self, source: &Source, problems: &mut Vec<String>) -> Option<MetricDef> {
        let before = problems.len();
        let mut check = Check { source, problems };
        let name = self.name.get_ref().clone();
        if !is_metric_name(&name) {
            check.at(
                self.name.span(),
                format!("{name:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
            );
        }
        let events = self.events(&mut check);
        let kind = self.kind(&mut check, &events);
        if let Some(kind) = &kind {
            let is_counter = matches!(kind, Kind::Counter | Kind::Sum(_));
            if is_counter != name.ends_with("_total") {
                let message = if is_counter {
                    format!("the name of a {} must end in _total: {name}_total", self.kind.get_ref())
                } else {
                    format!(
                        "only counters and sums end in _total; {name:?} is a {}",
                        self.kind.get_ref()
                    )
                };
                check.at(self.name.span(), message);
            }
        }
        let tags = self.tags(&mut check, &events, matches!(kind, Some(Kind::Distribution(..))));
        let keep = conditions(&self.keep, &mut check, &events);
        let drop = conditions(&self.drop, &mut check, &events);
        let max_series = match &self.max_series {
            None => DEFAULT_MAX_SERIES,
            Some(n) if (1..=MOST_MAX_SERIES).contains(&n.get_ref().unsigned_abs()) && *n.get_ref() > 0 => {
                n.get_ref().unsigned_abs()
            }
            Some(n) => {
                check.at(n.span(), format!("max_series must be from 1 to {MOST_MAX_SERIES}"));
                DEFAULT_MAX_SERIES
            }
        };
        if check.problems.len() > before {
            return None;
        }
        Some(MetricDef {
            help: self
                .help
                .unwrap_or_else(|| format!("{} of {}", self.kind.get_ref(), events_text(&events))),
            name,
            events: events.iter().map(|e| e.name).collect(),
            kind: kind?,
            tags,
            keep,
            drop,
            max_series: usize::try_from(max_series).unwrap_or(usize::MAX),
        })
    }

    fn events(&self, check: &mut Check) -> Vec<&'static EventSpec> {
        let names: Vec<(&str, Range<usize>)> = match self.event.get_ref() {
            OneOrMany::One(name) => vec![(name.as_str(), self.event.span())],
            OneOrMany::Many(names) => names.iter().map(|n| (n.get_ref().as_str(), n.span())).collect(),
        };
        if names.is_empty() {
            check.at(self.event.span(), "event lists no event");
        }
        let mut found: Vec<&'static EventSpec> = Vec::new();
        for (name, span) in names {
            match catalogue::find(name) {
                // Listed twice, an event would be measured twice.
                Some(spec) if found.iter().any(|f| f.name == spec.name) => {
                    check.at(span, format!("event {name:?} is listed twice"));
                }
                Some(spec) => found.push(spec),
                None => {
                    let known: Vec<_> = catalogue::EVENTS.iter().map(|e| e.name).collect();
                    check.at(
                        span,
                        format!("unknown event {name:?}; the events are {}", known.join(", ")),
                    );
                }
            }
        }
        found
    }

    fn kind(&self, check: &mut Check, events: &[&EventSpec]) -> Option<Kind> {
        let kind = self.kind.get_ref().as_str();
        let counter = kind == "counter";
        if !counter && !["sum", "last_value", "distribution"].contains(&kind) {
            check.at(
                self.kind.span(),
                format!("unknown kind {kind:?}; use counter, sum, last_value or distribution"),
            );
            return None;
        }
        if kind != "distribution"
            && let Some(buckets) = &self.buckets
        {
            check.at(buckets.span(), "buckets apply to a distribution only");
        }
        let measured = match (&self.measurement, counter) {
            (Some(m), true) => {
                check.at(m.span(), "a counter counts events and takes no measurement");
                return None;
            }
            (None, true) => {
                if let Some(unit) = &self.unit {
                    check.at(unit.span(), "a counter counts events and takes no unit");
                }
                return Some(Kind::Counter);
            }
            (None, false) => {
                check.at(self.kind.span(), format!("a {kind} needs a measurement"));
                return None;
            }
            (Some(m), false) => self.measured(check, m, events)?,
        };
        Some(match kind {
            "sum" => Kind::Sum(measured),
            "last_value" => Kind::LastValue(measured),
            _ => {
                let buckets = self.buckets(check, &measured, events)?;
                Kind::Distribution(measured, buckets)
            }
        })
    }

    /// The measurement, which every event must carry in one unit, and its conversion.
    fn measured(&self, check: &mut Check, m: &Spanned<String>, events: &[&EventSpec]) -> Option<Measured> {
        let mut units = Vec::new();
        for event in events {
            match event.unit_of(m.get_ref()) {
                Some(unit) => units.push(unit),
                None => {
                    let has: Vec<_> = event.measurements.iter().map(|(n, _)| *n).collect();
                    let has = if has.is_empty() {
                        "none".to_owned()
                    } else {
                        has.join(", ")
                    };
                    check.at(
                        m.span(),
                        format!(
                            "event {} has no measurement {:?} (it has: {has})",
                            event.name,
                            m.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
        let from = *units.first()?;
        if units.iter().any(|u| *u != from) {
            check.at(
                m.span(),
                format!("the events measure {:?} in different units", m.get_ref()),
            );
            return None;
        }
        let scale = match &self.unit {
            None => 1.0,
            Some(unit) => match conversion(from, unit.get_ref()) {
                Ok(scale) => scale,
                Err(message) => {
                    check.at(unit.span(), message);
                    return None;
                }
            },
        };
        Some(Measured {
            measurement: m.get_ref().clone(),
            scale,
        })
    }

    /// The buckets given, else Prometheus' defaults for a measurement in seconds, in the
    /// definition's unit (no default fits bytes or counts).
    fn buckets(&self, check: &mut Check, measured: &Measured, events: &[&EventSpec]) -> Option<Vec<f64>> {
        let Some(buckets) = &self.buckets else {
            let in_seconds = events
                .iter()
                .all(|e| e.unit_of(&measured.measurement) == Some(Unit::Second));
            if !in_seconds {
                check.at(
                    self.kind.span(),
                    "a distribution of a measurement that is not a time needs buckets",
                );
                return None;
            }
            return Some(DEFAULT_BUCKETS.iter().map(|b| b * measured.scale).collect());
        };
        let values = buckets.get_ref();
        let increasing = values.windows(2).all(|w| w[0] < w[1]);
        if values.is_empty() || !increasing || values.iter().any(|b| !b.is_finite()) {
            check.at(
                buckets.span(),
                "buckets must be finite numbers in increasing order, at least one",
            );
            return None;
        }
        Some(values.clone())
    }

    fn tags(&self, check: &mut Check, events: &[&EventSpec], distribution: bool) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for tag in &self.tags {
            let name = tag.get_ref();
            if !is_label_name(name) || (distribution && name == "le") {
                check.at(
                    tag.span(),
                    format!("{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*, not le on a distribution)"),
                );
            } else if tags.contains(name) {
                check.at(tag.span(), format!("tag {name:?} is listed twice"));
            } else if !events.is_empty() && !events.iter().any(|e| e.carries(name)) {
                check.at(tag.span(), no_such_key(name, events));
            }
            tags.push(name.clone());
        }
        tags
    }
}

fn conditions(
    spec: &BTreeMap<Spanned<String>, Spanned<PatternSpec>>,
    check: &mut Check,
    events: &[&EventSpec],
) -> Vec<Condition> {
    let mut out = Vec::new();
    for (key, value) in spec {
        if !events.is_empty() && !events.iter().any(|e| e.carries(key.get_ref())) {
            check.at(key.span(), no_such_key(key.get_ref(), events));
        }
        let ones = match value.get_ref() {
            PatternSpec::One(one) => std::slice::from_ref(one),
            PatternSpec::Any(list) => list.as_slice(),
        };
        let mut patterns = Vec::new();
        for one in ones {
            match pattern(one) {
                Ok(p) => patterns.push(p),
                Err(message) => check.at(value.span(), message),
            }
        }
        out.push(Condition {
            key: key.get_ref().clone(),
            patterns,
        });
    }
    out
}

fn pattern(one: &OnePattern) -> Result<Pattern, String> {
    match one {
        OnePattern::Number(n) => Ok(Pattern::Exact(n.to_string())),
        OnePattern::Text(s) if !s.contains(['*', '?', '[', '{']) => Ok(Pattern::Exact(s.clone())),
        OnePattern::Text(s) => globset::Glob::new(s)
            .map(|g| Pattern::Glob(s.clone(), g.compile_matcher()))
            .map_err(|e| format!("{s:?} is not a glob: {e}")),
        OnePattern::Regex { regex } => regex::Regex::new(&format!("^(?:{regex})$"))
            .map(Pattern::Regex)
            .map_err(|e| {
                format!(
                    "{regex:?} is not a regular expression: {}",
                    e.to_string().lines().last().unwrap_or("")
                )
            }),
    }
}

fn no_such_key(key: &str, events: &[&EventSpec]) -> String {
    let carried: Vec<&str> = {
        let mut all: Vec<_> = events.iter().flat_map(|e| e.metadata()).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    format!(
        "no event of {} carries metadata {key:?} (they carry: {})",
        events_text(events),
        carried.join(", ")
    )
}

fn events_text(events: &[&EventSpec]) -> String {
    events.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// The factor from a measurement's unit to the unit a definition names.
fn conversion(from: Unit, to: &str) -> Result<f64, String> {
    const TIME: &[(&str, f64)] = &[
        ("nanosecond", 1e-9),
        ("microsecond", 1e-6),
        ("millisecond", 1e-3),
        ("second", 1.0),
        ("minute", 60.0),
        ("hour", 3600.0),
    ];
    const SIZE: &[(&str, f64)] = &[
        ("byte", 1.0),
        ("kilobyte", 1e3),
        ("megabyte", 1e6),
        ("gigabyte", 1e9),
        ("kibibyte", 1024.0),
        ("mebibyte", 1_048_576.0),
        ("gibibyte", 1_073_741_824.0),
    ];
    let (table, base) = match from {
        Unit::Second => (TIME, "second"),
        Unit::Byte => (SIZE, "byte"),
        Unit::Dimensionless => return Err("the measurement is a plain number and has no unit to convert".into()),
    };
    let singular = to.strip_suffix('s').unwrap_or(to);
    match table.iter().find(|(name, _)| *name == singular) {
        Some((_, factor)) => Ok(1.0 / factor),
        None => {
            let names: Vec<_> = table.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "unit {to:?} is not a unit of the measurement, which is in {base}s; use one of {}",
                names.join(", ")
            ))
        }
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_within_their_dimension() {
        assert_eq!(conversion(Unit::Second, "millisecond"), Ok(1e3));
        assert_eq!(conversion(Unit::Second, "milliseconds"), Ok(1e3));
        assert_eq!(conversion(Unit::Byte, "kibibyte"), Ok(1.0 / 1024.0));
        assert!(conversion(Unit::Second, "byte").unwrap_err().contains("in seconds"));
        assert!(conversion(Unit::Dimensionless, "second").is_err());
    }

    #[test]
    fn names_follow_prometheus() {
        assert!(is_metric_name("a:b_c1"));
        assert!(!is_metric_name("1a"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("_x") && !is_label_name("__x") && !is_label_name("a.b"));
    }
}

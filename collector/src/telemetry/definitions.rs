//! Metric definitions, after `telemetry_metrics`: each names the events it is defined on, what
//! to do with each (count it, add or keep a measurement, or put it in a histogram), the
//! metadata keys that become labels, which events to keep or drop, and how many series it
//! may make.
//!
//! Definitions are data: the built-in ones are an embedded file in the syntax users write
//! (`config/builtin_metrics.toml`), and both are checked and built by `config/metric.rs`.
//! This module holds the checked form and how an event is matched against it.
use globset::GlobMatcher;
use regex::Regex;

use super::event::Event;

/// What a definition does with each event it keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Counts events.
    Counter,
    /// Adds up a measurement.
    Sum(Measured),
    /// A gauge holding the latest value of a measurement.
    LastValue(Measured),
    /// A histogram of a measurement.
    Distribution(Measured, Vec<f64>),
}

/// The measurement a kind reads, and the factor that converts it to the metric's unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub measurement: String,
    pub scale: f64,
}

impl Kind {
    pub fn measured(&self) -> Option<&Measured> {
        match self {
            Kind::Counter => None,
            Kind::Sum(m) | Kind::LastValue(m) | Kind::Distribution(m, _) => Some(m),
        }
    }
}

/// One metric defined on one or more events.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDef {
    /// The exposed name; counters and sums end in `_total`.
    pub name: String,
    pub help: String,
    /// The events it is defined on: one, or several that mean the same thing for this
    /// metric (a connection opened by connect() or by accept()).
    pub events: Vec<&'static str>,
    pub kind: Kind,
    /// Metadata keys that become labels, in this order; a missing key is an empty value.
    pub tags: Vec<String>,
    /// Only events every one of these matches are measured.
    pub keep: Vec<Condition>,
    /// Events every one of these matches (and there is one) are not.
    pub drop: Vec<Condition>,
    /// Most label sets; events that would make another are counted as overflow.
    pub max_series: usize,
}

impl MetricDef {
    /// Whether it tags or filters by metadata key `key`.
    pub fn uses(&self, key: &str) -> bool {
        self.tags.iter().any(|t| t == key) || self.keep.iter().chain(&self.drop).any(|c| c.key == key)
    }

    /// Whether `event` passes the keep and drop filters.
    pub fn admits(&self, event: &Event) -> bool {
        let all = |conditions: &[Condition]| conditions.iter().all(|c| c.matches(event));
        all(&self.keep) && (self.drop.is_empty() || !all(&self.drop))
    }
}

/// A metadata key and the values that match it (any of them).
#[derive(Clone, Debug)]
pub struct Condition {
    pub key: String,
    pub patterns: Vec<Pattern>,
}

impl Condition {
    /// A missing key is the empty string, as it is for a tag.
    fn matches(&self, event: &Event) -> bool {
        let value = event
            .metadata(&self.key)
            .map(super::Value::to_label)
            .unwrap_or_default();
        self.patterns.iter().any(|p| p.matches(&value))
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.patterns == other.patterns
    }
}

/// How a metadata value is matched: exactly, by a glob (`*`, `?`, `[a-z]`, `{a,b}`), or by a
/// regular expression that must match the whole value (as Prometheus' relabelling does).
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    Glob(String, GlobMatcher),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Glob(_, glob) => glob.is_match(value),
            Pattern::Regex(re) => re.is_match(value),
        }
    }

    fn source(&self) -> (&'static str, &str) {
        match self {
            Pattern::Exact(s) => ("exact", s),
            Pattern::Glob(s, _) => ("glob", s),
            Pattern::Regex(re) => ("regex", re.as_str()),
        }
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn condition(key: &str, patterns: Vec<Pattern>) -> Condition {
        Condition {
            key: key.into(),
            patterns,
        }
    }

    fn glob(s: &str) -> Pattern {
        Pattern::Glob(s.into(), globset::Glob::new(s).unwrap().compile_matcher())
    }

    fn def(keep: Vec<Condition>, drop: Vec<Condition>) -> MetricDef {
        MetricDef {
            name: "t_total".into(),
            help: "h".into(),
            events: vec!["e"],
            kind: Kind::Counter,
            tags: vec![],
            keep,
            drop,
            max_series: 10,
        }
    }

    #[test]
    fn keep_needs_every_condition_and_drop_removes_what_matches_all_of_its() {
        let event = |comm: &str, pid: u32| Event::new("e", SystemTime::now()).meta("comm", comm).meta("pid", pid);
        let nginx = def(vec![condition("comm", vec![glob("nginx*")])], vec![]);
        assert!(nginx.admits(&event("nginx: worker", 1)));
        assert!(!nginx.admits(&event("curl", 1)));
        let re = Pattern::Regex(Regex::new("^(?:7|8)$").unwrap());
        let not_7_or_8 = def(vec![], vec![condition("pid", vec![re])]);
        assert!(!not_7_or_8.admits(&event("a", 7)));
        assert!(not_7_or_8.admits(&event("a", 78)));
        let either = def(
            vec![condition("comm", vec![Pattern::Exact("a".into()), glob("b?")])],
            vec![
                condition("missing", vec![Pattern::Exact(String::new())]),
                condition("pid", vec![glob("9*")]),
            ],
        );
        assert!(either.admits(&event("a", 1)));
        assert!(either.admits(&event("bc", 1)));
        assert!(!either.admits(&event("bcd", 1)));
        assert!(!either.admits(&event("a", 99)), "both drop conditions match");
    }
}

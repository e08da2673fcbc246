//! The Prometheus and OpenMetrics text the collector serves, read back as samples: name,
//! labels, value, one per line, looked up by name and a subset of labels.
//!
//! Hand-written: the crates that parse the format either group histograms into typed values
//! (losing the `le` label as written, which tests select on) or reject an exposition whose
//! last family has no samples (which the collector serves, e.g. no syscall errors yet).
use std::collections::BTreeMap;

/// One sample of the exposition: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(parse_sample)
                .collect(),
        )
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn select(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample matching, or `None` if there is none; panics if several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.select(name, labels);
        assert!(found.len() <= 1, "{name}{labels:?} matches {} samples", found.len());
        found.first().map(|s| s.value)
    }

    /// The sum over every sample matching (0 when none does).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        // From +0: an empty `sum()` of f64 is -0, which a report would show.
        self.select(name, labels).iter().fold(0.0, |n, s| n + s.value)
    }
}

/// A sample's value, 0 when the series does not exist (yet).
pub fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels).unwrap_or(0.0)
}

fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_once(' ').unwrap_or((line, "")),
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find("} ").or_else(|| inner.rfind('}')).expect("closing brace");
        for pair in split_labels(&inner[..end]) {
            let (k, v) = pair.split_once('=').expect("label=value");
            labels.insert(
                k.to_owned(),
                v.trim_matches('"').replace("\\\"", "\"").replace("\\\\", "\\"),
            );
        }
        rest = &inner[end + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Splits `a="x",b="y,z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_samples() {
        let m = Metrics::parse(
            "# TYPE x counter\nx_total{target=\"a,b\",syscall=\"read\"} 12\nup 1\nh_bucket{le=\"+Inf\"} 3\n# EOF\n",
        );
        assert_eq!(
            m.value("x_total", &[("target", "a,b"), ("syscall", "read")]),
            Some(12.0)
        );
        assert_eq!(m.value("up", &[]), Some(1.0));
        assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(m.value("x_total", &[("target", "c")]), None);
    }

    #[test]
    fn families_without_samples_and_escaped_label_values_parse() {
        let m = Metrics::parse(concat!(
            "# HELP e_total None yet.\n# TYPE e_total counter\n",
            "# HELP g A gauge.\n# TYPE g gauge\n",
            "g{path=\"C:\\\\dir\",says=\"a \\\"b\\\" c\"} 2\n",
            "# HELP last_total None yet.\n# TYPE last_total counter\n",
        ));
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.value("g", &[("path", "C:\\dir"), ("says", "a \"b\" c")]), Some(2.0));
    }
}

//! The exposition formats of `/metrics`: OpenMetrics text (what prometheus-client encodes,
//! served to scrapers that ask for it) and the classic Prometheus text format.
use prometheus_client::{
    encoding::{EncodeCounterValue, MetricEncoder, NoLabelSet},
    registry::Registry,
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
                out.extend([prefix, name, "_total ", rest]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail, and the collectors' own errors are counted, not
    // returned; an error here would leave the text cut short, which a scraper rejects.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!("encoding /metrics failed: {e}");
    }
    out
}

/// Encodes one counter sample, without an exemplar.
pub fn counter(mut metric: MetricEncoder, value: &impl EncodeCounterValue) -> Result<(), std::fmt::Error> {
    metric.encode_counter::<NoLabelSet, _, u64>(value, None)
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
}

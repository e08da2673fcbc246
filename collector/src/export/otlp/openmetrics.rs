//! The agent's own OpenMetrics text (what `/metrics` serves) read back into families, for
//! the OTLP metrics push: one encoding of every metric the agent has, so that what is pushed
//! is exactly what is scraped.
//!
//! Written here rather than taken from a crate: `prometheus-parse` splits label values on
//! `,` and `=` (a route or a cgroup path may hold either) and keeps no `# UNIT`, and
//! prometheus-client's structured (protobuf) encoding needs `protoc` at build time and a
//! second prost. The input is prometheus-client's output, so this reads that grammar only:
//! `# HELP`/`# TYPE`/`# UNIT` lines, then samples `name{k="v",...} value`, label values
//! escaped with `\\`, `\"` and `\n`.

/// A metric family: its name (without a counter's `_total`), type, unit and samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// What follows the family's name: `_total`, `_bucket`, `_sum`, `_count`, `_info`, or "".
    pub suffix: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The value as written, when it is an integer (counters of events are).
    pub int: Option<i64>,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The families of `text`, in order; a line that does not parse is skipped and counted in
/// the second value (none should: the text is ours).
pub fn parse(text: &str) -> (Vec<Family>, usize) {
    let mut families: Vec<Family> = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(what), Some(name)) = (parts.next(), parts.next()) else {
                continue; // # EOF
            };
            let rest = parts.next().unwrap_or_default();
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family {
                    name: name.to_owned(),
                    ..Family::default()
                });
            }
            let Some(family) = families.last_mut() else { continue };
            match what {
                "HELP" => family.help = unescape(rest),
                "TYPE" => rest.clone_into(&mut family.kind),
                "UNIT" => rest.clone_into(&mut family.unit),
                _ => {}
            }
            continue;
        }
        match (families.last_mut(), sample(line)) {
            (Some(family), Some((name, sample))) if name.starts_with(family.name.as_str()) => {
                family.samples.push(Sample {
                    suffix: name[family.name.len()..].to_owned(),
                    ..sample
                });
            }
            _ if line.is_empty() => {}
            _ => bad += 1,
        }
    }
    (families, bad)
}

/// `name{labels} value`: the sample's full name and the rest of it.
fn sample(line: &str) -> Option<(&str, Sample)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = inside.split_once("=\"")?;
            let (value, after_value) = quoted(after_key)?;
            labels.push((key.trim_start_matches(',').to_owned(), value));
            inside = after_value.strip_prefix(',').unwrap_or(after_value);
        }
    }
    let text = rest.trim_start().split(' ').next()?;
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().ok()?,
    };
    let sample = Sample {
        suffix: String::new(),
        labels,
        value,
        int: text.parse().ok(),
    };
    Some((name, sample))
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Some((unescape(&text[..i]), &text[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        metrics::{counter::Counter, family::Family as Counters},
        registry::Registry,
    };

    use super::*;
    use crate::telemetry::exposition_text::LabelValue;

    #[test]
    fn what_the_registry_encodes_reads_back_with_its_label_values_whole() {
        let raw = "system-serial\\x2dgetty.slice \"a,b=c\"\nend";
        let mut registry = Registry::default();
        let family = Counters::<Vec<(String, LabelValue<String>)>, Counter>::default();
        family
            .get_or_create(&vec![("cgroup".into(), LabelValue(raw.into()))])
            .inc_by(3);
        registry.register("units", "Units.", family);
        let (families, bad) = parse(&crate::export::exposition::encode(&registry));
        assert_eq!(bad, 0);
        let sample = &families[0].samples[0];
        assert_eq!((sample.label("cgroup"), sample.int), (Some(raw), Some(3)));
    }

    #[test]
    #[allow(clippy::float_cmp)] // counts, exact
    fn families_keep_type_unit_help_and_exact_labels() {
        let text = "# HELP a_calls Calls \\\\ done.\n# TYPE a_calls counter\n\
                    a_calls_total{target=\"web\",route=\"/a,b=c\",q=\"say \\\"hi\\\"\"} 3\n\
                    # HELP d_seconds Time.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\n\
                    d_seconds_bucket{le=\"0.5\"} 1\nd_seconds_bucket{le=\"+Inf\"} 2\n\
                    d_seconds_sum 0.75\nd_seconds_count 2\n# HELP empty Nothing yet.\n# TYPE empty gauge\n# EOF\n";
        let (families, bad) = parse(text);
        assert_eq!(bad, 0);
        assert_eq!(families.len(), 3);
        let calls = &families[0];
        assert_eq!((calls.name.as_str(), calls.kind.as_str()), ("a_calls", "counter"));
        assert_eq!(calls.help, "Calls \\ done.");
        assert_eq!(calls.samples[0].suffix, "_total");
        assert_eq!(calls.samples[0].label("route"), Some("/a,b=c"));
        assert_eq!(calls.samples[0].label("q"), Some("say \"hi\""));
        assert_eq!(calls.samples[0].int, Some(3));
        let d = &families[1];
        assert_eq!((d.unit.as_str(), d.samples.len()), ("seconds", 4));
        assert_eq!(d.samples[1].value, 2.0);
        assert_eq!(d.samples[1].label("le"), Some("+Inf"));
        assert_eq!((d.samples[2].suffix.as_str(), d.samples[2].value), ("_sum", 0.75));
        assert!(families[2].samples.is_empty());
    }
}

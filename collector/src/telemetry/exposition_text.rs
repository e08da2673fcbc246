//! Text that goes into the exposition from data: label values (target names, cgroup paths,
//! comms, paths) and a user's HELP text, escaped as the Prometheus and OpenMetrics text
//! formats require (`\\`, `\"` in label values, `\n`). prometheus-client 0.24 writes both as
//! they are, so a systemd unit's `\x2d` or a `"` in a comm would make the line invalid.
use std::{borrow::Cow, fmt::Write as _};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value, escaped when encoded.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelValue<T>(pub T);

impl<T: AsRef<str>> EncodeLabelValue for LabelValue<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&escape(self.0.as_ref(), true))
    }
}

/// HELP text escaped (`\\` and newlines; a quote stays).
pub fn help(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

fn escape(text: &str, quotes: bool) -> Cow<'_, str> {
    if !text.contains(['\\', '\n', '"']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        metrics::{counter::Counter, family::Family},
        registry::Registry,
    };

    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_in_the_exposition() {
        let mut registry = Registry::default();
        let family = Family::<Vec<(String, LabelValue<String>)>, Counter>::default();
        family
            .get_or_create(&vec![(
                "cgroup".into(),
                LabelValue(r#"system-a\x2db.slice "q""#.into()),
            )])
            .inc();
        registry.register("x", help("a \\ b\nc"), family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"x_total{cgroup="system-a\\x2db.slice \"q\""} 1"#),
            "{text}"
        );
        // (register() ends the help with a period)
        assert!(text.contains("# HELP x a \\\\ b\\nc.\n"), "{text}");
    }
}

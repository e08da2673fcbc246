//! The settings of a config file are the flags: a top-level key is a flag's long name with
//! `_` for `-` and `.` (`series_ttl`, `web_enable_reload`), its value what the flag takes (an
//! array for a repeatable flag). Each is checked by the flag's own parser, and becomes
//! command-line arguments placed before the user's, unless the command line or the
//! environment set that flag: those override the file.
use std::{ffi::OsString, ops::Range};

use clap::{Arg, ArgAction, ArgMatches, Command, parser::ValueSource};
use toml::{Spanned, de::DeValue};

/// Flags a file cannot set: the file itself, and the ones that print and exit.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// One checked setting: the flag it sets and the arguments that say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    arg_id: String,
    args: Vec<OsString>,
}

impl Setting {
    /// The command-line arguments it stands for.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }
}

/// The key a file uses for a flag.
pub fn key_of(long: &str) -> String {
    long.replace(['-', '.'], "_")
}

/// Checks `key = value` against the flag it names; the message says what is wrong.
pub fn setting(
    cmd: &Command,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue>,
) -> Result<Setting, (Range<usize>, String)> {
    let name = key.get_ref();
    let arg = cmd
        .get_arguments()
        .find(|a| {
            a.get_long()
                .is_some_and(|l| key_of(l) == *name && !NOT_IN_FILE.contains(&l))
        })
        .ok_or_else(|| {
            let keys: Vec<String> = cmd
                .get_arguments()
                .filter_map(Arg::get_long)
                .filter(|l| !NOT_IN_FILE.contains(l))
                .map(key_of)
                .collect();
            (
                key.span(),
                format!(
                    "unknown key {name:?}; a config may set {}, builtin_metrics and [[metric]]",
                    keys.join(", ")
                ),
            )
        })?;
    let long = arg.get_long().unwrap_or_default();
    let at_value = |message: String| (value.span(), message);
    let args = if matches!(arg.get_action(), ArgAction::SetTrue) {
        match value.get_ref() {
            DeValue::Boolean(true) => vec![OsString::from(format!("--{long}"))],
            DeValue::Boolean(false) => vec![],
            other => return Err(at_value(format!("{name} is true or false, not a {}", other.type_str()))),
        }
    } else {
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let values: Vec<&Spanned<DeValue>> = match value.get_ref() {
            DeValue::Array(items) if repeatable => items.iter().collect(),
            DeValue::Array(_) => return Err(at_value(format!("{name} takes one value, not an array"))),
            _ => vec![value],
        };
        let mut args = Vec::new();
        for item in values {
            let text = scalar(item.get_ref()).ok_or_else(|| {
                (
                    item.span(),
                    format!("{name} takes a string or a number, not a {}", item.get_ref().type_str()),
                )
            })?;
            if let Some(delimiter) = arg.get_value_delimiter()
                && text.contains(delimiter)
            {
                return Err((
                    item.span(),
                    format!(
                        "{text:?} contains {delimiter:?}, which --{long} splits values on; give each value as an element of an array"
                    ),
                ));
            }
            check_value(arg, &text).map_err(|message| (item.span(), message))?;
            args.push(OsString::from(format!("--{long}={text}")));
        }
        args
    };
    Ok(Setting {
        key: name.to_string(),
        arg_id: arg.get_id().to_string(),
        args,
    })
}

fn scalar(value: &DeValue) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) if i.radix() == 10 => Some(i.as_str().replace('_', "")),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        _ => None,
    }
}

/// Runs the flag's own parser on `value`: the same check, and the same message, as on the
/// command line. The flag is rebuilt alone so that what it requires of others does not apply.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_default();
    let mut alone = Arg::new("value")
        .long(long.to_owned())
        .value_parser(arg.get_value_parser().clone());
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.to_vec());
    }
    Command::new("collector")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(drop)
        .map_err(|e| {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        })
}

/// The command line with the file's settings before the user's arguments, leaving out each
/// flag the command line or the environment already set (`matches`: the user's alone).
pub fn merge(args: &[OsString], matches: &ArgMatches, settings: &[Setting]) -> Vec<OsString> {
    let mut merged: Vec<OsString> = args.iter().take(1).cloned().collect();
    for setting in settings {
        let given = matches!(
            matches.value_source(&setting.arg_id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !given {
            merged.extend(setting.args.iter().cloned());
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    merged
}

/// Settings that differ between two loads of a file, by key: what a reload cannot apply.
pub fn changed(before: &[Setting], after: &[Setting]) -> Vec<String> {
    let args = |settings: &[Setting], key: &str| settings.iter().find(|s| s.key == key).map(|s| s.args.clone());
    let mut keys: Vec<String> = before.iter().chain(after).map(|s| s.key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.retain(|k| args(before, k) != args(after, k));
    keys
}

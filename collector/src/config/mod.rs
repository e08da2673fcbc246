//! The config file (`--config`, TOML): every flag as a setting (`flags`), and `[[metric]]`
//! definitions (`metric`), with the built-in definitions an embedded file of the same syntax
//! (`builtin_metrics.toml`). Every problem is reported at its place (`source`), by
//! `collector check-config`, at start-up and on reload (`reload`) alike.
pub mod flags;
pub mod metric;
pub mod reload;
pub mod source;

use std::{
    ffi::OsString,
    ops::Range,
    path::{Path, PathBuf},
};

use clap::{CommandFactory as _, FromArgMatches as _};
use serde::{Deserialize as _, de::IntoDeserializer as _};
use toml::de::{DeTable, DeValue};

use self::{
    flags::Setting,
    metric::MetricSpec,
    source::{Problems, Source},
};
use crate::{
    cli::{Cli, Command, Conflict},
    export,
    telemetry::definitions::MetricDef,
};

const BUILTIN: &str = include_str!("builtin_metrics.toml");

/// A config file, checked.
#[derive(Debug)]
pub struct FileConfig {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
    pub builtin_metrics: bool,
    /// The user's definitions.
    pub metrics: Vec<MetricDef>,
}

impl FileConfig {
    /// Every definition to load: the built-in ones (unless turned off), then the user's.
    pub fn definitions(&self) -> Result<Vec<MetricDef>, Problems> {
        let builtin = if self.builtin_metrics { builtin()? } else { Vec::new() };
        Ok(builtin.into_iter().chain(self.metrics.iter().cloned()).collect())
    }
}

/// The built-in definitions. A unit test checks the embedded file; were it broken, the agent
/// would refuse to start rather than run without them.
pub fn builtin() -> Result<Vec<MetricDef>, Problems> {
    let source = Source {
        path: "collector/src/config/builtin_metrics.toml".into(),
        text: BUILTIN.into(),
    };
    parse(&source, &Cli::command(), &[]).map(|file| file.metrics)
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<FileConfig, Problems> {
    let source = Source::read(path)?;
    let taken: Vec<String> = builtin()?.into_iter().map(|d| d.name).collect();
    let mut file = parse(&source, &Cli::command(), &taken)?;
    file.path = path.to_path_buf();
    Ok(file)
}

/// Checks `source`; `taken` are definition names a user's may not reuse (the built-ins,
/// when they are on).
fn parse(source: &Source, cmd: &clap::Command, taken: &[String]) -> Result<FileConfig, Problems> {
    let table = DeTable::parse(&source.text).map_err(|e| Problems(vec![source.toml_error(&e)]))?;
    let mut problems = Vec::new();
    let mut file = FileConfig {
        path: PathBuf::from(&source.path),
        settings: Vec::new(),
        builtin_metrics: true,
        metrics: Vec::new(),
    };
    let mut names: Vec<(String, Range<usize>)> = Vec::new();
    let mut keys: Vec<(String, Range<usize>)> = Vec::new();
    for (key, value) in table.into_inner() {
        match key.get_ref().as_ref() {
            "metric" => {
                let DeValue::Array(tables) = value.get_ref() else {
                    problems.push(source.at(Some(value.span()), "metric is an array of tables: write [[metric]]"));
                    continue;
                };
                for table in tables.clone() {
                    match MetricSpec::deserialize(table.into_deserializer()) {
                        Ok(spec) => {
                            let span = spec.name_span();
                            if let Some(def) = spec.build(source, &mut problems) {
                                names.push((def.name.clone(), span));
                                file.metrics.push(def);
                            }
                        }
                        Err(e) => problems.push(source.toml_error(&e)),
                    }
                }
            }
            "builtin_metrics" => match value.get_ref() {
                DeValue::Boolean(on) => file.builtin_metrics = *on,
                _ => problems.push(source.at(Some(value.span()), "builtin_metrics is true or false")),
            },
            _ => match flags::setting(cmd, &key, &value) {
                Ok(setting) => {
                    keys.push((setting.key.clone(), key.span()));
                    file.settings.push(setting);
                }
                Err((span, message)) => problems.push(source.at(Some(span), message)),
            },
        }
    }
    let taken: &[String] = if file.builtin_metrics { taken } else { &[] };
    let served = export::served_names();
    for (i, (name, span)) in names.iter().enumerate() {
        let family = stem(name);
        if names[..i].iter().any(|(other, _)| stem(other) == family) || taken.iter().any(|t| stem(t) == family) {
            problems.push(source.at(
                Some(span.clone()),
                format!("metric {name:?} is defined twice (or as another's _total, _bucket, _count or _sum)"),
            ));
        } else if served.iter().any(|s| stem(s) == family) {
            problems.push(source.at(
                Some(span.clone()),
                format!("metric {name:?} is a name the collector serves already; choose another"),
            ));
        }
    }
    if problems.is_empty()
        && let Some(conflict) = conflict(cmd, &file.settings)
    {
        let key = flags::key_of(conflict.flag);
        let span = keys.iter().find(|(k, _)| *k == key).map(|(_, span)| span.clone());
        problems.push(source.at(span, conflict.message));
    }
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(Problems::in_file_order(problems, source))
    }
}

/// What [`Cli::check`] finds in the file's settings alone, so that `check-config` and a
/// reload refuse what a start would. A file need not name a target (the command line may),
/// but the parse wants one: a placeholder `--pid 1` stands in, which the check never reads.
fn conflict(cmd: &clap::Command, settings: &[Setting]) -> Option<Conflict> {
    let mut args = vec![OsString::from("collector")];
    args.extend(settings.iter().flat_map(Setting::args).cloned());
    if !settings
        .iter()
        .any(|s| ["pid", "cgroup", "cgroup_pattern"].contains(&s.key.as_str()))
    {
        args.extend(["--pid", "1"].map(OsString::from));
    }
    let matches = cmd.clone().try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()?.check().err()
}

/// What a name is in the exposition with its suffixes off: two metrics with one stem would
/// mix their samples (`x_total` and `x`, a distribution `x` and a gauge `x_count`).
fn stem(name: &str) -> &str {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Cli>, Option<FileConfig>),
    /// `collector check-config FILE`
    Check(PathBuf),
}

/// Why the command line cannot run; each is exit code 2.
#[derive(Debug)]
pub enum StartError {
    /// clap's own message (and `--help`, `--version`, which exit 0).
    Flags(clap::Error),
    Config(Problems),
    Usage(String),
}

/// The flags, with the config file's settings under them when `--config` names one.
pub fn from_args(args: &[OsString]) -> Result<Invocation, StartError> {
    let cmd = Cli::command();
    let matches = cmd.clone().try_get_matches_from(args).map_err(StartError::Flags)?;
    let cli = Cli::from_arg_matches(&matches).map_err(StartError::Flags)?;
    if let Some(Command::CheckConfig { file }) = cli.command {
        return Ok(Invocation::Check(file));
    }
    let Some(path) = cli.config.clone() else {
        cli.check().map_err(|c| StartError::Usage(c.message))?;
        return Ok(Invocation::Run(Box::new(cli), None));
    };
    let file = load(&path).map_err(StartError::Config)?;
    let merged = flags::merge(args, &matches, &file.settings);
    let matches = cmd.try_get_matches_from(merged).map_err(StartError::Flags)?;
    let cli = Cli::from_arg_matches(&matches).map_err(StartError::Flags)?;
    cli.check().map_err(|c| StartError::Usage(c.message))?;
    if cli.pids.is_empty() && cli.cgroups.is_empty() && cli.cgroup_patterns.is_empty() {
        return Err(StartError::Usage(format!(
            "no target: {} sets none of pid, cgroup and cgroup_pattern; add one there or give --pid, --cgroup or --cgroup-pattern",
            path.display()
        )));
    }
    Ok(Invocation::Run(Box::new(cli), Some(file)))
}

/// `collector check-config FILE`: what it found, or every problem.
pub fn check(path: &Path) -> Result<String, Problems> {
    let file = load(path)?;
    let keys: Vec<&str> = file.settings.iter().map(|s| s.key.as_str()).collect();
    Ok(format!(
        "{}: ok: {} setting(s) ({}), {} metric definition(s), built-in metrics {}",
        path.display(),
        keys.len(),
        keys.join(", "),
        file.metrics.len(),
        if file.builtin_metrics { "on" } else { "off" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::families::FAMILIES;

    #[test]
    fn every_metric_of_a_probe_family_is_exported_and_claimed_once() {
        let builtin = builtin().unwrap();
        let exported: Vec<&str> = export::kernel_metrics::KERNEL_METRICS
            .iter()
            .map(|m| m.name)
            .chain(builtin.iter().map(|d| d.name.as_str()))
            .collect();
        let claimed: Vec<&str> = FAMILIES.iter().flat_map(|f| f.metrics.iter().copied()).collect();
        for name in &claimed {
            assert_eq!(
                claimed.iter().filter(|n| *n == name).count(),
                1,
                "{name} in two families"
            );
            assert!(exported.contains(name), "{name} is claimed but not exported");
        }
        // The map-error counter is the agent's own health, fed by every family.
        for name in exported.iter().filter(|n| **n != "collector_bpf_map_errors_total") {
            assert!(claimed.contains(name), "{name} is exported but no family feeds it");
        }
    }

    #[test]
    fn the_builtin_metrics_file_is_valid_and_defines_the_builtin_metrics() {
        let source = Source {
            path: "builtin_metrics.toml".into(),
            text: BUILTIN.into(),
        };
        let file = parse(&source, &Cli::command(), &[]).unwrap();
        assert!(file.settings.is_empty());
        let names: Vec<_> = file.metrics.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "collector_process_starts_total",
                "collector_process_execs_total",
                "collector_process_exits_total",
                "collector_process_lifetime_seconds",
                "collector_oom_kills_total",
                "collector_tcp_connections_opened_total",
                "collector_tcp_connect_errors_total",
                "collector_tcp_connect_duration_seconds",
                "collector_tcp_connection_duration_seconds",
            ]
        );
    }
}

//! Live reload (SIGHUP, `POST /-/reload`): the file is read and checked again, targets
//! included; if it is good, the targets change (`targets/retarget.rs`) and the metric
//! definitions are replaced (unchanged ones keep their values), and the kernel programs stay
//! as they are. A bad file is rejected whole: the errors are logged and the running config
//! stays. Other settings (flags) apply at the next start: a changed one is logged.
use std::{
    ffi::OsString,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{
    FileConfig, Invocation, StartError,
    flags::{self, Setting},
    from_args,
};
use crate::{
    sync::lock,
    targets::{Plan, Request, Retargeter},
    telemetry::{Telemetry, definitions::MetricDef, event_metrics::EventMetrics},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `collector_config_last_reload_successful` and `collector_config_reloads_total{result}`,
/// as Prometheus names its own.
#[derive(Clone, Debug, Default)]
pub struct ReloadStats {
    last_successful: Gauge,
    reloads: Family<ResultLabels, Counter>,
}

impl ReloadStats {
    pub fn register(registry: &mut Registry) -> ReloadStats {
        let stats = ReloadStats::default();
        stats.last_successful.set(1);
        for result in ["success", "failure"] {
            drop(stats.reloads.get_or_create(&ResultLabels { result }));
        }
        registry.register(
            "collector_config_last_reload_successful",
            "Whether the last reload of the config file succeeded (1) or was rejected (0); 1 before any",
            stats.last_successful.clone(),
        );
        registry.register(
            "collector_config_reloads",
            "Reloads of the config file (SIGHUP, POST /-/reload), by result: success or failure",
            stats.reloads.clone(),
        );
        stats
    }

    fn count(&self, ok: bool) {
        self.last_successful.set(i64::from(ok));
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

/// The file keys a reload applies to the running targets rather than at the next start
/// (the names of cgroup targets are looked up again with the reloaded `target_name` and
/// `host_root`; `target_labels` are the label set of every series, fixed at start).
const TARGET_KEYS: &[&str] = &["pid", "cgroup", "cgroup_pattern", "target_name", "host_root"];

/// Reloads one config file into the running metrics and targets.
#[derive(Debug)]
pub struct Reloader {
    /// The agent's own command line: a reload merges the file under it again, as at start,
    /// so a flag given there still overrides the file.
    args: Vec<OsString>,
    metrics: Arc<EventMetrics>,
    /// Told when the definitions change what is demanded.
    telemetry: Arc<Telemetry>,
    retargeter: Retargeter,
    /// The settings the agent started with.
    started_with: Vec<Setting>,
    /// Fixed at start: the kernel's maps are sized for it.
    max_targets: usize,
    /// Why the cgroups family is off or disabled, if it is: then a reload may not
    /// name cgroups either.
    cgroups_off: Option<String>,
    stats: ReloadStats,
    /// One reload at a time: SIGHUP and HTTP may come together.
    running: Mutex<()>,
}

impl Reloader {
    pub fn new(
        file: &FileConfig,
        (max_targets, cgroups_off): (usize, Option<String>),
        (metrics, telemetry): (Arc<EventMetrics>, Arc<Telemetry>),
        retargeter: Retargeter,
        stats: ReloadStats,
    ) -> Reloader {
        Reloader {
            args: std::env::args_os().collect(),
            metrics,
            telemetry,
            retargeter,
            started_with: file.settings.clone(),
            max_targets,
            cgroups_off,
            stats,
            running: Mutex::new(()),
        }
    }

    /// Reloads; says what changed, or why the file was rejected.
    pub fn reload(&self) -> Result<String, String> {
        let _one = lock(&self.running);
        let (file, definitions, plan) = match self.check() {
            Ok(checked) => checked,
            Err(problems) => {
                self.stats.count(false);
                tracing::error!("config reload rejected; the running config stays:\n{problems}");
                return Err(problems);
            }
        };
        let mut restart = flags::changed(&self.started_with, &file.settings);
        restart.retain(|key| !TARGET_KEYS.contains(&key.as_str()));
        if !restart.is_empty() {
            tracing::warn!(
                settings = restart.join(", "),
                "config settings changed; they apply at the next start"
            );
        }
        let targets = self.retargeter.apply(plan).inspect_err(|e| {
            self.stats.count(false);
            tracing::error!("config reload failed: {e}");
        })?;
        let replaced = self.metrics.replace(definitions);
        self.telemetry.demand_changed();
        let summary = format!(
            "config reloaded: {} metric definition(s) kept, {} added, {} removed; targets {} added, {} removed",
            replaced.kept.len(),
            replaced.added.len(),
            replaced.removed.len(),
            targets.added.len(),
            targets.removed.len(),
        );
        // A target step the host refused (a map write, --max-targets) leaves the rest
        // applied: the reload counts as failed and says which.
        if !targets.errors.is_empty() {
            self.stats.count(false);
            let errors = targets.errors.join("; ");
            tracing::error!(targets_added = ?targets.added, targets_removed = ?targets.removed, "{summary}, except: {errors}");
            return Err(format!("{summary}, except: {errors}"));
        }
        self.stats.count(true);
        tracing::info!(
            added = ?replaced.added,
            removed = ?replaced.removed,
            targets_added = ?targets.added,
            targets_removed = ?targets.removed,
            "{summary}"
        );
        Ok(summary)
    }

    /// The file as it is now, merged under the command line and checked whole: its
    /// definitions and its targets against the host. Nothing changes yet.
    fn check(&self) -> Result<(FileConfig, Vec<MetricDef>, Plan), String> {
        let (cli, file) = match from_args(&self.args) {
            Ok(Invocation::Run(cli, Some(file))) => (cli, file),
            Ok(_) => return Err("the command line names no config file".to_owned()),
            Err(StartError::Config(problems)) => return Err(problems.to_string()),
            Err(StartError::Flags(e)) => return Err(e.render().to_string().trim_end().to_owned()),
            Err(StartError::Usage(message)) => return Err(message),
        };
        let definitions = file.definitions().map_err(|p| p.to_string())?;
        if let Some(why) = &self.cgroups_off
            && !(cli.cgroups.is_empty() && cli.cgroup_patterns.is_empty())
        {
            return Err(format!(
                "cgroup and cgroup_pattern need the cgroups probe family, which is off ({why}); name the processes with pid instead"
            ));
        }
        let plan = self
            .retargeter
            .check(&Request {
                pids: &cli.pids,
                cgroups: &cli.cgroups,
                patterns: &cli.cgroup_patterns,
                max_targets: self.max_targets,
                naming: &cli.naming(),
            })
            .map_err(|e| e.to_string())?;
        Ok((file, definitions, plan))
    }
}

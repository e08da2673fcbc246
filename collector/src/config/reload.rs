//! Live reload (SIGHUP, `POST /-/reload`): the file is read and checked again; if it is good,
//! the metric definitions are replaced (unchanged ones keep their values) and the kernel
//! programs stay as they are. A bad file is rejected whole: the errors are logged and the
//! running config stays. Settings (flags) apply at the next start: a changed one is logged.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{
    FileConfig,
    flags::{self, Setting},
    load,
};
use crate::{sync::lock, telemetry::event_metrics::EventMetrics};

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

/// Reloads one config file into the running metrics.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    metrics: Arc<EventMetrics>,
    /// The settings the agent started with.
    started_with: Vec<Setting>,
    stats: ReloadStats,
    /// One reload at a time: SIGHUP and HTTP may come together.
    running: Mutex<()>,
}

impl Reloader {
    pub fn new(file: &FileConfig, metrics: Arc<EventMetrics>, stats: ReloadStats) -> Reloader {
        Reloader {
            path: file.path.clone(),
            metrics,
            started_with: file.settings.clone(),
            stats,
            running: Mutex::new(()),
        }
    }

    /// Reloads; says what changed, or why the file was rejected.
    pub fn reload(&self) -> Result<String, String> {
        let _one = lock(&self.running);
        let loaded = load(&self.path).and_then(|file| Ok((file.definitions()?, file)));
        let (definitions, file) = match loaded {
            Ok(loaded) => loaded,
            Err(problems) => {
                self.stats.count(false);
                tracing::error!("config reload rejected; the running config stays:\n{problems}");
                return Err(problems.to_string());
            }
        };
        let restart = flags::changed(&self.started_with, &file.settings);
        if !restart.is_empty() {
            tracing::warn!(
                settings = restart.join(", "),
                "config settings changed; they apply at the next start"
            );
        }
        let replaced = self.metrics.replace(definitions);
        self.stats.count(true);
        let summary = format!(
            "config reloaded: {} metric definition(s) kept, {} added, {} removed",
            replaced.kept.len(),
            replaced.added.len(),
            replaced.removed.len()
        );
        tracing::info!(added = ?replaced.added, removed = ?replaced.removed, "{summary}");
        Ok(summary)
    }
}

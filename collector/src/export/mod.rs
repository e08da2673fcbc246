//! What the agent serves: the exposition of `/metrics` (`exposition`), the metrics read from
//! kernel maps at scrape time (the table `kernel_metrics`, read by `scrape`), the agent's own
//! metrics (`agent_metrics`), `/health` (`health`), the live event
//! stream (`events`), the HTTP server (`http`, with TLS and basic auth from `web_config`), and the
//! OTLP push (`otlp`).
//!
//! This folder reads the target set, the kernel maps through it, and the telemetry counts;
//! nothing below it calls back up.
pub mod agent_metrics;
pub mod events;
pub mod exposition;
pub mod health;
pub mod http;
pub mod kernel_metrics;
pub mod otlp;
pub mod scrape;
pub mod web_config;

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use prometheus_client::registry::Registry;

use crate::{kernel::families::FAMILIES, targets::Targets, telemetry::Telemetry};

/// What the endpoints read. Fixed after start-up; what changes has its own owner (the
/// target set, the telemetry counts).
#[derive(Debug)]
pub struct Sources {
    pub targets: Targets,
    pub telemetry: Arc<Telemetry>,
    /// Probe name -> attached, as of the end of start-up.
    pub probes: BTreeMap<&'static str, bool>,
    /// Probe families that are off on this kernel, with why.
    pub families_off: BTreeMap<&'static str, String>,
    /// Probe families the user disabled (`--disable-family`), with why.
    pub families_disabled: BTreeMap<&'static str, String>,
    pub started: Instant,
    /// The HTTP duration buckets' upper bounds, in seconds.
    pub http_bounds: Vec<f64>,
    /// `--http-route`: route `i` of the kernel's `HttpKey::route` is `http_routes[i - 1]`.
    pub http_routes: Vec<String>,
    /// With `--otlp-endpoint`: each signal's export counts and state.
    pub otlp: Option<otlp::Signals>,
    /// `--target-labels`: workload fields put beside `target` on the kernel's series.
    pub target_labels: Vec<&'static str>,
}

/// The names of the metrics served at scrape time, which a metric definition may not take.
pub fn served_names() -> Vec<&'static str> {
    // Registered by the telemetry and config modules, beside the definitions.
    const OTHERS: &[&str] = &[
        "collector_metric_series_overflow_total",
        "collector_config_last_reload_successful",
        "collector_config_reloads_total",
    ];
    let kernel = kernel_metrics::KERNEL_METRICS.iter().map(|m| m.name);
    kernel
        .chain(agent_metrics::NAMES.iter().copied())
        .chain(otlp::NAMES.iter().copied())
        .chain(OTHERS.iter().copied())
        .collect()
}

/// Adds the scrape-time collectors to `registry`, which already holds the metrics defined
/// on events.
pub fn register_collectors(registry: &mut Registry, sources: &Sources) {
    let read_errors = Arc::new(AtomicU64::new(0));
    registry.register_collector(Box::new(scrape::KernelCollector {
        targets: sources.targets.clone(),
        read_errors: read_errors.clone(),
        http_bounds: sources.http_bounds.clone(),
        http_routes: sources.http_routes.clone(),
        not_measured: FAMILIES
            .iter()
            .filter(|f| sources.families_off.contains_key(f.name) || sources.families_disabled.contains_key(f.name))
            .flat_map(|f| f.metrics.iter().copied())
            .collect(),
        target_labels: sources.target_labels.clone(),
    }));
    registry.register_collector(Box::new(agent_metrics::AgentCollector {
        targets: sources.targets.clone(),
        telemetry: sources.telemetry.clone(),
        probes: sources.probes.clone(),
        read_errors,
    }));
    if let Some(signals) = &sources.otlp {
        registry.register_collector(Box::new(otlp::OtlpCollector(signals.clone())));
    }
}

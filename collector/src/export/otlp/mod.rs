//! OTLP export (`--otlp-endpoint`): spans of what targets do, the metrics of `/metrics`, and
//! (with `--otlp-logs`) every telemetry event as a log record, pushed to an OpenTelemetry
//! receiver over HTTP/protobuf or gRPC.
//!
//! ```text
//! telemetry bus --> handler "otlp-traces": traces.rs, event -> span --> Queue --> thread: exporter
//!               --> handler "otlp-logs": logs.rs, event -> record  --> Queue --> thread: exporter
//! registry (what /metrics encodes) --> thread, every --otlp-interval: metrics.rs --> request
//! ```
//! Nothing here blocks the agent: handlers only convert and queue, each signal exports on a
//! thread of its own (`batch.rs`), and everything lost is counted in
//! `collector_otlp_dropped_total{signal,reason}`; `/health` is degraded while exports fail.
pub mod batch;
mod logs;
mod metrics;
mod openmetrics;
mod resource;
pub mod settings;
mod traces;
mod transport;

use std::{
    fmt,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry_sdk::{
    logs::{LogExporter as _, SdkLogRecord},
    trace::{SpanData, SpanExporter as _},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use tokio::runtime::Handle;

use self::{
    batch::{DropReason, SignalStats},
    settings::{OtlpArgs, Target},
};
use crate::{
    shutdown::Shutdown,
    telemetry::{DropStage, EventFilter, Telemetry},
};

/// Events that may wait for an OTLP handler's conversion before new ones are dropped
/// (counted as the bus counts them, stage `otlp`).
const HANDLER_QUEUE: usize = 65_536;
/// Spans or records waiting for their export thread (the specification's default queue
/// size); beyond it they are dropped, counted as `queue_full`.
const EXPORT_QUEUE: usize = 2048;
/// How long shutdown waits for the export threads to send what is queued.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// The running export: its threads, and the counts each signal keeps.
pub struct Otlp {
    target: Target,
    /// `--otlp-interval`.
    interval: Option<Duration>,
    resource: opentelemetry_sdk::Resource,
    runtime: Handle,
    signals: Signals,
    /// Each signal's export thread, with its counts.
    threads: Vec<(Arc<SignalStats>, JoinHandle<()>)>,
    stop: Shutdown,
}

/// Each signal's counts and state, read by `/metrics` and `/health`.
pub type Signals = Arc<Vec<Arc<SignalStats>>>;

impl Otlp {
    /// Starts exporting spans (and log records) if `args` name an endpoint, its handlers
    /// attached to `telemetry`: before the probes load, so that no event passes unseen.
    pub fn start(args: &OtlpArgs, telemetry: &Telemetry, runtime: &Handle) -> Result<Option<Otlp>, String> {
        let Some(target) = args.target() else {
            return Ok(None);
        };
        let resource = resource::of(args);
        let stop = Shutdown::new().map_err(|e| format!("cannot make the OTLP stop signal: {e}"))?;
        let mut otlp = Otlp {
            target,
            interval: args.interval.map(Into::into),
            resource,
            runtime: runtime.clone(),
            signals: Arc::new(Vec::new()),
            threads: Vec::new(),
            stop,
        };
        let (target, runtime, resource) = (&otlp.target, &otlp.runtime, &otlp.resource);
        let traces = SignalStats::new("traces");
        let (spans, thread) = batch::spawn(traces.clone(), EXPORT_QUEUE, otlp.stop.clone(), {
            let (target, runtime, resource) = (target.clone(), runtime.clone(), resource.clone());
            move || {
                let (mut exporter, runner) = transport::exporter(&target, &runtime, transport::spans)?;
                exporter.set_resource(&resource);
                Ok(move |spans: Vec<SpanData>| runner.run(exporter.export(spans)).map_err(|e| e.to_string()))
            }
        })?;
        otlp.threads.push((traces.clone(), thread));
        let mut state = traces::Traces::default();
        let filter = EventFilter::matching(traces::EVENTS.iter().copied()).map_err(|e| e.to_string())?;
        telemetry
            .attach("otlp-traces", filter, HANDLER_QUEUE, DropStage::Otlp, move |event| {
                if let Some(span) = state.on_event(event) {
                    spans.push(span);
                }
            })
            .map_err(|e| e.to_string())?;
        let mut signals = vec![traces];
        if args.logs {
            let logs = SignalStats::new("logs");
            let (records, thread) = batch::spawn(logs.clone(), EXPORT_QUEUE, otlp.stop.clone(), {
                let (target, runtime, resource) = (target.clone(), runtime.clone(), resource.clone());
                move || {
                    let (mut exporter, runner) = transport::exporter(&target, &runtime, transport::logs)?;
                    exporter.set_resource(&resource);
                    Ok(move |records: Vec<SdkLogRecord>| logs::export(&exporter, &runner, &records))
                }
            })?;
            otlp.threads.push((logs.clone(), thread));
            let make = logs::Records::default();
            telemetry
                .attach(
                    "otlp-logs",
                    EventFilter::All,
                    HANDLER_QUEUE,
                    DropStage::Otlp,
                    move |event| {
                        records.push(make.of(event));
                    },
                )
                .map_err(|e| e.to_string())?;
            signals.push(logs);
        }
        signals.push(SignalStats::new("metrics"));
        otlp.signals = Arc::new(signals);
        tracing::info!(endpoint = %otlp.target.endpoint, logs = args.logs, "OTLP export on");
        Ok(Some(otlp))
    }

    /// Starts pushing the metrics `registry` encodes every `--otlp-interval` (else
    /// `poll_interval`), cumulative since the agent `started`; once the registry holds every
    /// collector (the end of start-up).
    pub fn push_metrics(
        &mut self,
        registry: Arc<Registry>,
        poll_interval: Duration,
        started: Instant,
    ) -> Result<(), String> {
        let stats = self.signal("metrics").ok_or("no metrics signal")?;
        let push = metrics::Push {
            registry,
            resource: (&self.resource).into(),
            interval: self.interval.unwrap_or(poll_interval),
            started: SystemTime::now() - started.elapsed(),
            stats: stats.clone(),
        };
        let thread = metrics::spawn(push, self.target.clone(), self.runtime.clone(), self.stop.clone())
            .map_err(|e| format!("cannot start the OTLP metrics thread: {e}"))?;
        self.threads.push((stats, thread));
        Ok(())
    }

    fn signal(&self, name: &str) -> Option<Arc<SignalStats>> {
        self.signals.iter().find(|s| s.signal == name).cloned()
    }

    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// Stops the export threads, after the bus's handlers are detached (which ends the
    /// span and log queues): they send what is queued, giving up on it if the receiver
    /// fails, for at most [`SHUTDOWN_WAIT`].
    pub fn shutdown(self) {
        self.stop.trigger();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        for (stats, thread) in self.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(
                    signal = stats.signal,
                    lost = stats.pending(),
                    "the OTLP export did not finish in time: what it had queued is lost"
                );
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    signal: &'static str,
    reason: &'static str,
}

/// The OTLP metrics of `/metrics`: what each signal exported and lost.
#[derive(Debug)]
pub struct OtlpCollector(pub Signals);

/// Their names (which a user's metric definition may not take).
pub const NAMES: &[&str] = &["collector_otlp_exported_total", "collector_otlp_dropped_total"];

impl Collector for OtlpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "collector_otlp_exported",
            "Spans, metric points and log records the OTLP receiver accepted, by signal.",
            None,
            MetricType::Counter,
        )?;
        for s in self.0.iter() {
            let labels = SignalLabels { signal: s.signal };
            super::exposition::counter(family.encode_family(&labels)?, &s.exported())?;
        }
        let mut family = encoder.encode_descriptor(
            "collector_otlp_dropped",
            "Spans, metric points and log records not exported, by signal and reason: queue_full (the \
             backlog reached its bound while the receiver was slow or down), export_failed (the \
             receiver refused them or could not be reached).",
            None,
            MetricType::Counter,
        )?;
        for s in self.0.iter() {
            for (reason, name) in [
                (DropReason::QueueFull, "queue_full"),
                (DropReason::ExportFailed, "export_failed"),
            ] {
                let labels = DropLabels {
                    signal: s.signal,
                    reason: name,
                };
                super::exposition::counter(family.encode_family(&labels)?, &s.dropped(reason))?;
            }
        }
        Ok(())
    }
}

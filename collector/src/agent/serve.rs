//! Serving (after `load`, with the capabilities left): the runtime's signal handlers, the
//! event handlers, the threads that read the kernel and follow the targets, the collectors
//! and the HTTP server; then stopping, in the order that loses nothing.
use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use collector_common::events::EventKind;

use super::{
    failure::{Failure, runtime},
    load::Loaded,
    signals, systemd,
};
use crate::{
    cli::Cli,
    config::{
        self, FileConfig,
        reload::{ReloadStats, Reloader},
    },
    export::{self, Sources, http, otlp::Otlp, web_config::WebConfig},
    kernel::{maps::EventsWanted, probes::Probes, records::DecodeError, ring},
    logging,
    shutdown::Shutdown,
    targets::{self, Targets},
    telemetry::{
        DropStage, Telemetry,
        event_metrics::{EventMetrics, EventMetricsCollector},
        kernel_events, poller,
        process_info::Processes,
        sink,
    },
};

/// How long serving may take to wind down after SIGINT/SIGTERM before we stop anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Events that may wait for the metrics handler before new ones are dropped.
const METRICS_QUEUE: usize = 65_536;

/// Serves what `load` left until SIGINT or SIGTERM, then stops everything. `held`: the
/// signals blocked since start-up, unblocked here once the runtime's handlers are in place.
pub async fn serve(
    cli: Cli,
    file: Option<FileConfig>,
    loaded: Loaded,
    started: Instant,
    held: signals::Held,
) -> Result<(), Failure> {
    let signalled = Shutdown::new().map_err(runtime)?;
    catch_signals(&signalled)?;
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    // Delivered from here to this thread: one that came during start-up is handled now.
    held.release();
    let agent = match start(&cli, file.as_ref(), loaded, started) {
        Ok(agent) => agent,
        Err(_) if signalled.is_triggered() => return Ok(()),
        Err(e) => return Err(e),
    };
    tracing::info!(
        listen = %cli.listen,
        targets = %agent.sources.targets.read().set(),
        startup_ms = started.elapsed().as_millis() as u64,
        "collector ready"
    );
    systemd::ready(&format!(
        "counting {} target(s), serving on {}",
        agent.sources.targets.read().set().len(),
        cli.listen
    ));
    let Running {
        probes,
        workers,
        listener,
        web,
        sources,
        registry,
        reloader,
        otlp,
    } = agent;
    reload_on_hangup(hangups, reloader.clone());
    let reload_over_http = cli.web_enable_reload.then_some(reloader).map(|reloader| {
        let reload: http::Reload = Arc::new(move || match &reloader {
            Some(r) => r.reload(),
            None => Err("the collector was started without --config: there is nothing to reload".into()),
        });
        reload
    });
    let telemetry = sources.telemetry.clone();
    let served = serve_http(listener, web, Arc::new(sources), registry, reload_over_http, &signalled).await;
    systemd::stopping();
    drop(probes); // detaches every link and unloads the programs
    drop(workers); // then the reader drains what the programs wrote before
    telemetry.detach_all(); // lets the sink write what it has queued, and OTLP its spans
    if let Some(otlp) = otlp {
        // Waits (boundedly) for the export threads: off the async workers.
        let _ = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
    }
    served.map_err(runtime)?;
    tracing::info!("stopped; all probes detached");
    Ok(())
}

/// The agent once started. Dropping it detaches everything.
struct Running {
    probes: Probes,
    workers: Workers,
    listener: std::net::TcpListener,
    web: WebConfig,
    sources: Sources,
    registry: Arc<Registry>,
    /// With --config.
    reloader: Option<Arc<Reloader>>,
    /// With --otlp-endpoint.
    otlp: Option<Otlp>,
}

/// The agent's threads (ring-buffer reader, poller, targets watcher) and the one signal that
/// stops them: dropping this triggers it and waits for each.
struct Workers {
    stop: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.trigger();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::warn!("a worker thread panicked");
            }
        }
    }
}

/// Starts what serves: the event handlers, the threads, the collectors. What `load` left is
/// dropped (detached) on failure.
fn start(cli: &Cli, file: Option<&FileConfig>, loaded: Loaded, started: Instant) -> Result<Running, Failure> {
    let Loaded {
        mut probes,
        targets,
        following,
        cgroups_off,
        listener,
        web,
        ring,
        ring_fill,
        sink,
    } = loaded;
    logging::relay_kernel_log(probes.ebpf_mut());
    let (telemetry, event_metrics, mut registry) = start_telemetry(file, sink, &cli.target_labels)?;
    let reload_stats = ReloadStats::register(&mut registry);
    let mut otlp =
        Otlp::start(&cli.otlp, &telemetry, &tokio::runtime::Handle::current()).map_err(|e| runtime(anyhow!(e)))?;
    send_http_events_while_wanted(&telemetry, EventsWanted::take(probes.ebpf_mut()).map_err(runtime)?);

    let mut workers = Workers {
        stop: Shutdown::new().map_err(runtime)?,
        threads: Vec::new(),
    };
    let reader = spawn_reader(
        ring,
        workers.stop.clone(),
        (&targets, &telemetry, &event_metrics),
        cli.http_routes.clone(),
    );
    workers
        .threads
        .push(reader.context("cannot start the ring-buffer reader")?);
    let poll = poller::spawn(
        targets.clone(),
        telemetry.clone(),
        ring_fill,
        cli.poll_interval.into(),
        workers.stop.clone(),
    );
    workers.threads.push(poll.context("cannot start the poller")?);
    let forget = {
        let event_metrics = event_metrics.clone();
        move |name: &str, naming: u64| event_metrics.forget_target(name, naming)
    };
    let (watcher, retargeter) = targets::spawn_watcher(
        &targets,
        following,
        (cli.series_ttl.into(), cli.target_labels.clone()),
        workers.stop.clone(),
        forget,
    )?;
    workers.threads.push(watcher);
    let reloader = file.map(|file| {
        let limits = (cli.max_targets as usize, cgroups_off);
        Arc::new(Reloader::new(
            file,
            limits,
            (event_metrics, telemetry.clone()),
            retargeter,
            reload_stats,
        ))
    });

    let sources = Sources {
        targets,
        telemetry,
        probes: probes.attached().clone(),
        families_off: probes.off().clone(),
        families_disabled: probes.disabled().clone(),
        started,
        http_bounds: cli.http_buckets.0.clone(),
        http_routes: cli.http_routes.clone(),
        otlp: otlp.as_ref().map(Otlp::signals),
        target_labels: cli.target_labels.clone(),
    };
    export::register_collectors(&mut registry, &sources);
    let registry = Arc::new(registry);
    if let Some(otlp) = &mut otlp {
        otlp.push_metrics(registry.clone(), cli.poll_interval.into(), started)
            .map_err(|e| runtime(anyhow!(e)))?;
    }
    Ok(Running {
        probes,
        workers,
        listener,
        web,
        sources,
        registry,
        reloader,
        otlp,
    })
}

/// The ring-buffer reader: each record an event, executed on the bus.
fn spawn_reader(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    stop: Shutdown,
    (targets, telemetry, event_metrics): (&Targets, &Arc<Telemetry>, &Arc<EventMetrics>),
    routes: Vec<String>,
) -> std::io::Result<JoinHandle<()>> {
    let (targets, telemetry, event_metrics) = (targets.clone(), telemetry.clone(), event_metrics.clone());
    let clock = kernel_events::Clock::now();
    let mut processes = Processes::default();
    ring::spawn_reader(ring, stop, move |record| match record {
        Ok(record) => {
            let from_proc = telemetry.shows_all() || event_metrics.uses_proc();
            let view = targets.read();
            let event = kernel_events::to_event(&record, view.set(), &clock, &mut processes, from_proc, &routes);
            drop(view);
            telemetry.execute(event);
        }
        Err(e) => undecodable(&telemetry, &e),
    })
}

/// The kernel sends an `http.request` per request only while a handler takes them: tells it
/// whenever that changes.
fn send_http_events_while_wanted(telemetry: &Telemetry, wanted: EventsWanted) {
    telemetry.on_demand_change(move |t| {
        let http = || t.wants(EventKind::HttpRequest.event_name());
        if let Err(e) = wanted.set(EventKind::HttpRequest, http) {
            tracing::warn!("cannot tell the kernel whether http.request events are wanted: {e}");
        }
    });
}

fn undecodable(telemetry: &Telemetry, e: &DecodeError) {
    tracing::warn!("undecodable ring-buffer record: {e}");
    telemetry.stats().count_dropped("unknown", DropStage::Decode);
}

/// From here a SIGINT or SIGTERM triggers `signalled`.
fn catch_signals(signalled: &Shutdown) -> Result<(), Failure> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let signalled = signalled.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "stopping");
        signalled.trigger();
    });
    Ok(())
}

/// Reloads the config file at each SIGHUP, off the async workers (it reads a file).
fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, reloader: Option<Arc<Reloader>>) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(reloader) = reloader.clone() else {
                tracing::warn!("SIGHUP: the collector was started without --config; there is nothing to reload");
                continue;
            };
            // The result is logged and counted by the reloader.
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    });
}

/// The event bus with the metric definitions attached (the config file's, else the
/// built-in ones; served from the returned registry) and, with `--events`, the sink.
fn start_telemetry(
    file: Option<&FileConfig>,
    sink: Option<sink::Output>,
    target_labels: &[&'static str],
) -> Result<(Arc<Telemetry>, Arc<EventMetrics>, Registry), Failure> {
    let telemetry = Arc::new(Telemetry::new());
    let mut registry = Registry::default();
    let definitions = file
        .map_or_else(config::builtin, FileConfig::definitions)
        .map_err(|problems| {
            runtime(anyhow!(
                "the embedded built-in metric definitions do not parse:\n{problems}"
            ))
        })?;
    let event_metrics = Arc::new(EventMetrics::new(definitions, target_labels));
    registry.register_collector(Box::new(EventMetricsCollector(event_metrics.clone())));
    event_metrics
        .clone()
        .attach(&telemetry, "metrics", METRICS_QUEUE)
        .map_err(runtime)?;
    if let Some(out) = sink {
        sink::attach(&telemetry, out).map_err(runtime)?;
    }
    Ok((telemetry, event_metrics, registry))
}

/// Serves until `signalled`, then gives open connections [`SHUTDOWN_GRACE`] to finish.
async fn serve_http(
    listener: std::net::TcpListener,
    web: WebConfig,
    sources: Arc<Sources>,
    registry: Arc<Registry>,
    reload: Option<http::Reload>,
    signalled: &Shutdown,
) -> anyhow::Result<()> {
    let mut server = tokio::spawn(http::serve(listener, web, sources, registry, reload, signalled.clone()));
    tokio::select! {
        () = signalled.stopped() => {}
        result = &mut server => {
            result.context("HTTP server task failed")?.context("HTTP server failed")?;
            // The server also stops on the signal, and may be the first to notice it.
            if signalled.is_triggered() {
                return Ok(());
            }
            return Err(anyhow!("HTTP server stopped unexpectedly"));
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("open HTTP connections did not close in time; stopping anyway");
    }
    Ok(())
}

//! Start-up, serving and shutdown: the order things happen in, and what each failure says.
//! Wiring only: each step is owned by `kernel/`, `targets/`, `telemetry/` or `export/`.
//!
//! Order matters for exactness:
//! 1. check the input and the host (nothing is loaded yet);
//! 2. load the object and put the named PIDs and cgroups into the kernel's maps;
//! 3. attach the follow families (fork/exec/exit, cgroup moves), so from here the kernel
//!    follows new children and moves;
//! 4. put the processes that existed before step 3 into their targets (descendants of the
//!    named PIDs, members of target cgroups); a process created or moved meanwhile is seen
//!    by one of the two;
//! 5. attach the measuring families (sockets, then syscalls), then serve. Everything counted
//!    happened after this point.
//!
//! SIGINT/SIGTERM are caught from the first step: during start-up they stop it at the next
//! step boundary, later they stop serving; either way the agent detaches everything and exits 0.
//! SIGHUP reloads the config file once serving (one that came during start-up reloads then).
use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use prometheus_client::registry::Registry;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use collector_common::events::EventKind;

use crate::{
    cli::Cli,
    config::{
        self, FileConfig,
        reload::{ReloadStats, Reloader},
    },
    export::{self, Sources, http, otlp::Otlp},
    kernel::{
        btf::KernelLayout,
        families::{CGROUPS, Stage},
        host,
        maps::{EventsWanted, KernelMaps, take_events},
        probes::Probes,
        records::DecodeError,
        ring::{self, RingFill},
    },
    logging,
    shutdown::Shutdown,
    targets::{self, Checked, Request, TargetError, Targets},
    telemetry::{
        DropStage, Telemetry,
        event_metrics::{EventMetrics, EventMetricsCollector},
        kernel_events, poller,
        process_info::Processes,
        sink,
    },
};

/// How the agent failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The user's input is wrong (exit code 2).
    Usage(String),
    /// The host or the kernel refused (exit code 1).
    Runtime(anyhow::Error),
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        if e.is_usage() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Runtime(e.into())
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

/// How long serving may take to wind down after SIGINT/SIGTERM before we stop anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Events that may wait for the metrics handler before new ones are dropped.
const METRICS_QUEUE: usize = 65_536;

pub async fn run(cli: Cli, file: Option<FileConfig>) -> Result<(), Failure> {
    let started = Instant::now();
    let signalled = Shutdown::new().map_err(runtime)?;
    catch_signals(&signalled)?;
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let held = SignalsHeld::here().context("cannot block SIGINT, SIGTERM and SIGHUP while loading")?;
    let started_up = start(&cli, file.as_ref(), started, &signalled);
    drop(held);
    let agent = match started_up {
        Ok(Some(agent)) => agent,
        Ok(None) => {
            tracing::info!("stopped during start-up; nothing is left loaded");
            return Ok(());
        }
        // A step that failed after a signal came: the user asked to stop, and nothing is
        // left loaded either way.
        Err(e) if signalled.is_triggered() => {
            tracing::info!(error = ?e, "stopped during start-up; nothing is left loaded");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        listen = %cli.listen,
        targets = %agent.sources.targets.read().set(),
        startup_ms = started.elapsed().as_millis() as u64,
        "collector ready"
    );
    let Running {
        probes,
        workers,
        listener,
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
    let served = serve(listener, Arc::new(sources), registry, reload_over_http, &signalled).await;
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
    listener: TcpListener,
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

/// Runs steps 1 to 5; `None` when a signal came first.
fn start(
    cli: &Cli,
    file: Option<&FileConfig>,
    started: Instant,
    signalled: &Shutdown,
) -> Result<Option<Running>, Failure> {
    let checked = Checked::check(&Request {
        pids: &cli.pids,
        cgroups: &cli.cgroups,
        patterns: &cli.cgroup_patterns,
        max_targets: cli.max_targets as usize,
    })?;
    host::check_privileges().map_err(runtime)?;
    let layout = KernelLayout::read(&cli.kernel_btf).map_err(runtime)?;
    let listener = bind(cli)?;
    // Handlers before probes: a bad --events path fails before anything is loaded, and no
    // event the kernel sends finds nobody to count it.
    let (telemetry, event_metrics, mut registry) = start_telemetry(file, cli.events.as_deref())?;
    let reload_stats = ReloadStats::register(&mut registry);
    let mut otlp =
        Otlp::start(&cli.otlp, &telemetry, &tokio::runtime::Handle::current()).map_err(|e| runtime(anyhow!(e)))?;
    if signalled.is_triggered() {
        return Ok(None);
    }

    let mut probes =
        Probes::load(&layout, &cli.map_sizes(), &cli.settings(), &cli.disabled_families).map_err(runtime)?;
    // Parsing the kernel's BTF (several MB, ~100k types) is the agent's largest allocation
    // and is freed at once; hand the pages back so the resident size reflects what runs
    // (~60 MB -> under 30 MB measured by `cargo xtask bench`).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    logging::relay_kernel_log(probes.ebpf_mut());
    let maps = KernelMaps::take(probes.ebpf_mut()).map_err(runtime)?;
    let ring = take_events(probes.ebpf_mut()).map_err(runtime)?;
    send_http_events_while_wanted(&telemetry, EventsWanted::take(probes.ebpf_mut()).map_err(runtime)?);
    let ring_fill = RingFill::new(&ring, cli.ring_buffer_size).context("cannot map the event ring buffer")?;
    let (targets, following) = Targets::install(checked, maps)?;
    probes.attach(Stage::Follow).map_err(runtime)?;
    let cgroups_off = cgroups_off(cli, &probes)?;
    if signalled.is_triggered() {
        return Ok(None);
    }
    targets.discover_existing()?;
    probes.attach(Stage::Measure).map_err(runtime)?;
    if signalled.is_triggered() {
        return Ok(None);
    }

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
        move |name: &str| event_metrics.forget_target(name)
    };
    let (watcher, retargeter) =
        targets::spawn_watcher(&targets, following, cli.series_ttl.into(), workers.stop.clone(), forget)?;
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
    };
    export::register_collectors(&mut registry, &sources);
    let registry = Arc::new(registry);
    if let Some(otlp) = &mut otlp {
        otlp.push_metrics(registry.clone(), cli.poll_interval.into(), started)
            .map_err(|e| runtime(anyhow!(e)))?;
    }
    Ok(Some(Running {
        probes,
        workers,
        listener,
        sources,
        registry,
        reloader,
        otlp,
    }))
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

/// Why the cgroups family is not running, if it is not (the kernel cannot give it, or the
/// user disabled it); an error if cgroups were asked for all the same.
fn cgroups_off(cli: &Cli, probes: &Probes) -> Result<Option<String>, Failure> {
    let off = probes.off().get(CGROUPS.name);
    let off = off.or_else(|| probes.disabled().get(CGROUPS.name)).cloned();
    if let Some(why) = &off
        && !(cli.cgroups.is_empty() && cli.cgroup_patterns.is_empty())
    {
        return Err(runtime(anyhow!(
            "--cgroup and --cgroup-pattern need the cgroups probe family, which is off ({why}); \
             name the processes with --pid instead"
        )));
    }
    Ok(off)
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

/// SIGINT, SIGTERM and SIGHUP blocked in this thread (start-up: it loads the programs) until
/// dropped. The verifier gives up with EAGAIN when the loading thread has a signal pending,
/// and aya then loads the program again with a verifier log, up to 10 times with ever larger
/// logs: a SIGTERM during the load of `sys_exit` kept the agent from stopping for over 5 s.
/// Blocked here, the signal goes to a runtime worker, which triggers `signalled`, and
/// start-up stops at its next step.
struct SignalsHeld(SigSet);

impl SignalsHeld {
    fn here() -> nix::Result<SignalsHeld> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        let mut before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut before))?;
        Ok(SignalsHeld(before))
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// The listening socket, bound before anything is loaded so a taken port fails first.
fn bind(cli: &Cli) -> Result<TcpListener, Failure> {
    let listener = std::net::TcpListener::bind(cli.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std);
    listener.map_err(|e| {
        runtime(anyhow!(
            "cannot listen on {}: {e}; choose another address with --listen",
            cli.listen
        ))
    })
}

/// The event bus with the metric definitions attached (the config file's, else the
/// built-in ones; served from the returned registry) and, with `--events`, the sink.
fn start_telemetry(
    file: Option<&FileConfig>,
    events: Option<&str>,
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
    let event_metrics = Arc::new(EventMetrics::new(definitions));
    registry.register_collector(Box::new(EventMetricsCollector(event_metrics.clone())));
    event_metrics
        .clone()
        .attach(&telemetry, "metrics", METRICS_QUEUE)
        .map_err(runtime)?;
    if let Some(path) = events {
        sink::attach(&telemetry, path).map_err(|e| match e {
            sink::SinkError::Open { .. } => Failure::Usage(format!("--events {path}: {e}")),
            sink::SinkError::Attach(e) => runtime(e),
        })?;
    }
    Ok((telemetry, event_metrics, registry))
}

/// Serves until `signalled`, then gives open connections [`SHUTDOWN_GRACE`] to finish.
async fn serve(
    listener: TcpListener,
    sources: Arc<Sources>,
    registry: Arc<Registry>,
    reload: Option<http::Reload>,
    signalled: &Shutdown,
) -> anyhow::Result<()> {
    let mut server = tokio::spawn(http::serve(listener, sources, registry, reload, signalled.clone()));
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

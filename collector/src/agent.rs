//! Start-up, serving and shutdown: the order things happen in, and what each failure says.
//!
//! Order matters for exactness:
//! 1. validate the input and the host (nothing is loaded yet);
//! 2. load the object and put the named PIDs into `TARGET_OF`;
//! 3. attach the fork/exec/exit probes, so from here the kernel follows new children;
//! 4. walk /proc for the descendants that existed before step 3, until a pass finds none
//!    new (a child forked by a not-yet-known descendant during a pass is found by the next);
//! 5. put the processes already in target cgroups into their deepest target (a `--pid` tree
//!    keeps its own), after the cgroup attach probe, so a move meanwhile is seen by one of
//!    them;
//! 6. attach the socket probes and sys_enter/sys_exit, then serve. Everything counted
//!    happened after this point. The cgroup watcher follows new and removed cgroups.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use collector_common::{TargetId, events::TargetCounts};
use prometheus_client::registry::Registry;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    btf::KernelLayout,
    cgroup_targets,
    cli::Cli,
    http,
    kernel_maps::{KernelMaps, Membership, take_events},
    metrics, poller,
    probes::{Probes, SOCKET_PROBES, SYSCALL_PROBES, TARGET_PROBES},
    process_events::{self, RingFill},
    state::AgentState,
    targets::{SharedTargets, Targets, descendants},
    telemetry::{
        Telemetry,
        definitions::{EventMetrics, PROCESS_METRICS, TCP_METRICS},
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

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}

/// How long serving may take to wind down after SIGINT/SIGTERM before we stop anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Events that may wait for the metrics handler before new ones are dropped.
const METRICS_QUEUE: usize = 65_536;

/// Passes over /proc for pre-existing descendants before giving up on a fixpoint.
const DESCENDANT_PASSES: usize = 5;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let started = Instant::now();
    let mut targets =
        Targets::from_specs(&cli.pids, cli.max_targets as usize).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut seen = HashMap::new();
    for &(pid, _) in targets.pids() {
        seen.insert(pid, check_process(pid)?);
    }
    let cgroup_targets = cgroup_targets::resolve(&cli.cgroups, &cli.cgroup_patterns)?;
    check_privileges()?;
    let layout = KernelLayout::read()?;
    let pid_max = read_pid_max()?;
    let listener = TcpListener::bind(cli.listen).await.map_err(|e| {
        anyhow!(
            "cannot listen on {}: {e}; choose another address with --listen",
            cli.listen
        )
    })?;

    // Handlers before probes: a bad --events path fails before anything is loaded, and no
    // event the kernel sends finds nobody to count it.
    let (telemetry, event_metrics, mut registry) = start_telemetry(cli.events.as_deref())?;

    let mut probes = Probes::load(&layout, pid_max, cli.ring_buffer_size)?;
    // Parsing the kernel's BTF (several MB, ~100k types) is the agent's largest allocation
    // and is freed at once; hand the pages back so the resident size reflects what runs
    // (~60 MB -> under 30 MB measured by `cargo xtask bench`).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    start_kernel_log(&mut probes);
    let mut maps = KernelMaps::take(probes.ebpf_mut())?;
    let ring = take_events(probes.ebpf_mut())?;
    let ring_fill = RingFill::new(&ring, cli.ring_buffer_size).context("cannot map the event ring buffer")?;

    for (pid, target) in targets.pids().to_vec() {
        match insert_target(&mut maps, pid, target, seen[&pid])? {
            Some(counts) => targets.add_initial(target, counts.processes, counts.threads),
            None => tracing::warn!(pid, "the process exited during start-up"),
        }
    }
    for (name, cgroup) in &cgroup_targets.initial {
        cgroup_targets::add(&mut targets, &mut maps, name.clone(), cgroup);
    }
    probes.attach(&TARGET_PROBES)?;
    follow_existing_descendants(&mut targets, &mut maps)?;
    let seen = cgroup_targets::look_at(cgroup_targets::all_pids());
    cgroup_targets::join(&mut targets, &mut maps, &seen)?;
    probes.attach(&SOCKET_PROBES)?;
    probes.attach(&SYSCALL_PROBES)?;

    let targets: SharedTargets = Arc::new(RwLock::new(targets));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = process_events::spawn_reader(ring, targets.clone(), telemetry.clone(), stop_reader.clone());
    let state = Arc::new(AgentState {
        targets,
        maps: Mutex::new(maps),
        telemetry,
        event_metrics,
        probes_attached: probes.attached().clone(),
        started,
        map_read_errors: AtomicU64::new(0),
    });
    metrics::register_collectors(&mut registry, state.clone());
    let stop_poller = Arc::new(poller::Stop::default());
    let poller = poller::spawn(state.clone(), ring_fill, cli.poll_interval.into(), stop_poller.clone());
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let watcher = cgroup_targets::spawn_watcher(
        state.clone(),
        cgroup_targets.changes,
        cli.series_ttl.into(),
        stop_watcher.clone(),
    );
    tracing::info!(
        listen = %cli.listen,
        targets = %state.targets(),
        pid_max,
        startup_ms = started.elapsed().as_millis() as u64,
        "collector ready"
    );
    let served = serve_until_signal(listener, state.clone(), registry).await;
    drop(probes); // detaches every link and unloads the programs
    stop_poller.stop();
    stop_reader.store(true, Ordering::Relaxed);
    stop_watcher.store(true, Ordering::Relaxed);
    let _ = (poller.join(), reader.join(), watcher.join());
    state.telemetry.detach_all(); // lets the sink write what it has queued
    served?;
    tracing::info!("stopped; all probes detached");
    Ok(())
}

/// The event bus with the built-in metrics attached (registered in the returned registry)
/// and, with `--events`, the sink.
fn start_telemetry(events: Option<&str>) -> Result<(Arc<Telemetry>, Arc<EventMetrics>, Registry), Failure> {
    let telemetry = Arc::new(Telemetry::new());
    let mut registry = Registry::default();
    let built_in = [PROCESS_METRICS, TCP_METRICS].concat();
    let event_metrics = Arc::new(EventMetrics::register(&built_in, &mut registry));
    event_metrics.clone().attach(&telemetry, "metrics", METRICS_QUEUE)?;
    if let Some(path) = events {
        sink::attach(&telemetry, path).map_err(|e| Failure::Usage(format!("--events {path}: {e}")))?;
    }
    Ok((telemetry, event_metrics, registry))
}

/// One process and its threads (from /proc; 1 if it is already gone).
fn process_counts(pid: u32) -> TargetCounts {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(1);
    TargetCounts {
        processes: 1,
        threads: threads as i64,
    }
}

/// A named PID must be a running process, and a process rather than one of its threads
/// (`TARGET_OF` is indexed by process id). Returns its start time, which with the PID
/// identifies it.
fn check_process(pid: u32) -> Result<u64, Failure> {
    let status = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|_| {
            Failure::Usage(format!(
                "--pid {pid}: no process with PID {pid} is running; check it with `ps -p {pid}`"
            ))
        })?;
    if status.tgid != pid as i32 {
        return Err(Failure::Usage(format!(
            "--pid {pid}: {pid} is a thread of process {}; give the process id (--pid {})",
            status.tgid, status.tgid
        )));
    }
    start_time(pid)
        .ok_or_else(|| Failure::Usage(format!("--pid {pid}: the process exited; check it with `ps -p {pid}`")))
}

/// When the process started (clock ticks since boot): with the PID, its identity.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

/// Makes `pid` a target in the kernel, provided it is still the process seen started at
/// `started`, and returns what it adds to the target's counts. A process that exited in
/// between, or whose PID was reused, must not stay a target: its entry is taken back out,
/// unless the exit probe saw it exit as a target, cleared the entry and counted the exit
/// (then the returned counts balance that).
fn insert_target(
    maps: &mut KernelMaps,
    pid: u32,
    target: TargetId,
    started: u64,
) -> Result<Option<TargetCounts>, Failure> {
    let counts = process_counts(pid);
    maps.set_target(pid, Some((target, Membership::PidTree)))?;
    if start_time(pid) == Some(started) || maps.target_of(pid)?.is_none() {
        return Ok(Some(counts));
    }
    maps.set_target(pid, None)?;
    Ok(None)
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN.
fn check_privileges() -> Result<(), Failure> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .context("cannot read this process's capabilities from /proc/self/status")?
        .capeff;
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow!(
            "not enough privilege to load eBPF programs: run as root (sudo) or grant CAP_BPF and CAP_PERFMON \
             (setcap cap_bpf,cap_perfmon+ep collector)"
        )))
    }
}

fn read_pid_max() -> anyhow::Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/pid_max").context("cannot read /proc/sys/kernel/pid_max")?;
    text.trim()
        .parse()
        .with_context(|| format!("unexpected /proc/sys/kernel/pid_max: {text:?}"))
}

/// Relays the kernel programs' aya-log messages into our log.
fn start_kernel_log(probes: &mut Probes) {
    match aya_log::EbpfLogger::init(probes.ebpf_mut()) {
        // SAFETY: the logger owns its ring-buffer fd, which stays open and unchanged for as
        // long as the AsyncFd (which owns the logger) lives.
        Ok(logger) => {
            match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
                Ok(mut logger) => {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = logger.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(e) => tracing::warn!("kernel program logs unavailable: {e}"),
            }
        }
        Err(e) => tracing::warn!("kernel program logs unavailable: {e}"),
    }
}

/// Puts the descendants that existed before the fork probe attached into their target.
fn follow_existing_descendants(targets: &mut Targets, maps: &mut KernelMaps) -> Result<(), Failure> {
    let roots: HashMap<u32, TargetId> = targets.pids().iter().copied().collect();
    for _ in 0..DESCENDANT_PASSES {
        let mut added = 0;
        let tree = process_tree()?;
        let parents: Vec<(u32, u32)> = tree.iter().map(|&(pid, ppid, _)| (pid, ppid)).collect();
        let started: HashMap<u32, u64> = tree.iter().map(|&(pid, _, start)| (pid, start)).collect();
        for (pid, target) in descendants(&parents, &roots) {
            if matches!(maps.target_of(pid)?, Some((_, Membership::PidTree))) {
                continue; // already followed by the kernel, or by an earlier pass
            }
            if let Some(counts) = insert_target(maps, pid, target, started[&pid])? {
                targets.add_initial(target, counts.processes, counts.threads);
                added += 1;
            }
        }
        if added == 0 {
            return Ok(());
        }
        tracing::debug!(added, "followed existing descendants");
    }
    tracing::warn!(
        "processes kept forking while descendants were being discovered; later forks are followed by the kernel"
    );
    Ok(())
}

/// Every (pid, ppid, start time) on the host; processes that vanish while being read are
/// skipped.
fn process_tree() -> anyhow::Result<Vec<(u32, u32, u64)>> {
    let all = procfs::process::all_processes().context("cannot list processes in /proc")?;
    Ok(all
        .filter_map(|p| p.ok()?.stat().ok())
        .map(|stat| (stat.pid as u32, stat.ppid as u32, stat.starttime))
        .collect())
}

async fn serve_until_signal(listener: TcpListener, state: Arc<AgentState>, registry: Registry) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(http::serve(listener, state, registry, async {
        let _ = stop_rx.await;
    }));
    let signal = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
        result = &mut server => {
            result.context("HTTP server task failed")?.context("HTTP server failed")?;
            return Err(anyhow!("HTTP server stopped unexpectedly"));
        }
    };
    tracing::info!(signal, "stopping");
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("open HTTP connections did not close in time; stopping anyway");
    }
    Ok(())
}

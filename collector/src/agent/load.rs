//! The privileged phase of start-up, on the agent's only thread (steps 1 to 5 of `agent/`):
//! what it leaves loaded and attached, for `serve`.
use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, RingBuf};

use super::{
    failure::{Failure, runtime},
    signals::stop_requested,
};
use crate::{
    cli::Cli,
    export::web_config::WebConfig,
    kernel::{
        btf::KernelLayout,
        capabilities,
        families::{CGROUPS, Stage},
        maps::{KernelMaps, take_events},
        probes::Probes,
        ring::RingFill,
    },
    targets::{Checked, Following, Request, Targets},
    telemetry::sink,
};

/// What the load leaves for serving. Dropping it detaches and unloads everything.
pub struct Loaded {
    pub probes: Probes,
    pub targets: Targets,
    pub following: Following,
    /// Why the cgroups family is off, if it is.
    pub cgroups_off: Option<String>,
    pub listener: std::net::TcpListener,
    /// `--web.config.file`'s TLS and users, checked.
    pub web: WebConfig,
    pub ring: RingBuf<MapData>,
    pub ring_fill: RingFill,
    /// `--events`, opened.
    pub sink: Option<sink::Output>,
}

impl Loaded {
    /// Whether a map the agent holds can be read now (with the capabilities this thread has).
    pub fn map_access_works(&self) -> bool {
        self.targets.read().maps().event_drops().is_ok()
    }
}

/// Steps 1 to 5; `None` when a SIGINT or SIGTERM came first.
pub fn load(cli: &Cli) -> Result<Option<Loaded>, Failure> {
    // Found (and said in the log) before the first /proc cgroup path is read, not when a
    // process is first looked at.
    crate::targets::proc::namespace_root();
    let checked = Checked::check(&Request {
        pids: &cli.pids,
        cgroups: &cli.cgroups,
        patterns: &cli.cgroup_patterns,
        max_targets: cli.max_targets as usize,
        naming: &cli.naming(),
    })?;
    // A usage error before what the host may refuse (capabilities, BTF, the port).
    let web = match &cli.web_config_file {
        Some(path) => WebConfig::load(path).map_err(|e| Failure::Usage(e.to_string()))?,
        None => WebConfig::default(),
    };
    capabilities::check().map_err(runtime)?;
    let layout = KernelLayout::read(&cli.kernel_btf).map_err(runtime)?;
    let listener = bind(cli)?;
    // Before anything loads, so that a bad path fails first.
    let sink = cli
        .events
        .as_deref()
        .map(|path| sink::open(path).map_err(|e| Failure::Usage(format!("--events {path}: {e}"))))
        .transpose()?;
    if stop_requested() {
        return Ok(None);
    }

    let mut probes =
        Probes::load(&layout, &cli.map_sizes(), &cli.settings(), &cli.disabled_families).map_err(runtime)?;
    // Parsing the kernel's BTF (several MB, ~100k types) is the agent's largest allocation
    // and is freed at once; hand the pages back so the resident size reflects what runs
    // (~60 MB -> under 30 MB measured by `cargo xtask bench`).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let maps = KernelMaps::take(probes.ebpf_mut()).map_err(runtime)?;
    let ring = take_events(probes.ebpf_mut()).map_err(runtime)?;
    let ring_fill = RingFill::new(&ring, cli.ring_buffer_size).context("cannot map the event ring buffer")?;
    let (targets, following) = Targets::install(checked, maps)?;
    probes.attach(Stage::Follow).map_err(runtime)?;
    let cgroups_off = cgroups_off(cli, &probes)?;
    if stop_requested() {
        return Ok(None);
    }
    targets.discover_existing()?;
    probes.attach(Stage::Measure).map_err(runtime)?;
    if stop_requested() {
        return Ok(None);
    }
    Ok(Some(Loaded {
        probes,
        targets,
        following,
        cgroups_off,
        listener,
        web,
        ring,
        ring_fill,
        sink,
    }))
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

/// The listening socket, bound before anything is loaded so a taken port fails first.
fn bind(cli: &Cli) -> Result<std::net::TcpListener, Failure> {
    let listener = std::net::TcpListener::bind(cli.listen).and_then(|l| l.set_nonblocking(true).map(|()| l));
    listener.map_err(|e| {
        runtime(anyhow!(
            "cannot listen on {}: {e}; choose another address with --listen",
            cli.listen
        ))
    })
}

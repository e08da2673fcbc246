//! Loading the kernel programs, attaching them, and knowing which are attached.
//!
//! Nothing is pinned: every program, link and map belongs to the `Ebpf` object held in
//! [`Probes`], so dropping it (on shutdown, or on any start-up error) detaches and unloads
//! everything. No state outlives the agent.
use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, ProgramArray, Queue,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{ProgramError, RawTracePoint},
};
use collector_common::{
    globals,
    http::{Bounds, Method, MethodToken, ROUTE_BYTES},
    maps,
};

use super::{
    btf::KernelLayout,
    families::{FAMILIES, Family, Probe, Stage, Via, all_probes},
    http_routes,
};

/// The kernel object built from `collector-ebpf` by build.rs. Public for the benchmark, which
/// attaches the object's floor programs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector"));

/// How many entries each runtime-sized map gets, from the agent's settings. The defaults
/// (`collector_common::maps::*_DEFAULT`) are documented with the flags in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// `TARGET_OF`: target processes followed at once.
    pub target_processes: u32,
    /// `ENTRY`, `THREAD_SLOTS`, `FREE_SLOTS` and `SCHED_THREADS`: target threads followed at once.
    pub target_threads: u32,
    /// `EVENTS`, in bytes (a power of two).
    pub ring_buffer_bytes: u32,
    /// `CGROUP_TARGETS`, `TARGET_COUNTS`, `TCP_COUNTS`, `SERIES_ROWS` and `SCHED_STATS`, which
    /// hold one entry per target (`FD_BYTES` one per target and fd type).
    pub targets: u32,
    /// `SYSCALL_STATS`, `SYSCALL_SERIES` and `FREE_SERIES`: (target, syscall) pairs.
    pub syscall_stats: u32,
    pub syscall_errors: u32,
    pub sockets: u32,
    pub socket_bytes: u32,
    /// `HTTP_CONNS`: connections whose HTTP state is kept at once.
    pub http_connections: u32,
    /// `HTTP_STATS`: (target, side, method, status) aggregates.
    pub http_series: u32,
}

impl MapSizes {
    fn each(&self) -> [(&'static str, u32); 21] {
        [
            (maps::TARGET_OF, self.target_processes),
            (maps::ENTRY, self.target_threads),
            (maps::THREAD_SLOTS, self.target_threads),
            (maps::FREE_SLOTS, self.target_threads),
            (maps::EVENTS, self.ring_buffer_bytes),
            (maps::CGROUP_TARGETS, self.targets),
            (maps::TARGET_COUNTS, self.targets),
            (maps::TCP_COUNTS, self.targets),
            (maps::SYSCALL_STATS, self.syscall_stats),
            (maps::SYSCALL_SERIES, self.syscall_stats),
            (maps::FREE_SERIES, self.syscall_stats),
            (maps::SERIES_ROWS, self.targets),
            (maps::SYSCALL_ERRORS, self.syscall_errors),
            (maps::SOCKETS, self.sockets),
            (maps::SOCKET_BYTES, self.socket_bytes),
            (maps::HTTP_CONNS, self.http_connections),
            (maps::HTTP_STATS, self.http_series),
            (maps::SCHED_THREADS, self.target_threads),
            (maps::SCHED_STATS, self.targets),
            (maps::FD_BYTES, self.targets * collector_common::sched::FD_TYPES),
            (maps::BLOCK_STATS, self.targets * collector_common::sched::BLOCK_OPS),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The object or one of its maps could not be loaded into the kernel.
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// The verifier rejected a program, or the kernel refused to attach it.
    #[error("cannot {action} probe {probe} (program {program} on raw tracepoint {tracepoint})")]
    Program {
        action: &'static str,
        probe: &'static str,
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// The object lacks a program or map this agent expects (a build mismatch).
    #[error("the embedded eBPF object has no program or map {0}")]
    Missing(&'static str),
    /// A family's switch could not be set.
    #[error("cannot set a switch in SWITCHES")]
    Switch(#[source] aya::maps::MapError),
    /// A tail-called program could not be put into its program array.
    #[error("cannot put program {program} into {map}")]
    TailCall {
        program: &'static str,
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The slots of an array could not be handed to the queue its programs take them from.
    #[error("cannot fill {0}")]
    Fill(&'static str, #[source] aya::maps::MapError),
}

/// Hands every slot of an array to the queue `queue` that hands them out in the kernel
/// (`collector-ebpf/src/maps.rs`): `FREE_SLOTS` (`ENTRY` slots, taken by target threads at
/// their first syscall) and `FREE_SERIES` (`SYSCALL_STATS` slots, taken by new pairs).
fn fill_queue(ebpf: &mut Ebpf, queue: &'static str, slots: u32) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(queue).ok_or(ProbeError::Missing(queue))?;
    let mut free: Queue<&mut MapData, u32> = Queue::try_from(map).map_err(|e| ProbeError::Fill(queue, e))?;
    for slot in 0..slots {
        free.push(slot, 0).map_err(|e| ProbeError::Fill(queue, e))?;
    }
    Ok(())
}

/// Gives the http family its table of registered methods (`HTTP_METHODS`).
fn fill_methods(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let name = maps::HTTP_METHODS;
    let map = ebpf.map_mut(name).ok_or(ProbeError::Missing(name))?;
    let mut methods: HashMap<&mut MapData, u32, MethodToken> =
        HashMap::try_from(map).map_err(|e| ProbeError::Fill(name, e))?;
    for (prefix, token) in Method::prefixes() {
        methods
            .insert(prefix, token, 0)
            .map_err(|e| ProbeError::Fill(name, e))?;
    }
    Ok(())
}

/// What the programs are given at load besides map sizes: for the http family
/// `--http-buckets` in ns and `--http-route`; for the syscalls family `--slow-syscall`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub http_bounds: Bounds,
    /// Checked patterns (`http_routes::check`); route `i` is `i + 1` in the kernel.
    pub http_routes: Vec<String>,
    /// A target's call slower than this is sent as `syscall.slow`; `u64::MAX`: none is.
    pub slow_syscall_ns: u64,
}

/// Gives the http family the routes (`HTTP_ROUTES`), and turns route matching on if any.
fn fill_routes(ebpf: &mut Ebpf, routes: &[String]) -> Result<(), ProbeError> {
    if routes.is_empty() {
        return Ok(());
    }
    let name = maps::HTTP_ROUTES;
    let map = ebpf.map_mut(name).ok_or(ProbeError::Missing(name))?;
    let mut table: LpmTrie<&mut MapData, [u8; ROUTE_BYTES], u16> =
        LpmTrie::try_from(map).map_err(|e| ProbeError::Fill(name, e))?;
    for (i, route) in routes.iter().enumerate() {
        for prefix in http_routes::prefixes(route) {
            let mut data = [0u8; ROUTE_BYTES];
            data[..prefix.len()].copy_from_slice(&prefix);
            let key = Key::new(8 * prefix.len() as u32, data);
            table
                .insert(&key, i as u16 + 1, 0)
                .map_err(|e| ProbeError::Fill(name, e))?;
        }
    }
    set_switch(ebpf, maps::SWITCH_HTTP_ROUTES)
}

/// Sets `SWITCHES[index]`, which the kernel programs read as "on".
fn set_switch(ebpf: &mut Ebpf, index: u32) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(maps::SWITCHES)
        .ok_or(ProbeError::Missing(maps::SWITCHES))?;
    let mut switches: Array<&mut MapData, u32> = Array::try_from(map).map_err(ProbeError::Switch)?;
    switches.set(index, 1, 0).map_err(ProbeError::Switch)
}

/// The loaded object and the attach state of each probe.
pub struct Probes {
    ebpf: Ebpf,
    attached: BTreeMap<&'static str, bool>,
    /// Probe name -> the program that fits this kernel.
    programs: BTreeMap<&'static str, &'static str>,
    /// Families that are off, with why.
    off: BTreeMap<&'static str, String>,
    /// Families the user turned off (`--disable-family`), or that need one of those.
    disabled: BTreeMap<&'static str, String>,
}

impl Probes {
    /// Loads the object with its maps sized by `sizes`, the kernel layout and the
    /// programs' `settings`. No program is attached; the `disabled` families (non-core, as
    /// `--disable-family` checks) and those that need them never will be.
    pub fn load(
        layout: &KernelLayout,
        sizes: &MapSizes,
        settings: &Settings,
        disabled: &[&'static str],
    ) -> Result<Self, ProbeError> {
        let mut loader = EbpfLoader::new();
        // The kernel's BTF is for CO-RE relocations, which Rust programs do not have; not
        // loading it saves a second multi-megabyte parse (btf.rs reads what we need).
        loader.btf(None);
        for (map, entries) in sizes.each() {
            loader.map_max_entries(map, entries);
        }
        let mut ebpf = loader
            .override_global(globals::KERNEL_OFFSETS, &layout.offsets, true)
            .override_global(globals::KERNEL_FEATURES, &layout.features, true)
            .override_global(globals::HTTP_BOUNDS, &settings.http_bounds, true)
            .override_global(globals::SLOW_SYSCALL_NS, &settings.slow_syscall_ns, true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        fill_queue(&mut ebpf, maps::FREE_SLOTS, sizes.target_threads)?;
        fill_queue(&mut ebpf, maps::FREE_SERIES, sizes.syscall_stats)?;
        fill_methods(&mut ebpf)?;
        fill_routes(&mut ebpf, &settings.http_routes)?;
        let attached = all_probes().map(|p| (p.name, false)).collect();
        let mut probes = Probes {
            ebpf,
            attached,
            programs: layout.programs.clone(),
            off: BTreeMap::new(),
            disabled: BTreeMap::new(),
        };
        for family in FAMILIES.iter().filter(|f| layout.off.contains_key(f.name)) {
            probes.turn_off(family, layout.off[family.name].clone());
        }
        probes.disable(disabled);
        Ok(probes)
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Verifies and attaches the probes of every family of `stage`, in order. A family the
    /// kernel cannot give is off (said once in the log and kept in [`Probes::off`]) and the
    /// others run on; only a core family failing is an error, after which the caller drops
    /// `self`, which detaches whatever was attached.
    pub fn attach(&mut self, stage: Stage) -> Result<(), ProbeError> {
        for family in FAMILIES.iter().filter(|f| f.stage == stage) {
            if self.off.contains_key(family.name) || self.disabled.contains_key(family.name) {
                continue;
            }
            if let Some(needed) = family.needs.iter().find(|n| self.off.contains_key(*n)) {
                self.turn_off(family, format!("it needs the {needed} family, which is off"));
                continue;
            }
            match self.attach_family(family) {
                Ok(()) => self.switch_on(family)?,
                Err(e) if family.core => return Err(e),
                Err(e) => {
                    self.unload(family);
                    self.turn_off(family, format!("{:#}", anyhow::Error::from(e)));
                }
            }
        }
        Ok(())
    }

    fn attach_family(&mut self, family: &Family) -> Result<(), ProbeError> {
        for probe in family.probes {
            let name = self.program_of(probe);
            let err = |action, source| ProbeError::Program {
                action,
                probe: probe.name,
                program: name,
                tracepoint: probe.tracepoint,
                source: Box::new(source),
            };
            let program: &mut RawTracePoint = self
                .ebpf
                .program_mut(name)
                .ok_or(ProbeError::Missing(name))?
                .try_into()
                .map_err(|e| err("load", e))?;
            program.load().map_err(|e| err("load", e))?;
            match probe.via {
                Via::Attach => {
                    program.attach(probe.tracepoint).map_err(|e| err("attach", e))?;
                }
                Via::TailCall { map, index } => {
                    let fd = program.fd().map_err(|e| err("load", e))?.try_clone();
                    let tail_call = |source: Box<dyn std::error::Error + Send + Sync>| ProbeError::TailCall {
                        program: name,
                        map,
                        source,
                    };
                    let fd = fd.map_err(|e| tail_call(Box::new(e)))?;
                    let array = self.ebpf.map_mut(map).ok_or(ProbeError::Missing(map))?;
                    let mut array = ProgramArray::try_from(array).map_err(|e| tail_call(Box::new(e)))?;
                    array.set(index, &fd, 0).map_err(|e| tail_call(Box::new(e)))?;
                }
            }
            self.attached.insert(probe.name, true);
            tracing::debug!(probe = probe.name, program = name, "attached");
        }
        Ok(())
    }

    /// The program loaded for `probe` on this kernel (see `Probe::fewer_args`).
    fn program_of(&self, probe: &Probe) -> &'static str {
        self.programs.get(probe.name).copied().unwrap_or(probe.program)
    }

    /// Tells the programs that feed `family` from elsewhere that it is attached.
    fn switch_on(&mut self, family: &Family) -> Result<(), ProbeError> {
        match family.switch {
            Some(index) => set_switch(&mut self.ebpf, index),
            None => Ok(()),
        }
    }

    /// Unloads (and so detaches) the family's programs that did load: a family is on whole
    /// or not at all, so no metric of it is half counted.
    fn unload(&mut self, family: &Family) {
        for probe in family.probes {
            let name = self.program_of(probe);
            if let Via::TailCall { map, index } = probe.via
                && let Some(array) = self.ebpf.map_mut(map)
                && let Ok(mut array) = ProgramArray::try_from(array)
            {
                // An index never set is as good as cleared.
                let _ = array.clear_index(&index);
            }
            let program: Option<&mut RawTracePoint> = self.ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            if let Some(program) = program
                && let Err(e) = program.unload()
            {
                tracing::debug!(program = name, "unload: {e}");
            }
            self.attached.insert(probe.name, false);
        }
    }

    /// Marks `names` disabled, and every family that needs a disabled one, said once each.
    fn disable(&mut self, names: &[&'static str]) {
        for &name in names {
            self.disabled.insert(name, "--disable-family".into());
        }
        // FAMILIES is small; repeat until no family is newly disabled by what it needs.
        while let Some((family, needed)) = FAMILIES.iter().find_map(|f| {
            let needed = f.needs.iter().find(|n| self.disabled.contains_key(*n))?;
            (!self.disabled.contains_key(f.name)).then_some((f, *needed))
        }) {
            self.disabled
                .insert(family.name, format!("it needs the {needed} family, which is disabled"));
        }
        for family in FAMILIES.iter().filter(|f| self.disabled.contains_key(f.name)) {
            tracing::info!(
                family = family.name,
                reason = %self.disabled[family.name],
                "probe family {} disabled, so {} are not measured",
                family.name,
                family.what,
            );
        }
    }

    fn turn_off(&mut self, family: &Family, why: String) {
        tracing::warn!(
            family = family.name,
            reason = %why,
            "probe family {} off: this kernel cannot give it, so {} are not measured{}; the other families run on",
            family.name,
            family.what,
            if family.metrics.is_empty() {
                String::new()
            } else {
                format!(" ({})", family.metrics.join(", "))
            }
        );
        self.off.insert(family.name, why);
    }

    /// Families that are off, with why.
    pub fn off(&self) -> &BTreeMap<&'static str, String> {
        &self.off
    }

    /// Families disabled by the user, with why.
    pub fn disabled(&self) -> &BTreeMap<&'static str, String> {
        &self.disabled
    }

    /// Each probe by its `probe` label, and whether it is attached.
    pub fn attached(&self) -> &BTreeMap<&'static str, bool> {
        &self.attached
    }
}

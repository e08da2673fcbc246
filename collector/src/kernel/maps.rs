//! Typed access to the kernel maps: the writes that keep the target set (`TARGET_OF`,
//! `CGROUP_TARGETS`, deleting an expired target's entries), and reading the
//! aggregates back, summed over CPUs, at scrape time. Writes take `&mut self` and reads
//! `&self`, so whoever holds the maps behind a lock decides who may write (`targets/`).
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, Queue, RingBuf},
};
use collector_common::{
    ErrorKey, LEFT_TARGET, MapErrorSite, PID_TREE, SeriesRow, SyscallKey, SyscallStats, TargetId,
    events::{EventKind, TargetCounts},
    http::{HttpConn, HttpKey, HttpStats},
    maps,
    sched::{BLOCK_OPS, BlockStats, FD_TYPES, FdBytes, FdType, SchedStats, ThreadSched},
    sockets::{Connection, SocketBytes, SocketBytesKey, TcpCounts},
};

use super::generation::TargetsGeneration;

#[derive(Debug, thiserror::Error)]
pub enum KernelMapError {
    /// The object lacks a map this agent expects (a build mismatch).
    #[error("the embedded eBPF object has no map {0}")]
    Missing(&'static str),
    /// The possible CPUs could not be read (/sys/devices/system/cpu/possible).
    #[error("cannot read the possible CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    /// A map could not be mapped into the agent.
    #[error("cannot mmap map {0}: {1}")]
    Mmap(&'static str, #[source] std::io::Error),
    /// A map syscall failed.
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

pub struct KernelMaps {
    target_of: HashMap<MapData, u32, u32>,
    target_counts: PerCpuArray<MapData, TargetCounts>,
    event_drops: PerCpuArray<MapData, u64>,
    syscall_series: HashMap<MapData, SyscallKey, u32>,
    syscall_stats: PerCpuArray<MapData, SyscallStats>,
    free_series: Queue<MapData, u32>,
    series_rows: Array<MapData, SeriesRow>,
    syscall_errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    map_errors: PerCpuArray<MapData, u64>,
    socket_bytes: PerCpuHashMap<MapData, SocketBytesKey, SocketBytes>,
    tcp_counts: PerCpuArray<MapData, TcpCounts>,
    cgroup_targets: HashMap<MapData, u64, u32>,
    sockets: HashMap<MapData, u64, Connection>,
    http_conns: HashMap<MapData, u64, HttpConn>,
    http_stats: PerCpuHashMap<MapData, HttpKey, HttpStats>,
    sched_stats: PerCpuArray<MapData, SchedStats>,
    sched_threads: HashMap<MapData, u32, ThreadSched>,
    fd_bytes: PerCpuArray<MapData, FdBytes>,
    block_stats: Array<MapData, BlockStats>,
    generation: TargetsGeneration,
}

/// Why a process is in a target: which decides whether a cgroup move may change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// A `--pid` process or its descendant (`PID_TREE`).
    PidTree,
    /// Its cgroup.
    Cgroup,
}

fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelMapError> {
    let map = ebpf.take_map(name).ok_or(KernelMapError::Missing(name))?;
    T::try_from(map).map_err(|source| KernelMapError::Map { map: name, source })
}

fn err(map: &'static str) -> impl FnOnce(MapError) -> KernelMapError {
    move |source| KernelMapError::Map { map, source }
}

/// A removal (or a `BPF_EXIST` update) where the key being absent is as good: aya reports a
/// missing key on delete or update as the syscall's ENOENT, not as `KeyNotFound`.
fn removed(map: &'static str, result: Result<(), MapError>) -> Result<(), KernelMapError> {
    match result {
        Err(MapError::SyscallError(aya::sys::SyscallError { io_error, .. }))
            if io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        r => r.map_err(err(map)),
    }
}

/// Takes `TARGETS_GENERATION` out of `ebpf` and maps it into the agent.
fn take_generation(ebpf: &mut Ebpf) -> Result<TargetsGeneration, KernelMapError> {
    let name = maps::TARGETS_GENERATION;
    let Some(Map::Array(map)) = ebpf.take_map(name) else {
        return Err(KernelMapError::Missing(name));
    };
    TargetsGeneration::map(map).map_err(|e| KernelMapError::Mmap(name, e))
}

/// `EVENTS_WANTED`: which of the events sent only on demand (`http.request`) the kernel
/// sends now, written as the agent's handlers come and go.
pub struct EventsWanted(std::sync::Mutex<Array<MapData, u32>>);

impl EventsWanted {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, KernelMapError> {
        Ok(EventsWanted(std::sync::Mutex::new(take(ebpf, maps::EVENTS_WANTED)?)))
    }

    /// Sets whether `kind` is wanted to what `wanted` says, asked under this map's lock:
    /// two changes at once (a reader leaving as another comes) cannot write their answers
    /// in the other order.
    pub fn set(&self, kind: EventKind, wanted: impl FnOnce() -> bool) -> Result<(), KernelMapError> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.set(kind.index(), u32::from(wanted()), 0)
            .map_err(err(maps::EVENTS_WANTED))
    }
}

/// Takes the event ring buffer out of `ebpf`, for the thread that reads it.
pub fn take_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, KernelMapError> {
    take(ebpf, maps::EVENTS)
}

impl KernelMaps {
    /// Takes the maps out of `ebpf`; the programs keep their own references to them.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, KernelMapError> {
        Ok(KernelMaps {
            target_of: take(ebpf, maps::TARGET_OF)?,
            target_counts: take(ebpf, maps::TARGET_COUNTS)?,
            event_drops: take(ebpf, maps::EVENT_DROPS)?,
            syscall_series: take(ebpf, maps::SYSCALL_SERIES)?,
            syscall_stats: take(ebpf, maps::SYSCALL_STATS)?,
            free_series: take(ebpf, maps::FREE_SERIES)?,
            series_rows: take(ebpf, maps::SERIES_ROWS)?,
            syscall_errors: take(ebpf, maps::SYSCALL_ERRORS)?,
            map_errors: take(ebpf, maps::MAP_ERRORS)?,
            socket_bytes: take(ebpf, maps::SOCKET_BYTES)?,
            tcp_counts: take(ebpf, maps::TCP_COUNTS)?,
            cgroup_targets: take(ebpf, maps::CGROUP_TARGETS)?,
            sockets: take(ebpf, maps::SOCKETS)?,
            http_conns: take(ebpf, maps::HTTP_CONNS)?,
            http_stats: take(ebpf, maps::HTTP_STATS)?,
            sched_stats: take(ebpf, maps::SCHED_STATS)?,
            sched_threads: take(ebpf, maps::SCHED_THREADS)?,
            fd_bytes: take(ebpf, maps::FD_BYTES)?,
            block_stats: take(ebpf, maps::BLOCK_STATS)?,
            generation: take_generation(ebpf)?,
        })
    }

    /// The target `pid` belongs to in the kernel's view, if any, and why.
    pub fn target_of(&self, pid: u32) -> Result<Option<(TargetId, Membership)>, KernelMapError> {
        match self.target_of.get(&pid, 0) {
            Ok(value) => Ok(membership(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(err(maps::TARGET_OF)(e)),
        }
    }

    /// Puts live process `pid` in `target`, or takes it out. One taken out keeps a
    /// `LEFT_TARGET` entry until it exits, so the kernel gives back the slots its threads
    /// hold; a process with no entry gets none (it may be gone, and nothing would remove it).
    /// The process may be running: every CPU's filter cache is made stale after the write.
    pub fn set_target(&mut self, pid: u32, target: Option<(TargetId, Membership)>) -> Result<(), KernelMapError> {
        let written = match target {
            None => {
                const BPF_EXIST: u64 = 2;
                removed(maps::TARGET_OF, self.target_of.insert(pid, LEFT_TARGET, BPF_EXIST))
            }
            Some((t, membership)) => {
                let value = match membership {
                    Membership::PidTree => t.slot() | PID_TREE,
                    Membership::Cgroup => t.slot(),
                };
                self.target_of.insert(pid, value, 0).map_err(err(maps::TARGET_OF))
            }
        };
        self.generation.bump();
        written
    }

    /// Deletes the `TARGET_OF` entry of `pid`, a process that is gone: the exit probe, which
    /// would have, may have run before the agent wrote it.
    pub fn forget_process(&mut self, pid: u32) -> Result<(), KernelMapError> {
        removed(maps::TARGET_OF, self.target_of.remove(&pid))
    }

    /// Makes cgroup `id` (and every cgroup below it) `target` in the kernel.
    pub fn add_cgroup(&mut self, id: u64, target: TargetId) -> Result<(), KernelMapError> {
        self.cgroup_targets
            .insert(id, target.slot(), 0)
            .map_err(err(maps::CGROUP_TARGETS))
    }

    /// Forgets cgroup `id` (it was removed); a missing entry is not an error.
    pub fn remove_cgroup(&mut self, id: u64) -> Result<(), KernelMapError> {
        removed(maps::CGROUP_TARGETS, self.cgroup_targets.remove(&id))
    }

    /// The processes the kernel has in `target` now, and how: read from `TARGET_OF` itself,
    /// so that a member /proc no longer shows as a descendant (reparented to init) is there.
    pub fn members(&self, target: TargetId) -> Vec<(u32, Membership)> {
        self.processes()
            .filter(|&(_, t, _)| t == target)
            .map(|(pid, _, how)| (pid, how))
            .collect()
    }

    /// Every process the kernel has in a target, with its target: one pass over
    /// `TARGET_OF`'s entries, not a lookup per key.
    pub fn processes(&self) -> impl Iterator<Item = (u32, TargetId, Membership)> + '_ {
        self.target_of
            .iter()
            .flatten()
            .filter_map(|(pid, value)| membership(value).map(|(t, how)| (pid, t, how)))
    }

    /// Deletes everything the kernel holds for `target`, so its id can be reused: its
    /// aggregates and counts, the connections it owns (and their HTTP state), and the `TARGET_OF` entries of any
    /// process still in it (a cgroup renamed out of its pattern leaves its processes there).
    pub fn forget_target(&mut self, target: TargetId) -> Result<(), KernelMapError> {
        let slot = target.slot();
        for (pid, _) in self.members(target) {
            self.set_target(pid, None)?;
        }
        remove_values_where(&mut self.sockets, |c| c.target == slot);
        remove_values_where(&mut self.http_conns, |c| c.target == slot);
        // Threads still alive under the id (moved out, not yet exited) must not add to the
        // target that reuses it.
        remove_values_where(&mut self.sched_threads, |t| t.target == slot);
        self.forget_syscall_series(target)?;
        remove_where(&mut self.syscall_errors, |k| k.target == slot);
        remove_where(&mut self.socket_bytes, |k| k.target == slot);
        remove_where(&mut self.http_stats, |k| k.target == slot);
        self.target_counts
            .set(target.0, per_cpu(TargetCounts::default())?, 0)
            .map_err(err(maps::TARGET_COUNTS))?;
        self.tcp_counts
            .set(target.0, per_cpu(TcpCounts::default())?, 0)
            .map_err(err(maps::TCP_COUNTS))?;
        self.sched_stats
            .set(target.0, per_cpu(SchedStats::ZERO)?, 0)
            .map_err(err(maps::SCHED_STATS))?;
        for fd_type in FdType::ALL {
            self.fd_bytes
                .set(fd_bytes_index(target, fd_type), per_cpu(FdBytes::default())?, 0)
                .map_err(err(maps::FD_BYTES))?;
        }
        for op in 0..BLOCK_OPS {
            self.block_stats
                .set(target.0 * BLOCK_OPS + op, BlockStats::ZERO, 0)
                .map_err(err(maps::BLOCK_STATS))?;
        }
        Ok(())
    }

    /// Gives `target`'s `SYSCALL_STATS` slots back, zeroed. Its pairs leave `SYSCALL_SERIES`
    /// first and its row after them, so that no call can write a slot into the row that is
    /// about to go back (a call from here on finds neither, and takes a fresh slot), and only
    /// then are the slots zeroed and queued. A call that read the row just before it was
    /// cleared still adds to its slot; but a target expires `--series-ttl` after its last
    /// process left it, and such a call takes well under a microsecond between its read and
    /// its add, where each step here is a syscall. One step failing does not stop the
    /// others: a slot whose pair is gone and that is not queued would be lost for good.
    fn forget_syscall_series(&mut self, target: TargetId) -> Result<(), KernelMapError> {
        let slot = target.slot();
        let series: Vec<(SyscallKey, u32)> = self
            .syscall_series
            .iter()
            .flatten()
            .filter(|(k, _)| k.target == slot)
            .collect();
        let mut result = Ok(());
        let mut keep_first = |r: Result<(), KernelMapError>| {
            if result.is_ok() {
                result = r;
            }
        };
        let mut freed = Vec::new();
        for (key, index) in series {
            match removed(maps::SYSCALL_SERIES, self.syscall_series.remove(&key)) {
                Ok(()) => freed.push(index),
                Err(e) => keep_first(Err(e)),
            }
        }
        keep_first(
            self.series_rows
                .set(target.0, SeriesRow::EMPTY, 0)
                .map_err(err(maps::SERIES_ROWS)),
        );
        for index in freed {
            // A slot that could not be zeroed stays out of the queue rather than start a
            // new pair with this one's counts.
            let zeroed = per_cpu(SyscallStats::ZERO)
                .and_then(|zero| self.syscall_stats.set(index, zero, 0).map_err(err(maps::SYSCALL_STATS)));
            keep_first(zeroed.and_then(|()| self.free_series.push(index, 0).map_err(err(maps::FREE_SERIES))));
        }
        result
    }

    /// Processes and threads `target` gained minus lost in the kernel (forks followed,
    /// exits seen), summed over CPUs.
    pub fn target_counts(&self, target: TargetId) -> Result<TargetCounts, KernelMapError> {
        let values = self.target_counts.get(&target.0, 0).map_err(err(maps::TARGET_COUNTS))?;
        Ok(values.iter().fold(TargetCounts::default(), |acc, c| TargetCounts {
            processes: acc.processes + c.processes,
            threads: acc.threads + c.threads,
        }))
    }

    /// Events of each kind the kernel could not put into the full ring buffer.
    pub fn event_drops(&self) -> Result<Vec<(EventKind, u64)>, KernelMapError> {
        EventKind::ALL
            .iter()
            .map(|&kind| {
                let v = self.event_drops.get(&kind.index(), 0).map_err(err(maps::EVENT_DROPS))?;
                Ok((kind, v.iter().sum()))
            })
            .collect()
    }

    /// Every (target, syscall) aggregate, summed over CPUs. An entry that fails to read
    /// (deleted meanwhile) is skipped and counted in the returned error count.
    pub fn syscall_stats(&self) -> (Vec<(SyscallKey, SyscallStats)>, u64) {
        let entries = self.syscall_series.iter().map(|pair| {
            let (key, index) = pair?;
            Ok((key, self.syscall_stats.get(&index, 0)?))
        });
        sum_per_cpu(
            entries,
            |acc: &mut SyscallStats, v: &SyscallStats| {
                acc.sum_ns += v.sum_ns;
                for (a, b) in acc.buckets.iter_mut().zip(v.buckets) {
                    *a += b;
                }
            },
            SyscallStats::ZERO,
        )
    }

    /// Every (target, syscall, errno) error count, summed over CPUs.
    pub fn syscall_errors(&self) -> (Vec<(ErrorKey, u64)>, u64) {
        sum_per_cpu(self.syscall_errors.iter(), |acc: &mut u64, v: &u64| *acc += v, 0)
    }

    /// Bytes sent and received per (target, family, protocol), summed over CPUs.
    pub fn socket_bytes(&self) -> (Vec<(SocketBytesKey, SocketBytes)>, u64) {
        sum_per_cpu(
            self.socket_bytes.iter(),
            |acc: &mut SocketBytes, v: &SocketBytes| {
                acc.sent += v.sent;
                acc.received += v.received;
            },
            SocketBytes::default(),
        )
    }

    /// HTTP requests per (target, side, method, status), summed over CPUs.
    pub fn http_stats(&self) -> (Vec<(HttpKey, HttpStats)>, u64) {
        sum_per_cpu(
            self.http_stats.iter(),
            |acc: &mut HttpStats, v: &HttpStats| {
                acc.sum_ns += v.sum_ns;
                acc.request_bytes += v.request_bytes;
                acc.response_bytes += v.response_bytes;
                for (a, b) in acc.buckets.iter_mut().zip(v.buckets) {
                    *a += b;
                }
            },
            HttpStats::ZERO,
        )
    }

    /// `target`'s TCP counters, summed over CPUs.
    pub fn tcp_counts(&self, target: TargetId) -> Result<TcpCounts, KernelMapError> {
        let values = self.tcp_counts.get(&target.0, 0).map_err(err(maps::TCP_COUNTS))?;
        Ok(values.iter().fold(TcpCounts::default(), |acc, c| TcpCounts {
            open_outbound: acc.open_outbound + c.open_outbound,
            open_inbound: acc.open_inbound + c.open_inbound,
            retransmits: acc.retransmits + c.retransmits,
            resets_sent: acc.resets_sent + c.resets_sent,
            resets_received: acc.resets_received + c.resets_received,
        }))
    }

    /// `target`'s scheduler and fault counters, summed over CPUs.
    pub fn sched_stats(&self, target: TargetId) -> Result<SchedStats, KernelMapError> {
        let values = self.sched_stats.get(&target.0, 0).map_err(err(maps::SCHED_STATS))?;
        let mut total = SchedStats::ZERO;
        for v in values.iter() {
            total.cpu_ns += v.cpu_ns;
            total.voluntary += v.voluntary;
            total.involuntary += v.involuntary;
            total.minor_faults += v.minor_faults;
            total.major_faults += v.major_faults;
            total.blocked_ns += v.blocked_ns;
            total.runqueue_sum_ns += v.runqueue_sum_ns;
            for (a, b) in total.runqueue_buckets.iter_mut().zip(v.runqueue_buckets) {
                *a += b;
            }
        }
        Ok(total)
    }

    /// The bytes `target` read and wrote through fds of `fd_type`, summed over CPUs.
    pub fn fd_bytes(&self, target: TargetId, fd_type: FdType) -> Result<FdBytes, KernelMapError> {
        let values = self
            .fd_bytes
            .get(&fd_bytes_index(target, fd_type), 0)
            .map_err(err(maps::FD_BYTES))?;
        Ok(values.iter().fold(FdBytes::default(), |acc, b| FdBytes {
            read: acc.read + b.read,
            written: acc.written + b.written,
        }))
    }

    /// `target`'s block requests of direction `op` (`BLOCK_OPS`).
    pub fn block_stats(&self, target: TargetId, op: u32) -> Result<BlockStats, KernelMapError> {
        self.block_stats
            .get(&(target.0 * BLOCK_OPS + op), 0)
            .map_err(err(maps::BLOCK_STATS))
    }

    /// Failed map updates in the kernel, per map.
    pub fn map_errors(&self) -> Result<Vec<(MapErrorSite, u64)>, KernelMapError> {
        MapErrorSite::ALL
            .iter()
            .map(|&site| {
                let v = self.map_errors.get(&(site as u32), 0).map_err(err(maps::MAP_ERRORS))?;
                Ok((site, v.iter().sum()))
            })
            .collect()
    }
}

/// `FD_BYTES`' index of (`target`, `fd_type`), as `collector-ebpf/src/socket_bytes.rs` has it.
fn fd_bytes_index(target: TargetId, fd_type: FdType) -> u32 {
    target.0 * FD_TYPES + fd_type as u32
}

/// What a `TARGET_OF` value says: the target (none for `LEFT_TARGET`) and why.
fn membership(value: u32) -> Option<(TargetId, Membership)> {
    let how = if value & PID_TREE != 0 {
        Membership::PidTree
    } else {
        Membership::Cgroup
    };
    TargetId::from_slot(collector_common::target_slot(value)).map(|t| (t, how))
}

/// Deletes the entries of a hash keyed by address or tid (connections, threads) whose
/// value matches, as `remove_where` does.
fn remove_values_where<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>, matches: impl Fn(&V) -> bool) {
    let keys: Vec<K> = map
        .iter()
        .flatten()
        .filter(|(_, v)| matches(v))
        .map(|(k, _)| k)
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Deletes the entries of `map` whose key matches; one that vanished meanwhile is no error.
fn remove_where<K: aya::Pod, V: aya::Pod>(map: &mut PerCpuHashMap<MapData, K, V>, matches: impl Fn(&K) -> bool) {
    let keys: Vec<K> = map.keys().flatten().filter(|k| matches(k)).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// `value` for every possible CPU, to reset a per-CPU array entry.
fn per_cpu<T: aya::Pod>(value: T) -> Result<PerCpuValues<T>, KernelMapError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| KernelMapError::Cpus(e))?;
    // try_from refuses only a length other than the number of possible CPUs, which this is.
    PerCpuValues::try_from(vec![value; cpus]).map_err(KernelMapError::Cpus)
}

fn sum_per_cpu<K, V: aya::Pod>(
    entries: impl Iterator<Item = Result<(K, PerCpuValues<V>), MapError>>,
    add: impl Fn(&mut V, &V),
    zero: V,
) -> (Vec<(K, V)>, u64) {
    let mut out = Vec::new();
    let mut failed = 0;
    for entry in entries {
        match entry {
            Ok((key, per_cpu)) => {
                let mut total = zero;
                for v in per_cpu.iter() {
                    add(&mut total, v);
                }
                out.push((key, total));
            }
            Err(_) => failed += 1,
        }
    }
    (out, failed)
}

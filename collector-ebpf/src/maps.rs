//! Maps shared by the probe families, and the one way failures to update them are counted.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap},
};
use collector_common::{
    CurrentTask, EntrySlot, ErrorKey, MapErrorSite, SyscallKey, SyscallStats, TargetId,
    events::TargetCounts,
    maps::{MAX_TARGETS, PID_INDEXED_DEFAULT, SWITCHES_ENTRIES, SYSCALL_ERRORS_ENTRIES, SYSCALL_STATS_ENTRIES},
    target_slot,
};

/// Target of each process, indexed by tgid: [`collector_common::TargetId::slot`], 0 = not a
/// target, with [`collector_common::PID_TREE`] set for `--pid` trees. An array, not a hash: the lookup every syscall of every process pays is then an
/// inlined bounds check and load. Resized to the host's `pid_max` by the agent.
#[map]
pub static TARGET_OF: Array<u32> = Array::with_max_entries(PID_INDEXED_DEFAULT, 0);

/// Which target the task last seen in a syscall on this CPU belongs to, keyed by that
/// task's `struct pt_regs` address. `sys_enter`/`sys_exit` get the pt_regs pointer as
/// their first argument for free, and it is unique per thread (it sits at the top of the
/// thread's kernel stack), so most syscalls of every process on the host are filtered with
/// one per-CPU load and a compare, without a helper call: the benchmark measured the two
/// `bpf_get_current_pid_tgid` calls of a plain tgid-indexed check at ~23 ns per syscall
/// over the empty-program floor.
///
/// Why a cache checked against the caller rather than a slot written on context switch
/// (the first design): on Linux 6.18 under nginx + wrk load, about 1 syscall in 4000 of a
/// target ran on a CPU whose last `sched_switch` had switched to another task, so a slot
/// kept by sched_switch named the wrong task and lost accepts and bytes. A cache entry
/// that names its task cannot be applied to another one. `sched_switch` still clears the
/// slot (`processes.rs`), so a stack reused by a new thread after an exit never inherits
/// an old entry.
#[map]
pub static CURRENT: PerCpuArray<CurrentTask> = PerCpuArray::with_max_entries(1, 0);

/// Switches the agent sets once a family is attached (`collector_common::maps::SWITCH_*`):
/// a family that the kernel refused is then never fed by another family's program.
#[map]
pub static SWITCHES: Array<u32> = Array::with_max_entries(SWITCHES_ENTRIES, 0);

/// Whether switch `index` is on.
#[inline(always)]
pub fn switched_on(index: u32) -> bool {
    SWITCHES.get(index).copied() == Some(1)
}

/// The target of the thread whose syscall passes `regs` to `sys_enter`/`sys_exit`; 0 when
/// it is not a target. After a context switch the first syscall pays one helper call and a
/// `TARGET_OF` load; the rest of that thread's syscalls on this CPU hit the cache.
/// Also says whether the answer was looked up (a cache miss, after a context switch or a
/// change of target) rather than cached.
#[inline(always)]
pub fn syscall_target(regs: u64) -> (u32, bool) {
    let Some(slot) = CURRENT.get_ptr_mut(0) else {
        return (0, false);
    };
    let slot = unsafe { &mut *slot };
    if slot.regs == regs {
        return (slot.target, false);
    }
    let target = target_slot(TARGET_OF.get(current_tgid()).copied().unwrap_or(0));
    *slot = CurrentTask { regs, target, _pad: 0 };
    (target, true)
}

/// Forgets this CPU's cached task (on a context switch, or when its target changed).
#[inline(always)]
pub fn forget_current_task() {
    if let Some(slot) = CURRENT.get_ptr_mut(0) {
        unsafe { (*slot).regs = 0 };
    }
}

/// The current process's target slot and id, if it is a target: one helper call and a
/// `TARGET_OF` load, for the probes that have no pt_regs to key [`CURRENT`] with.
#[inline(always)]
pub fn target_of_current() -> Option<(u32, TargetId)> {
    let slot = target_slot(*TARGET_OF.get(current_tgid())?);
    TargetId::from_slot(slot).map(|id| (slot, id))
}

/// The current process (thread-group) id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Syscall entry state, indexed by thread id (see `syscalls.rs` for why not a hash map).
/// Resized to `pid_max` by the agent.
#[map]
pub static ENTRY: Array<EntrySlot> = Array::with_max_entries(PID_INDEXED_DEFAULT, 0);

/// Adds to a target's process and thread counts in `TARGET_COUNTS`.
#[inline(always)]
pub fn add_counts(target: TargetId, processes: i64, threads: i64) {
    if let Some(counts) = TARGET_COUNTS.get_ptr_mut(target.0) {
        unsafe {
            (*counts).processes += processes;
            (*counts).threads += threads;
        }
    }
}

/// Processes and threads each target gained (fork) minus lost (exit) since the agent filled
/// `TARGET_OF`, indexed by target id. Per-CPU so forks on different CPUs need no atomics.
#[map]
pub static TARGET_COUNTS: PerCpuArray<TargetCounts> = PerCpuArray::with_max_entries(MAX_TARGETS, 0);

#[map]
pub static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

#[map]
pub static SYSCALL_ERRORS: PerCpuHashMap<ErrorKey, u64> = PerCpuHashMap::with_max_entries(SYSCALL_ERRORS_ENTRIES, 0);

/// Failed map updates, indexed by [`MapErrorSite`].
#[map]
pub static MAP_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MapErrorSite::ALL.len() as u32, 0);

/// Counts a failed update of the map at `site`; the agent exports it as
/// `collector_bpf_map_errors_total{map}`.
#[inline(always)]
pub fn count_map_error(site: MapErrorSite) {
    if let Some(n) = MAP_ERRORS.get_ptr_mut(site as u32) {
        unsafe { *n += 1 };
    }
}

/// Returns the per-CPU value for `key`, inserting `zero` first when the key is new.
/// A full map is counted at `site` and yields `None`.
#[inline(always)]
pub fn get_or_insert<K, V>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V, site: MapErrorSite) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Some(v);
    }
    // BPF_NOEXIST: another CPU may have inserted the key meanwhile; its per-CPU slot for
    // this CPU is zeroed either way, so losing the race is fine.
    const BPF_NOEXIST: u64 = 1;
    let _ = map.insert(key, zero, BPF_NOEXIST);
    let v = map.get_ptr_mut(key);
    if v.is_none() {
        count_map_error(site);
    }
    v
}

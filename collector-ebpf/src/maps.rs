//! Maps shared by the probe families, and the one way failures to update them are counted.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, Queue},
};
use collector_common::{
    CurrentTask, EntrySlot, ErrorKey, LEFT_TARGET, MapErrorSite, NO_ENTRY, SERIES_ROW_SYSCALLS, SeriesRow, SyscallKey,
    SyscallStats, TargetId,
    events::TargetCounts,
    maps::{
        MAX_TARGETS, SWITCHES_ENTRIES, SYSCALL_ERRORS_ENTRIES, SYSCALL_STATS_ENTRIES, TARGET_PROCESSES_ENTRIES,
        TARGET_THREADS_ENTRIES,
    },
    target_slot,
};

/// Target of each target process, by tgid: [`collector_common::TargetId::slot`] with
/// [`collector_common::PID_TREE`] set for `--pid` trees; no entry = not a target.
///
/// A hash sized by target processes, not an array indexed by tgid: an array must cover
/// `pid_max`, and at the 4,194,304 that systemd sets on 64-bit hosts it took 32 MiB of
/// kernel memory (charged to the agent's memory cgroup), while a pid above a `pid_max`
/// raised after start had no slot at all. The syscall path looks it up on a [`CURRENT`]
/// miss, once per context switch of a thread that makes a syscall, not per syscall; the
/// process probes (fork, exec, exit) and the socket probes once per event.
#[map]
pub static TARGET_OF: HashMap<u32, u32> = HashMap::with_max_entries(TARGET_PROCESSES_ENTRIES, 0);

/// Process `tgid`'s value in `TARGET_OF`, 0 when it is not a target.
#[inline(always)]
pub fn target_value(tgid: u32) -> u32 {
    unsafe { TARGET_OF.get(&tgid) }.copied().unwrap_or(0)
}

/// Sets process `tgid`'s `TARGET_OF` value, 0 removing it; a failed update is counted.
#[inline(always)]
pub fn set_target_value(tgid: u32, value: u32) -> bool {
    // Most processes never were targets: a lookup, not a delete that takes the bucket lock.
    let done = if value == 0 {
        target_value(tgid) == 0 || TARGET_OF.remove(&tgid).is_ok()
    } else {
        TARGET_OF.insert(&tgid, &value, 0).is_ok()
    };
    if !done {
        count_map_error(MapErrorSite::TargetOf);
    }
    done
}

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
///
/// An entry is only good for the `TARGETS_GENERATION` it was made in: a cgroup move runs in
/// the task that writes `cgroup.procs`, and the agent writes `TARGET_OF` from its own
/// threads, while the moved process may be running on another CPU. A thread that does not
/// block (a syscall loop, a read that finds its data waiting) goes through no context switch,
/// so clearing the writer's CPU alone left it counted under its old target: seen in a Linux
/// 5.10 guest, where a process moved into a target cgroup as it entered `read` had none of
/// its next 300 syscalls counted.
#[map]
pub static CURRENT: PerCpuArray<CurrentTask> = PerCpuArray::with_max_entries(1, 0);

/// Bumped after every change of `TARGET_OF` for a process that may be running: by
/// [`targets_changed`] in the kernel, and by the agent, which maps it
/// (`BPF_F_MMAPABLE`, Linux 5.5+) so that both bumps are one atomic add on the same word.
#[map]
pub static TARGETS_GENERATION: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The current `TARGETS_GENERATION` (an inlined array load).
#[inline(always)]
fn targets_generation() -> u64 {
    TARGETS_GENERATION.get(0).copied().unwrap_or(0)
}

/// Says that `TARGET_OF` changed: every CPU's [`CURRENT`] entry is stale from now on.
///
/// An atomic add, as the agent's bump may come at the same moment. The BPF target has no
/// `AtomicU64::fetch_add` (it declares no compare-and-swap), so this is the intrinsic that
/// method wraps; its result is unused, so it compiles to the plain atomic add (`BPF_XADD`)
/// that Linux 5.10 knows, not a fetching one (5.12+).
#[inline(always)]
pub fn targets_changed() {
    if let Some(generation) = TARGETS_GENERATION.get_ptr_mut(0) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(generation, 1) };
    }
}

/// Switches the agent sets once a family is attached (`collector_common::maps::SWITCH_*`):
/// a family that the kernel refused is then never fed by another family's program.
#[map]
pub static SWITCHES: Array<u32> = Array::with_max_entries(SWITCHES_ENTRIES, 0);

/// Whether switch `index` is on.
#[inline(always)]
pub fn switched_on(index: u32) -> bool {
    SWITCHES.get(index).copied() == Some(1)
}

/// The target and `ENTRY` slot of the thread whose syscall passes `regs` to
/// `sys_enter` (`at_entry`) or `sys_exit`: target 0 when it is not a target. After a context
/// switch the first syscall pays one helper call and a `TARGET_OF` lookup (a target thread
/// also its `THREAD_SLOTS` lookup); the rest of that thread's syscalls on this CPU hit the
/// cache.
///
/// Only `sys_enter` hands out and takes back slots, as only it writes entries: a target
/// thread gets one, and one of a process that left its target gives its own back cleared,
/// so no entry made before it left can be taken for a later call's if it rejoins (a target
/// change makes every cached entry stale, so a miss is enough). `sys_exit` only looks a slot up,
/// and caches neither a target without one nor a thread that left, so that the next
/// `sys_enter` does that work. Keeping the slot pool's branches out of `sys_exit` matters:
/// Linux 5.10's verifier walks every way through them again through its byte loops, and
/// stops at a million instructions.
#[inline(always)]
pub fn syscall_target(regs: u64, at_entry: bool) -> Caller {
    let Some(slot) = CURRENT.get_ptr_mut(0) else {
        return Caller::NONE;
    };
    let slot = unsafe { &mut *slot };
    // Only sys_enter checks the generation: a syscall belongs to the target it entered
    // under, and sys_exit finds the entry sys_enter cached for it (or, after a context
    // switch, looks it up anew).
    if slot.regs == regs && (!at_entry || slot.generation == targets_generation()) {
        return Caller::of(slot);
    }
    // The generation an entry is good for is read before TARGET_OF, so that a change made
    // after it bumps past it. sys_exit leaves the slot's as it is: it was read earlier
    // still, so it is as safe (a bump since makes sys_enter look again). Reading the map
    // there, or keeping the generation in what this returns, sent Linux 5.10's verifier
    // through sys_exit's byte loops once more, past its million-instruction limit.
    if at_entry {
        slot.generation = targets_generation();
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let value = target_value((pid_tgid >> 32) as u32);
    let target = target_slot(value);
    let entry = if !at_entry {
        if target != 0 {
            let Some(&entry) = (unsafe { THREAD_SLOTS.get(&tid) }) else {
                return Caller {
                    target,
                    entry: NO_ENTRY,
                }; // not cached: sys_enter gives it a slot
            };
            entry
        } else if value == LEFT_TARGET {
            return Caller::NONE; // not cached: sys_enter takes its slot back
        } else {
            NO_ENTRY
        }
    } else if target != 0 {
        entry_of(tid)
    } else {
        if value == LEFT_TARGET {
            release_entry_of(tid);
        }
        NO_ENTRY
    };
    slot.regs = regs;
    slot.target = target;
    slot.entry = entry;
    slot.tid = tid;
    Caller::of(slot)
}

/// What the syscall path needs to know of its caller.
#[derive(Clone, Copy)]
pub struct Caller {
    /// [`collector_common::TargetId::slot`], 0 = not a target.
    pub target: u32,
    /// Its `ENTRY` slot, [`NO_ENTRY`] when it has none.
    pub entry: u32,
}

impl Caller {
    const NONE: Caller = Caller {
        target: 0,
        entry: NO_ENTRY,
    };

    #[inline(always)]
    fn of(cached: &CurrentTask) -> Caller {
        Caller {
            target: cached.target,
            entry: cached.entry,
        }
    }
}

/// Forgets this CPU's cached task (on a context switch: a new thread may reuse the stack).
#[inline(always)]
pub fn forget_current_task() {
    if let Some(slot) = CURRENT.get_ptr_mut(0) {
        unsafe { (*slot).regs = 0 };
    }
}

/// The target slot and tid of the thread running on this CPU (leaving it, at a context
/// switch), `None` when it is no target. This CPU's [`CURRENT`] entry answers when it is of
/// the generation now: the running thread made a syscall since it came to this CPU and no
/// target changed since. A cached "no target" is taken without a helper call (the cost
/// every switch of the host pays); a target is checked against the caller's tid, and
/// anything else is a `TARGET_OF` lookup. Were the entry another thread's (a switch the
/// programs did not see: only at start, before this program first cleared it), a target
/// thread would be passed over once: what `sched.rs` reads per thread is then counted at its
/// next switch, unless that was its first switch as a target (which only takes a starting
/// point).
#[inline(always)]
pub fn target_of_running() -> Option<(u32, u32)> {
    let cached = CURRENT
        .get(0)
        .filter(|c| c.regs != 0 && c.generation == targets_generation());
    if cached.is_some_and(|c| c.target == 0) {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return None; // the idle task, whose switches are most of an idle host's
    }
    let target = match cached {
        Some(c) if c.tid == tid => c.target,
        _ => target_slot(target_value((pid_tgid >> 32) as u32)),
    };
    (target != 0).then_some((target, tid))
}

/// The current process's target slot and id, if it is a target: one helper call and a
/// `TARGET_OF` lookup, for the probes that have no pt_regs to key [`CURRENT`] with.
#[inline(always)]
pub fn target_of_current() -> Option<(u32, TargetId)> {
    let slot = target_slot(target_value(current_tgid()));
    TargetId::from_slot(slot).map(|id| (slot, id))
}

/// The current process (thread-group) id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Syscall entry state of target threads, one slot per thread for its life. Indexed by a
/// slot the thread takes from `FREE_SLOTS` at its first syscall as a target (its tid keeps
/// it in `THREAD_SLOTS`), and the [`CURRENT`] cache holds it, so the per-syscall access stays
/// an inlined array load. Not a hash keyed by tid: an insert and a delete per call cost far
/// more (`syscalls.rs`). Not an array indexed by tid: that must cover `pid_max`, 64 MiB at
/// 4,194,304. A slot belongs to one thread, so no two CPUs ever write one at once.
#[map]
pub static ENTRY: Array<EntrySlot> = Array::with_max_entries(TARGET_THREADS_ENTRIES, 0);

/// The `ENTRY` slot of each target thread that has made a syscall, by tid.
#[map]
pub static THREAD_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(TARGET_THREADS_ENTRIES, 0);

/// The `ENTRY` slots no thread holds; the agent fills it with every slot before attaching.
#[map]
pub static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(TARGET_THREADS_ENTRIES, 0);

/// Thread `tid`'s `ENTRY` slot: the one it holds, else a free one, taken and cleared.
/// [`NO_ENTRY`] (counted, each time the thread tries after a context switch) when none is
/// free: its syscalls are then not timed and their bytes not counted (`syscalls.rs`).
#[inline(always)]
fn entry_of(tid: u32) -> u32 {
    if let Some(&held) = unsafe { THREAD_SLOTS.get(&tid) } {
        return held;
    }
    let Ok(Some(slot)) = FREE_SLOTS.pop() else {
        count_map_error(MapErrorSite::ThreadSlots);
        return NO_ENTRY;
    };
    if THREAD_SLOTS.insert(&tid, &slot, u64::from(BPF_NOEXIST)).is_err() {
        // THREAD_SLOTS has room for every slot, so this cannot happen; if it did, the slot
        // goes back rather than leak.
        let _ = FREE_SLOTS.push(slot, 0);
        count_map_error(MapErrorSite::ThreadSlots);
        return NO_ENTRY;
    }
    if let Some(entry) = ENTRY.get_ptr_mut(slot) {
        unsafe { *entry = EntrySlot::default() };
    }
    slot
}

/// Slot `entry` of `ENTRY`.
#[inline(always)]
pub fn entry_slot(entry: u32) -> Option<&'static mut EntrySlot> {
    ENTRY.get_ptr_mut(entry).map(|e| unsafe { &mut *e })
}

/// Thread `tid` gives back its slot, if it holds one, cleared, to `FREE_SLOTS`: it exits,
/// or left its target. No other CPU's [`CURRENT`] still names it: each was cleared when the
/// thread last left that CPU. Its own CPU's does until the next switch; an exiting thread
/// makes no more syscalls, and one that left its target is cached there with [`NO_ENTRY`].
#[inline(always)]
pub fn release_entry_of(tid: u32) {
    let Some(&slot) = (unsafe { THREAD_SLOTS.get(&tid) }) else {
        return;
    };
    if THREAD_SLOTS.remove(&tid).is_ok() {
        if let Some(entry) = entry_slot(slot) {
            *entry = EntrySlot::default();
        }
        let _ = FREE_SLOTS.push(slot, 0);
    }
}

/// A non-leader thread exec'd and took the leader's pid (`old_tid` -> `tid`): its slot now
/// goes by the new tid (the leader's own slot went back when the leader exited).
#[inline(always)]
pub fn rename_entry_of(old_tid: u32, tid: u32) {
    let Some(&slot) = (unsafe { THREAD_SLOTS.get(&old_tid) }) else {
        return;
    };
    // Removed first: with every slot taken the hash has no room for a further key. Only
    // this thread uses either key, so nothing runs in between.
    if THREAD_SLOTS.remove(&old_tid).is_ok() && THREAD_SLOTS.insert(&tid, &slot, 0).is_err() {
        let _ = FREE_SLOTS.push(slot, 0);
        count_map_error(MapErrorSite::ThreadSlots);
    }
}

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

/// Latency aggregates, one slot per (target, syscall) pair, found through [`SERIES_ROWS`] (or
/// [`SYSCALL_SERIES`]). A per-CPU array, not a per-CPU hash keyed by the pair: the verifier
/// inlines a per-CPU array lookup where the JIT has per-CPU instructions
/// (`percpu_array_map_gen_lookup`, kernel/bpf/arraymap.c; x86-64 on 6.18 here), where a hash
/// lookup is a call that hashes the key; on these machines (AMD, where every return goes
/// through the Safe-RET thunk) that call was 44 of the 147 ns `sys_exit` took per target
/// call (BENCHMARKS.md). Older kernels call a helper for it, one that indexes, not hashes.
#[map]
pub static SYSCALL_STATS: PerCpuArray<SyscallStats> = PerCpuArray::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

/// Which `SYSCALL_STATS` slot each (target, syscall) pair has: the truth that the agent reads
/// at scrape and deletes at a target's expiry, and where two CPUs that meet a new pair at
/// once agree on one slot (`BPF_NOEXIST`).
#[map]
pub static SYSCALL_SERIES: HashMap<SyscallKey, u32> = HashMap::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

/// The `SYSCALL_STATS` slots no pair holds, zeroed; the agent fills it at load and gives an
/// expired target's slots back.
#[map]
pub static FREE_SERIES: Queue<u32> = Queue::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

/// Each target's [`SeriesRow`], by target id: its `SYSCALL_STATS` slot per syscall number,
/// so a call finds its aggregate with two inlined array loads. Every CPU that fills an entry
/// writes the slot `SYSCALL_SERIES` holds, so racing writers agree; the agent clears the row
/// when the target expires, before it gives the slots back.
#[map]
pub static SERIES_ROWS: Array<SeriesRow> = Array::with_max_entries(MAX_TARGETS, 0);

/// This CPU's aggregate of syscall `nr` for target slot `target`, taking a free
/// `SYSCALL_STATS` slot for a pair not seen before. `None` (counted) when no slot is free.
#[inline(always)]
pub fn syscall_stats(target: u32, nr: u32) -> Option<*mut SyscallStats> {
    let row = TargetId::from_slot(target).and_then(|t| SERIES_ROWS.get_ptr_mut(t.0));
    let cached = row
        .filter(|_| (nr as usize) < SERIES_ROW_SYSCALLS)
        .map(|row| unsafe { &mut *(*row).series.as_mut_ptr().add(masked_index(nr, SERIES_ROW_SYSCALLS)) });
    if let Some(series @ 1..) = cached.as_deref().copied() {
        return SYSCALL_STATS.get_ptr_mut(u32::from(series) - 1);
    }
    let key = SyscallKey { target, nr };
    let series = match unsafe { SYSCALL_SERIES.get(&key) } {
        Some(&series) => series,
        None => new_series(&key)?,
    };
    if let (Some(cached), Ok(plus_one)) = (cached, u16::try_from(series + 1)) {
        *cached = plus_one;
    }
    SYSCALL_STATS.get_ptr_mut(series)
}

/// `index` masked to below `len` (a power of two), for an index already checked against
/// `len`: the mask is what Linux 5.10's verifier sees. It keeps no bounds for a scalar that
/// went through the stack (5.13 learnt to), and LLVM reloads a checked index from the stack
/// after a helper call; the empty `asm!` (libbpf's `barrier_var`) keeps LLVM from dropping
/// the mask as redundant with the check.
#[inline(always)]
fn masked_index(index: u32, len: usize) -> usize {
    let mut index = index as usize;
    unsafe { core::arch::asm!("/* {0} */", inout(reg) index, options(nomem, nostack, preserves_flags)) };
    index & (len - 1)
}

/// A free slot for the new pair `key`, or the one another CPU gave it first.
#[inline(always)]
fn new_series(key: &SyscallKey) -> Option<u32> {
    let Ok(Some(series)) = FREE_SERIES.pop() else {
        count_map_error(MapErrorSite::SyscallStats);
        return None;
    };
    if SYSCALL_SERIES.insert(key, &series, u64::from(BPF_NOEXIST)).is_ok() {
        return Some(series);
    }
    // Another CPU was first (or the map is full, which a free slot rules out): ours goes
    // back unused, still zeroed.
    let _ = FREE_SERIES.push(series, 0);
    let winner = unsafe { SYSCALL_SERIES.get(key) }.copied();
    if winner.is_none() {
        count_map_error(MapErrorSite::SyscallStats);
    }
    winner
}

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

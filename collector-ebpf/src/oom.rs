//! OOM kills of target processes: one `process.oom_kill` record per process the OOM killer
//! chose, with its pid, name and resident pages; `collector_oom_kills_total` is defined on
//! the event.
//!
//! Hook: oom:mark_victim (include/trace/events/oom.h), from mm/oom_kill.c:mark_oom_victim(),
//! which __oom_kill_process() calls right after sending the victim SIGKILL, in the task
//! whose allocation failed (the victim only when it ran out itself). Its arguments changed
//! within stable releases: TP_PROTO(int pid) at first, TP_PROTO(struct task_struct *task,
//! uid_t uid) since 6.8 and in the stable kernels that took that change (5.10.265, 6.1.166
//! and 6.12.19 have it); the agent loads the program that fits the BTF's
//! `btf_trace_mark_victim`, as for sched_process_exit. It fires for each thread the OOM
//! killer marks (TIF_MEMDIE), for a cgroup's limit (memory.max) or the whole machine's:
//! the victim it sent SIGKILL, other processes sharing its memory, and a task it found
//! already exiting (which it marks instead of choosing another); each thread of a dying
//! victim that allocates again is marked too. So a process is reported once
//! (`OOM_CLAIMS`, by its identity), whichever of its threads is marked first.
//!
//! Resident pages: mm->rss_stat's MM_FILEPAGES, MM_ANONPAGES and MM_SHMEMPAGES
//! (include/linux/mm_types_task.h), summed as the kernel's "Killed process" line sums them;
//! percpu_counter's `count` (6.2+) is the counter without the per-CPU batches not yet folded
//! in, as the kernel's own report reads it (get_mm_counter()).
use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use collector_common::{
    ExitClaim,
    events::{COMM_LEN, EventHeader, EventKind, OomRecord, PAGES_UNKNOWN},
    target_slot,
};

use crate::{
    events::submit,
    globals::{offset, read_field},
    maps::target_value,
};

/// Processes reported, by tgid and their leader's start time (0 on kernels that pass only a
/// pid, whichever task is at hand), until the process's exit (`forget`); least recently
/// used evicted.
#[map]
static OOM_CLAIMS: LruHashMap<ExitClaim, u8> = LruHashMap::with_max_entries(1024, 0);

/// Target process `tgid`, whose leader started at `start_ns`, has exited: its claims go, so
/// a process that later has its pid is reported.
#[inline(always)]
pub fn forget(tgid: u32, start_ns: u64) {
    for start_ns in [start_ns, 0] {
        let claim = ExitClaim {
            tgid,
            _pad: 0,
            start_ns,
        };
        if unsafe { OOM_CLAIMS.get(&claim) }.is_some() {
            let _ = OOM_CLAIMS.remove(&claim);
        }
    }
}

/// The task the OOM killer marked.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn collector_oom_victim(ctx: RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let (Ok(tid), Ok(tgid)) = (
        read_field::<i32>(task, offset!(task_pid)),
        read_field::<i32>(task, offset!(task_tgid)),
    ) else {
        return 0;
    };
    let comm = read_field::<[u8; COMM_LEN]>(task, offset!(task_comm)).unwrap_or_default();
    let leader = read_field::<*const u8>(task, offset!(task_group_leader)).unwrap_or(core::ptr::null());
    let start_ns = read_field::<u64>(leader, offset!(task_start_time)).unwrap_or(0);
    emit(task, tgid as u32, start_ns, tid as u32, comm);
    0
}

/// Kernels that pass only the victim's pid: its task is at hand only when it is the task
/// that ran out of memory (current; a process alone in its memory-limited cgroup is);
/// otherwise the record has no name or pages (no helper finds a task by pid without kfuncs,
/// which Linux 6.2 brought), and the victim is looked up by that pid, a thread group's when
/// the OOM killer chose its leader, as it does unless the leader has exited.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn collector_oom_victim_pid(ctx: RawTracePointContext) -> i32 {
    let pid = ctx.arg::<u64>(0) as u32;
    if ctx.pid() == pid {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        emit(task, ctx.tgid(), 0, pid, bpf_get_current_comm().unwrap_or_default());
    } else {
        emit(core::ptr::null(), pid, 0, pid, [0; COMM_LEN]);
    }
    0
}

/// Reports process `tgid` (its leader started at `start_ns`) once; `task` (null when
/// unknown) gives its pages.
#[inline(always)]
fn emit(task: *const u8, tgid: u32, start_ns: u64, tid: u32, comm: [u8; COMM_LEN]) {
    let target = target_slot(target_value(tgid));
    if target == 0 {
        return;
    }
    let claim = ExitClaim {
        tgid,
        _pad: 0,
        start_ns,
    };
    if OOM_CLAIMS.insert(&claim, &0, u64::from(BPF_NOEXIST)).is_err() {
        return; // reported already
    }
    let record = OomRecord {
        header: EventHeader {
            kind: EventKind::ProcessOomKill as u32,
            size: size_of::<OomRecord>() as u32,
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            target,
            pid: tgid,
        },
        pages: resident_pages(task),
        tid,
        _pad: 0,
        comm,
    };
    submit(EventKind::ProcessOomKill, &record);
}

/// `task`'s resident pages, [`PAGES_UNKNOWN`] when they cannot be read (no task, or no mm:
/// a kernel thread, or one past exit_mm()).
#[inline(always)]
fn resident_pages(task: *const u8) -> u64 {
    let Ok(mm) = read_field::<*const u8>(task, offset!(task_mm)) else {
        return PAGES_UNKNOWN;
    };
    if mm.is_null() {
        return PAGES_UNKNOWN;
    }
    let counter = |at: u32| {
        unsafe { bpf_probe_read_kernel(mm.add(at as usize) as *const i64) }
            .unwrap_or(0)
            .max(0)
    };
    (counter(offset!(mm_rss_file)) + counter(offset!(mm_rss_anon)) + counter(offset!(mm_rss_shmem))) as u64
}

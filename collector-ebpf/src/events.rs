//! The ring buffer of low-rate events, and the one place a record that did not fit is
//! counted (`EVENT_DROPS`, exported as `collector_events_dropped_total{stage="kernel"}`).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, generated,
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use collector_common::{
    events::{COMM_LEN, EventHeader, EventKind, ExecRecord, ProcessRecord, SyscallRecord},
    maps::EVENTS_DEFAULT_BYTES,
};

/// Resized by the agent (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_DEFAULT_BYTES, 0);

/// Records lost because the ring buffer was full, indexed by [`EventKind::index`].
#[map]
pub static EVENT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::ALL.len() as u32, 0);

/// 1 at [`EventKind::index`] while some handler of the agent consumes that event, for the
/// events sent only then (`http.request`); the agent writes it as handlers come and go.
#[map]
pub static EVENTS_WANTED: Array<u32> = Array::with_max_entries(EventKind::ALL.len() as u32, 0);

/// Whether the agent consumes `kind` now.
#[inline(always)]
pub fn wanted(kind: EventKind) -> bool {
    EVENTS_WANTED.get(kind.index()).copied() == Some(1)
}

/// What a process record says besides its kind.
pub struct Process {
    pub target: u32,
    pub pid: u32,
    pub ppid: u32,
    pub exit_code: u32,
    pub start_ns: u64,
}

#[inline(always)]
fn record(kind: EventKind, size: usize, p: &Process) -> ProcessRecord {
    ProcessRecord {
        header: EventHeader {
            kind: kind as u32,
            size: size as u32,
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            target: p.target,
            pid: p.pid,
        },
        ppid: p.ppid,
        exit_code: p.exit_code,
        start_ns: p.start_ns,
        // The current task's name: the parent's at fork (the child's is a copy of it), the
        // new program's at exec, the dying process's at exit.
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Sends a `process.start` or `process.exit` record.
#[inline(always)]
pub fn emit_process(kind: EventKind, p: &Process) {
    submit(kind, &record(kind, size_of::<ProcessRecord>(), p));
}

/// Sends a fully built record of `kind`, or counts it as dropped when the ring is full.
#[inline(always)]
pub fn submit<T: Copy + 'static>(kind: EventKind, record: &T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(*record);
            entry.submit(0);
        }
        None => count_drop(kind),
    }
}

/// Sends a `process.exec` record with the path the program was exec'd by.
#[inline(always)]
pub fn emit_exec(p: &Process, filename: *const u8) {
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_drop(EventKind::ProcessExec);
        return;
    };
    let exec = entry.as_mut_ptr();
    unsafe {
        (*exec).process = record(EventKind::ProcessExec, size_of::<ExecRecord>(), p);
        if bpf_probe_read_kernel_str_bytes(filename, &mut (*exec).filename).is_err() {
            (*exec).filename[0] = 0;
        }
    }
    entry.submit(0);
}

/// Sends a `syscall.slow` record for the calling thread's syscall `nr` of `target`, which
/// returned `ret` at `now` after `duration_ns`. Written in place, like `emit_exec`: no copy
/// of the record on `sys_exit`'s stack.
#[inline(always)]
pub fn emit_slow_syscall(target: u32, nr: u32, ret: i64, duration_ns: u64, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<SyscallRecord>(0) else {
        count_drop(EventKind::SyscallSlow);
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).header = EventHeader {
            kind: EventKind::SyscallSlow as u32,
            size: size_of::<SyscallRecord>() as u32,
            ktime_ns: now,
            target,
            pid: (pid_tgid >> 32) as u32,
        };
        (*r).duration_ns = duration_ns;
        (*r).ret = ret;
        (*r).tid = pid_tgid as u32;
        (*r).nr = nr;
        if generated::bpf_get_current_comm((*r).comm.as_mut_ptr().cast(), COMM_LEN as u32) != 0 {
            (*r).comm = [0; COMM_LEN];
        }
    }
    entry.submit(0);
}

#[inline(always)]
pub fn count_drop(kind: EventKind) {
    if let Some(n) = EVENT_DROPS.get_ptr_mut(kind.index()) {
        unsafe { *n += 1 };
    }
}

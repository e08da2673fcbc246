//! Ring-buffer records: the low-rate events the kernel sends one by one (process lifecycle).
//! High-rate data (syscalls) never goes through here; it is aggregated in maps.
//!
//! Every record starts with [`EventHeader`]; `kind` says which record follows and `size`
//! its total length, so the agent can check a record before it reads one.

pub const COMM_LEN: usize = 16;
/// Longest exec filename kept, NUL included; longer paths are cut.
pub const FILENAME_LEN: usize = 256;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ProcessStart = 1,
    ProcessExec = 2,
    ProcessExit = 3,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::ProcessStart, EventKind::ProcessExec, EventKind::ProcessExit];

    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::ProcessStart),
            2 => Some(EventKind::ProcessExec),
            3 => Some(EventKind::ProcessExit),
            _ => None,
        }
    }

    /// The telemetry event name it becomes.
    pub const fn event_name(self) -> &'static str {
        match self {
            EventKind::ProcessStart => "process.start",
            EventKind::ProcessExec => "process.exec",
            EventKind::ProcessExit => "process.exit",
        }
    }

    /// Index into the kernel's `EVENT_DROPS` array.
    pub const fn index(self) -> u32 {
        self as u32 - 1
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// [`crate::TargetId::slot`] of the process.
    pub target: u32,
    /// The process (thread-group) id.
    pub pid: u32,
}

/// `process.start`, `process.exit`, and the head of `process.exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessRecord {
    pub header: EventHeader,
    /// start: the process that created it.
    pub ppid: u32,
    /// exit: `task_struct.exit_code`, a wait status: exit status << 8, or the signal number
    /// (| 0x80 when it dumped core).
    pub exit_code: u32,
    /// exit: `task_struct.start_time` of the thread-group leader (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub process: ProcessRecord,
    /// `linux_binprm.filename`, NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
}

/// Live processes and threads a target gained minus lost in the kernel since the agent
/// filled `TARGET_OF`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetCounts {
    pub processes: i64,
    pub threads: i64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for TargetCounts {}
}

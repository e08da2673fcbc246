//! Ring-buffer records: the low-rate events the kernel sends one by one (process lifecycle,
//! TCP connections), HTTP requests only while something consumes them (`EVENTS_WANTED`), and
//! syscalls only when one took longer than `--slow-syscall`.
//! High-rate data (syscalls, HTTP requests) is aggregated in maps.
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
    TcpConnect = 4,
    TcpAccept = 5,
    TcpConnectError = 6,
    TcpClose = 7,
    HttpRequest = 8,
    SyscallSlow = 9,
    ProcessOomKill = 10,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::ProcessStart,
        EventKind::ProcessExec,
        EventKind::ProcessExit,
        EventKind::TcpConnect,
        EventKind::TcpAccept,
        EventKind::TcpConnectError,
        EventKind::TcpClose,
        EventKind::HttpRequest,
        EventKind::SyscallSlow,
        EventKind::ProcessOomKill,
    ];

    pub const fn from_u32(v: u32) -> Option<EventKind> {
        if v >= 1 && v as usize <= Self::ALL.len() {
            Some(Self::ALL[v as usize - 1])
        } else {
            None
        }
    }

    /// The telemetry event name it becomes.
    pub const fn event_name(self) -> &'static str {
        match self {
            EventKind::ProcessStart => "process.start",
            EventKind::ProcessExec => "process.exec",
            EventKind::ProcessExit => "process.exit",
            EventKind::TcpConnect => "tcp.connect",
            EventKind::TcpAccept => "tcp.accept",
            EventKind::TcpConnectError => "tcp.connect_error",
            EventKind::TcpClose => "tcp.close",
            EventKind::HttpRequest => "http.request",
            EventKind::SyscallSlow => "syscall.slow",
            EventKind::ProcessOomKill => "process.oom_kill",
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
    /// (| 0x80 when it dumped core). start: the parent's [`crate::TargetId::slot`], 0 when
    /// the parent is no target (a service systemd started with clone3(CLONE_INTO_CGROUP)).
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

/// `tcp.connect`, `tcp.accept`, `tcp.connect_error` and `tcp.close`: the connection's
/// owner (header pid/target and `comm`, from `sockets::Connection`) and endpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRecord {
    pub header: EventHeader,
    /// connect: SYN sent to established; connect_error: SYN sent to failure; close:
    /// established (or accepted) to close.
    pub duration_ns: u64,
    /// close: payload bytes the owner sent and received on the connection.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub comm: [u8; COMM_LEN],
    pub endpoints: Endpoints,
    /// `sockets::DIRECTION_*`.
    pub direction: u8,
    /// close: `sockets::RESET_*` bits, the resets seen on the connection.
    pub resets: u8,
    pub _pad: [u8; 2],
    /// connect_error: `sk_err` when the socket closed.
    pub sk_err: i32,
    /// close: segments retransmitted on the connection.
    pub retransmits: u32,
    pub _pad2: u32,
}

/// `syscall.slow`: one call of a target that took longer than `--slow-syscall`, sent from
/// `sys_exit` (its header's time is the return).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: EventHeader,
    pub duration_ns: u64,
    /// The syscall's return value: -errno for a failed call.
    pub ret: i64,
    /// The calling thread.
    pub tid: u32,
    pub nr: u32,
    pub comm: [u8; COMM_LEN],
}

/// `process.oom_kill`: the OOM killer marked a target process (`header.pid`) as its victim
/// (sent it SIGKILL, or found it exiting).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomRecord {
    pub header: EventHeader,
    /// Its resident pages (anonymous, file and shmem, as the kernel's own OOM report counts
    /// them), [`PAGES_UNKNOWN`] when its task could not be read.
    pub pages: u64,
    /// The thread the OOM killer marked.
    pub tid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// [`OomRecord::pages`] of a victim whose memory could not be read.
pub const PAGES_UNKNOWN: u64 = u64::MAX;

/// Bytes of a request's path (its request target) an `http.request` event carries; a longer
/// one is cut.
pub const PATH_BYTES: usize = 128;

/// A connection's endpoints as `struct sock` has them now.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// Local and remote address: 4 bytes for AF_INET, 16 for AF_INET6, network order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local and remote port, host order.
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
}

/// `http.request`: one completed request of a target (sent only while the agent says some
/// handler consumes it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpRecord {
    /// `pid`: the connection's owner (who accepted or connected it).
    pub header: EventHeader,
    pub duration_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub comm: [u8; COMM_LEN],
    pub endpoints: Endpoints,
    pub status: u16,
    /// `http::Method` and `http::SERVER`/`CLIENT` as numbers.
    pub method: u8,
    pub side: u8,
    /// How many of `path` are the request's: 0 when none was kept (the request came before
    /// the events were wanted, or `HTTP_PATHS` was full).
    pub path_len: u8,
    pub _pad: u8,
    /// The route its path matched: `--http-route` number `route` (1-based), 0 for none
    /// (`http::ROUTE_OTHER`).
    pub route: u16,
    /// The request target as the request line has it, up to the space after it, or cut.
    pub path: [u8; PATH_BYTES],
}

/// Live processes and threads a target gained minus lost in the kernel since the agent
/// filled `TARGET_OF`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetCounts {
    pub processes: i64,
    pub threads: i64,
}

#[cfg(feature = "user")]
mod pod {
    use super::TargetCounts;
    unsafe impl aya::Pod for TargetCounts {}
}

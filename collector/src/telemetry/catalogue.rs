//! Every event the agent emits: its measurements, each with its unit, and its metadata keys.
//! A metric definition may name only what is here (checked when a config is loaded), and the
//! README's event table is this one (a unit test in `kernel_events.rs` checks that the events
//! built from kernel records carry exactly these keys).
use crate::targets::workload::FIELDS;

/// The unit a measurement is in, which a definition's `unit` converts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Byte,
    /// A plain number (processes, file descriptors) or a fraction: no conversion applies.
    Dimensionless,
}

/// One event name and what it carries.
#[derive(Debug)]
pub struct EventSpec {
    pub name: &'static str,
    pub measurements: &'static [(&'static str, Unit)],
    /// The keys it shares with the events of its kind, then its own.
    shared: &'static [&'static str],
    own: &'static [&'static str],
}

impl EventSpec {
    pub fn unit_of(&self, measurement: &str) -> Option<Unit> {
        self.measurements
            .iter()
            .find(|(name, _)| *name == measurement)
            .map(|(_, unit)| *unit)
    }

    /// Its metadata keys: an event of a target also has what is known of a cgroup
    /// target's workload (`namespace` to `unit`: README, Workload names;
    /// `targets/workload/`), so no list here repeats them.
    pub fn metadata(&self) -> impl Iterator<Item = &'static str> {
        let of_target = self.shared.iter().chain(self.own).any(|&k| k == "target");
        let workload: &[&str] = if of_target { FIELDS } else { &[] };
        self.shared.iter().chain(self.own).chain(workload).copied()
    }

    pub fn carries(&self, key: &str) -> bool {
        self.metadata().any(|k| k == key)
    }
}

/// `cgroup` is the v2 path of the event's process (for `process.count`, the target's).
const PROCESS: &[&str] = &["target", "pid", "comm", "ppid", "exe", "cgroup"];
const TCP: &[&str] = &[
    "target",
    "pid",
    "comm",
    "cgroup",
    "family",
    "direction",
    "local_address",
    "local_port",
    "peer_address",
    "peer_port",
];

/// An HTTP request's connection, as TCP events have it, but `direction` is the target's
/// side: `server` or `client`.
const HTTP: &[&str] = TCP;

pub const EVENTS: &[EventSpec] = &[
    // a target process created a new process (fork, clone without CLONE_THREAD);
    // `parent_target`: the creator's target, absent when the creator is no target (a service
    // systemd started into a target cgroup with clone3(CLONE_INTO_CGROUP))
    EventSpec {
        name: "process.start",
        measurements: &[],
        shared: PROCESS,
        own: &["parent_target"],
    },
    // a target process executed a program (`filename` as given to execve)
    EventSpec {
        name: "process.exec",
        measurements: &[],
        shared: PROCESS,
        own: &["filename"],
    },
    // a target process ended (`duration`: its lifetime; `exit_code` or `signal`)
    EventSpec {
        name: "process.exit",
        measurements: &[("duration", Unit::Second)],
        shared: PROCESS,
        own: &["outcome", "exit_code", "signal"],
    },
    // every --poll-interval, for each live target
    EventSpec {
        name: "process.count",
        measurements: &[("processes", Unit::Dimensionless), ("threads", Unit::Dimensionless)],
        shared: &[],
        own: &["target", "cgroup"],
    },
    // every --poll-interval: the agent itself
    EventSpec {
        name: "collector.vm",
        measurements: &[
            ("resident_memory_bytes", Unit::Byte),
            ("cpu_seconds", Unit::Second),
            ("open_fds", Unit::Dimensionless),
            ("ring_buffer_fill", Unit::Dimensionless),
        ],
        shared: &[],
        own: &[],
    },
    // a target's connect() was established (`duration`: SYN to established)
    EventSpec {
        name: "tcp.connect",
        measurements: &[("duration", Unit::Second)],
        shared: TCP,
        own: &[],
    },
    // a target accepted an inbound connection
    EventSpec {
        name: "tcp.accept",
        measurements: &[],
        shared: TCP,
        own: &[],
    },
    // a target's connect() was never established (`duration`: SYN sent to failure;
    // `reason`: refused, timeout, ...)
    EventSpec {
        name: "tcp.connect_error",
        measurements: &[("duration", Unit::Second)],
        shared: TCP,
        own: &["reason"],
    },
    // a target's connection was closed and freed (`duration`: its lifetime; `close_reason`:
    // closed, reset (this side sent one) or reset_by_peer)
    EventSpec {
        name: "tcp.close",
        measurements: &[
            ("duration", Unit::Second),
            ("bytes_sent", Unit::Byte),
            ("bytes_received", Unit::Byte),
            ("retransmits", Unit::Dimensionless),
        ],
        shared: TCP,
        own: &["close_reason"],
    },
    // a target's HTTP request completed (sent by the kernel only while a handler takes it:
    // a definition on it, the --events sink, an /events reader that asked for it)
    EventSpec {
        name: "http.request",
        measurements: &[
            ("duration", Unit::Second),
            ("request_bytes", Unit::Byte),
            ("response_bytes", Unit::Byte),
        ],
        shared: HTTP,
        own: &["method", "path", "status_code", "route"],
    },
    // the OOM killer marked a target process as its victim, once per process (`pages`: its resident
    // pages, absent where the kernel passes only its pid and it was not the task that ran
    // out; `tid`: the thread marked)
    EventSpec {
        name: "process.oom_kill",
        measurements: &[("pages", Unit::Dimensionless)],
        shared: &["target", "pid", "comm", "cgroup"],
        own: &["tid"],
    },
    // a target's syscall took longer than --slow-syscall (sent only with that flag; `errno`
    // when it failed)
    EventSpec {
        name: "syscall.slow",
        measurements: &[("duration", Unit::Second)],
        shared: &["target", "pid", "comm", "cgroup"],
        own: &["tid", "syscall", "errno"],
    },
];

/// The event named `name`.
pub fn find(name: &str) -> Option<&'static EventSpec> {
    EVENTS.iter().find(|e| e.name == name)
}

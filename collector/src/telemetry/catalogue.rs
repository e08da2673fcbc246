//! Every event the agent emits: its measurements, each with its unit, and its metadata keys.
//! A metric definition may name only what is here (checked when a config is loaded), and the
//! README's event table is this one (a unit test in `kernel_events.rs` checks that the events
//! built from kernel records carry exactly these keys).

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
    pub metadata: &'static [&'static str],
    /// When it is emitted, for the README.
    pub about: &'static str,
}

impl EventSpec {
    pub fn unit_of(&self, measurement: &str) -> Option<Unit> {
        self.measurements
            .iter()
            .find(|(name, _)| *name == measurement)
            .map(|(_, unit)| *unit)
    }

    pub fn carries(&self, key: &str) -> bool {
        self.metadata.contains(&key)
    }
}

/// `cgroup` is the v2 path of the event's process (for `process.count`, the target's).
const PROCESS_META: &[&str] = &["target", "pid", "comm", "ppid", "exe", "cgroup"];
const TCP_META: &[&str] = &[
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

pub const EVENTS: &[EventSpec] = &[
    EventSpec {
        name: "process.start",
        measurements: &[],
        metadata: PROCESS_META,
        about: "a target process created a new process (fork, clone without CLONE_THREAD)",
    },
    EventSpec {
        name: "process.exec",
        measurements: &[],
        metadata: &["target", "pid", "comm", "ppid", "exe", "cgroup", "filename"],
        about: "a target process executed a program (`filename` as given to execve)",
    },
    EventSpec {
        name: "process.exit",
        measurements: &[("duration", Unit::Second)],
        metadata: &[
            "target",
            "pid",
            "comm",
            "ppid",
            "exe",
            "cgroup",
            "outcome",
            "exit_code",
            "signal",
        ],
        about: "a target process ended (`duration`: its lifetime; `exit_code` or `signal`)",
    },
    EventSpec {
        name: "process.count",
        measurements: &[("processes", Unit::Dimensionless), ("threads", Unit::Dimensionless)],
        metadata: &["target", "cgroup"],
        about: "every --poll-interval, for each live target",
    },
    EventSpec {
        name: "collector.vm",
        measurements: &[
            ("resident_memory_bytes", Unit::Byte),
            ("cpu_seconds", Unit::Second),
            ("open_fds", Unit::Dimensionless),
            ("ring_buffer_fill", Unit::Dimensionless),
        ],
        metadata: &[],
        about: "every --poll-interval: the agent itself",
    },
    EventSpec {
        name: "tcp.connect",
        measurements: &[("duration", Unit::Second)],
        metadata: TCP_META,
        about: "a target's connect() was established (`duration`: SYN to established)",
    },
    EventSpec {
        name: "tcp.accept",
        measurements: &[],
        metadata: TCP_META,
        about: "a target accepted an inbound connection",
    },
    EventSpec {
        name: "tcp.connect_error",
        measurements: &[],
        metadata: &[
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
            "reason",
        ],
        about: "a target's connect() was never established (`reason`: refused, timeout, ...)",
    },
    EventSpec {
        name: "tcp.close",
        measurements: &[
            ("duration", Unit::Second),
            ("bytes_sent", Unit::Byte),
            ("bytes_received", Unit::Byte),
        ],
        metadata: TCP_META,
        about: "a target's connection was closed and freed (`duration`: its lifetime)",
    },
];

/// The event named `name`.
pub fn find(name: &str) -> Option<&'static EventSpec> {
    EVENTS.iter().find(|e| e.name == name)
}

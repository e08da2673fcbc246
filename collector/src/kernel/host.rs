//! What the host must allow before anything is loaded: the privileges to load tracing
//! programs, and its `pid_max`, which sizes the maps indexed by process and thread id.
use std::io;

use procfs::process::Process;

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The agent lacks CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN).
    #[error(
        "not enough privilege to load eBPF programs: run as root (sudo) or grant CAP_BPF and CAP_PERFMON \
         (setcap cap_bpf,cap_perfmon+ep collector)"
    )]
    Privileges,
    /// /proc/self/status could not be read.
    #[error("cannot read this process's capabilities from /proc/self/status")]
    Status(#[source] procfs::ProcError),
    /// /proc/sys/kernel/pid_max could not be read.
    #[error("cannot read {PID_MAX}")]
    PidMaxRead(#[source] io::Error),
    /// /proc/sys/kernel/pid_max is not a number.
    #[error("unexpected {PID_MAX}: {0:?}")]
    PidMax(String),
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<(), HostError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = Process::myself()
        .and_then(|p| p.status())
        .map_err(HostError::Status)?
        .capeff;
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(HostError::Privileges)
    }
}

/// The host's `pid_max`: one more than the largest process or thread id.
pub fn pid_max() -> Result<u32, HostError> {
    let text = std::fs::read_to_string(PID_MAX).map_err(HostError::PidMaxRead)?;
    text.trim().parse().map_err(|_| HostError::PidMax(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_max_is_read() {
        assert!(pid_max().unwrap() >= 300);
    }
}

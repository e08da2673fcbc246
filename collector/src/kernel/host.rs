//! What the host must allow before anything is loaded: the privileges to load tracing
//! programs.
use procfs::process::Process;

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

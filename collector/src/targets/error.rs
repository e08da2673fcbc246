//! The one error type of the target lifecycle. Each variant says what is wrong and what to
//! do; [`TargetError::is_usage`] tells the user's mistakes (exit code 2) from the host's.
use std::io;

use super::cgroup::fs::CgroupError;
use crate::kernel::maps::KernelMapError;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The same PID was given under two names.
    #[error("--pid {pid} is given as both '{first}' and '{second}'; give each PID one name")]
    PidUnderTwoNames { pid: u32, first: String, second: String },
    /// More distinct PID targets than --max-targets.
    #[error(
        "{0} PID targets given, at most {1} are allowed; group PIDs under shared names (--pid NAME=PID) or raise --max-targets"
    )]
    TooMany(usize, usize),
    /// A `--pid` names no running process.
    #[error("--pid {0}: no process with PID {0} is running; check it with `ps -p {0}`")]
    NoSuchProcess(u32),
    /// A `--pid` names a thread rather than a process (`TARGET_OF` is keyed by process id).
    #[error("--pid {pid}: {pid} is a thread of process {tgid}; give the process id (--pid {tgid})")]
    NotAProcess { pid: u32, tgid: i32 },
    /// A `--pid` process exited while it was being checked.
    #[error("--pid {0}: the process exited; check it with `ps -p {0}`")]
    Exited(u32),
    /// A `--cgroup` path or `--cgroup-pattern` that cannot be used.
    #[error("{flag} {arg}: {source}")]
    Cgroup {
        flag: &'static str,
        arg: String,
        #[source]
        source: CgroupError,
    },
    /// The cgroup v2 hierarchy itself cannot be found or read.
    #[error(transparent)]
    Hierarchy(CgroupError),
    /// /proc could not be listed.
    #[error("cannot list processes in /proc (the agent needs /proc mounted)")]
    Proc(#[source] procfs::ProcError),
    /// Writing a target into the kernel maps failed.
    #[error(transparent)]
    Kernel(#[from] KernelMapError),
    /// The watcher thread could not be started.
    #[error("cannot start the targets watcher thread")]
    Spawn(#[source] io::Error),
    /// The watcher's wake-up pipe could not be made.
    #[error("cannot make the targets watcher's wake-up pipe")]
    Pipe(#[source] io::Error),
}

impl TargetError {
    /// Whether the user's input is at fault (exit code 2) rather than the host (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TargetError::PidUnderTwoNames { .. }
                | TargetError::TooMany(..)
                | TargetError::NoSuchProcess(_)
                | TargetError::NotAProcess { .. }
                | TargetError::Exited(_)
                | TargetError::Cgroup { .. }
        )
    }
}

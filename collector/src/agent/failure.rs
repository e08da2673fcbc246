//! How the agent failed, which decides its exit code.
use crate::targets::TargetError;

/// How the agent failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The user's input is wrong (exit code 2).
    Usage(String),
    /// The host or the kernel refused (exit code 1).
    Runtime(anyhow::Error),
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        if e.is_usage() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Runtime(e.into())
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

pub(super) fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

//! SIGINT, SIGTERM and SIGHUP during start-up: blocked, so that none lands in a program load
//! (the verifier gives up with EAGAIN when the loading thread has a signal pending, and aya
//! then loads the program again with a verifier log, up to 10 times with ever larger logs:
//! a SIGTERM during the load of `sys_exit` kept the agent from stopping for over 5 s), and
//! looked for between the steps instead. Blocked on the agent's first thread, they are
//! blocked in every thread made later; `serve` unblocks them on the thread that runs its
//! future once the runtime's handlers for them are in place, so they are delivered there.
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The three signals blocked in this thread until [`Held::release`]. Dropped without it
/// (start-up stopped or failed), they stay blocked for the rest of the process: unblocking
/// them then would deliver a pending one with its default action, and the agent would die
/// of the SIGTERM it was obeying (or exit by a signal before printing its error).
pub struct Held(SigSet);

impl Held {
    pub fn here() -> nix::Result<Held> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        let mut before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut before))?;
        Ok(Held(before))
    }
}

impl Held {
    /// Unblocks them (once their handlers are in place): one that came is delivered now.
    pub fn release(self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Whether a SIGINT or SIGTERM is waiting (blocked, so not delivered yet).
pub fn stop_requested() -> bool {
    // SAFETY: sigpending fills the set it is given; a zeroed sigset_t is a valid empty set.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigpending(&raw mut pending) } != 0 {
        return false;
    }
    [libc::SIGINT, libc::SIGTERM]
        .into_iter()
        .any(|s| unsafe { libc::sigismember(&raw const pending, s) } == 1)
}

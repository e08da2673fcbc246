//! Taking a mutex without letting one panic spread to every later user of the lock.
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also after a thread panicked while holding it. Every critical section
/// behind the agent's mutexes is a single insert, increment, removal or take, so a panic in
/// one (a bug, logged on its thread) leaves the data whole; serving on beats every later
/// user panicking too.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

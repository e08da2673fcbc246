//! The one way the agent's threads and tasks are told to stop.
//!
//! A pipe whose write end is closed on [`Shutdown::trigger`]: its read end then polls as
//! ready (POLLHUP) for ever. So a thread that already sleeps in `poll(2)` on its own fds (the
//! ring-buffer reader, the targets watcher) adds this fd and wakes at once, a thread with
//! nothing to wait for sleeps on it with a timeout ([`Shutdown::wait`]), and an async task
//! awaits it ([`Shutdown::stopped`]). Telemetry handler threads are the exception by design:
//! they end when their queue closes, after the producers have stopped, so they drain first.
use std::{
    io::{self, PipeReader, PipeWriter},
    os::fd::{AsFd, BorrowedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use crate::sync::lock;

/// `timeout` as poll(2) takes it: whole milliseconds, rounded up, so that a wait never ends
/// before it is due and then loops on a sub-millisecond remainder.
pub fn poll_timeout(timeout: Duration) -> PollTimeout {
    PollTimeout::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
}

/// Cloneable; every clone sees the same trigger.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reader: PipeReader,
    writer: Mutex<Option<PipeWriter>>,
    triggered: AtomicBool,
}

impl Shutdown {
    pub fn new() -> io::Result<Shutdown> {
        let (reader, writer) = io::pipe()?;
        Ok(Shutdown {
            inner: Arc::new(Inner {
                reader,
                writer: Mutex::new(Some(writer)),
                triggered: AtomicBool::new(false),
            }),
        })
    }

    /// Tells everything waiting on this to stop; idempotent.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        // Dropping the writer is what wakes the pollers.
        drop(lock(&self.inner.writer).take());
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// The fd to add to a `poll(2)` set: readable once triggered.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.reader.as_fd()
    }

    /// Sleeps up to `timeout`; true once triggered.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(_) | Err(Errno::EINTR) => {}
            // poll on one valid fd fails only for lack of kernel memory; fall back to sleeping
            // so the caller's loop keeps its pace.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        self.is_triggered()
    }

    /// Resolves once triggered.
    pub async fn stopped(&self) {
        // Its own copy of the read end, so the registration owns what it watches.
        // SAFETY: the AsyncFd owns `reader`, which stays open, the same fd, until it drops.
        let registered = self.inner.reader.try_clone().ok().and_then(|reader| unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE).ok()
        });
        if let Some(async_fd) = registered {
            while !self.is_triggered() {
                match async_fd.readable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => break,
                }
            }
        }
        // Without a registration (epoll refused it), look every 100 ms.
        while !self.is_triggered() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn waiters_wake_at_once_when_triggered_from_another_thread() {
        let shutdown = Shutdown::new().unwrap();
        assert!(!shutdown.wait(Duration::from_millis(10)));
        let other = shutdown.clone();
        let start = Instant::now();
        let waiter = std::thread::spawn(move || other.wait(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(20));
        shutdown.trigger();
        assert!(waiter.join().unwrap());
        assert!(start.elapsed() < Duration::from_secs(5));
        shutdown.trigger(); // idempotent
        assert!(shutdown.wait(Duration::ZERO));
    }

    #[test]
    fn an_async_task_sees_the_trigger() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shutdown = Shutdown::new().unwrap();
        let trigger = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            trigger.trigger();
        });
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), shutdown.stopped())
                .await
                .unwrap();
        });
    }
}

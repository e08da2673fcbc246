//! One signal's way out: a bounded queue that producers never wait on, and a thread that
//! takes batches from it and exports them, backing off while the receiver fails.
//!
//! Why not the SDK's `BatchSpanProcessor`/`BatchLogProcessor`: they drop what does not fit
//! in their queue and keep the count private (it reaches only the SDK's internal log, or an
//! experimental self-metric through a global meter provider), and their export threads are
//! where an async HTTP client panics and every later span is dropped silently
//! (opentelemetry-rust #2673, #3125). Here every item lost is counted, by reason, in
//! `collector_otlp_dropped_total`, and `/health` says while exports fail.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{shutdown::Shutdown, sync::lock};

/// Most items one export carries (the specification's default batch size).
const MAX_BATCH: usize = 512;
/// How long the first item of a batch waits for others.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// The wait after a failed export, doubled at each failure up to the maximum.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// While an export keeps failing, its error is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a failed export keeps its signal failing (`/health`) when nothing is tried
/// since: a signal with nothing to send cannot find out that the receiver is back.
const FAILING_FOR: Duration = Duration::from_secs(120);

/// Why an item was not exported: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (the receiver is slow or down and the backlog reached its bound).
    QueueFull,
    /// The receiver refused it or could not be reached, after the exporter's retries.
    ExportFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::QueueFull, DropReason::ExportFailed];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
        }
    }
}

/// One signal's counts and state, read by the metrics and `/health`.
#[derive(Debug)]
pub struct SignalStats {
    pub signal: &'static str,
    exported: AtomicU64,
    dropped: [AtomicU64; 2],
    /// Items queued and not yet exported or dropped.
    pending: AtomicU64,
    /// The last export's error and when, while exports fail; `None` once one succeeds.
    failing: Mutex<Option<(String, Instant)>>,
    /// When the error was last logged.
    logged: Mutex<Option<Instant>>,
}

impl SignalStats {
    pub fn new(signal: &'static str) -> Arc<SignalStats> {
        Arc::new(SignalStats {
            signal,
            exported: AtomicU64::new(0),
            dropped: Default::default(),
            pending: AtomicU64::new(0),
            failing: Mutex::new(None),
            logged: Mutex::new(None),
        })
    }

    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    fn counter(&self, reason: DropReason) -> &AtomicU64 {
        &self.dropped[reason as usize]
    }

    pub fn count_dropped(&self, reason: DropReason, n: u64) {
        self.counter(reason).fetch_add(n, Ordering::Relaxed);
    }

    /// The error of the exports while they fail: until one succeeds, or [`FAILING_FOR`]
    /// passes without another attempt failing.
    pub fn failing(&self) -> Option<String> {
        lock(&self.failing)
            .as_ref()
            .filter(|(_, at)| at.elapsed() < FAILING_FOR)
            .map(|(e, _)| e.clone())
    }

    /// Items queued and not yet exported or dropped: what a stop that cannot wait loses.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// `n` queued items are accounted for (exported or dropped).
    fn settled(&self, n: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(n)));
    }

    /// Accounts for one export of `n` items: exported, or dropped with its error logged
    /// (the first failure at once, then at most every [`LOG_EVERY`]) and kept for `/health`.
    pub fn exported_or_failed(&self, n: u64, result: Result<(), String>) {
        self.settled(n);
        let mut failing = lock(&self.failing);
        match result {
            Ok(()) => {
                self.exported.fetch_add(n, Ordering::Relaxed);
                if failing.take().is_some() {
                    tracing::info!(signal = self.signal, "OTLP export works again");
                }
            }
            Err(e) => {
                self.count_dropped(DropReason::ExportFailed, n);
                let mut logged = lock(&self.logged);
                if failing.is_none() || logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    tracing::warn!(signal = self.signal, dropped = n, "OTLP export failed: {e}");
                    *logged = Some(Instant::now());
                }
                *failing = Some((e, Instant::now()));
            }
        }
    }
}

/// The producers' end of a signal's queue.
pub struct Queue<T> {
    items: SyncSender<T>,
    stats: Arc<SignalStats>,
}

impl<T> Queue<T> {
    /// Queues `item` without waiting; a full queue drops it, counted.
    pub fn push(&self, item: T) {
        if self.items.try_send(item).is_ok() {
            self.stats.pending.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.count_dropped(DropReason::QueueFull, 1);
        }
    }
}

/// Starts the export thread of a signal. `make` runs on that thread and makes the export
/// function (an exporter must be made where it runs: `transport.rs`), which gets batches of
/// up to [`MAX_BATCH`] items and says whether the receiver took them; its error is this
/// function's. The thread ends once every [`Queue`] is dropped and what they queued is
/// exported; after `stop`, a failed export drops what is left rather than wait for the
/// receiver.
pub fn spawn<T: Send + 'static, E: FnMut(Vec<T>) -> Result<(), String>>(
    stats: Arc<SignalStats>,
    capacity: usize,
    stop: Shutdown,
    make: impl FnOnce() -> Result<E, String> + Send + 'static,
) -> Result<(Queue<T>, JoinHandle<()>), String> {
    let (items, queued) = sync_channel(capacity);
    let queue = Queue {
        items,
        stats: stats.clone(),
    };
    let (ready_tx, ready) = sync_channel(1);
    let signal = stats.signal;
    let thread = std::thread::Builder::new()
        .name(format!("otlp-{signal}"))
        .spawn(move || {
            let mut export = match make() {
                Ok(export) => {
                    let _ = ready_tx.send(Ok(()));
                    export
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut backoff = BACKOFF.0;
            while let Some(batch) = next_batch(&queued) {
                let n = batch.len() as u64;
                let result = export(batch);
                let failed = result.is_err();
                stats.exported_or_failed(n, result);
                if !failed {
                    backoff = BACKOFF.0;
                } else if stop.is_triggered() {
                    let left = queued.try_iter().count() as u64;
                    stats.settled(left);
                    stats.count_dropped(DropReason::ExportFailed, left);
                } else {
                    stop.wait(backoff);
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        })
        .map_err(|e| format!("cannot start the OTLP {signal} thread: {e}"))?;
    ready
        .recv()
        .unwrap_or_else(|_| Err(format!("the OTLP {signal} thread ended at start")))?;
    Ok((queue, thread))
}

/// The next batch: waits for a first item, then up to [`BATCH_DELAY`] for more. `None` once
/// the producers are gone and nothing is left.
fn next_batch<T>(queued: &Receiver<T>) -> Option<Vec<T>> {
    let first = queued.recv().ok()?;
    let mut batch = vec![first];
    let deadline = Instant::now() + BATCH_DELAY;
    while batch.len() < MAX_BATCH {
        match queued.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_exported_or_counted_as_dropped() {
        let stats = SignalStats::new("traces");
        let stop = Shutdown::new().unwrap();
        let mut calls = 0;
        // The first export fails, the others go through.
        let export = move |_: Vec<u32>| {
            calls += 1;
            if calls == 1 { Err("refused".into()) } else { Ok(()) }
        };
        let (queue, thread) = spawn(stats.clone(), 4, stop.clone(), move || Ok(export)).unwrap();
        for i in 0..3 {
            queue.push(i);
        }
        while stats.failing().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.trigger(); // ends the backoff's wait
        for i in 0..10 {
            queue.push(i);
        }
        drop(queue);
        thread.join().unwrap();
        let (failed, full) = (
            stats.dropped(DropReason::ExportFailed),
            stats.dropped(DropReason::QueueFull),
        );
        assert!(failed >= 1, "the first export failed");
        assert_eq!(stats.exported() + failed + full, 13);
        assert_eq!(stats.failing(), None, "the last export went through");
    }

    #[test]
    fn a_full_queue_drops_what_does_not_fit_and_counts_it() {
        let stats = SignalStats::new("logs");
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel::<()>();
        let export = move |batch: Vec<u32>| {
            entered_tx.send(batch.len()).unwrap();
            let _ = release.recv();
            Ok(())
        };
        let (queue, thread) = spawn(stats.clone(), 4, Shutdown::new().unwrap(), move || Ok(export)).unwrap();
        queue.push(0);
        assert_eq!(entered.recv().unwrap(), 1, "the first batch is in the exporter");
        for i in 1..=7 {
            queue.push(i); // 4 wait in the queue, 3 do not fit
        }
        assert_eq!(stats.dropped(DropReason::QueueFull), 3);
        drop(release_tx);
        drop(queue);
        thread.join().unwrap();
        assert_eq!(stats.exported(), 5);
    }
}

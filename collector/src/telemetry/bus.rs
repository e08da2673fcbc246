//! The event bus: handlers attach to event names under an id and receive every matching
//! event on their own thread through a bounded queue. [`Telemetry::execute`] never blocks:
//! when a handler's queue is full the event is dropped for that handler and counted in
//! [`EventStats`] under the handler's stage.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

use super::event::Event;
use crate::sync::lock;

/// Where an event was lost: the `stage` label of `collector_events_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropStage {
    /// The kernel could not reserve ring-buffer space (counted in the kernel).
    Kernel,
    /// A handler's queue was full.
    Queue,
    /// The event sink (`--events`) or an `/events` reader is behind: its queue or buffer was
    /// full.
    Sink,
    /// An OTLP handler (spans, log records) is behind its events.
    Otlp,
    /// A ring-buffer record that could not be decoded.
    Decode,
}

impl DropStage {
    pub fn as_str(self) -> &'static str {
        match self {
            DropStage::Kernel => "kernel",
            DropStage::Queue => "queue",
            DropStage::Sink => "sink",
            DropStage::Otlp => "otlp",
            DropStage::Decode => "decode",
        }
    }
}

/// Events executed per name, and events dropped per (name, stage), since start.
#[derive(Debug, Default)]
pub struct EventStats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    executed: BTreeMap<&'static str, u64>,
    dropped: BTreeMap<(&'static str, DropStage), u64>,
}

impl EventStats {
    pub fn count_dropped(&self, event: &'static str, stage: DropStage) {
        *lock(&self.inner).dropped.entry((event, stage)).or_default() += 1;
    }

    pub fn executed(&self) -> Vec<(&'static str, u64)> {
        lock(&self.inner).executed.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn dropped(&self) -> Vec<((&'static str, DropStage), u64)> {
        lock(&self.inner).dropped.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Handler ids are unique, as in `:telemetry`.
    #[error("a handler with id {0:?} is already attached")]
    AlreadyAttached(String),
    /// The handler's thread could not be started.
    #[error("cannot start the thread of handler {0:?}")]
    Spawn(String, #[source] std::io::Error),
}

/// Which events a handler receives: those whose name a glob matches (`process.exit`,
/// `tcp.*`), or every event; and which it demands, for the events the kernel sends only
/// while some handler does (`http.request`).
#[derive(Clone)]
pub enum EventFilter {
    Matching(globset::GlobSet),
    All,
    /// Every event (the metric definitions, which a reload may put on any), demanding only
    /// those the function says.
    Defined(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventFilter::Matching(globs) => f.debug_tuple("Matching").field(globs).finish(),
            EventFilter::All => f.write_str("All"),
            EventFilter::Defined(_) => f.write_str("Defined"),
        }
    }
}

impl EventFilter {
    /// The events `patterns` match; `Err` names a pattern that is not a glob.
    pub fn matching<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<EventFilter, globset::Error> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in patterns {
            set.add(globset::Glob::new(pattern)?);
        }
        Ok(EventFilter::Matching(set.build()?))
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            EventFilter::Matching(globs) => globs.is_match(name),
            EventFilter::All | EventFilter::Defined(_) => true,
        }
    }

    /// Whether the handler wants `name` sent at all.
    pub fn demands(&self, name: &str) -> bool {
        match self {
            EventFilter::Defined(defines) => defines(name),
            _ => self.matches(name),
        }
    }
}

struct Handler {
    id: String,
    filter: EventFilter,
    stage: DropStage,
    queue: SyncSender<Arc<Event>>,
    thread: JoinHandle<()>,
}

/// The event bus: handlers, and the counts of what passed and what was lost.
#[derive(Default)]
pub struct Telemetry {
    handlers: Mutex<Vec<Handler>>,
    stats: EventStats,
    /// Handlers that show every metadata key (the sink, `/events` readers): while there is
    /// one, process events carry what only /proc says (`process_info.rs`), which costs reads.
    showing_all: AtomicUsize,
    /// Told whenever what the handlers demand may have changed (`demand_changed`).
    on_demand: std::sync::OnceLock<DemandListener>,
}

type DemandListener = Box<dyn Fn(&Telemetry) + Send + Sync>;

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = lock(&self.handlers).iter().map(|h| h.id.clone()).collect();
        f.debug_struct("Telemetry")
            .field("handlers", &ids)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    pub fn stats(&self) -> &EventStats {
        &self.stats
    }

    /// A handler that shows every metadata key came (`true`) or went.
    pub fn showing_all(&self, came: bool) {
        if came {
            self.showing_all.fetch_add(1, Ordering::Relaxed);
        } else {
            self.showing_all.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether some handler shows every metadata key.
    pub fn shows_all(&self) -> bool {
        self.showing_all.load(Ordering::Relaxed) > 0
    }

    /// Whether some handler demands the event `name` (`EventFilter::demands`).
    pub fn wants(&self, name: &str) -> bool {
        lock(&self.handlers).iter().any(|h| h.filter.demands(name))
    }

    /// Sets what is told, now and whenever a handler comes or goes (or `demand_changed` is
    /// called), so that it can ask [`Telemetry::wants`]. Once.
    pub fn on_demand_change(&self, tell: impl Fn(&Telemetry) + Send + Sync + 'static) {
        if self.on_demand.set(Box::new(tell)).is_ok() {
            self.demand_changed();
        }
    }

    /// What the handlers demand may have changed (a handler came or went, or definitions
    /// were reloaded).
    pub fn demand_changed(&self) {
        if let Some(tell) = self.on_demand.get() {
            tell(self);
        }
    }

    /// Attaches `handle` under `id` to the events `filter` selects. It runs on a thread of
    /// its own and sees events in the order they were executed; at most `capacity` wait for
    /// it, and the ones beyond are dropped and counted under `stage`.
    pub fn attach(
        &self,
        id: &str,
        filter: EventFilter,
        capacity: usize,
        stage: DropStage,
        mut handle: impl FnMut(&Event) + Send + 'static,
    ) -> Result<(), TelemetryError> {
        let mut handlers = lock(&self.handlers);
        if handlers.iter().any(|h| h.id == id) {
            return Err(TelemetryError::AlreadyAttached(id.to_owned()));
        }
        let (queue, events): (_, Receiver<Arc<Event>>) = sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(format!("telemetry-{id}"))
            .spawn(move || {
                for event in events {
                    handle(&event);
                }
            })
            .map_err(|e| TelemetryError::Spawn(id.to_owned(), e))?;
        handlers.push(Handler {
            id: id.to_owned(),
            filter,
            stage,
            queue,
            thread,
        });
        drop(handlers);
        self.demand_changed();
        Ok(())
    }

    /// Detaches the handler `id` after it has handled every event already queued for it.
    /// Returns whether it was attached.
    pub fn detach(&self, id: &str) -> bool {
        let handler = {
            let mut handlers = lock(&self.handlers);
            let Some(i) = handlers.iter().position(|h| h.id == id) else {
                return false;
            };
            handlers.remove(i)
        };
        self.demand_changed();
        drop(handler.queue);
        let _ = handler.thread.join();
        true
    }

    /// Detaches every handler, draining their queues (on shutdown).
    pub fn detach_all(&self) {
        let ids: Vec<String> = lock(&self.handlers).iter().map(|h| h.id.clone()).collect();
        for id in ids {
            self.detach(&id);
        }
    }

    /// Hands `event` to every handler attached to its name, without waiting for any.
    pub fn execute(&self, event: Event) {
        let name = event.name;
        let event = Arc::new(event);
        let handlers = lock(&self.handlers);
        *lock(&self.stats.inner).executed.entry(name).or_default() += 1;
        for h in handlers.iter().filter(|h| h.filter.matches(name)) {
            match h.queue.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.stats.count_dropped(name, h.stage);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc::channel, time::SystemTime};

    use super::*;

    fn event(name: &'static str) -> Event {
        Event::new(name, SystemTime::UNIX_EPOCH)
            .measure("duration", 1.5)
            .meta("pid", 7u32)
    }

    #[test]
    fn handlers_receive_only_the_events_they_attached_to() {
        let telemetry = Telemetry::new();
        let (tx, rx) = channel();
        let names = EventFilter::matching(["process.exit", "tcp.*"]).unwrap();
        telemetry
            .attach("h", names, 16, DropStage::Queue, move |e| tx.send(e.name).unwrap())
            .unwrap();
        telemetry.execute(event("process.start"));
        telemetry.execute(event("process.exit"));
        telemetry.execute(event("tcp.close"));
        assert!(telemetry.detach("h"));
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec!["process.exit", "tcp.close"]);
        assert_eq!(
            telemetry.stats().executed(),
            vec![("process.exit", 1), ("process.start", 1), ("tcp.close", 1)]
        );
    }

    #[test]
    fn what_is_demanded_follows_the_handlers_and_each_change_is_told() {
        let telemetry = Telemetry::new();
        let told = Arc::new(Mutex::new(Vec::new()));
        let seen = told.clone();
        telemetry.on_demand_change(move |t| lock(&seen).push(t.wants("http.request")));
        // Definitions take every event but demand only theirs.
        let defined = EventFilter::Defined(Arc::new(|name: &str| name == "process.exit"));
        telemetry
            .attach("metrics", defined, 16, DropStage::Queue, |_| {})
            .unwrap();
        assert!(telemetry.wants("process.exit") && !telemetry.wants("http.request"));
        let reader = EventFilter::matching(["http.*"]).unwrap();
        telemetry.attach("reader", reader, 16, DropStage::Sink, |_| {}).unwrap();
        assert!(telemetry.detach("reader"));
        telemetry
            .attach("sink", EventFilter::All, 16, DropStage::Sink, |_| {})
            .unwrap();
        // Told at once when set, then at each attach and detach.
        assert_eq!(*lock(&told), [false, false, true, false, true]);
        telemetry.detach_all();
        assert!(!telemetry.wants("process.exit"));
    }

    #[test]
    fn a_detached_handler_receives_nothing_more_and_ids_are_unique() {
        let telemetry = Telemetry::new();
        let (tx, rx) = channel();
        telemetry
            .attach("h", EventFilter::All, 16, DropStage::Queue, move |e| {
                tx.send(e.name).unwrap();
            })
            .unwrap();
        assert!(matches!(
            telemetry.attach("h", EventFilter::All, 16, DropStage::Queue, |_| {}),
            Err(TelemetryError::AlreadyAttached(id)) if id == "h"
        ));
        telemetry.execute(event("a"));
        assert!(telemetry.detach("h"));
        assert!(!telemetry.detach("h"));
        telemetry.execute(event("b"));
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let telemetry = Telemetry::new();
        let (release_tx, release_rx) = channel::<()>();
        let (seen_tx, seen_rx) = channel();
        // The handler blocks on its first event until released, so its queue fills.
        telemetry
            .attach("slow", EventFilter::All, 2, DropStage::Sink, move |e| {
                seen_tx.send(e.name).unwrap();
                let _ = release_rx.recv();
            })
            .unwrap();
        telemetry.execute(event("e"));
        assert_eq!(seen_rx.recv().unwrap(), "e"); // the first is being handled: the queue is empty
        for _ in 0..5 {
            telemetry.execute(event("e")); // 2 fit in the queue, 3 are dropped
        }
        drop(release_tx);
        telemetry.detach("slow");
        assert_eq!(seen_rx.iter().count(), 2);
        assert_eq!(telemetry.stats().dropped(), vec![(("e", DropStage::Sink), 3)]);
        assert_eq!(telemetry.stats().executed(), vec![("e", 6)]);
    }
}

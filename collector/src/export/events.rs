//! `GET /events`: telemetry events streamed as JSON lines (the sink's format), optionally only
//! those named (`?event=process.exit&event=tcp.*`): `:telemetry.attach` from outside the
//! process. Each reader is a bus handler of its own, with the `sink` drop stage. Its handler
//! never waits on the connection: lines go into a bounded buffer, and when a reader is
//! slower than its events, or stops reading, what does not fit is dropped and counted; the
//! agent, the metrics and the other readers go on as before. At most [`MAX_READERS`] at once.
use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::mpsc;

use crate::{
    shutdown::Shutdown,
    telemetry::{DropStage, EventFilter, Telemetry, catalogue, sink::to_json},
};

/// Readers streaming at once; one more is answered 503.
pub const MAX_READERS: usize = 8;

/// JSON lines that may wait for one reader's connection before new ones are dropped.
const READER_BUFFER: usize = 4096;

/// Events waiting for a reader's handler thread (it only encodes and buffers, so this is
/// rarely used).
const READER_QUEUE: usize = 1024;

/// The readers of `/events`.
#[derive(Debug)]
pub struct EventStreams {
    telemetry: Arc<Telemetry>,
    stop: Shutdown,
    readers: AtomicUsize,
    next: AtomicU64,
}

impl EventStreams {
    /// Readers of `telemetry`'s events until `stop`.
    pub fn new(telemetry: Arc<Telemetry>, stop: Shutdown) -> EventStreams {
        EventStreams {
            telemetry,
            stop,
            readers: AtomicUsize::new(0),
            next: AtomicU64::new(0),
        }
    }
}

/// Detaches a reader's handler when its response is dropped (the reader went away, or the
/// server stops).
struct Reader {
    streams: Arc<EventStreams>,
    id: String,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.streams.readers.fetch_sub(1, Ordering::Relaxed);
        self.streams.telemetry.showing_all(false);
        let (telemetry, id) = (self.streams.telemetry.clone(), std::mem::take(&mut self.id));
        // Detaching joins the handler's thread: not on an async worker.
        std::thread::spawn(move || telemetry.detach(&id));
    }
}

fn refuse(code: StatusCode, why: String) -> Response {
    (code, why + "\n").into_response()
}

/// Answers one `GET /events` with `query`'s `event` patterns.
pub fn stream(streams: &Arc<EventStreams>, query: &[(String, String)]) -> Response {
    let patterns: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.as_str())
        .collect();
    let filter = if patterns.is_empty() {
        EventFilter::All
    } else {
        match EventFilter::matching(patterns.iter().copied()) {
            Ok(filter) => filter,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not an event name or glob: {e}")),
        }
    };
    let names: Vec<&str> = catalogue::EVENTS.iter().map(|e| e.name).collect();
    for pattern in &patterns {
        let alone = EventFilter::matching([*pattern]).ok();
        if !names.iter().any(|n| alone.as_ref().is_some_and(|f| f.matches(n))) {
            let known = names.join(", ");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("no event is named {pattern:?}; the events are {known}"),
            );
        }
    }
    if streams.readers.fetch_add(1, Ordering::Relaxed) >= MAX_READERS {
        streams.readers.fetch_sub(1, Ordering::Relaxed);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_READERS} readers of /events already; try later"),
        );
    }
    streams.telemetry.showing_all(true);
    let reader = Reader {
        streams: streams.clone(),
        id: format!("events-{}", streams.next.fetch_add(1, Ordering::Relaxed)),
    };
    let (lines, received) = mpsc::channel::<Bytes>(READER_BUFFER);
    let telemetry = streams.telemetry.clone();
    let attached = streams
        .telemetry
        .attach(&reader.id, filter, READER_QUEUE, DropStage::Sink, move |event| {
            let mut line = to_json(event).to_string();
            line.push('\n');
            // A reader that went away loses nothing it asked for: it is being detached.
            if let Err(mpsc::error::TrySendError::Full(_)) = lines.try_send(Bytes::from(line)) {
                telemetry.stats().count_dropped(event.name, DropStage::Sink);
            }
        });
    if let Err(e) = attached {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    // The reader is dropped with the body, after the receiver it is stored beside. The
    // stream ends when the agent stops, so an open reader does not hold up shutdown.
    let stop = streams.stop.clone();
    let body = futures_util::stream::unfold((received, reader, stop), |(mut lines, reader, stop)| async move {
        let line = tokio::select! {
            line = lines.recv() => line?,
            () = stop.stopped() => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(line), (lines, reader, stop)))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

//! The event sink: every event as one JSON object per line, to a file or stdout.
//!
//! `{"time":"<RFC 3339, ns>","event":"process.exit","measurements":{...},"metadata":{...}}`
//!
//! It is a handler like any other, with the `sink` drop stage: when the writer falls behind,
//! events are dropped and counted, and nothing upstream waits.
use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::Path,
};

use serde_json::{Map, Value as Json, json};

use super::{
    bus::{DropStage, EventFilter, Telemetry, TelemetryError},
    event::Event,
};

/// Events that may wait for the writer before new ones are dropped.
pub const SINK_CAPACITY: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be opened for appending.
    #[error("cannot open the event sink {path}: {source}; check that its directory exists and is writable")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Attach(#[from] TelemetryError),
}

/// The JSON object of one event.
pub fn to_json(event: &Event) -> Json {
    let measurements: Map<String, Json> = event
        .measurements
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let metadata: Map<String, Json> = event
        .metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "time": humantime::format_rfc3339_nanos(event.time).to_string(),
        "event": event.name,
        "measurements": measurements,
        "metadata": metadata,
    })
}

/// Where the sink writes, opened (before anything loads, so a bad path fails first).
pub struct Output(Box<dyn Write + Send>);

/// Opens `path` (`-` for stdout) for appending.
pub fn open(path: &str) -> Result<Output, SinkError> {
    if path == "-" {
        return Ok(Output(Box::new(io::stdout())));
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(path))
        .map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })?;
    Ok(Output(Box::new(file)))
}

/// Attaches the sink writing to `out` to every event.
pub fn attach(telemetry: &Telemetry, out: Output) -> Result<(), SinkError> {
    let mut out = io::BufWriter::new(out.0);
    // For the agent's life: the sink is detached only at shutdown.
    telemetry.showing_all(true);
    telemetry.attach(
        "event-sink",
        EventFilter::All,
        SINK_CAPACITY,
        DropStage::Sink,
        move |event| {
            // One write per line so a reader never sees half an event; a write error (disk
            // full, closed pipe) loses this event, which the log reports.
            let mut line = to_json(event).to_string();
            line.push('\n');
            if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                tracing::warn!("event sink write failed: {e}");
            }
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn an_event_is_one_json_object_with_the_documented_fields() {
        let time = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let event = Event::new("process.exit", time)
            .measure("duration", 0.25)
            .meta("pid", 42u32)
            .meta("signal", "SIGKILL");
        let line = to_json(&event).to_string();
        let parsed: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parsed["event"], "process.exit");
        assert_eq!(parsed["measurements"]["duration"], 0.25);
        assert_eq!(parsed["metadata"]["pid"], 42);
        assert_eq!(parsed["metadata"]["signal"], "SIGKILL");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_sink_appends_every_event_as_a_line() {
        let dir = std::env::temp_dir().join(format!("collector-sink-test-{}", std::process::id()));
        let path = dir.to_string_lossy().into_owned();
        let telemetry = Telemetry::new();
        attach(&telemetry, open(&path).unwrap()).unwrap();
        for i in 0..3u32 {
            telemetry.execute(Event::new("a.b", SystemTime::now()).meta("i", i));
        }
        telemetry.detach("event-sink");
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let lines: Vec<Json> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["metadata"]["i"], 2);
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let Err(err) = open("/nonexistent-dir/events.jsonl") else {
            panic!("opened a file in a directory that does not exist")
        };
        assert!(
            err.to_string()
                .starts_with("cannot open the event sink /nonexistent-dir/events.jsonl"),
            "{err}"
        );
    }
}

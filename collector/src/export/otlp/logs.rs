//! Telemetry events as OTLP log records (`--otlp-logs`): the event's name as the record's
//! event name and body, its metadata and measurements as attributes, its time as the
//! record's.
use std::time::SystemTime;

use opentelemetry::{
    InstrumentationScope,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider};

use super::transport::Runner;
use crate::telemetry::{Event, Value};

/// Makes log records of events. The provider has no processor: records are exported by
/// our own thread (`batch.rs`), and the provider only makes them.
pub struct Records {
    logger: SdkLogger,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            logger: SdkLoggerProvider::builder()
                .build()
                .logger_with_scope(super::resource::scope()),
        }
    }
}

impl Records {
    pub fn of(&self, event: &Event) -> SdkLogRecord {
        let mut record = self.logger.create_log_record();
        record.set_event_name(event.name);
        record.set_body(AnyValue::from(event.name));
        record.set_timestamp(event.time);
        record.set_observed_timestamp(SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        for (key, value) in &event.metadata {
            match value {
                Value::Int(i) => record.add_attribute(*key, *i),
                Value::Str(s) => record.add_attribute(*key, s.clone()),
            }
        }
        for (key, value) in &event.measurements {
            record.add_attribute(*key, *value);
        }
        record
    }
}

/// Exports `records` with `exporter`. `LogBatch::new` is the one public way to hand records
/// to an exporter without the SDK's batch processor (the SDK marks it as not meant for
/// applications; the crates are pinned, and a change there fails the build, not silently).
pub fn export(
    exporter: &opentelemetry_otlp::LogExporter,
    runner: &Runner,
    records: &[SdkLogRecord],
) -> Result<(), String> {
    let scope = super::resource::scope();
    let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> = records.iter().map(|r| (r, &scope)).collect();
    runner
        .run(exporter.export(LogBatch::new(&pairs)))
        .map_err(|e| e.to_string())
}

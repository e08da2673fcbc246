//! Telemetry events and their handlers, after Erlang/Elixir's `:telemetry`: the event
//! (`event`), the bus that hands events to handlers (`bus`), metrics defined on events
//! (`definitions`, served by `event_metrics`; the built-in ones are a file in `config/`),
//! what events there are (`catalogue`), and the producers and consumers of events: kernel
//! records (`kernel_events`, with /proc's view of each process in `process_info`), the poller
//! (`poller`, with the agent's own numbers in `own_process`) and the JSON-lines sink (`sink`);
//! and text from data escaped for the exposition (`exposition_text`).
pub mod bus;
pub mod catalogue;
pub mod definitions;
pub mod event;
pub mod event_metrics;
pub mod exposition_text;
pub mod kernel_events;
pub mod own_process;
pub mod poller;
pub mod process_info;
pub mod sink;

pub use self::{
    bus::{DropStage, EventFilter, EventStats, Telemetry, TelemetryError},
    event::{Event, Value},
};

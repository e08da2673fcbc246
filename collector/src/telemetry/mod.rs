//! Telemetry events and their handlers, after Erlang/Elixir's `:telemetry`: the event
//! (`event`), the bus that hands events to handlers (`bus`), metrics defined on events
//! (`definitions`, with the built-in ones in `builtin`), and the producers and consumers of
//! events: kernel records (`kernel_events`), the poller (`poller`, with the agent's own
//! numbers in `own_process`) and the JSON-lines sink (`sink`).
pub mod builtin;
pub mod bus;
pub mod definitions;
pub mod event;
pub mod kernel_events;
pub mod own_process;
pub mod poller;
pub mod sink;

pub use self::{
    bus::{DropStage, EventFilter, EventStats, Telemetry, TelemetryError},
    event::{Event, Value},
};

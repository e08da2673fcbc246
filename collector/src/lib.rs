//! The collector agent: loads the kernel programs, keeps the target set, and serves what the
//! kernel aggregated. The folders follow the data flow (ARCHITECTURE.md draws it):
//! `kernel/` (programs, maps, records) -> `targets/` (who is observed) -> `telemetry/`
//! (events and metrics defined on them) -> `export/` (what is served); `config/` reads the
//! config file under the flags. `agent.rs` wires them in order and `main.rs` only calls it.
pub mod agent;
pub mod cli;
pub mod config;
pub mod export;
pub mod kernel;
pub mod logging;
pub mod shutdown;
pub mod sync;
pub mod targets;
pub mod telemetry;

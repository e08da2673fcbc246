//! The collector agent: loads the kernel programs, keeps the target set, and serves what the
//! kernel aggregated. See ARCHITECTURE.md for the data flow; `main.rs` only wires this up.
pub mod agent;
pub mod btf;
pub mod cgroup_targets;
pub mod cgroups;
pub mod cli;
pub mod decode;
pub mod health;
pub mod http;
pub mod kernel_maps;
pub mod logging;
pub mod metrics;
pub mod own_process;
pub mod poller;
pub mod probes;
pub mod process_events;
pub mod socket_metrics;
pub mod state;
pub mod targets;
pub mod telemetry;

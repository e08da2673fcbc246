//! Helpers for the privileged end-to-end tests: start the real collector binary and real
//! workloads, scrape, and read the OpenMetrics text back.
// The test suite: an unexpected failure is a failed test, which unwrap reports with its place;
// sample values are f64 holding exact counts, compared exactly on purpose; a scenario reads
// top to bottom, with its helpers where they are first needed.
#![allow(
    clippy::unwrap_used,
    clippy::float_cmp,
    clippy::items_after_statements,
    clippy::too_many_lines,
    clippy::similar_names
)]
mod bpf;
mod collector_process;
mod exposition;
mod fixtures;
mod harness;
mod http;
mod workload;

pub use bpf::{BpfObjects, bpf_ids_held_by};
pub use collector_process::{Collector, collector_bin, collector_output};
pub use exposition::{Metrics, Sample, value};
pub use fixtures::{
    cgroups::{CgroupTree, cgroup2_mount, move_to_cgroup},
    event_sink::{sink_events, sink_path},
    tcp_server::serve_tcp,
};
pub use harness::{eventually, have_tool, privileged, skip};
pub use http::{http_get, http_get_accept};
pub use workload::Workload;

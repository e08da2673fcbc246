//! Helpers for the privileged end-to-end tests: start the real collector binary and real
//! workloads, scrape, and read the OpenMetrics text back.
mod bpf;
mod collector_process;
mod exposition;
mod fixtures;
pub mod guest;
mod harness;
mod http;
mod workload;

pub use bpf::{BpfObjects, bpf_ids_held_by, map_entries};
pub use collector_process::{Collector, collector_bin, collector_output};
pub use exposition::{Metrics, Sample, value};
pub use fixtures::{
    cgroups::{CgroupTree, cgroup2_mount, move_to_cgroup},
    event_sink::{events_reader, sink_events, sink_path},
    nginx::{HttpCounts, Nginx, count_lines_with, http_requests},
    otlp_receiver::{OtlpReceiver, attribute, free_port},
    pid_max::{PidMaxSet, pid_max},
    prometheus::Prometheus,
    tcp_server::serve_tcp,
};
pub use harness::{Stopped, eventually, have_tool, privileged, python_after_go, repo_path, skip, test_python};
pub use http::{http_get, http_get_accept, http_post};
pub use workload::Workload;

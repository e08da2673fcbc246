//! The probe families, each declared once: its programs and the tracepoints they attach to,
//! the maps it writes, the kernel struct fields it reads (found in BTF at start), and the
//! metrics it feeds. Loading, attaching, BTF and the metric tables all read these, so a new
//! family (HTTP, scheduler) is one more entry here plus its kernel module.
//!
//! The kernel half of each family is the `collector-ebpf` module of the same name, whose
//! header cites the `TP_PROTO` of each tracepoint and the kernel source of each field.
use collector_common::{KernelOffsets, maps};

/// A program and the raw tracepoint it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The `probe` label value.
    pub name: &'static str,
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// The program for kernels whose tracepoint passes fewer arguments than `program` reads
    /// (the kernel refuses to attach a program reading past them): older kernels where a
    /// tracepoint gained arguments (sched_process_exit, mark_victim), newer ones where it
    /// lost one (block_bio_queue and block_split lost their queue in 5.11).
    pub fewer_args: Option<FewerArgs>,
    pub via: Via,
}

/// How a program comes to run on its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Attached to it.
    Attach,
    /// Put at `index` of the program array `map`, which another program of the tracepoint
    /// tail-calls.
    TailCall { map: &'static str, index: u32 },
}

/// A program for kernels whose tracepoint has fewer arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FewerArgs {
    /// Load `program` when the tracepoint passes fewer arguments than this.
    pub below_args: usize,
    pub program: &'static str,
}

/// A kernel struct field a family's programs read, and where its offset goes.
#[derive(Clone, Copy, Debug)]
pub struct BtfField {
    pub ty: &'static str,
    /// The field's path in `ty`, or several: the first the kernel has is used (names differ
    /// between architectures).
    pub paths: &'static [&'static str],
    pub slot: fn(&mut KernelOffsets) -> &mut u32,
}

/// When a family is attached during start-up (see `agent.rs` for why the order matters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Keeps the target set current (forks, exits, cgroup moves): attached before existing
    /// processes are discovered, so none created in between is missed.
    Follow,
    /// Measures: attached once the target set is complete.
    Measure,
}

#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    /// What it measures, in words, for the log line that says a family is off.
    pub what: &'static str,
    /// The agent cannot run without it (syscalls, the process lifecycle); any other family
    /// the running kernel cannot give is turned off and said so, and the rest run on.
    pub core: bool,
    pub stage: Stage,
    pub probes: &'static [Probe],
    /// Maps written by this family's programs (shared maps appear in each family using them).
    pub maps: &'static [&'static str],
    pub fields: &'static [BtfField],
    /// The metrics it feeds, scrape-time and event-defined alike.
    pub metrics: &'static [&'static str],
    /// The `SWITCHES` entry set once it is attached, where another family's program feeds it.
    pub switch: Option<u32>,
    /// Families whose programs feed it: it is off when one of them is.
    pub needs: &'static [&'static str],
}

macro_rules! probe {
    ($name:literal => $program:literal) => {
        Probe {
            name: $name,
            program: $program,
            tracepoint: $name,
            fewer_args: None,
            via: Via::Attach,
        }
    };
    ($name:literal => $program:literal, below $args:literal args => $fewer:literal) => {
        Probe {
            fewer_args: Some(FewerArgs {
                below_args: $args,
                program: $fewer,
            }),
            ..probe!($name => $program)
        }
    };
}

macro_rules! field {
    ($slot:ident: $ty:literal . $($path:literal)|+) => {
        BtfField {
            ty: $ty,
            paths: &[$($path),+],
            slot: |o| &mut o.$slot,
        }
    };
}

/// `fields` plus those of the path from an fd to its socket (`collector-ebpf/src/fds.rs`),
/// which the tcp family (accept) and the socket_bytes family (sends, receives) both read.
macro_rules! with_fd_path {
    ($($field:expr),* $(,)?) => {
        &[
            $($field,)*
            field!(task_files: "task_struct"."files"),
            field!(files_fdt: "files_struct"."fdt"),
            field!(fdtable_max_fds: "fdtable"."max_fds"),
            field!(fdtable_fd: "fdtable"."fd"),
            field!(file_inode: "file"."f_inode"),
            field!(inode_mode: "inode"."i_mode"),
            field!(file_private_data: "file"."private_data"),
            field!(socket_sk: "socket"."sk"),
        ]
    };
}

/// The process lifecycle (`collector-ebpf/src/processes.rs`): keeps `TARGET_OF` and the
/// per-target counts current, and sends `process.*` events.
pub const PROCESSES: Family = Family {
    name: "processes",
    what: "the process lifecycle",
    core: true,
    stage: Stage::Follow,
    probes: &[
        probe!("sched_switch" => "collector_sched_switch"),
        probe!("sched_process_fork" => "collector_fork"),
        probe!("sched_process_exec" => "collector_exec"),
        // `group_dead` came with Linux 6.16; before, the program reads signal->live.
        probe!("sched_process_exit" => "collector_exit", below 2 args => "collector_exit_live"),
    ],
    maps: &[
        maps::TARGET_OF,
        maps::TARGET_COUNTS,
        maps::ENTRY,
        maps::THREAD_SLOTS,
        maps::FREE_SLOTS,
        maps::CURRENT,
        maps::EVENTS,
        maps::EVENT_DROPS,
    ],
    fields: &[
        field!(task_pid: "task_struct"."pid"),
        field!(task_tgid: "task_struct"."tgid"),
        field!(task_exit_code: "task_struct"."exit_code"),
        field!(task_start_time: "task_struct"."start_time"),
        field!(task_group_leader: "task_struct"."group_leader"),
        field!(binprm_filename: "linux_binprm"."filename"),
        field!(task_signal: "task_struct"."signal"),
        field!(signal_live: "signal_struct"."live"),
    ],
    metrics: &[
        "collector_process_starts_total",
        "collector_process_execs_total",
        "collector_process_exits_total",
        "collector_process_lifetime_seconds",
        "collector_processes",
        "collector_threads",
        // Read at scrape from the target's cgroup or its processes (`targets/memory.rs`),
        // which this family keeps in `TARGET_OF`.
        "collector_resident_memory_bytes",
    ],
    switch: None,
    needs: &[],
};

/// Cgroup membership (`collector-ebpf/src/cgroups.rs`): re-targets processes that move.
pub const CGROUPS: Family = Family {
    name: "cgroups",
    what: "cgroup targets (--cgroup, --cgroup-pattern): processes moving in and out",
    core: false,
    stage: Stage::Follow,
    probes: &[probe!("cgroup_attach_task" => "collector_cgroup_attach_task")],
    maps: &[maps::TARGET_OF, maps::TARGET_COUNTS, maps::TARGETS_GENERATION],
    fields: &[
        field!(task_tgid: "task_struct"."tgid"),
        field!(task_cgroups: "task_struct"."cgroups"),
        field!(css_set_dfl_cgrp: "css_set"."dfl_cgrp"),
        field!(cgroup_level: "cgroup"."level"),
        // Pointers since Linux 6.0, ids before (KernelFeatures::cgroup_ancestor_ids).
        field!(cgroup_ancestors: "cgroup"."ancestors" | "ancestor_ids"),
        field!(cgroup_kn: "cgroup"."kn"),
        field!(kernfs_node_id: "kernfs_node"."id"),
        field!(task_signal: "task_struct"."signal"),
        field!(signal_live: "signal_struct"."live"),
    ],
    metrics: &[],
    switch: None,
    needs: &[],
};

/// TCP connections (`collector-ebpf/src/sockets.rs`). Attached before the syscalls, whose
/// exit path hands accepted connections to it.
pub const TCP: Family = Family {
    name: "tcp",
    what: "TCP connections",
    core: false,
    stage: Stage::Measure,
    probes: &[
        probe!("inet_sock_set_state" => "collector_inet_sock_set_state"),
        probe!("tcp_destroy_sock" => "collector_tcp_destroy_sock"),
        probe!("tcp_retransmit_skb" => "collector_tcp_retransmit_skb"),
        probe!("tcp_send_reset" => "collector_tcp_send_reset"),
        probe!("tcp_receive_reset" => "collector_tcp_receive_reset"),
    ],
    maps: &[maps::SOCKETS, maps::TCP_COUNTS, maps::EVENTS, maps::EVENT_DROPS],
    fields: with_fd_path![
        field!(sock_family: "sock"."__sk_common.skc_family"),
        field!(sock_protocol: "sock"."sk_protocol"),
        field!(sock_err: "sock"."sk_err"),
        field!(sock_daddr: "sock"."__sk_common.skc_daddr"),
        field!(sock_rcv_saddr: "sock"."__sk_common.skc_rcv_saddr"),
        field!(sock_dport: "sock"."__sk_common.skc_dport"),
        field!(sock_v6_daddr: "sock"."__sk_common.skc_v6_daddr"),
        field!(sock_v6_rcv_saddr: "sock"."__sk_common.skc_v6_rcv_saddr"),
        field!(inet_sport: "inet_sock"."inet_sport"),
    ],
    switch: Some(maps::SWITCH_TCP),
    metrics: &[
        "collector_tcp_connections",
        "collector_tcp_retransmits_total",
        "collector_tcp_resets_total",
        "collector_tcp_connections_opened_total",
        "collector_tcp_connect_errors_total",
        "collector_tcp_connect_duration_seconds",
        "collector_tcp_connection_duration_seconds",
    ],
    needs: &[],
};

/// HTTP/1.x requests (`collector-ebpf/src/http.rs`): the syscalls family's `sys_exit` hands
/// it the sends and receives of connections the tcp family follows, counted by the
/// socket_bytes code, so it needs both. A program of its own, tail-called, so that a kernel
/// refusing the parser turns off this family alone.
pub const HTTP: Family = Family {
    name: "http",
    what: "HTTP requests",
    core: false,
    stage: Stage::Measure,
    probes: &[
        Probe {
            name: "http",
            program: "collector_http",
            tracepoint: "sys_exit",
            fewer_args: None,
            via: Via::TailCall {
                map: maps::HTTP_PROGRAM,
                index: 0,
            },
        },
        // The search of a read for pipelined requests, tail-called by the first.
        Probe {
            name: "http_pipelined",
            program: "collector_http_pipelined",
            tracepoint: "sys_exit",
            fewer_args: None,
            via: Via::TailCall {
                map: maps::HTTP_PROGRAM,
                index: 1,
            },
        },
    ],
    maps: &[
        maps::HTTP_CONNS,
        maps::HTTP_STATS,
        maps::HTTP_PATHS,
        maps::EVENTS,
        maps::EVENT_DROPS,
        maps::MAP_ERRORS,
    ],
    // The buffer of a call is found from its arguments (x86-64's registers), as the
    // socket_bytes family finds its fds.
    fields: &[field!(regs_arg0: "pt_regs"."di"), field!(regs_arg1: "pt_regs"."si")],
    metrics: &[
        "collector_http_server_request_duration_seconds",
        "collector_http_client_request_duration_seconds",
        "collector_http_server_requests_aborted_total",
        "collector_http_client_requests_aborted_total",
        "collector_http_server_request_bytes_total",
        "collector_http_server_response_bytes_total",
        "collector_http_client_request_bytes_total",
        "collector_http_client_response_bytes_total",
        "collector_http_untracked_total",
    ],
    switch: Some(maps::SWITCH_HTTP),
    needs: &["tcp", "socket_bytes"],
};

/// Bytes read and written (`collector-ebpf/src/socket_bytes.rs`), by fd type and on
/// sockets by family and protocol: counted by the syscalls family's `sys_exit` from the
/// returns of target reads, writes, sends and receives, so it has no probe of its own; its
/// switch turns it on. Without it, bytes are not counted (also not the per-connection bytes
/// of `tcp.close`). Named for what it first counted.
pub const SOCKET_BYTES: Family = Family {
    name: "socket_bytes",
    what: "bytes read and written, and socket bytes (also the bytes of tcp.close events)",
    core: false,
    stage: Stage::Measure,
    probes: &[],
    maps: &[maps::SOCKET_BYTES, maps::SOCKETS, maps::FD_BYTES],
    fields: with_fd_path![
        field!(sock_family: "sock"."__sk_common.skc_family"),
        field!(sock_protocol: "sock"."sk_protocol"),
        // x86-64's argument registers; other architectures name them otherwise, and the
        // family is off there until they are added.
        field!(regs_arg0: "pt_regs"."di"),
        field!(regs_arg1: "pt_regs"."si"),
        field!(regs_arg2: "pt_regs"."dx"),
        field!(regs_arg3: "pt_regs"."r10"),
        field!(regs_cs: "pt_regs"."cs" | "csx"),
    ],
    metrics: &[
        "collector_socket_sent_bytes_total",
        "collector_socket_received_bytes_total",
        "collector_read_bytes_total",
        "collector_written_bytes_total",
    ],
    switch: Some(maps::SWITCH_SOCKET_BYTES),
    needs: &[],
};

/// On-CPU time, run-queue latency, context switches and page faults of target threads
/// (`collector-ebpf/src/sched.rs`): the counters the kernel keeps in each task, read by the
/// processes family's `sched_switch` program as a target thread leaves a CPU (and by its
/// fork program for a target's new thread), so it has no probe of its own; its switch
/// turns it on. Needs CONFIG_SCHED_INFO for `sched_info`.
pub const SCHED: Family = Family {
    name: "sched",
    what: "on-CPU time, run-queue latency, context switches and page faults",
    core: false,
    stage: Stage::Measure,
    probes: &[],
    maps: &[maps::SCHED_THREADS, maps::SCHED_STATS, maps::MAP_ERRORS],
    fields: &[
        // `state` became `__state` in Linux 5.14 (and from long to unsigned int: the low
        // 32 bits hold the state on a little-endian machine either way).
        field!(task_state: "task_struct"."__state" | "state"),
        field!(task_flags: "task_struct"."flags"),
        field!(task_start_time: "task_struct"."start_time"),
        field!(task_sum_exec_runtime: "task_struct"."se.sum_exec_runtime"),
        field!(task_run_delay: "task_struct"."sched_info.run_delay"),
        field!(task_pcount: "task_struct"."sched_info.pcount"),
        field!(task_nvcsw: "task_struct"."nvcsw"),
        field!(task_nivcsw: "task_struct"."nivcsw"),
        field!(task_min_flt: "task_struct"."min_flt"),
        field!(task_maj_flt: "task_struct"."maj_flt"),
    ],
    metrics: &[
        "collector_cpu_seconds_total",
        "collector_off_cpu_seconds_total",
        "collector_runqueue_latency_seconds",
        "collector_context_switches_total",
        "collector_page_faults_total",
    ],
    switch: Some(maps::SWITCH_SCHED),
    needs: &[],
};

/// Syscall latency and errors (`collector-ebpf/src/syscalls.rs`): attached last, so
/// everything counted happened with the target set complete.
pub const SYSCALLS: Family = Family {
    name: "syscalls",
    what: "syscall counts, errors and latency",
    core: true,
    stage: Stage::Measure,
    probes: &[
        probe!("sys_enter" => "collector_sys_enter"),
        probe!("sys_exit" => "collector_sys_exit"),
    ],
    maps: &[
        maps::ENTRY,
        maps::THREAD_SLOTS,
        maps::FREE_SLOTS,
        maps::CURRENT,
        maps::TARGETS_GENERATION,
        maps::SYSCALL_SERIES,
        maps::SERIES_ROWS,
        maps::FREE_SERIES,
        maps::SYSCALL_STATS,
        maps::SYSCALL_ERRORS,
        // syscall.slow records (--slow-syscall)
        maps::EVENTS,
        maps::EVENT_DROPS,
    ],
    fields: &[field!(regs_syscall_nr: "pt_regs"."orig_ax" | "syscallno")],
    metrics: &[
        "collector_syscalls_total",
        "collector_syscall_errors_total",
        "collector_syscall_duration_seconds",
    ],
    switch: None,
    needs: &[],
};

/// OOM kills of target processes (`collector-ebpf/src/oom.rs`): a `process.oom_kill`
/// event each, on which `collector_oom_kills_total` is defined.
pub const OOM: Family = Family {
    name: "oom",
    what: "OOM kills",
    core: false,
    stage: Stage::Measure,
    // `(task, uid)` since 6.8 and in later stable releases; `(int pid)` before.
    probes: &[probe!("mark_victim" => "collector_oom_victim", below 2 args => "collector_oom_victim_pid")],
    maps: &[maps::TARGET_OF, maps::EVENTS, maps::EVENT_DROPS, maps::OOM_CLAIMS],
    fields: &[
        field!(task_pid: "task_struct"."pid"),
        field!(task_tgid: "task_struct"."tgid"),
        field!(task_comm: "task_struct"."comm"),
        field!(task_mm: "task_struct"."mm"),
        field!(task_group_leader: "task_struct"."group_leader"),
        field!(task_start_time: "task_struct"."start_time"),
        // include/linux/mm_types_task.h: MM_FILEPAGES 0, MM_ANONPAGES 1, MM_SHMEMPAGES 3.
        field!(mm_rss_file: "mm_struct"."rss_stat[0].count" | "rss_stat.count[0]"),
        field!(mm_rss_anon: "mm_struct"."rss_stat[1].count" | "rss_stat.count[1]"),
        field!(mm_rss_shmem: "mm_struct"."rss_stat[3].count" | "rss_stat.count[3]"),
    ],
    metrics: &["collector_oom_kills_total"],
    switch: None,
    needs: &[],
};

/// Block I/O of targets (`collector-ebpf/src/block.rs`): requests a target's bios started,
/// from issue to completion, and their bytes.
pub const BLOCK: Family = Family {
    name: "block",
    what: "block I/O latency and bytes",
    core: false,
    stage: Stage::Measure,
    probes: &[
        // `(q, bio)` before 5.11, `(bio)` since.
        probe!("block_bio_queue" => "collector_bio_queue_q", below 2 args => "collector_bio_queue"),
        // `(q, split, new_sector)` before 5.11, `(split, new_sector)` since.
        probe!("block_split" => "collector_bio_split_q", below 3 args => "collector_bio_split"),
        probe!("block_rq_issue" => "collector_rq_issue"),
        probe!("block_rq_complete" => "collector_rq_complete"),
    ],
    maps: &[
        maps::TARGET_OF,
        maps::BIO_OWNERS,
        maps::BLOCK_REQUESTS,
        maps::BLOCK_STATS,
    ],
    fields: &[
        field!(request_bio: "request"."bio"),
        field!(request_cmd_flags: "request"."cmd_flags"),
        field!(request_data_len: "request"."__data_len"),
    ],
    metrics: &["collector_block_io_duration_seconds", "collector_block_io_bytes_total"],
    switch: None,
    needs: &[],
};

/// Every family, in attach order within each stage.
pub const FAMILIES: [Family; 9] = [PROCESSES, CGROUPS, TCP, SOCKET_BYTES, HTTP, SCHED, OOM, BLOCK, SYSCALLS];

/// Every probe of every family.
pub fn all_probes() -> impl Iterator<Item = &'static Probe> {
    FAMILIES.iter().flat_map(|f| f.probes.iter())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn probe_and_program_names_are_unique() {
        let mut names = HashSet::new();
        let mut programs = HashSet::new();
        for probe in all_probes() {
            assert!(names.insert(probe.name), "{}", probe.name);
            assert!(programs.insert(probe.program), "{}", probe.program);
        }
    }

    #[test]
    fn every_offset_belongs_to_a_family() {
        // KernelOffsets is all u32s: mark each slot the families fill, and find none left.
        let mut offsets = KernelOffsets::default();
        for field in FAMILIES.iter().flat_map(|f| f.fields) {
            *(field.slot)(&mut offsets) = 1;
        }
        // SAFETY: KernelOffsets is #[repr(C)] and all u32 fields.
        let all: [u32; size_of::<KernelOffsets>() / 4] = unsafe { std::mem::transmute(offsets) };
        assert!(all.iter().all(|&o| o == 1), "{offsets:?}");
    }

    #[test]
    fn a_family_comes_after_those_it_needs() {
        for (i, family) in FAMILIES.iter().enumerate() {
            for needed in family.needs {
                assert!(
                    FAMILIES[..i].iter().any(|f| f.name == *needed),
                    "{}: {needed}",
                    family.name
                );
            }
        }
    }

    #[test]
    fn follow_families_come_before_measuring_ones() {
        let stages: Vec<Stage> = FAMILIES.iter().map(|f| f.stage).collect();
        assert!(stages.is_sorted(), "{stages:?}");
    }
}

//! Loading the kernel programs, attaching them, and knowing which are attached.
//!
//! Nothing is pinned: every program, link and map belongs to the `Ebpf` object held in
//! [`Probes`], so dropping it (on shutdown, or on any start-up error) detaches and unloads
//! everything. No state outlives the agent.
use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, RawTracePoint},
};
use collector_common::{globals, maps};

use crate::btf::KernelLayout;

/// The kernel object built from `collector-ebpf` by build.rs. Public for the benchmark's
/// helper, which attaches the object's floor programs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector"));

/// A probe: a program and the raw tracepoint it attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The `probe` label value.
    pub name: &'static str,
    pub program: &'static str,
    pub tracepoint: &'static str,
}

/// Probes that keep the target set current; attached before targets are discovered so no
/// fork between discovery and attach is missed.
pub const TARGET_PROBES: [Probe; 5] = [
    Probe {
        name: "sched_switch",
        program: "collector_sched_switch",
        tracepoint: "sched_switch",
    },
    Probe {
        name: "sched_process_fork",
        program: "collector_fork",
        tracepoint: "sched_process_fork",
    },
    Probe {
        name: "sched_process_exec",
        program: "collector_exec",
        tracepoint: "sched_process_exec",
    },
    Probe {
        name: "sched_process_exit",
        program: "collector_exit",
        tracepoint: "sched_process_exit",
    },
    Probe {
        name: "cgroup_attach_task",
        program: "collector_cgroup_attach_task",
        tracepoint: "cgroup_attach_task",
    },
];

/// Probes that measure; attached last, once the target set is complete.
pub const SYSCALL_PROBES: [Probe; 2] = [
    Probe {
        name: "sys_enter",
        program: "collector_sys_enter",
        tracepoint: "sys_enter",
    },
    Probe {
        name: "sys_exit",
        program: "collector_sys_exit",
        tracepoint: "sys_exit",
    },
];

/// Probes of TCP connections and socket bytes (sockets.rs in the kernel crate); attached
/// with the syscall probes, since inbound connections get their owner at accept()'s return.
pub const SOCKET_PROBES: [Probe; 7] = [
    Probe {
        name: "inet_sock_set_state",
        program: "collector_inet_sock_set_state",
        tracepoint: "inet_sock_set_state",
    },
    Probe {
        name: "sock_send_length",
        program: "collector_sock_send_length",
        tracepoint: "sock_send_length",
    },
    Probe {
        name: "sock_recv_length",
        program: "collector_sock_recv_length",
        tracepoint: "sock_recv_length",
    },
    Probe {
        name: "tcp_destroy_sock",
        program: "collector_tcp_destroy_sock",
        tracepoint: "tcp_destroy_sock",
    },
    Probe {
        name: "tcp_retransmit_skb",
        program: "collector_tcp_retransmit_skb",
        tracepoint: "tcp_retransmit_skb",
    },
    Probe {
        name: "tcp_send_reset",
        program: "collector_tcp_send_reset",
        tracepoint: "tcp_send_reset",
    },
    Probe {
        name: "tcp_receive_reset",
        program: "collector_tcp_receive_reset",
        tracepoint: "tcp_receive_reset",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The object or one of its maps could not be loaded into the kernel.
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// The verifier rejected a program, or the kernel refused to attach it.
    #[error("cannot {action} probe {probe} (raw tracepoint {tracepoint}): {source}")]
    Program {
        action: &'static str,
        probe: &'static str,
        tracepoint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// The object lacks a program this agent expects (a build mismatch).
    #[error("the embedded eBPF object has no program {0}")]
    Missing(&'static str),
}

/// The loaded object and the attach state of each probe.
pub struct Probes {
    ebpf: Ebpf,
    attached: BTreeMap<&'static str, bool>,
}

impl Probes {
    /// Loads the object with its pid-indexed maps sized to the host's `pid_max`, the event
    /// ring buffer to `ring_buffer_bytes`, and the kernel layout set. No program is attached.
    pub fn load(layout: &KernelLayout, pid_max: u32, ring_buffer_bytes: u32) -> Result<Self, ProbeError> {
        let ebpf = EbpfLoader::new()
            // The kernel's BTF is for CO-RE relocations, which Rust programs do not have; not
            // loading it saves a second multi-megabyte parse (btf.rs reads what we need).
            .btf(None)
            .map_max_entries(maps::TARGET_OF, pid_max)
            .map_max_entries(maps::ENTRY, pid_max)
            .map_max_entries(maps::EVENTS, ring_buffer_bytes)
            .override_global(globals::KERNEL_OFFSETS, &layout.offsets, true)
            .override_global(globals::KERNEL_FEATURES, &layout.features, true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        let attached = TARGET_PROBES
            .iter()
            .chain(&SOCKET_PROBES)
            .chain(&SYSCALL_PROBES)
            .map(|p| (p.name, false))
            .collect();
        Ok(Probes { ebpf, attached })
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Verifies and attaches `probes`, in order. On error the caller drops `self`, which
    /// detaches whatever was attached.
    pub fn attach(&mut self, probes: &[Probe]) -> Result<(), ProbeError> {
        for probe in probes {
            let err = |action, source| ProbeError::Program {
                action,
                probe: probe.name,
                tracepoint: probe.tracepoint,
                source: Box::new(source),
            };
            let program: &mut RawTracePoint = self
                .ebpf
                .program_mut(probe.program)
                .ok_or(ProbeError::Missing(probe.program))?
                .try_into()
                .map_err(|e| err("load", e))?;
            program.load().map_err(|e| err("load", e))?;
            program.attach(probe.tracepoint).map_err(|e| err("attach", e))?;
            self.attached.insert(probe.name, true);
            tracing::debug!(probe = probe.name, "attached");
        }
        Ok(())
    }

    /// Each probe by its `probe` label, and whether it is attached.
    pub fn attached(&self) -> &BTreeMap<&'static str, bool> {
        &self.attached
    }
}

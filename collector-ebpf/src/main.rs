//! Kernel programs of the collector: one module per probe family.
//!
//! All programs are raw tracepoints: they need neither tracefs nor kprobes, and their
//! arguments are the tracepoint's `TP_PROTO` arguments (cited in each module).
#![no_std]
#![no_main]
// `atomic_xadd`: the only atomic add the BPF target offers (`maps.rs`, `targets_changed`).
#![feature(core_intrinsics)]
// `asm!` on the BPF target: an optimisation barrier for a verifier-visible mask (`maps.rs`).
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod bench;
mod block;
mod cgroups;
mod events;
mod fds;
mod globals;
mod http;
mod maps;
mod oom;
mod processes;
mod sched;
mod socket_bytes;
mod sockets;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! Facts about the running kernel that the agent writes into the object before load, by the
//! names in `collector_common::globals`, and reading kernel structs with them.
//!
//! They are `static mut` (section .data), not immutable statics (.rodata), on purpose: the
//! linker may merge a constant the code takes the address of (say a `&0u64` passed to a map
//! helper) with any read-only global holding the same bytes, and overriding the global at
//! load would then silently change that constant too. We saw exactly that: a zero inserted
//! into SYSCALL_ERRORS came out as these offsets. Mutable data is never a merge target. The
//! non-zero initial values keep them out of .bss, which aya cannot patch, and mark "not set".
use aya_ebpf::helpers::bpf_probe_read_kernel;
use collector_common::{KernelFeatures, KernelOffsets};

#[unsafe(no_mangle)]
static mut KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: u32::MAX,
    task_tgid: u32::MAX,
    task_exit_code: u32::MAX,
    task_start_time: u32::MAX,
    task_group_leader: u32::MAX,
    binprm_filename: u32::MAX,
};

#[unsafe(no_mangle)]
static mut KERNEL_FEATURES: KernelFeatures = KernelFeatures {
    exit_has_group_dead: u32::MAX,
};

/// Volatile, so the compiler cannot fold in the initial values.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}

#[inline(always)]
pub fn features() -> KernelFeatures {
    unsafe { core::ptr::read_volatile(&raw const KERNEL_FEATURES) }
}

/// Reads the `T` at `offset` bytes into the kernel struct at `base`.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
}

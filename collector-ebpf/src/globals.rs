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
use collector_common::{
    KernelFeatures, KernelOffsets,
    http::{BUCKETS, Bounds},
    sockets::{SYSCALL_IO_ENTRIES, SyscallIo},
};

/// Every field u32::MAX ("not set"); the struct is all u32s.
#[unsafe(no_mangle)]
pub(crate) static mut KERNEL_OFFSETS: KernelOffsets =
    unsafe { core::mem::transmute([u32::MAX; size_of::<KernelOffsets>() / size_of::<u32>()]) };

/// Every byte 0xff: no syscall moves socket bytes, ancestors are pointers, until the agent
/// sets them (the struct is a whole number of u32s).
#[unsafe(no_mangle)]
pub(crate) static mut KERNEL_FEATURES: KernelFeatures =
    unsafe { core::mem::transmute([u32::MAX; size_of::<KernelFeatures>() / size_of::<u32>()]) };

/// The HTTP duration buckets' upper bounds in ns (`--http-buckets`); all +Inf until set.
#[unsafe(no_mangle)]
pub(crate) static mut HTTP_BOUNDS: Bounds = Bounds {
    ns: [u64::MAX; BUCKETS - 1],
};

/// `--slow-syscall` in ns: a target's call that takes longer is sent as a `syscall.slow`
/// record. u64::MAX (no call is that slow) until the agent sets it.
#[unsafe(no_mangle)]
pub(crate) static mut SLOW_SYSCALL_NS: u64 = u64::MAX;

/// The `--slow-syscall` threshold, read like [`offset!`].
#[inline(always)]
pub fn slow_syscall_ns() -> u64 {
    unsafe { core::ptr::read_volatile(&raw const SLOW_SYSCALL_NS) }
}

/// One field of `KERNEL_OFFSETS`, e.g. `offset!(task_tgid)`. A volatile load of just that
/// field, so the compiler cannot fold in the initial value, and hot probes such as
/// `sched_switch` do not copy the whole struct to read one offset.
macro_rules! offset {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const (*(&raw const $crate::globals::KERNEL_OFFSETS)).$field) }
    };
}

/// One field of `KERNEL_FEATURES`, read like [`offset!`].
macro_rules! kernel_feature {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const (*(&raw const $crate::globals::KERNEL_FEATURES)).$field) }
    };
}

pub(crate) use {kernel_feature, offset};

/// What syscall `nr` moves through sockets (`KernelFeatures::syscall_io`).
#[inline(always)]
pub fn syscall_io(nr: u32) -> SyscallIo {
    if nr as usize >= SYSCALL_IO_ENTRIES {
        return SyscallIo::None;
    }
    // Masked too: a verifier before 5.11 may not carry the bound above over to the register
    // that indexes (SYSCALL_IO_ENTRIES is a power of two).
    let index = nr as usize & (SYSCALL_IO_ENTRIES - 1);
    // One byte, volatile as in `offset!`: not a copy of the table onto the 512-byte stack.
    let table = unsafe { &raw const (*(&raw const KERNEL_FEATURES)).syscall_io } as *const u8;
    SyscallIo::from_u8(unsafe { core::ptr::read_volatile(table.add(index)) })
}

/// Reads the `T` at `offset` bytes into the kernel struct at `base`.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
}

//! `TARGETS_GENERATION`, mapped into the agent: the counter whose bump tells every CPU's
//! syscall filter cache (`CURRENT`, `collector-ebpf/src/maps.rs`) that `TARGET_OF` changed.
//!
//! Mapped (the map is `BPF_F_MMAPABLE`, Linux 5.5+) rather than written with the map
//! syscall, because an update writes the whole value: a bump the kernel made in between
//! (a cgroup move) would be lost, and a CPU could keep an answer from before it. Mapped,
//! the agent's bump and the kernel's are one atomic add on the same word. aya 0.14 maps
//! ring buffers but not arrays, hence nix's `mmap` here.
use std::{
    num::NonZeroUsize,
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

pub struct TargetsGeneration {
    word: NonNull<AtomicU64>,
    len: NonZeroUsize,
    /// Holds the map's fd for as long as it is mapped.
    _map: MapData,
}

// SAFETY: the mapping is shared memory touched only through the atomic, and unmapped once.
unsafe impl Send for TargetsGeneration {}
unsafe impl Sync for TargetsGeneration {}

impl TargetsGeneration {
    /// Maps the one value of `map` (`TARGETS_GENERATION`, an array created `BPF_F_MMAPABLE`).
    pub fn map(map: MapData) -> std::io::Result<Self> {
        // An array's mapping covers its values rounded up to whole pages (kernel/bpf/arraymap.c:
        // array_map_mmap); the first value is at offset 0.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let len = NonZeroUsize::new(usize::try_from(page).unwrap_or(4096)).expect("a page is not empty");
        let mapped = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }?;
        Ok(TargetsGeneration {
            word: mapped.cast(),
            len,
            _map: map,
        })
    }

    /// Says that `TARGET_OF` changed for processes that may be running: every CPU looks
    /// the target of its next syscall's caller up again.
    pub fn bump(&self) {
        unsafe { self.word.as_ref() }.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for TargetsGeneration {
    fn drop(&mut self) {
        let _ = unsafe { munmap(self.word.cast(), self.len.get()) };
    }
}

//! The event ring buffer on the agent's side: the thread that reads and decodes its records,
//! and how full it is.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use super::records::{DecodeError, Record, decode};
use crate::shutdown::Shutdown;

/// How full the ring buffer is, read from its producer and consumer positions, which the
/// kernel exposes to mmap (kernel/bpf/ringbuf.c: page 0 holds consumer_pos, page 1
/// producer_pos).
pub struct RingFill {
    consumer: *const u64,
    producer: *const u64,
    page: usize,
    size: u64,
}

// SAFETY: the pages are read-only mappings owned by this value, read with volatile loads.
unsafe impl Send for RingFill {}
unsafe impl Sync for RingFill {}

impl RingFill {
    pub fn new(ring: &RingBuf<MapData>, size: u32) -> std::io::Result<RingFill> {
        let page = procfs::page_size() as usize;
        let map = |offset: usize| -> std::io::Result<*const u64> {
            // SAFETY: a fresh shared read-only mapping of one page of the ring buffer's fd.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    ring.as_fd().as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(p.cast())
            }
        };
        let consumer = map(0)?;
        let producer = map(page)?;
        Ok(RingFill {
            consumer,
            producer,
            page,
            size: size.into(),
        })
    }

    /// Bytes written and not yet consumed, as a fraction of the ring buffer's size.
    pub fn fraction(&self) -> f64 {
        // SAFETY: both pointers are live mappings (see new), u64-aligned at page starts.
        let (c, p) = unsafe { (self.consumer.read_volatile(), self.producer.read_volatile()) };
        p.saturating_sub(c) as f64 / self.size as f64
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmapping the pages mapped in new.
        unsafe {
            libc::munmap(self.consumer as *mut _, self.page);
            libc::munmap(self.producer as *mut _, self.page);
        }
    }
}

/// Reads the ring buffer on a thread of its own, handing each record (or why it could not be
/// decoded) to `handle`, until `stop` is triggered; then drains it once more, so what the
/// kernel wrote before the programs were detached is all handled.
pub fn spawn_reader(
    mut ring: RingBuf<MapData>,
    stop: Shutdown,
    mut handle: impl FnMut(Result<Record, DecodeError>) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("ring-buffer".into()).spawn(move || {
        loop {
            let stopping = stop.is_triggered();
            if let Err(e) = wait_readable(&ring, &stop) {
                tracing::warn!("cannot wait for the ring buffer ({e}); reading it every 100 ms");
                stop.wait(std::time::Duration::from_millis(100));
            }
            while let Some(item) = ring.next() {
                handle(decode(&item));
            }
            if stopping {
                return;
            }
        }
    })
}

/// Sleeps until the ring buffer has records or `stop` is triggered.
fn wait_readable(ring: &RingBuf<MapData>, stop: &Shutdown) -> Result<(), Errno> {
    let mut fds = [
        PollFd::new(ring.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop.fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

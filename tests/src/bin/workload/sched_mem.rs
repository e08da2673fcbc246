//! Commands that make exact amounts of scheduler, memory and file work, for the sched and
//! fd-bytes tests:
//!
//!   touch_pages K      map K fresh anonymous pages (no huge pages), write one byte to each
//!                      (K minor faults), unmap them
//!   spin MS            spin on a CPU for MS milliseconds of wall time, making no syscall
//!   sleeps N           N nanosleep() calls of 1 ms: N voluntary context switches
//!   file_io PATH B     write B bytes to a new file PATH, read them back, remove it
//!   direct_io PATH B   write B bytes (a multiple of 4096) at the start of the block device
//!                      PATH with O_DIRECT, 64 KiB at a time, then read them back so
//!   alloc_forever MB   touch MB MiB more of anonymous memory, again and again, keeping it
//!                      all (to be OOM-killed in a cgroup whose memory limit is lower)
use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    time::{Duration, Instant},
};

const PAGE: usize = 4096;

pub fn touch_pages(k: u64) {
    if k == 0 {
        return;
    }
    let len = k as usize * PAGE;
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap {len} bytes");
    // A huge page would serve 512 pages with one fault.
    unsafe { libc::madvise(map, len, libc::MADV_NOHUGEPAGE) };
    for page in 0..k as usize {
        unsafe { std::ptr::write_volatile(map.cast::<u8>().add(page * PAGE), 1) };
    }
    unsafe { libc::munmap(map, len) };
}

/// `n` minor faults, in mappings of 1024 pages (the bench's fault loop).
pub fn fault_loop(n: u64) {
    for _ in 0..n / 1024 {
        touch_pages(1024);
    }
    touch_pages(n % 1024);
}

/// In a fresh child: into `cgroup` (a target of its own), one sleep (so the collector has
/// seen it leave a CPU as a target), then `touch_pages(k)`. The sleep runs once before the
/// move too: the first switch in the target may come anywhere from the move on, and the
/// pages the path after it writes (its stack, shared with the parent until then) are then
/// written already.
pub fn touch_pages_alone(cgroup: &str, k: u64) {
    let procs = format!("{cgroup}/cgroup.procs");
    let pid = std::process::id().to_string();
    sleeps(1);
    std::fs::write(&procs, &pid).unwrap_or_else(|e| panic!("cannot join {cgroup}: {e}"));
    sleeps(1);
    touch_pages(k);
}

pub fn spin(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

pub fn sleeps(n: u64) {
    for _ in 0..n {
        super::nanosleep(1);
    }
}

pub fn file_io(path: &str, bytes: u64) {
    let mut file = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    let chunk = vec![b'f'; 65536];
    let mut left = bytes as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    file.rewind().unwrap();
    let mut back = Vec::with_capacity(bytes as usize);
    file.read_to_end(&mut back).unwrap();
    assert_eq!(back.len() as u64, bytes);
    std::fs::remove_file(path).unwrap();
}

pub fn direct_io(path: &str, bytes: u64) {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    let device = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    const CHUNK: usize = 65536;
    // O_DIRECT wants a buffer aligned to the device's logical block: a page is.
    let layout = std::alloc::Layout::from_size_align(CHUNK, PAGE).unwrap();
    let buffer = unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc_zeroed(layout), CHUNK) };
    let mut chunks = |f: &mut dyn FnMut(&mut [u8], u64)| {
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(CHUNK as u64) as usize;
            f(&mut buffer[..n], at);
            at += n as u64;
        }
    };
    chunks(&mut |b, at| device.write_all_at(b, at).unwrap());
    chunks(&mut |b, at| device.read_exact_at(b, at).unwrap());
}

pub fn alloc_forever(mib: u64) -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1u8; (mib as usize) << 20]);
    }
}

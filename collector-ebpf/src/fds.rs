//! From a file descriptor of the current task to its file and socket, for the syscall exit
//! path (accept's returned fd, the fds of send and receive calls).
//!
//! Path (include/linux/sched.h task_struct.files; include/linux/fdtable.h files_struct.fdt,
//! fdtable.{max_fds, fd}; include/linux/fs.h file.{f_inode, private_data}, inode.i_mode;
//! include/linux/net.h socket.sk). A socket file's private_data is its `struct socket`
//! (net/socket.c:sock_alloc_file), and only a socket's inode has S_IFSOCK
//! (net/socket.c:sock_alloc), so the mode says whether private_data may be read as one.
//! The syscall has returned, so another thread may have closed or replaced the fd since:
//! the reads are probe reads, and a stale answer costs one miscounted call at worst.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::globals::{offset, read_field};

/// include/uapi/linux/stat.h
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// current->files->fdt->fd[fd], or `None` past the table or for an empty slot.
#[inline(always)]
pub fn file_of_fd(fd: u64) -> Option<*const u8> {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files: *const u8 = read_field(task, offset!(task_files)).ok()?;
    let fdt: *const u8 = read_field(files, offset!(files_fdt)).ok()?;
    let max_fds: u32 = read_field(fdt, offset!(fdtable_max_fds)).ok()?;
    if fd >= u64::from(max_fds) {
        return None;
    }
    let fds: *const *const u8 = read_field(fdt, offset!(fdtable_fd)).ok()?;
    let file: *const u8 = unsafe { bpf_probe_read_kernel(fds.add(fd as usize)) }.ok()?;
    (!file.is_null()).then_some(file)
}

/// The `struct sock` behind `fd`, when `fd` is a socket.
#[inline(always)]
pub fn socket_of_fd(fd: u64) -> Option<*const u8> {
    let file = file_of_fd(fd)?;
    let inode: *const u8 = read_field(file, offset!(file_inode)).ok()?;
    let mode: u16 = read_field(inode, offset!(inode_mode)).ok()?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: *const u8 = read_field(file, offset!(file_private_data)).ok()?;
    let sk: *const u8 = read_field(socket, offset!(socket_sk)).ok()?;
    (!sk.is_null()).then_some(sk)
}

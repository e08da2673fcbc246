//! From a file descriptor of the current task to its file, what it is, and its socket, for
//! the syscall exit path (accept's returned fd, the fds of reads, writes, sends and receives).
//!
//! Path (include/linux/sched.h task_struct.files; include/linux/fdtable.h files_struct.fdt,
//! fdtable.{max_fds, fd}; include/linux/fs.h file.{f_inode, private_data}, inode.i_mode;
//! include/linux/net.h socket.sk). A socket file's private_data is its `struct socket`
//! (net/socket.c:sock_alloc_file), and only a socket's inode has S_IFSOCK
//! (net/socket.c:sock_alloc), so the mode says whether private_data may be read as one.
//! The syscall has returned, so another thread may have closed or replaced the fd since:
//! the reads are probe reads, and a stale answer costs one miscounted call at worst.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use collector_common::sched::{FD_TYPE_OF_MODE, FdType};

use crate::globals::{offset, read_field};

/// [`FD_TYPE_OF_MODE`] as data (`.data`, read volatile): the type is one load whose value
/// the verifier does not know, so it walks what follows once for every type, where a
/// `match` on the mode made it walk each of `sys_exit`'s paths once per type (Linux 5.10's
/// verifier stops at a million instructions, and `sys_exit` comes close).
#[unsafe(no_mangle)]
static mut FD_TYPE_OF_INODE_MODE: [u8; 16] = FD_TYPE_OF_MODE;

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

/// The file behind `fd` and what it is, an [`FdType`] as a number below `FD_TYPES`.
#[inline(always)]
pub fn typed_file_of_fd(fd: u64) -> Option<(*const u8, u32)> {
    let file = file_of_fd(fd)?;
    let inode: *const u8 = read_field(file, offset!(file_inode)).ok()?;
    let mode: u16 = read_field(inode, offset!(inode_mode)).ok()?;
    let table = (&raw const FD_TYPE_OF_INODE_MODE).cast::<u8>();
    let fd_type = unsafe { core::ptr::read_volatile(table.add(usize::from(mode >> 12) & 15)) };
    Some((file, u32::from(fd_type)))
}

/// The `struct sock` behind `fd`, when `fd` is a socket.
#[inline(always)]
pub fn socket_of_fd(fd: u64) -> Option<*const u8> {
    match typed_file_of_fd(fd)? {
        (file, t) if t == FdType::Socket as u32 => socket_of_file(file),
        _ => None,
    }
}

/// The `struct sock` of a socket's file.
#[inline(always)]
pub fn socket_of_file(file: *const u8) -> Option<*const u8> {
    let socket: *const u8 = read_field(file, offset!(file_private_data)).ok()?;
    let sk: *const u8 = read_field(socket, offset!(socket_sk)).ok()?;
    (!sk.is_null()).then_some(sk)
}

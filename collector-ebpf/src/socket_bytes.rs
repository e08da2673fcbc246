//! Bytes target processes read and wrote, by what the fd is (file, socket, pipe, other),
//! and on sockets by family and protocol, from the return values of their read, write,
//! send and receive syscalls on the `sys_exit` path that already runs for target threads
//! (`syscalls.rs`). Non-targets pay nothing for it: no program runs per read or write.
//!
//! Which syscalls move bytes, and through which argument, is the `SyscallIo` table the
//! agent fills by this architecture's syscall numbers (`KernelFeatures::syscall_io`). The
//! arguments are read back from the caller's `struct pt_regs` (arch/x86/include/asm/
//! syscall_wrapper.h: di, si, dx, r10 are arguments 0-3; the kernel writes only ax, the
//! return value, before sys_exit). What each returns (man 2; net/socket.c):
//! - write/writev/pwrite64/pwritev/pwritev2/sendto/sendmsg(fd, ...) and
//!   read/readv/pread64/preadv/preadv2/recvfrom/recvmsg(fd, ...): bytes moved. recvfrom's flags are argument 3, recvmsg's argument 2: with MSG_PEEK the data
//!   stays queued and is counted when it is read.
//! - sendmmsg/recvmmsg(fd, struct mmsghdr *msgvec, vlen, flags, ...): how many messages
//!   went; each `mmsghdr.msg_len` (include/linux/socket.h) holds that message's bytes. The
//!   kernel caps vlen at UIO_MAXIOV (1024), and so does the loop here.
//! - sendfile(out_fd, in_fd, ...), splice(fd_in, off_in, fd_out, ...) and
//!   copy_file_range(fd_in, off_in, fd_out, ...): bytes moved, read from the in fd and
//!   written to the out fd (sent when it is a socket, received when the in fd is one).
//! Every fd counts under its type (`FD_BYTES`, from the inode's mode); a socket's also under
//! its family and protocol (`SOCKET_BYTES`) and on its connection. A 32-bit process's
//! syscall counts nothing (other numbers, other registers). A receive is counted as it returns:
//! with MSG_TRUNC that is a datagram's whole length.
//!
//! This code runs inside the core `sys_exit` program: a kernel whose verifier refused it
//! would refuse the syscalls family too, so the agent would not start there (every kernel
//! of the test matrix loads it). Turning it off alone would take a program of its own
//! (a tail call), which costs every target syscall.
//!
//! Not seen: bytes moved by io_uring (no syscall returns them), and by a syscall that began
//! before the collector attached (it has no entry, as for the syscall counts).
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use collector_common::{
    MapErrorSite,
    maps::{MAX_TARGETS, SOCKET_BYTES_ENTRIES},
    sched::{FD_TYPES, FdBytes, FdType},
    sockets::{Family, Protocol, SocketBytes, SocketBytesKey, SyscallIo},
};

use crate::{
    fds::{socket_of_fd, socket_of_file, typed_file_of_fd},
    globals::{offset, read_field},
    maps::get_or_insert,
    sockets::SOCKETS,
};

/// include/linux/socket.h
const MSG_PEEK: u64 = 2;
/// arch/x86/include/asm/segment.h: the code segment of 32-bit user code. Its syscalls have
/// their own numbers and registers (ia32: bx, cx, dx), which the table does not describe.
const USER32_CS: u16 = 0x23;
/// include/uapi/linux/uio.h: the most messages sendmmsg/recvmmsg move in one call.
const UIO_MAXIOV: u32 = 1024;
/// `struct mmsghdr` on 64-bit: a 56-byte `struct user_msghdr`, then `unsigned int msg_len`,
/// padded to 64.
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_MSG_LEN: u64 = 56;

#[map]
pub static SOCKET_BYTES: PerCpuHashMap<SocketBytesKey, SocketBytes> =
    PerCpuHashMap::with_max_entries(SOCKET_BYTES_ENTRIES, 0);

/// By target id * `FD_TYPES` + [`FdType`]: bytes read and written through fds of that type.
#[map]
pub static FD_BYTES: PerCpuArray<FdBytes> = PerCpuArray::with_max_entries(MAX_TARGETS * FD_TYPES, 0);

/// Also which `FdBytes` field (`read`, `written`) the bytes go to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Moved {
    Received = 0,
    Sent = 1,
}

/// A TCP connection the tcp family follows: its `struct sock` address and `SOCKETS`
/// direction.
pub type Followed = (u64, u8);

/// A syscall of `io`'s kind returned `ret` in a thread of `target`; `regs` holds its
/// arguments. Returns the followed connection whose bytes a send, a receive (not a peek) or
/// a sendfile moved, for the http family.
#[inline(always)]
pub fn returned(io: SyscallIo, ret: i64, regs: *const u8, target: u32) -> Option<Followed> {
    if ret <= 0 || read_field::<u16>(regs, offset!(regs_cs)).unwrap_or(USER32_CS) == USER32_CS {
        return None;
    }
    let bytes = ret as u64;
    // An argument that cannot be read is no fd at all (`u64::MAX` is past every fd table).
    let arg = |at: u32| read_field::<u64>(regs, at).unwrap_or(u64::MAX);
    let peek = |flags_at: u32| arg(flags_at) & MSG_PEEK != 0;
    match io {
        SyscallIo::Send | SyscallIo::SendVector | SyscallIo::SendMessage => {
            count(arg(offset!(regs_arg0)), Moved::Sent, bytes, target)
        }
        SyscallIo::Receive | SyscallIo::ReceiveVector => count(arg(offset!(regs_arg0)), Moved::Received, bytes, target),
        SyscallIo::ReceiveFrom if !peek(offset!(regs_arg3)) => {
            count(arg(offset!(regs_arg0)), Moved::Received, bytes, target)
        }
        SyscallIo::ReceiveMessage if !peek(offset!(regs_arg2)) => {
            count(arg(offset!(regs_arg0)), Moved::Received, bytes, target)
        }
        SyscallIo::SendMessages => {
            messages(
                arg(offset!(regs_arg0)),
                arg(offset!(regs_arg1)),
                ret,
                Moved::Sent,
                target,
            );
            None
        }
        SyscallIo::ReceiveMessages if !peek(offset!(regs_arg3)) => {
            messages(
                arg(offset!(regs_arg0)),
                arg(offset!(regs_arg1)),
                ret,
                Moved::Received,
                target,
            );
            None
        }
        SyscallIo::SendFile => {
            count(arg(offset!(regs_arg1)), Moved::Received, bytes, target);
            count(arg(offset!(regs_arg0)), Moved::Sent, bytes, target)
        }
        SyscallIo::Splice => {
            count(arg(offset!(regs_arg0)), Moved::Received, bytes, target);
            count(arg(offset!(regs_arg2)), Moved::Sent, bytes, target);
            None
        }
        _ => None,
    }
}

/// The bytes of the first `sent` messages of `msgvec`, moved through `fd`.
#[inline(always)]
fn messages(fd: u64, msgvec: u64, sent: i64, moved: Moved, target: u32) {
    let Some(sk) = socket_of_fd(fd) else {
        return;
    };
    let mut bytes = 0u64;
    for i in 0..UIO_MAXIOV {
        if i64::from(i) >= sent {
            break;
        }
        let at = msgvec + u64::from(i) * MMSGHDR_SIZE + MMSGHDR_MSG_LEN;
        bytes += u64::from(unsafe { bpf_probe_read_user(at as *const u32) }.unwrap_or(0));
    }
    add_typed(FdType::Socket as u32, moved, bytes, target);
    add(sk, moved, bytes, target);
}

/// `bytes` moved through `fd`; the connection, if it is one the tcp family follows.
#[inline(always)]
fn count(fd: u64, moved: Moved, bytes: u64, target: u32) -> Option<Followed> {
    let (file, fd_type) = typed_file_of_fd(fd)?;
    add_typed(fd_type, moved, bytes, target);
    if fd_type != FdType::Socket as u32 {
        return None;
    }
    add(socket_of_file(file)?, moved, bytes, target)
}

/// Per (target, fd type): one lookup and one add, without a branch on the type or the
/// direction (each would be walked again for every path of `sys_exit` reaching it). A
/// target slot of 0 wraps past the array, whose lookup then fails.
#[inline(always)]
fn add_typed(fd_type: u32, moved: Moved, bytes: u64, target: u32) {
    let index = target
        .wrapping_sub(1)
        .wrapping_mul(FD_TYPES)
        .wrapping_add(fd_type & (FD_TYPES - 1));
    if let Some(total) = FD_BYTES.get_ptr_mut(index) {
        unsafe { *total.cast::<u64>().add(moved as usize) += bytes };
    }
}

/// Per (target, family, protocol), and on the connection when it is one the tcp family
/// follows (which it returns).
#[inline(always)]
fn add(sk: *const u8, moved: Moved, bytes: u64, target: u32) -> Option<Followed> {
    let family = Family::from_af(read_field::<u16>(sk, offset!(sock_family)).unwrap_or(0));
    let protocol = Protocol::of(family, read_field::<u16>(sk, offset!(sock_protocol)).unwrap_or(0));
    let key = SocketBytesKey {
        target,
        family: family as u16,
        protocol: protocol as u16,
    };
    if let Some(total) = get_or_insert(&SOCKET_BYTES, &key, &SocketBytes::default(), MapErrorSite::SocketBytes) {
        let total = unsafe { &mut *total };
        match moved {
            Moved::Sent => total.sent += bytes,
            Moved::Received => total.received += bytes,
        }
    }
    if protocol != Protocol::Tcp {
        return None;
    }
    let c = unsafe { &mut *SOCKETS.get_ptr_mut(&(sk as u64))? };
    match moved {
        Moved::Sent => c.bytes_sent += bytes,
        Moved::Received => c.bytes_received += bytes,
    }
    Some((sk as u64, c.direction))
}

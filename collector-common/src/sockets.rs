//! Socket and TCP state shared by `collector-ebpf/src/sockets.rs` and the agent: the
//! per-connection state the kernel keeps for target connections, the per-target counters
//! read at scrape time, and the small enums both sides name the same way.
use crate::events::COMM_LEN;

/// `AF_INET`, `AF_INET6`, `AF_UNIX` (include/linux/socket.h).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// include/uapi/linux/in.h.
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// The `family` label of the byte counters.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Inet = 0,
    Inet6 = 1,
    Unix = 2,
    Other = 3,
}

impl Family {
    pub const fn from_af(af: u16) -> Family {
        match af {
            AF_INET => Family::Inet,
            AF_INET6 => Family::Inet6,
            AF_UNIX => Family::Unix,
            _ => Family::Other,
        }
    }

    pub const fn from_u16(v: u16) -> Family {
        match v {
            0 => Family::Inet,
            1 => Family::Inet6,
            2 => Family::Unix,
            _ => Family::Other,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
            Family::Unix => "unix",
            Family::Other => "other",
        }
    }
}

/// The `protocol` label of the byte counters.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp = 0,
    Udp = 1,
    Other = 2,
}

impl Protocol {
    /// `sk_protocol` of an inet socket; unix sockets are `Other` whatever their type.
    pub const fn of(family: Family, sk_protocol: u16) -> Protocol {
        match (family, sk_protocol) {
            (Family::Inet | Family::Inet6, IPPROTO_TCP) => Protocol::Tcp,
            (Family::Inet | Family::Inet6, IPPROTO_UDP) => Protocol::Udp,
            _ => Protocol::Other,
        }
    }

    pub const fn from_u16(v: u16) -> Protocol {
        match v {
            0 => Protocol::Tcp,
            1 => Protocol::Udp,
            _ => Protocol::Other,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other => "other",
        }
    }
}

/// Syscall numbers the [`SyscallIo`] table covers (x86-64's highest is below 470).
pub const SYSCALL_IO_ENTRIES: usize = 512;

/// What a syscall moves through the socket(s) among its arguments, read by `sys_exit` from
/// its return value and arguments (`collector-ebpf/src/socket_bytes.rs`). The agent fills
/// `KernelFeatures::syscall_io` from this architecture's syscall numbers.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallIo {
    /// Moves no socket bytes.
    None = 0,
    /// write(fd, buf, ...), sendto(fd, buf, ...): returns the bytes sent.
    Send = 1,
    /// read(fd, buf, ...): returns the bytes received.
    Receive = 2,
    /// recvfrom(fd, buf, len, flags, ...): bytes received, unless `flags` has MSG_PEEK.
    ReceiveFrom = 3,
    /// recvmsg(fd, msg, flags): bytes received, unless `flags` has MSG_PEEK.
    ReceiveMessage = 4,
    /// sendmmsg(fd, msgvec, vlen, flags): returns how many messages went; each one's
    /// `msg_len` says its bytes.
    SendMessages = 5,
    /// recvmmsg(fd, msgvec, vlen, flags, timeout): as sendmmsg, unless `flags` has MSG_PEEK.
    ReceiveMessages = 6,
    /// sendfile(out_fd, in_fd, ...), splice(fd_in, off_in, fd_out, ...): the bytes moved
    /// leave through `out` when it is a socket and arrive through `in` when that is one.
    SendFile = 7,
    Splice = 8,
    /// accept, accept4: the returned fd is a new connection (the tcp family's).
    Accept = 9,
    /// writev(fd, iov, iovcnt): as `Send`, the bytes in an iovec array.
    SendVector = 10,
    /// sendmsg(fd, msg, flags): as `Send`, the bytes in `msg->msg_iov`.
    SendMessage = 11,
    /// readv(fd, iov, iovcnt): as `Receive`, into an iovec array.
    ReceiveVector = 12,
}

impl SyscallIo {
    pub const fn from_u8(v: u8) -> SyscallIo {
        match v {
            1 => SyscallIo::Send,
            2 => SyscallIo::Receive,
            3 => SyscallIo::ReceiveFrom,
            4 => SyscallIo::ReceiveMessage,
            5 => SyscallIo::SendMessages,
            6 => SyscallIo::ReceiveMessages,
            7 => SyscallIo::SendFile,
            8 => SyscallIo::Splice,
            9 => SyscallIo::Accept,
            10 => SyscallIo::SendVector,
            11 => SyscallIo::SendMessage,
            12 => SyscallIo::ReceiveVector,
            _ => SyscallIo::None,
        }
    }

    /// Where the call's bytes are in the caller's memory, for a protocol parser that reads
    /// the first of them (`collector-ebpf/src/http.rs`).
    pub const fn buffer(self) -> Buffer {
        match self {
            SyscallIo::Send | SyscallIo::Receive | SyscallIo::ReceiveFrom => Buffer::Plain,
            SyscallIo::SendVector | SyscallIo::ReceiveVector => Buffer::Vector,
            SyscallIo::SendMessage | SyscallIo::ReceiveMessage => Buffer::Message,
            _ => Buffer::None,
        }
    }

    /// Whether the call's bytes leave through its socket (else they arrive), for the calls
    /// [`SyscallIo::buffer`] places.
    pub const fn sends(self) -> bool {
        matches!(self, SyscallIo::Send | SyscallIo::SendVector | SyscallIo::SendMessage)
    }
}

/// Where a send or receive call's bytes are: argument 1 of each is the buffer, an iovec array
/// or a `struct user_msghdr` (man 2 write, writev, sendmsg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// No bytes in the caller's memory (sendfile, splice), or none to look at.
    None,
    Plain,
    Vector,
    Message,
}

/// Who opened a connection: the target called connect() (outbound) or accept() (inbound).
pub const DIRECTION_OUTBOUND: u8 = 1;
pub const DIRECTION_INBOUND: u8 = 2;

pub const fn direction_label(direction: u8) -> &'static str {
    match direction {
        DIRECTION_INBOUND => "inbound",
        _ => "outbound",
    }
}

/// Why a connect() never got established, from `sk_err` when the socket closed.
pub const fn connect_error_reason(sk_err: i32) -> &'static str {
    // include/uapi/asm-generic/errno.h
    const ECONNRESET: i32 = 104;
    const ETIMEDOUT: i32 = 110;
    const ECONNREFUSED: i32 = 111;
    match sk_err {
        ECONNREFUSED => "refused",
        ETIMEDOUT => "timeout",
        ECONNRESET => "reset",
        _ => "other",
    }
}

/// A target's TCP connection, from connect() or accept() until it closes; the `SOCKETS`
/// hash map's value, keyed by the `struct sock` address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// When connect() sent the SYN; reset to the moment it became established (or was
    /// accepted), from which its lifetime is counted.
    pub start_ns: u64,
    /// Payload bytes the owner's processes sent and received on it (their send and receive
    /// syscalls' returns).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// When it reached TCP_CLOSE; the `tcp.close` event waits for the socket's destruction,
    /// so that bytes the owner reads after the peer's FIN are in it.
    pub closed_ns: u64,
    /// The process that connected or accepted, and its name then.
    pub comm: [u8; COMM_LEN],
    /// [`crate::TargetId::slot`].
    pub target: u32,
    pub pid: u32,
    /// [`DIRECTION_OUTBOUND`] or [`DIRECTION_INBOUND`].
    pub direction: u8,
    /// 1 once established; a close before that is a connect error.
    pub established: u8,
    /// [`RESET_RECEIVED`] and [`RESET_SENT`] bits, as resets are seen on it.
    pub resets: u8,
    pub _pad: u8,
    /// Segments retransmitted on it.
    pub retransmits: u32,
}

/// [`Connection::resets`]: the peer reset the connection (`tcp_receive_reset`)...
pub const RESET_RECEIVED: u8 = 1;
/// ...or this side sent a reset on it (`tcp_send_reset`).
pub const RESET_SENT: u8 = 2;

/// Why a connection ended, from its resets: the `close_reason` of `tcp.close`.
pub fn close_reason(resets: u8) -> &'static str {
    if resets & RESET_RECEIVED != 0 {
        "reset_by_peer"
    } else if resets & RESET_SENT != 0 {
        "reset"
    } else {
        "closed"
    }
}

/// Key of the per-(target, family, protocol) byte counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketBytesKey {
    /// [`crate::TargetId::slot`].
    pub target: u32,
    /// [`Family`] and [`Protocol`] as numbers.
    pub family: u16,
    pub protocol: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketBytes {
    pub sent: u64,
    pub received: u64,
}

/// Per-target TCP counters, indexed by target id; per-CPU, so `open_*` on one CPU can be
/// negative (a connection opened on one CPU and closed on another): only the sum means
/// anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCounts {
    pub open_outbound: i64,
    pub open_inbound: i64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::{Connection, SocketBytes, SocketBytesKey, TcpCounts};
    unsafe impl aya::Pod for Connection {}
    unsafe impl aya::Pod for SocketBytesKey {}
    unsafe impl aya::Pod for SocketBytes {}
    unsafe impl aya::Pod for TcpCounts {}
}

//! TCP connections of target processes.
//!
//! Hooks (TP_PROTO as of Linux 6.18):
//!   sock:inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
//!     include/trace/events/sock.h, fired by include/net/inet_sock.h:inet_sk_state_store()
//!     and inet_sk_set_state(), for every inet stream protocol (we keep TCP by sk_protocol).
//!     net/ipv4/tcp.c:tcp_set_state() calls it after unhashing, so at TCP_CLOSE the local
//!     port (inet_num) may already be released: we read inet_sport, which stays.
//!     CLOSE -> SYN_SENT runs in connect() (tcp_v4_connect/tcp_v6_connect), in the caller;
//!     SYN_SENT -> ESTABLISHED runs in softirq when the SYN-ACK arrives
//!     (tcp_rcv_synsent_state_process); -> CLOSE runs in close(), on a RST, or in a timer.
//!   tcp:tcp_destroy_sock(struct sock *sk)
//!     include/trace/events/tcp.h, fired by net/ipv4/tcp_ipv4.c:tcp_v4_destroy_sock() (IPv6
//!     sockets too) when a socket in TCP_CLOSE is finally freed: after its owner closed the
//!     fd, so after every byte it read. A connection's `tcp.close` is sent here.
//!   tcp:tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)
//!   tcp:tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)
//!   tcp:tcp_receive_reset(struct sock *sk)
//!     include/trace/events/tcp.h. Mostly in softirq; tcp_send_reset's sk may be NULL (a
//!     reset for a packet that matched no socket).
//!
//! Attribution. In softirq `current` is whatever task the interrupt landed on, so no probe
//! here asks `current` who owns a connection, except where the kernel guarantees the owner
//! is running:
//! - outbound: CLOSE -> SYN_SENT runs inside the connect() of the owner. We record the
//!   owner in `SOCKETS[sk]` there;
//! - inbound: the passive side's socket is created and established by the listener in
//!   softirq, and belongs to no one until a process accept()s it. So ownership is taken at
//!   the return of accept()/accept4() in a target thread (`accepted`, called from
//!   `sys_exit`): the returned fd leads, through current->files->fdt->fd[fd] ->
//!   file->private_data (struct socket) -> sk, to the socket, and `SOCKETS[sk]` gets the
//!   accepting process. A non-target client's connect() is never recorded.
//! Everything later on a connection (established, bytes, retransmits, resets, close,
//! destruction) is attributed through `SOCKETS[sk]`. Bytes go to the process that moves
//! them: `socket_bytes.rs` counts them at the return of its send or receive syscall.
//!
//! Fields read (offsets from the kernel's BTF, `collector/src/kernel/btf.rs`):
//! include/net/sock.h `struct sock_common` (first member of `struct sock`): skc_family,
//! skc_daddr/skc_rcv_saddr (IPv4, network order), skc_v6_daddr/skc_v6_rcv_saddr,
//! skc_dport (network order); `struct sock`: sk_protocol, sk_err; include/net/inet_sock.h
//! `struct inet_sock`: inet_sport (network order). The fd path: `fds.rs`.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, generated},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use collector_common::{
    MapErrorSite, TargetId,
    events::{Endpoints, EventHeader, EventKind, TcpRecord},
    maps::{MAX_TARGETS, SOCKETS_ENTRIES, SWITCH_HTTP},
    sockets::{
        AF_INET, AF_INET6, Connection, DIRECTION_INBOUND, DIRECTION_OUTBOUND, IPPROTO_TCP, RESET_RECEIVED, RESET_SENT,
        TcpCounts,
    },
};

use crate::{
    events::submit,
    fds::socket_of_fd,
    globals::{offset, read_field},
    http,
    maps::{count_map_error, current_tgid, switched_on, target_of_current},
};

/// include/net/tcp_states.h
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// Target connections by `struct sock` address, from connect()/accept() to close.
#[map]
pub static SOCKETS: HashMap<u64, Connection> = HashMap::with_max_entries(SOCKETS_ENTRIES, 0);

/// Indexed by target id.
#[map]
pub static TCP_COUNTS: PerCpuArray<TcpCounts> = PerCpuArray::with_max_entries(MAX_TARGETS, 0);

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn collector_inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let new_state: i32 = ctx.arg(2);
    match new_state {
        TCP_SYN_SENT => connecting(sk),
        TCP_ESTABLISHED => established(sk),
        TCP_CLOSE => closed(sk),
        _ => {}
    }
    0
}

/// In the connect() of the caller: follow the connection if the caller is a target.
#[inline(always)]
fn connecting(sk: *const u8) {
    if read_field::<u16>(sk, offset!(sock_protocol)) != Ok(IPPROTO_TCP) {
        return;
    }
    if let Some((target, _)) = target_of_current() {
        follow(sk, target, DIRECTION_OUTBOUND);
    }
}

/// Makes the current process the owner of `sk` from now on; `None` when `SOCKETS` is full
/// (counted). An inbound connection is established already; an outbound one is not yet.
#[inline(always)]
fn follow(sk: *const u8, target: u32, direction: u8) -> Option<Connection> {
    let c = Connection {
        start_ns: unsafe { bpf_ktime_get_ns() },
        bytes_sent: 0,
        bytes_received: 0,
        closed_ns: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
        target,
        pid: current_tgid(),
        direction,
        established: (direction == DIRECTION_INBOUND) as u8,
        resets: 0,
        _pad: 0,
        retransmits: 0,
    };
    if SOCKETS.insert(&(sk as u64), &c, 0).is_err() {
        count_map_error(MapErrorSite::Sockets);
        return None;
    }
    if switched_on(SWITCH_HTTP) {
        // A socket at this address before whose freeing was not seen must not lend its
        // HTTP state to this connection.
        let _ = http::HTTP_CONNS.remove(&(sk as u64));
    }
    Some(c)
}

#[inline(always)]
fn established(sk: *const u8) {
    let Some(c) = SOCKETS.get_ptr_mut(&(sk as u64)) else {
        return;
    };
    let c = unsafe { &mut *c };
    if c.established != 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let connect_ns = now.saturating_sub(c.start_ns);
    c.established = 1;
    c.start_ns = now;
    count(c.target, |t| t.open_outbound += 1);
    emit(EventKind::TcpConnect, sk, c, connect_ns, 0);
}

/// TCP_CLOSE: a connect that never got established is an error now; an established
/// connection stops being open, and its `tcp.close` waits for `destroyed` (the owner may
/// still read what the peer sent before its FIN).
#[inline(always)]
fn closed(sk: *const u8) {
    let key = sk as u64;
    let Some(c) = SOCKETS.get_ptr_mut(&key) else {
        return;
    };
    let c = unsafe { &mut *c };
    if c.established == 0 {
        // tcp_done_with_error() sets sk_err before the socket reaches TCP_CLOSE:
        // ECONNREFUSED for a RST in SYN_SENT (tcp_reset), ETIMEDOUT when SYNs ran out.
        let sk_err = read_field::<i32>(sk, offset!(sock_err)).unwrap_or(0);
        let c = *c;
        let _ = SOCKETS.remove(&key);
        // How long it tried: from the SYN (`start_ns` until established) to now.
        let tried_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(c.start_ns);
        emit(EventKind::TcpConnectError, sk, &c, tried_ns, sk_err);
        return;
    }
    if c.closed_ns != 0 {
        return;
    }
    c.closed_ns = unsafe { bpf_ktime_get_ns() };
    close_count(c);
}

/// One open connection of `c`'s target fewer.
#[inline(always)]
fn close_count(c: &Connection) {
    let direction = c.direction;
    count(c.target, |t| match direction {
        DIRECTION_INBOUND => t.open_inbound -= 1,
        _ => t.open_outbound -= 1,
    });
}

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn collector_tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let key = sk as u64;
    if switched_on(SWITCH_HTTP) {
        http::closed(key);
    }
    let Some(mut c) = (unsafe { SOCKETS.get(&key) }).copied() else {
        return 0;
    };
    let _ = SOCKETS.remove(&key);
    if c.established == 0 {
        return 0;
    }
    if c.closed_ns == 0 {
        // Not seen closing: it reached TCP_CLOSE before accept() returned it (a reset in
        // the accept queue). It was counted open, so it is closed here.
        c.closed_ns = unsafe { bpf_ktime_get_ns() };
        close_count(&c);
    }
    emit(EventKind::TcpClose, sk, &c, c.closed_ns.saturating_sub(c.start_ns), 0);
    0
}

/// At the return of accept()/accept4() that returned `fd` in a thread of `target` (called
/// from `sys_exit`): the accepting process owns the connection from here.
#[inline(always)]
pub fn accepted(fd: u64, target: u32) {
    let Some(sk) = socket_of_fd(fd) else {
        return;
    };
    let family = read_field::<u16>(sk, offset!(sock_family)).unwrap_or(0);
    if (family != AF_INET && family != AF_INET6) || read_field::<u16>(sk, offset!(sock_protocol)) != Ok(IPPROTO_TCP) {
        return;
    }
    // A connection reset while it waited in the accept queue is accepted all the same; it is
    // closed already, which its destruction accounts for (`collector_tcp_destroy_sock`).
    let Some(c) = follow(sk, target, DIRECTION_INBOUND) else {
        return;
    };
    count(target, |t| t.open_inbound += 1);
    emit(EventKind::TcpAccept, sk, &c, 0, 0);
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn collector_tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    count_on_connection(ctx.arg(0), |t| t.retransmits += 1, |c| c.retransmits += 1);
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn collector_tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    count_on_connection(ctx.arg(0), |t| t.resets_sent += 1, |c| c.resets |= RESET_SENT);
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn collector_tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    count_on_connection(ctx.arg(0), |t| t.resets_received += 1, |c| c.resets |= RESET_RECEIVED);
    0
}

/// Counts for the target owning `sk`, and on the connection itself (for its `tcp.close`),
/// when it is a connection we follow. Not atomic on the connection: retransmits and
/// received resets happen under the socket's lock (the retransmit timer and ACK
/// processing, `tcp_reset`), so the only race left is a reset sent for it from another
/// CPU at the same moment, which could lose one count or bit, never make a wrong one.
#[inline(always)]
fn count_on_connection(sk: *const u8, f: impl FnOnce(&mut TcpCounts), on_connection: impl FnOnce(&mut Connection)) {
    if sk.is_null() {
        return;
    }
    if let Some(c) = SOCKETS.get_ptr_mut(&(sk as u64)) {
        let c = unsafe { &mut *c };
        on_connection(c);
        count(c.target, f);
    }
}

#[inline(always)]
fn count(target: u32, f: impl FnOnce(&mut TcpCounts)) {
    let Some(id) = TargetId::from_slot(target) else {
        return;
    };
    if let Some(t) = TCP_COUNTS.get_ptr_mut(id.0) {
        f(unsafe { &mut *t });
    }
}

/// Sends a TCP record for `c`, with `sk`'s endpoints as they are now.
#[inline(always)]
fn emit(kind: EventKind, sk: *const u8, c: &Connection, duration_ns: u64, sk_err: i32) {
    let mut r = TcpRecord {
        header: EventHeader {
            kind: kind as u32,
            size: size_of::<TcpRecord>() as u32,
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            target: c.target,
            pid: c.pid,
        },
        duration_ns,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        comm: c.comm,
        endpoints: Endpoints {
            saddr: [0; 16],
            daddr: [0; 16],
            family: 0,
            sport: 0,
            dport: 0,
            _pad: 0,
        },
        direction: c.direction,
        resets: c.resets,
        _pad: [0; 2],
        sk_err,
        retransmits: c.retransmits,
        _pad2: 0,
    };
    read_endpoints(sk, &mut r.endpoints);
    submit(kind, &r);
}

/// Writes `sk`'s addresses and ports as they are now into `e` (`struct sock_common`:
/// skc_family, the v4 or v6 skc_rcv_saddr and skc_daddr, skc_dport; `inet_sock.inet_sport`),
/// in place: a ring-buffer record is filled without a copy on the stack.
#[inline(always)]
pub fn read_endpoints(sk: *const u8, e: &mut Endpoints) {
    e.family = read_field::<u16>(sk, offset!(sock_family)).unwrap_or(0);
    e.sport = u16::from_be(read_field::<u16>(sk, offset!(inet_sport)).unwrap_or(0));
    e.dport = u16::from_be(read_field::<u16>(sk, offset!(sock_dport)).unwrap_or(0));
    e._pad = 0;
    let (saddr, daddr, len) = if e.family == AF_INET6 {
        (offset!(sock_v6_rcv_saddr), offset!(sock_v6_daddr), 16)
    } else {
        (offset!(sock_rcv_saddr), offset!(sock_daddr), 4)
    };
    e.saddr = [0; 16];
    e.daddr = [0; 16];
    // On failure the helper leaves zeros.
    unsafe {
        generated::bpf_probe_read_kernel(e.saddr.as_mut_ptr().cast(), len, sk.add(saddr as usize).cast());
        generated::bpf_probe_read_kernel(e.daddr.as_mut_ptr().cast(), len, sk.add(daddr as usize).cast());
    }
}

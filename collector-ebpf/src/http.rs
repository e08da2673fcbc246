//! HTTP/1.x requests of targets, from their send and receive syscalls alone, aggregated per
//! (target, side, method, status, route) in the kernel: nothing goes to userspace per
//! request, unless the agent says `http.request` events are wanted (`EVENTS_WANTED`).
//!
//! Where it runs: `sys_exit` (`syscalls.rs`) finds, for a target's send or receive call,
//! the `struct sock` behind its fd and whether the tcp family follows that connection
//! (`SOCKETS`: it knows who accepted or connected it). Only then does it hand the call to
//! `collector_http` with a tail call (`hand_over`), so the parser is verified as a program
//! of its own: a kernel whose verifier refuses it turns off this family alone, and other
//! syscalls never pay for it. The program runs in the same tracepoint context as
//! `sys_exit` (`TP_PROTO(struct pt_regs *regs, long ret)`, include/trace/events/syscalls.h):
//! the call has returned, its bytes are in the caller's memory, read with
//! `bpf_probe_read_user` from the buffer its arguments name (`SyscallIo::buffer`): argument 1
//! of write/read/sendto/recvfrom, the first `struct iovec` of writev/readv (include/uapi/
//! linux/uio.h), the first iovec of `msg_iov` of sendmsg/recvmsg (include/linux/socket.h
//! `struct user_msghdr`: msg_iov at offset 16). Only the first `WINDOW` bytes of that first
//! segment are looked at.
//!
//! What is a message (RFC 9112): a request starts with a method token and a space
//! (`Method::TOKENS`, or up to 7 capital letters then " /" for `_OTHER`); a response with
//! `HTTP/1.0 ` or `HTTP/1.1 ` and three digits. Bytes that begin neither are the rest of the
//! message before them. A connection gets state (`HTTP_CONNS`) at its first request, so a
//! socket carrying something else costs a 16-byte read per call and holds nothing.
//!
//! Server (the target accepted the connection): a read that starts a request puts it in the
//! connection's ring of requests waiting (pipelining: the read's window is searched for
//! further requests after each blank line); the write that carries a status line takes the
//! oldest waiting request; a response is complete at the return of its last write, known
//! when the next message starts or the connection closes, so a large response (sendfile,
//! many writes) is timed to its end. Client (the target connected): a write that starts a
//! request puts it in the ring; the read that brings a status line answers the oldest,
//! timed to that read. 1xx interim responses (100 Continue) answer nothing, but 101 does.
//! A socket freed with requests waiting counts them aborted (`closed`, from
//! `tcp_destroy_sock`).
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::{map, raw_tracepoint},
    maps::{HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, ProgramArray, lpm_trie::Key},
    programs::RawTracePointContext,
};
use collector_common::{
    MapErrorSite,
    events::{COMM_LEN, EventHeader, EventKind, HttpRecord, PATH_BYTES},
    http::{
        BUCKETS, CLIENT, HttpConn, HttpKey, HttpStats, InFlight, KeptPath, MAX_IN_FLIGHT, MAX_ROUTES, Method,
        MethodToken, PathKey, ROUTE_BYTES, ROUTE_OTHER, Responding, SERVER, STATUS_ABORTED, STATUS_IN_FLIGHT_FULL,
        STATUS_UNMATCHED, WINDOW,
    },
    maps::{HTTP_CONNS_ENTRIES, HTTP_PATHS_ENTRIES, HTTP_STATS_ENTRIES, SWITCH_HTTP_ROUTES},
    sockets::{Buffer, DIRECTION_INBOUND, SyscallIo},
};

use crate::{
    events::{EVENTS, count_drop, wanted},
    globals::{HTTP_BOUNDS, offset, read_field},
    maps::{count_map_error, get_or_insert, switched_on},
    sockets::{SOCKETS, read_endpoints},
};

/// What `sys_exit` knows of the call it hands over.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpCall {
    pub sk: u64,
    pub enter_ns: u64,
    pub target: u32,
    /// `SyscallIo` as a number.
    pub io: u8,
    /// `SOCKETS`' direction: inbound (accepted: the target serves) or outbound.
    pub direction: u8,
    pub _pad: [u8; 2],
    /// For `collector_http_pipelined`: the read's first segment and its length.
    pub data: u64,
    pub len: u64,
    /// When the call returned (`sys_exit` reads the clock already, for its latency).
    pub now: u64,
}

/// The bytes of a window, and 16 more so that a message start read at any offset below
/// `WINDOW` stays inside; where its blank lines end, and the method starting there.
#[repr(C)]
pub struct Window {
    bytes: [u8; WINDOW + 16],
    /// The offsets after the first `blank_lines` blank lines.
    after_blank: [u16; MAX_IN_FLIGHT],
    /// The `Method` starting at each, `Method::None` for none, and its path's offset from
    /// there.
    methods: [u8; MAX_IN_FLIGHT],
    paths: [u8; MAX_IN_FLIGHT],
    blank_lines: u32,
    /// How many of `bytes` are the read's.
    len: u64,
}

/// Connections on which HTTP was seen, by `struct sock` address.
#[map]
pub static HTTP_CONNS: HashMap<u64, HttpConn> = HashMap::with_max_entries(HTTP_CONNS_ENTRIES, 0);

#[map]
pub static HTTP_STATS: PerCpuHashMap<HttpKey, HttpStats> = PerCpuHashMap::with_max_entries(HTTP_STATS_ENTRIES, 0);

/// `collector_http` (index `PARSE`) and `collector_http_pipelined` (`PIPELINED`), put there
/// by the agent once the family is loaded.
#[map]
pub static HTTP_PROGRAM: ProgramArray = ProgramArray::with_max_entries(2, 0);

#[map]
static HTTP_CALL: PerCpuArray<HttpCall> = PerCpuArray::with_max_entries(1, 0);

/// The registered methods by their first four bytes (`Method::TOKENS`), filled by the agent.
#[map]
static HTTP_METHODS: HashMap<u32, MethodToken> = HashMap::with_max_entries(Method::TOKENS.len() as u32, 0);

#[map]
static HTTP_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// The paths of requests waiting for their responses, while `http.request` events are
/// wanted: an event carries its request's path, which is in the caller's memory only at
/// the request's read or write. Removed when the request is answered or aborted; a path
/// that does not fit is counted (`MapErrorSite::HttpPaths`) and its event has none.
#[map]
static HTTP_PATHS: HashMap<PathKey, KeptPath> = HashMap::with_max_entries(HTTP_PATHS_ENTRIES, 0);

/// The route trie's lookup key, built here: too big for the stack beside the rest.
#[map]
static HTTP_ROUTE_KEY: PerCpuArray<Key<[u8; ROUTE_BYTES]>> = PerCpuArray::with_max_entries(1, 0);

/// Where a path is read to before it goes into `HTTP_PATHS` (too big for the stack beside
/// the rest).
#[map]
static HTTP_PATH_READ: PerCpuArray<KeptPath> = PerCpuArray::with_max_entries(1, 0);

/// `--http-route`s by the bytes a path starts with (`collector_common::http::route_prefixes`),
/// filled by the agent: the longest that matches is the request's route.
#[map]
static HTTP_ROUTES: LpmTrie<[u8; ROUTE_BYTES], u16> = LpmTrie::with_max_entries(2 * MAX_ROUTES as u32, 0);

/// `HTTP_PROGRAM` indices.
const PARSE: u32 = 0;
const PIPELINED: u32 = 1;

/// Runs `collector_http` on this call, from `sys_exit`, as its last step (a tail call does
/// not come back). Without the program in `HTTP_PROGRAM` it does nothing.
#[inline(always)]
pub fn hand_over(ctx: &RawTracePointContext, call: HttpCall) {
    if let Some(slot) = HTTP_CALL.get_ptr_mut(0) {
        unsafe {
            *slot = call;
            HTTP_PROGRAM.tail_call(ctx, PARSE);
        }
    }
}

/// A message start at the beginning of some bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A request, and the offset of its path (after the method and its space).
    Request(Method, u64),
    Status(u16),
    Neither,
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn collector_http(ctx: RawTracePointContext) -> i32 {
    let Some(call) = HTTP_CALL.get(0).copied() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    let bytes = ret as u64;
    let now = call.now;
    let io = SyscallIo::from_u8(call.io);
    let side = if call.direction == DIRECTION_INBOUND {
        SERVER
    } else {
        CLIENT
    };
    let data = first_segment(io, regs).map(|(at, len)| (at, len.min(bytes)));
    let start = data.map_or(Start::Neither, |(at, len)| start_at(at, len));
    let sends = io.sends() || io == SyscallIo::SendFile;
    match (side, sends, start) {
        (SERVER, false, Start::Request(method, path)) => {
            let Some(conn) = connection(call.sk, call.target, side) else {
                return 0;
            };
            finish(conn);
            let Some((at, len)) = data else {
                return 0;
            };
            request(conn, method, Path::at(at, len, path), now, bytes);
            // The window's search in a program of its own, so that the verifier walks it
            // from one state, not once for each path that led here.
            if let Some(slot) = HTTP_CALL.get_ptr_mut(0) {
                unsafe {
                    (*slot).data = at;
                    (*slot).len = len;
                    HTTP_PROGRAM.tail_call(&ctx, PIPELINED);
                }
            }
        }
        (CLIENT, true, Start::Request(method, path)) => {
            let Some(conn) = connection(call.sk, call.target, side) else {
                return 0;
            };
            finish(conn);
            let path = data.map_or(Path { at: 0, len: 0 }, |(at, len)| Path::at(at, len, path));
            request(conn, method, path, call.enter_ns, bytes);
        }
        (SERVER, true, Start::Status(status)) | (CLIENT, false, Start::Status(status)) => {
            let Some(conn) = HTTP_CONNS.get_ptr_mut(&call.sk) else {
                // A response on a connection where no request was seen.
                unmatched(call.target, side, STATUS_UNMATCHED, 1, bytes);
                return 0;
            };
            if respond(unsafe { &mut *conn }, status, now, bytes) == Answer::Tunnel {
                // What follows is another protocol: the connection is HTTP no more.
                closed(call.sk);
            }
        }
        _ => {
            if let Some(conn) = HTTP_CONNS.get_ptr_mut(&call.sk) {
                more(unsafe { &mut *conn }, sends, now, bytes);
            }
        }
    }
    0
}

/// The caller's first buffer of the call's bytes and its length, from its arguments.
#[inline(always)]
fn first_segment(io: SyscallIo, regs: *const u8) -> Option<(u64, u64)> {
    let arg = |at: u32| read_field::<u64>(regs, at).ok();
    let iovec = |at: u64| -> Option<(u64, u64)> {
        // struct iovec { void *iov_base; size_t iov_len; }, in one read.
        let [base, len] = unsafe { bpf_probe_read_user(at as *const [u64; 2]) }.ok()?;
        Some((base, len))
    };
    match io.buffer() {
        Buffer::Plain => Some((arg(offset!(regs_arg1))?, u64::MAX)),
        Buffer::Vector => iovec(arg(offset!(regs_arg1))?),
        Buffer::Message => {
            const MSG_IOV: u64 = 16;
            let msg = arg(offset!(regs_arg1))?;
            iovec(unsafe { bpf_probe_read_user((msg + MSG_IOV) as *const u64) }.ok()?)
        }
        Buffer::None => None,
    }
}

/// Reads the first 16 bytes at `at` (of which `len` are the call's) and says what they start.
/// A call of fewer bytes whose buffer ends just before an unmapped page is read to its end
/// only.
#[inline(always)]
fn start_at(at: u64, len: u64) -> Start {
    if let Ok(head) = unsafe { bpf_probe_read_user(at as *const [u8; 16]) } {
        return start_of(&head, len);
    }
    let mut head = [0u8; 16];
    let n = (len & 15) as u32;
    if len >= 16 || unsafe { generated::bpf_probe_read_user(head.as_mut_ptr().cast(), n, at as *const _) } != 0 {
        return Start::Neither;
    }
    start_of(&head, len)
}

/// What `head`, of which the first `len` bytes are real, starts.
#[inline(always)]
fn start_of(head: &[u8; 16], len: u64) -> Start {
    const HTTP_1: u64 = u64::from_le_bytes(*b"HTTP/1.\0");
    let word = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    if len >= 12 && word & 0x00ff_ffff_ffff_ffff == HTTP_1 && head[8] == b' ' {
        let digit = |b: u8| b.wrapping_sub(b'0');
        let (a, b, c) = (digit(head[9]), digit(head[10]), digit(head[11]));
        if (head[7] == b'0' || head[7] == b'1') && (1..=5).contains(&a) && b <= 9 && c <= 9 {
            return Start::Status(u16::from(a) * 100 + u16::from(b) * 10 + u16::from(c));
        }
        return Start::Neither;
    }
    if let Some((method, path)) = method_of(head, len) {
        return Start::Request(method, path);
    }
    // An unregistered method: a token of capitals, a space, an origin-form target.
    for k in 1..8 {
        if !head[k - 1].is_ascii_uppercase() {
            break;
        }
        if head[k] == b' ' {
            return if len > k as u64 + 1 && head[k + 1] == b'/' {
                Start::Request(Method::Other, k as u64 + 1)
            } else {
                Start::Neither
            };
        }
    }
    Start::Neither
}

/// The registered method `head` starts with, if any, and where its path starts: its first
/// four bytes looked up in `HTTP_METHODS` (one lookup, where comparing each token would be
/// a branch each, for every request start the verifier walks), then the space that ends
/// the token.
#[inline(always)]
fn method_of(head: &[u8; 16], len: u64) -> Option<(Method, u64)> {
    let prefix = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let token = unsafe { HTTP_METHODS.get(&prefix) }?;
    let end = usize::from(token.len) & 15;
    (len > end as u64 && head[end] == b' ').then(|| (Method::from_u8(token.method), end as u64 + 1))
}

/// Where a request's path starts in the caller's memory, and how many of the call's bytes
/// are there from it: nothing past them is read.
#[derive(Clone, Copy)]
struct Path {
    at: u64,
    len: u64,
}

impl Path {
    /// The path at `offset` in a call's segment of `len` bytes at `at`.
    #[inline(always)]
    fn at(at: u64, len: u64, offset: u64) -> Path {
        Path {
            at: at + offset,
            len: len.saturating_sub(offset),
        }
    }

    /// Reads `N` bytes from its start to `into` (a fixed size: a size that varies with the
    /// call would make each pipelined request's states differ for the verifier); how many of
    /// them the call brought, or `None` if they could not be read.
    #[inline(always)]
    fn read<const N: usize>(self, into: *mut [u8; N]) -> Option<u64> {
        let read = unsafe { generated::bpf_probe_read_user(into.cast(), N as u32, self.at as *const _) };
        (read == 0).then_some(self.len.min(N as u64))
    }
}

/// The route of the request whose path is `path`: the longest `HTTP_ROUTES` prefix of its
/// first `ROUTE_BYTES` bytes (an LPM trie lookup, on every kernel of the matrix since
/// 4.11) that the call brought, when `--http-route` gave any. A path cut off by the end of
/// a read (a request line split across reads) is matched on what that read brought.
#[inline(always)]
fn route_of(path: Path) -> u16 {
    if !switched_on(SWITCH_HTTP_ROUTES) {
        return ROUTE_OTHER;
    }
    let Some(key) = HTTP_ROUTE_KEY.get_ptr_mut(0) else {
        return ROUTE_OTHER;
    };
    let Some(n) = path.read(&raw mut unsafe { &mut *key }.data) else {
        return ROUTE_OTHER;
    };
    // Only the call's bytes take part: the trie compares the key's first `prefix_len` bits.
    unsafe { (*key).prefix_len = 8 * n as u32 };
    HTTP_ROUTES.get(unsafe { &*key }).copied().unwrap_or(ROUTE_OTHER)
}

/// The connection's HTTP state, made at its first request.
#[inline(always)]
fn connection(sk: u64, target: u32, side: u8) -> Option<&'static mut HttpConn> {
    if let Some(conn) = HTTP_CONNS.get_ptr_mut(&sk) {
        return Some(unsafe { &mut *conn });
    }
    let empty = InFlight {
        start_ns: 0,
        bytes: 0,
        method: 0,
        slot: 0,
        route: ROUTE_OTHER,
    };
    let fresh = HttpConn {
        responding: Responding {
            request: empty,
            end_ns: 0,
            bytes: 0,
            status: 0,
            _pad: [0; 6],
        },
        in_flight: [empty; MAX_IN_FLIGHT],
        sk,
        target,
        side,
        first: 0,
        waiting: 0,
        overflowed: 0,
    };
    if HTTP_CONNS.insert(&sk, &fresh, 0).is_err() {
        count_map_error(MapErrorSite::HttpConns);
        return None;
    }
    HTTP_CONNS.get_ptr_mut(&sk).map(|c| unsafe { &mut *c })
}

/// A request starts: it waits for its response behind those already waiting.
#[inline(always)]
fn request(conn: &mut HttpConn, method: Method, path: Path, start_ns: u64, bytes: u64) {
    // Volatile, so that the window's loop reads the count from the map each time instead
    // of carrying it in a register, which would keep the verifier from pruning its paths.
    let waiting = unsafe { core::ptr::read_volatile(&conn.waiting) };
    if usize::from(waiting) >= MAX_IN_FLIGHT {
        // Counted at close: a count here would be one more path through every request
        // start for the verifier to walk.
        conn.overflowed = conn.overflowed.saturating_add(1);
        return;
    }
    let at = (usize::from(conn.first) + usize::from(waiting)) & (MAX_IN_FLIGHT - 1);
    let kept = wanted(EventKind::HttpRequest) && keep_path(conn.sk, at as u32, path);
    if let Some(slot) = conn.in_flight.get_mut(at) {
        *slot = InFlight {
            start_ns,
            bytes: as_u32(bytes),
            method: method as u8,
            slot: at as u8 | if kept { PATH_KEPT } else { 0 },
            route: route_of(path),
        };
    }
    unsafe { core::ptr::write_volatile(&mut conn.waiting, waiting + 1) };
}

/// The newest waiting request, which bytes that start no message belong to.
#[inline(always)]
fn newest(conn: &mut HttpConn) -> Option<&mut InFlight> {
    let waiting = usize::from(unsafe { core::ptr::read_volatile(&conn.waiting) });
    if waiting == 0 {
        return None;
    }
    let at = (usize::from(conn.first) + waiting - 1) & (MAX_IN_FLIGHT - 1);
    conn.in_flight.get_mut(at)
}

/// Tail-called by `collector_http` for a server's read that began a request.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn collector_http_pipelined(ctx: RawTracePointContext) -> i32 {
    let Some(call) = HTTP_CALL.get(0).copied() else {
        return 0;
    };
    let Some(conn) = HTTP_CONNS.get_ptr_mut(&call.sk) else {
        return 0;
    };
    let bytes: i64 = ctx.arg(1);
    pipelined(unsafe { &mut *conn }, call.data, call.len, bytes as u64, call.now);
    0
}

/// Further requests of a server's read that began with one: each after a blank line
/// ("\r\n\r\n", the end of a header block) within the read's first `WINDOW` bytes, with a
/// registered method. A request after one with a body in the same read is not seen (unless
/// the body ends in a blank line), nor is one with an unregistered method: its response
/// then answers the next request waiting (README: "HTTP requests").
#[inline(always)]
fn pipelined(conn: &mut HttpConn, at: u64, len: u64, bytes: u64, now: u64) {
    let Some(window) = HTTP_WINDOW.get_ptr_mut(0) else {
        return;
    };
    let window = unsafe { &mut *window };
    let n = if len > WINDOW as u64 { WINDOW as u64 } else { len };
    if n < 8 {
        return;
    }
    let into = window.bytes.as_mut_ptr();
    if unsafe { generated::bpf_probe_read_user(into.cast(), n as u32, at as *const _) } != 0 {
        return;
    }
    // Two passes, so that the verifier walks the long one with little in it: where the
    // blank lines end (their count kept in the map, volatile, so that paths with different
    // counts are one state to the verifier), then what starts there.
    const BLANK_LINE: u32 = u32::from_le_bytes(*b"\r\n\r\n");
    unsafe {
        core::ptr::write_volatile(&mut window.blank_lines, 0);
        core::ptr::write_volatile(&mut window.len, n);
    }
    for i in 4..WINDOW {
        if i as u64 >= n {
            break;
        }
        let ends = unsafe { core::ptr::read_unaligned(window.bytes.as_ptr().add(i - 4).cast::<u32>()) };
        if ends == BLANK_LINE {
            let found = unsafe { core::ptr::read_volatile(&window.blank_lines) } as usize;
            if found >= MAX_IN_FLIGHT {
                break;
            }
            window.after_blank[found & (MAX_IN_FLIGHT - 1)] = i as u16;
            unsafe { core::ptr::write_volatile(&mut window.blank_lines, found as u32 + 1) };
        }
    }
    // What starts after each, kept in the map: this pass changes nothing else. The length
    // is read again from the map: the verifier knows it exactly at each exit of the loop
    // above, and would walk what follows once for each.
    let n = unsafe { core::ptr::read_volatile(&window.len) };
    let found = unsafe { core::ptr::read_volatile(&window.blank_lines) } as usize;
    for k in 0..MAX_IN_FLIGHT {
        if k >= found {
            break;
        }
        let i = usize::from(window.after_blank[k]) & (WINDOW - 1);
        let head = unsafe { core::ptr::read_unaligned(window.bytes.as_ptr().add(i).cast::<[u8; 16]>()) };
        let (method, path) = method_of(&head, n.saturating_sub(i as u64)).unwrap_or((Method::None, 0));
        unsafe {
            core::ptr::write_volatile(&mut window.methods[k], method as u8);
            core::ptr::write_volatile(&mut window.paths[k], path as u8);
        }
    }
    // The requests, in order.
    for k in 0..MAX_IN_FLIGHT {
        if k >= found {
            break;
        }
        let method = unsafe { core::ptr::read_volatile(&window.methods[k]) };
        if method == Method::None as u8 {
            continue;
        }
        // The bytes from here on are the new request's, not the one before's.
        let rest = bytes.saturating_sub(u64::from(window.after_blank[k]));
        if let Some(before) = newest(conn) {
            before.bytes = before.bytes.saturating_sub(as_u32(rest));
        }
        let offset =
            u64::from(window.after_blank[k]) + u64::from(unsafe { core::ptr::read_volatile(&window.paths[k]) });
        request(conn, Method::from_u8(method), Path::at(at, len, offset), now, rest);
    }
}

/// What a status line did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Answered the oldest waiting request, or none was waiting (counted unmatched), or it
    /// was an interim 1xx, which answers none.
    Answered,
    /// Answered it by switching protocols (101, or a 2xx to CONNECT): counted now, and the
    /// connection carries something else from here.
    Tunnel,
}

/// A status line: the response to the oldest waiting request.
#[inline(always)]
fn respond(conn: &mut HttpConn, status: u16, now: u64, bytes: u64) -> Answer {
    if status < 200 && status != 101 {
        return Answer::Answered;
    }
    finish(conn);
    let waiting = conn.waiting;
    if waiting == 0 {
        unmatched(conn.target, conn.side, STATUS_UNMATCHED, 1, bytes);
        return Answer::Answered;
    }
    let Some(request) = conn
        .in_flight
        .get(usize::from(conn.first) & (MAX_IN_FLIGHT - 1))
        .copied()
    else {
        return Answer::Answered;
    };
    conn.first = (conn.first + 1) & (MAX_IN_FLIGHT as u8 - 1);
    conn.waiting = waiting - 1;
    conn.responding = Responding {
        request,
        end_ns: now,
        bytes,
        status,
        _pad: [0; 6],
    };
    if status == 101 || (request.method == Method::Connect as u8 && status < 300) {
        finish(conn);
        return Answer::Tunnel;
    }
    Answer::Answered
}

/// Bytes that start no message: the rest of the response being sent or received, or of the
/// newest request. A server's response ends with its last write, a client's is timed to its
/// status line.
#[inline(always)]
fn more(conn: &mut HttpConn, sends: bool, now: u64, bytes: u64) {
    let server = conn.side == SERVER;
    if sends == server {
        if conn.responding.status != 0 {
            conn.responding.bytes += bytes;
            if server {
                conn.responding.end_ns = now;
            }
        }
    } else if let Some(request) = newest(conn) {
        request.bytes = request.bytes.saturating_add(as_u32(bytes));
    }
}

/// A byte count as `InFlight` keeps it: at most `u32::MAX`.
#[inline(always)]
fn as_u32(bytes: u64) -> u32 {
    bytes.min(u64::from(u32::MAX)) as u32
}

/// The response being sent or received is complete: one request of its key.
#[inline(always)]
fn finish(conn: &mut HttpConn) {
    let r = conn.responding;
    if r.status == 0 {
        return;
    }
    conn.responding.status = 0;
    let key = HttpKey {
        target: conn.target,
        status: r.status,
        method: r.request.method,
        side: conn.side,
        route: r.request.route,
        _pad: 0,
    };
    let duration = r.end_ns.saturating_sub(r.request.start_ns);
    add(&key, Some(duration), 1, u64::from(r.request.bytes), r.bytes);
    if wanted(EventKind::HttpRequest) {
        emit_request(conn, &r, duration);
    }
    forget_path(conn.sk, r.request);
}

/// `InFlight::slot`'s flag: the request's path is in `HTTP_PATHS`.
const PATH_KEPT: u8 = 0x80;

/// Keeps the path's first `PATH_BYTES` (those the call brought, zeros after them) for the
/// event of the request in `slot`; whether it could (a full map is counted).
#[inline(always)]
fn keep_path(sk: u64, slot: u32, path: Path) -> bool {
    let Some(read) = HTTP_PATH_READ.get_ptr_mut(0) else {
        return false;
    };
    let read = unsafe { &mut *read };
    // The call's bytes only (a failed read: none).
    read.len = path.read(&raw mut read.bytes).unwrap_or(0) as u8;
    let key = PathKey { sk, slot, _pad: 0 };
    if HTTP_PATHS.insert(&key, read, 0).is_err() {
        count_map_error(MapErrorSite::HttpPaths);
        return false;
    }
    true
}

/// Drops the kept path of `request`, if it has one: answered, or aborted.
#[inline(always)]
fn forget_path(sk: u64, request: InFlight) {
    if request.slot & PATH_KEPT != 0 {
        let key = PathKey {
            sk,
            slot: u32::from(request.slot & !PATH_KEPT),
            _pad: 0,
        };
        let _ = HTTP_PATHS.remove(&key);
    }
}

/// Sends the `http.request` record of the response `r` just completed on `conn`: the
/// connection's owner (`SOCKETS`), endpoints, and the request's path.
#[inline(always)]
fn emit_request(conn: &HttpConn, r: &Responding, duration_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<HttpRecord>(0) else {
        count_drop(EventKind::HttpRequest);
        return;
    };
    let owner = unsafe { SOCKETS.get(&conn.sk) };
    let kept = r.request.slot & PATH_KEPT != 0;
    let key = PathKey {
        sk: conn.sk,
        slot: u32::from(r.request.slot & !PATH_KEPT),
        _pad: 0,
    };
    // A request made before events were wanted has no path kept, nor one whose path did
    // not fit (counted then).
    let path = if kept { unsafe { HTTP_PATHS.get(&key) } } else { None };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).header = EventHeader {
            kind: EventKind::HttpRequest as u32,
            size: size_of::<HttpRecord>() as u32,
            // When it was answered, not when it was counted (the next message, or close).
            ktime_ns: r.end_ns,
            target: conn.target,
            pid: owner.map_or(0, |o| o.pid),
        };
        (*record).duration_ns = duration_ns;
        (*record).request_bytes = u64::from(r.request.bytes);
        (*record).response_bytes = r.bytes;
        (*record).comm = owner.map_or([0; COMM_LEN], |o| o.comm);
        read_endpoints(conn.sk as *const u8, &mut (*record).endpoints);
        (*record).status = r.status;
        (*record).method = r.request.method;
        (*record).side = conn.side;
        (*record)._pad = 0;
        (*record).route = r.request.route;
        // Copied by the helper, not through the stack.
        let into = (&raw mut (*record).path).cast();
        match path {
            Some(path) => {
                generated::bpf_probe_read_kernel(into, PATH_BYTES as u32, path.bytes.as_ptr().cast());
                (*record).path_len = path.len;
            }
            None => {
                core::ptr::write_bytes(into.cast::<u8>(), 0, PATH_BYTES);
                (*record).path_len = 0;
            }
        }
    }
    entry.submit(0);
}

/// The socket `sk` is freed (`tcp_destroy_sock`): its last response is complete, and its
/// requests still waiting are aborted.
#[inline(always)]
pub fn closed(sk: u64) {
    let Some(conn) = HTTP_CONNS.get_ptr_mut(&sk) else {
        return;
    };
    let conn = unsafe { &mut *conn };
    finish(conn);
    for i in 0..MAX_IN_FLIGHT {
        if i >= usize::from(conn.waiting) {
            break;
        }
        if let Some(request) = conn.in_flight.get((usize::from(conn.first) + i) & (MAX_IN_FLIGHT - 1)) {
            forget_path(sk, *request);
        }
    }
    for (status, n) in [(STATUS_ABORTED, conn.waiting), (STATUS_IN_FLIGHT_FULL, conn.overflowed)] {
        if n > 0 {
            unmatched(conn.target, conn.side, status, u64::from(n), 0);
        }
    }
    let _ = HTTP_CONNS.remove(&sk);
}

/// `n` rows of `status` that are no completed request (aborted, unmatched, in flight
/// full), with the bytes of an unmatched response.
#[inline(always)]
fn unmatched(target: u32, side: u8, status: u16, n: u64, response: u64) {
    let key = HttpKey {
        target,
        status,
        method: Method::None as u8,
        side,
        route: ROUTE_OTHER,
        _pad: 0,
    };
    add(&key, None, n, 0, response);
}

/// `n` requests of `key` (a duration only for completed ones; the others' count is kept in
/// the last bucket, and read as a count).
#[inline(always)]
fn add(key: &HttpKey, duration_ns: Option<u64>, n: u64, request: u64, response: u64) {
    let Some(stats) = get_or_insert(&HTTP_STATS, key, &HttpStats::ZERO, MapErrorSite::HttpStats) else {
        return;
    };
    let stats = unsafe { &mut *stats };
    stats.request_bytes += request;
    stats.response_bytes += response;
    let bucket = match duration_ns {
        Some(d) => {
            stats.sum_ns += d;
            bucket_of(d)
        }
        None => BUCKETS - 1,
    };
    if let Some(b) = stats.buckets.get_mut(bucket) {
        *b += n;
    }
}

/// The first bucket whose bound `d` does not exceed (`HTTP_BOUNDS`), else +Inf.
#[inline(always)]
fn bucket_of(d: u64) -> usize {
    let bounds = (&raw const HTTP_BOUNDS).cast::<u64>();
    for i in 0..BUCKETS - 1 {
        if d <= unsafe { core::ptr::read_volatile(bounds.add(i)) } {
            return i;
        }
    }
    BUCKETS - 1
}

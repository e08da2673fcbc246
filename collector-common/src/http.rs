//! HTTP/1.x request tracking shared by `collector-ebpf/src/http.rs` and the agent: the
//! per-connection state the kernel keeps, the per-(target, direction, method, status)
//! aggregate the agent reads at scrape time, and the codes both sides name the same way.

/// Requests followed at once on one connection (pipelining): a request read while this many
/// wait for their responses is counted as untracked ([`STATUS_IN_FLIGHT_FULL`]).
pub const MAX_IN_FLIGHT: usize = 8;
/// Bytes of each read or write the kernel looks at: the method or status line is at their
/// start, and further requests of a pipelined read must begin within them to be seen.
pub const WINDOW: usize = 1024;
/// Histogram buckets: up to `BUCKETS - 1` bounds, then +Inf.
pub const BUCKETS: usize = 16;
/// The OpenTelemetry HTTP semantic conventions' default bounds for
/// `http.server.request.duration` and `http.client.request.duration`, in seconds.
pub const DEFAULT_BOUNDS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Upper bounds of the duration buckets in ns, ascending; unused ones are `u64::MAX` (the
/// kernel's `HTTP_BOUNDS` global, set by the agent from `--http-buckets`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub ns: [u64; BUCKETS - 1],
}

/// Bytes of a request's path the routes are matched against (`--http-route`): a pattern
/// is at most `ROUTE_BYTES - 1` bytes, so that the byte after it fits too.
pub const ROUTE_BYTES: usize = 64;
/// Routes at most (`--http-route`); each takes up to two `HTTP_ROUTES` entries.
pub const MAX_ROUTES: usize = 64;
/// `HttpKey::route` of a request whose path matches no route, or of every request when no
/// routes are given; route `i` of `--http-route` is `i + 1`.
pub const ROUTE_OTHER: u16 = 0;

/// Who the target is on a connection: it accepted it and answers requests, or it connected
/// and makes them.
pub const SERVER: u8 = 1;
pub const CLIENT: u8 = 2;

pub const fn side_label(side: u8) -> &'static str {
    match side {
        SERVER => "server",
        _ => "client",
    }
}

/// `HttpKey::status` values below 100, which no response has: rows that are not a
/// completed request.
/// A connection closed (or reset) with a request of it unanswered.
pub const STATUS_ABORTED: u16 = 0;
/// A response when no request was waiting for it: its request came in a way the kernel does
/// not see (a syscall it does not cover, a thread whose syscalls are not timed).
pub const STATUS_UNMATCHED: u16 = 1;
/// A request read while [`MAX_IN_FLIGHT`] others waited on the connection.
pub const STATUS_IN_FLIGHT_FULL: u16 = 2;

/// The request method, as the semantic conventions name it: one of the registered methods,
/// or `_OTHER`. `0` marks rows that are not requests (their status says what they are).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    None = 0,
    Other = 1,
    Get = 2,
    Head = 3,
    Post = 4,
    Put = 5,
    Delete = 6,
    Connect = 7,
    Options = 8,
    Trace = 9,
    Patch = 10,
}

impl Method {
    /// The registered methods, each with its token followed by the space that ends it.
    pub const TOKENS: [(Method, &'static [u8]); 9] = [
        (Method::Get, b"GET "),
        (Method::Head, b"HEAD "),
        (Method::Post, b"POST "),
        (Method::Put, b"PUT "),
        (Method::Delete, b"DELETE "),
        (Method::Connect, b"CONNECT "),
        (Method::Options, b"OPTIONS "),
        (Method::Trace, b"TRACE "),
        (Method::Patch, b"PATCH "),
    ];

    pub const fn from_u8(v: u8) -> Method {
        match v {
            1 => Method::Other,
            2 => Method::Get,
            3 => Method::Head,
            4 => Method::Post,
            5 => Method::Put,
            6 => Method::Delete,
            7 => Method::Connect,
            8 => Method::Options,
            9 => Method::Trace,
            10 => Method::Patch,
            _ => Method::None,
        }
    }

    /// The `http_request_method` label.
    pub const fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other | Method::None => "_OTHER",
        }
    }
}

/// `HTTP_METHODS`' value: a registered method, keyed by the first four bytes of its token
/// ([`Method::prefix`]), and its token's length (the space after it is at that offset).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MethodToken {
    pub method: u8,
    pub len: u8,
}

impl Method {
    /// The `HTTP_METHODS` entries: each registered method by its token's first four bytes
    /// (the tokens differ there), a little-endian `u32` as the kernel reads it.
    pub fn prefixes() -> impl Iterator<Item = (u32, MethodToken)> {
        Method::TOKENS.iter().map(|&(method, token)| {
            let prefix = u32::from_le_bytes([token[0], token[1], token[2], token[3]]);
            let len = token.len() as u8 - 1;
            (
                prefix,
                MethodToken {
                    method: method as u8,
                    len,
                },
            )
        })
    }
}

/// Key of `HTTP_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpKey {
    /// [`crate::TargetId::slot`].
    pub target: u32,
    /// The response's status code, or one of the `STATUS_*` codes below 100.
    pub status: u16,
    /// [`Method`] as a number.
    pub method: u8,
    /// [`SERVER`] or [`CLIENT`].
    pub side: u8,
    /// The route its path matched ([`ROUTE_OTHER`] for none).
    pub route: u16,
    pub _pad: u16,
}

/// One CPU's aggregate of the requests of one key. The count is the sum of the buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpStats {
    pub sum_ns: u64,
    /// Bytes of the requests and of their responses, headers included.
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub buckets: [u64; BUCKETS],
}

impl HttpStats {
    pub const ZERO: HttpStats = HttpStats {
        sum_ns: 0,
        request_bytes: 0,
        response_bytes: 0,
        buckets: [0; BUCKETS],
    };
}

/// A request waiting for its response. Small: `HTTP_CONNS` holds `MAX_IN_FLIGHT` of them
/// for every connection it can follow, preallocated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    /// Server: the return of the read that brought its first byte. Client: the entry of
    /// the write that sent its first byte.
    pub start_ns: u64,
    /// Its bytes so far (a request of 4 GiB or more stays at `u32::MAX`).
    pub bytes: u32,
    pub method: u8,
    /// Its place in `HttpConn::in_flight`, which keys its path in `HTTP_PATHS`, and in its
    /// top bit whether the path was kept there.
    pub slot: u8,
    /// `HttpKey::route`.
    pub route: u16,
}

/// A response being sent (server) or received (client): counted when the connection's next
/// message starts or it closes, so that its bytes are all in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Responding {
    pub request: InFlight,
    /// When the request was answered: the return of the response's last write (server), of
    /// the read of its status line (client).
    pub end_ns: u64,
    pub bytes: u64,
    /// 0: no response being written.
    pub status: u16,
    pub _pad: [u8; 6],
}

/// `HTTP_CONNS`' value: one followed TCP connection of a target on which HTTP was seen,
/// keyed like `SOCKETS` by its `struct sock` address and removed when the socket is freed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpConn {
    pub responding: Responding,
    /// A ring of requests in order: `in_flight[(first + i) % MAX_IN_FLIGHT]`, i < `waiting`.
    pub in_flight: [InFlight; MAX_IN_FLIGHT],
    /// Its key: the `struct sock` address.
    pub sk: u64,
    /// [`crate::TargetId::slot`] of the connection's owner.
    pub target: u32,
    pub side: u8,
    pub first: u8,
    pub waiting: u8,
    /// Requests not followed because `MAX_IN_FLIGHT` waited, counted when it closes.
    pub overflowed: u8,
}

/// Key of `HTTP_PATHS`: a request waiting on a connection, by its place in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub sk: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// `HTTP_PATHS`' value: the first `events::PATH_BYTES` from a request's path, of which `len` are
/// the call's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KeptPath {
    pub bytes: [u8; crate::events::PATH_BYTES],
    pub len: u8,
    pub _pad: [u8; 7],
}

#[cfg(feature = "user")]
mod pod {
    use super::{Bounds, HttpConn, HttpKey, HttpStats, MethodToken};
    unsafe impl aya::Pod for Bounds {}
    unsafe impl aya::Pod for MethodToken {}
    unsafe impl aya::Pod for HttpConn {}
    unsafe impl aya::Pod for HttpKey {}
    unsafe impl aya::Pod for HttpStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_registered_method_has_its_own_prefix_and_comes_back_from_its_number() {
        let prefixes: [(u32, MethodToken); Method::TOKENS.len()] = {
            let mut all = [(0, MethodToken { method: 0, len: 0 }); Method::TOKENS.len()];
            for (slot, entry) in all.iter_mut().zip(Method::prefixes()) {
                *slot = entry;
            }
            all
        };
        for (i, (prefix, token)) in prefixes.iter().enumerate() {
            assert!(prefixes[..i].iter().all(|(p, _)| p != prefix), "{prefix:#x}");
            let (method, bytes) = Method::TOKENS[i];
            // The kernel finds the space that ends the token at `len`.
            assert_eq!(bytes[usize::from(token.len)], b' ');
            assert_eq!(Method::from_u8(token.method), method);
            assert_eq!(method.label().as_bytes(), &bytes[..bytes.len() - 1]);
        }
        assert_eq!(Method::from_u8(Method::Other as u8).label(), "_OTHER");
    }
}

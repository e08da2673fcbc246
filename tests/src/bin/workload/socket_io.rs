//! `socket_io S K D`: every kind of call that moves socket bytes, each a known number of
//! times, so a test can check that each is counted exactly once and a peek not at all.
//!
//! On a unix stream pair, S bytes from one end to the other by each of: write/read,
//! writev/readv, sendto/recvfrom, sendmsg/recvmsg, sendfile (from a memfd)/read, and splice
//! in both directions (pipe to socket, socket to pipe): 6 S sent and 6 S received. Before
//! recvfrom and recvmsg, a MSG_PEEK of the same bytes, which must not count. Then on a UDP
//! socket of its own on 127.0.0.1: one sendmmsg of K datagrams of D bytes, a recvmmsg of one
//! with MSG_PEEK, and recvmmsg of the K: K D sent and K D received.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

pub fn socket_io(size: usize, datagrams: usize, datagram_size: usize) {
    unix_pair_every_call(size);
    udp_messages(datagrams, datagram_size);
}

/// The syscall's result, or a panic naming it.
fn check(what: &str, ret: isize) -> usize {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
    ret as usize
}

fn unix_pair_every_call(size: usize) {
    let mut fds = [0; 2];
    check(
        "socketpair",
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) } as isize,
    );
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (a, b) = (a.as_raw_fd(), b.as_raw_fd());
    let data = vec![b's'; size];
    let mut buf = vec![0u8; size];
    let iov = |p: *const u8, len: usize| libc::iovec {
        iov_base: p as *mut _,
        iov_len: len,
    };

    check("write", unsafe { libc::write(a, data.as_ptr().cast(), size) });
    receive(size, |n| unsafe { libc::read(b, buf.as_mut_ptr().cast(), n) });

    let v = [iov(data.as_ptr(), size)];
    check("writev", unsafe { libc::writev(a, v.as_ptr(), 1) });
    receive(size, |n| {
        let v = [iov(buf.as_ptr(), n)];
        unsafe { libc::readv(b, v.as_ptr(), 1) }
    });

    check("sendto", unsafe {
        libc::sendto(a, data.as_ptr().cast(), size, 0, std::ptr::null(), 0)
    });
    check("recvfrom peek", unsafe {
        libc::recvfrom(
            b,
            buf.as_mut_ptr().cast(),
            size,
            libc::MSG_PEEK,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    });
    receive(size, |n| unsafe {
        libc::recvfrom(
            b,
            buf.as_mut_ptr().cast(),
            n,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    });

    let mut v = [iov(data.as_ptr(), size)];
    let msg = message(&mut v);
    check("sendmsg", unsafe { libc::sendmsg(a, &raw const msg, 0) });
    let mut v = [iov(buf.as_ptr(), size)];
    let mut msg = message(&mut v);
    check("recvmsg peek", unsafe {
        libc::recvmsg(b, &raw mut msg, libc::MSG_PEEK)
    });
    receive(size, |n| {
        let mut v = [iov(buf.as_ptr(), n)];
        let mut msg = message(&mut v);
        unsafe { libc::recvmsg(b, &raw mut msg, 0) }
    });

    let file = memfd_with(&data);
    let mut offset: libc::off_t = 0;
    let sent = check("sendfile", unsafe {
        libc::sendfile(a, file.as_raw_fd(), &raw mut offset, size)
    });
    assert_eq!(sent, size, "sendfile sent {sent} of {size}");
    receive(size, |n| unsafe { libc::read(b, buf.as_mut_ptr().cast(), n) });

    let (pipe_r, pipe_w) = pipe();
    check("write to the pipe", unsafe {
        libc::write(pipe_w, data.as_ptr().cast(), size)
    });
    let sent = check("splice to the socket", unsafe {
        libc::splice(pipe_r, std::ptr::null_mut(), a, std::ptr::null_mut(), size, 0)
    });
    assert_eq!(sent, size, "splice sent {sent} of {size}");
    receive(size, |n| unsafe {
        libc::splice(b, std::ptr::null_mut(), pipe_w, std::ptr::null_mut(), n, 0)
    });
    check("read from the pipe", unsafe {
        libc::read(pipe_r, buf.as_mut_ptr().cast(), size)
    });
    unsafe {
        libc::close(pipe_r);
        libc::close(pipe_w);
    }
}

/// Calls `call(bytes still to come)` until `size` bytes have come.
fn receive(size: usize, mut call: impl FnMut(usize) -> isize) {
    let mut got = 0;
    while got < size {
        let n = check("receive", call(size - got));
        assert!(n > 0, "the peer closed");
        got += n;
    }
}

fn message(iov: &mut [libc::iovec]) -> libc::msghdr {
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    msg
}

fn memfd_with(data: &[u8]) -> OwnedFd {
    let fd = check("memfd_create", unsafe { libc::memfd_create(c"socket_io".as_ptr(), 0) }
        as isize);
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    check("write to the memfd", unsafe {
        libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len())
    });
    fd
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    check("pipe", unsafe { libc::pipe(fds.as_mut_ptr()) } as isize);
    (fds[0], fds[1])
}

fn udp_messages(datagrams: usize, size: usize) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(s.local_addr().unwrap()).expect("connect to itself");
    let fd = s.as_raw_fd();
    let data = vec![b'u'; size];
    let mut bufs = vec![vec![0u8; size]; datagrams];
    let mut send_iov: Vec<libc::iovec> = (0..datagrams)
        .map(|_| libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: size,
        })
        .collect();
    let mut recv_iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: size,
        })
        .collect();
    let headers = |iov: &mut [libc::iovec]| -> Vec<libc::mmsghdr> {
        iov.iter_mut()
            .map(|v| libc::mmsghdr {
                msg_hdr: message(std::slice::from_mut(v)),
                msg_len: 0,
            })
            .collect()
    };
    let mut sent = headers(&mut send_iov);
    let n = check(
        "sendmmsg",
        unsafe { libc::sendmmsg(fd, sent.as_mut_ptr(), datagrams as u32, 0) } as isize,
    );
    assert_eq!(n, datagrams, "sendmmsg sent {n} of {datagrams}");
    let mut received = headers(&mut recv_iov);
    check(
        "recvmmsg peek",
        unsafe { libc::recvmmsg(fd, received.as_mut_ptr(), 1, libc::MSG_PEEK, std::ptr::null_mut()) } as isize,
    );
    let mut got = 0;
    while got < datagrams {
        got += check("recvmmsg", unsafe {
            libc::recvmmsg(
                fd,
                received[got..].as_mut_ptr(),
                (datagrams - got) as u32,
                0,
                std::ptr::null_mut(),
            )
        } as isize);
    }
}

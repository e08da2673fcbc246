//! A process the tests observe. It makes exactly the syscalls it is told to, when it is told
//! to, so a test can start the collector first and then count. Commands arrive one per line
//! on stdin; after each, it prints `done` on stdout.
//!
//!   getppid N          N getppid() calls
//!   openat_missing N   N openat() of a path that does not exist (ENOENT)
//!   nanosleep MS       one nanosleep() of MS milliseconds
//!   fork_getppid N     fork a child that makes N getppid() calls and exits; wait for it
//!   thread_getppid N   start a thread that makes N getppid() calls; join it
//!   spawn_exit N       fork N children; child i exits with code i % 3; wait for them all
//!   threads_exit N     fork N children of 8 threads each, spinning, whose main thread then
//!                      exits: all 8 threads die at once (exit_group); wait for them all
//!   exec_true N        fork N children that exec /bin/true; wait for them all
//!   exec_storm N       fork N children that exec /bin/true, all at once; then wait for them
//!   kill_child         fork a child that waits forever, SIGKILL it, wait for it
//!   hold N             fork N children that wait until `release`
//!   release            SIGTERM the held children and wait for them
//!   storm S RATE EXEC  for S seconds fork RATE children a second (0: as fast as possible),
//!                      each exec'ing /bin/true (EXEC 1) or exiting at once (EXEC 0), reaping
//!                      as it goes; prints `done CHILDREN NS`
//!   thread_exec        a second thread execs /bin/true, replacing this process (no `done`)
//!   pin CPU            pin this process to one CPU (for the benchmark)
//!   spin_getppid PATH N  map the file PATH, print `spinning`, spin without a syscall until
//!                      its first byte is not 0, then make N getppid() calls
//!   time_getppid N     N getppid() calls; prints `done NS` with the loop's wall time
//!   time_pread N       N 4 KiB pread() from a file on tmpfs (/dev/shm); prints `done NS`
//!   time_faults N      N page faults: fresh pages touched 1024 at a time (sched_mem.rs);
//!                      prints `done NS`
//!   time_udp_send N    N sendto() of 64 bytes to a UDP socket of its own on 127.0.0.1 (never
//!                      read: the kernel drops what does not fit); prints `done NS`
//!   tcp_connect ADDR PORT C S   C times: connect to ADDR:PORT, send S bytes, shut down the
//!                      sending side, read until the peer closes; prints `done RECEIVED`
//!   tcp_listen ADDR    listen on ADDR, port chosen by the kernel; prints `done PORT`
//!   tcp_accept C R S   C times: accept on that listener, read R bytes, send S, close
//!   tcp_refused ADDR PORT  one connect to a port nobody listens on; prints `done ERRNO`
//!   tcp_timeout ADDR PORT  one connect with a single SYN retry (TCP_SYNCNT 1) to a port
//!                      whose SYNs are dropped; prints `done ERRNO`
//!   tcp_accept_reset C C times: accept on the listener and close without reading what the
//!                      peer sent, which makes the kernel send a reset
//!   udp_send ADDR PORT U D  U datagrams of D bytes to ADDR:PORT
//!   socket_io S K D    every kind of send and receive call (socket_io.rs)
//!   touch_pages, spin, sleeps, file_io, direct_io, alloc_forever: scheduler, memory and I/O work
//!                      (sched_mem.rs)
//!   fork_touch_pages CGROUP K  fork a child that moves itself into the cgroup directory
//!                      CGROUP, sleeps 1 ms, does `touch_pages K` and exits; wait for it
//!
//! Raw syscalls (`libc::syscall`) are used where libc might substitute another syscall
//! (glibc's nanosleep() calls clock_nanosleep, for instance).
mod sched_mem;
mod socket_io;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{IpAddr, Shutdown, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::Instant,
};

fn getppid(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// Spins on the first byte of `path` (mapped shared, so another process's write shows)
/// until it is not 0, making no syscall meanwhile, then makes `n` getppid() calls. The
/// `spinning` line is its last syscall before the spin.
fn spin_getppid(path: &str, n: u64) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let flag = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            1,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(flag, libc::MAP_FAILED, "mmap {path}");
    writeln!(std::io::stdout().lock(), "spinning").unwrap();
    while unsafe { std::ptr::read_volatile(flag.cast::<u8>()) } == 0 {
        std::hint::spin_loop();
    }
    getppid(n);
    unsafe { libc::munmap(flag, 1) };
}

fn openat_missing(n: u64) {
    let path = c"/nonexistent/collector-test/missing";
    for _ in 0..n {
        let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
        assert!(fd < 0, "the missing path exists");
    }
}

fn nanosleep(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    };
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts, std::ptr::null_mut::<libc::timespec>()) };
}

/// Forks a child that runs `child` and never returns from it; returns the child's pid.
fn fork(child: impl FnOnce()) -> libc::pid_t {
    match unsafe { libc::fork() } {
        0 => {
            child();
            unsafe { libc::_exit(0) };
        }
        -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
        pid => pid,
    }
}

fn wait_all(children: &[libc::pid_t]) {
    for &child in children {
        let mut status = 0;
        unsafe { libc::waitpid(child, &raw mut status, 0) };
    }
}

/// Starts 7 threads that spin, then ends the process from the main thread: the kernel takes
/// the 8 threads down together, on every CPU at once.
fn exit_with_spinning_threads() {
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..7 {
        let running = running.clone();
        std::thread::spawn(move || {
            running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            loop {
                std::hint::spin_loop();
            }
        });
    }
    while running.load(std::sync::atomic::Ordering::SeqCst) < 7 {
        std::hint::spin_loop();
    }
    unsafe { libc::_exit(0) };
}

fn exec_true() {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    unsafe { libc::_exit(127) };
}

/// A held child: it goes with the workload, so a test that fails before `release` leaves
/// no process behind (holding the test's stderr open).
fn pause_forever() {
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    loop {
        unsafe { libc::pause() };
    }
}

fn storm(seconds: u64, rate: u64, exec: bool) -> String {
    let start = Instant::now();
    let until = std::time::Duration::from_secs(seconds);
    let (mut forked, mut live) = (0u64, 0u64);
    while start.elapsed() < until {
        if rate > 0 {
            let due = std::time::Duration::from_secs_f64(forked as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        fork(|| {
            if exec {
                exec_true();
            }
        });
        forked += 1;
        live += 1;
        while live > 0 && unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {
            live -= 1;
        }
    }
    let elapsed = start.elapsed();
    while live > 0 && unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {
        live -= 1;
    }
    format!(" {forked} {}", elapsed.as_nanos())
}

fn pin(cpu: u64) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "cannot pin to CPU {cpu}"
        );
    }
}

fn pread_tmpfs(n: u64) {
    let path = format!("/dev/shm/collector-bench-{}", std::process::id());
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let got = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(got, 4096);
    }
}

fn udp_send_loopback(n: u64) -> impl FnOnce() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    move || {
        let payload = [0u8; 64];
        for _ in 0..n {
            sender.send_to(&payload, to).unwrap();
        }
        drop(receiver);
    }
}

/// `n` round trips of one byte through two pipes with a forked partner: every read blocks
/// until the other side writes, so on one CPU each round trip is two context switches, and
/// each syscall after one misses the collector's per-CPU filter cache.
fn pipe_pingpong(n: u64) -> impl FnOnce() {
    let pipe = || {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        fds
    };
    let (ping, pong) = (pipe(), pipe());
    let byte = |fd: i32, write: bool| {
        let mut b = 0u8;
        let done = unsafe {
            if write {
                libc::write(fd, (&raw const b).cast(), 1)
            } else {
                libc::read(fd, (&raw mut b).cast(), 1)
            }
        };
        assert_eq!(done, 1);
    };
    let partner = fork(move || {
        for _ in 0..n {
            byte(ping[0], false);
            byte(pong[1], true);
        }
    });
    move || {
        for _ in 0..n {
            byte(ping[1], true);
            byte(pong[0], false);
        }
        wait_all(&[partner]);
        for fd in ping.into_iter().chain(pong) {
            unsafe { libc::close(fd) };
        }
    }
}

/// Runs `f` and returns its wall time in nanoseconds.
fn timed(f: impl FnOnce()) -> String {
    let start = Instant::now();
    f();
    format!(" {}", start.elapsed().as_nanos())
}

fn tcp_connect(addr: IpAddr, port: u16, connections: u64, send: u64) -> String {
    let mut received = 0;
    for _ in 0..connections {
        let mut s = TcpStream::connect((addr, port)).expect("connect");
        s.write_all(&vec![b'x'; send as usize]).expect("send");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("receive");
        received += buf.len();
    }
    format!(" {received}")
}

fn tcp_accept(listener: &TcpListener, connections: u64, receive: u64, send: u64) {
    for _ in 0..connections {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0; receive as usize];
        s.read_exact(&mut buf).expect("receive");
        s.write_all(&vec![b'y'; send as usize]).expect("send");
    }
}

fn tcp_refused(addr: IpAddr, port: u16) -> String {
    let err = TcpStream::connect((addr, port)).expect_err("someone listens on the closed port");
    format!(" {}", err.raw_os_error().unwrap_or(0))
}

fn tcp_timeout(addr: IpAddr, port: u16) -> String {
    let IpAddr::V4(v4) = addr else {
        panic!("tcp_timeout takes an IPv4 address")
    };
    // SAFETY: plain socket calls on a socket this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let syncnt: libc::c_int = 1;
        let set = libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&raw const syncnt).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "TCP_SYNCNT: {}", std::io::Error::last_os_error());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(v4).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let errno = if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        };
        libc::close(fd);
        format!(" {errno}")
    }
}

fn tcp_accept_reset(listener: &TcpListener, connections: u64) {
    for _ in 0..connections {
        let (s, _) = listener.accept().expect("accept");
        // Wait for the peer's data, then drop it unread: close() with unread data resets.
        let mut one = [0u8; 1];
        s.peek(&mut one).expect("peek");
        drop(s);
    }
}

fn udp_send(addr: IpAddr, port: u16, datagrams: u64, size: u64) {
    let bind: IpAddr = if addr.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        [0u16; 8].into()
    };
    let s = UdpSocket::bind((bind, 0)).expect("bind");
    for _ in 0..datagrams {
        let sent = s.send_to(&vec![b'u'; size as usize], (addr, port)).expect("send");
        assert_eq!(sent as u64, size);
    }
}

fn main() {
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "ready {}", std::process::id()).unwrap();
    let mut held: Vec<libc::pid_t> = Vec::new();
    let mut listener: Option<TcpListener> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { continue };
        let words: Vec<&str> = words.collect();
        // The socket commands start with an address; the numbers follow it.
        let addr: Option<IpAddr> = words.first().and_then(|w| w.parse().ok());
        let args: Vec<u64> = words.iter().filter_map(|w| w.parse().ok()).collect();
        let n = args.first().copied().unwrap_or(0);
        let mut result = String::new();
        match cmd {
            "getppid" => getppid(n),
            "openat_missing" => openat_missing(n),
            "nanosleep" => nanosleep(n),
            // Both say which pid or tid did the calls.
            "fork_getppid" => {
                let child = fork(|| getppid(n));
                wait_all(&[child]);
                result = format!(" {child}");
            }
            "thread_getppid" => {
                let tid = std::thread::spawn(move || {
                    getppid(n);
                    unsafe { libc::gettid() }
                });
                result = format!(" {}", tid.join().unwrap());
            }
            "spawn_exit" => {
                let children: Vec<_> = (0..n)
                    .map(|i| fork(|| unsafe { libc::_exit((i % 3) as i32) }))
                    .collect();
                wait_all(&children);
            }
            "threads_exit" => {
                let children: Vec<_> = (0..n).map(|_| fork(exit_with_spinning_threads)).collect();
                wait_all(&children);
            }
            "exec_true" => {
                for _ in 0..n {
                    wait_all(&[fork(exec_true)]);
                }
            }
            "exec_storm" => {
                let children: Vec<_> = (0..n).map(|_| fork(exec_true)).collect();
                wait_all(&children);
            }
            "kill_child" => {
                let child = fork(pause_forever);
                unsafe { libc::kill(child, libc::SIGKILL) };
                wait_all(&[child]);
            }
            "hold" => held.extend((0..n).map(|_| fork(pause_forever))),
            "release" => {
                for &child in &held {
                    unsafe { libc::kill(child, libc::SIGTERM) };
                }
                wait_all(&held);
                held.clear();
            }
            "storm" => {
                result = storm(
                    n,
                    args.get(1).copied().unwrap_or(0),
                    args.get(2).copied().unwrap_or(1) != 0,
                );
            }
            "thread_exec" => {
                std::thread::spawn(exec_true);
                loop {
                    std::thread::park(); // the exec ends this process from the other thread
                }
            }
            "pin" => pin(n),
            "spin_getppid" => spin_getppid(words[0], args[0]),
            "time_getppid" => result = timed(|| getppid(n)),
            "time_pread" => result = timed(|| pread_tmpfs(n)),
            "time_udp_send" => result = timed(udp_send_loopback(n)),
            "time_pingpong" => result = timed(pipe_pingpong(n)),
            "time_faults" => result = timed(|| sched_mem::fault_loop(n)),
            "tcp_connect" => result = tcp_connect(addr.unwrap(), args[0] as u16, args[1], args[2]),
            "tcp_listen" => {
                let l = TcpListener::bind((addr.unwrap(), 0)).expect("listen");
                result = format!(" {}", l.local_addr().unwrap().port());
                listener = Some(l);
            }
            "tcp_accept" => tcp_accept(listener.as_ref().expect("tcp_listen first"), n, args[1], args[2]),
            "tcp_refused" => result = tcp_refused(addr.unwrap(), args[0] as u16),
            "tcp_timeout" => result = tcp_timeout(addr.unwrap(), args[0] as u16),
            "tcp_accept_reset" => tcp_accept_reset(listener.as_ref().expect("tcp_listen first"), n),
            "udp_send" => udp_send(addr.unwrap(), args[0] as u16, args[1], args[2]),
            "socket_io" => socket_io::socket_io(n as usize, args[1] as usize, args[2] as usize),
            "touch_pages" => sched_mem::touch_pages(n),
            "fork_touch_pages" => wait_all(&[fork(|| sched_mem::touch_pages_alone(words[0], args[0]))]),
            "spin" => sched_mem::spin(n),
            "sleeps" => sched_mem::sleeps(n),
            "file_io" => sched_mem::file_io(words[0], args[0]),
            "direct_io" => sched_mem::direct_io(words[0], args[0]),
            "alloc_forever" => sched_mem::alloc_forever(n),
            other => panic!("unknown command {other}"),
        }
        writeln!(stdout.lock(), "done{result}").unwrap();
    }
}

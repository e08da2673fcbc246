//! A process the tests observe. It makes exactly the syscalls it is told to, when it is told
//! to, so a test can start the collector first and then count. Commands arrive one per line
//! on stdin; after each, it prints `done` on stdout.
//!
//!   getppid N          N getppid() calls
//!   openat_missing N   N openat() of a path that does not exist (ENOENT)
//!   nanosleep MS       one nanosleep() of MS milliseconds
//!   fork_getppid N     fork a child that makes N getppid() calls and exits; wait for it
//!   thread_getppid N   start a thread that makes N getppid() calls; join it
//!
//! Raw syscalls (`libc::syscall`) are used where libc might substitute another syscall
//! (glibc's nanosleep() calls clock_nanosleep, for instance).
use std::io::{BufRead as _, Write as _};

fn getppid(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
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

fn fork_getppid(n: u64) {
    match unsafe { libc::fork() } {
        0 => {
            getppid(n);
            unsafe { libc::_exit(0) };
        }
        -1 => panic!("fork failed"),
        child => {
            let mut status = 0;
            unsafe { libc::waitpid(child, &mut status, 0) };
        }
    }
}

fn main() {
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "ready {}", std::process::id()).unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let (Some(cmd), n) = (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) else {
            continue;
        };
        let n = n.unwrap_or(0);
        match cmd {
            "getppid" => getppid(n),
            "openat_missing" => openat_missing(n),
            "nanosleep" => nanosleep(n),
            "fork_getppid" => fork_getppid(n),
            "thread_getppid" => std::thread::spawn(move || getppid(n)).join().unwrap(),
            other => panic!("unknown command {other}"),
        }
        writeln!(stdout.lock(), "done").unwrap();
    }
}

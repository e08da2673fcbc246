//! The real collector binary, run as a child process: started and waited for until it
//! serves, scraped, stopped with SIGTERM; or run to completion for its start-up errors.
//!
//! The binary is `$COLLECTOR_BIN` (set by `cargo xtask test`, which builds it), else
//! `target/release/collector` of this workspace.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{exposition::Metrics, http::http_get};

pub fn collector_bin() -> PathBuf {
    let path = std::env::var_os("COLLECTOR_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/collector"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "collector binary {} missing: build it with `cargo xtask build`",
        path.display()
    );
    path
}

/// A running collector, stopped (SIGTERM) when dropped.
pub struct Collector {
    child: Child,
    pub addr: String,
}

impl Collector {
    /// Starts the collector with `args` (plus `--listen` on a free port) and waits until it
    /// serves `/health`, which it does only once every probe is attached.
    pub fn start(args: &[&str]) -> Collector {
        Collector::start_bin(&collector_bin(), args)
    }

    /// [`Collector::start`] with another binary (the bench's `--baseline`).
    pub fn start_bin(bin: &Path, args: &[&str]) -> Collector {
        let mut collector = Collector::spawn_bin(bin, args, Stdio::piped());
        collector.wait_until_serving();
        collector
    }

    /// Starts the collector with `args` (plus `--listen` on a free port), its stderr going to
    /// `stderr` (unless that is `Stdio::piped()`, `stop_and_read_log` then reads nothing), and
    /// does not wait for it.
    pub fn spawn(args: &[&str], stderr: impl Into<Stdio>) -> Collector {
        Collector::spawn_bin(&collector_bin(), args, stderr)
    }

    fn spawn_bin(bin: &Path, args: &[&str], stderr: impl Into<Stdio>) -> Collector {
        let addr = free_addr();
        let child = Command::new(bin)
            .args(args)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn collector");
        Collector { child, addr }
    }

    /// Waits until the collector serves `/health`.
    pub fn wait_until_serving(&mut self) {
        // Generous: in the kernel matrix's guests (QEMU without KVM) start-up takes 20-30 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(&self.addr, "/health").is_none() {
            if let Some(status) = self.try_wait() {
                panic!("collector exited during start-up ({status}): {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "collector not ready after 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = http_get(&self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }

    pub fn health(&self) -> (u16, serde_json::Value) {
        let (status, body) = http_get(&self.addr, "/health").expect("GET /health");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health is not JSON ({e}): {body}")),
        )
    }

    /// Sends SIGTERM and waits up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        // Once reaped, its PID is free and may be another process's (pid_max is 32768 here).
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the collector (SIGTERM) and returns everything it logged.
    pub fn stop_and_read_log(mut self) -> String {
        self.terminate(Duration::from_secs(5)).expect("collector did not stop");
        self.stderr()
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the collector to completion (for start-up errors): (exit code, stderr).
pub fn collector_output(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(collector_bin())
        .args(args)
        .output()
        .expect("run collector");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn free_addr() -> String {
    crate::free_port().to_string()
}

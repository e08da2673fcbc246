//! The workload process (src/bin/workload/), driven line by line over its stdin.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

/// The `workload` binary of this crate, found beside the running executable: cargo puts it
/// in `target/<profile>/`, which holds the bench binary and is the parent of the test
/// executables' `deps/` (CARGO_BIN_EXE_* is only set for the integration tests themselves).
fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("workload"))
        .find(|p| p.is_file())
        .expect("the workload binary beside this executable (cargo build -p tests --bins)")
}

/// A workload process driven line by line (see src/bin/workload/).
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Workload {
    pub fn spawn() -> Workload {
        let mut child = Command::new(workload_bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "workload said {line:?}");
        let pid = child.id();
        Workload {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Runs one command and waits until it is done; returns what followed `done` (the
    /// wall time in ns for the `time_*` commands, empty otherwise).
    pub fn run(&mut self, command: &str) -> String {
        self.send(command);
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let rest = line
            .trim()
            .strip_prefix("done")
            .unwrap_or_else(|| panic!("workload command {command:?}: {line:?}"));
        rest.trim().to_owned()
    }

    /// Sends a command and waits for the line it prints first, which must be `line`: the
    /// command runs on, and [`Workload::wait_done`] waits for its end.
    pub fn start(&mut self, command: &str, line: &str) {
        self.send(command);
        let mut got = String::new();
        self.stdout.read_line(&mut got).unwrap();
        assert_eq!(got.trim(), line, "workload command {command:?}");
    }

    /// Sends a command and returns at once: [`Workload::wait_done`] waits for its end.
    /// One write of the whole line, so that the workload reads it whole (tests count the
    /// bytes of its reads).
    pub fn send(&mut self, command: &str) {
        self.stdin
            .as_mut()
            .unwrap()
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
    }

    /// Waits for the `done` of a command begun with [`Workload::start`] or [`Workload::send`].
    pub fn wait_done(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done", "workload said {line:?}");
    }

    /// Sends a command that never answers (one that execs away the workload) and waits for
    /// the process to end; returns its exit code.
    pub fn run_to_exit(mut self, command: &str) -> Option<i32> {
        self.send(command);
        self.child.wait().unwrap().code()
    }

    /// Ends the workload (closing its stdin) and waits for it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! What every privileged test starts with: whether it can run here (saying `skipping: <why>`
//! when not), and waiting for what the collector does on its own threads.
use std::{
    io::Write as _,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

/// Says why a test does not run. Written to the stdout handle, not with `println!`, which
/// libtest captures and hides for a passing test: a skip must never be silently green.
/// `cargo xtask test` counts these lines in its summary.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stdout(), "skipping: {why}");
}

/// Whether privileged tests can run here; says `skipping: <why>` when not.
pub fn privileged() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        skip("not root (the collector loads eBPF programs); run `cargo xtask test` as root");
        return false;
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        skip("kernel has no BTF (/sys/kernel/btf/vmlinux)");
        return false;
    }
    true
}

/// Whether `tool` is on PATH; prints `skipping: <why>` when not.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(&format!(
            "{tool} not installed (apt-get install {package}; `cargo xtask test` installs it)"
        ));
    }
    found
}

/// Waits until `f` holds (the sink and metrics handlers run on their own threads).
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Python process that waits for a line on stdin, then runs `script` (so a test can make it
/// a target before it does anything).
pub fn python_after_go(script: &str, args: &[&str]) -> (Child, ChildStdin) {
    let mut child = Command::new("python3")
        .args(["-c", &format!("import sys\nsys.stdin.readline()\n{script}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// A file of the repository (`deploy/systemd/collector.service`).
pub fn repo_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Python of the tests' pinned PyPI packages (`COLLECTOR_PYTHON`, which `cargo xtask
/// test` makes); says `skipping: <why>` when it is not set. `what`: the package a test needs.
pub fn test_python(what: &str) -> Option<std::path::PathBuf> {
    let python = std::env::var_os("COLLECTOR_PYTHON").map(std::path::PathBuf::from);
    if python.is_none() {
        skip(&format!(
            "COLLECTOR_PYTHON is not set: `cargo xtask test` makes the venv with {what}"
        ));
    }
    python
}

/// A child killed when the test ends, passed or not.
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

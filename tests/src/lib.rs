//! Helpers for the privileged end-to-end tests: start the real collector binary and real
//! workloads, scrape, and read the OpenMetrics text back.
//!
//! The collector binary is `$COLLECTOR_BIN` (set by `cargo xtask test`, which builds it),
//! else `target/release/collector` of this workspace.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
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

pub fn collector_bin() -> PathBuf {
    let path = std::env::var_os("COLLECTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/collector"));
    assert!(
        path.exists(),
        "collector binary {} missing: build it with `cargo xtask build`",
        path.display()
    );
    path
}

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

/// A fresh path for the event sink.
pub fn sink_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("collector-{test}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The sink's lines, each checked against the documented schema.
pub fn sink_events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let time = v["time"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
            assert!(humantime_like(time), "time is not RFC 3339 with ns: {line}");
            assert!(v["event"].is_string(), "{line}");
            assert!(v["measurements"].is_object() && v["metadata"].is_object(), "{line}");
            assert!(
                v["measurements"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(serde_json::Value::is_number),
                "{line}"
            );
            v
        })
        .collect()
}

/// `2026-11-24T20:22:59.100617749Z`
fn humantime_like(t: &str) -> bool {
    t.len() == 30 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.'
}

/// Waits until `f` holds (the sink and metrics handlers run on their own threads).
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sample's value, 0 when the series does not exist (yet).
pub fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels).unwrap_or(0.0)
}

/// A TCP server in this (never a target) process on `addr`, port chosen by the kernel:
/// accepts `connections`, reads each to its end, answers `reply` bytes. Returns the port and
/// the bytes read from each connection.
pub fn serve_tcp(
    addr: std::net::IpAddr,
    connections: usize,
    reply: usize,
) -> (u16, std::thread::JoinHandle<Vec<usize>>) {
    let listener = TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        (0..connections)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(&vec![b'r'; reply]).unwrap();
                got.len()
            })
            .collect()
    });
    (port, server)
}

/// A workload process driven line by line (see src/bin/workload.rs).
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
        writeln!(self.stdin.as_mut().unwrap(), "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let rest = line
            .trim()
            .strip_prefix("done")
            .unwrap_or_else(|| panic!("workload command {command:?}: {line:?}"));
        rest.trim().to_owned()
    }

    /// Sends a command that never answers (one that execs away the workload) and waits for
    /// the process to end; returns its exit code.
    pub fn run_to_exit(mut self, command: &str) -> Option<i32> {
        writeln!(self.stdin.as_mut().unwrap(), "{command}").unwrap();
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

/// A running collector, stopped (SIGTERM) when dropped.
pub struct Collector {
    child: Child,
    pub addr: String,
}

impl Collector {
    /// Starts the collector with `args` (plus `--listen` on a free port) and waits until it
    /// serves `/health`, which it does only once every probe is attached.
    pub fn start(args: &[&str]) -> Collector {
        let addr = free_addr();
        let child = Command::new(collector_bin())
            .args(args)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn collector");
        let mut collector = Collector { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&collector.addr, "/health").is_none() {
            if let Some(status) = collector.child.try_wait().unwrap() {
                panic!("collector exited during start-up ({status}): {}", collector.stderr());
            }
            assert!(Instant::now() < deadline, "collector not ready after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
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
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Ids of the BPF objects `pid` holds through its fds, read from the `field` line (`prog_id:`,
/// `map_id:`) of /proc/PID/fdinfo/FD: the kernel writes `prog_id` for program and link fds and
/// `map_id` for map fds (kernel/bpf/syscall.c, bpf_prog_show_fdinfo, bpf_link_show_fdinfo,
/// bpf_map_show_fdinfo). Sorted, without repeats.
pub fn bpf_ids_held_by(pid: u32, field: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix(field)?.trim().parse().ok()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A plain HTTP/1.1 GET on loopback: (status, body), or `None` if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_accept(addr, path, None).map(|(status, _, body)| (status, body))
}

/// A GET with an optional `Accept` header: (status, content type, body).
pub fn http_get_accept(addr: &str, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // Bodies of unknown length come chunked.
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    Some((status, content_type, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// One sample of the exposition: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(parse_sample)
                .collect(),
        )
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn select(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample matching, or `None` if there is none; panics if several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.select(name, labels);
        assert!(found.len() <= 1, "{name}{labels:?} matches {} samples", found.len());
        found.first().map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_once(' ').unwrap_or((line, "")),
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find("} ").or_else(|| inner.rfind('}')).expect("closing brace");
        for pair in split_labels(&inner[..end]) {
            let (k, v) = pair.split_once('=').expect("label=value");
            labels.insert(
                k.to_owned(),
                v.trim_matches('"').replace("\\\"", "\"").replace("\\\\", "\\"),
            );
        }
        rest = &inner[end + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Splits `a="x",b="y,z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// Where the cgroup v2 hierarchy is mounted (the collector's own discovery, from
/// /proc/self/mountinfo); `None` without a v2 mount.
pub fn cgroup2_mount() -> Option<PathBuf> {
    collector::targets::cgroup::fs::CgroupFs::discover()
        .ok()
        .map(|fs| fs.mount().to_path_buf())
}

/// Moves process `pid` into the cgroup directory `dir` (writes it to `dir/cgroup.procs`); the
/// kernel has moved it when this returns.
pub fn move_to_cgroup(pid: u32, dir: &Path) {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", dir.display()));
}

/// A cgroup tree of one's own under the v2 hierarchy, `<mount>/<name>-<pid of this process>`,
/// with the cgroups made below it. Dropping it (also on a panic) moves every process still in
/// it to the root cgroup and removes every cgroup in it, deepest first.
pub struct CgroupTree {
    /// The v2 mount.
    pub mount: PathBuf,
    /// `<mount>/<name>-<pid>`.
    pub root: PathBuf,
}

impl CgroupTree {
    /// Creates the tree's root cgroup; `None` when no cgroup v2 hierarchy is mounted.
    pub fn create(name: &str) -> Option<CgroupTree> {
        let mount = cgroup2_mount()?;
        let root = mount.join(format!("{name}-{}", std::process::id()));
        let tree = CgroupTree { mount, root };
        if tree.root.exists() {
            tree.clean(); // left over by an earlier run that was killed
        }
        std::fs::create_dir(&tree.root).unwrap_or_else(|e| panic!("cannot create {}: {e}", tree.root.display()));
        Some(tree)
    }

    /// The cgroup `sub` below the root (`""`: the root itself).
    pub fn path(&self, sub: &str) -> PathBuf {
        if sub.is_empty() {
            self.root.clone()
        } else {
            self.root.join(sub)
        }
    }

    /// The path of `sub` relative to the mount, without a leading `/` (the default target name).
    pub fn relative(&self, sub: &str) -> String {
        self.path(sub)
            .strip_prefix(&self.mount)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Creates the cgroup `sub` (and any missing parents) and returns its path.
    pub fn mkdir(&self, sub: &str) -> PathBuf {
        let path = self.path(sub);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        path
    }

    /// The cgroup id of `sub`: its directory's inode number.
    pub fn id(&self, sub: &str) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.path(sub)).unwrap().ino()
    }

    /// Moves process `pid` into the cgroup `sub`.
    pub fn move_in(&self, pid: u32, sub: &str) {
        move_to_cgroup(pid, &self.path(sub));
    }

    /// Moves process `pid` back to the hierarchy's root cgroup.
    pub fn move_out(&self, pid: u32) {
        move_to_cgroup(pid, &self.mount);
    }

    /// Removes the empty cgroup `sub`.
    pub fn rmdir(&self, sub: &str) {
        let path = self.path(sub);
        std::fs::remove_dir(&path).unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    fn clean(&self) {
        let mut dirs = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(dir);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    let _ = std::fs::write(self.mount.join("cgroup.procs"), pid);
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("cannot remove cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        self.clean();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_samples() {
        let m = Metrics::parse(
            "# TYPE x counter\nx_total{target=\"a,b\",syscall=\"read\"} 12\nup 1\nh_bucket{le=\"+Inf\"} 3\n# EOF\n",
        );
        assert_eq!(
            m.value("x_total", &[("target", "a,b"), ("syscall", "read")]),
            Some(12.0)
        );
        assert_eq!(m.value("up", &[]), Some(1.0));
        assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(m.value("x_total", &[("target", "c")]), None);
    }
}

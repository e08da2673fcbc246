//! On-CPU time, run-queue latency, context switches, page faults, memory, OOM kills and the
//! bytes of reads and writes of targets, end to end: the real collector against the workload.
//!
//! The sched family reads the counters the kernel keeps per thread as a thread leaves its
//! CPU, so while the workload waits for its next command (blocked in read) every sample
//! must equal what /proc shows for it: the same counters, read by the kernel at the same
//! point. A thread already running when the collector starts is counted from its first
//! switch after the start: each test first makes the workload block once (`sleeps 1`).
use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tests::{
    CgroupTree, Collector, Metrics, Workload, cgroup2_mount, eventually, have_tool, move_to_cgroup, privileged,
    sink_events, sink_path, skip, value,
};

/// The tests here pin spinners to CPU 1 and time them, so they run one at a time (libtest
/// runs a file's tests on parallel threads).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A single-threaded process's counters, as /proc shows them.
#[derive(Debug, Clone, Copy)]
struct Counted {
    voluntary: f64,
    involuntary: f64,
    minor: f64,
    major: f64,
    cpu_seconds: f64,
    runqueue_seconds: f64,
    runqueue_waits: f64,
    /// Only the collector says it (/proc has no such counter): 0 from /proc.
    blocked_seconds: f64,
}

impl Counted {
    /// /proc/PID/status (switches), stat (fields 10 and 12: faults), schedstat (ns on CPU,
    /// ns waiting, waits).
    fn of_proc(pid: u32) -> Counted {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> f64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the comm's closing parenthesis the fields are plain; field 3 is the first.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let stat: Vec<f64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
        let schedstat: Vec<f64> = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        Counted {
            voluntary: field("voluntary_ctxt_switches:"),
            involuntary: field("nonvoluntary_ctxt_switches:"),
            minor: stat[10 - 3],
            major: stat[12 - 3],
            cpu_seconds: schedstat[0] / 1e9,
            runqueue_seconds: schedstat[1] / 1e9,
            runqueue_waits: schedstat[2],
            blocked_seconds: 0.0,
        }
    }

    fn of_metrics(m: &Metrics, target: &str) -> Counted {
        let t = ("target", target);
        Counted {
            voluntary: value(m, "collector_context_switches_total", &[t, ("kind", "voluntary")]),
            involuntary: value(m, "collector_context_switches_total", &[t, ("kind", "involuntary")]),
            minor: value(m, "collector_page_faults_total", &[t, ("kind", "minor")]),
            major: value(m, "collector_page_faults_total", &[t, ("kind", "major")]),
            cpu_seconds: value(m, "collector_cpu_seconds_total", &[t]),
            runqueue_seconds: value(m, "collector_runqueue_latency_seconds_sum", &[t]),
            runqueue_waits: value(m, "collector_runqueue_latency_seconds_count", &[t]),
            blocked_seconds: value(m, "collector_off_cpu_seconds_total", &[t, ("reason", "blocked")]),
        }
    }

    fn minus(self, o: Counted) -> Counted {
        Counted {
            voluntary: self.voluntary - o.voluntary,
            involuntary: self.involuntary - o.involuntary,
            minor: self.minor - o.minor,
            major: self.major - o.major,
            cpu_seconds: self.cpu_seconds - o.cpu_seconds,
            runqueue_seconds: self.runqueue_seconds - o.runqueue_seconds,
            runqueue_waits: self.runqueue_waits - o.runqueue_waits,
            blocked_seconds: self.blocked_seconds - o.blocked_seconds,
        }
    }
}

/// The workload's counters from /proc and from the collector, read while it waits: its
/// `done` comes before its next read blocks, so /proc is read again until it is unchanged
/// around the scrape (the thread has left its CPU, where the collector counts).
fn both(c: &Collector, w: &Workload, target: &str) -> (Counted, Counted) {
    for _ in 0..100 {
        let before = Counted::of_proc(w.pid);
        let metrics = Counted::of_metrics(&c.metrics(), target);
        if format!("{before:?}") == format!("{:?}", Counted::of_proc(w.pid)) {
            return (before, metrics);
        }
    }
    panic!("the workload never stopped running");
}

/// Runs `commands` and returns what /proc and the collector counted for them.
fn counted(c: &Collector, w: &mut Workload, target: &str, commands: &[&str]) -> (Counted, Counted) {
    let (proc0, metrics0) = both(c, w, target);
    for command in commands {
        w.run(command);
    }
    let (proc1, metrics1) = both(c, w, target);
    (proc1.minus(proc0), metrics1.minus(metrics0))
}

#[test]
fn switches_faults_cpu_time_and_waits_equal_the_kernels_own_counts() {
    let _serial = one_at_a_time();
    if !privileged() {
        return;
    }
    const SLEEPS: f64 = 200.0;
    const PAGES: f64 = 5000.0;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", w.pid)]);
    // Before the last reading the counted interval starts from (this command's end).
    let started = std::time::Instant::now();
    w.run("sleeps 1");
    let (by_proc, by_collector) = counted(&c, &mut w, "app", &["sleeps 200", "touch_pages 5000", "spin 200"]);
    let wall = started.elapsed().as_secs_f64();
    println!("/proc: {by_proc:?}\ncollector: {by_collector:?}");
    // The same kernel counters: equal, to the ns.
    assert_eq!(by_collector.voluntary, by_proc.voluntary);
    assert_eq!(by_collector.involuntary, by_proc.involuntary);
    assert_eq!(by_collector.minor, by_proc.minor);
    assert_eq!(by_collector.major, by_proc.major);
    assert_eq!(by_collector.runqueue_waits, by_proc.runqueue_waits);
    assert!((by_collector.cpu_seconds - by_proc.cpu_seconds).abs() < 1e-6);
    assert!((by_collector.runqueue_seconds - by_proc.runqueue_seconds).abs() < 1e-6);
    // And what the commands did: each sleep blocks once; around each of the 3 commands the
    // workload blocks in its read of stdin and may block once more (a page-table or pipe
    // lock): at most 2 more per command. A preemption is involuntary, never voluntary.
    assert!(
        (SLEEPS..=SLEEPS + 6.0).contains(&by_collector.voluntary),
        "{} voluntary switches for {SLEEPS} sleeps and 3 commands",
        by_collector.voluntary
    );
    assert!(by_collector.minor >= PAGES, "{} minor faults", by_collector.minor);
    assert!(by_collector.cpu_seconds >= 0.2, "{} s on CPU", by_collector.cpu_seconds);
    // Off a CPU and not runnable: at least the 200 sleeps of 1 ms; with the time on a CPU
    // and the waits, no more than the test's own wall time around the commands.
    let accounted = by_collector.blocked_seconds + by_collector.cpu_seconds + by_collector.runqueue_seconds;
    println!(
        "blocked {} s; on CPU, waiting and blocked {accounted} s of {wall} s",
        by_collector.blocked_seconds
    );
    assert!(by_collector.blocked_seconds >= 0.19);
    assert!(accounted <= wall, "{accounted} s accounted in {wall} s");
}

#[test]
fn a_fresh_process_counts_exactly_the_pages_it_touches_and_a_pinned_spinner_its_time() {
    let _serial = one_at_a_time();
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("fresh") else {
        return;
    };
    let mut w = Workload::spawn();
    // Forks the fresh children; no target itself (a --pid tree would keep its children).
    let mut parent = Workload::spawn();
    let c = Collector::start(&[
        "--pid",
        &format!("app={}", w.pid),
        "--cgroup",
        &format!("fresh={}", tree.root.display()),
    ]);
    w.run("sleeps 1");
    // A fresh child alone in a target of its own, counted from its first switch there to
    // its exit: its pages, plus a start-up baseline measured in the same run by a child
    // that touches none (the pages it first writes after that switch; 0 here). The first
    // child after the start may take a fault more (a page of the parent's first touched
    // after that fork): it is the warm-up.
    let fresh = |c: &Collector| {
        value(
            &c.metrics(),
            "collector_page_faults_total",
            &[("target", "fresh"), ("kind", "minor")],
        )
    };
    let faults = |w: &mut Workload, k: u32| {
        let before = fresh(&c);
        w.run(&format!("fork_touch_pages {} {k}", tree.root.display()));
        fresh(&c) - before
    };
    let warm_up = faults(&mut parent, 0);
    let (base, many) = (faults(&mut parent, 0), faults(&mut parent, 3000));
    println!("fork_touch_pages: warm-up -> {warm_up}, then 0 pages -> {base}, 3000 pages -> {many} minor faults");
    assert!(base <= 1.0, "a start-up baseline of {base} faults");
    assert_eq!(many - base, 3000.0);

    // A spinner alone on its CPU: on-CPU time within 5% of the wall time it spun.
    w.run("pin 1");
    w.run("sleeps 1");
    let (_, spun) = counted(&c, &mut w, "app", &["spin 1000"]);
    println!("spin 1000 ms pinned to CPU 1: {} s on CPU", spun.cpu_seconds);
    assert!(
        (spun.cpu_seconds - 1.0).abs() <= 0.05,
        "{} s on CPU for 1 s of spinning",
        spun.cpu_seconds
    );
}

/// runqlat's histogram: (low, high) in microseconds, count.
fn runqlat_rows(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (range, rest) = l.split_once(':')?;
            let (low, high) = range.split_once("->")?;
            let count = rest.split_whitespace().next()?.parse().ok()?;
            Some((low.trim().parse().ok()?, high.trim().parse().ok()?, count))
        })
        .collect()
}

/// The bucket holding the median of `counts` (in order).
fn median_index(counts: &[u64]) -> usize {
    let total: u64 = counts.iter().sum();
    let mut seen = 0;
    counts
        .iter()
        .position(|&n| {
            seen += n;
            2 * seen >= total
        })
        .unwrap()
}

#[test]
fn runqueue_latency_agrees_with_runqlat() {
    let _serial = one_at_a_time();
    if !privileged() || !have_tool("runqlat", "libbpf-tools") {
        return;
    }
    // Two spinners pinned to one CPU: the target waits while the other runs.
    let mut target = Workload::spawn();
    let mut rival = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("spinner={}", target.pid)]);
    for w in [&mut target, &mut rival] {
        w.run("pin 1");
        w.run("sleeps 1");
    }
    // Line-buffered, so that its first line says it is tracing when it is.
    let mut runqlat = Command::new("stdbuf")
        .args(["-oL", "runqlat", "-p", &target.pid.to_string(), "5", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(runqlat.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("Tracing"), "runqlat said {line:?}");
    let before = c.metrics();
    rival.send("spin 3500");
    // The rival is in its spin once the target's command is read; both spin 3 s together.
    target.run("spin 3000");
    rival.wait_done();
    let after = c.metrics();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    runqlat.wait().unwrap();
    let theirs = runqlat_rows(&rest);
    let ours: Vec<(f64, f64)> = after
        .select("collector_runqueue_latency_seconds_bucket", &[("target", "spinner")])
        .iter()
        .map(|s| {
            let le: f64 = s.labels["le"].parse().unwrap_or(f64::INFINITY);
            let labels = [("target", "spinner"), ("le", s.labels["le"].as_str())];
            (
                le,
                s.value - value(&before, "collector_runqueue_latency_seconds_bucket", &labels),
            )
        })
        .collect();
    // Cumulative buckets to counts.
    let our_counts: Vec<u64> = ours
        .iter()
        .enumerate()
        .map(|(i, &(_, n))| (n - if i == 0 { 0.0 } else { ours[i - 1].1 }) as u64)
        .collect();
    let their_counts: Vec<u64> = theirs.iter().map(|r| r.2).collect();
    println!("runqlat: {theirs:?}\ncollector (le seconds, cumulative): {ours:?}");
    let (ours_total, theirs_total): (u64, u64) = (our_counts.iter().sum(), their_counts.iter().sum());
    assert!(theirs_total > 100, "runqlat saw {theirs_total} waits");
    let off = (ours_total as f64 - theirs_total as f64).abs() / theirs_total as f64;
    assert!(off <= 0.05, "{ours_total} waits here, {theirs_total} by runqlat");
    // Log2 buckets of ns here, of us there: the medians' buckets must overlap.
    let m = median_index(&our_counts);
    let high = ours[m].0 * 1e9;
    let low = if m == 0 { 0.0 } else { ours[m - 1].0 * 1e9 };
    let (their_low, their_high, _) = theirs[median_index(&their_counts)];
    println!("median: ({low}, {high}] ns here, [{their_low}, {their_high}] us by runqlat");
    assert!(
        low < (their_high + 1) as f64 * 1e3 && (their_low as f64) * 1e3 <= high,
        "median buckets do not overlap"
    );
}

#[test]
fn file_bytes_are_counted_exactly_and_socket_bytes_under_socket() {
    let _serial = one_at_a_time();
    if !privileged() {
        return;
    }
    const B: u64 = 3_000_001;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("io={}", w.pid)]);
    // The workload waits in a read of its stdin begun before the start, which is not
    // counted (as that call is not): the counting starts with the next.
    w.run("sleeps 1");
    let path = format!("/tmp/collector-file-io-{}", w.pid);
    w.run(&format!("file_io {path} {B}"));
    w.run("udp_send 127.0.0.1 9 10 100");
    let m = c.metrics();
    let bytes = |name: &str, fd_type: &str| value(&m, name, &[("target", "io"), ("fd_type", fd_type)]);
    let (written, read) = (
        bytes("collector_written_bytes_total", "file"),
        bytes("collector_read_bytes_total", "file"),
    );
    println!("file: written {written}, read {read}, expected {B} each");
    assert_eq!(written, B as f64);
    assert_eq!(read, B as f64);
    let sent = m.sum("collector_socket_sent_bytes_total", &[("target", "io")]);
    let socket = bytes("collector_written_bytes_total", "socket");
    println!("socket: written {socket}, socket_sent {sent}, expected 1000");
    assert_eq!((socket, sent), (1000.0, 1000.0));
    // The commands came through a pipe: every byte of them after the start, none lost.
    let commands = format!("file_io {path} {B}\nudp_send 127.0.0.1 9 10 100\n");
    let pipe = bytes("collector_read_bytes_total", "pipe");
    println!(
        "pipe: read {pipe} of the commands {commands:?} ({} bytes)",
        commands.len()
    );
    assert_eq!(pipe, commands.len() as f64);
    assert_eq!(
        bytes("collector_written_bytes_total", "pipe"),
        "done\n".len() as f64 * 3.0
    );
    let resident = value(&m, "collector_resident_memory_bytes", &[("target", "io")]);
    let statm = std::fs::read_to_string(format!("/proc/{}/statm", w.pid)).unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    println!("resident: {resident} bytes, /proc says {} now", pages * 4096.0);
    assert!(resident > 0.0 && (resident - pages * 4096.0).abs() <= 64.0 * 4096.0);
}

/// A cgroup of the test's own whose memory limit is `limit` bytes, without swap: on the v2
/// hierarchy where its memory controller is (the guests of the kernel matrix), else on v1's
/// (a hybrid host such as this one keeps it there). Removed on drop (its processes are gone
/// by then: the OOM killer took them).
struct MemoryLimited(PathBuf);

impl MemoryLimited {
    fn create(limit: u64) -> Option<MemoryLimited> {
        let name = format!("collector-test-oom-{}", std::process::id());
        let v2 = cgroup2_mount().filter(|m| {
            std::fs::read_to_string(m.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        let (dir, files) = if let Some(mount) = v2 {
            // Its parent must hand the controller down.
            std::fs::write(mount.join("cgroup.subtree_control"), "+memory").unwrap();
            (mount.join(name), ["memory.max", "memory.swap.max"])
        } else if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            let dir = PathBuf::from("/sys/fs/cgroup/memory").join(name);
            (dir, ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"])
        } else {
            skip("the memory controller is on neither the cgroup v2 nor a v1 hierarchy here");
            return None;
        };
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(files[0]), limit.to_string()).unwrap();
        // No swap to spill into (the file is absent without swap accounting: nothing to limit).
        let _ = std::fs::write(
            dir.join(files[1]),
            if files[1].ends_with("max") {
                "0".to_owned()
            } else {
                limit.to_string()
            },
        );
        Some(MemoryLimited(dir))
    }
}

impl Drop for MemoryLimited {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_target_past_its_cgroups_memory_limit_is_one_oom_kill_naming_it() {
    let _serial = one_at_a_time();
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemoryLimited::create(64 << 20) else {
        return;
    };
    let mut w = Workload::spawn();
    let bystander = Workload::spawn();
    let sink = sink_path("oom");
    let c = Collector::start(&[
        "--pid",
        &format!("hog={}", w.pid),
        "--pid",
        &format!("calm={}", bystander.pid),
        "--events",
        sink.to_str().unwrap(),
    ]);
    w.run("sleeps 1");
    move_to_cgroup(w.pid, &cgroup.0);
    let pid = w.pid;
    let code = w.run_to_exit("alloc_forever 16");
    println!("the workload ended with exit code {code:?} (None: a signal)");
    assert_eq!(code, None, "killed by a signal");
    eventually("the OOM kill counted", Duration::from_secs(10), || {
        value(&c.metrics(), "collector_oom_kills_total", &[("target", "hog")]) == 1.0
    });
    let m = c.metrics();
    assert_eq!(m.value("collector_oom_kills_total", &[("target", "calm")]), None);
    let kills: Vec<_> = sink_events(&sink)
        .into_iter()
        .filter(|e| e["event"] == "process.oom_kill")
        .collect();
    println!("process.oom_kill events: {kills:?}");
    assert_eq!(kills.len(), 1);
    let kill = &kills[0];
    assert_eq!(kill["metadata"]["pid"], pid);
    assert_eq!(kill["metadata"]["target"], "hog");
    assert_eq!(kill["metadata"]["comm"], "workload");
    // It held about the limit: at least half of its 16384 pages when it was chosen.
    let pages = kill["measurements"]["pages"].as_f64().unwrap();
    assert!((8192.0..=20000.0).contains(&pages), "{pages} pages");
    drop(bystander);
}

/// A loop device over a file of `bytes` of its own, detached on drop.
struct LoopDevice {
    device: String,
    file: PathBuf,
}

impl LoopDevice {
    fn create(bytes: u64) -> Option<LoopDevice> {
        // A guest of the kernel matrix has the driver as a module, not loaded.
        let _ = Command::new("modprobe").arg("loop").status();
        let file = std::env::temp_dir().join(format!("collector-test-block-{}", std::process::id()));
        std::fs::File::create(&file).unwrap().set_len(bytes).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            skip(&format!(
                "losetup cannot attach a loop device: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            let _ = std::fs::remove_file(&file);
            return None;
        }
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Some(LoopDevice { device, file })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.device]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn direct_block_io_of_a_target_counts_its_bytes_exactly() {
    let _serial = one_at_a_time();
    if !privileged() || !have_tool("losetup", "mount") {
        return;
    }
    const B: u64 = 4 << 20;
    let Some(disk) = LoopDevice::create(16 << 20) else {
        return;
    };
    let mut w = Workload::spawn();
    let calm = Workload::spawn();
    let c = Collector::start(&[
        "--pid",
        &format!("io={}", w.pid),
        "--pid",
        &format!("calm={}", calm.pid),
    ]);
    w.run(&format!("direct_io {} {B}", disk.device));
    let m = c.metrics();
    for op in ["write", "read"] {
        let labels = [("target", "io"), ("op", op)];
        let bytes = value(&m, "collector_block_io_bytes_total", &labels);
        let requests = value(&m, "collector_block_io_duration_seconds_count", &labels);
        println!("{op}: {bytes} bytes in {requests} requests, expected {B} bytes");
        assert_eq!(bytes, B as f64);
        // At most one request per 64 KiB the workload asked for; at least one per 512 KiB
        // (the largest request a loop device takes is its queue's max_sectors_kb).
        assert!((8.0..=64.0).contains(&requests), "{requests} requests");
    }
    assert_eq!(m.sum("collector_block_io_bytes_total", &[("target", "calm")]), 0.0);
    drop(calm);
}

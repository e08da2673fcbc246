//! Syscall counts, errors and latency of target processes, end to end: the real collector
//! binary, real kernel, real workloads. Counts are asserted exactly.
use std::time::Duration;

use tests::{BpfObjects, Collector, PidMaxSet, Workload, collector_output, have_tool, pid_max, privileged};

const GETPPID: &str = "collector_syscalls_total";

fn target_pid(w: &Workload) -> String {
    format!("pid-{}", w.pid)
}

#[test]
fn getppid_calls_of_a_target_are_counted_exactly() {
    if !privileged() {
        return;
    }
    const N: u64 = 20_000;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &w.pid.to_string()]);
    w.run(&format!("getppid {N}"));
    let target = target_pid(&w);
    let got = c
        .metrics()
        .value(GETPPID, &[("target", &target), ("syscall", "getppid")]);
    println!("collector_syscalls_total{{target=\"{target}\",syscall=\"getppid\"}} = {got:?}, expected {N}");
    assert_eq!(got, Some(N as f64));
}

#[test]
fn failed_openat_calls_are_counted_by_errno() {
    if !privileged() {
        return;
    }
    const M: u64 = 5_000;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("files={}", w.pid)]);
    w.run(&format!("openat_missing {M}"));
    let m = c.metrics();
    let errors = m.value(
        "collector_syscall_errors_total",
        &[("target", "files"), ("syscall", "openat"), ("errno", "ENOENT")],
    );
    let calls = m.value(GETPPID, &[("target", "files"), ("syscall", "openat")]);
    println!("openat ENOENT errors = {errors:?}, openat calls = {calls:?}, expected {M}");
    assert_eq!(errors, Some(M as f64));
    assert_eq!(calls, Some(M as f64));
}

#[test]
fn children_and_threads_of_a_target_are_counted_and_other_processes_are_not() {
    if !privileged() {
        return;
    }
    let mut target = Workload::spawn();
    let mut outsider = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", target.pid)]);
    outsider.run("getppid 7000");
    target.run("getppid 1000");
    target.run("fork_getppid 3000"); // a child forked after start
    target.run("thread_getppid 2000"); // a thread started after start
    let m = c.metrics();
    let app = m.value(GETPPID, &[("target", "app"), ("syscall", "getppid")]);
    let all: f64 = m.sum(GETPPID, &[("syscall", "getppid")]);
    println!("getppid under app = {app:?} (expected 6000); over all targets = {all} (outsider made 7000)");
    assert_eq!(app, Some(6000.0));
    assert_eq!(all, 6000.0, "the outsider's calls must not be counted");
    outsider.finish();
}

#[test]
fn descendants_existing_at_start_are_followed() {
    if !privileged() {
        return;
    }
    // A shell whose child (the workload) exists before the collector starts. The child
    // must outlive the collector's start-up, which takes 20-30 s in the kernel matrix's
    // guests; it is killed at the end.
    let mut parent = std::process::Command::new("sh")
        .args(["-c", "sleep 600 & wait"])
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", parent.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&children).unwrap_or_default().trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "sh never forked its child");
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = Collector::start(&["--pid", &format!("tree={}", parent.id())]);
    let (_, health) = c.health();
    let processes = &health["checks"]["targets"]["targets"]["tree"]["processes"];
    println!("processes of target tree at start: {processes}");
    assert_eq!(processes, 2, "the shell and its sleep child: {health}");
    for child in std::fs::read_to_string(&children)
        .unwrap_or_default()
        .split_whitespace()
    {
        unsafe { libc::kill(child.parse().unwrap(), libc::SIGKILL) };
    }
    let _ = parent.kill();
    let _ = parent.wait();
}

#[test]
fn a_50ms_nanosleep_lands_in_the_bucket_holding_50ms_and_counts_match_totals() {
    if !privileged() {
        return;
    }
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &w.pid.to_string()]);
    w.run("nanosleep 50");
    w.run("getppid 100");
    let target = target_pid(&w);
    let m = c.metrics();
    let bucket = |le: &str| {
        m.value(
            "collector_syscall_duration_seconds_bucket",
            &[("target", &target), ("syscall", "nanosleep"), ("le", le)],
        )
    };
    // 2^25 ns = 0.033554432 s < 0.05 s <= 2^26 ns = 0.067108864 s
    let (below, holding) = (bucket("0.033554432"), bucket("0.067108864"));
    println!("nanosleep buckets: le=0.033554432 -> {below:?}, le=0.067108864 -> {holding:?}");
    assert_eq!(below, Some(0.0));
    assert_eq!(holding, Some(1.0));
    let sum = m
        .value(
            "collector_syscall_duration_seconds_sum",
            &[("target", &target), ("syscall", "nanosleep")],
        )
        .unwrap();
    assert!((0.05..0.067108864).contains(&sum), "nanosleep sum {sum}");

    let totals = m.select(GETPPID, &[("target", &target)]);
    assert!(totals.len() >= 3, "expected several syscalls: {totals:?}");
    for total in totals {
        let syscall = &total.labels["syscall"];
        let labels = [("target", target.as_str()), ("syscall", syscall.as_str())];
        let count = m.value("collector_syscall_duration_seconds_count", &labels);
        let inf = m.value(
            "collector_syscall_duration_seconds_bucket",
            &[labels[0], labels[1], ("le", "+Inf")],
        );
        assert_eq!(
            count,
            Some(total.value),
            "{syscall}: histogram _count differs from collector_syscalls_total"
        );
        assert_eq!(
            inf,
            Some(total.value),
            "{syscall}: +Inf bucket differs from collector_syscalls_total"
        );
    }
}

#[test]
fn metrics_pass_promtool_check() {
    if !privileged() || !have_tool("promtool", "prometheus") {
        return;
    }
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &w.pid.to_string()]);
    w.run("openat_missing 10");
    w.run("nanosleep 1");
    // Prometheus asks for OpenMetrics and gets it; anyone else (curl, promtool) gets the
    // classic text format, which is what promtool checks.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, content_type, om) = tests::http_get_accept(&c.addr, "/metrics", Some(prometheus_accept)).unwrap();
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    let (status, content_type, text) = tests::http_get_accept(&c.addr, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(
        text.contains("collector_syscall_errors_total{"),
        "no error series to check:\n{text}"
    );
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool check metrics: exit {:?} {report}", out.status.code());
    assert!(out.status.success(), "promtool check metrics failed: {report}\n{text}");
    assert!(report.trim().is_empty(), "promtool reported problems: {report}");
}

#[test]
fn health_reports_probes_and_a_target_whose_processes_all_exited() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let pid = w.pid;
    let c = Collector::start(&["--pid", &format!("job={pid}")]);
    let (code, h) = c.health();
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].is_u64(), "{h}");
    for probe in [
        "sys_enter",
        "sys_exit",
        "sched_switch",
        "sched_process_fork",
        "sched_process_exec",
        "sched_process_exit",
    ] {
        assert_eq!(h["checks"]["probes"]["attached"][probe], true, "{probe}: {h}");
    }
    assert_eq!(h["checks"]["targets"]["targets"]["job"]["processes"], 1, "{h}");

    w.finish();
    let (code, h) = c.health();
    println!("after the target exited: HTTP {code} {h}");
    assert_eq!(code, 200, "a target that exited is not the agent's failure: {h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["checks"]["targets"]["status"], "warn");
    assert_eq!(h["checks"]["targets"]["targets"]["job"]["alive"], false);
    assert_eq!(h["checks"]["targets"]["targets"]["job"]["processes"], 0);
}

#[test]
fn sigterm_stops_within_2s_and_leaves_no_program_loaded() {
    if !privileged() || !have_tool("bpftool", "bpftool") {
        return;
    }
    let w = Workload::spawn();
    let mut c = Collector::start(&["--pid", &w.pid.to_string()]);
    let ours = tests::bpf_ids_held_by(c.pid(), "prog_id:");
    let (_, health) = c.health();
    let probes = health["checks"]["probes"]["attached"].as_object().unwrap().len();
    println!("programs held by the collector: {ours:?}, probes attached: {probes}");
    assert_eq!(ours.len(), probes, "one program per probe: {ours:?}");
    let status = c
        .terminate(Duration::from_secs(2))
        .expect("collector still running 2 s after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let exited = std::time::Instant::now();
    let held = BpfObjects {
        progs: ours,
        ..BpfObjects::default()
    };
    let left = held.still_loaded(Duration::from_secs(10)).progs;
    println!("programs gone {:?} after exit", exited.elapsed());
    assert!(left.is_empty(), "programs still loaded 10 s after exit: {left:?}");
}

#[test]
fn a_missing_pid_is_a_usage_error_with_one_line() {
    // pid_max is at most 2^22 on Linux, so this PID can never exist.
    let (code, stderr) = collector_output(&["--pid", "2147483646"]);
    println!("exit {code:?}: {stderr}");
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no process with PID 2147483646 is running"), "{stderr}");
}

#[test]
fn a_malformed_flag_is_a_usage_error_naming_it() {
    let (code, stderr) = collector_output(&["--pid", "web=abc"]);
    println!("exit {code:?}: {stderr}");
    assert_eq!(code, Some(2));
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: invalid value 'web=abc' for '--pid"),
        "{stderr}"
    );
    assert!(first.contains("'abc' is not a process id"), "{stderr}");
}

#[test]
fn without_privilege_the_collector_says_so_and_exits_1() {
    if !privileged() || !have_tool("setpriv", "util-linux") {
        return;
    }
    let bin = tests::collector_bin();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .args(["--pid", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("as nobody: exit {:?}: {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn an_event_sink_that_cannot_be_opened_is_a_usage_error_before_anything_loads() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let (code, stderr) = collector_output(&["--pid", &w.pid.to_string(), "--events", "/nonexistent-dir/events.jsonl"]);
    println!("exit {code:?}: {stderr}");
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot open the event sink /nonexistent-dir/events.jsonl"),
        "{stderr}"
    );
}

/// Debian's Prometheus server scrapes the collector (asking for OpenMetrics, as Prometheus
/// does) and its query API then returns the exact count.
#[test]
fn a_real_prometheus_server_scrapes_the_exact_count() {
    if !privileged() || !have_tool("prometheus", "prometheus") {
        return;
    }
    const N: u64 = 12_345;
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("scraped={}", w.pid)]);
    w.run(&format!("getppid {N}"));

    let prometheus = tests::Prometheus::start("exact", &c.addr, &[]);
    let value = prometheus
        .eventually(
            r#"collector_syscalls_total{target="scraped",syscall="getppid"}"#,
            Duration::from_secs(60),
        )
        .first()
        .map(|(_, v)| v.to_string());
    println!(
        "Prometheus says collector_syscalls_total{{target=\"scraped\",syscall=\"getppid\"}} = {value:?}, expected {N}"
    );
    assert_eq!(value.as_deref(), Some(N.to_string().as_str()));
}

/// A non-leader thread's execve returns in the thread that took over the leader's pid
/// (fs/exec.c de_thread), so its entry slot must move with it to be counted once.
#[test]
fn an_exec_from_a_non_leader_thread_is_counted_once() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("morph={}", w.pid)]);
    let code = w.run_to_exit("thread_exec");
    assert_eq!(code, Some(0), "/bin/true should have replaced the workload");
    let m = c.metrics();
    let execve = m.value(GETPPID, &[("target", "morph"), ("syscall", "execve")]);
    let count = m.value(
        "collector_syscall_duration_seconds_count",
        &[("target", "morph"), ("syscall", "execve")],
    );
    println!("execve calls counted: {execve:?} (histogram count {count:?})");
    assert_eq!(execve, Some(1.0));
    assert_eq!(count, Some(1.0));
}

/// Systemd raises pid_max to 2^22 on 64-bit hosts, and an operator may raise it while the
/// agent runs: a process or thread with a pid above the limit the agent started under is
/// followed and timed like any other (nothing in the kernel maps is indexed by pid).
#[test]
fn a_child_and_a_thread_with_pids_above_the_pid_max_at_start_are_followed() {
    if !privileged() {
        return;
    }
    const HIGH_PID: u32 = 4_000_000;
    // The kernel's default at the agent's start (a systemd host already has 4194304, under
    // which arrays sized at start covered these pids, and the test would prove nothing).
    let _default = PidMaxSet::to(32_768);
    let mut target = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("app={}", target.pid)]);
    let pid_max_at_start = pid_max();
    // Other tests run meanwhile: theirs may get high pids too, which is all the same to them.
    let _raised = PidMaxSet::to(4_194_304);
    // The next pid handed out follows this one (other tests may take some first).
    std::fs::write("/proc/sys/kernel/ns_last_pid", HIGH_PID.to_string()).unwrap();
    let child: u32 = target.run("fork_getppid 3000").parse().unwrap();
    let thread: u32 = target.run("thread_getppid 2000").parse().unwrap();
    println!("pid_max at start {pid_max_at_start}, child pid {child}, thread id {thread}");
    assert!(
        child > HIGH_PID && thread > HIGH_PID,
        "the pids were not above {HIGH_PID}"
    );
    let m = c.metrics();
    assert_eq!(
        m.value(GETPPID, &[("target", "app"), ("syscall", "getppid")]),
        Some(5000.0)
    );
    let errors: f64 = m.sum("collector_bpf_map_errors_total", &[]);
    assert_eq!(errors, 0.0, "no kernel map update may have failed");
}

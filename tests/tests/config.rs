//! The config file end to end: user metric definitions counted exactly on real processes and
//! connections, the built-ins as one file among others, flags over the file, live reload, the
//! series guard, and `check-config` on a table of bad files.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use tests::{
    BpfObjects, CgroupTree, Collector, Metrics, Workload, collector_bin, eventually, have_tool, http_post, privileged,
    serve_tcp, value,
};

/// A config file for one test, removed when dropped.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(test: &str, text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("collector-config-{test}-{}.toml", std::process::id()));
        fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn rewrite(&self, text: &str) {
        fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Every file here names a listen address of its own, which the `--listen` that `Collector`
/// adds overrides: were both used, clap would refuse the second; were the file's used, the
/// test would find nothing serving where it looks.
const FILE_LISTEN: &str = "listen = \"127.0.0.2:9\"\n";

fn sighup(c: &Collector) {
    assert!(
        Command::new("kill")
            .args(["-HUP", &c.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    value(m, "collector_config_reloads_total", &[("result", result)])
}

#[test]
fn user_definitions_count_exactly_what_they_define() {
    if !privileged() {
        return;
    }
    const N: usize = 7; // execs of /bin/true
    const K: usize = 30; // exits, codes i % 3
    const C: usize = 12; // connections
    const S: usize = 3000; // bytes sent on each
    let mut w = Workload::spawn();
    let config = ConfigFile::new(
        "user",
        &format!(
            r#"{FILE_LISTEN}poll_interval = "1s"
pid = ["app={pid}"]

[[metric]]
name = "user_execs_total"
kind = "counter"
event = "process.exec"
tags = ["target", "comm", "exe"]
keep = {{ comm = "tru*" }}

[[metric]]
name = "user_exits_code_2_total"
kind = "counter"
event = "process.exit"
keep = {{ exit_code = 2 }}

[[metric]]
name = "user_unsuccessful_exits_total"
kind = "counter"
event = "process.exit"
tags = ["outcome"]
drop = {{ outcome = ["success", {{ regex = "sig.*" }}] }}

[[metric]]
name = "user_connection_lifetime_seconds"
kind = "distribution"
event = "tcp.close"
measurement = "duration"
buckets = [0.001, 1, 60]
tags = ["peer_port"]

[[metric]]
name = "user_sent_kibibytes_total"
kind = "sum"
event = "tcp.close"
measurement = "bytes_sent"
unit = "kibibyte"

[[metric]]
name = "user_processes"
kind = "last_value"
event = "process.count"
measurement = "processes"
tags = ["target"]
"#,
            pid = w.pid
        ),
    );
    let c = Collector::start(&["--config", config.path()]);
    w.run(&format!("exec_true {N}"));
    w.run(&format!("spawn_exit {K}"));
    let (port, server) = serve_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), C, 10);
    w.run(&format!("tcp_connect 127.0.0.1 {port} {C} {S}"));
    server.join().unwrap();
    w.run("hold 3");
    let true_exe = fs::canonicalize("/bin/true").unwrap();
    let true_exe = true_exe.to_str().unwrap();
    let lifetimes = |m: &Metrics| {
        value(
            m,
            "user_connection_lifetime_seconds_count",
            &[("peer_port", &port.to_string())],
        )
    };
    eventually("every close and the held processes", Duration::from_secs(10), || {
        let m = c.metrics();
        lifetimes(&m) >= C as f64 && value(&m, "user_processes", &[("target", "app")]) == 4.0
    });
    let m = c.metrics();
    let execs = value(
        &m,
        "user_execs_total",
        &[("target", "app"), ("comm", "true"), ("exe", true_exe)],
    );
    println!("execs of {true_exe}: {execs}");
    assert_eq!(execs, N as f64);
    assert_eq!(
        m.sum("user_execs_total", &[]),
        N as f64,
        "only the kept execs: {:?}",
        m.select("user_execs_total", &[])
    );
    assert_eq!(value(&m, "user_exits_code_2_total", &[]), (K / 3) as f64);
    // The failures only (exit 1 and 2): the N execs and the hold exit 0 or live on.
    assert_eq!(m.sum("user_unsuccessful_exits_total", &[]), (2 * K / 3) as f64);
    assert_eq!(
        value(&m, "user_unsuccessful_exits_total", &[("outcome", "failure")]),
        (2 * K / 3) as f64
    );
    assert_eq!(lifetimes(&m), C as f64);
    assert_eq!(value(&m, "user_sent_kibibytes_total", &[]), (C * S) as f64 / 1024.0);
    // The built-ins are on by default, beside the user's.
    assert_eq!(
        value(&m, "collector_process_execs_total", &[("target", "app")]),
        N as f64
    );
    w.run("release");
}

#[test]
fn builtin_metrics_false_leaves_only_the_users_event_metrics() {
    if !privileged() {
        return;
    }
    let mut w = Workload::spawn();
    let config = ConfigFile::new(
        "nobuiltin",
        &format!(
            "{FILE_LISTEN}builtin_metrics = false\npid = [\"app={}\"]\n\n[[metric]]\nname = \"user_starts_total\"\nkind = \"counter\"\nevent = \"process.start\"\n",
            w.pid
        ),
    );
    let c = Collector::start(&["--config", config.path()]);
    w.run("exec_true 3");
    w.run("getppid 100");
    eventually("the starts", Duration::from_secs(10), || {
        c.metrics().value("user_starts_total", &[]) == Some(3.0)
    });
    let m = c.metrics();
    for builtin in [
        "collector_process_starts_total",
        "collector_process_exits_total",
        "collector_tcp_connections_opened_total",
    ] {
        assert!(m.select(builtin, &[]).is_empty(), "{builtin} is still served");
    }
    // Kernel aggregates are not event definitions: they stay.
    assert_eq!(
        value(
            &m,
            "collector_syscalls_total",
            &[("target", "app"), ("syscall", "getppid")]
        ),
        100.0
    );
}

#[test]
fn a_flag_on_the_command_line_overrides_the_file() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let other = Workload::spawn();
    let config = ConfigFile::new("override", &format!("{FILE_LISTEN}pid = [\"file={}\"]\n", w.pid));
    // The file's listen address and targets are replaced by the flags'.
    let c = Collector::start(&["--config", config.path(), "--pid", &format!("flag={}", other.pid)]);
    let m = c.metrics();
    assert_eq!(value(&m, "collector_targets", &[("kind", "pid")]), 1.0);
    assert_eq!(value(&m, "collector_processes", &[("target", "flag")]), 1.0);
    assert!(m.select("collector_processes", &[("target", "file")]).is_empty());
}

/// The definitions before the reload: one that stays, one that changes; after it, the
/// changed one tags by outcome and a third is added.
const KEPT_AND_CHANGED: &str = r#"
[[metric]]
name = "kept_execs_total"
kind = "counter"
event = "process.exec"
tags = ["target"]

[[metric]]
name = "changed_exits_total"
kind = "counter"
event = "process.exit"
"#;
const CHANGED_TAGS: &str = "tags = [\"outcome\"]\n";
const ADDED: &str = "\n[[metric]]\nname = \"added_starts_total\"\nkind = \"counter\"\nevent = \"process.start\"\n";

#[test]
fn a_reload_applies_new_definitions_keeps_unchanged_ones_and_rejects_a_bad_file() {
    if !privileged() {
        return;
    }
    let mut w = Workload::spawn();
    let head = format!("{FILE_LISTEN}pid = [\"app={}\"]\n", w.pid);
    let before = head + KEPT_AND_CHANGED;
    let config = ConfigFile::new("reload", &before);
    let c = Collector::start(&["--config", config.path(), "--web.enable-reload"]);
    w.run("exec_true 5");
    eventually("the first exits", Duration::from_secs(10), || {
        c.metrics().value("changed_exits_total", &[]) == Some(5.0)
    });
    assert_eq!(value(&c.metrics(), "collector_config_last_reload_successful", &[]), 1.0);

    config.rewrite(&(before.clone() + CHANGED_TAGS + ADDED));
    sighup(&c);
    eventually("the reload", Duration::from_secs(10), || {
        reloads(&c.metrics(), "success") == 1.0
    });
    w.run("exec_true 3");
    eventually("the exits after the reload", Duration::from_secs(10), || {
        c.metrics().value("changed_exits_total", &[("outcome", "success")]) == Some(3.0)
    });
    let m = c.metrics();
    assert_eq!(
        value(&m, "kept_execs_total", &[("target", "app")]),
        8.0,
        "kept its value across the reload"
    );
    assert_eq!(value(&m, "added_starts_total", &[]), 3.0);
    assert!(
        m.select("changed_exits_total", &[])
            .iter()
            .all(|s| s.labels.contains_key("outcome"))
    );

    // A bad file is rejected whole, over HTTP too, and the running definitions go on.
    config.rewrite(&(before + "\n[[metric]]\nname = \"bad\"\nkind = \"counter\"\nevent = \"process.nothing\"\n"));
    let (status, body) = http_post(&c.addr, "/-/reload").unwrap();
    println!("POST /-/reload: {status} {body}");
    assert_eq!(status, 500);
    assert!(body.contains("unknown event \"process.nothing\""), "{body}");
    w.run("exec_true 2");
    eventually("the execs after the rejected reload", Duration::from_secs(10), || {
        c.metrics().value("kept_execs_total", &[("target", "app")]) == Some(10.0)
    });
    let m = c.metrics();
    assert_eq!(reloads(&m, "failure"), 1.0);
    assert_eq!(value(&m, "collector_config_last_reload_successful", &[]), 0.0);
    assert_eq!(value(&m, "added_starts_total", &[]), 5.0);
}

/// getppid calls counted for `target`.
fn getppids(m: &Metrics, target: &str) -> Option<f64> {
    m.value(
        "collector_syscalls_total",
        &[("target", target), ("syscall", "getppid")],
    )
}

#[test]
fn a_reload_changes_the_targets_while_the_programs_stay_loaded() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("reload-targets") else {
        return;
    };
    let (mut a, mut b, mut c) = (Workload::spawn(), Workload::spawn(), Workload::spawn());
    // a runs in svc-a: when its PID target goes, it falls to the cgroup target there.
    tree.mkdir("svc-a");
    tree.move_in(a.pid, "svc-a");
    tree.mkdir("svc-c");
    tree.move_in(c.pid, "svc-c");
    // b has a child before the reload names it: it must be followed from the reload on.
    b.run("hold 1");
    let pattern = format!("{}/svc-*", tree.relative(""));
    let (svc_a, svc_c) = (tree.relative("svc-a"), tree.relative("svc-c"));
    let head = format!("{FILE_LISTEN}series_ttl = \"1h\"\n");
    let config = ConfigFile::new("reload-targets", &format!("{head}pid = [\"a={}\"]\n", a.pid));
    let collector = Collector::start(&["--config", config.path(), "--web.enable-reload"]);
    for w in [&mut a, &mut b, &mut c] {
        w.run("getppid 100");
    }
    assert_eq!(getppids(&collector.metrics(), "a"), Some(100.0));
    let programs = BpfObjects::held_by(collector.pid());

    // a goes, b comes with its child, the pattern brings svc-a and svc-c.
    config.rewrite(&format!(
        "{head}pid = [\"b={}\"]\ncgroup_pattern = [\"{pattern}\"]\n",
        b.pid
    ));
    let (status, body) = http_post(&collector.addr, "/-/reload").unwrap();
    println!("reload: {status} {body}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("targets 3 added, 1 removed"), "{body}");
    a.run("getppid 100");
    a.run("fork_getppid 50");
    b.run("getppid 200");
    b.run("fork_getppid 50");
    c.run("getppid 300");
    let m = collector.metrics();
    let series = |t: &str| getppids(&m, t);
    println!(
        "after the reload: a {:?}, svc-a {:?}, b {:?}, svc-c {:?}",
        series("a"),
        series(&svc_a),
        series("b"),
        series(&svc_c)
    );
    assert_eq!(
        series("a"),
        Some(100.0),
        "a is no target; its series stay until the TTL"
    );
    assert_eq!(
        series(&svc_a),
        Some(150.0),
        "a and its child, under the cgroup it runs in"
    );
    assert_eq!(series("b"), Some(250.0), "b and its child, from the reload on");
    assert_eq!(series(&svc_c), Some(300.0));
    assert_eq!(value(&m, "collector_targets", &[("kind", "pid")]), 1.0);
    assert_eq!(value(&m, "collector_targets", &[("kind", "cgroup")]), 2.0);
    let processes = |t: &str| m.value("collector_processes", &[("target", t)]);
    assert_eq!(processes("a"), Some(0.0), "a's process left its target");
    assert_eq!(processes(&svc_a), Some(1.0));
    assert_eq!(processes("b"), Some(2.0), "b and the child it held before the reload");
    assert_eq!(processes(&svc_c), Some(1.0));
    assert_eq!(
        BpfObjects::held_by(collector.pid()),
        programs,
        "the reload loaded or unloaded programs"
    );

    // A PID that runs nowhere is rejected with the start-up's message; nothing changes.
    config.rewrite(&format!("{head}pid = [\"b={}\", \"gone=999999999\"]\n", b.pid));
    let (status, body) = http_post(&collector.addr, "/-/reload").unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("no process with PID 999999999 is running"), "{body}");
    c.run("getppid 10");
    let m = collector.metrics();
    assert_eq!(
        getppids(&m, &svc_c),
        Some(310.0),
        "the rejected file's removal of svc-c applied"
    );
    assert_eq!(m.value("collector_config_last_reload_successful", &[]), Some(0.0));

    // The pattern goes: so do svc-a and svc-c, at once; b stays.
    config.rewrite(&format!("{head}pid = [\"b={}\"]\n", b.pid));
    let (status, body) = http_post(&collector.addr, "/-/reload").unwrap();
    assert!(
        status == 200 && body.contains("targets 0 added, 2 removed"),
        "{status} {body}"
    );
    for w in [&mut a, &mut b, &mut c] {
        w.run("getppid 10");
    }
    let m = collector.metrics();
    assert_eq!(getppids(&m, &svc_a), Some(150.0));
    assert_eq!(getppids(&m, &svc_c), Some(310.0));
    assert_eq!(getppids(&m, "b"), Some(260.0));
    assert_eq!(value(&m, "collector_targets", &[("kind", "cgroup")]), 0.0);
    assert_eq!(m.value("collector_processes", &[("target", &svc_c)]), Some(0.0));
    assert_eq!(reloads(&m, "success"), 2.0);
    assert_eq!(reloads(&m, "failure"), 1.0);
    b.run("release");
}

#[test]
fn reload_over_http_is_refused_unless_enabled() {
    if !privileged() {
        return;
    }
    let w = Workload::spawn();
    let c = Collector::start(&["--pid", &w.pid.to_string()]);
    let (status, body) = http_post(&c.addr, "/-/reload").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--web.enable-reload"), "{body}");
}

#[test]
fn a_definition_holds_at_its_max_series_and_counts_the_overflow() {
    if !privileged() {
        return;
    }
    const LIMIT: usize = 5;
    const K: usize = 12;
    let mut w = Workload::spawn();
    let config = ConfigFile::new(
        "maxseries",
        &format!(
            "{FILE_LISTEN}pid = [\"app={}\"]\n\n[[metric]]\nname = \"starts_by_pid_total\"\nkind = \"counter\"\nevent = \"process.start\"\ntags = [\"pid\"]\nmax_series = {LIMIT}\n",
            w.pid
        ),
    );
    let c = Collector::start(&["--config", config.path()]);
    w.run(&format!("spawn_exit {K}"));
    let overflow = |m: &Metrics| {
        value(
            m,
            "collector_metric_series_overflow_total",
            &[("metric", "starts_by_pid_total")],
        )
    };
    eventually("every start", Duration::from_secs(10), || {
        let m = c.metrics();
        m.sum("starts_by_pid_total", &[]) + overflow(&m) == K as f64
    });
    let m = c.metrics();
    assert_eq!(m.select("starts_by_pid_total", &[]).len(), LIMIT);
    assert_eq!(overflow(&m), (K - LIMIT) as f64);
    assert_eq!(
        value(&m, "collector_process_starts_total", &[("target", "app")]),
        K as f64,
        "the built-in is not limited by it"
    );
}

/// Each bad file, the place of its (first) problem, and what the message says.
const BAD_FILES: &[(&str, &str, &str)] = &[
    ("listen = \n", "1:10", "string values must be quoted"),
    // Each value good, not together: as the flags would be at start.
    (
        "listen = \"127.0.0.1:9999\"\nhttp_route = [\"/a\", \"/b\", \"/a\"]\n",
        "2:1",
        "--http-route /a is given twice",
    ),
    (
        "target_labels = [\"namespace\", \"pod\", \"namespace\"]\n",
        "1:1",
        "--target-labels names namespace twice",
    ),
    ("bogus = 1\n", "1:1", "unknown key \"bogus\""),
    (
        "listen = \"nowhere\"\n",
        "1:10",
        "invalid value 'nowhere' for '--listen",
    ),
    ("max_targets = 0\n", "1:15", "from 1 to 1024"),
    ("pid = [1, \"x\"]\n", "1:11", "'x' is not a process id"),
    ("listen = [\"127.0.0.1:1\"]\n", "1:10", "takes one value, not an array"),
    ("builtin_metrics = \"no\"\n", "1:19", "builtin_metrics is true or false"),
    ("otlp_endpoint = \"127.0.0.1:4318\"\n", "1:17", "not a URL"),
    ("otlp_protocol = \"http/json\"\n", "1:17", "http/json is not supported"),
    ("otlp_logs = \"yes\"\n", "1:13", "otlp_logs is true or false"),
    (
        "\n[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\ncolour = 1\n",
        "6:1",
        "unknown field `colour`",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exek\"\n",
        "4:9",
        "unknown event \"process.exek\"",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"histogram\"\nevent = \"process.exit\"\n",
        "3:8",
        "unknown kind \"histogram\"",
    ),
    (
        "[[metric]]\nname = \"a\"\nkind = \"counter\"\nevent = \"process.exit\"\n",
        "2:8",
        "must end in _total",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"last_value\"\nevent = \"process.exit\"\nmeasurement = \"duration\"\n",
        "2:8",
        "only counters and sums end in _total",
    ),
    (
        "[[metric]]\nname = \"a-b_total\"\nkind = \"counter\"\nevent = \"process.exit\"\n",
        "2:8",
        "is not a Prometheus metric name",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"sum\"\nevent = \"process.exit\"\nmeasurement = \"bytes\"\n",
        "5:15",
        "has no measurement \"bytes\"",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\ntags = [\"peer_port\"]\n",
        "5:9",
        "carries metadata \"peer_port\"",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\ntags = [\"pid.x\"]\n",
        "5:9",
        "is not a label name",
    ),
    (
        "[[metric]]\nname = \"a\"\nkind = \"distribution\"\nevent = \"tcp.close\"\nmeasurement = \"duration\"\nbuckets = [1, 0.5]\n",
        "6:11",
        "increasing order",
    ),
    (
        "[[metric]]\nname = \"a\"\nkind = \"distribution\"\nevent = \"tcp.close\"\nmeasurement = \"duration\"\nunit = \"byte\"\n",
        "6:8",
        "in seconds",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\nkeep = { comm = { regex = \"(\" } }\n",
        "5:17",
        "is not a regular expression",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\nkeep = { comm = \"[a\" }\n",
        "5:17",
        "is not a glob",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\nmax_series = 0\n",
        "5:14",
        "max_series must be from 1",
    ),
    (
        "[[metric]]\nname = \"collector_process_exits_total\"\nkind = \"counter\"\nevent = \"process.exit\"\n",
        "2:8",
        "is defined twice",
    ),
    (
        "[[metric]]\nname = \"collector_syscalls_total\"\nkind = \"counter\"\nevent = \"process.exit\"\n",
        "2:8",
        "serves already",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = \"process.exit\"\nmeasurement = \"duration\"\n",
        "5:15",
        "takes no measurement",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = [\"process.exit\", \"tcp.clos\"]\n",
        "4:26",
        "unknown event \"tcp.clos\"",
    ),
    (
        "[[metric]]\nname = \"a_total\"\nkind = \"counter\"\nevent = [\"process.exit\", \"process.exit\"]\n",
        "4:26",
        "is listed twice",
    ),
    (
        "[[metric]]\nname = \"a_bytes\"\nkind = \"distribution\"\nevent = \"tcp.close\"\nmeasurement = \"bytes_sent\"\n",
        "3:8",
        "needs buckets",
    ),
    (
        "[[metric]]\nname = \"x\"\nkind = \"distribution\"\nevent = \"tcp.close\"\nmeasurement = \"duration\"\n\n[[metric]]\nname = \"x_count\"\nkind = \"last_value\"\nevent = \"tcp.close\"\nmeasurement = \"duration\"\n",
        "8:8",
        "is defined twice",
    ),
    (
        "cgroup_pattern = [\"a/{b,c}.service\"]\n",
        "1:19",
        "which --cgroup-pattern splits values on",
    ),
];

/// Runs `collector check-config`; with `strace_out`, as the unprivileged user nobody under
/// strace, which writes every bpf() call made there.
fn check_config(path: &str, strace_out: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = match strace_out {
        Some(out) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-e", "trace=bpf", "-o", out]);
            c.args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
            c.arg(collector_bin());
            c
        }
        None => Command::new(collector_bin()),
    };
    let out = command.args(["check-config", path]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_places_every_problem_and_loads_nothing() {
    for (i, (text, place, message)) in BAD_FILES.iter().enumerate() {
        let file = ConfigFile::new(&format!("bad{i}"), text);
        let (code, _, stderr) = check_config(file.path(), None);
        let want = format!("{}:{place}: ", file.path());
        let line = stderr.lines().next().unwrap_or_default();
        assert_eq!(code, Some(2), "{text:?}: {stderr}");
        assert!(
            line.starts_with(&want) && line.contains(message),
            "{text:?}: want {want}...{message}, got:\n{stderr}"
        );
    }
    println!("{} bad files, each placed and explained", BAD_FILES.len());

    // Every problem of a file, not only the first, in file order.
    let file = ConfigFile::new(
        "bad-all",
        "max_targets = 0\n\n[[metric]]\nname = \"a\"\nkind = \"counter\"\nevent = \"process.exek\"\n",
    );
    let (code, _, stderr) = check_config(file.path(), None);
    assert_eq!(code, Some(2));
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].contains(":1:15: ") && lines[1].contains(":4:8: ") && lines[2].contains(":6:9: "),
        "{stderr}"
    );

    // A good file: exit 0 without privileges, what it found, and not one bpf() call.
    let good = ConfigFile::new(
        "good",
        "listen = \"127.0.0.1:9999\"\ncgroup_pattern = [\"system.slice/*.service\"]\n\n[[metric]]\nname = \"execs_total\"\nkind = \"counter\"\nevent = [\"process.exec\"]\ntags = [\"comm\"]\n",
    );
    if !(have_tool("strace", "strace") && have_tool("setpriv", "util-linux")) {
        return;
    }
    let trace = std::env::temp_dir().join(format!("collector-check-strace-{}", std::process::id()));
    let (code, stdout, stderr) = check_config(good.path(), Some(trace.to_str().unwrap()));
    let calls = fs::read_to_string(&trace).unwrap();
    let _ = fs::remove_file(&trace);
    println!("{stdout}{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("ok: 2 setting(s) (cgroup_pattern, listen), 1 metric definition(s)"),
        "{stdout}"
    );
    let bpf_calls: Vec<_> = calls.lines().filter(|l| l.contains("bpf(")).collect();
    assert!(bpf_calls.is_empty(), "check-config called bpf(): {bpf_calls:?}");
}

#[test]
fn the_example_config_is_valid_and_shows_every_setting() {
    use clap::CommandFactory as _;
    let example = tests::repo_path("examples/collector.toml");
    let (code, stdout, stderr) = check_config(example.to_str().unwrap(), None);
    assert_eq!(code, Some(0), "{stderr}");
    let cmd = collector::cli::Cli::command();
    let flags = cmd
        .get_arguments()
        .filter_map(clap::Arg::get_long)
        .filter(|l| !["config", "help", "version"].contains(l));
    for key in flags.map(|l| l.replace(['-', '.'], "_")) {
        assert!(
            stdout.contains(&format!(" {key},"))
                || stdout.contains(&format!("({key},"))
                || stdout.contains(&format!(" {key})")),
            "the example does not set {key}: {stdout}"
        );
    }
}

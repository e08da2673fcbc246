//! cgroup v2 targets, end to end: each test makes its own cgroup tree under the real v2
//! hierarchy, moves real workloads in and out by writing `cgroup.procs`, and counts exactly
//! what the collector reports for `--cgroup` and `--cgroup-pattern` targets. The tree is
//! removed however the test ends (`tests::CgroupTree`).
use std::{
    net::{Ipv4Addr, TcpListener, UdpSocket},
    os::unix::fs::FileExt as _,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    CgroupTree, Collector, Metrics, Workload, cgroup2_mount, collector_output, eventually, http_get, map_entries,
    privileged, serve_tcp, sink_events, sink_path, skip, value,
};

fn getppids(m: &Metrics, target: &str) -> f64 {
    value(
        m,
        "collector_syscalls_total",
        &[("target", target), ("syscall", "getppid")],
    )
}

/// getppid counted over every target.
fn all_getppids(m: &Metrics) -> f64 {
    m.sum("collector_syscalls_total", &[("syscall", "getppid")])
}

fn targets_of_kind(m: &Metrics, kind: &str) -> f64 {
    value(m, "collector_targets", &[("kind", kind)])
}

fn starts(m: &Metrics, target: &str) -> f64 {
    value(m, "collector_process_starts_total", &[("target", target)])
}

fn exits(m: &Metrics, target: &str, outcome: &str) -> f64 {
    value(
        m,
        "collector_process_exits_total",
        &[("target", target), ("outcome", outcome)],
    )
}

/// Every sample labelled `target="<target>"`.
fn series_of(m: &Metrics, target: &str) -> usize {
    m.0.iter()
        .filter(|s| s.labels.get("target").map(String::as_str) == Some(target))
        .count()
}

/// The keys (cgroup ids) of the `CGROUP_TARGETS` map held by the collector `pid`.
fn cgroup_target_keys(pid: u32) -> Vec<u64> {
    map_entries(pid, "CGROUP_TARGETS")
        .into_iter()
        .map(|(key, _)| u64::from_le_bytes(key[..8].try_into().unwrap()))
        .collect()
}

#[test]
fn a_cgroup_target_counts_its_own_and_nested_processes_exactly_and_no_others() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("exact") else {
        return;
    };
    let app = tree.mkdir("app");
    tree.mkdir("app/nested");
    let app_cgroup = format!("/{}", tree.relative("app"));
    let sink = sink_path("cgroup-exact");
    // Dropped before the tree (declared after it), so the tree removes empty cgroups.
    let mut a = Workload::spawn();
    let mut b = Workload::spawn();
    let mut outsider = Workload::spawn();
    tree.move_in(a.pid, "app"); // before the collector starts
    tree.move_in(outsider.pid, ""); // the target's parent: not in the target
    let c = Collector::start(&[
        "--cgroup",
        &format!("app={}", app.display()),
        "--events",
        sink.to_str().unwrap(),
        "--poll-interval",
        "1s",
    ]);
    tree.move_in(b.pid, "app/nested"); // joins after the start, one level down

    a.run("getppid 1000");
    b.run("getppid 2000");
    outsider.run("getppid 3000");
    let m = c.metrics();
    let (app_calls, all_calls) = (getppids(&m, "app"), all_getppids(&m));
    println!("getppid under app {app_calls} (expected 3000), over all targets {all_calls}");
    assert_eq!(app_calls, 3000.0);
    assert_eq!(all_calls, 3000.0, "the outsider in the parent cgroup was counted");
    assert_eq!((targets_of_kind(&m, "cgroup"), targets_of_kind(&m, "pid")), (1.0, 0.0));

    // Children inherit the cgroup: counted from their first syscall.
    a.run("spawn_exit 30"); // exit codes i % 3: 10 success, 20 failure
    b.run("fork_getppid 500"); // one more start, exit 0
    eventually("every exit counted", Duration::from_secs(10), || {
        let m = c.metrics();
        exits(&m, "app", "success") + exits(&m, "app", "failure") >= 31.0
    });
    let m = c.metrics();
    let (started, success, failure, signal) = (
        starts(&m, "app"),
        exits(&m, "app", "success"),
        exits(&m, "app", "failure"),
        exits(&m, "app", "signal"),
    );
    println!("starts {started}, exits success {success} failure {failure} signal {signal}");
    assert_eq!(started, 31.0);
    assert_eq!((success, failure, signal), (11.0, 20.0, 0.0));
    assert_eq!(getppids(&m, "app"), 3500.0, "the forked child's calls");
    eventually("two live processes polled", Duration::from_secs(5), || {
        c.metrics().value("collector_processes", &[("target", "app")]) == Some(2.0)
    });

    // A process that leaves stops counting, and so do its new children. Then one more child
    // of a, whose exit, once counted, says that every earlier event has been through.
    tree.move_out(b.pid);
    b.run("getppid 700");
    b.run("fork_getppid 10");
    a.run("spawn_exit 1");
    eventually("a's last child counted", Duration::from_secs(10), || {
        exits(&c.metrics(), "app", "success") >= 12.0
    });
    let m = c.metrics();
    println!(
        "after b left: getppid {}, starts {} (expected 3500, 32)",
        getppids(&m, "app"),
        starts(&m, "app")
    );
    assert_eq!(getppids(&m, "app"), 3500.0, "calls after leaving were counted");
    assert_eq!(starts(&m, "app"), 32.0, "a child forked after leaving was counted");
    let left = Instant::now();
    eventually("one live process polled", Duration::from_secs(5), || {
        c.metrics().value("collector_processes", &[("target", "app")]) == Some(1.0)
    });
    println!("process gauge back to 1 {:?} after b left", left.elapsed());

    // Sockets.
    const C: usize = 10;
    const S: usize = 2000;
    const R: usize = 500;
    let (port, server) = serve_tcp(Ipv4Addr::LOCALHOST.into(), C, R);
    let received = a.run(&format!("tcp_connect 127.0.0.1 {port} {C} {S}"));
    assert_eq!(received, (C * R).to_string());
    assert_eq!(server.join().unwrap(), vec![S; C]);
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.run(&format!(
        "udp_send 127.0.0.1 {} 20 100",
        receiver.local_addr().unwrap().port()
    ));
    eventually("every tcp.close in the sink", Duration::from_secs(10), || {
        sink_events(&sink).iter().filter(|e| e["event"] == "tcp.close").count() >= C
    });
    let m = c.metrics();
    let bytes = |direction: &str, protocol: &str| {
        value(
            &m,
            &format!("collector_socket_{direction}_bytes_total"),
            &[("target", "app"), ("family", "inet"), ("protocol", protocol)],
        )
    };
    let opened = |direction: &str| {
        value(
            &m,
            "collector_tcp_connections_opened_total",
            &[("target", "app"), ("direction", direction)],
        )
    };
    let (out, inbound, sent, recv, udp) = (
        opened("outbound"),
        opened("inbound"),
        bytes("sent", "tcp"),
        bytes("received", "tcp"),
        bytes("sent", "udp"),
    );
    println!(
        "tcp opened outbound {out} inbound {inbound}, sent {sent} (expected {}), received {recv} (expected {}), udp sent {udp} (expected 2000)",
        C * S,
        C * R
    );
    assert_eq!((out, inbound), (C as f64, 0.0));
    assert_eq!(sent, (C * S) as f64);
    assert_eq!(recv, (C * R) as f64);
    assert_eq!(udp, 2000.0);

    // Events carry the target cgroup's path.
    let events = sink_events(&sink);
    let of_app: Vec<&Value> = events.iter().filter(|e| e["metadata"]["target"] == "app").collect();
    let count = |name: &str| of_app.iter().filter(|e| e["event"] == name).count();
    println!(
        "sink: {} events of app: {} process.start, {} process.exit, {} tcp.connect, {} tcp.close",
        of_app.len(),
        count("process.start"),
        count("process.exit"),
        count("tcp.connect"),
        count("tcp.close")
    );
    assert_eq!(
        (count("process.start"), count("tcp.connect"), count("tcp.close")),
        (32, C, C)
    );
    // Each event names the cgroup of its own process: app, or app/nested for b's.
    let nested_cgroup = format!("{app_cgroup}/nested");
    let wrong: Vec<String> = of_app
        .iter()
        .filter(|e| {
            let of_b = e["metadata"]["pid"] == b.pid || e["metadata"]["ppid"] == b.pid;
            e["metadata"]["cgroup"]
                != if of_b {
                    nested_cgroup.as_str()
                } else {
                    app_cgroup.as_str()
                }
        })
        .map(|e| {
            format!(
                "{} pid={} cgroup={}",
                e["event"], e["metadata"]["pid"], e["metadata"]["cgroup"]
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "events without the cgroup of their process: {wrong:?}"
    );
    let nested_child = of_app
        .iter()
        .find(|e| e["event"] == "process.start" && e["metadata"]["ppid"] == b.pid)
        .expect("the start of b's child");
    println!("b's child (in app/nested): {nested_child}");
    assert_eq!(nested_child["metadata"]["cgroup"], nested_cgroup.as_str());
    drop(c);
    let _ = std::fs::remove_file(&sink);
}

#[test]
fn a_pid_target_inside_a_cgroup_target_is_counted_under_the_pid_target() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("pid-first") else {
        return;
    };
    let app = tree.mkdir("app");
    let mut solo = Workload::spawn();
    let mut other = Workload::spawn();
    tree.move_in(solo.pid, "app");
    tree.move_in(other.pid, "app");
    let c = Collector::start(&[
        "--cgroup",
        &format!("app={}", app.display()),
        "--pid",
        &format!("solo={}", solo.pid),
    ]);
    solo.run("getppid 1234");
    solo.run("fork_getppid 100"); // a descendant of the PID target, in the cgroup too
    other.run("getppid 111");
    other.run("spawn_exit 1"); // after solo's child: once its exit is in, so is all before it
    eventually("both children's exits", Duration::from_secs(10), || {
        let m = c.metrics();
        exits(&m, "solo", "success") + exits(&m, "app", "success") >= 2.0
    });
    let m = c.metrics();
    let (solo_calls, app_calls) = (getppids(&m, "solo"), getppids(&m, "app"));
    let (solo_starts, app_starts) = (starts(&m, "solo"), starts(&m, "app"));
    println!(
        "getppid solo {solo_calls} (expected 1334), app {app_calls} (expected 111); starts solo {solo_starts}, app {app_starts} (expected 1, 1)"
    );
    assert_eq!(solo_calls, 1334.0);
    assert_eq!(app_calls, 111.0);
    assert_eq!((solo_starts, app_starts), (1.0, 1.0));
    assert_eq!((targets_of_kind(&m, "pid"), targets_of_kind(&m, "cgroup")), (1.0, 1.0));
}

#[test]
fn a_pattern_picks_up_a_matching_cgroup_created_after_the_start() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("pattern") else {
        return;
    };
    let pattern = format!("{}/svc-*", tree.root.display());
    let target = tree.relative("svc-a");
    tree.mkdir("web"); // does not match
    let mut w = Workload::spawn();
    let mut bystander = Workload::spawn();
    tree.move_in(bystander.pid, "web");
    let c = Collector::start(&[
        "--cgroup-pattern",
        &pattern,
        "--poll-interval",
        "1s",
        "--log-format",
        "json",
    ]);
    let (status, health) = c.health();
    println!("/health with nothing matching: {status} {health}");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["targets"]["status"], "warn");
    assert_eq!(targets_of_kind(&c.metrics(), "cgroup"), 0.0);

    tree.mkdir("svc-a");
    let created = Instant::now();
    tree.move_in(w.pid, "svc-a");
    eventually("the new cgroup a target", Duration::from_secs(5), || {
        targets_of_kind(&c.metrics(), "cgroup") == 1.0
    });
    println!("svc-a picked up {:?} after mkdir", created.elapsed());
    w.run("getppid 4321");
    bystander.run("getppid 100");
    let m = c.metrics();
    let (calls, all) = (getppids(&m, &target), all_getppids(&m));
    println!("getppid under {target} {calls} (expected 4321), over all targets {all}");
    assert_eq!(calls, 4321.0);
    assert_eq!(all, 4321.0, "the non-matching cgroup web was counted");
    println!("/health with svc-a: {:?}", c.health());

    let log = c.stop_and_read_log();
    let warnings: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "WARN")
        .collect();
    println!("warnings: {warnings:?}");
    assert!(
        warnings.iter().any(|w| w.to_string().contains("svc-*")),
        "no warning about the pattern that matched nothing:\n{log}"
    );
}

#[test]
fn a_removed_cgroup_leaves_the_kernel_map_at_once_and_its_series_after_the_ttl() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("removal") else {
        return;
    };
    let pattern = format!("{}/svc-*", tree.root.display());
    let target = tree.relative("svc-a");
    tree.mkdir("svc-a");
    let id = tree.id("svc-a");
    let mut w = Workload::spawn();
    tree.move_in(w.pid, "svc-a");
    let c = Collector::start(&["--cgroup-pattern", &pattern, "--series-ttl", "2s"]);
    eventually("svc-a a target", Duration::from_secs(5), || {
        targets_of_kind(&c.metrics(), "cgroup") == 1.0
    });
    w.run("getppid 500");
    assert_eq!(getppids(&c.metrics(), &target), 500.0);
    let keys = cgroup_target_keys(c.pid());
    println!("CGROUP_TARGETS keys {keys:?}, svc-a is {id}");
    assert!(keys.contains(&id), "svc-a ({id}) not in CGROUP_TARGETS {keys:?}");

    tree.move_out(w.pid);
    tree.rmdir("svc-a");
    let removed = Instant::now();
    let m = c.metrics();
    let present = series_of(&m, &target);
    println!(
        "right after rmdir: {present} series of {target}, getppid {}",
        getppids(&m, &target)
    );
    assert!(present > 0, "the series went with the cgroup, before the ttl");
    assert_eq!(getppids(&m, &target), 500.0);

    eventually("svc-a out of CGROUP_TARGETS", Duration::from_secs(2), || {
        !cgroup_target_keys(c.pid()).contains(&id)
    });
    println!("svc-a left CGROUP_TARGETS {:?} after rmdir", removed.elapsed());
    eventually("the series of svc-a gone", Duration::from_secs(4), || {
        series_of(&c.metrics(), &target) == 0
    });
    println!("series of svc-a gone {:?} after rmdir (ttl 2 s)", removed.elapsed());
    println!(
        "collector_targets{{kind=\"cgroup\"}} now {}",
        targets_of_kind(&c.metrics(), "cgroup")
    );
}

/// Each (target, syscall) pair holds a `SYSCALL_STATS` slot; an expired target gives its
/// slots back zeroed, and its id's row of cached slots goes with them. With room for 3 pairs,
/// six targets one after another, each 3 pairs (getppid, the response's write, and the read
/// that waited for the command, which returns under the id it entered with, reused), need
/// slots given back to be counted at all, a reused slot to start from zero for getppid to
/// count exactly 500, and the row cleared for the next target to be shown under its own key.
#[test]
fn expired_targets_give_their_syscall_slots_back_to_the_next_targets() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("series") else {
        return;
    };
    let pattern = format!("{}/svc-*", tree.root.display());
    let mut w = Workload::spawn();
    let c = Collector::start(&[
        "--cgroup-pattern",
        &pattern,
        "--series-ttl",
        "1s",
        "--max-syscall-series",
        "3",
    ]);
    for round in 0..6 {
        let name = format!("svc-{round}");
        let target = tree.relative(&name);
        tree.mkdir(&name);
        eventually(&format!("{name} a target"), Duration::from_secs(5), || {
            targets_of_kind(&c.metrics(), "cgroup") == 1.0
        });
        tree.move_in(w.pid, &name);
        w.run("getppid 500");
        let m = c.metrics();
        let errors = value(&m, "collector_bpf_map_errors_total", &[("map", "SYSCALL_STATS")]);
        println!(
            "{name}: getppid {}, SYSCALL_STATS errors {errors}",
            getppids(&m, &target)
        );
        assert_eq!(getppids(&m, &target), 500.0, "{name}");
        assert_eq!(errors, 0.0, "{name}: no free SYSCALL_STATS slot");
        tree.move_out(w.pid);
        tree.rmdir(&name);
        eventually(&format!("the series of {name} gone"), Duration::from_secs(5), || {
            series_of(&c.metrics(), &target) == 0 && map_entries(c.pid(), "SYSCALL_SERIES").is_empty()
        });
    }
}

#[test]
fn a_cgroup_removed_and_made_anew_at_its_path_stays_the_same_target() {
    if !privileged() {
        return;
    }
    // A service restart: its cgroup is removed and made again (a new cgroup id), and its
    // processes come back into it. `--cgroup` names a path, so the target follows it, and its
    // counts go on in one set of series.
    let Some(tree) = CgroupTree::for_test("restart") else {
        return;
    };
    tree.mkdir("svc");
    let mut first = Workload::spawn();
    tree.move_in(first.pid, "svc");
    let c = Collector::start(&["--cgroup", &format!("web={}", tree.path("svc").display())]);
    first.run("getppid 700");
    assert_eq!(getppids(&c.metrics(), "web"), 700.0);
    tree.move_out(first.pid);
    let old_id = tree.id("svc");
    tree.rmdir("svc");
    eventually("the old cgroup out of CGROUP_TARGETS", Duration::from_secs(3), || {
        !cgroup_target_keys(c.pid()).contains(&old_id)
    });
    tree.mkdir("svc");
    let new_id = tree.id("svc");
    eventually("the new cgroup in CGROUP_TARGETS", Duration::from_secs(3), || {
        cgroup_target_keys(c.pid()).contains(&new_id)
    });
    let mut second = Workload::spawn();
    tree.move_in(second.pid, "svc");
    second.run("getppid 300");
    first.run("getppid 50"); // no longer in the cgroup
    let m = c.metrics();
    let (calls, targets) = (getppids(&m, "web"), targets_of_kind(&m, "cgroup"));
    let web_series = m
        .select("collector_syscalls_total", &[("target", "web"), ("syscall", "getppid")])
        .len();
    println!(
        "ids {old_id} -> {new_id}; getppid under web {calls} (expected 1000) in {web_series} series; cgroup targets {targets}"
    );
    if calls != 1000.0 {
        // What the kernel and the agent held for the second process, to tell which side lost it.
        let target_of = map_entries(c.pid(), "TARGET_OF")
            .into_iter()
            .find(|(key, _)| key[..4] == second.pid.to_le_bytes());
        println!(
            "second {}: TARGET_OF {target_of:?}, cgroup {:?}, CGROUP_TARGETS {:?}\ncollector log:\n{}",
            second.pid,
            std::fs::read_to_string(format!("/proc/{}/cgroup", second.pid)),
            cgroup_target_keys(c.pid()),
            c.stop_and_read_log()
        );
        panic!("getppid under web {calls}, expected 1000");
    }
    assert_eq!(web_series, 1, "one series per target and syscall");
    assert_eq!(targets, 1.0);
}

#[test]
fn a_process_moved_in_while_it_runs_on_another_cpu_is_counted_from_its_next_syscall() {
    if !privileged() {
        return;
    }
    // A cgroup move runs in the task that writes cgroup.procs. The moved process may be
    // running on another CPU and go through no context switch for a long time (a syscall
    // loop, a read that finds its data waiting): its syscalls count from the next one, not
    // from its next context switch. Here it spins on CPU 1 through the move, then calls.
    // A context switch of the spinner in between would hide a stale per-CPU cache, so
    // rounds are repeated until one had none: it makes no blocking call until it has
    // printed `done`, so a switch in between is a preemption, which /proc counts.
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        return skip("needs 2 CPUs: the move and the moved process run on different ones");
    }
    let Some(tree) = CgroupTree::for_test("running") else {
        return;
    };
    tree.mkdir("svc");
    let c = Collector::start(&["--cgroup", &format!("svc={}", tree.path("svc").display())]);
    let flag_path = std::env::temp_dir().join(format!("collector-spin-{}", std::process::id()));
    let flag = std::fs::File::create(&flag_path).unwrap();
    let mut w = Workload::spawn();
    w.run("pin 1");
    pin_this_thread(0);
    let mut rounds = Vec::new();
    while rounds.len() < 50 && !rounds.iter().any(|&(_, clean)| clean) {
        flag.write_all_at(&[0], 0).unwrap(); // never a truncating write: the page is mapped
        let before = getppids(&c.metrics(), "svc");
        // Before the command: a preemption after its last syscall and before the move
        // would clear the cache as well.
        let preempted = preemptions(w.pid);
        w.start(&format!("spin_getppid {} 500", flag_path.display()), "spinning");
        tree.move_in(w.pid, "svc");
        flag.write_all_at(&[1], 0).unwrap();
        w.wait_done();
        let clean = preemptions(w.pid) == preempted;
        rounds.push((getppids(&c.metrics(), "svc") - before, clean));
        tree.move_out(w.pid);
    }
    let _ = std::fs::remove_file(&flag_path);
    println!("getppid under svc per round (expected 500), and whether the spinner was never preempted: {rounds:?}");
    assert!(rounds.iter().all(|&(calls, _)| calls == 500.0), "{rounds:?}");
    if !rounds.iter().any(|&(_, clean)| clean) {
        println!("note: the spinner was preempted in every round, so a stale cache could not have shown");
    }
}

/// Times the main thread of process `pid` was switched out while it could run.
fn preemptions(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:")?.trim().parse().ok())
        .unwrap()
}

/// Runs the calling thread on `cpu` only.
fn pin_this_thread(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "cannot pin to CPU {cpu}"
        );
    }
}

#[test]
fn a_cgroup_that_is_not_a_v2_directory_is_a_usage_error() {
    if !privileged() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        return skip("no cgroup v2 hierarchy mounted");
    };
    let missing = mount.join(format!("collector-test-missing-{}", std::process::id()));
    for (path, needle) in [
        ("/tmp".to_owned(), "is not in the cgroup v2 hierarchy"),
        (mount.join("cgroup.procs").display().to_string(), "is not a directory"),
        (missing.display().to_string(), "does not exist"),
    ] {
        // A port of its own, to see that nothing serves on it afterwards.
        let listen = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let (code, stderr) = collector_output(&["--cgroup", &path, "--listen", &listen]);
        println!("--cgroup {path}: exit {code:?}, stderr {stderr:?}");
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(http_get(&listen, "/health").is_none(), "something serves on {listen}");
    }
}

#[test]
fn beyond_max_targets_matching_cgroups_are_rejected_and_counted() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("max-targets") else {
        return;
    };
    let pattern = format!("{}/svc-*", tree.root.display());
    tree.mkdir("svc-a");
    tree.mkdir("svc-b");
    let c = Collector::start(&["--cgroup-pattern", &pattern, "--max-targets", "1"]);
    let counts = || {
        let m = c.metrics();
        (
            targets_of_kind(&m, "cgroup"),
            value(&m, "collector_targets_rejected_total", &[]),
        )
    };
    eventually("one target, one rejected", Duration::from_secs(5), || {
        counts() == (1.0, 1.0)
    });
    std::thread::sleep(Duration::from_secs(2)); // rescans must not count the same cgroup again
    let (targets, rejected) = counts();
    let (_, health) = c.health();
    println!(
        "--max-targets 1, 2 matching: {targets} target(s) {:?}, {rejected} rejected",
        health["checks"]["targets"]["targets"]
            .as_object()
            .map(|t| t.keys().collect::<Vec<_>>())
    );
    assert_eq!((targets, rejected), (1.0, 1.0));
}

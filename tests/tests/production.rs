//! Running in production: the capabilities the agent keeps once its probes are attached (and
//! that it still counts exactly and follows new cgroups without the others), and its refusal
//! to start without the ones it needs.
use std::{collections::BTreeMap, time::Duration};

use tests::{CgroupTree, Collector, Workload, eventually, have_tool, privileged, value};

/// CAP_SYS_PTRACE's bit in the capability sets (include/uapi/linux/capability.h).
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// Each thread's capability sets, by thread id: (effective, permitted, bounding).
fn thread_caps(pid: u32) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (field("CapEff:"), field("CapPrm:"), field("CapBnd:")),
        );
    }
    out
}

fn dropped_to(keep: Option<&str>, expected: u64) {
    let cgroups = CgroupTree::for_test(&format!("caps-{}", keep.unwrap_or("none")));
    let mut w = Workload::spawn();
    let mut args = vec!["--pid".to_owned(), format!("app={}", w.pid)];
    if let Some(tree) = &cgroups {
        args.extend(["--cgroup-pattern".to_owned(), format!("{}/svc-*", tree.relative(""))]);
    }
    if let Some(keep) = keep {
        args.extend(["--keep-capabilities".to_owned(), keep.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Collector::start(&args);
    let threads = thread_caps(c.pid());
    println!("--keep-capabilities {keep:?}: {} threads: {threads:?}", threads.len());
    assert!(threads.len() > 3, "the runtime and the agent's threads are there");
    for (tid, sets) in &threads {
        assert_eq!(*sets, (expected, expected, expected), "thread {tid}");
    }
    // Without the rest it still counts exactly, reads its maps, and follows a new cgroup.
    w.run("getppid 10000");
    assert_eq!(
        value(
            &c.metrics(),
            "collector_syscalls_total",
            &[("target", "app"), ("syscall", "getppid")]
        ),
        10_000.0
    );
    if let Some(tree) = &cgroups {
        tree.mkdir("svc-new");
        let name = tree.relative("svc-new");
        eventually("the new cgroup a target", Duration::from_secs(10), || {
            c.health().1["checks"]["targets"]["targets"][&name].is_object()
        });
    }
}

#[test]
fn after_the_load_every_thread_holds_no_capability_and_counts_stay_exact() {
    if privileged() {
        dropped_to(None, 0);
    }
}

#[test]
fn a_kept_capability_is_all_each_thread_holds() {
    if privileged() {
        dropped_to(Some("cap_sys_ptrace"), CAP_SYS_PTRACE);
    }
}

/// Without CAP_BPF (nor CAP_SYS_ADMIN, which would do instead) the agent says which is
/// missing in one line, exits 1, and never asked the kernel to load anything.
#[test]
fn without_cap_bpf_it_refuses_in_one_line_before_loading_anything() {
    if !privileged() || !have_tool("capsh", "libcap2-bin") || !have_tool("strace", "strace") {
        return;
    }
    let w = Workload::spawn();
    let trace = std::env::temp_dir().join(format!("collector-capsh-{}.strace", std::process::id()));
    let command = format!(
        "strace -f -e trace=bpf -o {} {} --pid {}",
        trace.display(),
        tests::collector_bin().display(),
        w.pid
    );
    let out = std::process::Command::new("capsh")
        .args(["--drop=cap_bpf,cap_sys_admin", "--", "-c", &command])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("without CAP_BPF: exit {:?}: {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: missing CAP_BPF:"), "{stderr}");
    let calls = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    assert!(!calls.contains("bpf("), "it called bpf(): {calls}");
}

/// As an unprivileged user with exactly CAP_BPF and CAP_PERFMON (ambient, as systemd's
/// AmbientCapabilities= or a container's capabilities give them), the agent loads, observes
/// a root process and counts it exactly.
#[test]
fn with_exactly_cap_bpf_and_cap_perfmon_as_nobody_it_counts_exactly() {
    if !privileged() || !have_tool("setpriv", "util-linux") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    // A copy nobody may run, wherever the build is.
    let bin = std::env::temp_dir().join(format!("collector-nobody-{}", std::process::id()));
    std::fs::copy(tests::collector_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = Workload::spawn();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut agent = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"])
        .arg(&bin)
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the agent serving", Duration::from_secs(60), || {
        tests::http_get(&addr, "/health").is_some()
    });
    w.run("getppid 5000");
    let (_, body) = tests::http_get(&addr, "/metrics").unwrap();
    let count = value(
        &tests::Metrics::parse(&body),
        "collector_syscalls_total",
        &[("target", "app"), ("syscall", "getppid")],
    );
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    let _ = std::fs::remove_file(&bin);
    println!("as nobody with CAP_BPF and CAP_PERFMON: {count} getppid counted, then {status}");
    assert_eq!(count, 5000.0);
    assert!(status.success());
}

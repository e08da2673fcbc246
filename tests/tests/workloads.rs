//! Workload names end to end: a kubepods-shaped cgroup tree under the real v2 mount, the
//! kubelet's log directories in a temporary `--host-root`, processes in the containers'
//! cgroups; and the agent in a cgroup namespace of its own, as in a pod.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use tests::{CgroupTree, Collector, Workload, eventually, privileged, sink_events, sink_path, value};

const UID_A: &str = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const UID_B: &str = "0b1c2d3e-4f50-4162-8374-85a6b7c8d9e0";

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// The kubelet's log directories for the test's pods, under a directory of its own.
struct HostRoot(PathBuf);

impl HostRoot {
    fn new(test: &str) -> HostRoot {
        let root = std::env::temp_dir().join(format!("collector-hostroot-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var/log/containers")).unwrap();
        HostRoot(root)
    }

    /// What the kubelet writes when it starts a pod, and each of its containers.
    fn pod(&self, namespace: &str, pod: &str, uid: &str) {
        std::fs::create_dir_all(self.0.join(format!("var/log/pods/{namespace}_{pod}_{uid}"))).unwrap();
    }

    fn container(&self, namespace: &str, pod: &str, container: &str, id: &str) {
        let link = self
            .0
            .join(format!("var/log/containers/{pod}_{namespace}_{container}-{id}.log"));
        let target = self
            .0
            .join(format!("var/log/pods/{namespace}_{pod}_x/{container}/0.log"));
        std::os::unix::fs::symlink(target, link).unwrap();
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn label<'a>(sample: &'a tests::Sample, name: &str) -> Option<&'a str> {
    sample.labels.get(name).map(String::as_str)
}

fn getppid(metrics: &tests::Metrics, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("syscall", "getppid")];
    all.extend_from_slice(labels);
    value(metrics, "collector_syscalls_total", &all)
}

/// Two pods with the systemd driver's names: "shop/cart-1" (Burstable) with containers app
/// and sidecar, and "web/front-2" (Guaranteed) whose container's log link comes only after
/// its cgroup. Each container is named namespace/pod/container, its series carry those
/// labels and count its processes exactly, its events carry them; the late one is renamed
/// once its link is there, its counts kept; a removed pod's series expire.
#[test]
fn kubepods_containers_are_named_by_the_kubelets_files_and_counted_exactly() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("workloads") else {
        return;
    };
    let host = HostRoot::new("kubepods");
    let pod_a = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        UID_A.replace('-', "_")
    );
    let pod_b = format!("kubepods.slice/kubepods-pod{}.slice", UID_B.replace('-', "_"));
    let app = format!("{pod_a}/cri-containerd-{}.scope", id(1));
    let sidecar = format!("{pod_a}/cri-containerd-{}.scope", id(2));
    let front = format!("{pod_b}/cri-containerd-{}.scope", id(3));
    for dir in [&app, &sidecar, &front] {
        tree.mkdir(dir);
    }
    host.pod("shop", "cart-1", UID_A);
    host.container("shop", "cart-1", "app", &id(1));
    host.container("shop", "cart-1", "sidecar", &id(2));
    host.pod("web", "front-2", UID_B);
    let (mut in_app, mut in_sidecar, mut in_front) = (Workload::spawn(), Workload::spawn(), Workload::spawn());
    tree.move_in(in_app.pid, &app);
    tree.move_in(in_sidecar.pid, &sidecar);
    tree.move_in(in_front.pid, &front);

    let events = sink_path("workloads");
    let pattern = format!("{}/kubepods.slice/**/cri-containerd-*.scope", tree.relative(""));
    let c = Collector::start(&[
        "--cgroup-pattern",
        &pattern,
        "--host-root",
        host.0.to_str().unwrap(),
        "--target-labels",
        "namespace,pod,container",
        "--series-ttl",
        "1s",
        "--events",
        events.to_str().unwrap(),
    ]);
    in_app.run("getppid 1000");
    in_sidecar.run("getppid 2000");
    in_front.run("getppid 3000");
    in_app.run("fork_getppid 10");
    let m = c.metrics();
    let labelled = |target: &str, namespace: &str, pod: &str, container: &str| {
        getppid(
            &m,
            &[
                ("target", target),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
            ],
        )
    };
    assert_eq!(labelled("shop/cart-1/app", "shop", "cart-1", "app"), 1010.0);
    assert_eq!(labelled("shop/cart-1/sidecar", "shop", "cart-1", "sidecar"), 2000.0);
    let unnamed = tree.relative(&front);
    assert_eq!(
        getppid(&m, &[("target", &unnamed)]),
        3000.0,
        "no log link yet: its path"
    );
    let info = |target: &str| {
        m.0.iter()
            .find(|s| s.name == "collector_target_info" && label(s, "target") == Some(target))
            .unwrap_or_else(|| panic!("no collector_target_info for {target}"))
            .clone()
    };
    let app_info = info("shop/cart-1/app");
    for (label, want) in [
        ("kind", "cgroup"),
        ("namespace", "shop"),
        ("pod", "cart-1"),
        ("container", "app"),
        ("container_id", id(1).as_str()),
        ("pod_uid", UID_A),
        ("qos", "burstable"),
        ("unit", &format!("cri-containerd-{}.scope", id(1))),
        ("cgroup", &format!("/{}", tree.relative(&app))),
    ] {
        assert_eq!(self::label(&app_info, label), Some(want), "{label}");
    }
    let front_info = info(&unnamed);
    assert_eq!(
        (label(&front_info, "qos"), label(&front_info, "pod")),
        (Some("guaranteed"), Some("front-2"))
    );
    assert_eq!(label(&front_info, "container"), None);

    // The kubelet writes the link: renamed at the next lookup (the directory changed), its
    // counts kept.
    host.container("web", "front-2", "nginx", &id(3));
    eventually("front renamed", Duration::from_secs(10), || {
        getppid(&c.metrics(), &[("target", "web/front-2/nginx"), ("container", "nginx")]) == 3000.0
    });
    in_front.run("getppid 500");
    let m = c.metrics();
    assert_eq!(getppid(&m, &[("target", "web/front-2/nginx")]), 3500.0);
    assert!(
        !m.0.iter().any(|s| label(s, "target") == Some(unnamed.as_str())),
        "the old name's series are gone"
    );

    // Events of the app container's processes carry its names.
    eventually("the forked child's exit in the sink", Duration::from_secs(10), || {
        sink_events(&events)
            .iter()
            .any(|e| e["event"] == "process.exit" && e["metadata"]["target"] == "shop/cart-1/app")
    });
    let exit = sink_events(&events)
        .into_iter()
        .find(|e| e["event"] == "process.exit" && e["metadata"]["target"] == "shop/cart-1/app")
        .unwrap();
    println!("{exit}");
    for (key, want) in [
        ("namespace", "shop"),
        ("pod", "cart-1"),
        ("container", "app"),
        ("qos", "burstable"),
    ] {
        assert_eq!(exit["metadata"][key], want, "{key}");
    }

    // Pod B removed: its target's series expire after --series-ttl.
    tree.move_out(in_front.pid);
    tree.rmdir(&front);
    tree.rmdir(&pod_b);
    eventually("web/front-2/nginx expired", Duration::from_secs(15), || {
        !c.metrics()
            .0
            .iter()
            .any(|s| label(s, "target") == Some("web/front-2/nginx"))
    });

    let _ = std::fs::remove_file(&events);
}

/// A container restarted whose new log link comes after its cgroup: the new container is
/// its path until then, then takes the name with counts of its own, while the one before
/// keeps its last counts as `<name>#<its cgroup id>` until `--series-ttl`.
#[test]
fn a_restarted_container_takes_its_name_over_and_the_one_before_keeps_its_counts() {
    if !privileged() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("restart") else {
        return;
    };
    let host = HostRoot::new("restart");
    let pod = format!("kubepods.slice/kubepods-pod{}.slice", UID_A.replace('-', "_"));
    let (before, after) = (
        format!("{pod}/cri-containerd-{}.scope", id(1)),
        format!("{pod}/cri-containerd-{}.scope", id(2)),
    );
    tree.mkdir(&before);
    host.pod("shop", "cart-1", UID_A);
    host.container("shop", "cart-1", "app", &id(1));
    let mut app = Workload::spawn();
    tree.move_in(app.pid, &before);
    let pattern = format!("{}/kubepods.slice/**/cri-containerd-*.scope", tree.relative(""));
    let c = Collector::start(&[
        "--cgroup-pattern",
        &pattern,
        "--host-root",
        host.0.to_str().unwrap(),
        "--series-ttl",
        "10m",
    ]);
    app.run("getppid 300");
    assert_eq!(getppid(&c.metrics(), &[("target", "shop/cart-1/app")]), 300.0);

    let before_id = std::fs::metadata(tree.root.join(&before)).unwrap().ino();
    tree.mkdir(&after);
    let unnamed = tree.relative(&after);
    eventually(
        "the new container's cgroup is a target",
        Duration::from_secs(10),
        || {
            c.metrics()
                .0
                .iter()
                .any(|s| s.name == "collector_target_info" && label(s, "target") == Some(unnamed.as_str()))
        },
    );
    tree.move_in(app.pid, &after);
    tree.rmdir(&before);
    app.run("getppid 200");
    assert_eq!(getppid(&c.metrics(), &[("target", &unnamed)]), 200.0);

    host.container("shop", "cart-1", "app", &id(2));
    let kept = format!("shop/cart-1/app#{before_id}");
    eventually("the new container named", Duration::from_secs(10), || {
        getppid(&c.metrics(), &[("target", "shop/cart-1/app")]) == 200.0
    });
    let m = c.metrics();
    assert_eq!(getppid(&m, &[("target", &kept)]), 300.0, "the one before, renamed");
    assert!(
        !m.0.iter().any(|s| label(s, "target") == Some(unnamed.as_str())),
        "the path's series are gone"
    );
}

/// As in a pod: the agent in a cgroup namespace of its own, rooted at its own cgroup, sees
/// the host's cgroups in /proc as `/../..`-relative paths. The processes already in a target
/// cgroup are still its members (counted exactly) and events name the host's cgroup.
#[test]
fn in_a_cgroup_namespace_of_its_own_the_agent_finds_the_processes_already_there() {
    if !privileged() || !tests::have_tool("unshare", "util-linux") {
        return;
    }
    let Some(tree) = CgroupTree::for_test("cgroupns") else {
        return;
    };
    tree.mkdir("svc-a");
    tree.mkdir("agent");
    let mut w = Workload::spawn();
    tree.move_in(w.pid, "svc-a");
    let addr = tests::free_port().to_string();
    let events = sink_path("cgroupns");
    let pattern = format!("{}/svc-*", tree.relative(""));
    let script = format!(
        "echo $$ > {procs} && exec unshare --cgroup {bin} --cgroup-pattern '{pattern}' --listen {addr} --events {events}",
        procs = tree.path("agent").join("cgroup.procs").display(),
        bin = tests::collector_bin().display(),
        events = events.display(),
    );
    let agent = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = tests::Stopped(agent);
    eventually("the agent serving", Duration::from_secs(60), || {
        tests::http_get(&addr, "/health").is_some()
    });
    let target = tree.relative("svc-a");
    let metrics = || tests::Metrics::parse(&tests::http_get(&addr, "/metrics").unwrap().1);
    assert_eq!(
        value(&metrics(), "collector_processes", &[("target", &target)]),
        1.0,
        "the process already in svc-a"
    );
    w.run("getppid 700");
    w.run("fork_getppid 1");
    assert_eq!(getppid(&metrics(), &[("target", &target)]), 701.0);
    eventually("the child's exit in the sink", Duration::from_secs(10), || {
        sink_events(&events).iter().any(|e| e["event"] == "process.exit")
    });
    let exit = sink_events(&events)
        .into_iter()
        .find(|e| e["event"] == "process.exit")
        .unwrap();
    assert_eq!(exit["metadata"]["cgroup"], format!("/{target}"), "{exit}");
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    assert!(agent.0.wait().unwrap().success());
    let _ = std::fs::remove_file(&events);
}

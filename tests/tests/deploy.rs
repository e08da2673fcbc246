//! The files that put the agent on a host or a cluster (`deploy/systemd/`,
//! `deploy/kubernetes/`): each checked by the tool its platform would check it with, and
//! against what the agent really needs: the capabilities it checks for, the calls it makes,
//! the mounts it reads, what it tells systemd, and the memory its maps take.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{Stopped, Workload, eventually, have_tool, http_get, privileged, repo_path, test_python, value};

const UNIT: &str = "deploy/systemd/collector.service";
const MANIFESTS: &str = "deploy/kubernetes";
const PODMONITOR: &str = "deploy/kubernetes/prometheus-operator/podmonitor.yaml";

/// The values of every `key=` line of the unit, in order, split at spaces.
fn unit_values(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_path(UNIT)).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// The unit with ExecStart on the binary under test: `systemd-analyze verify` wants the
/// program to exist, and it is installed nowhere here.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_path(UNIT)).unwrap();
    let exec = "ExecStart=/usr/local/bin/collector";
    assert!(
        text.contains(exec),
        "the unit runs what `cargo xtask install` puts in place"
    );
    let path = dir.join("collector.service");
    std::fs::write(
        &path,
        text.replace(exec, &format!("ExecStart={}", tests::collector_bin().display())),
    )
    .unwrap();
    path
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("collector-deploy-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The capabilities loading needs, as the agent names them (`CAP_BPF`).
fn load_capabilities() -> BTreeSet<String> {
    collector::kernel::capabilities::LOAD
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_exposure_stays_low() {
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let dir = temp_dir("verify");
    let unit = unit_for_verify(&dir);
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    println!("systemd-analyze verify: {} {said}", verify.status);
    assert!(verify.status.success(), "{said}");
    // It warns (exit 0) about unknown or misplaced settings: none may be left.
    assert_eq!(said.trim(), "", "systemd-analyze verify warned");
    // systemd's own exposure score, 0 (locked down) to 10; 2.0 and below is "OK".
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("");
    println!("systemd-analyze security: {overall}");
    assert!(security.status.success(), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit grants exactly what the agent checks for, raises the memlock limit that kernels
/// before 5.11 charge maps to, and is started the way its config says.
#[test]
fn the_systemd_unit_grants_what_the_agent_checks_for_and_its_config_is_valid() {
    let granted: BTreeSet<String> = unit_values("AmbientCapabilities").into_iter().collect();
    let bounding: BTreeSet<String> = unit_values("CapabilityBoundingSet").into_iter().collect();
    assert_eq!(granted, load_capabilities());
    assert_eq!(bounding, load_capabilities());
    assert_eq!(unit_values("LimitMEMLOCK"), ["infinity"]);
    assert_eq!(unit_values("Type"), ["notify"]);
    assert_eq!(unit_values("NoNewPrivileges"), ["yes"]);
    assert_eq!(
        unit_values("Environment"),
        ["COLLECTOR_CONFIG=/etc/collector/collector.toml"]
    );
    check_config(&std::fs::read_to_string(repo_path("deploy/systemd/collector.toml")).unwrap());
}

/// `collector check-config` accepts `text`.
fn check_config(text: &str) {
    let dir = temp_dir(&format!("check-{}", text.len()));
    let file = dir.join("collector.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(tests::collector_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!("check-config: {}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every system call the agent makes from start to stop (loading, serving, a scrape, a
/// reload, writing events, stopping) is one the unit's SystemCallFilter allows, as systemd
/// expands its groups.
#[test]
fn every_call_the_agent_makes_passes_the_units_system_call_filter() {
    if !privileged() || !have_tool("strace", "strace") || !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let allowed = allowed_syscalls();
    let dir = temp_dir("syscalls");
    let trace = dir.join("strace");
    let events = dir.join("events.jsonl");
    let mut w = Workload::spawn();
    let addr = tests::free_port().to_string();
    // The unit's own config, with a PID target (no systemd services here to match).
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-c", "-o"])
        .arg(&trace)
        .arg(tests::collector_bin())
        .args(["--config", repo_path("deploy/systemd/collector.toml").to_str().unwrap()])
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr, "--events"])
        .arg(&events)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut strace = Stopped(strace);
    eventually("the agent serving under strace", Duration::from_secs(120), || {
        http_get(&addr, "/health").is_some()
    });
    let agent = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.0.id())).unwrap();
    let agent: i32 = agent.trim().parse().unwrap();
    // strace detaches from the agent when killed: an assert failing below must not leave
    // it running.
    let mut guard = KillOnDrop(Some(agent));
    w.run("getppid 1000");
    let (_, body) = http_get(&addr, "/metrics").unwrap();
    let counted = value(
        &tests::Metrics::parse(&body),
        "collector_syscalls_total",
        &[("target", "app"), ("syscall", "getppid")],
    );
    assert_eq!(counted, 1000.0);
    unsafe { libc::kill(agent, libc::SIGHUP) };
    eventually("the reload done", Duration::from_secs(10), || {
        http_get(&addr, "/metrics")
            .is_some_and(|(_, body)| body.contains("collector_config_reloads_total{result=\"success\"} 1"))
    });
    unsafe { libc::kill(agent, libc::SIGTERM) };
    let status = strace.0.wait().unwrap();
    guard.0 = None; // exited: its PID may be another process's now
    assert!(status.success(), "the agent under strace: {status}");
    let summary = std::fs::read_to_string(&trace).unwrap();
    // `strace -c`: a table whose last column is the call; its header and total are not calls.
    let used: BTreeSet<&str> = summary
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|call| {
            call.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|call| !["syscall", "total"].contains(call))
        .collect();
    let refused: Vec<&&str> = used.iter().filter(|call| !allowed.contains(**call)).collect();
    println!(
        "{} calls made, {} allowed by the filter; refused: {refused:?}",
        used.len(),
        allowed.len()
    );
    assert!(
        used.contains("bpf") && used.contains("capset"),
        "the trace saw the load: {used:?}"
    );
    assert!(refused.is_empty(), "the unit's SystemCallFilter refuses {refused:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills a process (not a child of ours) when the test ends, unless it was seen exit.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The calls the unit's `SystemCallFilter=` lines allow: each group (`@system-service`)
/// expanded as `systemd-analyze syscall-filter` lists it; a `~` line takes its calls away.
fn allowed_syscalls() -> BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
        .unwrap();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            current = Some(item.to_owned());
            groups.insert(item.to_owned(), Vec::new());
        } else if let Some(group) = &current {
            groups.get_mut(group).unwrap().push(item.to_owned());
        }
    }
    fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        match groups.get(name) {
            Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
            None => {
                out.insert(name.to_owned());
            }
        }
    }
    let text = std::fs::read_to_string(repo_path(UNIT)).unwrap();
    let mut allowed = BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut calls = BTreeSet::new();
        list.split_whitespace()
            .for_each(|name| expand(name, &groups, &mut calls));
        if deny {
            allowed.retain(|c| !calls.contains(c));
        } else {
            allowed.extend(calls);
        }
    }
    assert!(
        allowed.contains("read"),
        "systemd-analyze syscall-filter expanded the groups"
    );
    allowed
}

/// For `Type=notify`: READY=1 comes once counting has begun (a workload run right after is
/// counted exactly), and STOPPING=1 on SIGTERM, before the agent exits 0.
#[test]
fn it_tells_systemd_when_it_is_ready_and_when_it_stops() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = Workload::spawn();
    let addr = tests::free_port().to_string();
    let agent = Command::new(tests::collector_bin())
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Stopped(agent);
    let receive = || {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification within 120 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = receive();
    println!("on start: {ready:?}");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=counting 1 target(s), serving on {addr}")),
        "{ready}"
    );
    w.run("getppid 2000");
    let (_, body) = http_get(&addr, "/metrics").unwrap();
    let counted = value(
        &tests::Metrics::parse(&body),
        "collector_syscalls_total",
        &[("target", "app"), ("syscall", "getppid")],
    );
    assert_eq!(counted, 2000.0);
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let stopping = receive();
    println!("on SIGTERM: {stopping:?}");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(agent.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each manifest as JSON, by file name.
fn manifests() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let files = std::fs::read_dir(repo_path(MANIFESTS))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain([repo_path(PODMONITOR)]);
    for path in files.filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.insert(path.file_name().unwrap().to_string_lossy().into_owned(), doc);
    }
    out
}

fn kind<'a>(manifests: &'a BTreeMap<String, Value>, kind: &str) -> &'a Value {
    manifests
        .values()
        .find(|m| m["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {MANIFESTS}"))
}

/// The oldest and newest Kubernetes releases whose API schemas `kubernetes-validate` holds.
const KUBERNETES: &[&str] = &["1.25.0", "1.37.0"];

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let Some(python) = test_python("kubernetes-validate") else {
        return;
    };
    let validate = |file: &Path, version: &str| {
        let out = Command::new(python.with_file_name("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .arg(file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let files: Vec<PathBuf> = std::fs::read_dir(repo_path(MANIFESTS))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert_eq!(
        files.len(),
        5,
        "namespace, service account, config map, daemon set, network policy: {files:?}"
    );
    for file in &files {
        for version in KUBERNETES {
            let (ok, said) = validate(file, version);
            print!("{said}");
            assert!(ok && said.contains("passed"), "{}: {said}", file.display());
        }
    }
    // The validator finds what is wrong: a misspelled field fails.
    let dir = temp_dir("k8s");
    let broken = dir.join("daemonset.yaml");
    let daemonset = std::fs::read_to_string(repo_path(&format!("{MANIFESTS}/30-daemonset.yaml"))).unwrap();
    std::fs::write(&broken, daemonset.replace("hostPID", "hostPid")).unwrap();
    let (ok, said) = validate(&broken, KUBERNETES[1]);
    assert!(!ok && said.contains("hostPid"), "a misspelled field passed: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the DaemonSet gives the agent is what it needs: the capabilities it checks for (and
/// CAP_SYS_RESOURCE for kernels before 5.11), not privileged; the cgroup tree and BTF it
/// reads, from the host; its config from the ConfigMap, valid; probes and scrapes on the port
/// it listens on; the PodMonitor selecting its pods.
#[test]
fn the_daemonset_gives_the_agent_what_it_needs() {
    let manifests = manifests();
    let daemonset = kind(&manifests, "DaemonSet");
    let pod = &daemonset["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true);
    let container = &spec["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: BTreeSet<String> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    let mut needed = load_capabilities();
    needed.insert("CAP_SYS_RESOURCE".to_owned());
    assert_eq!(added, needed);

    // Mounts: each host path at the same path, read-only.
    let host_path = |mount_path: &str| {
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        assert_eq!(mount["readOnly"], true, "{mount_path}");
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        volume.clone()
    };
    assert_eq!(host_path("/sys/fs/cgroup")["hostPath"]["path"], "/sys/fs/cgroup");
    let btf = collector::kernel::btf::VMLINUX_BTF;
    let btf_dir = Path::new(btf).parent().unwrap().to_str().unwrap();
    assert_eq!(host_path(btf_dir)["hostPath"]["path"], btf_dir);

    // The config: where --config says, from the ConfigMap, and valid.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let config_path = Path::new(config_arg);
    let config_volume = host_path(config_path.parent().unwrap().to_str().unwrap());
    let config_map = kind(&manifests, "ConfigMap");
    assert_eq!(config_volume["configMap"]["name"], config_map["metadata"]["name"]);
    let toml = config_map["data"][config_path.file_name().unwrap().to_str().unwrap()]
        .as_str()
        .unwrap();
    check_config(toml);

    // The kubelet's log directories, under the config's host_root, from the host.
    let settings: toml::Value = toml::from_str(toml).unwrap();
    let host_root = settings["host_root"].as_str().unwrap();
    for dir in ["/var/log/pods", "/var/log/containers"] {
        assert_eq!(host_path(&format!("{host_root}{dir}"))["hostPath"]["path"], dir);
    }

    // One port: the one the config listens on (on every address of the pod), probed,
    // annotated, scraped and let through.
    let port = &container["ports"][0];
    let listen: std::net::SocketAddr = settings["listen"].as_str().unwrap().parse().unwrap();
    assert!(listen.ip().is_unspecified(), "{listen}: the pod's IP must reach it");
    assert_eq!(port["containerPort"], listen.port());
    let policy = kind(&manifests, "NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"]);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], port["name"]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/health", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], port["name"], "{probe}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], listen.port().to_string());
    let monitor = kind(&manifests, "PodMonitor");
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], port["name"]);
    assert_eq!(monitor["metadata"]["namespace"], daemonset["metadata"]["namespace"]);
}

/// The DaemonSet's memory request and limit cover what the agent takes, measured here: its
/// RSS and its maps (charged to the pod's memory cgroup on 5.11+), whose per-CPU part is
/// scaled to the node sizes the manifest names (16 CPUs at rest for the request, 64 under
/// load for the limit).
#[test]
fn the_daemonsets_memory_covers_the_agent_and_its_maps() {
    if !privileged() || !have_tool("bpftool", "bpftool") {
        return;
    }
    /// BENCHMARKS.md C: the agent's RSS while serving 100,000 series.
    const LOADED_RSS_MIB: f64 = 44.0;
    let manifests = manifests();
    let daemonset = kind(&manifests, "DaemonSet");
    let resources = &daemonset["spec"]["template"]["spec"]["containers"][0]["resources"];
    let mib = |q: &Value| {
        let q = q.as_str().unwrap();
        q.strip_suffix("Mi")
            .unwrap_or_else(|| panic!("{q}: in Mi"))
            .parse::<f64>()
            .unwrap()
    };
    let (request, limit) = (
        mib(&resources["requests"]["memory"]),
        mib(&resources["limits"]["memory"]),
    );

    let w = Workload::spawn();
    let c = tests::Collector::start(&["--pid", &format!("app={}", w.pid)]);
    let (mut shared, mut per_cpu) = (0u64, 0u64);
    for id in tests::bpf_ids_held_by(c.pid(), "map_id:") {
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id.to_string()])
            .output()
            .unwrap();
        let map: Value = serde_json::from_slice(&out.stdout).unwrap();
        let bytes = map["bytes_memlock"].as_u64().unwrap();
        if map["type"].as_str().unwrap().contains("percpu") {
            per_cpu += bytes;
        } else {
            shared += bytes;
        }
    }
    // Per-CPU maps take one copy per possible CPU (kernel/bpf/: `num_possible_cpus()`).
    let possible = possible_cpus();
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let to_mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let (rss, shared, per_cpu) = (rss_kib / 1024.0, to_mib(shared), to_mib(per_cpu) / possible as f64);
    let at_rest_16 = rss + shared + 16.0 * per_cpu;
    let loaded_64 = LOADED_RSS_MIB + shared + 64.0 * per_cpu;
    println!(
        "RSS {rss:.1} MiB, maps {shared:.1} MiB + {per_cpu:.2} MiB per CPU ({possible} possible here): \
         16 CPUs at rest {at_rest_16:.1} MiB <= request {request} Mi; 64 CPUs loaded {loaded_64:.1} MiB <= limit {limit} Mi"
    );
    assert!(at_rest_16 <= request);
    assert!(loaded_64 <= limit);
}

/// How many CPUs the kernel may ever bring up (`/sys/devices/system/cpu/possible`: `0-3,8`).
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

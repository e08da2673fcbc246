//! The collector on other kernels than the host's: Debian's own kernel packages (the matrix
//! is `xtask/src/vm.rs`, which fetches them and sets `COLLECTOR_VM_KERNELS`), booted by
//! virtme-ng with this machine's root filesystem, where this same test executable runs its
//! guest half. Each guest must serve exact counts for every probe family its kernel has,
//! and say which it has not (README: "Kernels").
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{Collector, Workload, collector_bin, eventually, have_tool, privileged, serve_tcp, skip, value};

/// What each kernel of the matrix cannot give (the families `/health` must name as off).
const OFF: &[(&str, &[&str])] = &[
    // 5.10's struct cgroup has ancestor_ids, not ancestors; the byte tracepoints
    // sock_send_length and sock_recv_length came with 6.3.
    ("5.10", &["cgroups", "socket_bytes"]),
    ("6.1", &["socket_bytes"]),
    ("6.12", &[]),
];

/// A guest boots in about 6 s and runs its half in about 10 more under TCG here.
const GUEST_WITHIN: Duration = Duration::from_secs(300);

/// The guest half's name, as libtest's `--exact` filter wants it.
const GUEST: &str = "in_a_guest_every_family_the_kernel_has_counts_exactly";

#[test]
fn on_debian_kernels_every_family_they_have_counts_exactly_and_the_rest_is_said() {
    if !privileged() || !have_tool("qemu-system-x86_64", "qemu-system-x86") {
        return;
    }
    let (Some(kernels), Some(vng_bin)) = (
        std::env::var("COLLECTOR_VM_KERNELS").ok().filter(|k| !k.is_empty()),
        std::env::var_os("COLLECTOR_VNG_BIN").map(PathBuf::from),
    ) else {
        skip(
            "COLLECTOR_VM_KERNELS or COLLECTOR_VNG_BIN is not set: run through `cargo xtask test`, which fetches the kernels and virtme-ng",
        );
        return;
    };
    // virtme-ng runs its own helpers (virtme-run) from its venv.
    let path = std::env::join_paths(
        std::iter::once(vng_bin.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    for entry in kernels.split(',') {
        let (label, image) = entry.split_once('=').unwrap();
        let off = OFF
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap_or_else(|| panic!("kernel {label} is in the matrix but not in OFF: say what it cannot give"))
            .1;
        let out = std::env::temp_dir().join(format!("collector-vm-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let script = format!(
            "COLLECTOR_BIN={bin} COLLECTOR_EXPECT_OFF={off} {test} --ignored --exact {GUEST} --nocapture \
             > {out}/log 2>&1; echo $? > {out}/status",
            bin = collector_bin().display(),
            off = off.join(","),
            test = std::env::current_exe().unwrap().display(),
            out = out.display(),
        );
        // Without KVM: nested guests die with a KVM emulation failure on these machines.
        let mut vng = Command::new(vng_bin.join("vng"))
            .env("PATH", &path)
            .args(["--run", image, "--disable-kvm", "--cpus", "2", "--memory", "2G"])
            .arg(format!("--rwdir={}", out.display()))
            .args(["--exec", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A guest that hangs must not hang the suite.
        let deadline = Instant::now() + GUEST_WITHIN;
        while vng.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if vng.try_wait().unwrap().is_none() {
            let _ = vng.kill();
        }
        let vng = vng.wait_with_output().unwrap();
        let log = std::fs::read_to_string(out.join("log")).unwrap_or_default();
        let status = std::fs::read_to_string(out.join("status")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&out);
        // Indented: a libtest summary line of the guest's must not count as the host's.
        let guest: String = log.lines().map(|l| format!("  guest| {l}\n")).collect();
        println!("kernel {label}: guest test exited {}\n{guest}", status.trim());
        assert_eq!(
            status.trim(),
            "0",
            "kernel {label}: the guest half failed or did not finish within {GUEST_WITHIN:?} (vng: {}, {})",
            vng.status,
            String::from_utf8_lossy(&vng.stderr)
        );
        assert!(
            log.contains("1 passed"),
            "kernel {label}: the guest half did not run:\n{guest}"
        );
    }
}

/// The guest half: on whatever kernel it runs, syscalls and process lifecycle (the core),
/// and TCP connections, counted exactly; the families `COLLECTOR_EXPECT_OFF` names off, at
/// `/health` and in `collector_probe_attached`, and no other.
#[test]
#[ignore = "runs inside the guests of the kernel matrix"]
fn in_a_guest_every_family_the_kernel_has_counts_exactly() {
    let expect_off: Vec<String> = std::env::var("COLLECTOR_EXPECT_OFF")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    println!(
        "kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim()
    );
    let mut w = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("vm={}", w.pid)]);
    let (port, server) = serve_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 3, 100);
    w.run("getppid 1000");
    w.run("spawn_exit 6");
    // Processes whose 8 threads die together: each exit is reported once (before 6.16 every
    // dying thread may see its process's live count at 0; one must claim it).
    w.run("threads_exit 10");
    w.run(&format!("tcp_connect 127.0.0.1 {port} 3 200"));
    assert_eq!(server.join().unwrap(), [200, 200, 200]);
    let target = [("target", "vm")];
    eventually("the exits and connections counted", Duration::from_secs(20), || {
        let m = c.metrics();
        let exits: f64 = m.sum("collector_process_exits_total", &target);
        let opened = value(
            &m,
            "collector_tcp_connections_opened_total",
            &[("target", "vm"), ("direction", "outbound")],
        );
        exits >= 16.0 && opened == 3.0
    });
    // A late second report of an exit would come within the events' latency: give it time.
    std::thread::sleep(Duration::from_millis(500));
    let m = c.metrics();
    let exits: f64 = m.sum("collector_process_exits_total", &target);
    let starts = value(&m, "collector_process_starts_total", &target);
    println!("starts {starts}, exits {exits} (expected 16 each)");
    assert_eq!((starts, exits), (16.0, 16.0));
    let processes = value(&m, "collector_processes", &target);
    assert_eq!(processes, 1.0, "only the workload is left");
    let getppid = value(
        &m,
        "collector_syscalls_total",
        &[("target", "vm"), ("syscall", "getppid")],
    );
    println!("getppid {getppid} (expected 1000)");
    assert_eq!(getppid, 1000.0);

    let (code, health) = c.health();
    println!("health {health}");
    assert_eq!(code, 200);
    let off: Vec<String> = health["checks"]["probes"]["off"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(off, expect_off);
    let want = if expect_off.is_empty() { "healthy" } else { "degraded" };
    assert_eq!(health["status"], want);
    let attached = health["checks"]["probes"]["attached"].as_object().unwrap();
    let detached: Vec<&String> = attached
        .iter()
        .filter(|(_, a)| a.as_bool() == Some(false))
        .map(|(p, _)| p)
        .collect();
    println!("probes not attached: {detached:?}");
    for probe in &detached {
        assert_eq!(value(&m, "collector_probe_attached", &[("probe", probe.as_str())]), 0.0);
    }
    assert_eq!(detached.is_empty(), expect_off.is_empty());
    drop(w);
}

/// The README's kernel table says "no" exactly where [`OFF`] says a family is off.
#[test]
fn the_readme_kernel_table_agrees_with_the_matrix() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut rows = readme.lines().skip_while(|l| !l.starts_with("| kernel |"));
    let header: Vec<&str> = rows.next().unwrap().split('|').map(str::trim).collect();
    let rows: Vec<Vec<&str>> = rows
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    for (label, off) in OFF {
        let row = rows
            .iter()
            .find(|r| r[1].starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no README row for kernel {label}"));
        let said_off: Vec<&str> = header
            .iter()
            .zip(row)
            .filter(|(_, cell)| cell.starts_with("no"))
            .map(|(family, _)| *family)
            .collect();
        assert_eq!(said_off, *off, "kernel {label}");
    }
}

//! Installing what building and testing need, only when it is missing.
//!
//! The recipe and versions are the ones verified on these machines (Debian, stable Rust 1.95,
//! nightly 1.97 with LLVM 22): bpf-linker 0.13 linked against LLVM 22 (the LLVM of the nightly that builds the kernel
//! crate); it needs LLVM 22's development files, which Debian and Ubuntu package.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::run;

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];

/// Programs the end-to-end tests drive (bpftrace, syscount and taskset through `bench
/// --quick`), and the Debian packages that have them.
const TEST_PEERS: &[(&str, &str)] = &[
    ("promtool", "prometheus"),
    ("bpftool", "bpftool"),
    ("setpriv", "util-linux"),
    ("strace", "strace"),
    ("bpftrace", "bpftrace"),
    ("syscount", "libbpf-tools"),
    ("taskset", "util-linux"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
    // TLS clients and certificates of the web config's tests (production.rs), and capsh.
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("capsh", "libcap2-bin"),
    // The systemd unit's test (deploy.rs): verify, security, syscall-filter.
    ("systemd-analyze", "systemd"),
];

pub fn ensure_toolchain() -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    eprintln!("setup: toolchain ready ({} ms)", started.elapsed().as_millis());
    Ok(())
}

/// The peers `cargo xtask bench` compares against, what pins them to a CPU, and the server
/// and load of its section F.
const BENCH_PEERS: &[(&str, &str)] = &[
    ("bpftrace", "bpftrace"),
    ("syscount", "libbpf-tools"),
    ("taskset", "util-linux"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
];

pub fn ensure_test_peers() -> anyhow::Result<()> {
    ensure_tools(TEST_PEERS, "the end-to-end tests")
}

pub fn ensure_bench_peers() -> anyhow::Result<()> {
    ensure_tools(BENCH_PEERS, "the benchmark's peers")
}

pub(crate) fn ensure_tools(tools: &[(&str, &str)], for_what: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|&(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        apt_install(&missing, for_what)
    }
}

fn nightly_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_nightly_rust_src() -> anyhow::Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("setup: installing the nightly toolchain with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("cannot install the nightly Rust toolchain (needed for -Z build-std of the eBPF crate)")?;
    }
    let sysroot = nightly_sysroot().context("the nightly toolchain does not run")?;
    if !sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").exists() {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if let Some(path) = which("bpf-linker") {
        let out = Command::new(&path).arg("--version").output().ok();
        let version = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if version.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!(
            "setup: {} is {:?}, want {BPF_LINKER_VERSION}",
            path.display(),
            version.trim()
        );
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        apt_install(LLVM_PACKAGES, "bpf-linker (LLVM 22 development files)")?;
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!("{LLVM_PREFIX}/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path))
    .context("cannot build bpf-linker")
}

/// `requirement` pip-installed into the venv at `venv` (made if missing): Debian's python
/// refuses a system-wide pip install (PEP 668). A stamp file in the venv says it was done,
/// so a second run costs nothing.
pub(crate) fn ensure_pip(venv: &Path, requirement: &str, for_what: &str) -> anyhow::Result<()> {
    let stamp = venv.join(format!(".installed-{requirement}"));
    if stamp.is_file() {
        return Ok(());
    }
    if !venv.join("bin/pip").is_file() {
        let has_venv = Command::new("python3")
            .args(["-m", "venv", "--help"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_venv {
            apt_install(&["python3-venv"], for_what)?;
        }
        run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    }
    eprintln!(
        "setup: pip install {requirement} into {} (for {for_what})",
        venv.display()
    );
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", requirement]))
        .with_context(|| format!("cannot install {requirement} from PyPI"))?;
    std::fs::write(&stamp, "").with_context(|| format!("cannot write {}", stamp.display()))
}

/// Grafana's SDK, which builds (and so checks) the dashboards, pinned: an unpinned install
/// takes a Grafana 10.1 line whose version sorts higher (tests/tests/dashboards.rs); and
/// bcrypt, which makes the web config tests' password hashes (production.rs).
const TEST_PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("grafana-foundation-sdk==0.0.21", "the dashboards' test"),
    ("bcrypt==5.0.0", "the web config's tests"),
    ("kubernetes-validate==1.37.0", "the Kubernetes manifests' test"),
];

/// The Python with the tests' packages (`COLLECTOR_PYTHON`).
pub fn ensure_test_python(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/venv");
    for (requirement, for_what) in TEST_PYTHON_PACKAGES {
        ensure_pip(&venv, requirement, for_what)?;
    }
    Ok(venv.join("bin/python"))
}

/// Installs Debian/Ubuntu packages; elsewhere says what to install.
pub(crate) fn apt_install(packages: &[&str], for_what: &str) -> anyhow::Result<()> {
    if which("apt-get").is_none() {
        bail!(
            "{for_what} needs the packages {} (or your distribution's equivalents); install them and rerun",
            packages.join(" ")
        );
    }
    eprintln!("setup: apt-get install {} (for {for_what})", packages.join(" "));
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()))
    };
    apt(&["update", "-qq"]).context("apt-get update failed (are you root?)")?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args).with_context(|| format!("cannot install {}", packages.join(" ")))
}

/// PATH with ~/.cargo/bin (where `cargo install` puts bpf-linker) appended, for the cargo
/// runs that build the eBPF crate: aya-build finds bpf-linker on PATH.
pub fn path_with_cargo_bin() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")));
    std::env::join_paths(dirs).unwrap_or_default()
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&path_with_cargo_bin())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

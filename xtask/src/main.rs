//! The project's task runner: `cargo xtask <setup|build|run|test|bench|install>`.
//!
//! `setup` installs what a fresh machine lacks to build the kernel programs (nightly
//! rust-src, LLVM 22 development files, bpf-linker built against them). It checks before it
//! installs, so it is quick when everything is present; `build`, `run` and `test` run it first.
mod install;
mod setup;
mod vm;

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set up, build, run and test the collector")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain if anything is missing (idempotent).
    Setup,
    /// Build the release binary target/release/collector (eBPF object embedded).
    Build,
    /// Build, then run the collector with the given arguments (as root).
    /// Example: cargo xtask run -- --pid 1234
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (as root) and write target/bench/report.{md,json}.
    /// See BENCHMARKS.md for the method.
    Bench {
        /// Every arm briefly, to check that each works; the figures mean nothing.
        #[arg(long)]
        quick: bool,
        /// Another collector binary (e.g. built from an older commit) to bench beside this
        /// one, in arms (c') and (d') of the per-syscall sections.
        #[arg(long, value_name = "PATH")]
        baseline: Option<PathBuf>,
    },
    /// Build, then install the binary, the systemd unit and a first config (as root):
    /// /usr/local/bin/collector, /usr/local/lib/systemd/system/collector.service,
    /// /etc/collector/collector.toml and /etc/default/collector (those two only if absent).
    Install {
        /// Install under this directory instead of / (for a package or an image).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Run every test: unit tests and the privileged end-to-end tests (as root).
    Test {
        /// Only the kernel-matrix test, on this kernel of it (5.10, 6.1, 6.12): for chasing
        /// what one kernel refuses. Example: cargo xtask test --kernel 6.1 -- --nocapture
        #[arg(long, value_name = "LABEL")]
        kernel: Option<String>,
        /// Extra arguments for `cargo test` (a filter, `-- --nocapture`...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Setup => setup::ensure_toolchain(),
        Task::Build => build(&root).map(|_| ()),
        Task::Run { args } => {
            let bin = build(&root)?;
            let err = Command::new(&bin).args(args).exec();
            Err(err).with_context(|| format!("cannot run {}", bin.display()))
        }
        Task::Install { root: dest } => install::install(&root, &build(&root)?, &dest),
        Task::Test { kernel, args } => test(&root, kernel.as_deref(), &args),
        Task::Bench { quick, baseline } => bench(&root, quick, baseline.as_deref()),
    }
}

fn bench(root: &Path, quick: bool, baseline: Option<&Path>) -> anyhow::Result<()> {
    let bin = build(root)?;
    setup::ensure_bench_peers()?;
    run(cargo(root).args(["build", "--release", "--package", "tests", "--bins"]))?;
    let mut cmd = Command::new(root.join("target/release/bench"));
    cmd.current_dir(root)
        .args(["--out", "target/bench"])
        .env("COLLECTOR_BIN", &bin);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(baseline) = baseline {
        // The bench runs in the workspace root: make a relative path the caller's.
        cmd.arg("--baseline").arg(std::path::absolute(baseline)?);
    }
    run(&mut cmd)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("CARGO_MANIFEST_DIR is xtask/ inside the workspace, so it has a parent")
        .to_path_buf()
}

/// Builds the release binary and returns its path.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    run(cargo(root).args(["build", "--release", "--package", "collector"]))?;
    Ok(root.join("target/release/collector"))
}

fn test(root: &Path, kernel: Option<&str>, args: &[String]) -> anyhow::Result<()> {
    let bin = build(root)?;
    setup::ensure_test_peers()?;
    let python = setup::ensure_test_python(root)?;
    let kernels = vm::ensure_kernels(root, kernel)?;
    let suites = guest_suites(root)?;
    // With --kernel, the extra arguments are the test binary's (`-- --nocapture`).
    let only_kernels = kernel.map(|_| ["--test", "kernels", "--"]);
    // Release, so the tests reuse the eBPF object and dependencies `build` just compiled.
    let mut cmd = cargo(root);
    // --no-fail-fast: a failing test binary must not hide the results of the ones after it.
    cmd.args(["test", "--release", "--no-fail-fast"])
        .args(only_kernels.iter().flatten())
        .args(args)
        .env("COLLECTOR_BIN", &bin)
        .env("COLLECTOR_VM_KERNELS", kernels)
        .env("COLLECTOR_VNG_BIN", root.join("target/kernels/venv/bin"))
        .env("COLLECTOR_PYTHON", python)
        .env("COLLECTOR_VM_SUITES", suites)
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let mut totals = TestTotals::default();
    let stdout = child.stdout.take().context("cargo test started without its stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    // One closing line over every test binary: cargo's own last line is often a doc-test
    // run of zero tests.
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed - totals.skipped,
        totals.failed,
        totals.skipped
    );
    if !status.success() || totals.failed > 0 {
        bail!("tests failed");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The end-to-end suites every guest of the kernel matrix runs (`tests/tests/kernels.rs`),
/// built here so the guest finds them: their executables, comma-separated.
fn guest_suites(root: &Path) -> anyhow::Result<String> {
    let mut cmd = cargo(root);
    cmd.args([
        "test",
        "--release",
        "--package",
        "tests",
        "--no-run",
        "--message-format=json",
    ]);
    for suite in vm::GUEST_SUITES {
        cmd.args(["--test", suite]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo test --no-run")?;
    if !out.status.success() {
        bail!("cannot build the guest suites ({})", out.status);
    }
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line).context("cargo's JSON message")?;
        if let Some(exe) = message["executable"].as_str()
            && vm::GUEST_SUITES.contains(&message["target"]["name"].as_str().unwrap_or_default())
        {
            executables.push(exe.to_owned());
        }
    }
    if executables.len() != vm::GUEST_SUITES.len() {
        bail!("cargo built {executables:?}, not the suites {:?}", vm::GUEST_SUITES);
    }
    Ok(executables.join(","))
}

/// Test counts summed over libtest's `test result:` lines, and the `skipping:` lines tests
/// print (a skipped test passes in libtest's eyes, so it is subtracted from passed).
#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        if line.trim_start().starts_with("skipping:") {
            self.skipped += 1;
        }
        let Some(result) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| -> u64 {
            result
                .split(';')
                .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        self.passed += count("passed");
        self.failed += count("failed");
    }
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root).env("PATH", setup::path_with_cargo_bin());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn totals_sum_libtest_results_and_subtract_skips() {
        let mut t = TestTotals::default();
        for line in [
            "test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "skipping: not root",
            "test result: FAILED. 10 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.91s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            t.add(line);
        }
        assert_eq!((t.passed, t.failed, t.skipped), (27, 1, 1));
    }
}

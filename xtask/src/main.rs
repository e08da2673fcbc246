//! The project's task runner: `cargo xtask <setup|build|run|test>`.
//!
//! `setup` installs what a fresh machine lacks to build the kernel programs (nightly
//! rust-src, LLVM 22 development files, bpf-linker built against them). It checks before it
//! installs, so it is quick when everything is present; `build`, `run` and `test` run it first.
mod setup;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
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
    /// Run every test: unit tests and the privileged end-to-end tests (as root).
    Test {
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
        Task::Test { args } => test(&root, &args),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Builds the release binary and returns its path.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    run(cargo(root).args(["build", "--release", "--package", "collector"]))?;
    Ok(root.join("target/release/collector"))
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let bin = build(root)?;
    setup::ensure_test_peers()?;
    // Release, so the tests reuse the eBPF object and dependencies `build` just compiled.
    run(cargo(root)
        .args(["test", "--release"])
        .args(args)
        .env("COLLECTOR_BIN", &bin))
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

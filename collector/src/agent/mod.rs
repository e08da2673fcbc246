//! Start-up, serving and shutdown: the order things happen in, and what each failure says.
//! Wiring only: each step is owned by `kernel/`, `targets/`, `telemetry/` or `export/`.
//!
//! Two phases, so that the agent holds its privilege only while it needs it:
//! - `load` runs on the agent's only thread, before the async runtime exists: it checks the
//!   input and the host, loads the programs, fills their maps, attaches them and puts the
//!   processes that existed into their targets. Then the agent gives up the capabilities it
//!   no longer needs (`kernel/capabilities.rs`): capabilities belong to threads, and every
//!   thread made after this inherits the reduced sets.
//! - `serve` builds the runtime, starts the event handlers, the ring-buffer reader and the
//!   other threads, and serves; the kernel's ring buffer holds what happened meanwhile.
//!
//! Order matters for exactness (`load`):
//! 1. check the input and the host (nothing is loaded yet);
//! 2. load the object and put the named PIDs and cgroups into the kernel's maps;
//! 3. attach the follow families (fork/exec/exit, cgroup moves), so from here the kernel
//!    follows new children and moves;
//! 4. put the processes that existed before step 3 into their targets (descendants of the
//!    named PIDs, members of target cgroups); a process created or moved meanwhile is seen
//!    by one of the two;
//! 5. attach the measuring families (sockets, then syscalls). Everything counted happened
//!    after this point.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked from the first step (`signals.rs`): during `load` a
//! pending SIGINT or SIGTERM stops it at the next step boundary; `serve` takes them over, so
//! later they stop serving; either way the agent detaches everything and exits 0. SIGHUP
//! reloads the config file once serving (one that came during start-up reloads then).
mod failure;
mod load;
mod serve;
mod signals;
mod systemd;

pub use failure::Failure;

use std::time::Instant;

use self::failure::runtime;
use crate::{cli::Cli, config::FileConfig, kernel::capabilities};

/// Runs the agent until SIGINT or SIGTERM. Call it on the process's only thread.
pub fn run(cli: Cli, file: Option<FileConfig>) -> Result<(), Failure> {
    let started = Instant::now();
    let held =
        signals::Held::here().map_err(|e| runtime(anyhow::anyhow!("cannot block SIGINT, SIGTERM, SIGHUP: {e}")))?;
    let loaded = match load::load(&cli) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            tracing::info!("stopped during start-up; nothing is left loaded");
            return Ok(());
        }
        // A step that failed after a signal came: the user asked to stop, and nothing is
        // left loaded either way.
        Err(e) if signals::stop_requested() => {
            tracing::info!(error = ?e, "stopped during start-up; nothing is left loaded");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let kept = capabilities::drop_after_load(&cli.keep_capabilities, || loaded.map_access_works()).map_err(runtime)?;
    let mut kept: Vec<String> = kept.iter().map(ToString::to_string).collect();
    kept.sort();
    tracing::info!(capabilities = %kept.join(","), "capabilities kept after the load (--keep-capabilities)");
    let runtime_ = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| runtime(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    runtime_.block_on(serve::serve(cli, file, loaded, started, held))
}

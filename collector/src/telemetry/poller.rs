//! Periodic measurements as events, after `telemetry_poller`: every `--poll-interval`,
//! `process.count` for each target and `collector.vm` for the agent itself.
use std::{
    io,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use super::{bus::Telemetry, event::Event, kernel_events::describe, own_process};
use crate::{kernel::ring::RingFill, shutdown::Shutdown, targets::Targets};

/// Emits the poll events once.
pub fn poll(targets: &Targets, telemetry: &Telemetry, ring: &RingFill) {
    let now = SystemTime::now();
    // Removed cgroups are not polled: nothing new is said about them, so once their series
    // expire no queued event brings one back.
    let (counts, naming): (Vec<_>, u64) = {
        let view = targets.read();
        let counts = view
            .set()
            .live()
            .map(|(id, target)| (target.clone(), view.counts(id)))
            .collect();
        (counts, view.set().naming())
    };
    for (target, counts) in counts {
        match counts {
            Some(counts) => telemetry.execute(describe(
                Event::new("process.count", now)
                    .named_at(naming)
                    .measure("processes", counts.processes as f64)
                    .measure("threads", counts.threads as f64),
                &target,
            )),
            None => tracing::warn!(target = target.name, "cannot read the target's process counts"),
        }
    }
    match own_process::read() {
        Ok(me) => telemetry.execute(
            Event::new("collector.vm", now)
                .measure("resident_memory_bytes", me.resident_memory_bytes as f64)
                .measure("cpu_seconds", me.cpu_seconds)
                .measure("open_fds", me.open_fds as f64)
                .measure("ring_buffer_fill", ring.fraction()),
        ),
        Err(e) => tracing::warn!("cannot read the agent's own /proc entry: {e}"),
    }
}

/// Polls every `every` on a thread of its own until `stop`.
pub fn spawn(
    targets: Targets,
    telemetry: Arc<Telemetry>,
    ring: RingFill,
    every: Duration,
    stop: Shutdown,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("poller".into()).spawn(move || {
        loop {
            poll(&targets, &telemetry, &ring);
            if stop.wait(every) {
                return;
            }
        }
    })
}

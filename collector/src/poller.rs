//! Periodic measurements as events, after `telemetry_poller`: every `--poll-interval`,
//! `process.count` for each target and `collector.vm` for the agent itself.
use std::{
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use crate::{own_process, process_events::RingFill, state::AgentState, telemetry::Event};

/// Stops the poller promptly rather than at the end of its sleep.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock().unwrap() = true;
        self.wake.notify_all();
    }

    /// Waits up to `timeout`; true once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap();
        let (stopped, _) = self.wake.wait_timeout_while(stopped, timeout, |s| !*s).unwrap();
        *stopped
    }
}

/// Emits the poll events once.
pub fn poll(state: &AgentState, ring: &RingFill) {
    let now = SystemTime::now();
    // Removed cgroups are not polled: nothing new is said about them, so once their series
    // expire no queued event brings one back.
    let targets: Vec<_> = state.targets().live().map(|(id, t)| (id, t.clone())).collect();
    for (id, target) in targets {
        let name = target.name.as_str();
        match state.counts(id) {
            Some(counts) => state.telemetry.execute(
                target.describe(
                    Event::new("process.count", now)
                        .measure("processes", counts.processes as f64)
                        .measure("threads", counts.threads as f64),
                ),
            ),
            None => tracing::warn!(target = name, "cannot read the target's process counts"),
        }
    }
    match own_process::read() {
        Ok(me) => state.telemetry.execute(
            Event::new("collector.vm", now)
                .measure("resident_memory_bytes", me.resident_memory_bytes as f64)
                .measure("cpu_seconds", me.cpu_seconds)
                .measure("open_fds", me.open_fds as f64)
                .measure("ring_buffer_fill", ring.fraction()),
        ),
        Err(e) => tracing::warn!("cannot read the agent's own /proc entry: {e}"),
    }
}

pub fn spawn(state: Arc<AgentState>, ring: RingFill, every: Duration, stop: Arc<Stop>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("poller".into())
        .spawn(move || {
            loop {
                poll(&state, &ring);
                if stop.wait(every) {
                    return;
                }
            }
        })
        .expect("spawn the poller")
}

//! Telling systemd how the agent is doing, for `Type=notify` units
//! (`deploy/systemd/collector.service`): READY once every probe is attached and the endpoint
//! serves, so that units ordered after this one start when the counting has begun, and
//! STOPPING when it winds down. `sd_notify(3)`; without `NOTIFY_SOCKET` (not started by
//! systemd) nothing is sent.
use sd_notify::NotifyState;

/// Every probe attached, the targets in place, the listener bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Stopping on SIGINT or SIGTERM.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: detaching every probe"),
    ]);
}

fn send(states: &[NotifyState]) {
    // Not fatal: systemd then stops (or times out on) the unit itself, which says why.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

//! `/health`: whether the agent can see what it was asked to see.
//!
//! `unhealthy` (HTTP 503) when a probe is not attached: metrics would be silently wrong.
//! `degraded` (HTTP 200) when a probe family is off because the kernel cannot give it (its
//! metrics are missing, said with the reason; the others are exact). A family the user
//! disabled is listed, and changes nothing: the agent sees what it was asked to see.
//! `degraded` (HTTP 200) when a PID target has no live process left (its metrics are
//! complete but will not grow; that is the target's state, not the agent's failure), or
//! when there are no targets at all (patterns that match nothing yet).
//! `degraded` (HTTP 200) while an OTLP export fails (the receiver is down or refuses): what
//! it would have sent is counted as dropped, and `/metrics` is whole.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Sources;
use crate::{kernel::families::FAMILIES, targets::TargetKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: Status,
    pub checks: Checks,
    pub version: &'static str,
    pub uptime_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub probes: ProbesCheck,
    pub targets: TargetsCheck,
    /// With `--otlp-endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpCheck>,
}

#[derive(Debug, Serialize)]
pub struct OtlpCheck {
    pub status: CheckStatus,
    /// Signal -> the last export's error, for the signals whose exports fail.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failing: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct ProbesCheck {
    pub status: CheckStatus,
    /// Probe name -> attached.
    pub attached: BTreeMap<&'static str, bool>,
    /// Probe families this kernel cannot give, with why: what they measure is missing.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub off: BTreeMap<&'static str, String>,
    /// Probe families the user disabled (`--disable-family`), with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub disabled: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct TargetsCheck {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    pub targets: BTreeMap<String, TargetHealth>,
}

#[derive(Debug, Serialize)]
pub struct TargetHealth {
    /// Live processes of the target; `null` when the kernel map could not be read.
    pub processes: Option<i64>,
    /// `false` once every process of the target has exited.
    pub alive: bool,
}

impl Health {
    pub fn of(sources: &Sources) -> Health {
        let attached = sources.probes.clone();
        let off = sources.families_off.clone();
        let disabled = sources.families_disabled.clone();
        // A probe of a family that is on must be attached; a family off is a kernel's limit.
        let off_probes: Vec<&str> = FAMILIES
            .iter()
            .filter(|f| off.contains_key(f.name) || disabled.contains_key(f.name))
            .flat_map(|f| f.probes.iter().map(|p| p.name))
            .collect();
        let missing = attached.iter().any(|(name, &a)| !a && !off_probes.contains(name));
        let probes = ProbesCheck {
            status: match (missing, off.is_empty()) {
                (true, _) => CheckStatus::Fail,
                (false, false) => CheckStatus::Warn,
                (false, true) => CheckStatus::Pass,
            },
            attached,
            off,
            disabled,
        };
        // A cgroup is a target while it exists, even empty; a PID target lives while a
        // process of its tree does.
        let targets: BTreeMap<String, TargetHealth> = {
            let view = sources.targets.read();
            view.set()
                .live()
                .map(|(id, t)| {
                    let processes = view.counts(id).map(|c| c.processes);
                    let alive = t.kind != TargetKind::Pid || processes.is_none_or(|n| n > 0);
                    (t.name.clone(), TargetHealth { processes, alive })
                })
                .collect()
        };
        let targets = TargetsCheck {
            status: if !targets.is_empty() && targets.values().all(|t| t.alive && t.processes.is_some()) {
                CheckStatus::Pass
            } else {
                CheckStatus::Warn
            },
            message: targets
                .is_empty()
                .then_some("no targets: no --cgroup-pattern matches a cgroup yet"),
            targets,
        };
        let otlp = sources.otlp.as_ref().map(|signals| {
            let failing: BTreeMap<&'static str, String> =
                signals.iter().filter_map(|s| Some((s.signal, s.failing()?))).collect();
            OtlpCheck {
                status: if failing.is_empty() {
                    CheckStatus::Pass
                } else {
                    CheckStatus::Warn
                },
                failing,
            }
        });
        let statuses = [
            probes.status,
            targets.status,
            otlp.as_ref().map_or(CheckStatus::Pass, |o| o.status),
        ];
        let status = if statuses.contains(&CheckStatus::Fail) {
            Status::Unhealthy
        } else if statuses.contains(&CheckStatus::Warn) {
            Status::Degraded
        } else {
            Status::Healthy
        };
        Health {
            status,
            checks: Checks { probes, targets, otlp },
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: sources.started.elapsed().as_secs(),
        }
    }

    pub fn http_status(&self) -> u16 {
        match self.status {
            Status::Healthy | Status::Degraded => 200,
            Status::Unhealthy => 503,
        }
    }
}

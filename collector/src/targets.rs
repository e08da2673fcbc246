//! Targets: what the user asked to observe, and the processes that belong to each.
//!
//! A target has a name (the `target` label) and a small id the kernel maps use. Several
//! `--pid NAME=PID` with one NAME are one target: their counts add up in the kernel.
use std::{collections::HashMap, fmt, str::FromStr};

use collector_common::{TargetId, maps::MAX_TARGETS};

/// One `--pid` argument: `PID` or `NAME=PID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidSpec {
    pub name: Option<String>,
    pub pid: u32,
}

impl PidSpec {
    /// The target name: `NAME`, or `pid-PID` when none was given.
    pub fn target_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("pid-{}", self.pid))
    }
}

impl FromStr for PidSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = match s.split_once('=') {
            Some((name, pid)) => (Some(name), pid),
            None => (None, s),
        };
        if let Some(name) = name {
            if name.is_empty() {
                return Err(format!(
                    "'{s}': the name before '=' is empty (expected NAME=PID, e.g. web=1234)"
                ));
            }
            if let Some(bad) = name.chars().find(|c| c.is_control()) {
                return Err(format!("'{s}': the name contains the control character {bad:?}"));
            }
        }
        let pid = match pid.parse::<u32>() {
            Ok(pid) if pid > 0 => pid,
            _ => {
                return Err(format!(
                    "'{s}': '{pid}' is not a process id (expected PID or NAME=PID, e.g. 1234 or web=1234)"
                ));
            }
        };
        Ok(PidSpec {
            name: name.map(str::to_owned),
            pid,
        })
    }
}

/// The targets of one run: their names, indexed by [`TargetId`], and the PIDs given for each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    names: Vec<String>,
    pids: Vec<(u32, TargetId)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The same PID was given under two names.
    #[error("--pid {pid} is given as both '{first}' and '{second}'; give each PID one name")]
    PidUnderTwoNames { pid: u32, first: String, second: String },
    /// More distinct targets than the kernel maps have room for.
    #[error("{0} targets given, at most {MAX_TARGETS} are supported; group PIDs under shared names (--pid NAME=PID)")]
    TooMany(usize),
}

impl Targets {
    pub fn from_specs(specs: &[PidSpec]) -> Result<Self, TargetError> {
        let mut targets = Targets::default();
        let mut named: HashMap<u32, String> = HashMap::new();
        for spec in specs {
            let name = spec.target_name();
            if let Some(first) = named.get(&spec.pid) {
                if *first != name {
                    return Err(TargetError::PidUnderTwoNames {
                        pid: spec.pid,
                        first: first.clone(),
                        second: name,
                    });
                }
                continue;
            }
            named.insert(spec.pid, name.clone());
            let id = match targets.names.iter().position(|n| *n == name) {
                Some(i) => TargetId(i as u32),
                None => {
                    targets.names.push(name);
                    TargetId(targets.names.len() as u32 - 1)
                }
            };
            targets.pids.push((spec.pid, id));
        }
        if targets.names.len() > MAX_TARGETS as usize {
            return Err(TargetError::TooMany(targets.names.len()));
        }
        Ok(targets)
    }

    pub fn name(&self, id: TargetId) -> Option<&str> {
        self.names.get(id.0 as usize).map(String::as_str)
    }

    pub fn ids(&self) -> impl Iterator<Item = (TargetId, &str)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (TargetId(i as u32), n.as_str()))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The PIDs named on the command line, with their targets.
    pub fn pids(&self) -> &[(u32, TargetId)] {
        &self.pids
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join(", "))
    }
}

/// The processes that descend from `roots`, each with the target of its nearest root
/// ancestor (a PID named on the command line beats an ancestor's target). `processes` is
/// every (pid, ppid) on the host; roots themselves are not returned.
pub fn descendants(processes: &[(u32, u32)], roots: &HashMap<u32, TargetId>) -> Vec<(u32, TargetId)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in processes {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut stack: Vec<(u32, TargetId)> = roots.iter().map(|(&pid, &t)| (pid, t)).collect();
    while let Some((parent, target)) = stack.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if roots.contains_key(&child) {
                continue; // a root of its own, walked from there
            }
            found.push((child, target));
            stack.push((child, target));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PidSpec {
        s.parse().unwrap()
    }

    #[test]
    fn a_bare_pid_is_named_after_it() {
        assert_eq!(spec("1234").target_name(), "pid-1234");
        assert_eq!(spec("web=1234").target_name(), "web");
    }

    #[test]
    fn malformed_pid_specs_say_what_is_wrong() {
        for (input, needle) in [
            ("abc", "'abc' is not a process id"),
            ("0", "'0' is not a process id"),
            ("-5", "is not a process id"),
            ("web=", "'' is not a process id"),
            ("=12", "the name before '=' is empty"),
            ("web=12x", "'12x' is not a process id"),
        ] {
            let err = input.parse::<PidSpec>().unwrap_err();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn pids_sharing_a_name_are_one_target() {
        let t = Targets::from_specs(&[spec("web=10"), spec("web=11"), spec("12")]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.pids(), &[(10, TargetId(0)), (11, TargetId(0)), (12, TargetId(1))]);
        assert_eq!(t.name(TargetId(0)), Some("web"));
        assert_eq!(t.name(TargetId(1)), Some("pid-12"));
    }

    #[test]
    fn a_repeated_pid_counts_once_but_two_names_for_one_pid_is_an_error() {
        let t = Targets::from_specs(&[spec("10"), spec("10")]).unwrap();
        assert_eq!(t.pids().len(), 1);
        let err = Targets::from_specs(&[spec("a=10"), spec("b=10")]).unwrap_err();
        assert_eq!(
            err,
            TargetError::PidUnderTwoNames {
                pid: 10,
                first: "a".into(),
                second: "b".into()
            }
        );
    }

    #[test]
    fn descendants_take_the_target_of_their_nearest_named_ancestor() {
        // 1 -> 10 (target a) -> 11 -> 12 (target b) -> 13; 1 -> 20 (not a target)
        let procs = [(10, 1), (11, 10), (12, 11), (13, 12), (20, 1), (21, 20)];
        let roots = HashMap::from([(10, TargetId(0)), (12, TargetId(1))]);
        let mut found = descendants(&procs, &roots);
        found.sort();
        assert_eq!(found, vec![(11, TargetId(0)), (13, TargetId(1))]);
    }
}

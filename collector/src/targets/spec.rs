//! What the user names as targets: `--pid [NAME=]PID` and `--cgroup [NAME=]PATH`, parsed
//! (clap calls `FromStr`) and checked for form only; whether they exist is checked at start.
use std::str::FromStr;

use super::cgroup::fs::Cgroup;

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
            check_name(s, name, "NAME=PID, e.g. web=1234")?;
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

/// One `--cgroup` argument: `PATH` or `NAME=PATH`.
///
/// An argument starting with `/` is always a PATH, so an absolute path may contain `=`;
/// otherwise the text before the first `=` is the name. (cgroup paths never contain `=` in
/// practice; a relative one that does must be given absolute.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSpec {
    pub name: Option<String>,
    pub path: String,
}

impl CgroupSpec {
    /// The target name: `NAME`, or the cgroup's path relative to the mount.
    pub fn target_name(&self, cgroup: &Cgroup) -> String {
        self.name.clone().unwrap_or_else(|| cgroup.name.clone())
    }
}

impl FromStr for CgroupSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, path) = match s.split_once('=') {
            Some((name, path)) if !s.starts_with('/') => (Some(name), path),
            _ => (None, s),
        };
        if let Some(name) = name {
            check_name(s, name, "NAME=PATH, e.g. web=system.slice/nginx.service")?;
        }
        if path.is_empty() {
            return Err(format!(
                "'{s}': no cgroup path (expected PATH or NAME=PATH, e.g. system.slice/nginx.service or web=/sys/fs/cgroup/system.slice/nginx.service)"
            ));
        }
        Ok(CgroupSpec {
            name: name.map(str::to_owned),
            path: path.to_owned(),
        })
    }
}

/// A target name given as `NAME=...` in `arg`: not empty, no control characters.
/// `expected` shows the form, for the message.
pub fn check_name(arg: &str, name: &str, expected: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("'{arg}': the name before '=' is empty (expected {expected})"));
    }
    if let Some(bad) = name.chars().find(|c| c.is_control()) {
        return Err(format!("'{arg}': the name contains the control character {bad:?}"));
    }
    Ok(())
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
    fn cgroup_specs_are_a_path_or_a_name_and_a_path() {
        for (input, name, path) in [
            ("system.slice/nginx.service", None, "system.slice/nginx.service"),
            ("/sys/fs/cgroup/a.slice", None, "/sys/fs/cgroup/a.slice"),
            ("/sys/fs/cgroup/odd=name", None, "/sys/fs/cgroup/odd=name"),
            (
                "web=system.slice/nginx.service",
                Some("web"),
                "system.slice/nginx.service",
            ),
            ("web=/sys/fs/cgroup/a=b", Some("web"), "/sys/fs/cgroup/a=b"),
            ("my web=/x", Some("my web"), "/x"),
        ] {
            let spec: CgroupSpec = input.parse().unwrap();
            assert_eq!((spec.name.as_deref(), spec.path.as_str()), (name, path), "{input}");
        }
        for (input, needle) in [
            ("", "no cgroup path"),
            ("web=", "no cgroup path"),
            ("=a.slice", "the name before '=' is empty"),
            ("we\tb=a.slice", "control character '\\t'"),
        ] {
            let err = input.parse::<CgroupSpec>().unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        let cgroup = Cgroup {
            path: "/sys/fs/cgroup/a.slice".into(),
            name: "a.slice".to_owned(),
            id: 7,
        };
        assert_eq!("a.slice".parse::<CgroupSpec>().unwrap().target_name(&cgroup), "a.slice");
        assert_eq!("w=a.slice".parse::<CgroupSpec>().unwrap().target_name(&cgroup), "w");
    }
}

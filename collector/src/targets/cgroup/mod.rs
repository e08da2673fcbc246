//! Cgroup v2 targets: the hierarchy and paths (`fs`), `--cgroup-pattern` globs (`pattern`),
//! walking the tree (`walk`), following matches as they come and go (`watch`), and resolving
//! the command line's cgroups at start (here).
//!
//! The kernel does the rest (`collector-ebpf/src/cgroups.rs`): children are followed at fork
//! and processes that move are re-targeted at `cgroup_attach_task`, both from
//! `CGROUP_TARGETS`, which the agent fills.
pub mod fs;
pub mod pattern;
pub mod walk;
pub mod watch;

use std::{collections::HashMap, time::Duration};

use self::{
    fs::{Cgroup, CgroupFs},
    pattern::CgroupPattern,
    watch::CgroupWatch,
};
use super::{error::TargetError, spec::CgroupSpec};

/// How often the watched tree is rescanned in case inotify missed something.
const RESCAN: Duration = Duration::from_secs(1);

/// The cgroup side of the command line, resolved.
pub struct Resolved {
    /// `--cgroup` targets (name, cgroup) and the current matches of the patterns.
    pub initial: Vec<(String, Cgroup)>,
    /// What follows the watched cgroups after `initial`; `None` when nothing is watched.
    pub watched: Option<Watched>,
}

/// The watch on the `--cgroup` paths and patterns, and the names `--cgroup NAME=PATH` gave
/// (by path relative to the mount), for cgroups that come back.
pub struct Watched {
    pub watch: CgroupWatch,
    pub names: HashMap<String, String>,
}

impl Watched {
    /// The target name of a watched cgroup: its `--cgroup` NAME, or its path.
    pub fn name_of(&self, cgroup: &Cgroup) -> String {
        self.names
            .get(&cgroup.name)
            .cloned()
            .unwrap_or_else(|| cgroup.name.clone())
    }
}

/// Resolves `--cgroup` and `--cgroup-pattern` and starts watching both: a `--cgroup` path is
/// watched as a pattern matching just itself, so a service whose cgroup is removed and made
/// anew (a restart) stays observed. A bad path or pattern is a usage error; a pattern that
/// matches nothing only warns.
pub fn resolve(specs: &[CgroupSpec], patterns: &[String]) -> Result<Resolved, TargetError> {
    if specs.is_empty() && patterns.is_empty() {
        return Ok(Resolved {
            initial: Vec::new(),
            watched: None,
        });
    }
    let fs = CgroupFs::discover().map_err(TargetError::Hierarchy)?;
    let usage = |flag, arg: &str| {
        let arg = arg.to_owned();
        move |source| TargetError::Cgroup { flag, arg, source }
    };
    let mut initial = Vec::new();
    let mut names = HashMap::new();
    let mut watched = Vec::new();
    for spec in specs {
        let cgroup = fs.resolve(&spec.path).map_err(usage("--cgroup", &spec.path))?;
        let name = spec.target_name(&cgroup);
        if cgroup.name != "/" {
            // (The root cgroup is never removed, and patterns do not match it.)
            let literal =
                CgroupPattern::parse(&glob_literal(&cgroup.name), &fs).map_err(usage("--cgroup", &spec.path))?;
            watched.push(literal);
            names.insert(cgroup.name.clone(), name.clone());
        }
        initial.push((name, cgroup));
    }
    for p in patterns {
        watched.push(CgroupPattern::parse(p, &fs).map_err(usage("--cgroup-pattern", p))?);
    }
    if watched.is_empty() {
        return Ok(Resolved { initial, watched: None });
    }
    let (watch, matched) = CgroupWatch::start(fs, watched, RESCAN);
    let from_patterns: Vec<Cgroup> = matched.into_iter().filter(|c| !names.contains_key(&c.name)).collect();
    if !patterns.is_empty() && from_patterns.is_empty() {
        tracing::warn!(
            patterns = patterns.join(", "),
            "no cgroup matches --cgroup-pattern yet; cgroups created later are picked up"
        );
    }
    initial.extend(from_patterns.into_iter().map(|c| (c.name.clone(), c)));
    Ok(Resolved {
        initial,
        watched: Some(Watched { watch, names }),
    })
}

/// A glob matching exactly `path`: each glob metacharacter as a one-character class.
fn glob_literal(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// `cgroup` as it appears in /proc/PID/cgroup: relative to the mount, with a leading `/`.
pub fn proc_path(cgroup: &Cgroup) -> String {
    match cgroup.name.as_str() {
        "/" => "/".to_owned(),
        name => format!("/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_glob_matches_only_its_path() {
        let fs = CgroupFs::at("/sys/fs/cgroup");
        let odd = "a.slice/x[1]*{y}?.scope";
        let literal = CgroupPattern::parse(&glob_literal(odd), &fs).unwrap();
        assert!(literal.matches(odd));
        assert!(!literal.matches("a.slice/x1zy1.scope"));
    }
}

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
use super::{
    error::TargetError,
    spec::CgroupSpec,
    workload::{Workload, host::Index, naming::Naming, path},
};

/// How often the watched tree is rescanned in case inotify missed something.
const RESCAN: Duration = Duration::from_secs(1);

/// The cgroup side of the command line, resolved.
pub struct Resolved {
    /// `--cgroup` targets and the current matches of the patterns.
    pub initial: Vec<Named>,
    /// What follows the watched cgroups after `initial`; `None` when nothing is watched.
    pub watched: Option<Watched>,
}

/// A cgroup to make a target: the name it gets and what it holds.
#[derive(Clone, Debug)]
pub struct Named {
    pub name: String,
    pub workload: Workload,
    pub cgroup: Cgroup,
}

/// The watch on the `--cgroup` paths and patterns, the names `--cgroup NAME=PATH` gave (by
/// path relative to the mount), for cgroups that come back, and how the others are named.
pub struct Watched {
    pub watch: CgroupWatch,
    pub names: HashMap<String, String>,
    pub naming: Naming,
}

impl Watched {
    /// A watched cgroup named: its `--cgroup` NAME (or path), else by `--target-name` and
    /// its workload (`workload/naming.rs`).
    pub fn name_of(&self, cgroup: &Cgroup, index: &Index) -> Named {
        let (name, workload) = self.describe(&cgroup.name, index);
        Named {
            name,
            workload,
            cgroup: cgroup.clone(),
        }
    }

    /// (name, workload) of the cgroup at `relative` (to the mount).
    pub fn describe(&self, relative: &str, index: &Index) -> (String, Workload) {
        match self.names.get(relative) {
            Some(name) => {
                let mut workload = path::parse(relative);
                index.resolve(&mut workload);
                (name.clone(), workload)
            }
            None => self.naming.describe(relative, index),
        }
    }
}

/// Resolves `--cgroup` and `--cgroup-pattern` and starts watching both: a `--cgroup` path is
/// watched as a pattern matching just itself, so a service whose cgroup is removed and made
/// anew (a restart) stays observed. A bad path or pattern is a usage error; a pattern that
/// matches nothing only warns. Pattern matches are named by `naming`.
pub fn resolve(specs: &[CgroupSpec], patterns: &[String], naming: &Naming) -> Result<Resolved, TargetError> {
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
    let index = naming.files.index();
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
        let mut workload = path::parse(&cgroup.name);
        index.resolve(&mut workload);
        initial.push(Named { name, workload, cgroup });
    }
    for p in patterns {
        watched.push(CgroupPattern::parse(p, &fs).map_err(usage("--cgroup-pattern", p))?);
    }
    if watched.is_empty() {
        return Ok(Resolved { initial, watched: None });
    }
    let (watch, matched) = CgroupWatch::start(fs, watched, RESCAN);
    let watched = Watched {
        watch,
        names,
        naming: naming.clone(),
    };
    let from_patterns: Vec<Cgroup> = matched
        .into_iter()
        .filter(|c| !watched.names.contains_key(&c.name))
        .collect();
    if !patterns.is_empty() && from_patterns.is_empty() {
        tracing::warn!(
            patterns = patterns.join(", "),
            "no cgroup matches --cgroup-pattern yet; cgroups created later are picked up"
        );
    }
    initial.extend(from_patterns.iter().map(|c| watched.name_of(c, &index)));
    Ok(Resolved {
        initial,
        watched: Some(watched),
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

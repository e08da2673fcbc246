//! The target set: what the user asked to observe, by name and id (pure: no /proc, no kernel).
//!
//! A target has a name (the `target` label) and a small id the kernel maps use. Several
//! `--pid NAME=PID` with one NAME are one target: their counts add up in the kernel.
use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use collector_common::{TargetId, events::TargetCounts, maps::MAX_TARGETS};

use super::{error::TargetError, spec::PidSpec, workload::Workload};

/// The deepest cgroup level the kernel matches targets at (it walks ancestors 31..=0).
pub const MAX_CGROUP_LEVEL: usize = 31;

/// What a target is.
#[derive(Clone, Debug, PartialEq, Eq)]
// A cgroup's workload names make it the bigger variant; there are at most --max-targets.
#[allow(clippy::large_enum_variant)]
pub enum TargetKind {
    /// `--pid`: named processes and their descendants.
    Pid,
    /// A cgroup v2 (`--cgroup`, or a `--cgroup-pattern` match) and everything below it.
    Cgroup {
        /// Relative to the v2 mount with a leading `/`, as in /proc/PID/cgroup.
        path: String,
        /// The cgroup id (its directory's inode number), the `CGROUP_TARGETS` key.
        id: u64,
        /// What its path and the host's files say it holds (`workload/`).
        workload: Workload,
    },
}

impl TargetKind {
    /// The `kind` label of `collector_targets`.
    pub fn label(&self) -> &'static str {
        match self {
            TargetKind::Pid => "pid",
            TargetKind::Cgroup { .. } => "cgroup",
        }
    }
}

/// One target: its name (the `target` label), what it is, the processes and threads the
/// agent itself put into it or took out (the kernel counts changes from there), and, once
/// it is removed (its cgroup gone, or a reload no longer naming it), since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub initial: TargetCounts,
    pub removed_at: Option<Instant>,
}

impl Target {
    /// A cgroup target's workload; none for a PID target.
    pub fn workload(&self) -> Option<&Workload> {
        match &self.kind {
            TargetKind::Cgroup { workload, .. } => Some(workload),
            TargetKind::Pid => None,
        }
    }
}

/// The targets of a run, indexed by [`TargetId`]; cgroup targets come and go while running.
/// A removed cgroup's target keeps its id (and its series) until the series TTL has passed,
/// then the id is free for a new target.
#[derive(Clone, Debug)]
pub struct TargetSet {
    slots: Vec<Option<Target>>,
    pids: Vec<(u32, TargetId)>,
    max: usize,
    rejected: u64,
    /// Bumped whenever a name stops naming the target it named (a rename, an expiry): an
    /// event named before carries an older value (`Event::naming`), so it cannot bring
    /// back the series of a name forgotten since.
    naming: u64,
}

impl TargetSet {
    /// The PID targets of `specs`, with room for `max` targets in all.
    pub fn from_specs(specs: &[PidSpec], max: usize) -> Result<Self, TargetError> {
        let max = max.min(MAX_TARGETS as usize);
        let mut targets = TargetSet {
            slots: Vec::new(),
            pids: Vec::new(),
            max,
            rejected: 0,
            naming: 0,
        };
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
            let existing = targets.ids().find(|(_, n)| *n == name).map(|(id, _)| id);
            let id = match existing {
                Some(id) => id,
                None => {
                    targets.slots.push(Some(Target {
                        name,
                        kind: TargetKind::Pid,
                        initial: TargetCounts::default(),
                        removed_at: None,
                    }));
                    TargetId(targets.slots.len() as u32 - 1)
                }
            };
            targets.pids.push((spec.pid, id));
        }
        if targets.slots.len() > max {
            return Err(TargetError::TooMany(targets.slots.len(), max));
        }
        Ok(targets)
    }

    /// Makes `cgroup` a target named `name`, or returns its target when it is one already.
    /// A name a live target has already (a `--target-name` that two cgroups render alike)
    /// gets `#<cgroup id>`. `None` when --max-targets are taken: the refusal is counted.
    pub fn add_cgroup(&mut self, name: String, path: String, id: u64, workload: Workload) -> Option<TargetId> {
        if let Some(existing) = self.cgroup_target(id) {
            return Some(existing);
        }
        let name = self.unique(name, id);
        let placed = self.place(name, TargetKind::Cgroup { path, id, workload });
        if placed.is_none() {
            self.rejected += 1;
        }
        placed
    }

    /// Adds `pid` as a root of the PID target `name` while running (a reload), making the
    /// target if it is new. `None` when --max-targets are taken.
    pub fn add_pid(&mut self, pid: u32, name: String) -> Option<TargetId> {
        let existing = self
            .live()
            .find(|(_, t)| t.kind == TargetKind::Pid && t.name == name)
            .map(|(id, _)| id);
        let id = existing.or_else(|| self.place(name, TargetKind::Pid))?;
        self.pids.push((pid, id));
        Some(id)
    }

    /// Drops `pid` as a root (a reload): its target is removed (its series kept until the
    /// TTL, as a removed cgroup's) once it has no root left.
    pub fn remove_pid(&mut self, pid: u32, now: Instant) -> Option<TargetId> {
        let at = self.pids.iter().position(|&(p, _)| p == pid)?;
        let (_, id) = self.pids.remove(at);
        if !self.pids.iter().any(|&(_, t)| t == id)
            && let Some(Some(target)) = self.slots.get_mut(id.0 as usize)
        {
            target.removed_at = Some(now);
        }
        Some(id)
    }

    /// Gives a new target an id. A removed target of the same name whose series have not
    /// expired yet is taken up again (a service restarted, its cgroup made anew; a PID
    /// given back by a reload): one set of series, continuing.
    fn place(&mut self, name: String, kind: TargetKind) -> Option<TargetId> {
        let removed_of_that_name = self
            .all()
            .find(|(_, t)| t.removed_at.is_some() && t.name == name)
            .map(|(t, _)| t);
        if let Some(t) = removed_of_that_name
            && let Some(target) = self.slots[t.0 as usize].as_mut()
        {
            // Its starting counts stay: with the kernel's changes since, they are its live
            // processes (none, once the last left), and the kernel's part is not reset.
            target.kind = kind;
            target.removed_at = None;
            return Some(t);
        }
        let target = Target {
            name,
            kind,
            initial: TargetCounts::default(),
            removed_at: None,
        };
        if let Some(free) = self.slots.iter().position(Option::is_none) {
            self.slots[free] = Some(target);
            return Some(TargetId(free as u32));
        }
        if self.slots.len() >= self.max {
            return None;
        }
        self.slots.push(Some(target));
        Some(TargetId(self.slots.len() as u32 - 1))
    }

    /// `name`, or `name#<cgroup id>` when a live target other than cgroup `id`'s has it.
    fn unique(&self, name: String, id: u64) -> String {
        let taken = self
            .live()
            .any(|(_, t)| t.name == name && !matches!(t.kind, TargetKind::Cgroup { id: own, .. } if own == id));
        if taken { format!("{name}#{id}") } else { name }
    }

    /// A removed target named `name`, whose series a live target about to take that name
    /// would collide with.
    pub fn removed_named(&self, name: &str) -> Option<TargetId> {
        self.all()
            .find(|(_, t)| t.removed_at.is_some() && t.name == name)
            .map(|(id, _)| id)
    }

    /// Gives the cgroup target `id` what its workload is now known to be, and the name that
    /// makes (made unique as at [`TargetSet::add_cgroup`]). Returns the name it had.
    pub fn rename_cgroup(&mut self, id: TargetId, name: String, new: Workload) -> Option<String> {
        let cgroup = match &self.get(id)?.kind {
            TargetKind::Cgroup { id, .. } => *id,
            TargetKind::Pid => return None,
        };
        let name = self.unique(name, cgroup);
        self.naming += 1;
        let target = self.slots.get_mut(id.0 as usize)?.as_mut()?;
        if let TargetKind::Cgroup { workload, .. } = &mut target.kind {
            *workload = new;
        }
        Some(std::mem::replace(&mut target.name, name))
    }

    /// The live target of cgroup `id`.
    pub fn cgroup_target(&self, id: u64) -> Option<TargetId> {
        self.live().find_map(|(t, target)| match target.kind {
            TargetKind::Cgroup { id: c, .. } if c == id => Some(t),
            _ => None,
        })
    }

    /// The deepest live cgroup target at or above `path` (a /proc/PID/cgroup path). Like the
    /// kernel (`collector-ebpf/src/cgroups.rs`), only targets at most [`MAX_CGROUP_LEVEL`]
    /// levels below the root are considered.
    pub fn deepest_cgroup_target(&self, path: &str) -> Option<TargetId> {
        let level = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
        let within = |base: &str| {
            level(base) <= MAX_CGROUP_LEVEL && (base == "/" || path == base || path.starts_with(&format!("{base}/")))
        };
        self.live()
            .filter_map(|(t, target)| match &target.kind {
                TargetKind::Cgroup { path: base, .. } if within(base) => Some((base.len(), t)),
                _ => None,
            })
            .max()
            .map(|(_, t)| t)
    }

    /// Marks the target of cgroup `id` removed (its series stay until [`TargetSet::expired`]).
    pub fn remove_cgroup(&mut self, id: u64, now: Instant) -> Option<TargetId> {
        let t = self.cgroup_target(id)?;
        if let Some(target) = self.slots[t.0 as usize].as_mut() {
            target.removed_at = Some(now);
        }
        Some(t)
    }

    /// Removed targets whose series have outlived `ttl`.
    pub fn expired(&self, ttl: Duration, now: Instant) -> Vec<(TargetId, String)> {
        self.all()
            .filter(|(_, t)| t.removed_at.is_some_and(|at| now.duration_since(at) >= ttl))
            .map(|(id, t)| (id, t.name.clone()))
            .collect()
    }

    /// When the series of the earliest removed target expire (`None`: no removed target, or
    /// a TTL so long that it never comes).
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.all()
            .filter_map(|(_, t)| t.removed_at)
            .min()
            .and_then(|at| at.checked_add(ttl))
    }

    /// Frees an expired target's id.
    pub fn free(&mut self, id: TargetId) {
        if let Some(slot) = self.slots.get_mut(id.0 as usize) {
            *slot = None;
            self.naming += 1;
        }
    }

    /// The naming generation, bumped whenever a name stops naming the target it named
    /// (`Event::naming`).
    pub fn naming(&self) -> u64 {
        self.naming
    }

    pub fn get(&self, id: TargetId) -> Option<&Target> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    pub fn name(&self, id: TargetId) -> Option<&str> {
        self.get(id).map(|t| t.name.as_str())
    }

    pub fn add_initial(&mut self, id: TargetId, processes: i64, threads: i64) {
        if let Some(Some(t)) = self.slots.get_mut(id.0 as usize) {
            t.initial.processes += processes;
            t.initial.threads += threads;
        }
    }

    /// Every target with series, removed ones included until they expire.
    pub fn all(&self) -> impl Iterator<Item = (TargetId, &Target)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (TargetId(i as u32), t)))
    }

    /// Targets that are current (not removed).
    pub fn live(&self) -> impl Iterator<Item = (TargetId, &Target)> {
        self.all().filter(|(_, t)| t.removed_at.is_none())
    }

    /// (id, name) of every target with series.
    pub fn ids(&self) -> impl Iterator<Item = (TargetId, &str)> {
        self.all().map(|(id, t)| (id, t.name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.live().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cgroups refused because --max-targets were taken.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The PIDs named (on the command line, in the config file), with their targets.
    pub fn pids(&self) -> &[(u32, TargetId)] {
        &self.pids
    }
}

impl fmt::Display for TargetSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.live().map(|(_, t)| t.name.as_str()).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PidSpec {
        s.parse().unwrap()
    }

    #[test]
    fn pids_sharing_a_name_are_one_target() {
        let t = TargetSet::from_specs(&[spec("web=10"), spec("web=11"), spec("12")], 1000).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.pids(), &[(10, TargetId(0)), (11, TargetId(0)), (12, TargetId(1))]);
        assert_eq!(t.name(TargetId(0)), Some("web"));
        assert_eq!(t.name(TargetId(1)), Some("pid-12"));
    }

    #[test]
    fn a_repeated_pid_counts_once_but_two_names_for_one_pid_is_an_error() {
        let t = TargetSet::from_specs(&[spec("10"), spec("10")], 1000).unwrap();
        assert_eq!(t.pids().len(), 1);
        let err = TargetSet::from_specs(&[spec("a=10"), spec("b=10")], 1000).unwrap_err();
        assert!(
            matches!(&err, TargetError::PidUnderTwoNames { pid: 10, first, second } if first == "a" && second == "b"),
            "{err:?}"
        );
    }

    #[test]
    fn a_reload_removes_a_pid_target_with_its_last_root_and_gives_it_back_by_name() {
        let mut t = TargetSet::from_specs(&[spec("web=10"), spec("web=11")], 2).unwrap();
        let web = TargetId(0);
        let now = Instant::now();
        assert_eq!(t.remove_pid(10, now), Some(web));
        assert_eq!(t.len(), 1, "web still has a root");
        assert_eq!(t.remove_pid(11, now), Some(web));
        assert!(t.is_empty());
        assert_eq!(t.name(web), Some("web"), "its series stay until the TTL");
        assert_eq!(t.add_pid(12, "db".into()), Some(TargetId(1)));
        assert_eq!(t.add_pid(13, "other".into()), None, "--max-targets");
        assert_eq!(
            t.add_pid(14, "web".into()),
            Some(web),
            "taken up again before it expired"
        );
        assert_eq!(t.add_pid(15, "db".into()), Some(TargetId(1)));
        assert_eq!(t.pids(), &[(12, TargetId(1)), (14, web), (15, TargetId(1))]);
    }

    #[test]
    fn a_name_two_live_cgroups_would_share_is_made_unique_and_a_rename_keeps_it_so() {
        let mut set = TargetSet::from_specs(&[], 10).unwrap();
        let first = set
            .add_cgroup("shop/cart".into(), "/k/a".into(), 1, Workload::default())
            .unwrap();
        let second = set
            .add_cgroup("shop/cart".into(), "/k/b".into(), 2, Workload::default())
            .unwrap();
        assert_eq!(set.name(first), Some("shop/cart"));
        assert_eq!(set.name(second), Some("shop/cart#2"));
        let late = set
            .add_cgroup("k/c".into(), "/k/c".into(), 3, Workload::default())
            .unwrap();
        let named = Workload {
            pod: Some("cart".into()),
            ..Workload::default()
        };
        assert_eq!(
            set.rename_cgroup(late, "shop/cart".into(), named.clone()),
            Some("k/c".into())
        );
        assert_eq!(set.name(late), Some("shop/cart#3"));
        assert_eq!(set.get(late).unwrap().workload(), Some(&named));
        set.remove_cgroup(1, Instant::now());
        assert_eq!(set.removed_named("shop/cart"), Some(first));
    }

    #[test]
    fn the_deepest_cgroup_target_wins_and_max_targets_refuses_and_counts() {
        let mut t = TargetSet::from_specs(&[spec("web=10")], 3).unwrap();
        let app = t
            .add_cgroup("app".into(), "/a/app".into(), 100, Workload::default())
            .unwrap();
        let deep = t
            .add_cgroup("a/app/deep".into(), "/a/app/deep".into(), 101, Workload::default())
            .unwrap();
        assert_eq!(
            t.add_cgroup("again".into(), "/a/app".into(), 100, Workload::default()),
            Some(app)
        );
        assert_eq!(t.add_cgroup("x".into(), "/x".into(), 102, Workload::default()), None);
        assert_eq!(t.rejected(), 1);
        assert_eq!(t.deepest_cgroup_target("/a/app"), Some(app));
        assert_eq!(t.deepest_cgroup_target("/a/app/other/x"), Some(app));
        assert_eq!(t.deepest_cgroup_target("/a/app/deep/x"), Some(deep));
        assert_eq!(t.deepest_cgroup_target("/a/application"), None);
        // Removed: no longer matched, series kept until the TTL, then the id is reused.
        let start = Instant::now();
        assert_eq!(t.remove_cgroup(101, start), Some(deep));
        assert_eq!(t.deepest_cgroup_target("/a/app/deep/x"), Some(app));
        assert_eq!(t.name(deep), Some("a/app/deep"));
        assert!(t.expired(Duration::from_secs(60), start).is_empty());
        let later = start + Duration::from_secs(60);
        assert_eq!(
            t.expired(Duration::from_secs(60), later),
            vec![(deep, "a/app/deep".to_owned())]
        );
        t.free(deep);
        assert_eq!(
            t.add_cgroup("y".into(), "/y".into(), 103, Workload::default()),
            Some(deep)
        );
        // Made anew under the same name before its series expired: the same target again.
        t.remove_cgroup(100, later);
        assert_eq!(
            t.add_cgroup("app".into(), "/a/app".into(), 200, Workload::default()),
            Some(app)
        );
        assert_eq!(t.cgroup_target(200), Some(app));
        assert_eq!(t.deepest_cgroup_target("/a/app/x"), Some(app));
    }
}

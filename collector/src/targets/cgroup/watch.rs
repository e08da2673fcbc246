//! Following the cgroups that match the watched patterns as they come and go: inotify on
//! the directories a match can appear in, and a rescan every `poll` as a safety net (all
//! there is when inotify cannot be used). The thread that waits on it is the targets
//! watcher (`targets/watcher.rs`); this module has none of its own.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::{AsFd as _, BorrowedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, poll},
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
};

use super::{
    fs::{Cgroup, CgroupFs},
    pattern::CgroupPattern,
    walk::walk,
};
use crate::shutdown::{Shutdown, poll_timeout};

/// A difference in the set of cgroups that match the watched patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupChange {
    /// A matching cgroup appeared (or a matching path was recreated with a new id).
    Added(Cgroup),
    /// A cgroup reported before is gone (or its path now has a new id).
    Removed(Cgroup),
}

/// Directories a new cgroup can appear in: created, removed, renamed children, or itself gone.
const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

/// The watched patterns and the matching cgroups last reported.
pub struct CgroupWatch {
    fs: CgroupFs,
    patterns: Vec<CgroupPattern>,
    /// `None`: polling only.
    inotify: Option<Inotify>,
    /// Watched directory (relative) -> its watch and inode; a new inode means it was recreated
    /// and needs a new watch.
    watched: HashMap<String, (WatchDescriptor, u64)>,
    /// The matching cgroups last reported, by path.
    current: BTreeMap<PathBuf, Cgroup>,
    poll: Duration,
    next_rescan: Instant,
    overflow_warned: bool,
}

impl CgroupWatch {
    /// Starts watching for cgroups matching any of `patterns`, and returns the matching
    /// cgroups now: the initial scan and the watch are one, so no cgroup created in between
    /// is missed. A new cgroup is seen within milliseconds through inotify (mkdir and rmdir
    /// on cgroupfs raise IN_CREATE and IN_DELETE), else at the next rescan.
    pub fn start(fs: CgroupFs, patterns: Vec<CgroupPattern>, poll: Duration) -> (CgroupWatch, Vec<Cgroup>) {
        Self::start_with(fs, patterns, poll, true)
    }

    fn start_with(
        fs: CgroupFs,
        patterns: Vec<CgroupPattern>,
        poll: Duration,
        use_inotify: bool,
    ) -> (CgroupWatch, Vec<Cgroup>) {
        let inotify = if use_inotify {
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .inspect_err(|e| {
                    tracing::warn!(
                        "cannot use inotify to watch cgroups ({e}); new cgroups are found by a rescan every {poll:?}"
                    );
                })
                .ok()
        } else {
            None
        };
        let mut watch = CgroupWatch {
            fs,
            patterns,
            inotify,
            watched: HashMap::new(),
            current: BTreeMap::new(),
            poll,
            next_rescan: Instant::now() + poll,
            overflow_warned: false,
        };
        let initial = watch.rescan();
        watch.current = initial.iter().map(|c| (c.path.clone(), c.clone())).collect();
        (watch, initial)
    }

    /// Waits until the watched cgroups may have changed, `until` passes, `wake` is readable
    /// (the caller has other work), or `stop` is triggered. Returns what changed since the
    /// last call (often nothing), or `None` once stopped.
    pub fn next_changes(
        &mut self,
        stop: &Shutdown,
        wake: BorrowedFd<'_>,
        until: Option<Instant>,
    ) -> Option<Vec<CgroupChange>> {
        let due = until.map_or(self.next_rescan, |t| t.min(self.next_rescan));
        let (stopped, notified) = self.wait(stop, wake, due.saturating_duration_since(Instant::now()));
        if stopped {
            return None;
        }
        let rescan_due = Instant::now() >= self.next_rescan;
        if rescan_due {
            self.next_rescan = Instant::now() + self.poll;
        }
        if !notified && !rescan_due {
            return Some(Vec::new());
        }
        let found = self.rescan();
        Some(self.diff(found))
    }

    /// Sleeps until `stop`, `wake`, an inotify event, or `timeout`. Returns (stopped, notified).
    fn wait(&mut self, stop: &Shutdown, wake: BorrowedFd<'_>, timeout: Duration) -> (bool, bool) {
        let timeout = poll_timeout(timeout);
        let mut fds = vec![
            PollFd::new(stop.fd(), PollFlags::POLLIN),
            PollFd::new(wake, PollFlags::POLLIN),
        ];
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("cannot wait for cgroup changes ({e}); rescanning every {:?}", self.poll);
                drop(fds);
                self.inotify = None;
                std::thread::sleep(Duration::from_millis(100));
                return (false, false);
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let stopped = ready(&fds[0]);
        let notified = fds.get(2).is_some_and(ready);
        drop(fds);
        if notified {
            self.drain();
        }
        (stopped, notified)
    }

    /// Reads all queued events; only their arrival matters, since every wakeup rescans.
    fn drain(&mut self) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    // The kernel dropped these watches (their directory is gone). Forget them, so
                    // a directory recreated with a reused inode number (ext4, not cgroupfs) is
                    // watched again.
                    let dropped: HashSet<WatchDescriptor> = events
                        .iter()
                        .filter(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                        .map(|e| e.wd)
                        .collect();
                    if !dropped.is_empty() {
                        self.watched.retain(|_, (wd, _)| !dropped.contains(wd));
                    }
                    if !self.overflow_warned && events.iter().any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)) {
                        // The rescan that follows resynchronises; later overflows are as harmless.
                        tracing::warn!("the cgroup inotify queue overflowed; rescanning the cgroup tree");
                        self.overflow_warned = true;
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(
                        "cannot read cgroup inotify events ({e}); rescanning every {:?}",
                        self.poll
                    );
                    self.inotify = None;
                    return;
                }
            }
        }
    }

    /// Scans the tree, keeping a watch on each directory walked and dropping those of
    /// directories no longer there.
    fn rescan(&mut self) -> Vec<Cgroup> {
        let mut seen = HashSet::new();
        let (inotify, watched, poll) = (&mut self.inotify, &mut self.watched, self.poll);
        let found = walk(&self.fs, &self.patterns, |dir, relative, ino| {
            let Some(active) = inotify.as_ref() else {
                return;
            };
            seen.insert(relative.to_owned());
            if watched
                .get(relative)
                .is_some_and(|&(_, watched_ino)| watched_ino == ino)
            {
                return;
            }
            match active.add_watch(dir, WATCH_MASK) {
                Ok(wd) => {
                    watched.insert(relative.to_owned(), (wd, ino));
                }
                Err(Errno::ENOENT | Errno::ENOTDIR) => {} // removed since it was listed
                Err(e) => {
                    // ENOSPC: fs.inotify.max_user_watches is used up.
                    tracing::warn!(
                        "cannot watch cgroup directory {} ({e}); rescanning every {poll:?}",
                        dir.display()
                    );
                    *inotify = None;
                }
            }
        });
        match &self.inotify {
            Some(inotify) => self.watched.retain(|relative, (wd, _)| {
                let keep = seen.contains(relative);
                if !keep {
                    // Fails when the kernel already dropped it with the directory; that is fine.
                    let _ = inotify.rm_watch(*wd);
                }
                keep
            }),
            None => self.watched.clear(),
        }
        found
    }

    /// What changed from the last reported set to `found`, which becomes the reported set.
    fn diff(&mut self, found: Vec<Cgroup>) -> Vec<CgroupChange> {
        let found: BTreeMap<PathBuf, Cgroup> = found.into_iter().map(|c| (c.path.clone(), c)).collect();
        let mut changes: Vec<CgroupChange> = self
            .current
            .values()
            .filter(|old| found.get(&old.path) != Some(old))
            .cloned()
            .map(CgroupChange::Removed)
            .collect();
        changes.extend(
            found
                .values()
                .filter(|new| self.current.get(&new.path) != Some(new))
                .cloned()
                .map(CgroupChange::Added),
        );
        self.current = found;
        changes
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;
    use crate::targets::cgroup::{
        fs::{
            CgroupError,
            tests::{ino, tree},
        },
        walk::procs_recursive,
    };

    /// A watch and the changes it reported that a test has not looked at yet.
    struct Watching {
        watch: CgroupWatch,
        stop: Shutdown,
        /// Never written: the watch's callers' other work.
        wake: (std::io::PipeReader, std::io::PipeWriter),
        pending: std::collections::VecDeque<CgroupChange>,
    }

    impl Watching {
        fn new((watch, initial): (CgroupWatch, Vec<Cgroup>)) -> (Vec<Cgroup>, Watching) {
            let stop = Shutdown::new().unwrap();
            let wake = std::io::pipe().unwrap();
            let pending = std::collections::VecDeque::new();
            (
                initial,
                Watching {
                    watch,
                    stop,
                    wake,
                    pending,
                },
            )
        }
    }

    /// The next change, or `None` if none comes within `within`.
    fn next(w: &mut Watching, within: Duration) -> Option<CgroupChange> {
        let deadline = Instant::now() + within;
        while w.pending.is_empty() && Instant::now() < deadline {
            let changes = w.watch.next_changes(&w.stop, w.wake.0.as_fd(), Some(deadline))?;
            w.pending.extend(changes);
        }
        w.pending.pop_front()
    }

    fn added(fs: &CgroupFs, relative: &str) -> CgroupChange {
        CgroupChange::Added(fs.resolve(relative).unwrap())
    }

    /// mkdir and rmdir of matching cgroups arrive as changes, non-matching ones do not.
    fn watcher_reports_changes(use_inotify: bool, poll: Duration) {
        let within = Duration::from_secs(2);
        let (tmp, fs) = tree(&["kubepods.slice/cri-containerd-old.scope", "system.slice"]);
        let patterns = vec![pattern_in(&fs, "kubepods.slice/**/cri-containerd-*.scope")];
        let (initial, mut changes) = Watching::new(CgroupWatch::start_with(fs.clone(), patterns, poll, use_inotify));
        assert_eq!(
            initial,
            [fs.resolve("kubepods.slice/cri-containerd-old.scope").unwrap()]
        );

        fs::create_dir(tmp.path().join("system.slice/cri-containerd-x.scope")).unwrap();
        // A new parent and child at once: the child must be found though the parent was not
        // watched when it was created.
        fs::create_dir_all(tmp.path().join("kubepods.slice/pod1.slice/cri-containerd-new.scope")).unwrap();
        let change = next(&mut changes, within);
        assert_eq!(
            change,
            Some(added(&fs, "kubepods.slice/pod1.slice/cri-containerd-new.scope"))
        );
        fs::create_dir(tmp.path().join("kubepods.slice/pod1.slice/cri-containerd-later.scope")).unwrap();
        assert_eq!(
            next(&mut changes, within),
            Some(added(&fs, "kubepods.slice/pod1.slice/cri-containerd-later.scope"))
        );

        let old = fs.resolve("kubepods.slice/cri-containerd-old.scope").unwrap();
        fs::remove_file(old.path.join("cgroup.procs")).unwrap();
        fs::remove_dir(&old.path).unwrap();
        assert_eq!(next(&mut changes, within), Some(CgroupChange::Removed(old)));
        assert_eq!(next(&mut changes, Duration::from_millis(500)), None);
    }

    fn pattern_in(fs: &CgroupFs, text: &str) -> CgroupPattern {
        CgroupPattern::parse(text, fs).unwrap()
    }

    #[test]
    fn the_watcher_reports_new_and_removed_cgroups_through_inotify() {
        // No poll tick comes during the test, so every change must arrive through inotify.
        watcher_reports_changes(true, Duration::from_secs(3600));
    }

    #[test]
    fn without_inotify_the_watcher_still_reports_changes_by_polling() {
        watcher_reports_changes(false, Duration::from_millis(200));
    }

    #[test]
    fn a_watch_returns_at_once_when_stopped() {
        let (_tmp, fs) = tree(&["a.slice"]);
        let patterns = vec![pattern_in(&fs, "*")];
        let (initial, mut w) = Watching::new(CgroupWatch::start(fs, patterns, Duration::from_secs(3600)));
        assert_eq!(initial.len(), 1);
        let trigger = w.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            trigger.trigger();
        });
        let start = Instant::now();
        assert_eq!(w.watch.next_changes(&w.stop, w.wake.0.as_fd(), None), None);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    }

    /// Removes a test's cgroup (and its `child`) however the test ends.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.0.join("child"));
            let _ = fs::remove_dir(&self.0);
        }
    }

    /// Against the kernel's hierarchy: ids are inodes, names relative to the mount, and mkdir /
    /// rmdir raise inotify events there. Needs root and a cgroup2 mount.
    #[test]
    fn a_real_cgroup_resolves_to_its_inode_and_is_watched() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: not root, cannot create a cgroup");
            return;
        }
        let fs = match CgroupFs::discover() {
            Ok(fs) => fs,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let name = format!("collector-test-{}", std::process::id());
        let dir = fs.mount().join(&name);
        let patterns = vec![pattern_in(&fs, &format!("{name}/*"))];
        fs::create_dir(&dir).unwrap();
        let _cleanup = Cleanup(dir.clone());

        let cgroup = fs.resolve(&name).unwrap();
        assert_eq!(
            cgroup,
            Cgroup {
                path: dir.clone(),
                name: name.clone(),
                id: ino(&dir)
            }
        );
        assert_eq!(fs.resolve(dir.to_str().unwrap()).unwrap(), cgroup);
        assert_eq!(fs.resolve(&format!("/{name}")).unwrap(), cgroup);
        let err = fs.resolve(&format!("{name}/cgroup.procs")).unwrap_err();
        assert!(matches!(err, CgroupError::NotADirectory { .. }), "{err:?}");
        assert_eq!(procs_recursive(&dir).unwrap(), Vec::<u32>::new());

        let (initial, mut changes) = Watching::new(CgroupWatch::start(fs.clone(), patterns, Duration::from_secs(3600)));
        assert!(initial.is_empty());
        let start = Instant::now();
        fs::create_dir(dir.join("child")).unwrap();
        let child = fs.resolve(&format!("{name}/child")).unwrap();
        assert_eq!(
            next(&mut changes, Duration::from_secs(1)),
            Some(CgroupChange::Added(child.clone()))
        );
        fs::remove_dir(dir.join("child")).unwrap();
        assert_eq!(
            next(&mut changes, Duration::from_secs(1)),
            Some(CgroupChange::Removed(child))
        );
        eprintln!("inotify round trip on cgroupfs: {:?}", start.elapsed());
    }
}

//! cgroup v2 targets: finding the v2 hierarchy, resolving `--cgroup` paths, matching
//! `--cgroup-pattern` globs, and watching for matching cgroups as they come and go.
//!
//! The kernel names a v2 cgroup by its id, which is the inode number of its directory (the
//! kernfs node id that `bpf_get_current_cgroup_id` returns), so everything here ends in a
//! [`Cgroup`] that carries that inode.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fs,
    io::{self, PipeReader, PipeWriter},
    os::{
        fd::AsFd,
        unix::{ffi::OsStringExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    str::FromStr,
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use globset::{GlobBuilder, GlobMatcher};
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Why a cgroup or the v2 hierarchy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read, so the v2 mount cannot be found.
    #[error("cannot read {MOUNTINFO}: {0}; the agent needs /proc mounted")]
    Mountinfo(#[source] io::Error),
    /// No cgroup2 filesystem is mounted (a v1-only host, or a container without it).
    #[error(
        "no cgroup v2 hierarchy is mounted (no cgroup2 line in {MOUNTINFO}); mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoV2Mount,
    /// The path names nothing, neither as given nor relative to the mount.
    #[error("cgroup {path} does not exist; give a directory under {mount} or a path relative to it")]
    NotFound { path: String, mount: String },
    /// The path exists but lies outside the v2 mount (a v1 hierarchy, or no cgroup at all).
    #[error("{path} is not in the cgroup v2 hierarchy (mounted at {mount}); give a directory under it")]
    OutsideHierarchy { path: String, mount: String },
    /// The path is a file, typically one of a cgroup's control files such as `cgroup.procs`.
    #[error("{path} is not a directory; give the cgroup's directory, e.g. {parent}")]
    NotADirectory { path: String, parent: String },
    /// A directory under the real mount without `cgroup.procs`: something else mounted there.
    #[error("{path} has no cgroup.procs, so it is not a cgroup; give a cgroup directory under {mount}")]
    NotACgroup { path: String, mount: String },
    /// The path could not be examined (usually permissions).
    #[error("cannot examine {path}: {source}; run the agent as root")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An absolute `--cgroup-pattern` that does not start with the v2 mount.
    #[error(
        "pattern {pattern} is not in the cgroup v2 hierarchy (mounted at {mount}); start it with {mount}/ or make it relative to it"
    )]
    PatternOutside { pattern: String, mount: String },
    /// A `--cgroup-pattern` that is not a usable glob.
    #[error("pattern {pattern}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
}

/// The cgroup v2 hierarchy: where it is mounted. Hybrid hosts mount it at
/// `/sys/fs/cgroup/unified`, pure v2 hosts at `/sys/fs/cgroup`, so it is looked up, not assumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFs {
    mount: PathBuf,
    /// Found in mountinfo, so a directory under the mount must hold `cgroup.procs` to be a
    /// cgroup. False for [`CgroupFs::at`], whose fake trees in tests have no control files.
    kernel: bool,
}

/// One cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cgroup {
    /// Absolute and canonical.
    pub path: PathBuf,
    /// Relative to the mount (`system.slice/nginx.service`); `/` for the root cgroup. The
    /// default target name; lossy if the directory name is not UTF-8.
    pub name: String,
    /// The directory's inode number, which is the id the kernel gives the cgroup.
    pub id: u64,
}

impl CgroupFs {
    /// Finds the v2 mount in `/proc/self/mountinfo`.
    pub fn discover() -> Result<CgroupFs, CgroupError> {
        let text = fs::read_to_string(MOUNTINFO).map_err(CgroupError::Mountinfo)?;
        CgroupFs::from_mountinfo(&text).ok_or(CgroupError::NoV2Mount)
    }

    /// The v2 mount named in a mountinfo text (see proc_pid_mountinfo(5)): the first `cgroup2`
    /// mount of the hierarchy's root, else the first `cgroup2` mount at all (a bind mount of a
    /// sub-cgroup is all some containers have).
    pub fn from_mountinfo(text: &str) -> Option<CgroupFs> {
        let mut any = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            // 0:id 1:parent 2:major:minor 3:root 4:mount point 5:options [optional...] - fstype ...
            let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6) else {
                continue;
            };
            if fields.get(sep + 1) != Some(&"cgroup2") {
                continue;
            }
            let fs = CgroupFs {
                mount: unescape_mountinfo(fields[4]),
                kernel: true,
            };
            if fields[3] == "/" {
                return Some(fs);
            }
            any.get_or_insert(fs);
        }
        any
    }

    /// A hierarchy at `mount` taken on trust, without the `cgroup.procs` check: for tests on
    /// a plain directory tree.
    pub fn at(mount: impl Into<PathBuf>) -> CgroupFs {
        let mount = mount.into();
        // Canonical, so that resolved (canonical) paths compare with it; /tmp may be a symlink.
        let mount = fs::canonicalize(&mount).unwrap_or(mount);
        CgroupFs { mount, kernel: false }
    }

    /// Where the v2 hierarchy is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup at `path`: absolute, or relative to the mount (`system.slice/x.service`).
    /// An absolute path that does not exist is also tried relative to the mount, so the path
    /// shown in `/proc/PID/cgroup` (`/system.slice/x.service`) works as given.
    pub fn resolve(&self, path: &str) -> Result<Cgroup, CgroupError> {
        let given = Path::new(path);
        let under_mount = self.mount.join(path.trim_start_matches('/'));
        let mut canonical = fs::canonicalize(if given.is_absolute() { given } else { &under_mount });
        if given.is_absolute() && matches!(&canonical, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            canonical = fs::canonicalize(&under_mount);
        }
        let canonical = match canonical {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let shown = if given.is_absolute() { given } else { &under_mount };
                return Err(CgroupError::NotFound {
                    path: shown.display().to_string(),
                    mount: self.mount_str(),
                });
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if !canonical.starts_with(&self.mount) {
            return Err(CgroupError::OutsideHierarchy {
                path: path.to_owned(),
                mount: self.mount_str(),
            });
        }
        let meta = fs::metadata(&canonical).map_err(|source| CgroupError::Io {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            let parent = canonical.parent().unwrap_or(&self.mount);
            return Err(CgroupError::NotADirectory {
                path: path.to_owned(),
                parent: parent.display().to_string(),
            });
        }
        if self.kernel && !canonical.join("cgroup.procs").exists() {
            return Err(CgroupError::NotACgroup {
                path: path.to_owned(),
                mount: self.mount_str(),
            });
        }
        Ok(self.cgroup(canonical, meta.ino()))
    }

    fn cgroup(&self, path: PathBuf, id: u64) -> Cgroup {
        let relative = path.strip_prefix(&self.mount).unwrap_or(&path).to_string_lossy();
        let name = if relative.is_empty() {
            "/".to_owned()
        } else {
            relative.into_owned()
        };
        Cgroup { path, name, id }
    }

    fn mount_str(&self) -> String {
        self.mount.display().to_string()
    }
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.and_then(|d| u8::try_from(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok());
        match value {
            Some(byte) if bytes[i] == b'\\' => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
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
            crate::targets::check_name(s, name, "NAME=PATH, e.g. web=system.slice/nginx.service")?;
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

/// One `--cgroup-pattern`: a glob over cgroup paths relative to the mount.
///
/// `*`, `?`, `[abc]`, `[a-z]` match within one path segment; `**` as a whole segment matches
/// zero or more segments (`a/**/b` matches `a/b` and `a/x/y/b`; `a/**` matches below `a`, not
/// `a` itself); `{x,y}` matches either. `\` is an ordinary character, so systemd's escapes
/// (`system-systemd\x2dfsck.slice`) are written as the kernel shows them. The root cgroup is
/// never matched: give it with `--cgroup`.
///
/// Built by [`CgroupPattern::parse`] once the mount is known, since an absolute pattern must
/// be made relative to it; [`CgroupPattern::validate`] checks the syntax before that (for clap).
#[derive(Clone, Debug)]
pub struct CgroupPattern {
    text: String,
    matcher: GlobMatcher,
    /// The leading segments without wildcards: only directories on this path are walked.
    literal: Vec<String>,
    /// How many segments a match can have at most; `None` with `**`.
    max_depth: Option<usize>,
}

impl CgroupPattern {
    /// The pattern `text` (absolute under the mount, or relative to it) for the hierarchy `fs`.
    pub fn parse(text: &str, fs: &CgroupFs) -> Result<CgroupPattern, CgroupError> {
        let relative = if text.starts_with('/') {
            let mount = fs.mount_str();
            match text.strip_prefix(mount.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                _ => {
                    return Err(CgroupError::PatternOutside {
                        pattern: text.to_owned(),
                        mount,
                    });
                }
            }
        } else {
            text
        };
        CgroupPattern::compile(text, relative).map_err(|reason| CgroupError::InvalidPattern {
            pattern: text.to_owned(),
            reason,
        })
    }

    /// Checks a pattern's syntax without knowing the mount; usable as a clap `value_parser`.
    pub fn validate(text: &str) -> Result<String, String> {
        CgroupPattern::compile(text, text)
            .map(|_| text.to_owned())
            .map_err(|reason| format!("pattern {text}: {reason}"))
    }

    fn compile(text: &str, relative: &str) -> Result<CgroupPattern, String> {
        let segments: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err("selects no cgroup below the mount; give a glob such as system.slice/*.service".to_owned());
        }
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err("'.' and '..' never match; write the path as it is under the mount".to_owned());
        }
        let glob = segments.join("/");
        let matcher = GlobBuilder::new(&glob)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| format!("{}; see --help for the glob syntax", e.kind()))?
            .compile_matcher();
        // A brace group spans segments from the one holding its '{', so stopping at the first
        // segment with any special character keeps `literal` a true prefix of every match.
        let literal = segments
            .iter()
            .take_while(|s| !s.contains(['*', '?', '[', '{']))
            .map(|s| (*s).to_owned())
            .collect();
        let max_depth = (!glob.contains("**")).then_some(segments.len());
        Ok(CgroupPattern {
            text: text.to_owned(),
            matcher,
            literal,
            max_depth,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the cgroup at `relative` (to the mount, no leading `/`) matches.
    pub fn matches(&self, relative: &str) -> bool {
        self.matcher.is_match(relative)
    }

    /// Whether a cgroup below the directory `relative` ("" for the root) could match, i.e.
    /// whether a walk must enter it.
    fn may_match_below(&self, relative: &str) -> bool {
        let segments: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
        let common = segments.len().min(self.literal.len());
        segments[..common] == self.literal[..common] && self.max_depth.is_none_or(|max| segments.len() < max)
    }

    /// Every cgroup under `fs` that matches, sorted by path.
    pub fn scan(&self, fs: &CgroupFs) -> Vec<Cgroup> {
        walk(fs, std::slice::from_ref(self), |_, _, _| {})
    }
}

/// Walks the tree under the mount and returns every cgroup that matches one of `patterns`,
/// sorted by path. Only directories a pattern could match below are entered, so
/// `system.slice/*.service` reads two directories, not the whole host. `enter` is called on
/// each entered directory before it is read (so a watch set there misses no new child).
/// Symlinks are not followed; unreadable or vanished directories are skipped.
fn walk(fs: &CgroupFs, patterns: &[CgroupPattern], mut enter: impl FnMut(&Path, &str, u64)) -> Vec<Cgroup> {
    let mut found = Vec::new();
    let Ok(root) = fs::symlink_metadata(&fs.mount) else {
        return found;
    };
    if patterns.is_empty() {
        return found;
    }
    let mut stack = vec![(fs.mount.clone(), String::new(), root.ino())];
    while let Some((dir, relative, ino)) = stack.pop() {
        enter(&dir, &relative, ino);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let child = if relative.is_empty() {
                name.into_owned()
            } else {
                format!("{relative}/{name}")
            };
            let matched = patterns.iter().any(|p| p.matches(&child));
            let descend = patterns.iter().any(|p| p.may_match_below(&child));
            if !matched && !descend {
                continue;
            }
            // symlink_metadata, not the dirent's d_ino: the inode is the cgroup id, and some
            // filesystems (overlayfs) report a different d_ino.
            let Ok(meta) = entry.metadata() else {
                continue; // removed since read_dir
            };
            let path = entry.path();
            if matched {
                found.push(fs.cgroup(path.clone(), meta.ino()));
            }
            if descend {
                stack.push((path, child, meta.ino()));
            }
        }
    }
    found.sort();
    found
}

/// Every pid in `cgroup.procs` of `dir` and of all cgroups below it, sorted. A cgroup below
/// `dir` that is removed during the walk is skipped; `dir` itself must be readable.
pub fn procs_recursive(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(cgroup) = stack.pop() {
        let top = cgroup == dir;
        // ENOENT/ENODEV: removed meanwhile. EOPNOTSUPP: a threaded cgroup, whose processes its
        // threaded domain above already listed (Documentation/admin-guide/cgroup-v2.rst,
        // "Threads"); its children are threaded too.
        let skip = |e: &io::Error| {
            !top && (e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error()
                    .is_some_and(|n| n == libc::ENODEV || n == libc::EOPNOTSUPP))
        };
        match fs::read_to_string(cgroup.join("cgroup.procs")) {
            Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            Err(e) if skip(&e) => continue,
            Err(e) => return Err(e),
        }
        match fs::read_dir(&cgroup) {
            Ok(entries) => stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            ),
            Err(e) if skip(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    // A process migrating during the walk can be read in two cgroups.
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The v2 cgroup path of `pid` (relative to its cgroup namespace root, e.g.
/// `/system.slice/nginx.service`), or `None` when the process is gone or has none.
pub fn v2_path_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    v2_path_in(&text).map(str::to_owned)
}

/// The path of the `0::` line of a `/proc/PID/cgroup` text (cgroups(7)). `None` for a cgroup
/// the kernel marks ` (deleted)`: there is no directory to name.
pub fn v2_path_in(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| !path.ends_with(" (deleted)"))
}

/// A difference in the set of cgroups that match the watched patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupChange {
    /// A matching cgroup appeared (or a matching path was recreated with a new id).
    Added(Cgroup),
    /// A cgroup reported before is gone (or its path now has a new id).
    Removed(Cgroup),
}

/// Stops the watcher thread when dropped (or by [`CgroupWatcher::stop`]), within a few ms.
#[derive(Debug)]
pub struct CgroupWatcher {
    /// Closing it wakes the thread (its end sees POLLHUP), however long its poll interval.
    wake: Option<PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl CgroupWatcher {
    /// Stops the thread and waits for it.
    pub fn stop(self) {}
}

impl Drop for CgroupWatcher {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watches for cgroups matching any of `patterns`. Returns the matching cgroups now, and a
/// channel that then gets every [`CgroupChange`] relative to that set: the initial scan and the
/// watch are one, so no cgroup created in between is missed.
///
/// A new cgroup is seen within milliseconds through inotify on the directories a match can be
/// under (mkdir and rmdir on cgroupfs raise IN_CREATE and IN_DELETE); the tree is also
/// rescanned every `poll` as a safety net, and that rescan is all there is when inotify cannot
/// be used (warned once). The channel is unbounded because a lost change is a lost target;
/// its rate is that of cgroup creation. The thread ends when the watcher is dropped or the
/// receiver is.
pub fn watch(
    fs: CgroupFs,
    patterns: Vec<CgroupPattern>,
    poll: Duration,
) -> io::Result<(Vec<Cgroup>, Receiver<CgroupChange>, CgroupWatcher)> {
    watch_with(fs, patterns, poll, true)
}

fn watch_with(
    fs: CgroupFs,
    patterns: Vec<CgroupPattern>,
    poll: Duration,
    use_inotify: bool,
) -> io::Result<(Vec<Cgroup>, Receiver<CgroupChange>, CgroupWatcher)> {
    let (stop, wake) = io::pipe()?;
    let inotify = if use_inotify {
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot use inotify to watch cgroups ({e}); new cgroups are found by a rescan every {poll:?}"
                )
            })
            .ok()
    } else {
        None
    };
    let mut state = WatchState {
        fs,
        patterns,
        inotify,
        watched: HashMap::new(),
        current: BTreeMap::new(),
        poll,
        overflow_warned: false,
    };
    let initial = state.rescan();
    state.current = initial.iter().map(|c| (c.path.clone(), c.clone())).collect();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("cgroup-watch".to_owned())
        .spawn(move || state.run(&stop, &tx))?;
    Ok((
        initial,
        rx,
        CgroupWatcher {
            wake: Some(wake),
            thread: Some(thread),
        },
    ))
}

/// Directories a new cgroup can appear in: created, removed, renamed children, or itself gone.
const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

struct WatchState {
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
    overflow_warned: bool,
}

impl WatchState {
    fn run(mut self, stop: &PipeReader, tx: &Sender<CgroupChange>) {
        let mut next_poll = Instant::now() + self.poll;
        loop {
            let (stopped, notified) = self.wait(stop, next_poll.saturating_duration_since(Instant::now()));
            if stopped {
                return;
            }
            let polled = Instant::now() >= next_poll;
            if polled {
                next_poll = Instant::now() + self.poll;
            }
            if !notified && !polled {
                continue;
            }
            let found = self.rescan();
            for change in self.diff(found) {
                if tx.send(change).is_err() {
                    return; // nobody listens
                }
            }
        }
    }

    /// Sleeps until `stop` closes, an inotify event, or `timeout`. Returns (stopped, notified).
    fn wait(&mut self, stop: &PipeReader, timeout: Duration) -> (bool, bool) {
        let millis = timeout.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
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
        let notified = fds.get(1).is_some_and(ready);
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
    use std::os::unix::fs::symlink;

    use super::*;

    const PURE_V2: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 22 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
";

    // This machine's: v1 controllers at /sys/fs/cgroup/*, v2 at .../unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1_ONLY: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

    fn mount_of(text: &str) -> Option<PathBuf> {
        CgroupFs::from_mountinfo(text).map(|fs| fs.mount().to_path_buf())
    }

    #[test]
    fn the_v2_mount_is_found_on_pure_and_hybrid_hosts_and_not_on_v1_ones() {
        assert_eq!(mount_of(PURE_V2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(mount_of(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(mount_of(V1_ONLY), None);
        assert_eq!(mount_of(""), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone_and_the_hierarchy_root_is_preferred() {
        let escaped = "50 1 0:40 / /mnt/my\\040cgroups\\134x rw - cgroup2 none rw\n";
        assert_eq!(mount_of(escaped), Some(PathBuf::from("/mnt/my cgroups\\x")));
        let bind_first = "\
50 1 0:40 /kubepods.slice /host/pods rw master:3 - cgroup2 cgroup2 rw
51 1 0:40 / /sys/fs/cgroup rw shared:1 master:2 - cgroup2 cgroup2 rw
";
        assert_eq!(mount_of(bind_first), Some(PathBuf::from("/sys/fs/cgroup")));
        let bind_only = "50 1 0:40 /kubepods.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(mount_of(bind_only), Some(PathBuf::from("/sys/fs/cgroup")));
        // An fstype of cgroup2 only counts after the separator.
        assert_eq!(mount_of("50 1 0:40 / /cgroup2 rw - tmpfs cgroup2 rw\n"), None);
    }

    /// A fake hierarchy: `dirs` under a tempdir, each directory with an empty `cgroup.procs`.
    fn tree(dirs: &[&str]) -> (tempfile::TempDir, CgroupFs) {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        for dir in dirs {
            fs::create_dir_all(tmp.path().join(dir)).unwrap();
            for ancestor in Path::new(dir).ancestors() {
                fs::write(tmp.path().join(ancestor).join("cgroup.procs"), "").unwrap();
            }
        }
        let fs = CgroupFs::at(tmp.path());
        (tmp, fs)
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_cgroup_resolves_from_a_relative_absolute_or_proc_style_path() {
        let (_tmp, fs) = tree(&["system.slice/nginx.service"]);
        let dir = fs.mount().join("system.slice/nginx.service");
        let want = Cgroup {
            path: dir.clone(),
            name: "system.slice/nginx.service".to_owned(),
            id: ino(&dir),
        };
        assert_eq!(fs.resolve("system.slice/nginx.service").unwrap(), want);
        assert_eq!(fs.resolve("system.slice/nginx.service/").unwrap(), want);
        assert_eq!(fs.resolve(dir.to_str().unwrap()).unwrap(), want);
        assert_eq!(fs.resolve("/system.slice/nginx.service").unwrap(), want);
        assert_eq!(fs.resolve("system.slice/../system.slice/nginx.service").unwrap(), want);
        let root = fs.resolve(fs.mount().to_str().unwrap()).unwrap();
        assert_eq!((root.name.as_str(), root.id), ("/", ino(fs.mount())));
        assert_eq!(fs.resolve("").unwrap().name, "/");
    }

    #[test]
    fn a_bad_cgroup_path_says_what_is_wrong() {
        let (tmp, fs) = tree(&["system.slice/nginx.service"]);
        let mount = fs.mount().display().to_string();
        let outside = tempfile::tempdir().unwrap();
        let outside = fs::canonicalize(outside.path()).unwrap();
        symlink(&outside, tmp.path().join("escape")).unwrap();
        let procs = format!("{mount}/system.slice/nginx.service/cgroup.procs");
        let outside = outside.display().to_string();
        for (input, variant, needle) in [
            (
                "system.slice/gone.service",
                "NotFound",
                format!("cgroup {mount}/system.slice/gone.service does not exist"),
            ),
            (
                "/nonexistent/x",
                "NotFound",
                "cgroup /nonexistent/x does not exist".to_owned(),
            ),
            (
                outside.as_str(),
                "OutsideHierarchy",
                format!("{outside} is not in the cgroup v2 hierarchy (mounted at {mount}); give a directory under it"),
            ),
            (
                "escape",
                "OutsideHierarchy",
                "escape is not in the cgroup v2 hierarchy".to_owned(),
            ),
            (
                "..",
                "OutsideHierarchy",
                ".. is not in the cgroup v2 hierarchy".to_owned(),
            ),
            (
                procs.as_str(),
                "NotADirectory",
                format!(
                    "{procs} is not a directory; give the cgroup's directory, e.g. {mount}/system.slice/nginx.service"
                ),
            ),
        ] {
            let err = fs.resolve(input).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{input}: {err:?}");
            assert!(err.to_string().contains(&needle), "{input}: {err}");
        }
    }

    #[test]
    fn under_the_real_mount_a_directory_without_cgroup_procs_is_not_a_cgroup() {
        let (_tmp, fake) = tree(&["a.slice"]);
        fs::create_dir(fake.mount().join("plain")).unwrap();
        let line = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", fake.mount().display());
        let fs = CgroupFs::from_mountinfo(&line).unwrap();
        assert_eq!(fs.resolve("a.slice").unwrap().name, "a.slice");
        let err = fs.resolve("plain").unwrap_err();
        assert!(matches!(err, CgroupError::NotACgroup { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("plain has no cgroup.procs, so it is not a cgroup"),
            "{err}"
        );
        // The fake hierarchy of `at` takes any directory.
        assert_eq!(fake.resolve("plain").unwrap().name, "plain");
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

    fn pattern(text: &str) -> CgroupPattern {
        CgroupPattern::parse(text, &CgroupFs::at("/sys/fs/cgroup")).unwrap()
    }

    #[test]
    fn patterns_match_within_segments_and_double_star_spans_them() {
        for (glob, path, want) in [
            ("system.slice/*.service", "system.slice/nginx.service", true),
            ("system.slice/*.service", "system.slice/nginx.socket", false),
            ("system.slice/*.service", "system.slice/a.service/b.service", false),
            ("system.slice/*.service", "system.slice", false),
            ("system.slice/*.service", "user.slice/nginx.service", false),
            (
                "kubepods.slice/**/cri-containerd-*.scope",
                "kubepods.slice/cri-containerd-1.scope",
                true,
            ),
            (
                "kubepods.slice/**/cri-containerd-*.scope",
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab12.scope",
                true,
            ),
            (
                "kubepods.slice/**/cri-containerd-*.scope",
                "kubepods.slice/pod1.slice",
                false,
            ),
            (
                "kubepods.slice/**/cri-containerd-*.scope",
                "other.slice/cri-containerd-1.scope",
                false,
            ),
            ("kubepods.slice/**", "kubepods.slice/a/b", true),
            ("kubepods.slice/**", "kubepods.slice", false),
            ("**/*.scope", "session-1.scope", true),
            ("**/*.scope", "user.slice/user-0.slice/session-1.scope", true),
            ("*", "a.slice", true),
            ("*", "a.slice/b", false),
            ("user-?.slice", "user-0.slice", true),
            ("user-?.slice", "user-10.slice", false),
            ("user-[0-4].slice", "user-3.slice", true),
            ("user-[0-4].slice", "user-5.slice", false),
            ("user-[abc].slice", "user-b.slice", true),
            ("{system,user}.slice", "user.slice", true),
            (
                "system.slice/system-systemd\\x2dfsck.slice",
                "system.slice/system-systemd\\x2dfsck.slice",
                true,
            ),
            ("a//b/", "a/b", true),
            (
                "/sys/fs/cgroup/system.slice/*.service",
                "system.slice/nginx.service",
                true,
            ),
        ] {
            assert_eq!(pattern(glob).matches(path), want, "{glob} vs {path}");
        }
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let fs = CgroupFs::at("/sys/fs/cgroup/unified");
        for (text, needle) in [
            (
                "/sys/fs/cgroup/system.slice/*",
                "is not in the cgroup v2 hierarchy (mounted at /sys/fs/cgroup/unified)",
            ),
            ("/sys/fs/cgroup/unifiedx/*", "is not in the cgroup v2 hierarchy"),
            ("/sys/fs/cgroup/unified", "selects no cgroup below the mount"),
            ("", "selects no cgroup below the mount"),
            ("a/../b", "'.' and '..' never match"),
            ("user-[0-4.slice", "unclosed character class"),
        ] {
            let err = CgroupPattern::parse(text, &fs).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
        assert!(
            CgroupPattern::validate("user-[0-4.slice")
                .unwrap_err()
                .contains("unclosed")
        );
        assert_eq!(CgroupPattern::validate("/any/abs/*").unwrap(), "/any/abs/*");
    }

    #[test]
    fn a_walk_enters_only_directories_a_pattern_can_match_below() {
        for (glob, dir, want) in [
            ("system.slice/*.service", "", true),
            ("system.slice/*.service", "system.slice", true),
            ("system.slice/*.service", "system.slice/a.service", false),
            ("system.slice/*.service", "user.slice", false),
            ("a/b/**/c", "a", true),
            ("a/b/**/c", "a/x", false),
            ("a/b/**/c", "a/b/x/y/z", true),
            ("*/x", "anything", true),
            ("*/x", "anything/x", false),
            ("{a,b/c}", "b", true),
        ] {
            assert_eq!(pattern(glob).may_match_below(dir), want, "{glob} below {dir:?}");
        }
    }

    #[test]
    fn a_scan_returns_matching_directories_sorted_without_following_symlinks() {
        let (tmp, fs) = tree(&[
            "system.slice/nginx.service",
            "system.slice/cron.service",
            "system.slice/cron.service/child.service",
            "system.slice/dbus.socket",
            "kubepods.slice/pod1.slice/cri-containerd-b.scope",
            "kubepods.slice/cri-containerd-a.scope",
            "user.slice/x.service",
        ]);
        fs::write(tmp.path().join("system.slice/file.service"), "").unwrap();
        symlink(
            tmp.path().join("user.slice/x.service"),
            tmp.path().join("system.slice/link.service"),
        )
        .unwrap();
        let names = |glob: &str| pattern(glob).scan(&fs).into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names("system.slice/*.service"),
            ["system.slice/cron.service", "system.slice/nginx.service"]
        );
        assert_eq!(
            names("kubepods.slice/**/cri-containerd-*.scope"),
            [
                "kubepods.slice/cri-containerd-a.scope",
                "kubepods.slice/pod1.slice/cri-containerd-b.scope"
            ]
        );
        assert_eq!(names("**/*.service").len(), 4);
        assert!(names("nothing.slice/*").is_empty());
        let found = pattern("system.slice/nginx.service").scan(&fs);
        assert_eq!(found, [fs.resolve("system.slice/nginx.service").unwrap()]);
    }

    #[test]
    fn procs_are_collected_from_the_whole_subtree_and_vanished_children_are_skipped() {
        let (tmp, _fs) = tree(&["a.slice/b.service", "a.slice/c.service/d.scope", "a.slice/gone.service"]);
        let a = tmp.path().join("a.slice");
        fs::write(a.join("cgroup.procs"), "10\n").unwrap();
        fs::write(a.join("b.service/cgroup.procs"), "20\n21\n").unwrap();
        fs::write(a.join("c.service/d.scope/cgroup.procs"), "30\n10\n").unwrap();
        // As if removed between listing a.slice and reading it.
        fs::remove_file(a.join("gone.service/cgroup.procs")).unwrap();
        assert_eq!(procs_recursive(&a).unwrap(), [10, 20, 21, 30]);
        assert_eq!(procs_recursive(&a.join("b.service")).unwrap(), [20, 21]);
        let err = procs_recursive(&a.join("gone.service")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_v2_path_is_the_zero_line_of_proc_pid_cgroup() {
        let hybrid = "12:pids:/user.slice/user-0.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n0::/user.slice/user-0.slice/session-1.scope\n";
        for (text, want) in [
            ("0::/system.slice/nginx.service\n", Some("/system.slice/nginx.service")),
            ("0::/\n", Some("/")),
            (hybrid, Some("/user.slice/user-0.slice/session-1.scope")),
            ("12:pids:/a\n1:name=systemd:/a\n", None),
            ("0::/a.slice/gone.scope (deleted)\n", None),
            ("", None),
        ] {
            assert_eq!(v2_path_in(text), want, "{text:?}");
        }
        let own = v2_path_of(std::process::id());
        let has_v2 = fs::read_to_string("/proc/self/cgroup").unwrap().contains("0::");
        assert_eq!(own.is_some(), has_v2);
        assert_eq!(v2_path_of(u32::MAX), None);
    }

    /// The next change, or `None` if none comes within `within`.
    fn next(changes: &Receiver<CgroupChange>, within: Duration) -> Option<CgroupChange> {
        changes.recv_timeout(within).ok()
    }

    fn added(fs: &CgroupFs, relative: &str) -> CgroupChange {
        CgroupChange::Added(fs.resolve(relative).unwrap())
    }

    /// mkdir and rmdir of matching cgroups arrive as changes, non-matching ones do not.
    fn watcher_reports_changes(use_inotify: bool, poll: Duration) {
        let within = Duration::from_secs(2);
        let (tmp, fs) = tree(&["kubepods.slice/cri-containerd-old.scope", "system.slice"]);
        let patterns = vec![pattern_in(&fs, "kubepods.slice/**/cri-containerd-*.scope")];
        let (initial, changes, watcher) = watch_with(fs.clone(), patterns, poll, use_inotify).unwrap();
        assert_eq!(
            initial,
            [fs.resolve("kubepods.slice/cri-containerd-old.scope").unwrap()]
        );

        fs::create_dir(tmp.path().join("system.slice/cri-containerd-x.scope")).unwrap();
        // A new parent and child at once: the child must be found though the parent was not
        // watched when it was created.
        fs::create_dir_all(tmp.path().join("kubepods.slice/pod1.slice/cri-containerd-new.scope")).unwrap();
        let change = next(&changes, within);
        assert_eq!(
            change,
            Some(added(&fs, "kubepods.slice/pod1.slice/cri-containerd-new.scope"))
        );
        fs::create_dir(tmp.path().join("kubepods.slice/pod1.slice/cri-containerd-later.scope")).unwrap();
        assert_eq!(
            next(&changes, within),
            Some(added(&fs, "kubepods.slice/pod1.slice/cri-containerd-later.scope"))
        );

        let old = fs.resolve("kubepods.slice/cri-containerd-old.scope").unwrap();
        fs::remove_file(old.path.join("cgroup.procs")).unwrap();
        fs::remove_dir(&old.path).unwrap();
        assert_eq!(next(&changes, within), Some(CgroupChange::Removed(old)));
        assert_eq!(next(&changes, Duration::from_millis(500)), None);
        watcher.stop();
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
    fn the_watcher_stops_promptly_when_dropped() {
        let (_tmp, fs) = tree(&["a.slice"]);
        let patterns = vec![pattern_in(&fs, "*")];
        let (initial, changes, watcher) = watch(fs, patterns, Duration::from_secs(3600)).unwrap();
        assert_eq!(initial.len(), 1);
        let start = Instant::now();
        drop(watcher);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        // The thread is gone, so the channel is closed.
        assert_eq!(
            changes.recv_timeout(Duration::from_secs(1)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
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
        // Removes the test cgroups however the test ends.
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = fs::remove_dir(self.0.join("child"));
                let _ = fs::remove_dir(&self.0);
            }
        }
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

        let (initial, changes, _watcher) = watch(fs.clone(), patterns, Duration::from_secs(3600)).unwrap();
        assert!(initial.is_empty());
        let start = Instant::now();
        fs::create_dir(dir.join("child")).unwrap();
        let child = fs.resolve(&format!("{name}/child")).unwrap();
        assert_eq!(
            next(&changes, Duration::from_secs(1)),
            Some(CgroupChange::Added(child.clone()))
        );
        fs::remove_dir(dir.join("child")).unwrap();
        assert_eq!(
            next(&changes, Duration::from_secs(1)),
            Some(CgroupChange::Removed(child))
        );
        eprintln!("inotify round trip on cgroupfs: {:?}", start.elapsed());
    }
}

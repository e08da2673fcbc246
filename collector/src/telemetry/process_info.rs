//! What a process event says about its process beyond the kernel record: the executable's
//! path (`exe`), the parent (`ppid`) and the v2 cgroup (`cgroup`, also on TCP events).
//!
//! The kernel record holds the pid and comm only (a path per event would make every record
//! 4 KiB). The agent reads /proc when a target process starts or execs and keeps what it read
//! until the process exits, when /proc no longer has its executable: an exit event names the
//! program that ran, which is what a `process.exit` tagged by `exe` means.
use std::{collections::HashMap, fs};

use crate::targets::proc::v2_path_of;

/// The keys that come from /proc rather than from the kernel's record. They are read only
/// while someone looks: a handler that shows every key, or a definition that uses one; else
/// process events carry `ppid` of a start (in the record) and the target's `cgroup`, as
/// reading /proc per start doubled the agent's CPU in process storms (BENCHMARKS.md).
pub const FROM_PROC: &[&str] = &["exe", "ppid", "cgroup"];

/// Processes remembered at most: one entry per live target process whose start or exec the
/// agent saw. Beyond it, an exit reads /proc (a zombie still has its status and cgroup).
const MAX_PROCESSES: usize = 65_536;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub exe: Option<String>,
    pub ppid: Option<u32>,
    pub cgroup: Option<String>,
}

/// The processes seen starting or executing, by pid. Owned by the ring-buffer reader,
/// which handles records in order.
#[derive(Debug, Default)]
pub struct Processes {
    known: HashMap<u32, ProcessInfo>,
}

impl Processes {
    /// A new process `pid` of `parent_pid`: a fork runs its parent's program in its parent's
    /// cgroup until it execs or moves, so the parent answers when /proc has nothing of the
    /// child (it is already gone).
    pub fn started(&mut self, pid: u32, parent_pid: u32) -> ProcessInfo {
        let known = self.known.get(&parent_pid);
        let info = ProcessInfo {
            exe: exe_of(pid).or_else(|| known.and_then(|p| p.exe.clone()).or_else(|| exe_of(parent_pid))),
            ppid: Some(parent_pid),
            cgroup: v2_path_of(pid).or_else(|| known.and_then(|p| p.cgroup.clone()).or_else(|| v2_path_of(parent_pid))),
        };
        self.remember(pid, info.clone());
        info
    }

    /// `pid` executed `filename` (as given to execve). /proc's link is the resolved path; a
    /// process gone before it is read gets `filename` resolved the same way where it can be
    /// (an absolute path whose file is still there), so one program keeps one `exe` however
    /// soon its processes exit (`/bin/true` is `/usr/bin/true` on a merged-/usr host).
    pub fn executed(&mut self, pid: u32, filename: &str) -> ProcessInfo {
        let before = self.known.remove(&pid).unwrap_or_default();
        let resolved = || {
            let path = std::path::Path::new(filename);
            let real = path.is_absolute().then(|| fs::canonicalize(path).ok()).flatten();
            Some(real.map_or_else(|| filename.to_owned(), |p| p.to_string_lossy().into_owned()))
        };
        let info = ProcessInfo {
            exe: exe_of(pid).or_else(resolved),
            ppid: before.ppid.or_else(|| ppid_of(pid)),
            cgroup: v2_path_of(pid).or(before.cgroup),
        };
        self.remember(pid, info.clone());
        info
    }

    /// The v2 cgroup `pid` is in, for an event that is not its start, exec or exit (a TCP
    /// connection): remembered, else read and remembered (until its exit event).
    pub fn cgroup_of(&mut self, pid: u32) -> Option<String> {
        if let Some(cgroup) = self.known.get(&pid).and_then(|info| info.cgroup.clone()) {
            return Some(cgroup);
        }
        let cgroup = v2_path_of(pid)?;
        let mut info = self.known.get(&pid).cloned().unwrap_or_default();
        info.cgroup = Some(cgroup.clone());
        self.remember(pid, info);
        Some(cgroup)
    }

    /// `pid` exited while no one looked at /proc's keys: forgotten, if it was known.
    pub fn forget(&mut self, pid: u32) {
        self.known.remove(&pid);
    }

    /// `pid` exited: what was known of it, which is forgotten.
    pub fn exited(&mut self, pid: u32) -> ProcessInfo {
        self.known.remove(&pid).unwrap_or_else(|| ProcessInfo {
            exe: exe_of(pid),
            ppid: ppid_of(pid),
            cgroup: v2_path_of(pid),
        })
    }

    fn remember(&mut self, pid: u32, info: ProcessInfo) {
        if self.known.len() < MAX_PROCESSES || self.known.contains_key(&pid) {
            self.known.insert(pid, info);
        }
    }
}

fn exe_of(pid: u32) -> Option<String> {
    let path = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(path.to_string_lossy().into_owned())
}

fn ppid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_described_from_proc_and_forgotten_at_exit() {
        let me = std::process::id();
        let mut processes = Processes::default();
        let info = processes.started(me, 1);
        assert_eq!(info.exe, exe_of(me));
        assert!(info.exe.is_some());
        assert_eq!(info.ppid, Some(1));
        assert_eq!(processes.exited(me), info);
        // Not known any more: read from /proc again, with the real parent.
        assert_eq!(processes.exited(me).ppid, ppid_of(me));
    }

    #[test]
    fn a_child_gone_before_it_is_read_inherits_its_parents_program_and_cgroup() {
        let mut processes = Processes::default();
        let parent = processes.started(std::process::id(), 1);
        let child = processes.started(u32::MAX, std::process::id());
        assert_eq!((child.exe, child.cgroup), (parent.exe, parent.cgroup));
        let exec = processes.executed(u32::MAX, "/bin/true");
        let true_exe = fs::canonicalize("/bin/true").unwrap();
        assert_eq!(exec.exe.as_deref(), true_exe.to_str(), "as /proc would name it");
        let relative = processes.executed(u32::MAX, "true");
        assert_eq!(relative.exe.as_deref(), Some("true"), "nothing to resolve it against");
        assert_eq!(exec.ppid, Some(std::process::id()));
    }
}

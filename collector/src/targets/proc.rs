//! What the target lifecycle reads from /proc: a process's identity (PID and start time),
//! thread count, state and cgroup v2 path, and the host's process list. A process that
//! vanishes while being read is simply not there; nothing here fails for that.
use std::{fs, sync::OnceLock};

use procfs::process::Process;

use super::{
    cgroup::{fs::CgroupFs, walk::containing},
    error::TargetError,
};

/// When the process started (clock ticks since boot): with the PID, its identity.
pub fn start_time(pid: u32) -> Option<u64> {
    Process::new(pid as i32).ok()?.stat().ok().map(|s| s.starttime)
}

/// Threads of `pid` now (1 if it is already gone: it was one process when seen).
pub fn thread_count(pid: u32) -> i64 {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(1, |d| d.count() as i64)
}

/// A named PID must be a running process, and a process rather than one of its threads
/// (`TARGET_OF` is keyed by process id). Returns its start time.
pub fn check_named(pid: u32) -> Result<u64, TargetError> {
    let status = Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|_| TargetError::NoSuchProcess(pid))?;
    if status.tgid != pid as i32 {
        return Err(TargetError::NotAProcess { pid, tgid: status.tgid });
    }
    start_time(pid).ok_or(TargetError::Exited(pid))
}

/// Every (pid, ppid, start time) on the host.
pub fn process_tree() -> Result<Vec<(u32, u32, u64)>, TargetError> {
    let all = procfs::process::all_processes().map_err(TargetError::Proc)?;
    Ok(all
        .filter_map(|p| p.ok()?.stat().ok())
        .map(|stat| (stat.pid as u32, stat.ppid as u32, stat.starttime))
        .collect())
}

/// Every process on the host (none if /proc cannot be listed: the caller then joins nothing).
pub fn all_pids() -> Vec<u32> {
    procfs::process::all_processes()
        .map(|all| all.filter_map(|p| p.ok().map(|p| p.pid as u32)).collect())
        .unwrap_or_default()
}

/// A live process as seen in /proc: its cgroup v2 path and start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    pub path: String,
    pub started: u64,
}

/// Each of `pids` that is a live process (not a zombie), with its cgroup and start.
pub fn look_at(pids: impl IntoIterator<Item = u32>) -> Vec<Seen> {
    pids.into_iter()
        .filter_map(|pid| {
            let stat = Process::new(pid as i32).ok()?.stat().ok()?;
            if matches!(stat.state, 'Z' | 'X') {
                return None; // exited: its entry would outlive it
            }
            let path = v2_path_of(pid)?;
            Some(Seen {
                pid,
                path,
                started: stat.starttime,
            })
        })
        .collect()
}

/// The v2 cgroup path of `pid` in the host's hierarchy (e.g. `/system.slice/nginx.service`),
/// or `None` when the process is gone or has none.
///
/// /proc shows it relative to the reader's cgroup namespace (cgroup_namespaces(7)): in a
/// container with a namespace of its own (containerd's and CRI-O's default on cgroup v2),
/// the host's paths read `/../../kubepods.slice/...`. Those are put back under the
/// namespace's root ([`namespace_root`]), so they compare with the targets' paths.
pub fn v2_path_of(pid: u32) -> Option<String> {
    let path = own_namespace_path(pid)?;
    match namespace_root() {
        Some(root) => rebase(&path, root),
        None => Some(path),
    }
}

fn own_namespace_path(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    v2_path_in(&text).map(str::to_owned)
}

/// Where the agent's cgroup namespace has its root in the host's hierarchy, when that is not
/// the host's root; found once. Only a namespace of its own shows the host's init (PID 1,
/// with the host's PIDs) above its root. Then the agent's own cgroup, found in the host's
/// tree by its PID, less its path in the namespace, is the root.
pub fn namespace_root() -> Option<&'static str> {
    static ROOT: OnceLock<Option<String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let init = own_namespace_path(1)?;
        if !init.starts_with("/..") {
            return None;
        }
        let me = std::process::id();
        let root = own_namespace_path(me).and_then(|inside| {
            let fs = CgroupFs::discover().ok()?;
            let here = containing(fs.mount(), me)?;
            let here = format!("/{}", here.strip_prefix(fs.mount()).ok()?.to_string_lossy());
            let root = here.strip_suffix(inside.trim_end_matches('/'))?;
            Some(if root.is_empty() {
                "/".to_owned()
            } else {
                root.to_owned()
            })
        });
        match &root {
            Some(root) => tracing::info!(
                root,
                "the agent has a cgroup namespace of its own; /proc's cgroup paths are read as under this host cgroup"
            ),
            None => tracing::warn!(
                "the agent has a cgroup namespace of its own and its root was not found in the host's \
                 hierarchy: processes' cgroups may be misread; run it in the host's cgroup namespace \
                 (hostPID / --cgroupns=host)"
            ),
        }
        root
    })
    .as_deref()
}

/// `path`, relative to the namespace whose root is at `root` in the host's hierarchy, as a
/// host path: each `..` goes up from the root.
fn rebase(path: &str, root: &str) -> Option<String> {
    let mut parts: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." {
            parts.pop()?;
        } else {
            parts.push(segment);
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The path of the `0::` line of a `/proc/PID/cgroup` text (cgroups(7)). `None` for a cgroup
/// the kernel marks ` (deleted)`: there is no directory to name.
pub fn v2_path_in(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| !path.ends_with(" (deleted)"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_path_relative_to_a_namespace_is_put_back_under_its_root() {
        let root = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-a.scope";
        for (path, want) in [
            ("/", Some(root.to_owned())),
            ("/sub", Some(format!("{root}/sub"))),
            (
                "/../../../system.slice/nginx.service",
                Some("/system.slice/nginx.service".to_owned()),
            ),
            (
                "/../cri-containerd-b.scope",
                Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-b.scope".to_owned()),
            ),
            ("/../../../..", None),
        ] {
            assert_eq!(rebase(path, root), want, "{path}");
        }
        assert_eq!(rebase("/a/b", "/").as_deref(), Some("/a/b"));
    }

    #[test]
    fn this_process_is_seen_with_its_start_and_threads() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(check_named(me).ok(), start_time(me));
        assert!(thread_count(me) >= 1);
        assert!(matches!(check_named(u32::MAX), Err(TargetError::NoSuchProcess(_))));
        assert!(all_pids().contains(&me));
    }
}

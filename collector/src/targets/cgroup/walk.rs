//! Walking the cgroup tree: the cgroups matching patterns (entering only directories a
//! pattern can match below), and the processes of a cgroup and everything below it.
use std::{fs, io, os::unix::fs::MetadataExt, path::Path};

use super::{
    fs::{Cgroup, CgroupFs},
    pattern::CgroupPattern,
};

/// Walks the tree under the mount and returns every cgroup that matches one of `patterns`,
/// sorted by path. Only directories a pattern could match below are entered, so
/// `system.slice/*.service` reads two directories, not the whole host. `enter` is called on
/// each entered directory before it is read (so a watch set there misses no new child).
/// Symlinks are not followed; unreadable or vanished directories are skipped.
pub(super) fn walk(fs: &CgroupFs, patterns: &[CgroupPattern], mut enter: impl FnMut(&Path, &str, u64)) -> Vec<Cgroup> {
    let mut found = Vec::new();
    let Ok(root) = fs::symlink_metadata(fs.mount()) else {
        return found;
    };
    if patterns.is_empty() {
        return found;
    }
    let mut stack = vec![(fs.mount().to_path_buf(), String::new(), root.ino())];
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

/// The cgroup under `dir` (inclusive) whose `cgroup.procs` lists `pid`, if any: one walk of
/// the tree (`proc::namespace_root` does it once).
pub fn containing(dir: &Path, pid: u32) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(cgroup) = stack.pop() {
        let listed = fs::read_to_string(cgroup.join("cgroup.procs"))
            .is_ok_and(|text| text.lines().any(|l| l.trim().parse::<u32>() == Ok(pid)));
        if listed {
            return Some(cgroup);
        }
        if let Ok(entries) = fs::read_dir(&cgroup) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
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
            Err(e) if skip(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // A process migrating during the walk can be read in two cgroups.
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::targets::cgroup::{fs::tests::tree, pattern::tests::pattern};

    fn scan(fs: &CgroupFs, pattern: &CgroupPattern) -> Vec<Cgroup> {
        walk(fs, std::slice::from_ref(pattern), |_, _, _| {})
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
        let names = |glob: &str| {
            scan(&fs, &pattern(glob))
                .into_iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        };
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
        let found = scan(&fs, &pattern("system.slice/nginx.service"));
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
}

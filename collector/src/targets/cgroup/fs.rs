//! The cgroup v2 hierarchy: where it is mounted (from mountinfo) and resolving a path given
//! by the user to a [`Cgroup`].
//!
//! The kernel names a v2 cgroup by its id, which is the inode number of its directory (the
//! kernfs node id that `bpf_get_current_cgroup_id` returns), so a [`Cgroup`] carries that inode.
use std::{
    ffi::OsString,
    fs, io,
    os::unix::{ffi::OsStringExt, fs::MetadataExt},
    path::{Path, PathBuf},
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

    pub(super) fn cgroup(&self, path: PathBuf, id: u64) -> Cgroup {
        let relative = path.strip_prefix(&self.mount).unwrap_or(&path).to_string_lossy();
        let name = if relative.is_empty() {
            "/".to_owned()
        } else {
            relative.into_owned()
        };
        Cgroup { path, name, id }
    }

    pub(super) fn mount_str(&self) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
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
    pub(crate) fn tree(dirs: &[&str]) -> (tempfile::TempDir, CgroupFs) {
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

    pub(crate) fn ino(path: &Path) -> u64 {
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
}

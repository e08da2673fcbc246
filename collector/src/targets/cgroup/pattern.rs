//! `--cgroup-pattern`: globs over cgroup paths relative to the v2 mount, and which
//! directories a walk must enter to find every match.
use globset::{GlobBuilder, GlobMatcher};

use super::fs::{CgroupError, CgroupFs};

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
    pub(super) fn may_match_below(&self, relative: &str) -> bool {
        let segments: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
        let common = segments.len().min(self.literal.len());
        segments[..common] == self.literal[..common] && self.max_depth.is_none_or(|max| segments.len() < max)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pattern(text: &str) -> CgroupPattern {
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
}

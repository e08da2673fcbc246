//! The capabilities the agent needs, and giving up the rest once its probes are attached.
//!
//! Loading tracing programs needs CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN:
//! `bpf(BPF_PROG_LOAD)` of a tracing program and its maps (kernel/bpf/syscall.c:
//! `bpf_prog_load`, `map_create`), and reading kernel memory from it
//! (`bpf_probe_read_kernel` is a `perfmon_capable()` helper). Kernels before 5.11 charge BPF
//! maps to RLIMIT_MEMLOCK, which only CAP_SYS_RESOURCE raises; 5.11+ charge the memory cgroup.
//!
//! After the load nothing needs them but for map reads and writes on the fds the agent holds,
//! which kernels before 6.5 refuse without CAP_BPF when `kernel.unprivileged_bpf_disabled` is
//! set (the check was in `__sys_bpf` for every command; 6.5 moved it into `map_create` and
//! `bpf_prog_load`). So [`drop_after_load`] tries a map read without CAP_BPF and keeps it
//! only if the kernel refuses. Everything else the agent does later reads files anyone may
//! read (/proc/PID/{stat,status,cgroup,task}, the cgroup tree) or holds an fd opened before
//! (the listener, the event sink, the maps). `/proc/PID/exe` of another user's process needs
//! CAP_SYS_PTRACE (`ptrace_may_access`): without it a process event's `exe` is absent for
//! those, unless `--keep-capabilities cap_sys_ptrace`.
//!
//! Capabilities belong to threads: the agent drops them on its only thread, before the async
//! runtime and every other thread start (`agent/`), so every thread has the same sets.
use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The agent cannot load tracing programs.
    #[error(
        "missing {missing}: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run as root, \
         or grant them (setcap cap_bpf,cap_perfmon+ep collector; systemd AmbientCapabilities=; Kubernetes \
         securityContext.capabilities.add)"
    )]
    Missing { missing: String },
    /// The kernel refused to read or change a capability set.
    #[error("cannot {what} this thread's capabilities: {source}")]
    Sets {
        what: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

fn sets(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> CapabilityError {
    move |source| CapabilityError::Sets { what, source }
}

/// What loading needs without CAP_SYS_ADMIN: what the deployment files grant
/// (`deploy/systemd/collector.service`, `deploy/kubernetes/`; their tests compare).
pub const LOAD: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_PERFMON];

/// Checks that this thread may load tracing programs; the error names what is missing.
pub fn check() -> Result<(), CapabilityError> {
    let effective = caps::read(None, CapSet::Effective).map_err(sets("read"))?;
    if effective.contains(&Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<String> = LOAD
        .into_iter()
        .filter(|c| !effective.contains(c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapabilityError::Missing {
            missing: missing.join(" and "),
        })
    }
}

/// `--keep-capabilities`: which to keep after the load besides what the kernel needs, or
/// all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    All,
    These(Vec<Capability>),
}

impl Default for Keep {
    fn default() -> Self {
        Keep::These(Vec::new())
    }
}

/// `all`, `none`, or capability names (`cap_sys_ptrace`, `CAP_BPF`), comma-separated.
pub fn parse_keep(s: &str) -> Result<Keep, String> {
    match s.trim() {
        "all" => return Ok(Keep::All),
        "none" | "" => return Ok(Keep::default()),
        _ => {}
    }
    s.split(',')
        .map(|name| {
            let name = name.trim().to_ascii_uppercase();
            let name = if name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            };
            name.parse::<Capability>()
                .map_err(|_| format!("{name} is not a capability (see capabilities(7)), nor all or none"))
        })
        .collect::<Result<_, _>>()
        .map(Keep::These)
}

/// Gives up every capability but those `keep` names and, if the kernel refuses map access
/// without it (`map_access` fails then), CAP_BPF: from the bounding set too, so nothing
/// regains them. Returns what is kept. Called on the agent's only thread.
pub fn drop_after_load(keep: &Keep, map_access: impl Fn() -> bool) -> Result<CapsHashSet, CapabilityError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(sets("read"))?;
    let mut kept: CapsHashSet = match keep {
        Keep::All => return Ok(permitted),
        Keep::These(names) => names.iter().copied().filter(|c| permitted.contains(c)).collect(),
    };
    if needs_cap_bpf(&map_access)? {
        kept.extend(
            [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
                .into_iter()
                .filter(|c| permitted.contains(c)),
        );
        if kept.contains(&Capability::CAP_BPF) {
            kept.remove(&Capability::CAP_SYS_ADMIN);
        }
    }
    // The bounding set shrinks only with CAP_SETPCAP in the effective set, so it goes
    // first. An agent started with CAP_BPF and CAP_PERFMON alone cannot shrink it; it only
    // limits what an execve could gain, and the agent never execs.
    let effective = caps::read(None, CapSet::Effective).map_err(sets("read"))?;
    if effective.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding).map_err(sets("read"))? {
            if !kept.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(sets("drop from the bounding set of"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(sets("clear"))?;
    caps::clear(None, CapSet::Inheritable).map_err(sets("clear"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(sets("set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(sets("set"))?;
    Ok(kept)
}

/// Whether map access fails without CAP_BPF (and CAP_SYS_ADMIN, which also grants it): both
/// lowered in the effective set for the try, then raised again.
fn needs_cap_bpf(map_access: &impl Fn() -> bool) -> Result<bool, CapabilityError> {
    let effective = caps::read(None, CapSet::Effective).map_err(sets("read"))?;
    let lowered: CapsHashSet = effective
        .iter()
        .copied()
        .filter(|c| !matches!(c, Capability::CAP_BPF | Capability::CAP_SYS_ADMIN))
        .collect();
    caps::set(None, CapSet::Effective, &lowered).map_err(sets("lower"))?;
    let works = map_access();
    caps::set(None, CapSet::Effective, &effective).map_err(sets("restore"))?;
    Ok(!works)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_takes_names_with_or_without_the_prefix_all_and_none() {
        assert_eq!(parse_keep("all"), Ok(Keep::All));
        assert_eq!(parse_keep("none"), Ok(Keep::default()));
        assert_eq!(
            parse_keep("sys_ptrace,CAP_BPF"),
            Ok(Keep::These(vec![Capability::CAP_SYS_PTRACE, Capability::CAP_BPF]))
        );
        assert!(
            parse_keep("cap_nonsense")
                .unwrap_err()
                .contains("CAP_NONSENSE is not a capability")
        );
    }
}

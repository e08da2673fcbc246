//! Decoders from kernel numbers to the names used as label values. Pure functions: a number
//! with no known name is shown as the number, never dropped.
use std::borrow::Cow;

use syscalls::{Errno, Sysno};

/// The syscall's name on the architecture the agent was built for (which is the
/// architecture it runs on), or its number when the table has no name for it.
pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match Sysno::new(nr as usize) {
        Some(sysno) => Cow::Borrowed(sysno.name()),
        None => Cow::Owned(nr.to_string()),
    }
}

/// The errno's symbolic name (`ENOENT`), or its number when unknown.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    match Errno::new(errno as i32).name().or_else(|| kernel_internal_errno(errno)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(errno.to_string()),
    }
}

/// Errnos userspace never sees but `raw_syscalls:sys_exit` does: the tracepoint fires before
/// signal delivery turns a restartable return into EINTR or a restart
/// (include/linux/errno.h).
fn kernel_internal_errno(errno: u32) -> Option<&'static str> {
    Some(match errno {
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        515 => "ENOIOCTLCMD",
        516 => "ERESTART_RESTARTBLOCK",
        517 => "EPROBE_DEFER",
        518 => "EOPENSTALE",
        519 => "ENOPARAM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_decode_to_this_architectures_names() {
        let cases: &[(Sysno, &str)] = &[
            (Sysno::getppid, "getppid"),
            (Sysno::openat, "openat"),
            (Sysno::read, "read"),
            (Sysno::nanosleep, "nanosleep"),
            (Sysno::clock_nanosleep, "clock_nanosleep"),
        ];
        for &(sysno, name) in cases {
            assert_eq!(syscall_name(sysno.id() as u32), name);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_match_the_kernel_table() {
        // arch/x86/entry/syscalls/syscall_64.tbl
        assert_eq!(syscall_name(0), "read");
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(257), "openat");
    }

    #[test]
    fn unknown_syscall_is_shown_as_its_number() {
        assert_eq!(syscall_name(100_000), "100000");
    }

    #[test]
    fn errnos_decode_to_symbolic_names() {
        let cases: &[(u32, &str)] = &[
            (1, "EPERM"),
            (2, "ENOENT"),
            (4, "EINTR"),
            (11, "EAGAIN"),
            (13, "EACCES"),
            (110, "ETIMEDOUT"),
            (111, "ECONNREFUSED"),
            (512, "ERESTARTSYS"),
            (516, "ERESTART_RESTARTBLOCK"),
        ];
        for &(errno, name) in cases {
            assert_eq!(errno_name(errno), name, "errno {errno}");
        }
    }

    #[test]
    fn unknown_errno_is_shown_as_its_number() {
        assert_eq!(errno_name(4000), "4000");
    }
}

//! What the kernel programs need to know about the running kernel, read from its BTF
//! (/sys/kernel/btf/vmlinux): the offsets of the struct fields each probe family declares
//! (`families.rs`), and which program fits each tracepoint's arguments. aya has no CO-RE
//! relocations for Rust programs, so the agent finds these here and writes them into the
//! object's `.data` globals before load (`collector-ebpf/src/globals.rs` says why not
//! `.rodata`).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use btfparse::{Readable, TypeInformation, TypeVariant};
use collector_common::{
    KernelFeatures, KernelOffsets,
    sockets::{SYSCALL_IO_ENTRIES, SyscallIo},
};
use syscalls::Sysno;

use super::families::{FAMILIES, all_probes};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The kernel exposes no BTF.
    #[error(
        "no kernel BTF at {}: run on a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.4+ distribution kernels have it), or name the kernel's BTF file with --kernel-btf", .0.display()
    )]
    Missing(PathBuf),
    /// The BTF file could not be read.
    #[error("cannot read the kernel's BTF {}: {}", .0.display(), .1)]
    Read(PathBuf, #[source] std::io::Error),
    /// The BTF could not be parsed or lacks a type the programs need.
    #[error("cannot use the kernel's BTF: {0}")]
    Parse(String),
}

/// Facts about the running kernel that the programs are loaded with.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    pub offsets: KernelOffsets,
    pub features: KernelFeatures,
    /// Probe name -> the program that fits this kernel's tracepoint (see `Probe::fewer_args`).
    pub programs: BTreeMap<&'static str, &'static str>,
    /// Families this kernel cannot give (a tracepoint or field it lacks), with why.
    pub off: BTreeMap<&'static str, String>,
}

impl KernelLayout {
    /// From the BTF file at `path` (the running kernel's is [`VMLINUX_BTF`]).
    pub fn read(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.to_owned()));
        }
        let bytes = std::fs::read(path).map_err(|e| BtfError::Read(path.to_owned(), e))?;
        Self::parse(&bytes)
    }

    pub fn parse(btf: &[u8]) -> Result<Self, BtfError> {
        let types = TypeInformation::new(&Bytes(btf)).map_err(|e| BtfError::Parse(format!("{e:?}")))?;
        let offset = |ty: &str, field: &str| -> Result<u32, String> {
            let id = struct_id(&types, ty).ok_or_else(|| format!("no struct {ty}"))?;
            match types.offset_of(id, field) {
                Ok((_, btfparse::Offset::ByteOffset(o))) => Ok(o),
                Ok((_, other)) => Err(format!("{ty}.{field} is a bitfield ({other:?})")),
                Err(e) => Err(format!("{ty}.{field}: {e:?}")),
            }
        };
        let mut offsets = KernelOffsets::default();
        let mut off = BTreeMap::new();
        for family in &FAMILIES {
            let missing = family
                .probes
                .iter()
                .find(|p| types.id_of(&format!("btf_trace_{}", p.tracepoint)).is_none())
                .map(|p| format!("the kernel has no tracepoint {}", p.tracepoint));
            let mut problem = missing;
            for field in family.fields {
                // The first path the kernel has; if none, the error of the last one tried.
                let value = field
                    .paths
                    .iter()
                    .map(|path| offset(field.ty, path))
                    .reduce(Result::or)
                    .unwrap_or_else(|| Err(format!("{}: the family names no field", field.ty)));
                match value {
                    Ok(value) => *(field.slot)(&mut offsets) = value,
                    Err(e) => problem = problem.or(Some(e)),
                }
            }
            match problem {
                Some(why) if family.core => {
                    return Err(BtfError::Parse(format!("{why} (needed by the {} probes)", family.name)));
                }
                Some(why) => {
                    off.insert(family.name, why);
                }
                None => {}
            }
        }
        let programs = all_probes()
            .map(|probe| {
                let fewer = probe
                    .fewer_args
                    .filter(|f| tracepoint_arity(&types, probe.tracepoint).is_some_and(|n| n < f.below_args));
                (probe.name, fewer.map_or(probe.program, |f| f.program))
            })
            .collect();
        Ok(KernelLayout {
            offsets,
            programs,
            off,
            features: KernelFeatures {
                syscall_io: syscall_io_table(),
                // Only the field's name tells the two layouts apart (cgroups.rs).
                cgroup_ancestor_ids: u32::from(offset("cgroup", "ancestors").is_err()),
            },
        })
    }
}

/// What each of this architecture's syscalls moves through the fds it is given, by number
/// (`collector-ebpf/src/socket_bytes.rs` reads it at each target syscall's return). The
/// positional reads and writes and copy_file_range() take no socket (ESPIPE, EINVAL), but
/// move file and pipe bytes with the fds where read/write/splice have theirs.
fn syscall_io_table() -> [u8; SYSCALL_IO_ENTRIES] {
    let mut table = [SyscallIo::None as u8; SYSCALL_IO_ENTRIES];
    let kinds = [
        (Sysno::write, SyscallIo::Send),
        (Sysno::writev, SyscallIo::SendVector),
        (Sysno::sendto, SyscallIo::Send),
        (Sysno::sendmsg, SyscallIo::SendMessage),
        (Sysno::sendmmsg, SyscallIo::SendMessages),
        (Sysno::read, SyscallIo::Receive),
        (Sysno::readv, SyscallIo::ReceiveVector),
        (Sysno::recvfrom, SyscallIo::ReceiveFrom),
        (Sysno::recvmsg, SyscallIo::ReceiveMessage),
        (Sysno::recvmmsg, SyscallIo::ReceiveMessages),
        (Sysno::sendfile, SyscallIo::SendFile),
        (Sysno::splice, SyscallIo::Splice),
        (Sysno::pwrite64, SyscallIo::Send),
        (Sysno::pwritev, SyscallIo::SendVector),
        (Sysno::pwritev2, SyscallIo::SendVector),
        (Sysno::pread64, SyscallIo::Receive),
        (Sysno::preadv, SyscallIo::ReceiveVector),
        (Sysno::preadv2, SyscallIo::ReceiveVector),
        (Sysno::copy_file_range, SyscallIo::Splice),
        (Sysno::accept, SyscallIo::Accept),
        (Sysno::accept4, SyscallIo::Accept),
    ];
    for (nr, io) in kinds {
        table[nr as usize] = io as u8;
    }
    table
}

/// The id of the struct named `ty`. The name may also belong to a forward declaration
/// (Linux 5.10's BTF has `FWD 'pt_regs'` beside `STRUCT 'pt_regs'`), and the name index
/// keeps only one of them, so a declaration found there is passed over for the definition.
fn struct_id(types: &TypeInformation, ty: &str) -> Option<u32> {
    let is_struct = |id: u32| matches!(types.from_id(id), Some(TypeVariant::Struct(_)));
    types.id_of(ty).filter(|&id| is_struct(id)).or_else(|| {
        types
            .get()
            .iter()
            .filter(|(_, t)| matches!(t, TypeVariant::Struct(_)))
            .map(|(&id, _)| id)
            .find(|&id| types.name_of(id).as_deref() == Some(ty))
    })
}

/// Number of `TP_PROTO` arguments of a tracepoint, from the `btf_trace_<name>` typedef the
/// kernel emits for every tracepoint (a pointer to a function whose first parameter is the
/// probe's `void *data`).
fn tracepoint_arity(types: &TypeInformation, name: &str) -> Option<usize> {
    let typedef = types.id_of(&format!("btf_trace_{name}"))?;
    let proto = types.pointee_tid(typedef).ok()?;
    match types.from_id(proto)? {
        TypeVariant::FuncProto(proto) => Some(proto.parameter_list().len().saturating_sub(1)),
        _ => None,
    }
}

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        match start.and_then(|s| self.0.get(s..s.checked_add(buffer.len())?)) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_is_found_in_the_running_kernels_btf() {
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            println!("skipping: {VMLINUX_BTF} is not readable");
            return;
        };
        let layout = KernelLayout::parse(&bytes).unwrap();
        // KernelOffsets is all u32s; none may be left at the "not set" marker (u32::MAX), and
        // the sock fields keep their order.
        let offsets: [u32; size_of::<KernelOffsets>() / 4] = unsafe { std::mem::transmute(layout.offsets) };
        assert!(offsets.iter().all(|&o| o < 1 << 14), "{:?}", layout.offsets);
        assert!(layout.offsets.sock_family < layout.offsets.sock_protocol);
        assert_eq!(
            layout.features.syscall_io[Sysno::accept4 as usize],
            SyscallIo::Accept as u8
        );
        assert_eq!(
            layout.features.syscall_io[Sysno::getppid as usize],
            SyscallIo::None as u8
        );
        // Every probe has a program; sched_process_exit's fits the kernel's arguments.
        assert_eq!(layout.programs.len(), crate::kernel::families::all_probes().count());
        assert!(layout.off.is_empty(), "this kernel has every family: {:?}", layout.off);
        let exit_args = tracepoint_arity(&TypeInformation::new(&Bytes(&bytes)).unwrap(), "sched_process_exit");
        let want = if exit_args == Some(1) {
            "collector_exit_live"
        } else {
            "collector_exit"
        };
        assert_eq!(layout.programs["sched_process_exit"], want, "arity {exit_args:?}");
    }
}

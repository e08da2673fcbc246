//! Ring-buffer records from the kernel (`collector_common::events`), decoded: each starts
//! with an `EventHeader` naming its kind and size, which are checked before the bytes are
//! read as that kind.
use collector_common::events::{
    EventHeader, EventKind, ExecRecord, HttpRecord, OomRecord, ProcessRecord, SyscallRecord, TcpRecord,
};

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    Start(ProcessRecord),
    Exec(ExecRecord),
    Exit(ProcessRecord),
    Tcp(TcpRecord),
    Http(HttpRecord),
    Syscall(SyscallRecord),
    OomKill(OomRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("record of kind {kind:?} is {got} bytes, expected {want}")]
    Size { kind: EventKind, got: usize, want: usize },
}

/// Reads a `T` from the start of `bytes`, which the caller has checked is long enough.
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; the records are plain integers and byte arrays, valid for any
    // bit pattern; read_unaligned because ring-buffer records are only 8-byte aligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read(bytes);
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::Kind(header.kind))?;
    let want = match kind {
        EventKind::ProcessExec => size_of::<ExecRecord>(),
        EventKind::ProcessStart | EventKind::ProcessExit => size_of::<ProcessRecord>(),
        EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpConnectError | EventKind::TcpClose => {
            size_of::<TcpRecord>()
        }
        EventKind::HttpRequest => size_of::<HttpRecord>(),
        EventKind::SyscallSlow => size_of::<SyscallRecord>(),
        EventKind::ProcessOomKill => size_of::<OomRecord>(),
    };
    if bytes.len() < want || header.size as usize != want {
        return Err(DecodeError::Size {
            kind,
            got: bytes.len().min(header.size as usize),
            want,
        });
    }
    Ok(match kind {
        EventKind::ProcessStart => Record::Start(read(bytes)),
        EventKind::ProcessExec => Record::Exec(read(bytes)),
        EventKind::ProcessExit => Record::Exit(read(bytes)),
        EventKind::HttpRequest => Record::Http(read(bytes)),
        EventKind::SyscallSlow => Record::Syscall(read(bytes)),
        EventKind::ProcessOomKill => Record::OomKill(read(bytes)),
        EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpConnectError | EventKind::TcpClose => {
            Record::Tcp(read(bytes))
        }
    })
}

/// A NUL-terminated kernel string (`comm`, a filename) as text.
pub fn kernel_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use collector_common::events::{COMM_LEN, FILENAME_LEN};

    use super::*;

    pub(crate) fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref::<T>(v).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub(crate) fn comm(s: &str) -> [u8; COMM_LEN] {
        let mut c = [0; COMM_LEN];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    pub(crate) fn process(kind: EventKind, pid: u32, exit_code: u32) -> ProcessRecord {
        ProcessRecord {
            header: EventHeader {
                kind: kind as u32,
                size: size_of::<ProcessRecord>() as u32,
                ktime_ns: 5_000_000_000,
                target: 1,
                pid,
            },
            ppid: 10,
            exit_code,
            start_ns: 3_000_000_000,
            comm: comm("worker"),
        }
    }

    #[test]
    fn records_round_trip_through_bytes() {
        let exit = process(EventKind::ProcessExit, 42, 3 << 8);
        let Record::Exit(got) = decode(&bytes(&exit)).unwrap() else {
            panic!("not an exit")
        };
        assert_eq!(
            (got.header.pid, got.exit_code, got.start_ns, got.comm),
            (42, 3 << 8, 3_000_000_000, comm("worker"))
        );

        let mut filename = [0u8; FILENAME_LEN];
        filename[..9].copy_from_slice(b"/bin/true");
        let mut exec = ExecRecord {
            process: process(EventKind::ProcessExec, 43, 0),
            filename,
        };
        exec.process.header.size = size_of::<ExecRecord>() as u32;
        let Record::Exec(got) = decode(&bytes(&exec)).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(kernel_str(&got.filename), "/bin/true");

        let slow = SyscallRecord {
            header: EventHeader {
                kind: EventKind::SyscallSlow as u32,
                size: size_of::<SyscallRecord>() as u32,
                ktime_ns: 7,
                target: 1,
                pid: 44,
            },
            duration_ns: 100_000_000,
            ret: -4,
            tid: 45,
            nr: 35,
            comm: comm("sleeper"),
        };
        let Record::Syscall(got) = decode(&bytes(&slow)).unwrap() else {
            panic!("not a syscall")
        };
        assert_eq!((got.tid, got.nr, got.ret, got.duration_ns), (45, 35, -4, 100_000_000));
    }

    #[test]
    fn malformed_records_are_rejected() {
        let start = process(EventKind::ProcessStart, 1, 0);
        assert_eq!(decode(&bytes(&start)[..8]).unwrap_err(), DecodeError::Short(8));
        let mut bad = start;
        bad.header.kind = 99;
        assert_eq!(decode(&bytes(&bad)).unwrap_err(), DecodeError::Kind(99));
        let mut lying = start;
        lying.header.size = 8;
        assert!(matches!(decode(&bytes(&lying)), Err(DecodeError::Size { .. })));
    }
}

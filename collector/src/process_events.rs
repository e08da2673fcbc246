//! From the kernel's ring buffer to telemetry events: decoding records (process lifecycle and
//! TCP connections), turning kernel times into wall-clock times, and the thread that reads
//! the ring buffer.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use collector_common::{
    TargetId,
    events::{EventHeader, EventKind, ExecRecord, ProcessRecord, TcpRecord},
    sockets::{AF_INET6, connect_error_reason, direction_label},
};

use crate::{
    targets::{SharedTargets, Targets},
    telemetry::{DropStage, Event, Telemetry},
};

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    Start(ProcessRecord),
    Exec(ExecRecord),
    Exit(ProcessRecord),
    Tcp(TcpRecord),
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
        _ => Record::Tcp(read(bytes)),
    })
}

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    boot: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        Clock {
            boot: SystemTime::now() - mono,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }
}

/// How a process ended, from its wait status (`task_struct.exit_code`): the `outcome` label,
/// and the exit status or the signal's name.
pub fn outcome(exit_code: u32) -> (&'static str, Result<i64, String>) {
    let signal = (exit_code & 0x7f) as i32;
    if signal != 0 {
        let name = nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str().to_owned());
        return ("signal", Err(name.unwrap_or_else(|_| signal.to_string())));
    }
    let status = i64::from((exit_code >> 8) & 0xff);
    (if status == 0 { "success" } else { "failure" }, Ok(status))
}

/// A NUL-terminated kernel string as text.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The telemetry event of a record.
pub fn to_event(record: &Record, targets: &Targets, clock: &Clock) -> Event {
    let (header, comm) = match record {
        Record::Start(p) | Record::Exit(p) => (&p.header, &p.comm),
        Record::Exec(e) => (&e.process.header, &e.process.comm),
        Record::Tcp(t) => (&t.header, &t.comm),
    };
    let kind = EventKind::from_u32(header.kind).expect("decoded");
    let event = Event::new(kind.event_name(), clock.wall(header.ktime_ns))
        .meta("pid", header.pid)
        .meta("comm", text(comm));
    let event = match TargetId::from_slot(header.target).and_then(|id| targets.get(id)) {
        Some(target) => target.describe(event),
        None => event.meta("target", "unknown"),
    };
    match record {
        Record::Tcp(t) => tcp_event(event, kind, t),
        Record::Start(p) => event.meta("ppid", p.ppid),
        Record::Exec(e) => event.meta("filename", text(&e.filename)),
        Record::Exit(p) => {
            let lifetime = p.header.ktime_ns.saturating_sub(p.start_ns) as f64 / 1e9;
            let (outcome, detail) = outcome(p.exit_code);
            let event = event.measure("duration", lifetime).meta("outcome", outcome);
            match detail {
                Ok(status) => event.meta("exit_code", status),
                Err(signal) => event.meta("signal", signal),
            }
        }
    }
}

/// The TCP part of a `tcp.*` event: endpoints and direction always, then what the kind has.
fn tcp_event(event: Event, kind: EventKind, t: &TcpRecord) -> Event {
    let (family, saddr, daddr) = if t.family == AF_INET6 {
        (
            "ipv6",
            Ipv6Addr::from(t.saddr).to_string(),
            Ipv6Addr::from(t.daddr).to_string(),
        )
    } else {
        let v4 = |a: [u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string();
        ("ipv4", v4(t.saddr), v4(t.daddr))
    };
    let event = event
        .meta("family", family)
        .meta("saddr", saddr)
        .meta("sport", u32::from(t.sport))
        .meta("daddr", daddr)
        .meta("dport", u32::from(t.dport))
        .meta("direction", direction_label(t.direction));
    let seconds = t.duration_ns as f64 / 1e9;
    match kind {
        EventKind::TcpConnect => event.measure("duration", seconds),
        EventKind::TcpConnectError => event.meta("reason", connect_error_reason(t.sk_err)),
        EventKind::TcpClose => event
            .measure("duration", seconds)
            .measure("bytes_sent", t.bytes_sent as f64)
            .measure("bytes_received", t.bytes_received as f64),
        _ => event,
    }
}

/// How full the ring buffer is, read from its producer and consumer positions, which the
/// kernel exposes to mmap (kernel/bpf/ringbuf.c: page 0 holds consumer_pos, page 1
/// producer_pos).
pub struct RingFill {
    consumer: *const u64,
    producer: *const u64,
    page: usize,
    size: u64,
}

// SAFETY: the pages are read-only mappings owned by this value, read with volatile loads.
unsafe impl Send for RingFill {}
unsafe impl Sync for RingFill {}

impl RingFill {
    pub fn new(ring: &RingBuf<MapData>, size: u32) -> std::io::Result<RingFill> {
        let page = procfs::page_size() as usize;
        let map = |offset: usize| -> std::io::Result<*const u64> {
            // SAFETY: a fresh shared read-only mapping of one page of the ring buffer's fd.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    ring.as_fd().as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(p.cast())
            }
        };
        let consumer = map(0)?;
        let producer = map(page)?;
        Ok(RingFill {
            consumer,
            producer,
            page,
            size: size.into(),
        })
    }

    /// Bytes written and not yet consumed, as a fraction of the ring buffer's size.
    pub fn fraction(&self) -> f64 {
        // SAFETY: both pointers are live mappings (see new), u64-aligned at page starts.
        let (c, p) = unsafe { (self.consumer.read_volatile(), self.producer.read_volatile()) };
        p.saturating_sub(c) as f64 / self.size as f64
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmapping the pages mapped in new.
        unsafe {
            libc::munmap(self.consumer as *mut _, self.page);
            libc::munmap(self.producer as *mut _, self.page);
        }
    }
}

/// Reads the ring buffer on a thread of its own until `stop`, then drains it once more.
pub fn spawn_reader(
    mut ring: RingBuf<MapData>,
    targets: SharedTargets,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let clock = Clock::now();
    std::thread::Builder::new()
        .name("ring-buffer".into())
        .spawn(move || {
            let mut pollfd = libc::pollfd {
                fd: ring.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                // SAFETY: one valid pollfd; the timeout bounds how late a stop is noticed.
                unsafe { libc::poll(&mut pollfd, 1, 100) };
                while let Some(item) = ring.next() {
                    match decode(&item) {
                        Ok(record) => {
                            let event = to_event(&record, &targets.read().expect("never poisoned"), &clock);
                            telemetry.execute(event)
                        }
                        Err(e) => {
                            tracing::warn!("undecodable ring-buffer record: {e}");
                            telemetry.stats().count_dropped("unknown", DropStage::Decode);
                        }
                    }
                }
                if stopping {
                    return;
                }
            }
        })
        .expect("spawn the ring-buffer reader")
}

#[cfg(test)]
mod tests {
    use collector_common::events::{COMM_LEN, FILENAME_LEN};

    use super::*;
    use crate::targets::PidSpec;

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn comm(s: &str) -> [u8; COMM_LEN] {
        let mut c = [0; COMM_LEN];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn process(kind: EventKind, pid: u32, exit_code: u32) -> ProcessRecord {
        ProcessRecord {
            header: EventHeader {
                kind: kind as u32,
                size: size_of::<ProcessRecord>() as u32,
                ktime_ns: 5_000_000_000,
                target: TargetId(0).slot(),
                pid,
            },
            ppid: 10,
            exit_code,
            start_ns: 3_000_000_000,
            comm: comm("worker"),
        }
    }

    fn targets() -> Targets {
        Targets::from_specs(
            &[PidSpec {
                name: Some("web".into()),
                pid: 10,
            }],
            1000,
        )
        .unwrap()
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
        assert_eq!(text(&got.filename), "/bin/true");
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

    #[test]
    fn wait_statuses_decode_to_outcomes() {
        assert_eq!(outcome(0), ("success", Ok(0)));
        assert_eq!(outcome(3 << 8), ("failure", Ok(3)));
        assert_eq!(outcome(9), ("signal", Err("SIGKILL".into())));
        assert_eq!(outcome(0x80 | 11), ("signal", Err("SIGSEGV".into()))); // core dumped
    }

    #[test]
    fn an_exit_record_becomes_a_process_exit_event() {
        let clock = Clock {
            boot: SystemTime::UNIX_EPOCH,
        };
        let event = to_event(
            &Record::Exit(process(EventKind::ProcessExit, 42, 9)),
            &targets(),
            &clock,
        );
        assert_eq!(event.name, "process.exit");
        assert_eq!(event.time, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(event.measurement("duration"), Some(2.0));
        assert_eq!(event.metadata("target"), Some(&"web".into()));
        assert_eq!(event.metadata("comm"), Some(&"worker".into()));
        assert_eq!(event.metadata("signal"), Some(&"SIGKILL".into()));
        assert_eq!(event.metadata("outcome"), Some(&"signal".into()));
        assert_eq!(event.metadata("exit_code"), None);
    }
}

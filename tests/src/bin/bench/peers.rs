//! What the collector is compared with: the floor (its own object with only the empty
//! programs attached) and the peer tools, bpftrace and syscount, which need tracefs.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use crate::process::AGENT_CPU;

/// The floor arm's programs: the agent's object, with only the empty programs attached.
pub struct Floor(#[allow(dead_code)] aya::Ebpf);

impl Floor {
    /// On sys_enter and sys_exit, and with `switch` on sched_switch too.
    pub fn attach(switch: bool) -> Floor {
        let mut ebpf = aya::Ebpf::load(collector::kernel::probes::OBJECT).expect("load the eBPF object");
        let mut programs = vec![("bench_floor_enter", "sys_enter"), ("bench_floor_exit", "sys_exit")];
        if switch {
            programs.push(("bench_floor_switch", "sched_switch"));
        }
        for (name, tp) in programs {
            let prog: &mut aya::programs::RawTracePoint = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load().unwrap();
            prog.attach(tp).unwrap();
        }
        Floor(ebpf)
    }
}

/// A peer tool doing the collector's job for one process.
#[derive(Clone, Copy)]
pub enum Tool {
    /// A per-syscall latency histogram for the pid.
    Bpftrace,
    /// libbpf-tools `syscount -L -p PID` (per-syscall counts and total latency).
    Syscount,
    /// libbpf-tools `runqlat -p PID` (a run-queue latency histogram; its programs run on
    /// every wakeup and context switch of the host).
    Runqlat,
}

/// A peer tool, pinned to the agent's CPU, started and waited for until it prints its
/// ready line.
pub struct Peer {
    tool: Tool,
    child: Child,
    output: Receiver<String>,
}

impl Peer {
    pub fn start(tool: Tool, pid: u32) -> Peer {
        let (program, args, ready) = match tool {
            Tool::Bpftrace => {
                let script = format!(
                    "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @start[tid] = nsecs; }} \
                     tracepoint:raw_syscalls:sys_exit /@start[tid]/ {{ @ns[args->id] = hist(nsecs - @start[tid]); \
                     delete(@start[tid]); }} BEGIN {{ printf(\"ready\\n\"); }}"
                );
                ("bpftrace", vec!["-e".to_owned(), script], "ready")
            }
            Tool::Syscount => (
                "syscount",
                vec!["-L".to_owned(), "-p".to_owned(), pid.to_string()],
                "Tracing syscalls",
            ),
            Tool::Runqlat => ("runqlat", vec!["-p".to_owned(), pid.to_string()], "Tracing run queue"),
        };
        // stdbuf: the tools' stdio buffers a pipe, which would hide the ready line.
        let mut child = Command::new("taskset")
            .args(["-c", &AGENT_CPU.to_string(), "stdbuf", "-oL", program])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while !line.contains(ready) {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "{program} exited before it was ready"
            );
            assert!(Instant::now() < deadline, "{program} not ready after 60 s");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            let _ = tx.send(rest);
        });
        Peer {
            tool,
            child,
            output: rx,
        }
    }

    /// SIGINT (both tools print their maps on it), then the getppid calls they counted.
    pub fn stop_and_count_getppid(mut self) -> Option<u64> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let output = self.output.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        match self.tool {
            Tool::Bpftrace => bpftrace_hist_total(&output, &format!("@ns[{}]:", libc::SYS_getppid)),
            Tool::Syscount => last_number_after(&output, "getppid"),
            Tool::Runqlat => None,
        }
    }
}

/// The number of values in the bpftrace histogram printed under `key`: the sum of its
/// bucket lines, `[lo, hi)   COUNT |@@@@|`.
fn bpftrace_hist_total(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let buckets = rest
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('[') || l.starts_with('('));
    Some(
        buckets
            .filter_map(|l| l.split(')').nth(1)?.split('|').next()?.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// The first integer after the last occurrence of `key` in `text`.
fn last_number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.rfind(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Mounts tracefs for the peers (classic tracepoints need it) and unmounts it afterwards if
/// it was not mounted before.
pub struct TracefsMount(bool);

impl TracefsMount {
    pub fn ensure() -> TracefsMount {
        if std::path::Path::new("/sys/kernel/tracing/events").exists() {
            return TracefsMount(false);
        }
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "cannot mount tracefs, which bpftrace and syscount need"
        );
        TracefsMount(true)
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
        }
    }
}

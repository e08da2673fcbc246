//! A kernel of the matrix booted in QEMU (virtme-ng, without KVM) with this machine's root
//! filesystem, running test executables one after another, each with its output in a
//! directory shared with the host; and what the host can say of a guest that stopped.
use std::{
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

/// One test executable to run in the guest: `name` names its files there.
pub struct Suite {
    pub name: String,
    pub command: String,
}

/// What one suite printed in a guest, and its exit status (empty if it never finished).
pub struct GuestRun {
    pub name: String,
    pub status: String,
    pub log: String,
    /// Where the guest's tasks waited when the suite outlived its time (else empty).
    pub hang: String,
}

/// A guest that stopped whole: its heartbeat (a shell loop) did not run for
/// [`STOPPED_AFTER`], so neither did its per-suite watchdog, and it can say nothing itself.
pub struct Stopped {
    /// The suite that was running.
    pub during: String,
    /// Each virtual CPU's registers and the kernel symbols found on its stack, twice, a
    /// second apart (the same place twice is a spin, not a slow guest), read from QEMU.
    pub cpus: String,
    /// The end of the guest's console: the kernel's own lockup reports land there.
    pub console: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest stopped during {} (no task of it ran for {STOPPED_AFTER:?}); its CPUs then:\n{}\nits console's end:\n{}",
            self.during, self.cpus, self.console
        )
    }
}

pub struct Boot {
    pub runs: Vec<GuestRun>,
    pub stopped: Option<Stopped>,
}

/// How stale the guest's heartbeat (a file it rewrites every 5 s) may be before the guest
/// is taken as stopped. Its busiest moments (the verifier on two emulated CPUs) delayed
/// it by a few seconds.
const STOPPED_AFTER: Duration = Duration::from_secs(120);

/// The guest's shell functions: `hang` writes every user task's kernel stack and the end of
/// the kernel log; `run NAME CMD...` runs a suite in its own process group with its output in
/// NAME.log, its exit status in NAME.status and, if it outlives `SUITE_WITHIN`, `hang`'s
/// report in NAME.hang. `current` names the suite running, for a report of a stopped guest.
const GUEST_SHELL: &str = r#"
hang() {
  for t in /proc/[0-9]*/task/[0-9]*; do
    [ -n "$(tr -d '\0' < $t/cmdline)" ] || continue  # kernel threads have no command line
    echo "--- $t $(cat $t/comm) $(grep '^State' $t/status) wchan $(cat $t/wchan)"
    cat "$t/stack"
  done
  echo "--- dmesg"
  dmesg | tail -n 100
}
run() {
  name=$1; shift
  echo "$name" > "$OUT/current"
  setsid "$@" > "$OUT/$name.log" 2>&1 &
  pid=$!
  ( sleep "$SUITE_WITHIN"; kill -0 $pid 2>/dev/null && { hang > "$OUT/$name.hang" 2>&1; kill -9 -$pid; } ) &
  watchdog=$!
  wait $pid
  echo $? > "$OUT/$name.status"
  kill $watchdog 2>/dev/null
}
( while :; do date +%s > "$OUT/heartbeat"; sleep 5; done ) &
grep -i ' t ' /proc/kallsyms > "$OUT/kallsyms"
"#;

/// Boots `image` with `env` exported and runs `suites` in order, each within `suite_within`,
/// the whole guest within `guest_within`.
pub fn boot(
    vng_bin: &Path,
    label: &str,
    image: &str,
    env: &[(&str, String)],
    suites: &[Suite],
    suite_within: Duration,
    guest_within: Duration,
) -> Boot {
    // virtme-ng runs its own helpers (virtme-run) from its venv.
    let path = std::env::join_paths(
        std::iter::once(vng_bin.to_owned()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    // One directory per boot: QEMU killed after a stop may still be going when the next
    // boot starts.
    static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let boot = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("collector-vm-{label}-{}-{boot}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let exports: String = env.iter().map(|(k, v)| format!("export {k}={v}\n")).collect();
    let script: String = suites
        .iter()
        .map(|s| format!("run {} {}\n", s.name, s.command))
        .collect();
    // A file in the shared directory, not `--exec SCRIPT`: virtme-ng passes that on the
    // kernel command line, which x86 cuts at 2048 bytes, and a guest cut short never runs it.
    let script_file = out.join("run.sh");
    std::fs::write(
        &script_file,
        format!(
            "{exports}OUT={out} SUITE_WITHIN={within}\n{GUEST_SHELL}{script}",
            out = out.display(),
            within = suite_within.as_secs(),
        ),
    )
    .unwrap();
    let monitor = out.join("monitor.sock");
    let console = std::fs::File::create(out.join("console.log")).unwrap();
    // Without KVM: nested guests die with a KVM emulation failure on these machines. Stdin
    // is not the terminal's: QEMU may take a terminal it is given, and a guest started from a
    // shell in the background would then stop. `nokaslr`, so that the kernel's addresses a
    // stopped guest's CPUs show stay those its kallsyms had at boot; `--verbose`, so that
    // the kernel's messages reach the console file. Single-threaded TCG: under the default,
    // multi-threaded one, 5.10 guests stopped whole (`tests/tests/kernels.rs`), with both
    // CPUs on a jump-label NOP the kernel patches as a probe attaches or detaches; one host
    // thread running both CPUs sees each code write at once. It cost 1.19x on the sockets
    // suite (345 -> 411 s).
    let mut vng = Command::new(vng_bin.join("vng"))
        .env("PATH", &path)
        .args([
            "--run",
            image,
            "--disable-kvm",
            "--cpus",
            "2",
            "--memory",
            "2G",
            "--verbose",
        ])
        .args(["--append", "nokaslr"])
        .arg(format!("--rwdir={}", out.display()))
        .args(["--exec", &format!("sh {}", script_file.display())])
        .arg(format!(
            "--qemu-opts=-accel tcg,thread=single -monitor unix:{},server=on,wait=off",
            monitor.display()
        ))
        .stdin(Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console)
        // Its own group, so that a guest past its time goes with QEMU and every helper.
        .process_group(0)
        .spawn()
        .unwrap();
    let read = |file: &str| std::fs::read_to_string(out.join(file)).unwrap_or_default();
    let deadline = Instant::now() + guest_within;
    let mut stopped = None;
    while vng.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let beat = std::fs::metadata(out.join("heartbeat")).and_then(|m| m.modified());
        if beat.is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STOPPED_AFTER) {
            stopped = Some(Stopped {
                during: read("current").trim().to_owned(),
                cpus: cpu_state(&monitor, &kernel_symbols(&out.join("kallsyms"))),
                console: tail(&read("console.log"), 150),
            });
            break;
        }
    }
    // A guest that hangs must not hang the suite.
    if vng.try_wait().unwrap().is_none() {
        unsafe { libc::kill(-(vng.id() as i32), libc::SIGKILL) };
    }
    let _ = vng.wait();
    let runs = suites
        .iter()
        .map(|s| GuestRun {
            status: read(&format!("{}.status", s.name)).trim().to_owned(),
            log: read(&format!("{}.log", s.name)),
            hang: read(&format!("{}.hang", s.name)),
            name: s.name.clone(),
        })
        .collect();
    let _ = std::fs::remove_dir_all(&out);
    Boot { runs, stopped }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The guest kernel's text symbols, sorted by address, from the copy of its /proc/kallsyms
/// the guest wrote at boot (Debian's packages ship a System.map stub; the real one is in a
/// -dbg package of hundreds of MB).
fn kernel_symbols(kallsyms: &Path) -> Vec<(u64, String)> {
    let mut symbols: Vec<(u64, String)> = std::fs::read_to_string(kallsyms)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (address, _kind, name) = (f.next()?, f.next()?, f.next()?);
            Some((u64::from_str_radix(address, 16).ok()?, name.to_owned()))
        })
        .collect();
    symbols.sort();
    symbols
}

/// `address` as `symbol+offset` when it falls in the kernel's text.
fn symbolize(symbols: &[(u64, String)], address: u64) -> Option<String> {
    let at = symbols.partition_point(|(a, _)| *a <= address).checked_sub(1)?;
    let (start, name) = &symbols[at];
    // Past the last symbol, or far into one, is not code: a data word that looks like it.
    (at + 1 < symbols.len() && address - start < 0x10000).then(|| format!("{name}+{:#x}", address - start))
}

/// Asks QEMU's monitor, twice a second apart, for each CPU's registers and the kernel text
/// addresses on the top of its stack. Never panics: the guest is killed after it.
fn cpu_state(monitor: &Path, symbols: &[(u64, String)]) -> String {
    let Ok(mut socket) = UnixStream::connect(monitor) else {
        return format!("QEMU's monitor at {} did not answer", monitor.display());
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    // Each answer ends with the next prompt.
    let mut ask = |command: &str| {
        if socket.write_all(format!("{command}\n").as_bytes()).is_err() {
            return String::new();
        }
        let (mut all, mut buf) = (Vec::new(), vec![0u8; 65536]);
        while !all.ends_with(b"(qemu) ") {
            match socket.read(&mut buf) {
                Ok(n @ 1..) => all.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    ask("");
    let mut report = String::new();
    for round in 0..2 {
        for cpu in 0..2 {
            ask(&format!("cpu {cpu}"));
            let registers = ask("info registers");
            let field = |name: &str| {
                registers
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            let (rip, rsp) = (field("RIP=").unwrap_or(0), field("RSP=").unwrap_or(0));
            let stack: Vec<String> = ask(&format!("x/256gx {rsp:#x}"))
                .split_whitespace()
                .filter_map(|w| u64::from_str_radix(w.strip_prefix("0x")?, 16).ok())
                .filter_map(|a| symbolize(symbols, a))
                .collect();
            report += &format!(
                "round {round}, cpu {cpu}: RIP {rip:#x} {}\n  stack: {}\n",
                symbolize(symbols, rip).unwrap_or_default(),
                stack.join(" <- ")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    report
}

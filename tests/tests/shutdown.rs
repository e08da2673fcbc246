//! SIGTERM to the real collector wherever it is: in start-up, in a cgroup storm, in the
//! middle of scrapes. Each time it must exit with status 0 within a few seconds and leave
//! nothing loaded: every program, map and link it held is gone from the kernel (README:
//! "Exit codes").
use std::{
    fs::File,
    path::PathBuf,
    process::ExitStatus,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tests::{BpfObjects, CgroupTree, Collector, Workload, eventually, have_tool, http_get_accept, privileged};

/// The README promises 2 s; this is about never hanging, not about speed.
const EXITS_WITHIN: Duration = Duration::from_secs(5);
/// How long the kernel may take to free what an exited process held (RCU grace periods).
const FREED_WITHIN: Duration = Duration::from_secs(10);

fn can_run() -> bool {
    privileged() && have_tool("bpftool", "bpftool")
}

/// The collector's stderr, in a file: a pipe nobody reads fills up and blocks the collector
/// (a cgroup storm logs a line per cgroup), and what the collector wrote before a moment can
/// be read at that moment.
struct Log(PathBuf);

impl Log {
    fn new(test: &str) -> Log {
        Log(std::env::temp_dir().join(format!("collector-shutdown-{test}-{}.log", std::process::id())))
    }

    fn file(&self) -> File {
        File::create(&self.0).unwrap()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a SIGTERM did: the exit status (`None`: still running `EXITS_WITHIN` after it),
/// what the collector held just before it, and what of that the kernel still had
/// `FREED_WITHIN` after the exit.
struct Stopped {
    status: Option<ExitStatus>,
    held: BpfObjects,
    left: BpfObjects,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let status = self.status.map_or("still running".to_owned(), |s| s.to_string());
        write!(f, "{status}; held {}; left {}", self.held, self.left)
    }
}

fn sigterm(c: &mut Collector) -> Stopped {
    let held = BpfObjects::held_by(c.pid());
    let status = c.terminate(EXITS_WITHIN);
    let left = match status {
        Some(_) => held.still_loaded(FREED_WITHIN),
        None => held.clone(), // still running, still holding them
    };
    Stopped { status, held, left }
}

/// Exit status 0, and nothing of what it held left loaded.
fn assert_clean_exit(what: &str, stopped: &Stopped, log: &str) {
    let code = stopped.status.map(|s| s.code());
    assert_eq!(
        code,
        Some(Some(0)),
        "{what}: exit {:?} (None: still running after {EXITS_WITHIN:?})\n{log}",
        stopped.status
    );
    assert!(
        stopped.left.is_empty(),
        "{what}: still loaded {FREED_WITHIN:?} after the exit: {:?}\n{log}",
        stopped.left
    );
}

/// Whether a SIGTERM to `pid` would be handled rather than kill it: the collector's main
/// thread blocks it (the agent does from the start of its start-up, and looks for it
/// between the steps) or has a handler for it (from when it serves): bit SIGTERM-1 of the
/// `SigBlk:` or `SigCgt:` mask in /proc/PID/status (fs/proc/array.c, render_sigset_t).
/// `Name:` must be the collector's: between fork and exec, glibc's posix_spawn child blocks
/// every signal, and one sent then is delivered, by default, once exec unblocks it.
fn handles_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let has = |mask: &str| {
        field(mask)
            .and_then(|mask| u64::from_str_radix(mask, 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    field("Name:") == Some("collector") && (has("SigBlk:") || has("SigCgt:"))
}

/// Tells the threads of a scope to stop when dropped, also when the test fails inside the
/// scope (which joins its threads before the panic goes on).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One SIGTERM sent `delay` after the collector began to catch it.
struct StartUpRun {
    delay: Duration,
    /// Whether "collector ready" was not in its log yet when the signal went.
    before_ready: bool,
    stopped: Stopped,
    log: String,
}

fn sigterm_in_start_up(target: &Workload, delay: Duration) -> StartUpRun {
    let log = Log::new(&format!("start-up-{}", delay.as_millis()));
    let mut c = Collector::spawn(&["--pid", &target.pid.to_string()], log.file());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handles_sigterm(c.pid()) {
        if let Some(status) = c.try_wait() {
            panic!("collector exited before it handled SIGTERM ({status}):\n{}", log.text());
        }
        assert!(
            Instant::now() < deadline,
            "collector did not block or catch SIGTERM within 30 s:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(delay);
    // A file, not a pipe: every line written before this read is in it.
    let before_ready = !log.text().contains("collector ready");
    let stopped = sigterm(&mut c);
    StartUpRun {
        delay,
        before_ready,
        stopped,
        log: log.text(),
    }
}

#[test]
fn sigterm_during_start_up_exits_0_and_leaves_nothing_loaded() {
    if !can_run() {
        return;
    }
    let target = Workload::spawn();
    let runs: Vec<StartUpRun> = [0, 100, 200, 300]
        .into_iter()
        .map(|ms| sigterm_in_start_up(&target, Duration::from_millis(ms)))
        .collect();
    for run in &runs {
        println!(
            "SIGTERM {:?} after SigBlk or SigCgt had it, {} \"collector ready\": {}",
            run.delay,
            if run.before_ready { "before" } else { "after" },
            run.stopped
        );
    }
    for run in &runs {
        assert_clean_exit(
            &format!("SIGTERM {:?} into start-up", run.delay),
            &run.stopped,
            &run.log,
        );
    }
    assert!(
        runs.iter().any(|run| run.before_ready),
        "every SIGTERM went after \"collector ready\": the collector only blocks SIGTERM once it \
         has started\n{}",
        runs[0].log
    );
}

/// Makes cgroups `storm-N` under `tree` as fast as it can until `stop`, moves `pids` into
/// each new one and removes the one before (so one storm cgroup always exists and holds
/// them); returns how many it made.
fn cgroup_storm(tree: &CgroupTree, pids: &[u32], stop: &AtomicBool) -> usize {
    let mut made = 0;
    while !stop.load(Ordering::Relaxed) {
        let sub = format!("storm-{made}");
        tree.mkdir(&sub);
        for &pid in pids {
            tree.move_in(pid, &sub);
        }
        if made > 0 {
            tree.rmdir(&format!("storm-{}", made - 1));
        }
        made += 1;
    }
    made
}

#[test]
fn sigterm_during_a_cgroup_storm_exits_0_and_leaves_nothing_loaded() {
    if !can_run() {
        return;
    }
    let Some(tree) = CgroupTree::for_test("shutdown-storm") else {
        return;
    };
    let movers = [Workload::spawn(), Workload::spawn()];
    let pids = movers.each_ref().map(|w| w.pid);
    let log = Log::new("storm");
    let pattern = format!("{}/storm-*", tree.root.display());
    let mut c = Collector::spawn(&["--cgroup-pattern", &pattern], log.file());
    c.wait_until_serving();
    let stop = AtomicBool::new(false);
    let (added_before, made, stopped) = std::thread::scope(|s| {
        let storm = s.spawn(|| cgroup_storm(&tree, &pids, &stop));
        let stop_storm = StopOnDrop(&stop);
        eventually("the collector adds a storm cgroup", Duration::from_secs(10), || {
            log.text().contains("cgroup target added")
        });
        let added_before = targets_added(&log.text());
        let stopped = sigterm(&mut c);
        drop(stop_storm);
        (added_before, storm.join().unwrap(), stopped)
    });
    println!("cgroups the storm made: {made}, of which {added_before} were targets when signalled; {stopped}");
    assert!(!stopped.held.links.is_empty(), "the collector held no link: {stopped}");
    assert_clean_exit("SIGTERM during a cgroup storm", &stopped, &log.text());
}

/// The cgroup targets the collector logged as added.
fn targets_added(log: &str) -> usize {
    log.lines().filter(|l| l.contains("cgroup target added")).count()
}

#[test]
fn sigterm_during_scrapes_exits_0_and_leaves_nothing_loaded() {
    if !can_run() {
        return;
    }
    const SCRAPERS: usize = 4;
    let mut target = Workload::spawn();
    let log = Log::new("scrapes");
    let mut c = Collector::spawn(&["--pid", &format!("app={}", target.pid)], log.file());
    c.wait_until_serving();
    target.run("getppid 1000");
    let (stop, scraped) = (AtomicBool::new(false), AtomicUsize::new(0));
    let addr = c.addr.clone();
    let stopped = std::thread::scope(|s| {
        for scraper in 0..SCRAPERS {
            // Half ask for OpenMetrics, as Prometheus does; half get the classic text.
            let accept = (scraper % 2 == 0).then_some("application/openmetrics-text;version=1.0.0");
            let (addr, stop, scraped) = (&addr, &stop, &scraped);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if http_get_accept(addr, "/metrics", accept).is_some_and(|(status, _, _)| status == 200) {
                        scraped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let _stop_scrapers = StopOnDrop(&stop);
        eventually("scrapes answered", Duration::from_secs(10), || {
            scraped.load(Ordering::Relaxed) >= 10 * SCRAPERS
        });
        sigterm(&mut c)
    });
    println!("scrapes answered: {}; {stopped}", scraped.load(Ordering::Relaxed));
    assert!(!stopped.held.links.is_empty(), "the collector held no link: {stopped}");
    assert_clean_exit("SIGTERM during scrapes", &stopped, &log.text());
}

//! F. HTTP under load: nginx's one worker serving a small static file to wrk over keep-alive
//! connections, with nothing attached, with the collector targeting nginx but its HTTP family
//! off, and with HTTP on; the arms by turns, and the requests the collector counted checked
//! against nginx's access log.
use std::{
    fs::File,
    process::Command,
    time::{Duration, Instant},
};

use serde::Serialize;
use tests::{Collector, Nginx, value};

use crate::{
    Config,
    limits::{Check, HTTP_COUNTED_TARGET, HTTP_THROUGHPUT, RatioCheck},
    process::pin_process,
    stats::{median, round1, round3},
    wrk::{self, Wrk},
};

/// nginx's worker runs here and wrk there, as in the measurement by hand (BENCHMARKS.md);
/// the collector shares nginx's CPU, so whatever its agent does is paid in requests.
const NGINX_CPU: usize = 0;
const WRK_CPU: usize = 1;
/// wrk's keep-alive connections (one thread).
const CONNECTIONS: u32 = 16;

#[derive(Clone, Copy)]
pub enum HttpArm {
    /// (1) no collector running
    Bare,
    /// (2) the collector targeting nginx, its HTTP family not loaded
    HttpOff,
    /// (3) the collector targeting nginx with default flags
    HttpOn,
}

impl HttpArm {
    const ALL: [HttpArm; 3] = [HttpArm::Bare, HttpArm::HttpOff, HttpArm::HttpOn];

    /// What the limits call it.
    pub fn name(self) -> &'static str {
        match self {
            HttpArm::Bare => "nothing attached",
            HttpArm::HttpOff => "HTTP off",
            HttpArm::HttpOn => "HTTP on",
        }
    }

    fn label(self) -> &'static str {
        match self {
            HttpArm::Bare => "(1) nothing attached",
            HttpArm::HttpOff => "(2) collector, HTTP family off (--disable-family http)",
            HttpArm::HttpOn => "(3) collector, HTTP on (default flags)",
        }
    }

    /// The collector's flags besides its target; `None`: no collector.
    fn flags(self) -> Option<&'static [&'static str]> {
        match self {
            HttpArm::Bare => None,
            HttpArm::HttpOff => Some(&["--disable-family", "http"]),
            HttpArm::HttpOn => Some(&[]),
        }
    }
}

#[derive(Serialize)]
pub struct HttpLoad {
    pub seconds: u64,
    pub connections: u32,
    pub rounds: usize,
    /// In the order of `HttpArm::ALL`.
    pub arms: Vec<ArmLoad>,
    pub targets: Vec<RatioCheck>,
    pub counted: Check,
}

/// One arm: the median of each figure over its rounds, and the rounds.
#[derive(Serialize)]
pub struct ArmLoad {
    pub arm: &'static str,
    #[serde(flatten)]
    pub median: Wrk,
    pub rounds: Vec<Round>,
}

/// One wrk run, and the requests nginx logged and the collector counted in it.
#[derive(Serialize)]
pub struct Round {
    #[serde(flatten)]
    pub wrk: Wrk,
    pub logged: usize,
    /// `collector_http_server_request_duration_seconds_count` summed (`None`: no collector).
    pub counted: Option<f64>,
}

/// Why this host cannot run the section, if it cannot.
pub fn cannot_run(cpus: usize) -> Option<&'static str> {
    let installed = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if cpus < 2 {
        Some("nginx's worker and wrk each need a CPU of their own, and this host has fewer than two")
    } else if !installed("nginx") || !installed("wrk") {
        Some("nginx or wrk is not installed (Debian's nginx-light and wrk)")
    } else {
        None
    }
}

pub fn nginx_under_wrk(config: &Config) -> HttpLoad {
    let (seconds, rounds) = if config.quick { (2, 1) } else { (5, 3) };
    let nginx = Nginx::with_workers("bench", "", 1);
    std::fs::write(nginx.html().join("file"), "x".repeat(100)).unwrap();
    let url = format!("http://127.0.0.1:{}/file", nginx.port);
    pin_process(nginx.workers()[0], NGINX_CPU);
    // Unmeasured: the file into the page cache and the worker's first connections made.
    wrk::run(&url, CONNECTIONS, 1, WRK_CPU);
    let mut runs: [Vec<Round>; 3] = Default::default();
    for round in 0..rounds {
        // 1 2 3, then 3 2 1: drift over the run hits every arm alike.
        let mut order = HttpArm::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        for arm in order {
            let run = run_round(&nginx, &url, arm, seconds);
            eprintln!(
                "bench: nginx round {round} {:<55} {:>9.0} requests/s, logged {}, counted {:?}",
                arm.label(),
                run.wrk.requests_per_s,
                run.logged,
                run.counted
            );
            runs[arm as usize].push(run);
        }
    }
    let arms: Vec<ArmLoad> = HttpArm::ALL
        .into_iter()
        .zip(runs)
        .map(|(arm, rounds)| ArmLoad {
            arm: arm.label(),
            median: medians(&rounds),
            rounds,
        })
        .collect();
    let rounds_of = |arm: HttpArm| &arms[arm as usize].rounds;
    let rate = |arm: HttpArm| arms[arm as usize].median.requests_per_s;
    let targets = HTTP_THROUGHPUT
        .iter()
        .map(|t| t.check(round3(rate(t.over) / rate(t.under))))
        .collect();
    // A request still in flight when wrk stopped is one nginx may log and the collector
    // count as aborted (or the other way round): at most one per connection.
    let exact = rounds_of(HttpArm::HttpOn).iter().all(|r| {
        r.counted
            .is_some_and(|n| (n - r.logged as f64).abs() <= f64::from(CONNECTIONS))
    }) && rounds_of(HttpArm::HttpOff).iter().all(|r| r.counted == Some(0.0));
    let on_rounds: Vec<String> = rounds_of(HttpArm::HttpOn)
        .iter()
        .map(|r| format!("{} / {} / {}", r.counted.unwrap_or(0.0), r.logged, r.wrk.requests))
        .collect();
    let counted = Check {
        note: Some(format!(
            "HTTP on, counted / nginx logged / wrk completed: {}",
            on_rounds.join("; ")
        )),
        ..Check::new(HTTP_COUNTED_TARGET, exact)
    };
    HttpLoad {
        seconds,
        connections: CONNECTIONS,
        rounds,
        arms,
        targets,
        counted,
    }
}

/// Each of wrk's figures, its median over `rounds`.
fn medians(rounds: &[Round]) -> Wrk {
    let of = |field: fn(&Wrk) -> f64| round1(median(rounds.iter().map(|r| field(&r.wrk)).collect()));
    Wrk {
        requests: of(|w| w.requests as f64) as u64,
        requests_per_s: of(|w| w.requests_per_s),
        p50_us: of(|w| w.p50_us),
        p90_us: of(|w| w.p90_us),
        p99_us: of(|w| w.p99_us),
    }
}

/// One wrk run on `url` under `arm`.
fn run_round(nginx: &Nginx, url: &str, arm: HttpArm, seconds: u64) -> Round {
    // The master's pid: its worker is found as a descendant.
    let target = format!("nginx={}", nginx.child.id());
    let collector = arm.flags().map(|flags| {
        let c = Collector::start(&[&["--pid", target.as_str()][..], flags].concat());
        pin_process(c.pid(), NGINX_CPU);
        c
    });
    // The log of this round alone: its lines are this round's requests (and a full run's
    // millions of lines never pile up). nginx appends, so it writes on from the new end.
    File::create(nginx.access_log()).unwrap();
    let wrk = wrk::run(url, CONNECTIONS, seconds, WRK_CPU);
    let counted = collector.as_ref().map(http_requests_counted);
    Round {
        wrk,
        logged: nginx.access_log_lines(),
        counted,
    }
}

/// The requests the collector counted, once wrk's connections are all closed: a
/// connection's last response is counted when its socket is freed.
fn http_requests_counted(c: &Collector) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = c.metrics();
        let open = value(
            &m,
            "collector_tcp_connections",
            &[("target", "nginx"), ("direction", "inbound")],
        );
        if open == 0.0 || Instant::now() > deadline {
            return m.sum(
                "collector_http_server_request_duration_seconds_count",
                &[("target", "nginx")],
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

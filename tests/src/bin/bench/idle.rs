//! D. Idle: the agent's CPU and RSS with a target that does nothing, scraped now and then,
//! on a host with systemd's pid_max.
use std::time::{Duration, Instant};

use serde::Serialize;
use tests::{Collector, PidMaxSet, Workload, http_get_accept};

use crate::{
    Config,
    limits::{Check, KERNEL_MAPS_PID_MAX, idle_checks},
    process::{cpu_seconds, rss_kib},
    scrape::OPENMETRICS,
    stats::{round1, round3},
};

#[derive(Serialize)]
pub struct Idle {
    pub pid_max: u32,
    pub seconds: u64,
    pub scrape_every_s: u64,
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub targets: Vec<Check>,
}

pub fn idle_cost(config: &Config) -> Idle {
    let (duration, every) = if config.quick {
        (Duration::from_secs(4), Duration::from_secs(1))
    } else {
        (Duration::from_secs(60), Duration::from_secs(15))
    };
    // At the pid_max of a systemd host, so RSS is measured where the maps are largest.
    let _pid_max = PidMaxSet::to(KERNEL_MAPS_PID_MAX);
    let sleeper = Workload::spawn();
    let c = Collector::start(&["--pid", &format!("idle={}", sleeper.pid)]);
    let (cpu_before, start) = (cpu_seconds(c.pid()), Instant::now());
    while start.elapsed() < duration {
        http_get_accept(&c.addr, "/metrics", Some(OPENMETRICS)).unwrap();
        std::thread::sleep(every.min(duration.saturating_sub(start.elapsed())));
    }
    let cpu_percent = (cpu_seconds(c.pid()) - cpu_before) / start.elapsed().as_secs_f64() * 100.0;
    let rss_mib = rss_kib(c.pid()) as f64 / 1024.0;
    eprintln!(
        "bench: idle {:.0} s: CPU {cpu_percent:.3} %, RSS {rss_mib:.1} MiB",
        duration.as_secs_f64()
    );
    Idle {
        pid_max: KERNEL_MAPS_PID_MAX,
        seconds: duration.as_secs(),
        scrape_every_s: every.as_secs(),
        cpu_percent: round3(cpu_percent),
        rss_mib: round1(rss_mib),
        targets: idle_checks(cpu_percent, rss_mib),
    }
}

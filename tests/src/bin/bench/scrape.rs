//! C. Scrape: /metrics latency and size with synthetic series in the kernel map.
use std::time::Instant;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues, Queue};
use collector_common::{SyscallKey, SyscallStats, TargetId, histogram, maps};
use serde::Serialize;
use tests::{Collector, Metrics, Workload, bpf_ids_held_by, http_get, http_get_accept};

use crate::{
    Config,
    limits::SCRAPE_LIMITS,
    process::{AGENT_CPU, pin_process, rss_kib},
    stats::{percentile, round3},
};

/// What Prometheus asks for.
pub const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

/// Samples in the exposition per (target, syscall) key: the counter, 28 buckets, _sum, _count.
const SAMPLES_PER_KEY: usize = 1 + histogram::BUCKETS + 2;

/// Scrapes of one exposition size.
#[derive(Serialize)]
pub struct Scrape {
    pub series_target: usize,
    pub samples: usize,
    pub scrapes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bytes: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub target: String,
    pub met: bool,
}

pub fn scrape_cost(config: &Config) -> Vec<Scrape> {
    let scrapes = if config.quick { 10 } else { 100 };
    SCRAPE_LIMITS
        .iter()
        .map(|limit| {
            let series = limit.series;
            let w = Workload::spawn();
            let c = Collector::start(&["--pid", &format!("bench={}", w.pid)]);
            pin_process(c.pid(), AGENT_CPU);
            let keys = series.div_ceil(SAMPLES_PER_KEY);
            fill_syscall_stats(c.pid(), keys);
            let rss_before = rss_kib(c.pid());
            let mut latencies = Vec::new();
            let mut bytes = 0;
            for _ in 0..scrapes {
                let start = Instant::now();
                let (status, _, body) = http_get_accept(&c.addr, "/metrics", Some(OPENMETRICS)).unwrap();
                latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, 200);
                bytes = body.len();
            }
            let samples = Metrics::parse(&http_get(&c.addr, "/metrics").unwrap().1).0.len();
            let rss_after = rss_kib(c.pid());
            latencies.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
            eprintln!(
                "bench: scrape {series} series ({samples} samples): p50 {p50:.1} ms p99 {p99:.1} ms, {bytes} bytes"
            );
            Scrape {
                series_target: series,
                samples,
                scrapes,
                p50_ms: round3(p50),
                p99_ms: round3(p99),
                bytes,
                rss_before_kib: rss_before,
                rss_after_kib: rss_after,
                target: limit.target(),
                met: p99 <= limit.p99_ms,
            }
        })
        .collect()
}

/// Inserts `keys` synthetic (target, syscall) aggregates into the running agent's maps, as
/// the kernel does for a new pair: a `SYSCALL_STATS` slot taken from `FREE_SERIES`, named
/// in `SYSCALL_SERIES`.
fn fill_syscall_stats(agent: u32, keys: usize) {
    let map = |name: &str| {
        bpf_ids_held_by(agent, "map_id:")
            .into_iter()
            .filter_map(|id| MapData::from_id(id as u32).ok())
            .find(|m| {
                m.info()
                    .ok()
                    .and_then(|i| i.name_as_str().map(|n| n == name))
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("the agent's {name} map"))
    };
    let mut free: Queue<_, u32> = Queue::try_from(Map::Queue(map(maps::FREE_SERIES))).unwrap();
    let mut series: HashMap<_, SyscallKey, u32> = HashMap::try_from(Map::HashMap(map(maps::SYSCALL_SERIES))).unwrap();
    let mut stats: PerCpuArray<_, SyscallStats> =
        PerCpuArray::try_from(Map::PerCpuArray(map(maps::SYSCALL_STATS))).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    let mut value = SyscallStats::ZERO;
    value.buckets[3] = 5;
    value.sum_ns = 5_000;
    for i in 0..keys {
        // Numbers past every architecture's table: shown as numbers, never a real syscall.
        let key = SyscallKey {
            target: TargetId(0).slot(),
            nr: 100_000 + i as u32,
        };
        let index = free.pop(0).expect("a free SYSCALL_STATS slot");
        stats
            .set(index, PerCpuValues::try_from(vec![value; cpus]).unwrap(), 0)
            .unwrap();
        series.insert(key, index, 0).unwrap();
    }
}

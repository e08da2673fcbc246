//! wrk, Debian's HTTP load generator, run pinned to a CPU, and what it printed.
use std::process::Command;

use serde::Serialize;

/// What wrk printed: requests completed, their rate, latency percentiles in µs.
#[derive(Serialize)]
pub struct Wrk {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
}

/// wrk on `cpu` for `seconds`: one thread, `connections` keep-alive connections to `url`.
pub fn run(url: &str, connections: u32, seconds: u64, cpu: usize) -> Wrk {
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx"),
        "wrk failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in wrk's output: {text}"))
            .trim()
    };
    // `  1034560 requests in 5.00s, 250.00MB read`
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output: {text}"));
    Wrk {
        requests,
        requests_per_s: line("Requests/sec:").parse().unwrap(),
        p50_us: micros(line("50%")),
        p90_us: micros(line("90%")),
        p99_us: micros(line("99%")),
    }
}

/// A time as wrk prints it (`482.00us`, `2.24ms`, `1.05s`), in µs.
fn micros(time: &str) -> f64 {
    let (number, scale) = [("us", 1.0), ("ms", 1e3), ("s", 1e6)]
        .into_iter()
        .find_map(|(unit, scale)| Some((time.strip_suffix(unit)?, scale)))
        .unwrap_or_else(|| panic!("not a wrk time: {time}"));
    number.parse::<f64>().unwrap() * scale
}

//! Command-line flags. Every flag can also be set by an environment variable
//! `COLLECTOR_<FLAG>` (repeatable flags take a comma-separated list there).
use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use collector_common::{
    http::{self, Bounds},
    maps,
};

use crate::{
    export::otlp::settings::OtlpArgs,
    kernel::{
        btf::VMLINUX_BTF,
        capabilities,
        families::FAMILIES,
        http_routes,
        probes::{MapSizes, Settings},
    },
    targets::{
        CgroupSpec, PidSpec,
        cgroup::pattern::CgroupPattern,
        workload::{
            FIELDS,
            host::HostFiles,
            naming::{Naming, Template},
        },
    },
};

#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "Zero-instrumentation telemetry for Linux processes: syscall counts, errors and latency \
             measured in the kernel with eBPF, served as Prometheus/OpenMetrics.",
    after_help = "Examples:\n  \
        collector --pid 1234                       # one process, its threads and children (target \"pid-1234\")\n  \
        collector --pid web=1234 --pid web=1235    # two worker processes counted together as \"web\"\n  \
        COLLECTOR_PID=web=1234,db=99 collector     # the same flags from the environment\n  \
        collector --cgroup-pattern 'system.slice/*.service'  # every service, one target each\n  \
        collector --config /etc/collector/collector.toml  # settings and metric definitions from a file\n  \
        collector check-config collector.toml      # check a file without loading anything\n  \
        curl -s localhost:9464/metrics             # then scrape\n\n\
        Needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF (/sys/kernel/btf/vmlinux).",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A TOML file of settings (every flag below, by its long name with `_`: `series_ttl =
    /// "5m"`, `pid = ["web=1234"]`) and `[[metric]]` definitions. A flag given on the command
    /// line or in the environment overrides the file. SIGHUP (or POST /-/reload) reloads its
    /// metric definitions. [example: --config /etc/collector/collector.toml]
    #[arg(long, value_name = "FILE", env = "COLLECTOR_CONFIG")]
    pub config: Option<PathBuf>,

    /// TLS and basic auth for every endpoint, in the Prometheus exporter-toolkit's web config
    /// format (tls_server_config: cert_file, key_file, client_auth_type, client_ca_file,
    /// min_version; basic_auth_users: bcrypt hashes). [example: --web.config.file /etc/collector/web.yml]
    #[arg(long = "web.config.file", value_name = "FILE", env = "COLLECTOR_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Serve POST /-/reload, which reloads the --config file as SIGHUP does; off by default,
    /// as anyone who can reach the address could trigger it. [example: --web.enable-reload]
    #[arg(long = "web.enable-reload", env = "COLLECTOR_WEB_ENABLE_RELOAD")]
    pub web_enable_reload: bool,

    /// A process to observe, with its threads and the children it creates: PID or NAME=PID.
    /// Repeatable; PIDs given the same NAME add up under one target.
    /// [example: --pid 1234 --pid web=5678]
    #[arg(
        long = "pid",
        value_name = "[NAME=]PID",
        env = "COLLECTOR_PID",
        value_delimiter = ',',
        required_unless_present_any = ["cgroups", "cgroup_patterns", "config"]
    )]
    pub pids: Vec<PidSpec>,

    /// A cgroup v2 to observe: every process in it or in a cgroup below it, including
    /// processes that join later. PATH (absolute, or relative to the cgroup v2 mount) or
    /// NAME=PATH; the default name is the path relative to the mount. Repeatable.
    /// [example: --cgroup system.slice/nginx.service --cgroup db=/sys/fs/cgroup/db.slice]
    #[arg(
        long = "cgroup",
        value_name = "[NAME=]PATH",
        env = "COLLECTOR_CGROUP",
        value_delimiter = ','
    )]
    pub cgroups: Vec<CgroupSpec>,

    /// Every cgroup v2 matching this glob is a target of its own, named by its path relative
    /// to the mount; cgroups created later that match are picked up while running. `*` `?`
    /// `[a-z]` match within a path segment, `**` across segments. Repeatable.
    /// [example: --cgroup-pattern 'system.slice/*.service']
    #[arg(long = "cgroup-pattern", value_name = "GLOB", env = "COLLECTOR_CGROUP_PATTERN", value_delimiter = ',', value_parser = CgroupPattern::validate)]
    pub cgroup_patterns: Vec<String>,

    /// How long the series of a removed cgroup target stay in /metrics after the cgroup is
    /// gone (its kernel entries go at once). [example: --series-ttl 5m]
    #[arg(long, value_name = "DURATION", env = "COLLECTOR_SERIES_TTL", default_value = "60s", value_parser = parse_duration)]
    pub series_ttl: humantime::Duration,

    /// Most targets at once; cgroups beyond it are refused and counted in
    /// collector_targets_rejected_total. [example: --max-targets 200]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_TARGETS", default_value_t = 1000, value_parser = parse_max_targets)]
    pub max_targets: u32,

    /// Address to serve /metrics and /health on. [example: --listen 0.0.0.0:9464]
    #[arg(
        long,
        value_name = "ADDR",
        env = "COLLECTOR_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub listen: SocketAddr,

    /// Log verbosity: error, warn, info, debug or trace, or a tracing filter directive.
    /// [example: --log-level debug, --log-level collector=debug,aya=warn]
    #[arg(long, value_name = "LEVEL", env = "COLLECTOR_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format: human-readable text, or one JSON object per line. [example: --log-format json]
    #[arg(long, value_name = "FORMAT", env = "COLLECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Write every telemetry event as one JSON object per line to PATH (appending), or to
    /// stdout with `-`. [example: --events /var/log/collector/events.jsonl, --events -]
    #[arg(long, value_name = "PATH", env = "COLLECTOR_EVENTS")]
    pub events: Option<String>,

    /// How often to emit the periodic measurements (`process.count` per target,
    /// `collector.vm`). [example: --poll-interval 10s]
    #[arg(long, value_name = "DURATION", env = "COLLECTOR_POLL_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub poll_interval: humantime::Duration,

    /// Size of the kernel's event ring buffer in bytes: a power of two, 4096 or more. Events
    /// that do not fit are dropped and counted (stage "kernel"). [example: --ring-buffer-size 4194304]
    #[arg(long, value_name = "BYTES", env = "COLLECTOR_RING_BUFFER_SIZE", default_value_t = maps::EVENTS_DEFAULT_BYTES, value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,

    /// Distinct (target, syscall) pairs the kernel aggregates; updates beyond it are counted
    /// in collector_bpf_map_errors_total{map="SYSCALL_STATS"}. [example: --max-syscall-series 16384]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_SYSCALL_SERIES", default_value_t = maps::SYSCALL_STATS_ENTRIES, value_parser = parse_entries)]
    pub max_syscall_series: u32,

    /// Distinct (target, syscall, errno) error counters in the kernel; beyond it counted in
    /// collector_bpf_map_errors_total{map="SYSCALL_ERRORS"}. [example: --max-error-series 16384]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_ERROR_SERIES", default_value_t = maps::SYSCALL_ERRORS_ENTRIES, value_parser = parse_entries)]
    pub max_error_series: u32,

    /// Processes of targets followed at once; a new one beyond it is not followed and is
    /// counted in collector_bpf_map_errors_total{map="TARGET_OF"}. [example: --max-target-processes 65536]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_TARGET_PROCESSES", default_value_t = maps::TARGET_PROCESSES_ENTRIES, value_parser = parse_entries)]
    pub max_target_processes: u32,

    /// Threads of targets whose syscalls are timed at once; a new one beyond it is not timed
    /// (nor its socket bytes counted), each time it runs, in
    /// collector_bpf_map_errors_total{map="THREAD_SLOTS"}. [example: --max-target-threads 65536]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_TARGET_THREADS", default_value_t = maps::TARGET_THREADS_ENTRIES, value_parser = parse_entries)]
    pub max_target_threads: u32,

    /// TCP connections of targets followed at once; new ones beyond it are not followed and
    /// are counted in collector_bpf_map_errors_total{map="SOCKETS"}. [example: --max-connections 65536]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_CONNECTIONS", default_value_t = maps::SOCKETS_ENTRIES, value_parser = parse_entries)]
    pub max_connections: u32,

    /// Distinct (target, address family, protocol) socket byte counters; beyond it counted in
    /// collector_bpf_map_errors_total{map="SOCKET_BYTES"}. [example: --max-socket-series 8192]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_SOCKET_SERIES", default_value_t = maps::SOCKET_BYTES_ENTRIES, value_parser = parse_entries)]
    pub max_socket_series: u32,

    /// HTTP connections of targets whose requests are followed at once; beyond it, a new
    /// one's requests are not counted, each in
    /// collector_bpf_map_errors_total{map="HTTP_CONNS"}. [example: --max-http-connections 32768]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_HTTP_CONNECTIONS", default_value_t = maps::HTTP_CONNS_ENTRIES, value_parser = parse_entries)]
    pub max_http_connections: u32,

    /// Distinct (target, side, method, status, route) HTTP aggregates in the kernel (with
    /// --http-route, each route multiplies them); beyond it counted in
    /// collector_bpf_map_errors_total{map="HTTP_STATS"}. [example: --max-http-series 8192]
    #[arg(long, value_name = "N", env = "COLLECTOR_MAX_HTTP_SERIES", default_value_t = maps::HTTP_STATS_ENTRIES, value_parser = parse_entries)]
    pub max_http_series: u32,

    /// Upper bounds in seconds of the HTTP request duration buckets, ascending, at most 15
    /// (the default is the OpenTelemetry semantic conventions'). [example: --http-buckets 0.01,0.1,1,10]
    #[arg(long, value_name = "SECONDS,...", env = "COLLECTOR_HTTP_BUCKETS", default_value_t = HttpBuckets::default(), value_parser = parse_http_buckets)]
    pub http_buckets: HttpBuckets,

    /// A route to group HTTP requests by (repeatable, or comma-separated; at most 64): their
    /// metrics gain an http_route label, the route that matched (the longest), or "other".
    /// A route ending in * matches every path that starts with what is before it; any other
    /// matches that path alone (with or without a query). Raw paths are never labels.
    /// [example: --http-route '/api/users/*' --http-route /health]
    #[arg(long = "http-route", value_name = "PATTERN", env = "COLLECTOR_HTTP_ROUTE", value_delimiter = ',', value_parser = parse_http_route)]
    pub http_routes: Vec<String>,

    /// Probe families not to load (repeatable, or comma-separated): cgroups, tcp,
    /// socket_bytes, http; a family that needs a disabled one is disabled too. What they
    /// measure is not served, and /health lists them without being degraded.
    /// [example: --disable-family http]
    #[arg(long = "disable-family", value_name = "FAMILY", env = "COLLECTOR_DISABLE_FAMILY", value_delimiter = ',', value_parser = parse_family)]
    pub disabled_families: Vec<&'static str>,

    /// Send each call of a target that takes longer than this as a `syscall.slow` event (and,
    /// with OTLP export, a span); off by default. Other calls pay one compare for it.
    /// [example: --slow-syscall 10ms]
    #[arg(long, value_name = "DURATION", env = "COLLECTOR_SLOW_SYSCALL", value_parser = parse_positive_duration)]
    pub slow_syscall: Option<humantime::Duration>,

    /// How to name each target a --cgroup-pattern finds, from its workload: text with
    /// {namespace}, {pod}, {container}, {container_id}, {pod_uid}, {qos}, {unit} or {cgroup}
    /// (its path). A target whose workload lacks a field the template uses gets the default:
    /// namespace/pod/container for a Kubernetes container, namespace/pod for a pod, a Docker
    /// container's name, else the cgroup's path. [example: --target-name '{namespace}/{pod}/{container}']
    #[arg(long, value_name = "TEMPLATE", env = "COLLECTOR_TARGET_NAME", value_parser = Template::parse)]
    pub target_name: Option<Template>,

    /// Workload fields to add as labels to every series that has a `target` label (they
    /// are always on collector_target_info): namespace, pod, container, container_id,
    /// pod_uid, qos, unit. Each adds no series, but makes every one longer.
    /// [example: --target-labels namespace,pod,container]
    #[arg(long, value_name = "FIELD", env = "COLLECTOR_TARGET_LABELS", value_delimiter = ',', value_parser = parse_target_label)]
    pub target_labels: Vec<&'static str>,

    /// The directory host files are read under to name workloads (/var/log/pods,
    /// /var/log/containers, /var/lib/docker/containers): `/` on a host, where a container
    /// mounts the node's. [example: --host-root /host]
    #[arg(long, value_name = "DIR", env = "COLLECTOR_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,

    /// The kernel's BTF to read struct layouts and tracepoints from: the running kernel's
    /// unless a distribution ships it elsewhere. [example: --kernel-btf /boot/vmlinux.btf]
    #[arg(long, value_name = "PATH", env = "COLLECTOR_KERNEL_BTF", default_value = VMLINUX_BTF)]
    pub kernel_btf: PathBuf,

    /// Capabilities to keep once the probes are attached, besides what the kernel needs
    /// (CAP_BPF where it refuses map access without it): names, `none`, or `all` to keep
    /// every one. The log says what is kept. [example: --keep-capabilities cap_sys_ptrace]
    #[arg(long, value_name = "CAPS", env = "COLLECTOR_KEEP_CAPABILITIES", default_value = "none", value_parser = capabilities::parse_keep)]
    pub keep_capabilities: capabilities::Keep,

    #[command(flatten)]
    pub otlp: OtlpArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file and exit: 0 when it is good, 2 with every problem as
    /// FILE:LINE:COL: message. Loads nothing and needs no privileges.
    CheckConfig {
        /// The config file. [example: collector check-config /etc/collector/collector.toml]
        file: PathBuf,
    },
}

/// Values of one flag that its parser accepted one by one but not together.
#[derive(Debug)]
pub struct Conflict {
    /// The flag's long name.
    pub flag: &'static str,
    pub message: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Cli {
    /// What one flag's parser cannot see: all the values a flag was given.
    pub fn check(&self) -> Result<(), Conflict> {
        let conflict = |flag, message| Err(Conflict { flag, message });
        if self.http_routes.len() > http::MAX_ROUTES {
            return conflict(
                "http-route",
                format!(
                    "{} --http-route patterns: at most {} (the kernel's route table is that big)",
                    self.http_routes.len(),
                    http::MAX_ROUTES
                ),
            );
        }
        if let Some(twice) = (1..self.http_routes.len()).find(|&i| self.http_routes[..i].contains(&self.http_routes[i]))
        {
            return conflict(
                "http-route",
                format!("--http-route {} is given twice", self.http_routes[twice]),
            );
        }
        let labels = &self.target_labels;
        if let Some(twice) = (1..labels.len()).find(|&i| labels[..i].contains(&labels[i])) {
            return conflict(
                "target-labels",
                format!("--target-labels names {} twice; give each field once", labels[twice]),
            );
        }
        Ok(())
    }

    /// How pattern targets are named (`--target-name`, `--host-root`).
    pub fn naming(&self) -> Naming {
        Naming {
            template: self.target_name.clone(),
            files: HostFiles::under(&self.host_root),
        }
    }

    /// The runtime map sizes these flags ask for.
    pub fn map_sizes(&self) -> MapSizes {
        MapSizes {
            target_processes: self.max_target_processes,
            target_threads: self.max_target_threads,
            ring_buffer_bytes: self.ring_buffer_size,
            targets: self.max_targets,
            syscall_stats: self.max_syscall_series,
            syscall_errors: self.max_error_series,
            sockets: self.max_connections,
            socket_bytes: self.max_socket_series,
            http_connections: self.max_http_connections,
            http_series: self.max_http_series,
        }
    }

    /// What the kernel programs are given: the HTTP duration buckets' bounds in ns and the
    /// routes, and the slow-syscall threshold.
    pub fn settings(&self) -> Settings {
        let mut bounds = Bounds {
            ns: [u64::MAX; http::BUCKETS - 1],
        };
        for (ns, seconds) in bounds.ns.iter_mut().zip(&self.http_buckets.0) {
            *ns = (seconds * 1e9).round() as u64;
        }
        Settings {
            http_bounds: bounds,
            http_routes: self.http_routes.clone(),
            slow_syscall_ns: self
                .slow_syscall
                .map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// `--http-buckets`: ascending upper bounds in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpBuckets(pub Vec<f64>);

impl std::fmt::Display for HttpBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&all.join(","))
    }
}

impl Default for HttpBuckets {
    fn default() -> Self {
        HttpBuckets(http::DEFAULT_BOUNDS_SECONDS.to_vec())
    }
}

fn parse_http_buckets(s: &str) -> Result<HttpBuckets, String> {
    let bounds: Vec<f64> = s
        .split(',')
        .map(|b| match b.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(format!("'{b}' is not a duration in seconds above 0 (e.g. 0.005)")),
        })
        .collect::<Result<_, _>>()?;
    if bounds.is_empty() || bounds.len() > http::BUCKETS - 1 {
        return Err(format!("give 1 to {} bounds, not {}", http::BUCKETS - 1, bounds.len()));
    }
    if !bounds.is_sorted_by(|a, b| a < b) {
        return Err(format!("'{s}' is not in ascending order"));
    }
    Ok(HttpBuckets(bounds))
}

/// Most entries a runtime-sized map may be given: 16 Mi, far beyond any host's need, so a
/// typo does not ask the kernel for gigabytes.
const MAX_ENTRIES: u32 = 1 << 24;

fn parse_http_route(s: &str) -> Result<String, String> {
    http_routes::check(s).map(|()| s.to_owned())
}

/// A family the agent can run without (`Family::core` is false).
fn parse_target_label(s: &str) -> Result<&'static str, String> {
    FIELDS
        .iter()
        .find(|f| **f == s)
        .copied()
        .ok_or_else(|| format!("{s:?} is no workload field; use {}", FIELDS.join(", ")))
}

fn parse_family(s: &str) -> Result<&'static str, String> {
    let optional = || FAMILIES.iter().filter(|f| !f.core).map(|f| f.name);
    optional().find(|&name| name == s).ok_or_else(|| {
        let names: Vec<&str> = optional().collect();
        match FAMILIES.iter().find(|f| f.name == s) {
            Some(_) => format!(
                "{s} is the agent's core and cannot be disabled; one of {}",
                names.join(", ")
            ),
            None => format!("no probe family {s}; one of {}", names.join(", ")),
        }
    })
}

fn parse_entries(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_ENTRIES).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of entries from 1 to {MAX_ENTRIES}")),
    }
}

fn parse_positive_duration(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s
        .parse()
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 5s or 500ms"))?;
    if d.is_zero() {
        Err("the duration must be longer than zero".into())
    } else {
        Ok(d)
    }
}

fn parse_duration(s: &str) -> Result<humantime::Duration, String> {
    s.parse()
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 60s or 5m"))
}

fn parse_max_targets(s: &str) -> Result<u32, String> {
    let max = maps::MAX_TARGETS;
    match s.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of targets from 1 to {max}")),
    }
}

fn parse_ring_buffer_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n >= 4096 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a power of two of at least 4096 bytes (e.g. 1048576)"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("'{s}' is not a log level or filter ({e}); use error, warn, info, debug or trace"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("collector").chain(args.iter().copied()))
    }

    #[test]
    fn pids_repeat_and_take_names() {
        let cli = parse(&["--pid", "12", "--pid", "web=13"]).unwrap();
        assert_eq!(
            cli.pids,
            vec![
                PidSpec { name: None, pid: 12 },
                PidSpec {
                    name: Some("web".into()),
                    pid: 13
                }
            ]
        );
        assert_eq!(cli.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(cli.log_format, LogFormat::Text);
    }

    #[test]
    fn a_cgroup_or_pattern_is_enough_as_a_target() {
        let cli = parse(&["--cgroup", "web=system.slice/nginx.service"]).unwrap();
        assert_eq!(cli.cgroups[0].name.as_deref(), Some("web"));
        assert!(parse(&["--cgroup-pattern", "system.slice/*.service"]).is_ok());
        assert_eq!(cli.series_ttl, "60s".parse::<humantime::Duration>().unwrap());
        assert_eq!(cli.max_targets, 1000);
        let sizes = cli.map_sizes();
        assert_eq!((sizes.targets, sizes.syscall_stats, sizes.sockets), (1000, 8192, 16384));
        assert_eq!((sizes.target_processes, sizes.target_threads), (16384, 16384));
    }

    #[test]
    fn http_buckets_default_to_the_semantic_conventions_and_reach_the_kernel_in_ns() {
        let cli = parse(&["--pid", "1"]).unwrap();
        assert_eq!(cli.http_buckets.0, http::DEFAULT_BOUNDS_SECONDS);
        let bounds = cli.settings().http_bounds;
        assert_eq!(bounds.ns[..3], [5_000_000, 10_000_000, 25_000_000]);
        assert_eq!(bounds.ns[13], 10_000_000_000);
        assert_eq!(bounds.ns[14], u64::MAX, "unused bounds are +Inf");
        let cli = parse(&["--pid", "1", "--http-buckets", "0.1, 1"]).unwrap();
        assert_eq!(
            cli.settings().http_bounds.ns[..3],
            [100_000_000, 1_000_000_000, u64::MAX]
        );
        for (buckets, needle) in [
            ("1,0.5", "ascending"),
            ("0.1,x", "'x' is not a duration"),
            ("0", "above 0"),
            ("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "1 to 15 bounds"),
        ] {
            let e = parse(&["--pid", "1", "--http-buckets", buckets])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{buckets}: {e}");
        }
    }

    #[test]
    fn flags_given_twice_are_refused_together() {
        for (args, needle) in [
            (
                &["--pid", "1", "--http-route", "/a", "--http-route", "/a"][..],
                "--http-route /a is given twice",
            ),
            (
                &["--pid", "1", "--target-labels", "namespace,pod,namespace"][..],
                "--target-labels names namespace twice",
            ),
        ] {
            let err = parse(args).unwrap().check().unwrap_err().message;
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_target_is_required() {
        // Guard against the variable leaking in from the test environment.
        assert!(std::env::var_os("COLLECTOR_PID").is_none());
        assert_eq!(parse(&[]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn malformed_flags_are_usage_errors_that_name_the_problem() {
        for (args, needle) in [
            (&["--pid", "abc"][..], "'abc' is not a process id"),
            (
                &["--pid", "1", "--listen", "nowhere"][..],
                "invalid value 'nowhere' for '--listen",
            ),
            (
                &["--pid", "1", "--log-format", "xml"][..],
                "invalid value 'xml' for '--log-format",
            ),
            (&["--pid", "1", "--log-level", "loud=="][..], "is not a log level"),
            (&["--pid", "1", "--bogus"][..], "unexpected argument '--bogus'"),
            (
                &["--pid", "1", "--poll-interval", "soon"][..],
                "'soon' is not a duration",
            ),
            (&["--pid", "1", "--poll-interval", "0s"][..], "longer than zero"),
            (
                &["--pid", "1", "--disable-family", "dns"][..],
                "no probe family dns; one of cgroups, tcp, socket_bytes, http",
            ),
            (
                &["--pid", "1", "--http-route", "/a/*/b"][..],
                "`*` may only end a route",
            ),
            (
                &["--pid", "1", "--disable-family", "syscalls"][..],
                "syscalls is the agent's core and cannot be disabled",
            ),
            (&["--cgroup", "=x"][..], "the name before '=' is empty"),
            (&["--cgroup-pattern", "a/[b"][..], "--cgroup-pattern"),
            (&["--pid", "1", "--max-targets", "0"][..], "from 1 to 1024"),
            (
                &["--pid", "1", "--series-ttl", "later"][..],
                "'later' is not a duration",
            ),
            (
                &["--pid", "1", "--ring-buffer-size", "5000"][..],
                "'5000' is not a power of two",
            ),
            (&["--pid", "1", "--max-connections", "0"][..], "from 1 to 16777216"),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(needle), "{args:?}: {text}");
        }
    }

    #[test]
    fn help_has_an_example_for_every_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
        {
            let help = arg.get_help().map(std::string::ToString::to_string).unwrap_or_default();
            assert!(
                help.contains("example:"),
                "--{} lacks an example: {help}",
                arg.get_long().unwrap()
            );
        }
    }
}

//! Spans from telemetry events: one per process lifetime, TCP connection, HTTP request and
//! slow syscall of a target, with the OpenTelemetry semantic conventions' attributes
//! (https://opentelemetry.io/docs/specs/semconv/) where they name the thing, and
//! `collector.*` where they do not.
//!
//! A span is built when what it covers ends (a process's exit, a connection's close), so its
//! ids are chosen when it starts and kept until then: a process's at its `process.start`
//! (in its parent's trace when the parent is followed), a connection's at its connect or
//! accept. A span that starts under another names that one as its parent: a process under
//! the process that forked it, a connection, a slow call under its process, a request
//! under its connection. A process or connection that began before the agent gets its ids
//! at the first event that needs them, and its span starts when the kernel says it began.
use std::{borrow::Cow, collections::HashMap, time::SystemTime};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Event as SpanEvent, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};

use crate::telemetry::{Event, Value};

/// The events spans are made of.
pub const EVENTS: &[&str] = &["process.*", "tcp.*", "http.request", "syscall.slow"];

/// A cgroup target's workload fields (event metadata) and the semantic conventions'
/// attributes each becomes on every span (`k8s.*`, `container.id`); `qos` and `unit` have
/// none and stay on the log records only.
const WORKLOAD_ATTRIBUTES: &[(&str, &str)] = &[
    ("namespace", "k8s.namespace.name"),
    ("pod", "k8s.pod.name"),
    ("pod_uid", "k8s.pod.uid"),
    ("container", "k8s.container.name"),
    ("container_id", "container.id"),
];

/// Most processes, and most connections, whose span is open at once (`insert`).
const MAX_OPEN: usize = 65_536;

/// A span that has started: its ids, its parent's and what its end will need.
#[derive(Clone, Debug)]
struct Open {
    trace: TraceId,
    span: SpanId,
    parent: SpanId,
    start: Option<SystemTime>,
    pid: i64,
    /// A process's parent, from its `process.start` (its exit says it only when /proc was
    /// read).
    ppid: Option<i64>,
    /// A process's execs (time, filename), as span events at its end.
    execs: Vec<(SystemTime, String)>,
}

/// A connection by its endpoints, unique while it is open.
type ConnectionKey = (String, i64, String, i64);

/// Open spans by key, each with the order it was opened in.
struct Table<K> {
    open: HashMap<K, (u64, Open)>,
    next: u64,
}

impl<K: std::hash::Hash + Eq> Default for Table<K> {
    fn default() -> Self {
        Table {
            open: HashMap::new(),
            next: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq> Table<K> {
    fn get(&self, key: &K) -> Option<&Open> {
        self.open.get(key).map(|(_, o)| o)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut Open> {
        self.open.get_mut(key).map(|(_, o)| o)
    }

    fn remove(&mut self, key: &K) -> Option<Open> {
        self.open.remove(key).map(|(_, o)| o)
    }
}

pub struct Traces {
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    processes: Table<i64>,
    connections: Table<ConnectionKey>,
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            ids: RandomIdGenerator::default(),
            scope: super::resource::scope(),
            processes: Table::default(),
            connections: Table::default(),
        }
    }
}

impl Traces {
    /// The span `event` ends, if it ends one; otherwise it only starts or extends one.
    pub fn on_event(&mut self, event: &Event) -> Option<SpanData> {
        let pid = int(event, "pid");
        match event.name {
            "process.start" => {
                // Under its parent's span when the parent is a target too (it may have begun
                // before the agent: its span is opened now); a service systemd started into a
                // target cgroup begins a trace of its own.
                let parent_pid = int(event, "ppid");
                let parent = match event.metadata("parent_target") {
                    Some(_) => {
                        let p = self.process(parent_pid);
                        Some((p.trace, p.span))
                    }
                    None => None,
                };
                let open = Open {
                    ppid: Some(parent_pid),
                    ..self.new_open(parent, Some(event.time), pid)
                };
                insert(&mut self.processes, pid, open);
                None
            }
            "process.exec" => {
                let filename = text(event, "filename").to_owned();
                self.process(pid).execs.push((event.time, filename));
                None
            }
            "process.exit" => {
                let mut open = match self.processes.remove(&pid) {
                    Some(open) => open,
                    None => self.new_open(None, None, pid),
                };
                open.start.get_or_insert(started(event));
                Some(self.process_span(event, open))
            }
            "tcp.connect" | "tcp.accept" => {
                let open = self.under_process(event, pid);
                insert(&mut self.connections, connection_key(event), open);
                None
            }
            "tcp.close" | "tcp.connect_error" => {
                let open = match self.connections.remove(&connection_key(event)) {
                    Some(open) => open,
                    None => self.under_process(event, pid),
                };
                Some(self.connection_span(event, &open))
            }
            "http.request" => {
                let open = match self.connections.get(&connection_key(event)) {
                    Some(c) => self.new_open(Some((c.trace, c.span)), Some(started(event)), pid),
                    None => self.under_process(event, pid),
                };
                Some(self.http_span(event, &open))
            }
            "syscall.slow" => {
                let open = self.under_process(event, pid);
                Some(self.syscall_span(event, &open))
            }
            _ => None,
        }
    }

    /// New ids, in `parent`'s trace under it (a new trace without one).
    fn new_open(&self, parent: Option<(TraceId, SpanId)>, start: Option<SystemTime>, pid: i64) -> Open {
        let (trace, parent) = parent.unwrap_or_else(|| (self.ids.new_trace_id(), SpanId::INVALID));
        Open {
            trace,
            span: self.ids.new_span_id(),
            parent,
            start,
            pid,
            ppid: None,
            execs: Vec::new(),
        }
    }

    /// The open span of process `pid`, opened now (with no start yet) for a process that
    /// began before the agent saw it.
    fn process(&mut self, pid: i64) -> &mut Open {
        if self.processes.get(&pid).is_none() {
            let open = self.new_open(None, None, pid);
            return insert(&mut self.processes, pid, open);
        }
        self.processes.get_mut(&pid).expect("present: looked up above")
    }

    /// A span under `event`'s process (a trace of its own if that has no room), from the
    /// event's start to its time.
    fn under_process(&mut self, event: &Event, pid: i64) -> Open {
        let process = self.process(pid);
        let parent = Some((process.trace, process.span));
        self.new_open(parent, Some(started(event)), pid)
    }

    fn span(&self, event: &Event, open: &Open, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> SpanData {
        let mut attributes = vec![
            KeyValue::new("collector.target", text(event, "target").to_owned()),
            KeyValue::new("process.pid", open.pid),
        ];
        if let Some(Value::Str(comm)) = event.metadata("comm") {
            attributes.push(KeyValue::new("process.executable.name", comm.clone()));
        }
        for (key, attribute) in WORKLOAD_ATTRIBUTES {
            if let Some(Value::Str(value)) = event.metadata(key) {
                attributes.push(KeyValue::new(*attribute, value.clone()));
            }
        }
        SpanData {
            span_context: SpanContext::new(open.trace, open.span, TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: open.parent,
            parent_span_is_remote: false,
            span_kind: kind,
            name: name.into(),
            start_time: open.start.unwrap_or(event.time),
            end_time: event.time,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    fn process_span(&self, event: &Event, mut open: Open) -> SpanData {
        let execs = std::mem::take(&mut open.execs);
        let comm = text(event, "comm").to_owned();
        let mut span = self.span(event, &open, format!("process {comm}"), SpanKind::Internal);
        if let Some(ppid) = event.metadata("ppid").map(as_int).or(open.ppid) {
            span.attributes.push(KeyValue::new("process.parent_pid", ppid));
        }
        span.status = match (event.metadata("exit_code"), event.metadata("signal")) {
            (Some(Value::Int(0)), _) | (None, None) => Status::Unset,
            (Some(code), _) => Status::error(format!("exit code {}", code.to_label())),
            (None, Some(signal)) => Status::error(format!("killed by {}", signal.to_label())),
        };
        if let Some(code) = event.metadata("exit_code") {
            span.attributes.push(KeyValue::new("process.exit.code", as_int(code)));
        }
        if let Some(signal) = event.metadata("signal") {
            span.attributes
                .push(KeyValue::new("collector.process.exit.signal", signal.to_label()));
        }
        span.events.events = execs
            .into_iter()
            .map(|(at, filename)| {
                SpanEvent::new("exec", at, vec![KeyValue::new("process.executable.path", filename)], 0)
            })
            .collect();
        span
    }

    fn connection_span(&self, event: &Event, open: &Open) -> SpanData {
        let (name, kind) = if text(event, "direction") == "inbound" {
            ("tcp accept", SpanKind::Server)
        } else {
            ("tcp connect", SpanKind::Client)
        };
        let mut span = self.span(event, open, name, kind);
        span.attributes.extend(endpoints(event));
        for (measurement, attribute) in [
            ("bytes_sent", "collector.tcp.bytes_sent"),
            ("bytes_received", "collector.tcp.bytes_received"),
            ("retransmits", "collector.tcp.retransmits"),
        ] {
            if let Some(n) = event.measurement(measurement) {
                span.attributes.push(KeyValue::new(attribute, n as i64));
            }
        }
        if let Some(reason) = event.metadata("close_reason") {
            span.attributes
                .push(KeyValue::new("collector.tcp.close_reason", reason.to_label()));
        }
        if event.name == "tcp.connect_error" {
            span.status = Status::error(format!("connect failed: {}", text(event, "reason")));
        }
        span
    }

    fn http_span(&self, event: &Event, open: &Open) -> SpanData {
        let method = text(event, "method").to_owned();
        let route = event.metadata("route").map(Value::to_label);
        // The semantic conventions' span name: `{method} {route}`, `{method}`, or `HTTP` for
        // a method outside the registered ones.
        let name = match (method.as_str(), &route) {
            ("_OTHER", _) => "HTTP".to_owned(),
            (_, Some(route)) if route != "other" => format!("{method} {route}"),
            _ => method.clone(),
        };
        let server = text(event, "direction") == "server";
        let kind = if server { SpanKind::Server } else { SpanKind::Client };
        let mut span = self.span(event, open, name, kind);
        let status = int(event, "status_code");
        span.attributes.extend([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", status),
            KeyValue::new("network.peer.address", text(event, "peer_address").to_owned()),
            KeyValue::new("network.peer.port", int(event, "peer_port")),
            KeyValue::new(
                "server.port",
                int(event, if server { "local_port" } else { "peer_port" }),
            ),
        ]);
        if let Some(path) = event.metadata("path").map(Value::to_label) {
            let (path, query) = path.split_once('?').unwrap_or((&path, ""));
            span.attributes.push(KeyValue::new("url.path", path.to_owned()));
            if !query.is_empty() {
                span.attributes.push(KeyValue::new("url.query", query.to_owned()));
            }
        }
        if let Some(route) = route.filter(|r| r != "other") {
            span.attributes.push(KeyValue::new("http.route", route));
        }
        // Server spans are errors for 5xx only; client spans for 4xx too (semconv's rule).
        if status >= 500 || (!server && status >= 400) {
            span.status = Status::error("");
        }
        for (measurement, attribute) in [
            ("request_bytes", "http.request.body.size"),
            ("response_bytes", "http.response.body.size"),
        ] {
            if let Some(n) = event.measurement(measurement) {
                span.attributes.push(KeyValue::new(attribute, n as i64));
            }
        }
        span
    }

    fn syscall_span(&self, event: &Event, open: &Open) -> SpanData {
        let name = text(event, "syscall").to_owned();
        let mut span = self.span(event, open, name, SpanKind::Internal);
        span.attributes.push(KeyValue::new("thread.id", int(event, "tid")));
        if let Some(errno) = event.metadata("errno") {
            span.attributes
                .push(KeyValue::new("collector.syscall.errno", errno.to_label()));
            span.status = Status::error(errno.to_label());
        }
        span
    }
}

/// Adds `open`. A full table first forgets its oldest eighth: spans whose end the kernel
/// could not send (counted as dropped there), or very old ones of live processes, whose
/// children then begin traces of their own. Nothing is lost: a forgotten span is still
/// sent at its end, without the ids its children had.
fn insert<K: std::hash::Hash + Eq>(table: &mut Table<K>, key: K, open: Open) -> &mut Open {
    if table.open.len() >= MAX_OPEN {
        let mut ages: Vec<u64> = table.open.values().map(|(seq, _)| *seq).collect();
        let cut = ages.len() / 8;
        let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
        table.open.retain(|_, (seq, _)| *seq >= oldest_kept);
    }
    table.next += 1;
    &mut table.open.entry(key).insert_entry((table.next, open)).into_mut().1
}

/// When what `event` ends began: its time less its `duration`.
fn started(event: &Event) -> SystemTime {
    let duration = event.measurement("duration").unwrap_or(0.0).max(0.0);
    event.time - std::time::Duration::from_secs_f64(duration)
}

fn connection_key(event: &Event) -> ConnectionKey {
    (
        text(event, "local_address").to_owned(),
        int(event, "local_port"),
        text(event, "peer_address").to_owned(),
        int(event, "peer_port"),
    )
}

/// The connection's endpoints, as semconv's `network.*` attributes.
fn endpoints(event: &Event) -> [KeyValue; 6] {
    [
        KeyValue::new("network.transport", "tcp"),
        KeyValue::new("network.type", text(event, "family").to_owned()),
        KeyValue::new("network.peer.address", text(event, "peer_address").to_owned()),
        KeyValue::new("network.peer.port", int(event, "peer_port")),
        KeyValue::new("network.local.address", text(event, "local_address").to_owned()),
        KeyValue::new("network.local.port", int(event, "local_port")),
    ]
}

fn text<'e>(event: &'e Event, key: &str) -> &'e str {
    match event.metadata(key) {
        Some(Value::Str(s)) => s,
        _ => "",
    }
}

fn int(event: &Event, key: &str) -> i64 {
    event.metadata(key).map_or(0, as_int)
}

fn as_int(value: &Value) -> i64 {
    match value {
        Value::Int(i) => *i,
        Value::Str(s) => s.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn event(name: &'static str, secs: u64, pid: u32) -> Event {
        Event::new(name, at(secs))
            .meta("pid", pid)
            .meta("comm", "worker")
            .meta("target", "web")
    }

    fn connection(e: Event) -> Event {
        e.meta("family", "ipv4")
            .meta("direction", "outbound")
            .meta("local_address", "127.0.0.1")
            .meta("local_port", 40000u32)
            .meta("peer_address", "127.0.0.1")
            .meta("peer_port", 80u32)
    }

    fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn a_process_holds_its_connections_requests_and_slow_calls_under_its_parent() {
        let mut traces = Traces::default();
        // Process 10 began before the agent; 11 is its child.
        let start = event("process.start", 2, 11)
            .meta("ppid", 10u32)
            .meta("parent_target", "web");
        assert!(traces.on_event(&start).is_none());
        let exec = event("process.exec", 3, 11).meta("filename", "/bin/worker");
        assert!(traces.on_event(&exec).is_none());
        let connect = connection(event("tcp.connect", 5, 11)).measure("duration", 1.0);
        assert!(traces.on_event(&connect).is_none());
        let request = connection(event("http.request", 7, 11))
            .meta("direction", "client")
            .meta("method", "GET")
            .meta("status_code", 404u32)
            .meta("path", "/a?b=1")
            .measure("duration", 1.0);
        let request = traces.on_event(&request).unwrap();
        let close = connection(event("tcp.close", 8, 11))
            .meta("close_reason", "closed")
            .measure("duration", 3.0)
            .measure("bytes_sent", 10.0)
            .measure("bytes_received", 20.0)
            .measure("retransmits", 0.0);
        let close = traces.on_event(&close).unwrap();
        let slow = event("syscall.slow", 9, 11)
            .meta("syscall", "nanosleep")
            .meta("tid", 12u32)
            .measure("duration", 0.5);
        let slow = traces.on_event(&slow).unwrap();
        let exit = event("process.exit", 10, 11)
            .meta("exit_code", 3i64)
            .measure("duration", 8.0);
        let child = traces.on_event(&exit).unwrap();
        let parent = traces
            .on_event(
                &event("process.exit", 11, 10)
                    .meta("exit_code", 0i64)
                    .measure("duration", 10.0),
            )
            .unwrap();

        let trace = parent.span_context.trace_id();
        for span in [&request, &close, &slow, &child] {
            assert_eq!(span.span_context.trace_id(), trace, "{}", span.name);
        }
        assert_eq!(parent.parent_span_id, SpanId::INVALID);
        assert_eq!(parent.start_time, at(1));
        assert_eq!(child.parent_span_id, parent.span_context.span_id());
        assert_eq!(close.parent_span_id, child.span_context.span_id());
        assert_eq!(slow.parent_span_id, child.span_context.span_id());
        assert_eq!(request.parent_span_id, close.span_context.span_id());

        assert_eq!((child.start_time, child.end_time), (at(2), at(10)));
        assert_eq!(child.status, Status::error("exit code 3"));
        assert_eq!(child.events.events.len(), 1);
        assert_eq!(parent.status, Status::Unset);
        assert_eq!((close.start_time, close.span_kind.clone()), (at(4), SpanKind::Client));
        assert_eq!(attribute(&close, "collector.tcp.bytes_received"), Some(20.into()));
        assert_eq!(request.name, "GET");
        assert_eq!(request.status, Status::error(""), "a client's 4xx is an error");
        assert_eq!(attribute(&request, "url.path"), Some("/a".into()));
        assert_eq!(attribute(&request, "server.port"), Some(80.into()));
        assert_eq!(
            (slow.name.as_ref(), slow.start_time),
            ("nanosleep", at(9) - Duration::from_millis(500))
        );
        assert!(traces.processes.open.is_empty() && traces.connections.open.is_empty());
    }

    #[test]
    fn a_cgroup_targets_workload_names_are_the_semantic_conventions_attributes() {
        let mut traces = Traces::default();
        let exit = event("process.exit", 9, 12)
            .meta("namespace", "shop")
            .meta("pod", "cart-1")
            .meta("pod_uid", "3f1c")
            .meta("container", "app")
            .meta("container_id", "ab12")
            .meta("qos", "burstable")
            .measure("duration", 1.0);
        let span = traces.on_event(&exit).unwrap();
        for (key, want) in [
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "cart-1"),
            ("k8s.pod.uid", "3f1c"),
            ("k8s.container.name", "app"),
            ("container.id", "ab12"),
        ] {
            assert_eq!(attribute(&span, key), Some(want.to_owned().into()), "{key}");
        }
        assert_eq!(
            attribute(&span, "qos"),
            None,
            "no semantic convention: log records only"
        );
    }

    #[test]
    fn a_process_whose_creator_is_no_target_begins_a_trace_of_its_own() {
        let mut traces = Traces::default();
        // systemd (pid 1, no target) starting a service into a target cgroup.
        assert!(
            traces
                .on_event(&event("process.start", 1, 30).meta("ppid", 1u32))
                .is_none()
        );
        let exit = event("process.exit", 2, 30)
            .meta("exit_code", 0i64)
            .measure("duration", 1.0);
        let span = traces.on_event(&exit).unwrap();
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert_eq!(attribute(&span, "process.parent_pid"), Some(1.into()));
        assert!(traces.processes.open.is_empty(), "pid 1 was not opened");
    }

    #[test]
    fn a_full_table_forgets_its_oldest_and_keeps_taking_new_ones() {
        let mut traces = Traces::default();
        for pid in 0..=MAX_OPEN as u32 {
            traces.on_event(&event("process.start", 1, pid + 100).meta("ppid", 1u32));
        }
        let open = &traces.processes.open;
        assert_eq!(open.len(), MAX_OPEN - MAX_OPEN / 8 + 1);
        assert!(
            open.contains_key(&(i64::from(MAX_OPEN as u32) + 100)),
            "the newest is kept"
        );
        assert!(!open.contains_key(&100), "the oldest is forgotten");
    }

    #[test]
    fn a_refused_connect_is_an_error_span_and_a_process_seen_late_starts_when_it_began() {
        let mut traces = Traces::default();
        let refused = connection(event("tcp.connect_error", 5, 20))
            .meta("reason", "refused")
            .measure("duration", 0.25);
        let refused = traces.on_event(&refused).unwrap();
        assert_eq!(refused.status, Status::error("connect failed: refused"));
        let exit = event("process.exit", 9, 20)
            .meta("signal", "SIGKILL")
            .measure("duration", 7.0);
        let process = traces.on_event(&exit).unwrap();
        assert_eq!(process.start_time, at(2));
        assert_eq!(process.status, Status::error("killed by SIGKILL"));
        assert_eq!(refused.parent_span_id, process.span_context.span_id());
    }
}

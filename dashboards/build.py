"""The collector's Grafana dashboards, built with Grafana's own SDK (grafana-foundation-sdk,
pinned below), written to dashboards/*.json.

    python3 dashboards/build.py            # write the JSON files
    python3 dashboards/build.py --check    # fail if a file differs from what the SDK builds,
                                           # or if the SDK's model loses a key of it
    python3 dashboards/build.py --readme   # the README's table of rows and panels

Every query uses the datasource variable DS_PROMETHEUS (as `${DS_PROMETHEUS}`, which is also
the name Grafana's import asks for) and, but for the agent dashboard, the variable `target`
(from label_values). The heavy queries read the recording rules of
deploy/prometheus/rules.yml. tests/tests/dashboards.rs runs every query against a real
Prometheus.
"""
import json
import pathlib
import sys
import warnings

# models.dashboard warns "Prefer using dashboardv2"; the classic JSON is what provisioning and
# import read.
warnings.simplefilter("ignore", DeprecationWarning)

from grafana_foundation_sdk.builders import common as cb  # noqa: E402
from grafana_foundation_sdk.builders import heatmap, stat, table, timeseries  # noqa: E402
from grafana_foundation_sdk.builders.dashboard import (  # noqa: E402
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: E402
from grafana_foundation_sdk.models import common, units  # noqa: E402
from grafana_foundation_sdk.models.dashboard import (  # noqa: E402
    Dashboard as DashboardModel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat  # noqa: E402

SDK = "grafana-foundation-sdk==0.0.21"
HERE = pathlib.Path(__file__).resolve().parent
DS = common.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
T = 'target=~"$target"'
RATE = "[$__rate_interval]"


def query(expr, legend="__auto", ref="A"):
    return Dataquery().ref_id(ref).expr(expr).legend_format(legend).datasource(DS)


def queries(panel, *exprs):
    """Adds each (expr, legend) as a query A, B, ..."""
    for i, (expr, legend) in enumerate(exprs):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + i)))
    return panel


def graph(title, description, unit, *exprs, span=12):
    panel = (
        timeseries.Panel()
        .datasource(DS)
        .title(title)
        .description(description)
        .unit(unit)
        .height(8)
        .span(span)
        .legend(
            cb.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    return queries(panel, *exprs)


def total(title, description, unit, expr, legend, span=12):
    """A stat of values since the agent started (counters as they stand now)."""
    panel = (
        stat.Panel()
        .datasource(DS)
        .title(title)
        .description(description)
        .unit(unit)
        .height(5)
        .span(span)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .with_target(query(expr, legend).instant())
    )
    return panel


def quantiles(by, rule_or_bucket, where, rate):
    """p50 and p99 from a histogram's buckets (a recording rule's, or rated here)."""
    inner = f"{rule_or_bucket}{{{where}}}" if not rate else f"rate({rule_or_bucket}{{{where}}}{RATE})"
    return [
        (f"histogram_quantile({q}, sum by ({by}, le) ({inner}))", f"{{{{{by}}}}} p{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


def datasource():
    return DatasourceVariable("DS_PROMETHEUS").label("Prometheus").type("prometheus")


def label_variable(name, label, query_text):
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query_text)
        .definition(query_text)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def target_variable():
    return label_variable("target", "Target", "label_values(collector_syscalls_total, target)")


def dashboard(uid, title, description, variables, rows):
    d = (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["collector", "ebpf"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone(common.TimeZoneBrowser)
        .editable()
    )
    for v in variables:
        d = d.with_variable(v)
    panel_id = 1
    for row_title, panels in rows:
        d = d.with_row(Row(row_title).id(panel_id))
        panel_id += 1
        for p in panels:
            d = d.with_panel(p.id(panel_id))
            panel_id += 1
    return d


def overview():
    return dashboard(
        "collector-overview",
        "Collector / Overview",
        "What each target does, as the collector sees it from the kernel: syscalls, processes, TCP.",
        [datasource(), target_variable()],
        [
            ("Syscalls", [
                graph("Syscall rate", "Syscalls per second by target (collector_syscalls_total).",
                      units.OpsPerSecond,
                      (f"sum by (target) (rate(collector_syscalls_total{{{T}}}{RATE}))", "{{target}}"), span=8),
                graph("Syscall error ratio",
                      "Failed syscalls over all syscalls, 5-minute rate (recording rule "
                      "target:collector_syscall_errors:ratio_rate5m).",
                      units.PercentUnit,
                      (f"target:collector_syscall_errors:ratio_rate5m{{{T}}}", "{{target}}"), span=8),
                graph("Top errnos", "The five (target, errno) pairs failing most, per second "
                      "(collector_syscall_errors_total).", units.OpsPerSecond,
                      (f"topk(5, sum by (target, errno) (rate(collector_syscall_errors_total{{{T}}}{RATE})))",
                       "{{target}} {{errno}}"), span=8),
                graph("Syscall latency p50 / p99",
                      "Quantiles of every syscall's latency, from the log2 buckets of "
                      "collector_syscall_duration_seconds (recording rule "
                      "target_le:collector_syscall_duration_seconds_bucket:rate5m).",
                      units.Seconds,
                      *quantiles("target", "target_le:collector_syscall_duration_seconds_bucket:rate5m", T, False)),
            ]),
            ("Processes", [
                graph("Processes and threads", "Live processes and threads of each target "
                      "(collector_processes, collector_threads).", units.Short,
                      (f"sum by (target) (collector_processes{{{T}}})", "{{target}} processes"),
                      (f"sum by (target) (collector_threads{{{T}}})", "{{target}} threads"), span=8),
                graph("Process starts and exits", "Processes started, and ended by outcome, per second "
                      "(collector_process_starts_total, collector_process_exits_total).", units.OpsPerSecond,
                      (f"sum by (target) (rate(collector_process_starts_total{{{T}}}{RATE}))", "{{target}} starts"),
                      (f"sum by (target, outcome) (rate(collector_process_exits_total{{{T}}}{RATE}))",
                       "{{target}} exits {{outcome}}"), span=8),
                total("Process exits since the agent started", "Exits by outcome: success, failure (a "
                      "non-zero code), signal (collector_process_exits_total).", units.Short,
                      f"sum by (outcome) (collector_process_exits_total{{{T}}})", "{{outcome}}", span=8),
            ]),
            ("TCP", [
                graph("TCP connections opened", "Connections per second: outbound (connect) and inbound "
                      "(accept) (collector_tcp_connections_opened_total).", units.OpsPerSecond,
                      (f"sum by (target, direction) (rate(collector_tcp_connections_opened_total{{{T}}}{RATE}))",
                       "{{target}} {{direction}}"), span=8),
                graph("TCP connections open", "Open now, by direction (collector_tcp_connections).",
                      units.Short,
                      (f"sum by (target, direction) (collector_tcp_connections{{{T}}})", "{{target}} {{direction}}"),
                      span=8),
                total("TCP connections opened since the agent started", "By direction "
                      "(collector_tcp_connections_opened_total).", units.Short,
                      f"sum by (direction) (collector_tcp_connections_opened_total{{{T}}})", "{{direction}}",
                      span=8),
                graph("Socket bytes in / out", "Payload bytes received and sent through sockets per second "
                      "(collector_socket_received_bytes_total, collector_socket_sent_bytes_total).",
                      units.BytesPerSecondSI,
                      (f"sum by (target) (rate(collector_socket_received_bytes_total{{{T}}}{RATE}))", "{{target}} in"),
                      (f"sum by (target) (rate(collector_socket_sent_bytes_total{{{T}}}{RATE}))", "{{target}} out")),
                graph("TCP retransmits and resets", "Segments retransmitted, and resets sent and received, per "
                      "second (collector_tcp_retransmits_total, collector_tcp_resets_total).", units.OpsPerSecond,
                      (f"sum by (target) (rate(collector_tcp_retransmits_total{{{T}}}{RATE}))", "{{target}} retransmits"),
                      (f"sum by (target, direction) (rate(collector_tcp_resets_total{{{T}}}{RATE}))",
                       "{{target}} resets {{direction}}")),
            ]),
        ],
    )


def syscalls():
    where = f'{T}, syscall=~"$syscall"'
    return dashboard(
        "collector-syscalls",
        "Collector / Syscalls",
        "Each syscall of the chosen targets: rate, errors by errno, latency.",
        [
            datasource(),
            target_variable(),
            label_variable("syscall", "Syscall", 'label_values(collector_syscalls_total{target=~"$target"}, syscall)'),
        ],
        [
            ("Rate and errors", [
                graph("Rate by syscall", "Calls per second (collector_syscalls_total).", units.OpsPerSecond,
                      (f"sum by (syscall) (rate(collector_syscalls_total{{{where}}}{RATE}))", "{{syscall}}")),
                graph("Errors by syscall and errno", "Failed calls per second (collector_syscall_errors_total).",
                      units.OpsPerSecond,
                      (f"sum by (syscall, errno) (rate(collector_syscall_errors_total{{{where}}}{RATE}))",
                       "{{syscall}} {{errno}}")),
            ]),
            ("Latency", [
                heatmap.Panel()
                .datasource(DS)
                .title("Latency")
                .description("How long calls took, by the log2 buckets of collector_syscall_duration_seconds "
                             "(256 ns to 17 s).")
                .unit(units.Seconds)
                .height(9)
                .span(12)
                .calculate(False)
                .y_axis(heatmap.YAxisConfig().unit(units.Seconds))
                .with_target(query(
                    f"sum by (le) (rate(collector_syscall_duration_seconds_bucket{{{where}}}{RATE}))", "{{le}}"
                ).format(PromQueryFormat.HEATMAP)),
                graph("p99 latency by syscall", "The 99th percentile of each syscall's latency "
                      "(collector_syscall_duration_seconds).", units.Seconds,
                      (f"histogram_quantile(0.99, sum by (syscall, le) "
                       f"(rate(collector_syscall_duration_seconds_bucket{{{where}}}{RATE})))", "{{syscall}}")),
                table.Panel()
                .datasource(DS)
                .title("Calls since the agent started")
                .description("Calls of each syscall so far (collector_syscalls_total).")
                .unit(units.Short)
                .height(8)
                .span(24)
                .with_target(query(f"sum by (syscall) (collector_syscalls_total{{{where}}})", "{{syscall}}")
                             .format(PromQueryFormat.TABLE).instant()),
            ]),
        ],
    )


def http():
    server = "collector_http_server_request_duration_seconds"
    client = "collector_http_client_request_duration_seconds"
    return dashboard(
        "collector-http",
        "Collector / HTTP",
        "HTTP/1.x requests the targets serve and make, from their syscalls: rate, errors, duration (RED).",
        [datasource(), target_variable()],
        [
            ("Served", [
                graph("Request rate by status", f"Requests served per second ({server}_count).",
                      units.RequestsPerSecond,
                      (f"sum by (target, http_response_status_code) (rate({server}_count{{{T}}}{RATE}))",
                       "{{target}} {{http_response_status_code}}"), span=8),
                graph("Error ratio", "Share of requests answered 5xx (recording rule "
                      "target:collector_http_server_errors:ratio_rate5m).", units.PercentUnit,
                      (f"target:collector_http_server_errors:ratio_rate5m{{{T}}}", "{{target}}"), span=8),
                graph("Duration p50 / p99", f"From the request's first read to the response's last write "
                      f"({server}; recording rule target_le:{server}_bucket:rate5m).", units.Seconds,
                      *quantiles("target", f"target_le:{server}_bucket:rate5m", T, False), span=8),
                total("Requests since the agent started", f"Requests served, by status ({server}_count).",
                      units.Short,
                      f"sum by (http_response_status_code) ({server}_count{{{T}}})", "{{http_response_status_code}}"),
                graph("Requests aborted", "Requests whose connection closed or was reset before a response, "
                      "per second (collector_http_server_requests_aborted_total).", units.RequestsPerSecond,
                      (f"sum by (target) (rate(collector_http_server_requests_aborted_total{{{T}}}{RATE}))",
                       "{{target}}")),
            ]),
            ("Made", [
                graph("Client request rate by status", f"Requests made per second ({client}_count).",
                      units.RequestsPerSecond,
                      (f"sum by (target, http_response_status_code) (rate({client}_count{{{T}}}{RATE}))",
                       "{{target}} {{http_response_status_code}}")),
                graph("Client duration p50 / p99", f"From the request's write to the status line's read "
                      f"({client}).", units.Seconds, *quantiles("target", f"{client}_bucket", T, True)),
                graph("Bytes", "Bytes of requests and responses, headers included, per second "
                      "(collector_http_server_request_bytes_total, collector_http_server_response_bytes_total).",
                      units.BytesPerSecondSI,
                      (f"sum by (target) (rate(collector_http_server_request_bytes_total{{{T}}}{RATE}))",
                       "{{target}} requests"),
                      (f"sum by (target) (rate(collector_http_server_response_bytes_total{{{T}}}{RATE}))",
                       "{{target}} responses"), span=24),
            ]),
        ],
    )


def agent():
    # The agent's own process_* series, not other exporters' in the same Prometheus.
    mine = '* on (instance, job) group_left() (collector_build_info{instance=~"$instance"} * 0 + 1)'
    i = 'instance=~"$instance"'
    return dashboard(
        "collector-agent",
        "Collector / Agent health",
        "Whether each agent sees what it was asked to: probes, events and what was lost, maps, "
        "targets, and what it costs.",
        [datasource(), label_variable("instance", "Instance", "label_values(collector_build_info, instance)")],
        [
            ("Probes and targets", [
                total("Probes not attached", "Probes that are not attached: 0 unless a probe family is off on "
                      "this kernel (collector_probe_attached).", units.Short,
                      f"count by (instance) (collector_probe_attached{{{i}}} == 0) "
                      f"or count by (instance) (collector_probe_attached{{{i}}}) * 0", "{{instance}}", span=8),
                graph("Targets by kind", "Targets now (collector_targets) and cgroups refused beyond "
                      "--max-targets per second (collector_targets_rejected_total).", units.Short,
                      (f"sum by (instance, kind) (collector_targets{{{i}}})", "{{instance}} {{kind}}"),
                      (f"sum by (instance) (rate(collector_targets_rejected_total{{{i}}}{RATE}))",
                       "{{instance}} rejected/s"), span=16),
                table.Panel()
                .datasource(DS)
                .title("Probes")
                .description("Each probe: 1 attached, 0 not (collector_probe_attached).")
                .unit(units.Short)
                .height(8)
                .span(24)
                .with_target(query(f"collector_probe_attached{{{i}}}", "{{probe}}").format(PromQueryFormat.TABLE)
                             .instant()),
            ]),
            ("Events and losses", [
                graph("Events by name", "Telemetry events per second (collector_events_total).",
                      units.EventsPerSecond,
                      (f"sum by (event) (rate(collector_events_total{{{i}}}{RATE}))", "{{event}}")),
                graph("Events dropped by stage", "Events lost per second: kernel (ring buffer full), queue, "
                      "sink, otlp, decode (collector_events_dropped_total).", units.EventsPerSecond,
                      (f"sum by (stage) (rate(collector_events_dropped_total{{{i}}}{RATE}))", "{{stage}}")),
                graph("Kernel map errors", "Updates the kernel could not make (a map full) and entries the agent "
                      "could not read, per second (collector_bpf_map_errors_total, "
                      "collector_map_read_errors_total).", units.OpsPerSecond,
                      (f"sum by (map) (rate(collector_bpf_map_errors_total{{{i}}}{RATE}))", "{{map}}"),
                      (f"sum by (instance) (rate(collector_map_read_errors_total{{{i}}}{RATE}))",
                       "{{instance}} read errors")),
                graph("OTLP exported and dropped", "Spans, metric points and log records the receiver took, and "
                      "those lost by reason, per second (collector_otlp_exported_total, "
                      "collector_otlp_dropped_total).", units.OpsPerSecond,
                      (f"sum by (signal) (rate(collector_otlp_exported_total{{{i}}}{RATE}))", "{{signal}} exported"),
                      (f"sum by (signal, reason) (rate(collector_otlp_dropped_total{{{i}}}{RATE}))",
                       "{{signal}} dropped {{reason}}")),
            ]),
            ("Cost", [
                graph("Scrape duration", "How long Prometheus took to scrape the agent (scrape_duration_seconds).",
                      units.Seconds, (f"scrape_duration_seconds {mine}", "{{instance}}"), span=8),
                graph("Agent CPU", "The agent's CPU time per second: 1 is one whole CPU "
                      "(process_cpu_seconds_total).", units.PercentUnit,
                      (f"rate(process_cpu_seconds_total{RATE}) {mine}", "{{instance}}"), span=8),
                graph("Agent resident memory", "The agent's resident set (process_resident_memory_bytes).",
                      units.BytesIEC, (f"process_resident_memory_bytes {mine}", "{{instance}}"), span=8),
            ]),
        ],
    )


DASHBOARDS = [overview, syscalls, http, agent]


def encode(builder):
    return JSONEncoder(sort_keys=True, indent=2).encode(builder.build()) + "\n"


def lost_keys(doc, again, path="$"):
    """Keys of `doc` that the SDK's model did not keep (a key Grafana's schema lacks)."""
    if isinstance(doc, dict) and isinstance(again, dict):
        return [p for k, v in doc.items()
                for p in ([f"{path}.{k}"] if k not in again else lost_keys(v, again[k], f"{path}.{k}"))]
    if isinstance(doc, list) and isinstance(again, list):
        return [p for n, (a, b) in enumerate(zip(doc, again)) for p in lost_keys(a, b, f"{path}[{n}]")]
    return []


def readme_table():
    lines = []
    for make in DASHBOARDS:
        d = json.loads(encode(make()))
        lines.append(f"| `dashboards/{d['uid']}.json` ({d['title']}) | |")
        for p in d["panels"]:
            if p["type"] == "row":
                lines.append(f"| {p['title']} | |")
            else:
                lines.append(f"| | {p['title']} ({p['type']}, {p['fieldConfig']['defaults']['unit']}) |")
    return "| dashboard / row | panel (type, unit) |\n|---|---|\n" + "\n".join(lines) + "\n"


def main():
    register_default_plugins()
    problems = []
    for make in DASHBOARDS:
        text = encode(make())
        doc = json.loads(text)
        path = HERE / f"{doc['uid']}.json"
        again = json.loads(JSONEncoder().encode(DashboardModel.from_json(doc)))
        problems += [f"{path.name}: the SDK's dashboard model has no {k}" for k in lost_keys(doc, again)]
        if "--check" in sys.argv:
            if not path.exists() or path.read_text() != text:
                problems.append(f"{path.name} is not what build.py makes: run python3 dashboards/build.py")
        elif "--readme" not in sys.argv:
            path.write_text(text)
    if "--readme" in sys.argv:
        print(readme_table(), end="")
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

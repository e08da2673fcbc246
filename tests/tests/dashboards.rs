//! The shipped dashboards and rules against real peers: Grafana's SDK builds exactly the
//! committed dashboards (and its model keeps every key of them), promtool checks and unit-tests
//! the rules, and a real Prometheus, scraping the agent while workloads exercise every metric
//! and evaluating the rules, answers every query of every panel, the known ones exactly.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{
    Collector, Nginx, OtlpReceiver, Prometheus, Workload, have_tool, privileged, python_after_go, repo_path,
    test_python,
};

/// The Python with the pinned grafana-foundation-sdk.
fn sdk_python() -> Option<PathBuf> {
    test_python("grafana-foundation-sdk")
}

fn dashboards() -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(repo_path("dashboards"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let doc = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), doc)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every (dashboard, panel title, expression) of the dashboards.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, doc) in dashboards() {
        for panel in doc["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap().to_owned();
                out.push((file.clone(), panel["title"].as_str().unwrap().to_owned(), expr));
            }
        }
    }
    out
}

/// Grafana's template variables as it would fill them for "All" over the last hour, with
/// the 1 s scrape interval of the test's Prometheus.
fn as_grafana_would(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$target", ".*")
        .replace("$syscall", ".*")
        .replace("$instance", ".*")
}

#[test]
fn the_dashboards_are_what_grafanas_sdk_builds_and_the_readme_shows_them() {
    let Some(python) = sdk_python() else { return };
    let run = |arg: &str| {
        let out = Command::new(&python)
            .arg(repo_path("dashboards/build.py"))
            .arg(arg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build.py {arg}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run("--check");
    let table = run("--readme");
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "the README's dashboard table is not build.py --readme's:\n{table}"
    );
    let names: Vec<String> = dashboards().into_iter().map(|(f, _)| f).collect();
    println!("{names:?} built by grafana-foundation-sdk as committed");
    for (file, doc) in dashboards() {
        for panel in doc["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap();
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "{file}: {title} has no unit"
            );
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "{file}: {title} says not what it shows"
            );
        }
        let variables: Vec<&str> = doc["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(variables[0], "DS_PROMETHEUS", "{file}");
    }
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    if !have_tool("promtool", "prometheus") {
        return;
    }
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo_path("deploy/prometheus"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool {args:?}: {text}");
        assert!(out.status.success(), "promtool {args:?}: {text}");
        text
    };
    promtool(&["check", "rules", "rules.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    let tested = promtool(&["test", "rules", "rules.test.yml"]);
    assert!(tested.contains("SUCCESS"));
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(repo_path("deploy/prometheus/rules.yml")).unwrap();
    let tests = std::fs::read_to_string(repo_path("deploy/prometheus/rules.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no unit test fires {alert}"
        );
    }
}

/// The workload every metric of the dashboards needs, with what it makes exactly.
struct Exercised {
    exits_by_outcome: BTreeMap<String, f64>,
    opened_by_direction: BTreeMap<String, f64>,
    requests_by_status: BTreeMap<String, f64>,
}

/// Requests the target client makes to nginx, on one keep-alive connection.
const CLIENT: &str = r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for path, n in [("/index.html", 5), ("/missing", 3), ("/e500", 2)]:
    for _ in range(n):
        c.request("GET", path)
        c.getresponse().read()
c.close()
print("done", flush=True)
"#;

#[test]
fn a_real_prometheus_answers_every_panel_of_every_dashboard() {
    if !privileged() || !have_tool("prometheus", "prometheus") || !have_tool("nginx", "nginx-light") {
        return;
    }
    let nginx = Nginx::start("dashboards", "location = /e500 { return 500; }");
    std::fs::write(nginx.html().join("index.html"), "hello\n").unwrap();
    let (mut client, mut go) = python_after_go(CLIENT, &[&nginx.port.to_string()]);
    let (mut server, mut peer) = (Workload::spawn(), Workload::spawn());
    let receiver = OtlpReceiver::start();
    let c = Collector::start(&[
        "--pid",
        &format!("app={}", server.pid),
        "--pid",
        &format!("app={}", peer.pid),
        "--pid",
        &format!("nginx={}", nginx.child.id()),
        "--pid",
        &format!("client={}", client.id()),
        "--otlp-endpoint",
        &receiver.http_endpoint(),
        "--otlp-interval",
        "1s",
    ]);
    let rules = repo_path("deploy/prometheus/rules.yml");
    let prometheus = Prometheus::start("dashboards", &c.addr, &[&rules]);

    // Syscalls with errors, children exiting with codes and by a signal.
    server.run("openat_missing 40");
    server.run("spawn_exit 6"); // codes 0 1 2 0 1 2
    server.run("kill_child");
    // Connections: 5 accepted and connected between the two, 2 accepted and reset.
    let port = server.run("tcp_listen 127.0.0.1");
    let accepting = std::thread::spawn(move || {
        server.run("tcp_accept 5 100 50");
        server.run("tcp_accept_reset 2");
        server
    });
    peer.run(&format!("tcp_connect 127.0.0.1 {port} 5 100"));
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        s.write_all(b"unread").unwrap();
        let _ = s.read(&mut [0; 8]); // the reset
    }
    let _server = accepting.join().unwrap();
    // HTTP: the target client's requests to the target nginx.
    writeln!(go, "go").unwrap();
    let mut said = String::new();
    client.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    assert_eq!(said.trim(), "done");
    client.wait().unwrap();
    // And a request nginx never answers: its client leaves halfway through the headers.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    let expected = Exercised {
        // spawn_exit's 2 and the client's own exit; 4; kill_child's.
        exits_by_outcome: [("success", 3.0), ("failure", 4.0), ("signal", 1.0)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        // app: 5 connected and 7 accepted; the client's 2 to nginx, accepted there (nginx
        // closes a keep-alive connection after a 500: the second /e500 has a new one), and
        // nginx's one more of the request left halfway.
        opened_by_direction: [("outbound", 7.0), ("inbound", 10.0)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        requests_by_status: [("200", 5.0), ("404", 3.0), ("500", 2.0)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
    };

    // What a scrape has, once Prometheus has seen all of it.
    let by = |expr: &str, label: &str| -> BTreeMap<String, f64> {
        prometheus
            .query(expr)
            .into_iter()
            .map(|(m, v)| (m[label].as_str().unwrap_or_default().to_owned(), v))
            .collect()
    };
    let exact = [
        (
            "Process exits since the agent started",
            "outcome",
            &expected.exits_by_outcome,
        ),
        (
            "TCP connections opened since the agent started",
            "direction",
            &expected.opened_by_direction,
        ),
        (
            "Requests since the agent started",
            "http_response_status_code",
            &expected.requests_by_status,
        ),
    ];
    let queries = panel_queries();
    let expr_of = |title: &str| {
        queries
            .iter()
            .find(|(_, t, _)| t == title)
            .map_or_else(|| panic!("no panel {title}"), |(_, _, e)| as_grafana_would(e))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (title, label, want) in &exact {
        let expr = expr_of(title);
        while by(&expr, label) != **want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        let got = by(&expr, label);
        println!("{title}: {got:?}");
        assert_eq!(&got, *want, "{title}: {expr}");
    }
    // Two evaluations of every rule and 15 s of samples for every rate.
    std::thread::sleep(Duration::from_secs(16));

    let mut empty = Vec::new();
    for (file, title, expr) in &queries {
        let series = prometheus.query(&as_grafana_would(expr)).len();
        println!("{file} / {title}: {series} series  <- {expr}");
        if series == 0 {
            empty.push(format!("{file} / {title}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "panels with no data:\n{}", empty.join("\n"));

    // Every metric named by a panel or a rule is one the agent serves (or a rule records).
    let served: BTreeSet<String> = c.metrics().0.into_iter().map(|s| s.name).collect();
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let recorded: BTreeSet<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    let mut named = BTreeSet::new();
    for text in queries.iter().map(|(_, _, e)| e.as_str()).chain([rules_text.as_str()]) {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            // A recording rule's name is level:metric:operations.
            let rule = word.split(':').count() == 3 && word.split(':').all(|part| !part.is_empty());
            if word.starts_with("collector_") || word.starts_with("process_") || rule {
                named.insert(word.to_owned());
            }
        }
    }
    for name in &named {
        let known = if name.contains(':') {
            recorded.contains(name.as_str())
        } else {
            served.contains(name)
        };
        assert!(
            known,
            "{name} is named by a dashboard or rule but neither served nor recorded"
        );
    }
    println!("{} names, each served or recorded", named.len());
}

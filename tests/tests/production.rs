//! Running in production: the capabilities the agent keeps once its probes are attached (and
//! that it still counts exactly and follows new cgroups without the others), and its refusal
//! to start without the ones it needs.
use std::{collections::BTreeMap, time::Duration};

use tests::{CgroupTree, Collector, Stopped, Workload, eventually, have_tool, privileged, value};

/// CAP_SYS_PTRACE's bit in the capability sets (include/uapi/linux/capability.h).
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// Each thread's capability sets, by thread id: (effective, permitted, bounding).
fn thread_caps(pid: u32) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (field("CapEff:"), field("CapPrm:"), field("CapBnd:")),
        );
    }
    out
}

fn dropped_to(keep: Option<&str>, expected: u64) {
    let cgroups = CgroupTree::for_test(&format!("caps-{}", keep.unwrap_or("none")));
    let mut w = Workload::spawn();
    let mut args = vec!["--pid".to_owned(), format!("app={}", w.pid)];
    if let Some(tree) = &cgroups {
        args.extend(["--cgroup-pattern".to_owned(), format!("{}/svc-*", tree.relative(""))]);
    }
    if let Some(keep) = keep {
        args.extend(["--keep-capabilities".to_owned(), keep.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Collector::start(&args);
    let threads = thread_caps(c.pid());
    println!("--keep-capabilities {keep:?}: {} threads: {threads:?}", threads.len());
    assert!(threads.len() > 3, "the runtime and the agent's threads are there");
    for (tid, sets) in &threads {
        assert_eq!(*sets, (expected, expected, expected), "thread {tid}");
    }
    // Without the rest it still counts exactly, reads its maps, and follows a new cgroup.
    w.run("getppid 10000");
    assert_eq!(
        value(
            &c.metrics(),
            "collector_syscalls_total",
            &[("target", "app"), ("syscall", "getppid")]
        ),
        10_000.0
    );
    if let Some(tree) = &cgroups {
        tree.mkdir("svc-new");
        let name = tree.relative("svc-new");
        eventually("the new cgroup a target", Duration::from_secs(10), || {
            c.health().1["checks"]["targets"]["targets"][&name].is_object()
        });
    }
}

#[test]
fn after_the_load_every_thread_holds_no_capability_and_counts_stay_exact() {
    if privileged() {
        dropped_to(None, 0);
    }
}

#[test]
fn a_kept_capability_is_all_each_thread_holds() {
    if privileged() {
        dropped_to(Some("cap_sys_ptrace"), CAP_SYS_PTRACE);
    }
}

/// Without CAP_BPF (nor CAP_SYS_ADMIN, which would do instead) the agent says which is
/// missing in one line, exits 1, and never asked the kernel to load anything.
#[test]
fn without_cap_bpf_it_refuses_in_one_line_before_loading_anything() {
    if !privileged() || !have_tool("capsh", "libcap2-bin") || !have_tool("strace", "strace") {
        return;
    }
    let w = Workload::spawn();
    let trace = std::env::temp_dir().join(format!("collector-capsh-{}.strace", std::process::id()));
    let command = format!(
        "strace -f -e trace=bpf -o {} {} --pid {}",
        trace.display(),
        tests::collector_bin().display(),
        w.pid
    );
    let out = std::process::Command::new("capsh")
        .args(["--drop=cap_bpf,cap_sys_admin", "--", "-c", &command])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("without CAP_BPF: exit {:?}: {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: missing CAP_BPF:"), "{stderr}");
    let calls = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    assert!(!calls.contains("bpf("), "it called bpf(): {calls}");
}

/// As an unprivileged user with exactly CAP_BPF and CAP_PERFMON (ambient, as systemd's
/// AmbientCapabilities= or a container's capabilities give them), the agent loads, observes
/// a root process and counts it exactly.
#[test]
fn with_exactly_cap_bpf_and_cap_perfmon_as_nobody_it_counts_exactly() {
    if !privileged() || !have_tool("setpriv", "util-linux") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    // A copy nobody may run, wherever the build is.
    let bin = std::env::temp_dir().join(format!("collector-nobody-{}", std::process::id()));
    std::fs::copy(tests::collector_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = Workload::spawn();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let agent = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"])
        .arg(&bin)
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Stopped(agent);
    eventually("the agent serving", Duration::from_secs(60), || {
        tests::http_get(&addr, "/health").is_some()
    });
    w.run("getppid 5000");
    let (_, body) = tests::http_get(&addr, "/metrics").unwrap();
    let count = value(
        &tests::Metrics::parse(&body),
        "collector_syscalls_total",
        &[("target", "app"), ("syscall", "getppid")],
    );
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let status = agent.0.wait().unwrap();
    let _ = std::fs::remove_file(&bin);
    println!("as nobody with CAP_BPF and CAP_PERFMON: {count} getppid counted, then {status}");
    assert_eq!(count, 5000.0);
    assert!(status.success());
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl in a
/// directory of the test's.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn make(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("collector-pki-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &str| {
            let out = std::process::Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca");
        // v3 certificates (webpki takes no other), each for its use.
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
        for (name, ext) in [("server", server), ("client", "extendedKeyUsage=clientAuth\n")] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(&format!(
                "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
            ));
            openssl(&format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 \
                 -extfile {name}.ext"
            ));
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bcrypt hash of `password`, made by Python's bcrypt (an implementation of its own).
fn bcrypt_hash(password: &str) -> Option<String> {
    let python = tests::test_python("bcrypt")?;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=6)).decode())",
        ])
        .arg(password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// curl's status code for `url` with `args`; `None` when the exchange itself failed (TLS).
fn curl(url: &str, args: &[&str]) -> (Option<u16>, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    (code.filter(|_| out.status.success()), head)
}

fn web_tools() -> bool {
    privileged() && have_tool("curl", "curl") && have_tool("openssl", "openssl")
}

/// TLS (1.2 at least, a client certificate required) and basic auth on every endpoint, with
/// curl and openssl as clients; then a real Prometheus scraping through both.
#[test]
fn tls_and_basic_auth_guard_every_endpoint_and_prometheus_scrapes_through_them() {
    if !web_tools() || !have_tool("prometheus", "prometheus") {
        return;
    }
    let Some(hash) = bcrypt_hash("s3cret") else { return };
    let pki = Pki::make("tls");
    let web = pki.dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let mut w = Workload::spawn();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let agent = std::process::Command::new(tests::collector_bin())
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr])
        .args(["--web.config.file", &web.display().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Stopped(agent);
    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let url = |path: &str| format!("https://{addr}{path}");
    let with = |extra: &[&str], path: &str| {
        let args: Vec<&str> = tls.iter().chain(extra).copied().collect();
        curl(&url(path), &args)
    };
    eventually("the agent serving over TLS", Duration::from_secs(60), || {
        with(&["-u", "prometheus:s3cret"], "/health").0.is_some()
    });
    w.run("getppid 3000");

    let cases: [(&str, &[&str], &str, Option<u16>); 6] = [
        ("right password", &["-u", "prometheus:s3cret"], "/metrics", Some(200)),
        (
            "right password, /events",
            &["-u", "prometheus:s3cret", "--max-time", "1"],
            "/events?event=nothing.*",
            Some(400),
        ),
        ("wrong password", &["-u", "prometheus:wrong"], "/metrics", Some(401)),
        ("unknown user", &["-u", "mallory:s3cret"], "/metrics", Some(401)),
        ("no credentials", &[], "/health", Some(401)),
        ("no credentials, /metrics", &[], "/metrics", Some(401)),
    ];
    for (what, extra, path, want) in cases {
        let (code, head) = with(extra, path);
        println!("{what}: {code:?}");
        assert_eq!(code, want, "{what}: {head}");
        if want == Some(401) {
            assert!(
                head.to_lowercase().contains("www-authenticate: basic"),
                "{what}: {head}"
            );
        }
    }
    let (code, _) = curl(&url("/metrics"), &["--cacert", &ca, "-u", "prometheus:s3cret"]);
    assert_eq!(code, None, "no client certificate, no exchange");
    let (code, _) = curl(&format!("http://{addr}/metrics"), &["-u", "prometheus:s3cret"]);
    assert_eq!(code, None, "plain HTTP to the TLS port");
    // TLS 1.1 offered (openssl's security level lowered so that it does), and refused.
    let s_client = |version: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr, version, "-cipher", "DEFAULT:@SECLEVEL=0"])
            .args(["-CAfile", &ca, "-cert", &cert, "-key", &key])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let tls11 = s_client("-tls1_1");
    let tls12 = s_client("-tls1_2");
    println!("TLS 1.1: {}; TLS 1.2: {}", tls11.status, tls12.status);
    assert!(!tls11.status.success(), "TLS 1.1 was accepted");
    assert!(
        tls12.status.success(),
        "TLS 1.2 failed: {}",
        String::from_utf8_lossy(&tls12.stderr)
    );

    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n      cert_file: {cert}\n      key_file: {key}\n    \
         basic_auth:\n      username: prometheus\n      password: s3cret\n"
    );
    let prometheus = tests::Prometheus::start_scraping("tls", &addr, &job, &[]);
    let counted = prometheus.eventually(
        r#"collector_syscalls_total{target="app",syscall="getppid"}"#,
        Duration::from_secs(60),
    );
    println!("Prometheus through TLS and basic auth: {counted:?}");
    assert_eq!(counted.first().map(|(_, v)| *v), Some(3000.0));
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    assert!(agent.0.wait().unwrap().success());
}

/// `min_version: TLS13` refuses TLS 1.2; `VerifyClientCertIfGiven` serves a client without
/// a certificate and refuses one whose certificate no CA in `client_ca_file` signed; and
/// basic auth guards every path, those that do not exist included.
#[test]
fn tls13_only_an_optional_client_certificate_and_auth_on_every_path() {
    if !web_tools() {
        return;
    }
    let Some(hash) = bcrypt_hash("s3cret") else { return };
    let pki = Pki::make("tls13");
    let other = Pki::make("tls13-other");
    let web = pki.dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  min_version: TLS13\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let w = Workload::spawn();
    let addr = tests::free_port().to_string();
    let agent = std::process::Command::new(tests::collector_bin())
        .args(["--pid", &format!("app={}", w.pid), "--listen", &addr])
        .args(["--web.config.file", &web.display().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Stopped(agent);
    let ca = pki.path("ca.crt");
    let url = |path: &str| format!("https://{addr}{path}");
    let auth = ["--cacert", ca.as_str(), "-u", "prometheus:s3cret"];
    eventually("the agent serving over TLS", Duration::from_secs(60), || {
        curl(&url("/health"), &auth).0.is_some()
    });
    let (code, _) = curl(&url("/metrics"), &auth);
    assert_eq!(code, Some(200), "no client certificate: optional");
    let (code, _) = curl(&url("/metrics"), &[&auth[..], &["--tls-max", "1.2"]].concat());
    assert_eq!(code, None, "TLS 1.2 under min_version TLS13");
    let foreign = [other.path("client.crt"), other.path("client.key")];
    let (code, _) = curl(
        &url("/metrics"),
        &[&auth[..], &["--cert", &foreign[0], "--key", &foreign[1]]].concat(),
    );
    assert_eq!(code, None, "a certificate no CA of client_ca_file signed");
    for path in ["/events", "/-/reload", "/nothing-here"] {
        let method: &[&str] = if path == "/-/reload" { &["-X", "POST"] } else { &[] };
        let (code, head) = curl(
            &url(path),
            &[&["--cacert", ca.as_str(), "--max-time", "2"], method].concat(),
        );
        println!("{path} without credentials: {code:?}");
        assert_eq!(code, Some(401), "{path}: {head}");
    }
}

/// Each bad web config stops the start in one line (exit 2) before anything loads.
#[test]
fn a_bad_web_config_is_a_one_line_error_before_anything_loads() {
    if !web_tools() {
        return;
    }
    let Some(hash) = bcrypt_hash("pw") else { return };
    let pki = Pki::make("bad");
    let w = Workload::spawn();
    let tls = |cert: &str, key: &str| format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n");
    let cases = [
        (tls("missing.crt", "server.key"), "/missing.crt: "),
        (
            tls("server.crt", "server.key") + "  client_ca_file: ca.crt\n",
            "client_ca_file without client_auth_type",
        ),
        (tls("server.crt", "client.key"), "cert_file and key_file"),
        (
            "basic_auth_users:\n  alice: $2b$06$notahash\n".to_owned(),
            "basic_auth_users alice: not a bcrypt hash",
        ),
        (
            format!("basic_auth_users:\n  alice: {hash}\nbasic_auth: x\n"),
            "unknown field `basic_auth`",
        ),
        (
            tls("server.crt", "server.key") + "  min_version: TLS11\n",
            "min_version TLS11: TLS12 or TLS13",
        ),
        (
            tls("server.crt", "server.key") + "  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = pki.dir.join(format!("bad{i}.yml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(tests::collector_bin())
            .args([
                "--pid",
                &w.pid.to_string(),
                "--listen",
                &tests::free_port().to_string(),
                "--web.config.file",
                &path.display().to_string(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{needle}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

//! The binary as a user meets it: help, the no-cluster error, CRDs, render.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn operator(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tusk-operator"));
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("tusk-operator runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `run` with nothing that needs a free port or a terminal.
const RUN: &[&str] = &[
    "run",
    "--metrics-addr",
    "127.0.0.1:0",
    "--log-format",
    "text",
];

/// The binary Cargo builds for this test is built with the features of the whole test build
/// (`cargo test --workspace` unifies them across members), where rustls has both the ring and
/// the aws-lc-rs provider: without an explicit choice kube's client panicked at its first
/// request ("Could not automatically determine the process-level CryptoProvider").
#[test]
fn run_against_an_unreachable_api_server_fails_cleanly_however_the_binary_was_built() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"
        ),
    )
    .unwrap();
    let output = operator(
        RUN,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HOME", dir.path().to_str().unwrap()),
            ("RUST_LOG", "off"),
        ],
    );
    let message = stderr(&output);
    assert!(
        !message.contains("panicked") && !message.contains("CryptoProvider"),
        "{message}"
    );
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.starts_with("tusk-operator: cannot reach the Kubernetes API server"),
        "reached the connection attempt: {message}"
    );
}

#[test]
fn run_without_a_cluster_fails_with_one_line_saying_what_it_tried() {
    let home = tempfile::tempdir().unwrap();
    let output = operator(
        RUN,
        &[("HOME", home.path().to_str().unwrap()), ("RUST_LOG", "off")],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(
        message.trim_end().lines().count(),
        1,
        "one line, no backtrace:\n{message}"
    );
    assert!(
        message.starts_with("tusk-operator: no Kubernetes cluster configured"),
        "{message}"
    );
    assert!(
        message.contains(".kube/config"),
        "names the kubeconfig it tried: {message}"
    );
    assert!(
        message.contains("in-cluster"),
        "names the in-cluster config it tried: {message}"
    );
    assert!(
        !message.contains("panicked") && !message.contains("backtrace"),
        "{message}"
    );
}

#[test]
fn run_with_a_missing_kubeconfig_names_it() {
    let output = operator(
        &["run", "--metrics-addr", "127.0.0.1:0"],
        &[
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("RUST_LOG", "off"),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("KUBECONFIG=/nonexistent/kubeconfig"),
        "{message}"
    );
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}

#[test]
fn run_help_documents_every_flag() {
    let output = operator(&["run", "--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--controllers",
        "--namespace",
        "--metrics-addr",
        "--leader-election",
        "--leader-election-lease",
        "--leader-election-namespace",
        "--identity",
        "--requeue-seconds",
        "--log",
        "--log-format",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from run --help:\n{help}"
        );
    }
}

#[test]
fn unknown_controller_is_refused_by_name() {
    let output = operator(&["run", "--controllers", "cluster,bogus"], &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("bogus"), "{message}");
    assert!(message.contains("possible values"), "{message}");
}

#[test]
fn crds_prints_the_checked_in_crds() {
    let output = operator(&["crds"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut documents = 0;
    for crd in tusk_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let file = std::fs::read_to_string(root.join("crds").join(format!("{name}.yaml"))).unwrap();
        let body: String = file
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            printed.contains(&body),
            "{name} differs from crds/{name}.yaml"
        );
        documents += 1;
    }
    assert_eq!(
        printed.matches("\n---\n").count() + 1,
        documents,
        "one document per CRD"
    );
}

#[test]
fn render_of_a_cluster_prints_every_child_without_secrets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = root.join("docs/examples/cluster.yaml");
    let output = operator(&["render", "-f", example.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    ] {
        assert!(
            printed.contains(&format!("kind: {kind}\n")),
            "{kind} missing"
        );
    }
    assert_eq!(
        printed.matches("kind: StatefulSet\n").count(),
        3,
        "one per instance"
    );
    assert!(
        !printed.contains("BEGIN"),
        "no key material in render output"
    );
    assert!(
        printed.contains("<generated when applied>"),
        "Secret data is replaced by placeholders"
    );
    for document in printed
        .split("\n---\n")
        .filter(|d| d.contains("kind: Secret\n"))
    {
        assert!(
            !document.contains("\ndata:"),
            "a Secret carries data:\n{document}"
        );
    }
}

#[test]
fn render_of_a_pg_upgrade_prints_its_jobs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = root.join("docs/examples/pgupgrade.yaml");
    let output = operator(&["render", "-f", example.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed.matches("kind: Job\n").count(), 3, "{printed}");
    assert!(printed.contains("pg_upgrade"), "{printed}");
}

#[test]
fn pgbouncer_exporter_help_lists_its_flags_and_takes_the_password_only_from_the_environment() {
    let output = operator(&["pgbouncer-exporter", "--help"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--listen",
        "0.0.0.0:9127",
        "--pgbouncer-host",
        "127.0.0.1",
        "--pgbouncer-port",
        "5432",
        "--user",
        "tusk_pooler_admin",
        "--server-name",
        "--ca-file",
        "--log-format",
        "TUSK_PGBOUNCER_PASSWORD",
    ] {
        assert!(
            help.contains(expected),
            "{expected} missing from pgbouncer-exporter --help:\n{help}"
        );
    }
    assert!(!help.contains("--password"), "{help}");
    let top = operator(&["--help"], &[]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("pgbouncer-exporter"));
}

#[test]
fn pgbouncer_exporter_without_its_password_fails_with_one_line() {
    let output = operator(
        &[
            "pgbouncer-exporter",
            "--server-name",
            "db-pooler.shop.svc",
            "--ca-file",
            "/nonexistent/ca.crt",
        ],
        &[("RUST_LOG", "off")],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert_eq!(
        message,
        "tusk-operator: TUSK_PGBOUNCER_PASSWORD is not set: the admin console user's password comes from the environment only\n"
    );
}

/// One HTTP GET; `None` while nothing listens yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[test]
fn pgbouncer_exporter_answers_pgbouncer_up_0_while_pgbouncer_is_unreachable() {
    let tls = tusk_testkit::ServerTls::for_host("db-pooler.shop.svc", None).unwrap();
    let ca_file = tls.dir.path().join("ca.crt");
    std::fs::write(&ca_file, &tls.ca_pem).unwrap();
    let listen = tusk_testkit::free_port().unwrap();
    // Nothing listens on this one.
    let pgbouncer = tusk_testkit::free_port().unwrap();
    let log = tls.dir.path().join("exporter.log");
    let mut exporter = Command::new(env!("CARGO_BIN_EXE_tusk-operator"))
        .args([
            "pgbouncer-exporter",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--pgbouncer-port",
            &pgbouncer.to_string(),
            "--server-name",
            "db-pooler.shop.svc",
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env("TUSK_PGBOUNCER_PASSWORD", "admin-s3cret-in-env")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut health = None;
    for _ in 0..400 {
        health = http_get(listen, "/healthz");
        if health.is_some() || exporter.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let metrics = http_get(listen, "/metrics");
    exporter.kill().unwrap();
    exporter.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(health.map(|h| h.0), Some(200), "{log}");
    let (status, body) = metrics.expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\npgbouncer_up 0\n"), "{body}");
    assert!(
        log.contains("scraping PgBouncer failed; answering pgbouncer_up 0"),
        "{log}"
    );
    assert!(!log.contains("admin-s3cret-in-env"), "{log}");
    assert!(!body.contains("admin-s3cret-in-env"));
}

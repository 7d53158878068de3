//! `cargo xtask bench <name>`: measurements that are not tests. Each prints `name=value`
//! lines; none runs in CI.
//!
//! - `operator`: memory of the controllers' reflector stores at scale (`rss_mib=`, goal
//!   ≤ 64) and time from process start to a serving metrics endpoint (`startup_ms=`).
//! - `users`: 1,000 roles created and checked by the PostgresUser controller's SQL engine
//!   against a real PostgreSQL, and by a naive loop (`bench_users.rs`).
//! - `backup`: pgBackRest full backup and restore of ~1 GiB with tusk-pgbackrest's settings
//!   against `tar | zstd -1 -T0` of the same data (`bench_backup.rs`).
//! - `upgrade`: downtime of a link-mode major upgrade (`--major` is the target) of ~100 MiB
//!   and ~1 GiB with the PGUpgrade controller's rendered upgrade command
//!   (`bench_upgrade.rs`).
//! - `pooler`: pgbench with and without a new connection per transaction, through PgBouncer
//!   with the configuration a Pooler renders and straight to PostgreSQL
//!   (`pooled_vs_direct_connect=`, goal ≥ 3; the CPU each side used per transaction, and
//!   `pooled_vs_direct_connect_server_cpu=`; `bench_pooler.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark: operator, users.
    name: String,
    /// How many start-ups to time (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `users`: connections the tusk pass spreads its batches over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// `users`: the PostgreSQL major to run against.
    #[arg(long, default_value_t = 17)]
    major: u32,
}

pub(crate) fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    match args.name.as_str() {
        "operator" => operator(root, args.runs),
        "users" => crate::bench_users::run(root, args.connections, args.major),
        "failover" => crate::bench_failover::run(args.runs),
        "backup" => crate::bench_backup::run(args.major),
        "upgrade" => crate::bench_upgrade::run(args.major),
        "pooler" => crate::bench_pooler::run(),
        other => bail!(
            "unknown benchmark {other:?}; available: operator, users, failover, backup, upgrade, pooler"
        ),
    }
}

fn operator(root: &Path, runs: usize) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "tusk-operator",
            "--bin",
            "tusk-operator",
            "--example",
            "store_footprint",
        ])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    let release = root.join("target/release");

    // Stores: a fresh process, so its RSS is the stores' plus the runtime's, nothing else.
    let output = Command::new(release.join("examples/store_footprint"))
        .output()
        .context("cannot run store_footprint")?;
    if !output.status.success() {
        bail!(
            "store_footprint failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    println!("rss_goal_mib=64");

    let mut timings: Vec<u128> = (0..runs.max(1))
        .map(|_| startup(&release.join("tusk-operator")))
        .collect::<Result<_>>()?;
    timings.sort_unstable();
    println!("startup_ms={}", timings[timings.len() / 2]);
    println!("startup_runs={}", timings.len());
    Ok(())
}

/// Starts the operator against an API server that accepts connections and never answers (so
/// no cluster work happens) and times process start → `/healthz` answering 200.
fn startup(binary: &Path) -> Result<u128> {
    let silent_api = TcpListener::bind("127.0.0.1:0")?;
    let api_addr = silent_api.local_addr()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: silent\n  cluster:\n    server: http://{api_addr}\n\
             contexts:\n- name: silent\n  context: {{cluster: silent, user: nobody}}\ncurrent-context: silent\n\
             users:\n- name: nobody\n  user: {{}}\n"
        ),
    )?;
    let metrics_addr: SocketAddr = {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args([
            "run",
            "--metrics-addr",
            &metrics_addr.to_string(),
            "--log",
            "off",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start tusk-operator")?;
    let deadline = started + Duration::from_secs(10);
    let result = loop {
        if healthz_ok(metrics_addr) {
            break Ok(started.elapsed().as_millis());
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("tusk-operator exited early: {status}"));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("metrics endpoint not up within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(silent_api);
    result
}

fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

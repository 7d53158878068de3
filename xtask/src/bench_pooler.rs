//! `cargo xtask bench pooler`: pgbench through PgBouncer — started with the configuration a
//! Pooler renders (transaction mode, pool size 20), in front of a testkit PostgreSQL with TLS —
//! against pgbench straight to that PostgreSQL, in the same run.
//!
//! ```text
//!   pgbench -S -c 8 -j 2 -T 10 [-C] ──TLS verify-full, SCRAM──► PostgreSQL      (direct)
//!   pgbench -S -c 8 -j 2 -T 10 [-C] ──TLS verify-full, SCRAM──► PgBouncer ──TLS──► PostgreSQL
//! ```
//!
//! `-C` opens a new connection for every transaction (what an application without a pool of
//! its own does); without it, each client keeps its connection. Prints `name=value` lines:
//! TPS and p99 latency (from pgbench's per-transaction log) for the four runs, and
//! `pooled_vs_direct_connect=` (pooled ÷ direct TPS with `-C`; goal ≥ 3). External programs do
//! the work, so a debug xtask measures the same as a release one.
//!
//! pgbench shares the machine's cores with the servers, and with `-C` its own side of every
//! connection (the TLS handshake and libpq's SCRAM key derivation) costs as much CPU as the
//! server's. So each run also prints the CPU time per transaction of the client, of
//! PostgreSQL (postmaster and every backend) and of PgBouncer, read from `/proc`, and
//! `pooled_vs_direct_connect_server_cpu=` — the server side's CPU per new connection direct ÷
//! through the pooler: how many more connections per second the same database cores take
//! once the clients run elsewhere, as they do in a cluster.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tusk_pooler_controller::testing::{
    APP_PASSWORD, HOST, pooler, prepare_auth, start_bouncer, start_primary,
};
use tusk_testkit::{PostgresBinaries, process_stat, tree_cpu_time};

const CLIENTS: &str = "8";
const THREADS: &str = "2";
const SECONDS: &str = "10";

pub(crate) fn run() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    let pg = tusk_testkit::postgres(15).map_err(|m| anyhow::anyhow!("{m}"))?;
    let pgbouncer = tusk_testkit::pgbouncer().map_err(|m| anyhow::anyhow!("{m}"))?;
    let primary = start_primary(&pg).await?;
    prepare_auth(&primary).await?;
    let settings = "    poolMode: Transaction\n    defaultPoolSize: 20\n";
    let bouncer = start_bouncer(
        &pgbouncer.pgbouncer,
        pg.run_as.as_ref(),
        &primary,
        &pooler(settings),
    )
    .await?;

    let work = tempfile::tempdir()?;
    let server_ca = work.path().join("server-ca.crt");
    std::fs::write(&server_ca, &primary.tls.ca_pem)?;
    let pooler_ca = work.path().join("pooler-ca.crt");
    std::fs::write(&pooler_ca, &bouncer.pooler_ca)?;
    let direct = Target {
        port: primary.server.port(),
        ca: &server_ca,
    };
    let pooled = Target {
        port: bouncer.placement.listen_port,
        ca: &pooler_ca,
    };
    pgbench(&pg, &direct, work.path(), &["-i", "-s", "1", "-q"], "init")?;

    println!("clients={CLIENTS}");
    println!("threads={THREADS}");
    println!("seconds_per_run={SECONDS}");
    println!("pool_mode=transaction");
    println!("default_pool_size=20");
    let servers = Servers {
        postgres: primary.server.pid().context("PostgreSQL is not running")?,
        pgbouncer: bouncer.process.pid(),
    };
    let mut connect_tps = [0.0; 2];
    let mut connect_server_cpu = [0.0; 2];
    for (index, (name, target)) in [("direct", &direct), ("pooled", &pooled)]
        .into_iter()
        .enumerate()
    {
        for (suffix, connect) in [("connect", true), ("reuse", false)] {
            let run = format!("{name}_{suffix}");
            let mut args = vec!["-S", "-n", "-c", CLIENTS, "-j", THREADS, "-T", SECONDS];
            args.extend(["--log", "--log-prefix", run.as_str()]);
            if connect {
                args.push("-C");
            }
            let before = servers.cpu()?;
            let output = pgbench(&pg, target, work.path(), &args, &run)?;
            let used = servers.cpu()?.since(&before);
            let tps = parse_tps(&output).with_context(|| format!("{run}: {output}"))?;
            let transactions =
                summary_number(&output, "number of transactions actually processed: ")
                    .filter(|count| *count > 0.0)
                    .with_context(|| format!("{run}: no transactions: {output}"))?;
            let p99 = p99_ms(work.path(), &run)?;
            println!("{run}_tps={tps:.0}");
            println!("{run}_p99_ms={p99:.2}");
            let per_transaction = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / transactions;
            println!(
                "{run}_client_cpu_ms_per_txn={:.3}",
                per_transaction(used.client)
            );
            println!(
                "{run}_postgres_cpu_ms_per_txn={:.3}",
                per_transaction(used.postgres)
            );
            println!(
                "{run}_pgbouncer_cpu_ms_per_txn={:.3}",
                per_transaction(used.pgbouncer)
            );
            if connect {
                connect_tps[index] = tps;
                // The direct run goes past PgBouncer; its few idle ticks are not the server's.
                connect_server_cpu[index] = per_transaction(if index == 0 {
                    used.postgres
                } else {
                    used.postgres + used.pgbouncer
                });
                if let Some(ms) = summary_number(&output, "average connection time = ") {
                    println!("{run}_average_connection_ms={ms:.2}");
                }
            }
        }
    }
    if connect_tps[0] <= 0.0 {
        bail!("the direct run with -C did no transactions");
    }
    println!(
        "pooled_vs_direct_connect={:.2}",
        connect_tps[1] / connect_tps[0]
    );
    if connect_server_cpu[1] <= 0.0 {
        bail!("the pooled run with -C used no server CPU that /proc could see");
    }
    println!(
        "pooled_vs_direct_connect_server_cpu={:.2}",
        connect_server_cpu[0] / connect_server_cpu[1]
    );
    Ok(())
}

/// The process ids whose CPU time a run is charged with.
struct Servers {
    postgres: u32,
    pgbouncer: u32,
}

/// CPU time used so far: by the pgbench runs this process waited for, by PostgreSQL's process
/// tree, by PgBouncer's.
struct CpuReading {
    client: Duration,
    postgres: Duration,
    pgbouncer: Duration,
}

impl Servers {
    fn cpu(&self) -> Result<CpuReading> {
        let client = process_stat(std::process::id())
            .context("reading /proc/self/stat")?
            .reaped_children_cpu;
        let tree = |pid: u32, what: &str| {
            tree_cpu_time(pid).with_context(|| format!("{what} (pid {pid}) is gone"))
        };
        Ok(CpuReading {
            client,
            postgres: tree(self.postgres, "PostgreSQL")?,
            pgbouncer: tree(self.pgbouncer, "PgBouncer")?,
        })
    }
}

impl CpuReading {
    fn since(&self, before: &Self) -> Self {
        Self {
            client: self.client.saturating_sub(before.client),
            postgres: self.postgres.saturating_sub(before.postgres),
            pgbouncer: self.pgbouncer.saturating_sub(before.pgbouncer),
        }
    }
}

struct Target<'a> {
    port: u16,
    ca: &'a Path,
}

/// Runs pgbench as `shop` over TLS verify-full against `target`; returns its stdout.
fn pgbench(
    pg: &PostgresBinaries,
    target: &Target<'_>,
    dir: &Path,
    args: &[&str],
    what: &str,
) -> Result<String> {
    let output = Command::new(pg.bin("pgbench"))
        .current_dir(dir)
        .env("PGHOST", HOST)
        .env("PGPORT", target.port.to_string())
        .env("PGUSER", "shop")
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", "app")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", target.ca)
        .args(args)
        .output()
        .with_context(|| format!("running pgbench ({what})"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench ({what}) failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// `tps = 1234.5 (...)` from pgbench's summary.
fn parse_tps(output: &str) -> Result<f64> {
    let line = output
        .lines()
        .find(|line| line.starts_with("tps = "))
        .context("no `tps = ` line")?;
    let number = line
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()
        .unwrap_or_default();
    number
        .parse()
        .with_context(|| format!("not a number: {number:?}"))
}

/// The number after `prefix` on the summary line that starts with it.
fn summary_number(output: &str, prefix: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 99th percentile of the third field (microseconds) of every `<prefix>.<pid>[.<thread>]`
/// per-transaction log pgbench wrote.
fn p99_ms(dir: &Path, prefix: &str) -> Result<f64> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(&format!("{prefix}.")));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<u64>().ok())
            {
                latencies.push(us);
            }
        }
    }
    if latencies.is_empty() {
        bail!("pgbench wrote no transaction log for {prefix}");
    }
    latencies.sort_unstable();
    let index = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    #[allow(clippy::cast_precision_loss)]
    Ok(latencies[index] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tps_line_is_read() {
        let output = "number of failed transactions: 0 (0.000%)\nlatency average = 1.2 ms\ntps = 6543.210987 (without initial connection time)\n";
        assert!((parse_tps(output).unwrap() - 6_543.210_987).abs() < 1e-6);
        assert!(parse_tps("nothing").is_err());
        let counted = "number of transactions actually processed: 1187\n";
        assert_eq!(
            summary_number(counted, "number of transactions actually processed: "),
            Some(1187.0)
        );
        let connect = "average connection time = 7.250 ms\n";
        assert_eq!(
            summary_number(connect, "average connection time = "),
            Some(7.25)
        );
    }

    #[test]
    fn p99_is_taken_over_every_log_file_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = (1..=100)
            .map(|i| format!("0 {i} {} 0 1 2\n", i * 1000))
            .collect();
        std::fs::write(dir.path().join("run.123"), &lines).unwrap();
        std::fs::write(dir.path().join("run.123.1"), "1 1 500000 0 1 2\n").unwrap();
        std::fs::write(dir.path().join("other.1"), "1 1 900000000 0 1 2\n").unwrap();
        // 101 values: 1..=100 ms and 500 ms; the 99th percentile is the 100th value.
        assert!((p99_ms(dir.path(), "run").unwrap() - 100.0).abs() < 1e-9);
    }
}

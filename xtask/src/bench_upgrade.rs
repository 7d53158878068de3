//! `cargo xtask bench upgrade`: the downtime of a major upgrade in link mode, with the
//! command the PGUpgrade controller renders into its upgrade Job (crates/upgrade-controller,
//! `upgrade.sh`), on real PostgreSQL (testkit binaries) of ~100 MiB and ~1 GiB.
//!
//! ```text
//!  old server running, data loaded ── TUSK_STEP=prepare (initdb of the new data directory)
//!  t0: pg_ctl stop -m fast ────────── TUSK_STEP=upgrade (pg_upgrade --link, reusing the
//!                                     prepared directory) ── postgres -D <new> ── INSERT ok: t1
//!  after t1: the post-upgrade Job's command (vacuumdb --analyze-in-stages, extensions)
//! ```
//!
//! Prints `downtime_seconds_100m=`, `downtime_seconds_1g=` (t1 − t0: from asking the old
//! server to stop to the first committed write on the new one), `size_ratio=` (1 GiB over
//! 100 MiB) and, for information, the statistics rebuild that runs after the downtime.
//! Goals (issue 8): downtime ≤ 5 s, ratio ≤ 1.2. The test harness runs PostgreSQL with
//! `fsync = off`; pg_upgrade's own sync of the new data directory is on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tusk_testkit::{
    ChildProcess, PostgresBinaries, PostgresOptions, PostgresServer, Signal, command_as,
    daemon_command_as, free_port,
};
use tusk_upgrade_controller::jobs::{self, JobKind};

const MIB: u64 = 1024 * 1024;

/// Runs the benchmark from `major - 1` to `major`.
pub(crate) fn run(major: u32) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(major.saturating_sub(1), major))
}

async fn bench(from: u32, to: u32) -> Result<()> {
    let old = tusk_testkit::postgres(from).map_err(|m| anyhow::anyhow!("{m}"))?;
    let new = tusk_testkit::postgres(to).map_err(|m| anyhow::anyhow!("{m}"))?;
    println!("from={from}");
    println!("to={to}");
    println!("transfer_method=link");
    let small = one_size(&old, &new, 100 * MIB).await?;
    println!("downtime_seconds_100m={:.2}", small.downtime.as_secs_f64());
    println!("database_mib_100m={}", small.size / MIB);
    println!(
        "statistics_seconds_100m={:.2}",
        small.statistics.as_secs_f64()
    );
    let large = one_size(&old, &new, 1024 * MIB).await?;
    println!("downtime_seconds_1g={:.2}", large.downtime.as_secs_f64());
    println!("database_mib_1g={}", large.size / MIB);
    println!(
        "statistics_seconds_1g={:.2}",
        large.statistics.as_secs_f64()
    );
    println!(
        "size_ratio={:.2}",
        large.downtime.as_secs_f64() / small.downtime.as_secs_f64()
    );
    println!("goal_downtime_seconds=5");
    println!("goal_size_ratio=1.2");
    Ok(())
}

struct Measured {
    size: u64,
    downtime: Duration,
    statistics: Duration,
}

fn upgrade_object(from: u32, to: u32) -> Result<tusk_api::PGUpgrade> {
    Ok(serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {{name: bench, namespace: db, uid: bench}}
spec: {{cluster: {{name: db}}, fromPostgresVersion: {from}, toPostgresVersion: {to}, transferMethod: Link}}
"
    ))?)
}

fn cluster_object(from: u32) -> Result<tusk_api::Cluster> {
    Ok(serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db}}
spec: {{postgresVersion: {from}, storage: {{size: 10Gi}}}}
"
    ))?)
}

/// The Job's command for `kind` (`step` overriding TUSK_STEP), with local paths.
fn job_command(
    kind: JobKind,
    step: Option<&str>,
    old: &PostgresBinaries,
    new: &PostgresBinaries,
    paths: &BTreeMap<&'static str, PathBuf>,
) -> Result<Command> {
    let upgrade = upgrade_object(old.major, new.major)?;
    let cluster = cluster_object(old.major)?;
    let job = jobs::desired_job(&upgrade, &cluster, "db-1", kind, "unused:{major}");
    let mut env = jobs::container_env(&job);
    env.insert("TUSK_OLD_BINDIR".into(), old.bin_dir.display().to_string());
    env.insert("TUSK_NEW_BINDIR".into(), new.bin_dir.display().to_string());
    for (name, path) in paths {
        env.insert((*name).to_owned(), path.display().to_string());
    }
    if let Some(step) = step {
        env.insert("TUSK_STEP".into(), step.to_owned());
    }
    let command = jobs::container_command(&job);
    let mut process = command_as(Path::new(&command[0]), new.run_as.as_ref());
    process
        .args(&command[1..])
        .env_clear()
        .envs(env)
        .env("PATH", format!("{}:/usr/bin:/bin", new.bin_dir.display()));
    Ok(process)
}

async fn run_checked(command: Command, what: &str) -> Result<()> {
    let output = tokio::process::Command::from(command)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn one_size(old: &PostgresBinaries, new: &PostgresBinaries, bytes: u64) -> Result<Measured> {
    let mut server = PostgresServer::start(
        old,
        PostgresOptions::default()
            .with_preload("pg_stat_statements")
            .with_initdb_arg("--data-checksums")
            .with_config("max_wal_size = 4GB")
            .with_config("checkpoint_timeout = 30min"),
    )
    .await?;
    // ~120 bytes per row with its primary key entry.
    let rows = bytes / 120;
    server
        .psql(
            "postgres",
            &format!(
                "CREATE EXTENSION pgcrypto; CREATE EXTENSION pg_stat_statements;
                 CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL);
                 INSERT INTO events SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;
                 CHECKPOINT;"
            ),
        )
        .await?;
    let client = server.connect().await?;
    let size: i64 = client
        .query_one("SELECT pg_database_size('postgres')", &[])
        .await?
        .get(0);
    drop(client);
    // The harness runs with fsync = off; a production server's data is on disk by now.
    // Without this the upgrade's sync would flush the load's dirty pages and be timed.
    let synced = Command::new("sync").status().context("running sync")?;
    if !synced.success() {
        bail!("sync failed");
    }

    let root = server
        .data_dir()
        .parent()
        .context("data directory has a parent")?
        .to_owned();
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    if let Some(run_as) = &new.run_as {
        run_as.chown(&work)?;
    }
    let paths: BTreeMap<&'static str, PathBuf> = BTreeMap::from([
        ("TUSK_OLD_DATADIR", server.data_dir().to_owned()),
        ("TUSK_NEW_DATADIR", root.join(format!("pg{}", new.major))),
        ("TUSK_WORK_DIR", work.clone()),
        ("TUSK_TERMINATION_LOG", root.join("termination-log")),
    ]);

    // Before the downtime: the new data directory.
    run_checked(
        job_command(JobKind::Upgrade, Some("prepare"), old, new, &paths)?,
        "prepare",
    )
    .await?;

    let start = Instant::now();
    server.stop().await?;
    let stopped = start.elapsed();
    run_checked(
        job_command(JobKind::Upgrade, None, old, new, &paths)?,
        "upgrade",
    )
    .await?;
    let upgraded_at = start.elapsed();
    let port = free_port()?;
    let upgraded = start_new(new, &paths["TUSK_NEW_DATADIR"], &work, port)?;
    let client = loop {
        match connect(&work, port).await {
            Ok(client) => break client,
            Err(_) if start.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(error),
        }
    };
    client
        .execute(
            "INSERT INTO events VALUES ((SELECT max(id) + 1 FROM events), 'after the upgrade')",
            &[],
        )
        .await?;
    let downtime = start.elapsed();
    drop(client);
    println!(
        "phases_{}m: stop={:.2}s upgrade_command={:.2}s start_and_first_write={:.2}s",
        bytes / MIB,
        stopped.as_secs_f64(),
        (upgraded_at - stopped).as_secs_f64(),
        (downtime - upgraded_at).as_secs_f64()
    );

    // After the downtime: the post-upgrade Job's command.
    let statistics_start = Instant::now();
    let mut post = job_command(JobKind::PostUpgrade, None, old, new, &paths)?;
    post.env("PGHOST", &work)
        .env("PGPORT", port.to_string())
        .env("PGSSLMODE", "disable")
        .env_remove("PGSSLROOTCERT");
    run_checked(post, "post-upgrade").await?;
    let statistics = statistics_start.elapsed();

    let _ = upgraded.signal_group(Signal::INT);
    let _ = upgraded.wait_timeout_async(Duration::from_secs(30)).await;
    Ok(Measured {
        size: u64::try_from(size).unwrap_or(0),
        downtime,
        statistics,
    })
}

fn start_new(
    binaries: &PostgresBinaries,
    data: &Path,
    socket_dir: &Path,
    port: u16,
) -> Result<ChildProcess> {
    let log = std::fs::File::create(socket_dir.join("new.log"))?;
    let mut command = daemon_command_as(&binaries.bin("postgres"), binaries.run_as.as_ref());
    command
        .arg("-D")
        .arg(data)
        .args(["-c", "listen_addresses=", "-p", &port.to_string()])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        .args(["-c", "shared_preload_libraries=pg_stat_statements"])
        .stdout(log.try_clone()?)
        .stderr(log);
    ChildProcess::spawn("upgraded PostgreSQL", command)
}

async fn connect(socket_dir: &Path, port: u16) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

//! The check and upgrade Jobs' real command, run on real PostgreSQL data directories.
//!
//! Each test builds the Job the controller would create (`jobs::desired_job`), takes its
//! command and environment, substitutes the local paths (binaries, data directories, scratch
//! directory, termination log) for the image's and the volume's, and runs it as the
//! unprivileged user against a cluster of the old major holding pgcrypto, pg_stat_statements
//! and data whose row checksums are compared before and after. The post-upgrade Job's command
//! then runs against the upgraded server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tusk_api::{Cluster, PGUpgrade};
use tusk_testkit::{
    ChildProcess, PostgresBinaries, PostgresOptions, PostgresServer, Signal, command_as,
    daemon_command_as, free_port, require,
};
use tusk_upgrade_controller::jobs::{self, JobKind};

const DATABASES: [&str; 2] = ["postgres", "app"];

fn upgrade(from: u32, to: u32, method: &str) -> PGUpgrade {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {{name: up, namespace: db, uid: up-uid}}
spec:
  cluster: {{name: db}}
  fromPostgresVersion: {from}
  toPostgresVersion: {to}
  transferMethod: {method}
"
    ))
    .unwrap()
}

fn cluster(from: u32) -> Cluster {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db}}
spec: {{postgresVersion: {from}, storage: {{size: 1Gi}}}}
"
    ))
    .unwrap()
}

/// Local stand-ins for the Job's paths.
struct Paths {
    old_bin: PathBuf,
    new_bin: PathBuf,
    old_data: PathBuf,
    new_data: PathBuf,
    work: PathBuf,
    termination_log: PathBuf,
}

/// The Job's command for `kind` with the local paths; runs as the unprivileged user.
fn job_command(
    upgrade: &PGUpgrade,
    cluster: &Cluster,
    kind: JobKind,
    paths: &Paths,
    binaries: &PostgresBinaries,
) -> Command {
    let job = jobs::desired_job(upgrade, cluster, "db-1", kind, "unused:{major}");
    let mut env = jobs::container_env(&job);
    let substitutes: BTreeMap<&str, &Path> = BTreeMap::from([
        ("TUSK_OLD_BINDIR", paths.old_bin.as_path()),
        ("TUSK_NEW_BINDIR", paths.new_bin.as_path()),
        ("TUSK_OLD_DATADIR", paths.old_data.as_path()),
        ("TUSK_NEW_DATADIR", paths.new_data.as_path()),
        ("TUSK_WORK_DIR", paths.work.as_path()),
        ("TUSK_TERMINATION_LOG", paths.termination_log.as_path()),
    ]);
    for (name, path) in substitutes {
        let value = env.get_mut(name).expect("the Job sets every path");
        *value = path.display().to_string();
    }
    let command = jobs::container_command(&job);
    let mut process = command_as(Path::new(&command[0]), binaries.run_as.as_ref());
    process
        .args(&command[1..])
        .env_clear()
        .envs(env)
        .env("PATH", format!("{}:/usr/bin:/bin", paths.new_bin.display()));
    process
}

async fn run(mut command: Command) -> (bool, String) {
    command.stdin(std::process::Stdio::null());
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .expect("sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The old cluster: checksums on, pg_stat_statements preloaded, two databases with
/// extensions and data.
async fn old_cluster(old: &PostgresBinaries) -> Result<PostgresServer> {
    let server = PostgresServer::start(
        old,
        PostgresOptions::default()
            .with_preload("pg_stat_statements")
            .with_initdb_arg("--data-checksums"),
    )
    .await?;
    server.psql("postgres", "CREATE DATABASE app").await?;
    for db in DATABASES {
        server
            .psql(
                db,
                "CREATE EXTENSION pgcrypto;
                 CREATE EXTENSION pg_stat_statements;
                 CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL, digest bytea, seen timestamptz);
                 INSERT INTO items SELECT g, md5(g::text), digest(g::text, 'sha256'),
                        '2026-01-01'::timestamptz + g * interval '1 minute'
                   FROM generate_series(1, 20000) g;
                 CREATE INDEX items_payload ON items (payload);
                 CREATE VIEW recent AS SELECT id FROM items WHERE seen > '2026-01-10';",
            )
            .await?;
    }
    Ok(server)
}

const CHECKSUM: &str = "SELECT md5(string_agg(format('%s|%s|%s|%s', id, payload, encode(digest, 'hex'), seen), ',' ORDER BY id)) || ':' || count(*) FROM items";

async fn checksums(
    connect: impl AsyncFn(&str) -> Result<tokio_postgres::Client>,
) -> Result<Vec<String>> {
    let mut sums = Vec::new();
    for db in DATABASES {
        let client = connect(db).await?;
        let row = client.query_one(CHECKSUM, &[]).await?;
        sums.push(row.get::<_, String>(0));
    }
    Ok(sums)
}

/// The upgraded server, started on its new data directory with the scripts' result as is.
struct NewServer {
    process: ChildProcess,
    socket_dir: PathBuf,
    port: u16,
}

impl NewServer {
    async fn start(binaries: &PostgresBinaries, data: &Path, socket_dir: &Path) -> Result<Self> {
        let port = free_port()?;
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
        let process = ChildProcess::spawn("upgraded PostgreSQL", command)?;
        let server = Self {
            process,
            socket_dir: socket_dir.to_owned(),
            port,
        };
        for _ in 0..300 {
            if server.connect("postgres").await.is_ok() {
                return Ok(server);
            }
            if server.process.exit_status().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(socket_dir.join("new.log")).unwrap_or_default();
        bail!("the upgraded server did not start:\n{log}")
    }

    async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for NewServer {
    fn drop(&mut self) {
        let _ = self.process.signal_group(Signal::INT);
        let _ = self.process.wait_timeout(Duration::from_secs(20));
    }
}

/// A scratch directory the unprivileged user owns, beside the old cluster.
fn scratch(server: &PostgresServer, name: &str) -> PathBuf {
    let dir = server.data_dir().parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(run_as) = &server.binaries().run_as {
        run_as.chown(&dir).unwrap();
    }
    dir
}

async fn upgrade_round_trip(from: u32, to: u32, method: &str) -> Result<()> {
    let (Some(old), Some(new)) = (
        require(tusk_testkit::postgres(from)),
        require(tusk_testkit::postgres(to)),
    ) else {
        return Ok(());
    };
    let mut server = old_cluster(&old).await?;
    let before = checksums(async |db| server.connect_db(db).await).await?;
    server.stop().await?;

    let root = server.data_dir().parent().unwrap().to_owned();
    let paths = Paths {
        old_bin: old.bin_dir.clone(),
        new_bin: new.bin_dir.clone(),
        old_data: server.data_dir().to_owned(),
        new_data: root.join(format!("pg{to}")),
        work: scratch(&server, "work"),
        termination_log: root.join("termination-log"),
    };
    let (upgrade, cluster) = (upgrade(from, to, method), cluster(from));

    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Check,
        &paths,
        &new,
    ))
    .await;
    assert!(ok, "check failed:\n{output}");
    assert!(output.contains("Clusters are compatible"), "{output}");
    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Upgrade,
        &paths,
        &new,
    ))
    .await;
    assert!(ok, "upgrade failed:\n{output}");
    assert!(
        output.contains("reusing"),
        "the check's initdb is reused: {output}"
    );
    let report = std::fs::read_to_string(&paths.termination_log)?;
    let system = jobs::reported_system_identifier(&report).context("no system identifier")?;
    assert!(system.len() >= 15, "{report}");
    // Link mode disables the old cluster (pg_control.old); copy mode leaves it as it was.
    let old_control = paths.old_data.join("global/pg_control");
    assert_eq!(old_control.exists(), method != "Link", "{method}");

    let sockets = scratch(&server, "sockets");
    let upgraded = NewServer::start(&new, &paths.new_data, &sockets).await?;
    let after = checksums(async |db| upgraded.connect(db).await).await?;
    assert_eq!(
        before, after,
        "row checksums differ after {from} → {to} {method}"
    );
    let client = upgraded.connect("app").await?;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await?
        .get(0);
    assert!(version.starts_with(&to.to_string()), "{version}");
    let checksums_on: String = client.query_one("SHOW data_checksums", &[]).await?.get(0);
    assert_eq!(checksums_on, "on", "page checksums follow the old cluster");
    client
        .query_one("SELECT encode(digest('x', 'sha256'), 'hex')", &[])
        .await?;
    client
        .query_one("SELECT count(*) FROM pg_stat_statements", &[])
        .await?;

    // The post-upgrade Job's command against the new server.
    let job = jobs::desired_job(
        &upgrade,
        &cluster,
        "db-1",
        JobKind::PostUpgrade,
        "unused:{major}",
    );
    let mut env = jobs::container_env(&job);
    env.insert("PGHOST".into(), sockets.display().to_string());
    env.insert("PGPORT".into(), upgraded.port.to_string());
    env.insert("PGSSLMODE".into(), "disable".into());
    env.remove("PGSSLROOTCERT");
    let command = jobs::container_command(&job);
    let mut post = command_as(Path::new(&command[0]), new.run_as.as_ref());
    post.args(&command[1..])
        .env_clear()
        .envs(env)
        .env("PATH", format!("{}:/usr/bin:/bin", new.bin_dir.display()));
    let (ok, output) = run(post).await;
    assert!(ok, "post-upgrade failed:\n{output}");
    for db in DATABASES {
        let client = upgraded.connect(db).await?;
        let stale: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname WHERE a.default_version <> e.extversion",
                &[],
            )
            .await?
            .get(0);
        assert_eq!(stale, 0, "extensions of {db} updated");
        let analyzed: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'items'",
                &[],
            )
            .await?
            .get(0);
        assert!(analyzed > 0, "statistics rebuilt in {db}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_15_to_16_with_links_keeps_every_row() -> Result<()> {
    upgrade_round_trip(15, 16, "Link").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_16_to_17_with_copies_keeps_every_row() -> Result<()> {
    upgrade_round_trip(16, 17, "Copy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_17_to_18_with_links_keeps_every_row() -> Result<()> {
    upgrade_round_trip(17, 18, "Link").await
}

/// A column of a reg* type pg_upgrade cannot carry makes `pg_upgrade --check` fail: the Job reports
/// pg_upgrade's own explanation, removes the new data directory, and the old cluster starts
/// again with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_check_reports_why_and_leaves_the_old_cluster_startable() -> Result<()> {
    let (Some(old), Some(new)) = (
        require(tusk_testkit::postgres(16)),
        require(tusk_testkit::postgres(17)),
    ) else {
        return Ok(());
    };
    let mut server = old_cluster(&old).await?;
    server
        .psql(
            "app",
            "CREATE TABLE blocker (p regproc); INSERT INTO blocker VALUES ('now');",
        )
        .await?;
    let before = checksums(async |db| server.connect_db(db).await).await?;
    server.stop().await?;
    let root = server.data_dir().parent().unwrap().to_owned();
    let paths = Paths {
        old_bin: old.bin_dir.clone(),
        new_bin: new.bin_dir.clone(),
        old_data: server.data_dir().to_owned(),
        new_data: root.join("pg17"),
        work: scratch(&server, "work"),
        termination_log: root.join("termination-log"),
    };
    let (upgrade, cluster) = (upgrade(16, 17, "Link"), cluster(16));
    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Check,
        &paths,
        &new,
    ))
    .await;
    assert!(!ok, "the check must fail:\n{output}");
    let report = std::fs::read_to_string(&paths.termination_log)?;
    assert!(report.contains("pg_upgrade --check failed"), "{report}");
    assert!(report.contains("blocker"), "the problem is named: {report}");
    assert!(report.len() < 4096, "fits a termination message");
    assert!(
        !paths.new_data.exists(),
        "the new data directory is removed"
    );
    assert!(paths.old_data.join("global/pg_control").exists());

    server.restart().await?;
    let after = checksums(async |db| server.connect_db(db).await).await?;
    assert_eq!(before, after);
    Ok(())
}

/// A link-mode upgrade Job killed after pg_upgrade disabled the old cluster (here: one that
/// finished, the latest point before the new server could start) leaves
/// `global/pg_control.old` and the new directory; the restore Job's command puts the old
/// cluster back, and it starts with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_job_puts_back_the_old_cluster_after_a_link_upgrade() -> Result<()> {
    let (Some(old), Some(new)) = (
        require(tusk_testkit::postgres(16)),
        require(tusk_testkit::postgres(17)),
    ) else {
        return Ok(());
    };
    let mut server = old_cluster(&old).await?;
    let before = checksums(async |db| server.connect_db(db).await).await?;
    server.stop().await?;
    let root = server.data_dir().parent().unwrap().to_owned();
    let paths = Paths {
        old_bin: old.bin_dir.clone(),
        new_bin: new.bin_dir.clone(),
        old_data: server.data_dir().to_owned(),
        new_data: root.join("pg17"),
        work: scratch(&server, "work"),
        termination_log: root.join("termination-log"),
    };
    let (upgrade, cluster) = (upgrade(16, 17, "Link"), cluster(16));
    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Upgrade,
        &paths,
        &new,
    ))
    .await;
    assert!(ok, "{output}");
    assert!(!paths.old_data.join("global/pg_control").exists());
    assert!(paths.old_data.join("global/pg_control.old").exists());

    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Restore,
        &paths,
        &new,
    ))
    .await;
    assert!(ok, "restore failed:\n{output}");
    assert!(paths.old_data.join("global/pg_control").exists());
    assert!(
        !paths.new_data.exists(),
        "the new data directory is removed"
    );
    // Running it again changes nothing (the controller may repeat it after a restart).
    let (ok, output) = run(job_command(
        &upgrade,
        &cluster,
        JobKind::Restore,
        &paths,
        &new,
    ))
    .await;
    assert!(ok, "{output}");

    server.restart().await?;
    let after = checksums(async |db| server.connect_db(db).await).await?;
    assert_eq!(before, after);
    Ok(())
}

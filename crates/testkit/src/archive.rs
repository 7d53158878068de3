//! Scaffolding of the real backup and restore tests: a server archiving through pgBackRest,
//! pgBackRest commands run as the PostgreSQL user, waiting for WAL to reach the archive, and
//! a restored server stopped however the test ends.
//!
//! ```text
//!  PostgresOptions::default().with_config(archive_command(&pgbackrest, &conf))
//!  PgBackRestBinary::run(run_as, &conf, &["stanza-create"]) … (&["--type=full", "backup"])
//!  commits_around_a_target(&client): row 1 ── target ── row 2 ── switch_wal_and_wait_archived
//!  restore into a data dir ── StopOnDrop::new(&pg, data) ── pg_ctl start / Patroni
//! ```
//!
//! Files pgBackRest and PostgreSQL read are private to the user they run as
//! ([`private_dir`], [`private_file`]). The stanza is always `db`, the Cluster's name in
//! these tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;

use crate::discovery::{PgBackRestBinary, PostgresBinaries};
use crate::process::{RunAs, command_as, run_checked};

/// The stanza the tests' pgBackRest configurations name.
pub const STANZA: &str = "db";

/// How long [`switch_wal_and_wait_archived`] waits.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `postgresql.conf` line that archives each WAL segment with `pgbackrest` and the
/// configuration in `config` (`archive_mode = on` goes with it).
pub fn archive_command(pgbackrest: &Path, config: &Path) -> String {
    format!(
        "archive_command = '{} --config={} --stanza={STANZA} archive-push \"%p\"'",
        pgbackrest.display(),
        config.display()
    )
}

impl PgBackRestBinary {
    /// Runs `pgbackrest --config=<config> --stanza=db <args>` as `run_as` and returns its
    /// output; fails with its output when it exits non-zero.
    pub async fn run(
        &self,
        run_as: Option<&RunAs>,
        config: &Path,
        args: &[&str],
    ) -> Result<String> {
        let mut command = command_as(&self.pgbackrest, run_as);
        command
            .arg(format!("--config={}", config.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args);
        run_checked(command, &format!("pgbackrest {}", args.join(" "))).await
    }
}

/// The server's clock `later_by` (an interval such as `0 seconds` or `1 hour`) from now, in
/// UTC, in the form `spec.bootstrap.restore.target.time` takes.
pub async fn recovery_target_time(client: &Client, later_by: &str) -> Result<String> {
    let row = client
        .query_one(
            "SELECT to_char((clock_timestamp() + $1::text::interval) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[&later_by],
        )
        .await
        .context("reading the server's clock")?;
    Ok(row.get(0))
}

/// The history a point-in-time restore is tested on: a table `t` with row 1, a target time,
/// row 2 — each commit a good half second from the target, the first over a second after
/// whatever ran before (a backup just taken) — all of it archived. Returns the target: a
/// restore to it holds exactly row 1.
pub async fn commits_around_a_target(client: &Client) -> Result<String> {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .context("the first commit")?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let target = recovery_target_time(client, "0 seconds").await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .context("the second commit")?;
    switch_wal_and_wait_archived(client).await?;
    Ok(target)
}

/// Ends the current WAL segment and waits until the archiver has pushed it; returns its name.
pub async fn switch_wal_and_wait_archived(client: &Client) -> Result<String> {
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .context("switching WAL")?
        .get(0);
    let deadline = Instant::now() + ARCHIVE_TIMEOUT;
    loop {
        let archived: Option<String> = client
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .context("reading pg_stat_archiver")?
            .get(0);
        if archived.as_deref() >= Some(segment.as_str()) {
            return Ok(segment);
        }
        if Instant::now() >= deadline {
            bail!("segment {segment} was not archived within {ARCHIVE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `path` (and its parents), mode 0700, owned by `run_as`.
pub fn private_dir(path: &Path, run_as: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", path.display()))?;
    match run_as {
        Some(user) => user.chown(path),
        None => Ok(()),
    }
}

/// Writes `contents` to `path`, mode 0600, owned by `run_as`.
pub fn private_file(path: &Path, contents: impl AsRef<[u8]>, run_as: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    match run_as {
        Some(user) => user.chown(path),
        None => Ok(()),
    }
}

/// Stops the PostgreSQL of a data directory (`pg_ctl stop -m immediate`) when dropped, also
/// while a test panics: for a server that a restore or Patroni started, not the harness.
#[derive(Debug)]
pub struct StopOnDrop {
    pg_ctl: PathBuf,
    data_dir: PathBuf,
    run_as: Option<RunAs>,
}

impl StopOnDrop {
    /// Guards the server of `data_dir`, run by `binaries`' `pg_ctl` as their run-as user.
    pub fn new(binaries: &PostgresBinaries, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            pg_ctl: binaries.bin("pg_ctl"),
            data_dir: data_dir.into(),
            run_as: binaries.run_as.clone(),
        }
    }

    /// The guarded data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Nothing may run: the server may never have started, or have stopped already.
        let _ = command_as(&self.pg_ctl, self.run_as.as_ref())
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Connects with `config` (no TLS); the connection task runs on the current runtime.
pub async fn connect_with(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        // The connection ends with an error when the server stops under it: expected here.
        let _ = connection.await;
    });
    Ok(client)
}

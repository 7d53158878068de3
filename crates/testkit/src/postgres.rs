//! A throwaway PostgreSQL server: `initdb` into a temp dir, a free loopback port, gone on drop.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

use crate::discovery::PostgresBinaries;
use crate::process::{
    ChildProcess, daemon_command_as, free_port, last_lines, read_from, run_checked,
};

/// How often a start is retried when another process took the port first.
const PORT_ATTEMPTS: usize = 5;
/// How long a start or a stop may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the server log quoted in a start failure.
const LOG_TAIL_LINES: usize = 30;

/// What a test adds to the default server.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Lines appended to `postgresql.conf`, after the harness's own (so they win).
    pub config: Vec<String>,
    /// Lines for `pg_hba.conf`, placed before initdb's `trust` lines so they take effect
    /// (the first matching line decides).
    pub hba: Vec<String>,
    /// Libraries for `shared_preload_libraries`, e.g. `pg_stat_statements`.
    pub shared_preload_libraries: Vec<String>,
    /// Extra `initdb` arguments, e.g. `--data-checksums`.
    pub initdb_args: Vec<String>,
}

impl PostgresOptions {
    /// Adds a `postgresql.conf` line, e.g. `wal_level = logical`.
    pub fn with_config(mut self, line: impl Into<String>) -> Self {
        self.config.push(line.into());
        self
    }

    /// Adds a `pg_hba.conf` line, e.g. `host all app 127.0.0.1/32 scram-sha-256`.
    pub fn with_hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// Adds a library to `shared_preload_libraries`.
    pub fn with_preload(mut self, library: impl Into<String>) -> Self {
        self.shared_preload_libraries.push(library.into());
        self
    }

    /// Adds an `initdb` argument.
    pub fn with_initdb_arg(mut self, arg: impl Into<String>) -> Self {
        self.initdb_args.push(arg.into());
        self
    }
}

/// A PostgreSQL server of its own for one test.
///
/// Its cluster lives in a temp dir (`data/`, the unix socket, `postgres.log`) owned by the
/// unprivileged test user when the tests run as root. The superuser is `postgres`; every
/// local and loopback connection is trusted unless [`PostgresOptions::hba`] says otherwise.
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and removes the temp dir, also
/// when the test panics.
#[derive(Debug)]
pub struct PostgresServer {
    binaries: PostgresBinaries,
    port: u16,
    data_dir: PathBuf,
    log_file: PathBuf,
    process: Option<ChildProcess>,
    dir: TempDir,
}

impl PostgresServer {
    /// Creates a cluster with `initdb` and starts it on a free port of 127.0.0.1.
    pub async fn start(binaries: &PostgresBinaries, options: PostgresOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-pg-")
            .tempdir()
            .context("creating a temp dir for PostgreSQL")?;
        if let Some(run_as) = &binaries.run_as {
            run_as.chown(dir.path())?;
        }
        let data_dir = dir.path().join("data");
        let mut initdb = binaries.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(&data_dir)
            .args([
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
            ])
            .args(&options.initdb_args)
            .env("HOME", dir.path());
        run_checked(
            initdb,
            &format!("initdb of PostgreSQL {}", binaries.version),
        )
        .await?;

        let config_path = data_dir.join("postgresql.conf");
        let initdb_config = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        if !options.hba.is_empty() {
            let hba_path = data_dir.join("pg_hba.conf");
            let initdb_hba = std::fs::read_to_string(&hba_path)
                .with_context(|| format!("reading {}", hba_path.display()))?;
            std::fs::write(&hba_path, hba_with(&options.hba, &initdb_hba))
                .with_context(|| format!("writing {}", hba_path.display()))?;
        }

        let mut server = Self {
            binaries: binaries.clone(),
            port: 0,
            log_file: dir.path().join("postgres.log"),
            data_dir,
            process: None,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port()?;
            let config = format!(
                "{initdb_config}\n{}",
                harness_config(server.port, server.dir.path(), &options)
            );
            std::fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(failure) if failure.port_taken && attempt < PORT_ATTEMPTS => continue,
                Err(failure) => return Err(failure.error),
            }
        }
        bail!("PostgreSQL found no free port in {PORT_ATTEMPTS} attempts")
    }

    /// Starts `postgres` on the configured port and waits until it accepts connections.
    async fn spawn(&mut self) -> Result<(), StartFailure> {
        let log_start = std::fs::metadata(&self.log_file).map_or(0, |meta| meta.len());
        let mut process = self.spawn_process().map_err(StartFailure::other)?;
        let ready = self.wait_ready(&process).await;
        if let Err(error) = ready {
            process.kill();
            let log = read_from(&self.log_file, log_start);
            return Err(StartFailure {
                port_taken: log.contains("Address already in use"),
                error: error.context(format!(
                    "PostgreSQL {} did not start on port {}; server log {}:\n{}",
                    self.binaries.version,
                    self.port,
                    self.log_file.display(),
                    last_lines(&log, LOG_TAIL_LINES)
                )),
            });
        }
        self.process = Some(process);
        Ok(())
    }

    fn spawn_process(&self) -> Result<ChildProcess> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("opening {}", self.log_file.display()))?;
        if let Some(run_as) = &self.binaries.run_as {
            run_as.chown(&self.log_file)?;
        }
        let mut command = daemon_command_as(
            &self.binaries.bin("postgres"),
            self.binaries.run_as.as_ref(),
        );
        command
            .arg("-D")
            .arg(&self.data_dir)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        ChildProcess::spawn(format!("PostgreSQL {}", self.binaries.version), command)
    }

    /// Waits for `postmaster.pid` to report this process ready, as `pg_ctl -w` does.
    async fn wait_ready(&self, process: &ChildProcess) -> Result<()> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let deadline = tokio::time::Instant::now() + SERVER_TIMEOUT;
        loop {
            if let Some(status) = process.exit_status() {
                bail!("postgres exited with {status}");
            }
            if let Ok(contents) = std::fs::read_to_string(&pid_file)
                && postmaster_is_ready(&contents, process.pid())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("postgres was not ready after {SERVER_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's TCP port on [`Self::host`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the binary set the server runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.binaries.bin_dir
    }

    /// The binary set the server runs from.
    pub fn binaries(&self) -> &PostgresBinaries {
        &self.binaries
    }

    /// The server log (its stderr), kept across restarts.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server log so far.
    pub fn read_log(&self) -> Result<String> {
        std::fs::read_to_string(&self.log_file)
            .with_context(|| format!("reading {}", self.log_file.display()))
    }

    /// The postmaster's process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.process
            .as_ref()
            .filter(|process| process.exit_status().is_none())
            .map(ChildProcess::pid)
    }

    /// A libpq connection string for `db` as the superuser, for tools such as `psql`.
    pub fn connection_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname='{}'",
            self.host(),
            self.port,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// A client configuration for `db` as the superuser.
    pub fn config(&self, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.host())
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects to database `postgres` as the superuser.
    pub async fn connect(&self) -> Result<Client> {
        self.connect_db("postgres").await
    }

    /// Connects to `db` as the superuser; the connection task runs on the current runtime.
    pub async fn connect_db(&self, db: &str) -> Result<Client> {
        let (client, connection) = self
            .config(db)
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL on port {}", self.port))?;
        tokio::spawn(async move {
            // The connection ends with an error when the server stops under it: expected here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs `sql` through `psql` (unaligned, tuples only) and returns its output.
    pub async fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut psql = self.binaries.command("psql");
        psql.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.connection_string(db))
            .env("HOME", self.dir.path());
        run_checked(psql, "psql").await
    }

    /// Appends lines to `postgresql.conf`; [`Self::reload`] or [`Self::restart`] applies them.
    pub fn append_config(&self, lines: &[&str]) -> Result<()> {
        use std::io::Write;
        let path = self.data_dir.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        for line in lines {
            writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Stops the server (fast shutdown) and waits for it to exit; the cluster stays.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        let stopped = run_checked(self.pg_ctl(&["stop", "-m", "fast", "-w"]), "pg_ctl stop").await;
        let exited = process.wait_timeout_async(SERVER_TIMEOUT).await;
        process.kill();
        stopped?;
        if exited.is_none() {
            bail!("PostgreSQL did not exit after pg_ctl stop; killed it");
        }
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await.map_err(|failure| failure.error)
    }

    /// Makes the running server re-read its configuration files (`pg_ctl reload`).
    pub async fn reload(&self) -> Result<()> {
        if self.pid().is_none() {
            bail!("PostgreSQL is not running");
        }
        run_checked(self.pg_ctl(&["reload"]), "pg_ctl reload").await?;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut pg_ctl = self.binaries.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data_dir)
            .args(args)
            .args(["-t", &SERVER_TIMEOUT.as_secs().to_string()])
            .env("HOME", self.dir.path());
        pg_ctl
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        if process.exit_status().is_none() {
            let mut pg_ctl = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
            pg_ctl
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Killing the process group below covers a pg_ctl that fails.
            let _ = pg_ctl.status();
            let _ = process.wait_timeout(Duration::from_secs(10));
        }
        process.kill();
    }
}

/// Why a start failed, and whether another try on another port may help.
#[derive(Debug)]
struct StartFailure {
    port_taken: bool,
    error: anyhow::Error,
}

impl StartFailure {
    fn other(error: anyhow::Error) -> Self {
        Self {
            port_taken: false,
            error,
        }
    }
}

/// The harness's `postgresql.conf` lines: loopback only, a socket in the temp dir, no fsync
/// (a throwaway cluster need not survive a power cut), then the test's own lines.
fn harness_config(port: u16, socket_dir: &Path, options: &PostgresOptions) -> String {
    let mut lines = vec![
        "# Added by tusk-testkit.".to_owned(),
        "listen_addresses = '127.0.0.1'".to_owned(),
        format!("port = {port}"),
        format!(
            "unix_socket_directories = {}",
            quote_config_value(&socket_dir.to_string_lossy())
        ),
        "fsync = off".to_owned(),
        "logging_collector = off".to_owned(),
        "log_line_prefix = '%m [%p] %q%u@%d '".to_owned(),
    ];
    if !options.shared_preload_libraries.is_empty() {
        lines.push(format!(
            "shared_preload_libraries = {}",
            quote_config_value(&options.shared_preload_libraries.join(","))
        ));
    }
    lines.extend(options.config.iter().cloned());
    lines.join("\n") + "\n"
}

fn hba_with(extra: &[String], initdb_hba: &str) -> String {
    format!(
        "# Added by tusk-testkit.\n{}\n\n{initdb_hba}",
        extra.join("\n")
    )
}

fn quote_config_value(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether `postmaster.pid` names `pid` and says the server accepts connections (its eighth
/// line, the status, is `ready` then).
fn postmaster_is_ready(contents: &str, pid: u32) -> bool {
    let lines: Vec<&str> = contents.lines().collect();
    lines.first().map(|line| line.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|line| line.trim()) == Some("ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_config_listens_on_loopback_and_puts_test_lines_last() {
        let options = PostgresOptions::default()
            .with_preload("pg_stat_statements")
            .with_preload("auto_explain")
            .with_config("fsync = on");
        let config = harness_config(5555, Path::new("/tmp/it's"), &options);
        assert!(config.contains("listen_addresses = '127.0.0.1'\n"));
        assert!(config.contains("port = 5555\n"));
        assert!(config.contains("unix_socket_directories = '/tmp/it''s'\n"));
        assert!(config.contains("shared_preload_libraries = 'pg_stat_statements,auto_explain'\n"));
        assert!(config.ends_with("fsync = off\nlogging_collector = off\nlog_line_prefix = '%m [%p] %q%u@%d '\nshared_preload_libraries = 'pg_stat_statements,auto_explain'\nfsync = on\n"));
    }

    #[test]
    fn extra_hba_lines_come_before_initdbs_trust_lines() {
        let hba = hba_with(
            &["host all app 127.0.0.1/32 scram-sha-256".to_owned()],
            "local all all trust\n",
        );
        let app = hba.find("scram-sha-256");
        let trust = hba.find("trust");
        assert!(app.is_some() && app < trust, "{hba}");
    }

    #[test]
    fn postmaster_pid_file_says_when_the_server_is_ready() {
        let ready = "4242\n/tmp/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  1234   5678\nready   \n";
        assert!(postmaster_is_ready(ready, 4242));
        assert!(!postmaster_is_ready(ready, 4243));
        let starting = ready.replace("ready   ", "starting");
        assert!(!postmaster_is_ready(&starting, 4242));
        assert!(!postmaster_is_ready("4242\n/tmp/data\n", 4242));
    }
}

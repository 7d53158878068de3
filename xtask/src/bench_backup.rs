//! `cargo xtask bench backup`: a pgBackRest full backup and restore of a ~1 GiB pgbench
//! database with the settings tusk-pgbackrest renders, against `tar | zstd -1 -T0` of the same
//! data directory in the same run.
//!
//! ```text
//!  PostgreSQL (testkit) ◄─TLS─ instance `pgbackrest server` ◄─ "backup Job" (job settings)
//!       │ archive_command (instance settings)                     │ repo1: a local volume
//!       └──────────────► repository host `pgbackrest server` ◄────┘ (shared directory)
//!  baseline: tar -cf - <data dir> | zstd -1 -T0 > file   (and again without pg_wal)
//! ```
//!
//! The backup runs as a backup Job runs in the pod layout: PostgreSQL's files are read by the
//! instance's pgBackRest server and streamed over mutual TLS; the restore runs with the
//! instance settings, as a restoring instance does. The baseline tars the whole data
//! directory, as the issue defines it (`backup_vs_tar_zstd=`); pgBackRest leaves pg_wal out,
//! so the tar without pg_wal is timed too (`backup_vs_tar_zstd_without_wal=`), the stricter
//! comparison of the same bytes.
//!
//! Each round times the baseline and every variant in turn (so load from other work falls
//! on all alike); figures are medians over [`ROUNDS`]. Prints `backup_seconds=`,
//! `restore_seconds=`, `tar_zstd_seconds=`, `backup_vs_tar_zstd=` (tar time / backup time;
//! goal ≥ 0.7) and the settings used
//! (`process_max=`, `compress_type=`, `compress_level=`), then the same backup with other
//! settings (`variant=` lines) — the measurements behind the defaults. `TUSK_BENCH_LOG=1`
//! also prints pgBackRest's log of every backup (where the time goes: checkpoint, copy, stop,
//! archive check, expire).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tusk_api::Cluster;
use tusk_pgbackrest::{Layout, Settings};
use tusk_testkit::{
    ChildProcess, PostgresOptions, PostgresServer, RunAs, command_as, daemon_command_as, free_port,
    run_checked,
};

/// pgbench scale: 70 ≈ 1.05 GiB of tables and indexes.
const SCALE: u32 = 70;

/// Rounds of measurements; each figure is the median over them.
const ROUNDS: usize = 3;

/// Runs the benchmark against PostgreSQL `major`.
pub(crate) fn run(major: u32) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(bench(major))
}

/// A Cluster with one volume repository and the given backup overrides.
fn cluster(major: u32, backup_extra: &str) -> Result<Cluster> {
    let yaml = format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: bench, namespace: bench}}
spec:
  postgresVersion: {major}
  storage: {{size: 10Gi}}
  backup:
    repositories:
    - name: repo1
      volume: {{size: 10Gi}}
      retention: {{full: 1}}
{backup_extra}"
    );
    serde_yaml_ng::from_str(&yaml).context("the benchmark's Cluster")
}

struct Rig {
    pg: PostgresServer,
    pgbackrest: PathBuf,
    run_as: Option<RunAs>,
    base: PathBuf,
    servers: Vec<ChildProcess>,
    instance_port: u16,
    repo_host_port: u16,
    _dir: tempfile::TempDir,
}

fn layout(rig_base: &Path, role: &str, instance_port: u16, repo_host_port: u16) -> Layout {
    let path = |rest: &str| rig_base.join(rest).to_string_lossy().into_owned();
    let mut layout = Layout::pod("bench");
    layout.tls_dir = path("tls");
    layout.secrets_dir = path("secrets");
    layout.tmp_dir = path(&format!("tmp-{role}"));
    layout.volume_root = path("volumes");
    layout.instance_port = instance_port;
    layout.repo_host_address = Some("localhost".to_owned());
    layout.repo_host_port = repo_host_port;
    layout.instance_config = path("conf/instance.conf");
    layout.repo_host_config = path("conf/repo-host.conf");
    layout
}

impl Rig {
    fn layout(&self, role: &str) -> Layout {
        let mut layout = layout(&self.base, role, self.instance_port, self.repo_host_port);
        layout.data_dir = Some(self.pg.data_dir().to_string_lossy().into_owned());
        layout.socket_dir = self.pg.socket_dir().to_string_lossy().into_owned();
        layout.pg_port = self.pg.port();
        layout
    }

    fn write(&self, name: &str, settings: &Settings) -> Result<PathBuf> {
        let path = self.base.join("conf").join(name);
        std::fs::write(&path, settings.to_ini())?;
        chown(&self.run_as, &path)?;
        Ok(path)
    }

    /// Renders and writes the three configurations for `cluster`; returns the job's and the
    /// instance's configuration files.
    fn configure(&self, cluster: &Cluster) -> Result<(PathBuf, PathBuf, Settings)> {
        let instance = tusk_pgbackrest::instance_settings_in(cluster, &self.layout("instance"))?;
        let repo_host = tusk_pgbackrest::repo_host_settings_in(cluster, &self.layout("repo-host"))?
            .context("a volume repository renders a repository host")?;
        let job =
            tusk_pgbackrest::backup_job_settings_in(cluster, "localhost", &self.layout("job"))?;
        let instance_conf = self.write("instance.conf", &instance)?;
        self.write("repo-host.conf", &repo_host)?;
        let job_conf = self.write("job.conf", &job)?;
        Ok((job_conf, instance_conf, job))
    }

    async fn pgbackrest(&self, conf: &Path, argv: &[String], extra: &[String]) -> Result<String> {
        let (command_name, options) = argv[1..].split_last().context("empty command")?;
        let mut command = command_as(&self.pgbackrest, self.run_as.as_ref());
        command
            .arg(format!("--config={}", conf.display()))
            .args(options)
            .args(extra)
            .arg(command_name);
        run_checked(command, &format!("pgbackrest {}", argv[1..].join(" "))).await
    }

    fn start_server(&mut self, conf: &str, port: u16) -> Result<()> {
        let mut command = daemon_command_as(&self.pgbackrest, self.run_as.as_ref());
        command
            .arg(format!(
                "--config={}",
                self.base.join("conf").join(conf).display()
            ))
            .args(&tusk_pgbackrest::server_command()[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.servers.push(ChildProcess::spawn(
            format!("pgbackrest server {conf}"),
            command,
        )?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("pgbackrest server ({conf}) did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}

/// The newest PostgreSQL major a pgBackRest release knows (`pgBackRest 2.45` → 15).
fn newest_supported_major(version_output: &str) -> u32 {
    let version = version_output.trim().trim_start_matches("pgBackRest ");
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|minor| minor.parse().ok())
        .unwrap_or(0);
    match minor {
        0..=45 => 15,
        46..=52 => 16,
        53..=54 => 17,
        _ => 18,
    }
}

async fn bench(major: u32) -> Result<()> {
    let pgbackrest = tusk_testkit::pgbackrest().map_err(|m| anyhow::anyhow!("{m}"))?;
    let mut version_command = command_as(&pgbackrest.pgbackrest, None);
    version_command.arg("version");
    let version = run_checked(version_command, "pgbackrest version").await?;
    let supported = newest_supported_major(&version);
    let major = if major > supported {
        eprintln!(
            "{} knows PostgreSQL up to {supported}: benchmarking {supported}",
            version.trim()
        );
        supported
    } else {
        major
    };
    let pg_binaries = tusk_testkit::postgres(major).map_err(|m| anyhow::anyhow!("{m}"))?;
    let run_as = pg_binaries.run_as.clone();
    let dir = tempfile::Builder::new()
        .prefix("tusk-bench-backup-")
        .tempdir()?;
    let base = dir.path().to_path_buf();
    for sub in [
        "",
        "tls",
        "secrets",
        "tmp-instance",
        "tmp-repo-host",
        "tmp-job",
        "volumes",
        "conf",
        "restore",
    ] {
        let path = base.join(sub);
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        chown(&run_as, &path)?;
    }
    certificates(&base.join("tls"), &run_as).await?;

    let instance_conf = base.join("conf/instance.conf");
    let archive_command = format!(
        "{} --config={} {}",
        pgbackrest.pgbackrest.display(),
        instance_conf.display(),
        tusk_pgbackrest::archive_command().trim_start_matches("pgbackrest ")
    );
    let options = PostgresOptions::default()
        .with_initdb_arg("--data-checksums")
        .with_config("wal_level = replica")
        .with_config("archive_mode = on")
        .with_config(format!("archive_command = '{archive_command}'"));
    eprintln!("starting PostgreSQL {major} and loading pgbench scale {SCALE} …");
    let pg = PostgresServer::start(&pg_binaries, options).await?;
    let mut rig = Rig {
        pg,
        pgbackrest: pgbackrest.pgbackrest.clone(),
        run_as,
        base: base.clone(),
        servers: Vec::new(),
        instance_port: free_port()?,
        repo_host_port: free_port()?,
        _dir: dir,
    };
    let defaults = cluster(major, "")?;
    let (job_conf, instance_conf, job) = rig.configure(&defaults)?;
    rig.start_server("instance.conf", rig.instance_port)?;
    rig.start_server("repo-host.conf", rig.repo_host_port)?;
    rig.pgbackrest(&job_conf, &tusk_pgbackrest::stanza_create_command(), &[])
        .await?;

    let load = Instant::now();
    let mut pgbench = rig.pg.binaries().command("pgbench");
    pgbench
        .args(["-i", "-q", "-s", &SCALE.to_string()])
        .arg(rig.pg.connection_string("postgres"));
    run_checked(pgbench, "pgbench -i").await?;
    rig.pg.psql("postgres", "CHECKPOINT").await?;
    let database_bytes: i64 = rig
        .pg
        .psql(
            "postgres",
            "SELECT sum(pg_database_size(oid)) FROM pg_database",
        )
        .await?
        .trim()
        .parse()
        .context("database size")?;
    eprintln!("loaded in {:.1} s", load.elapsed().as_secs_f64());

    // Every round times the baseline and each variant once, in turn, so that load from
    // other work on the machine falls on all of them alike; medians are reported.
    let zst1 = "    compression: {type: zst, level: 1}\n";
    let variants: Vec<(&str, String, Tweak)> = vec![
        ("default", String::new(), keep),
        ("zst1_p1", format!("    processMax: 1\n{zst1}"), keep),
        ("zst1_p4", format!("    processMax: 4\n{zst1}"), keep),
        (
            "zst3_p4",
            "    processMax: 4\n    compression: {type: zst, level: 3}\n".to_owned(),
            keep,
        ),
        (
            "lz4_p4",
            "    processMax: 4\n    compression: {type: lz4}\n".to_owned(),
            keep,
        ),
        (
            "zst-1_p4",
            "    processMax: 4\n    compression: {type: zst, level: -1}\n".to_owned(),
            keep,
        ),
        (
            "zst1_p4_unbundled",
            format!("    processMax: 4\n{zst1}"),
            unbundled,
        ),
        (
            "zst1_p4_local_no_tls",
            format!("    processMax: 4\n{zst1}"),
            local_postgres,
        ),
    ];
    let mut tar_runs = Vec::new();
    let mut tar_without_wal_runs = Vec::new();
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut sizes = vec![0_i64; variants.len()];
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS}");
        let baseline = base.join("baseline.tar.zst");
        tar_runs.push(tar_zstd(rig.pg.data_dir(), &baseline, false).await?);
        tar_without_wal_runs.push(tar_zstd(rig.pg.data_dir(), &baseline, true).await?);
        for (index, (_, extra, tweak)) in variants.iter().enumerate() {
            let cluster = cluster(major, extra)?;
            let (job_conf, _, mut job) = rig.configure(&cluster)?;
            tweak(&mut job, &rig);
            rig.write("job.conf", &job)?;
            let (seconds, bytes) = timed_backup(&rig, &job_conf).await?;
            runs[index].push(seconds);
            sizes[index] = bytes;
        }
    }
    // The last set is the last variant's: take one with the defaults for the restore.
    rig.configure(&defaults)?;
    timed_backup(&rig, &job_conf).await?;
    let restore_seconds = timed_restore(&rig, &instance_conf).await?;

    let tar_seconds = median(&mut tar_runs);
    let tar_without_wal_seconds = median(&mut tar_without_wal_runs);
    let wal_bytes = directory_bytes(&rig.pg.data_dir().join("pg_wal"));
    let backup_seconds = median(&mut runs[0]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = String::new();
    writeln!(out, "database_bytes={database_bytes}")?;
    writeln!(out, "cpus={cpus}")?;
    writeln!(out, "rounds={ROUNDS}")?;
    writeln!(out, "tar_zstd_seconds={tar_seconds:.2}")?;
    writeln!(out, "backup_seconds={backup_seconds:.2}")?;
    writeln!(out, "restore_seconds={restore_seconds:.2}")?;
    writeln!(
        out,
        "backup_vs_tar_zstd={:.2}",
        tar_seconds / backup_seconds
    )?;
    writeln!(out, "pg_wal_bytes={wal_bytes}")?;
    writeln!(
        out,
        "tar_zstd_without_wal_seconds={tar_without_wal_seconds:.2}"
    )?;
    writeln!(
        out,
        "backup_vs_tar_zstd_without_wal={:.2}",
        tar_without_wal_seconds / backup_seconds
    )?;
    writeln!(out, "repository_bytes={}", sizes[0])?;
    writeln!(
        out,
        "process_max={}",
        job.value("process-max").unwrap_or("1")
    )?;
    writeln!(
        out,
        "compress_type={}",
        job.value("compress-type").unwrap_or("gz")
    )?;
    writeln!(
        out,
        "compress_level={}",
        job.value("compress-level").unwrap_or("default")
    )?;
    writeln!(
        out,
        "repo_bundle={}",
        job.value("repo1-bundle").unwrap_or("n")
    )?;
    writeln!(out, "path=backup-job-over-tls")?;
    for (index, (name, _, _)) in variants.iter().enumerate().skip(1) {
        let seconds = median(&mut runs[index]);
        writeln!(
            out,
            "variant={name} backup_seconds={seconds:.2} backup_vs_tar_zstd={:.2} repository_bytes={}",
            tar_seconds / seconds,
            sizes[index]
        )?;
    }
    print!("{out}");
    Ok(())
}

/// Bytes of the regular files directly in `dir` (pg_wal holds no subdirectories of size).
fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A change to the rendered job settings that the Cluster spec cannot express.
type Tweak = fn(&mut Settings, &Rig);

fn keep(_: &mut Settings, _: &Rig) {}

fn unbundled(job: &mut Settings, _: &Rig) {
    job.set_global("repo1-bundle", tusk_pgbackrest::OptionValue::literal("n"));
}

/// For comparison only: the Job reading PostgreSQL's files itself, without the TLS hop.
fn local_postgres(job: &mut Settings, rig: &Rig) {
    job.stanza
        .retain(|option, _| !option.starts_with("pg1-host"));
    job.set_stanza(
        "pg1-socket-path",
        tusk_pgbackrest::OptionValue::literal(rig.pg.socket_dir().to_string_lossy()),
    );
    job.set_stanza(
        "pg1-port",
        tusk_pgbackrest::OptionValue::literal(rig.pg.port().to_string()),
    );
    job.set_stanza(
        "pg1-user",
        tusk_pgbackrest::OptionValue::literal("postgres"),
    );
}

/// A full backup with `job_conf`; its time and the bytes it wrote to the repository.
async fn timed_backup(rig: &Rig, job_conf: &Path) -> Result<(f64, i64)> {
    let command = tusk_pgbackrest::backup_command(tusk_api::backup::BackupType::Full, 1);
    let started = Instant::now();
    let log = rig.pgbackrest(job_conf, &command, &[]).await?;
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var_os("TUSK_BENCH_LOG").is_some() {
        eprintln!("{log}");
    }
    let info = rig
        .pgbackrest(job_conf, &tusk_pgbackrest::info_command(Some(1)), &[])
        .await?;
    let sets = tusk_pgbackrest::parse_info(&info)?;
    let latest = sets.last().context("no backup set after a backup")?;
    Ok((seconds, latest.repository_size))
}

/// A restore of the latest backup into an empty directory with the instance settings.
async fn timed_restore(rig: &Rig, instance_conf: &Path) -> Result<f64> {
    let target = rig.base.join("restore");
    let argv = vec![
        "pgbackrest".to_owned(),
        "--stanza=db".to_owned(),
        "restore".to_owned(),
    ];
    let started = Instant::now();
    rig.pgbackrest(
        instance_conf,
        &argv,
        &[format!("--pg1-path={}", target.display())],
    )
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn tar_zstd(data_dir: &Path, output: &Path, without_wal: bool) -> Result<f64> {
    let script = format!(
        "tar -cf - {} -C '{}' . | zstd -q -f -1 -T0 -o '{}'",
        if without_wal {
            "--exclude=./pg_wal"
        } else {
            ""
        },
        data_dir.display(),
        output.display()
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .context("running tar | zstd")?;
    if !status.success() {
        bail!("tar | zstd failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A CA, a server certificate for `localhost` and a client certificate with the CN the
/// servers admit, made with the openssl CLI.
async fn certificates(dir: &Path, run_as: &Option<RunAs>) -> Result<()> {
    let d = dir.display();
    let client_cn = tusk_api::names::PGBACKREST_CLIENT_CN;
    let script = format!(
        "set -e; cd '{d}'
openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
printf 'subjectAltName=DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
printf 'extendedKeyUsage=clientAuth\\n' > client.ext
for who in server client; do
  cn=pgbackrest-server; [ $who = client ] && cn={client_cn}
  openssl req -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=$cn -keyout $who.key -out $who.csr 2>/dev/null
  openssl x509 -req -days 2 -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -extfile $who.ext -out $who.crt 2>/dev/null
done
chmod 600 *.key *.crt"
    );
    let status = Command::new("sh").args(["-c", &script]).status()?;
    if !status.success() {
        bail!("making certificates with openssl failed");
    }
    for entry in std::fs::read_dir(dir)? {
        chown(run_as, &entry?.path())?;
    }
    Ok(())
}

fn chown(run_as: &Option<RunAs>, path: &Path) -> Result<()> {
    match run_as {
        Some(run_as) => run_as.chown(path),
        None => Ok(()),
    }
}

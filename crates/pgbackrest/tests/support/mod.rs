//! A local stand-in for the pod layout: one real PostgreSQL, the instance's `pgbackrest
//! server`, the repository host's `pgbackrest server` and a "backup Job" — each reading the
//! configuration tusk-pgbackrest renders for it, with only the [`Layout`] (paths, hosts,
//! ports) made local. Secret options reach pgBackRest as the environment variables
//! [`Settings::env`] names, with values the test supplies for each Secret key.
//!
//! ```text
//!  PostgreSQL ── archive_command ─► archive-push (instance.conf) ─TLS─► repo-host server ─► volume
//!                                                              └──────► s3rver (TLS)
//!  "Job" (job.conf): backup ─ pg1-host TLS ─► instance server (instance.conf) ─► PostgreSQL
//! ```

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tusk_api::Cluster;
use tusk_pgbackrest::{Layout, Settings};
use tusk_testkit::{
    ChildProcess, PgBackRestBinary, PostgresBinaries, PostgresOptions, PostgresServer, RunAs,
    command_as, daemon_command_as, free_port, run_checked,
};

/// Values of the Secret keys the rendered settings refer to, by (Secret, key).
pub(crate) type SecretValues = BTreeMap<(String, String), String>;

/// Everything one scenario runs.
pub(crate) struct Rig {
    pub(crate) pg: PostgresServer,
    pub(crate) pgbackrest: PathBuf,
    pub(crate) run_as: Option<RunAs>,
    pub(crate) dir: TempDir,
    pub(crate) cluster: Cluster,
    pub(crate) instance: Settings,
    pub(crate) repo_host: Option<Settings>,
    pub(crate) job: Settings,
    pub(crate) instance_conf: PathBuf,
    pub(crate) job_conf: PathBuf,
    env: Vec<(String, String)>,
    servers: Vec<ChildProcess>,
    restores: u32,
}

fn layout(base: &Path, role: &str, instance_port: u16, repo_host_port: u16) -> Layout {
    let path = |rest: &str| base.join(rest).to_string_lossy().into_owned();
    let mut layout = Layout::pod("prod");
    layout.tls_dir = path("tls");
    layout.secrets_dir = path("secrets");
    layout.tmp_dir = path(&format!("tmp-{role}"));
    layout.volume_root = path("volumes");
    // The pod value: every interface. Clients connect to `localhost`, the certificate's name.
    layout.tls_server_address = "*".to_owned();
    layout.instance_port = instance_port;
    layout.repo_host_address = Some("localhost".to_owned());
    layout.repo_host_port = repo_host_port;
    layout.instance_config = path("conf/instance.conf");
    layout.repo_host_config = path("conf/repo-host.conf");
    layout
}

impl Rig {
    /// Starts PostgreSQL (archiving through the rendered instance configuration), writes the
    /// three configurations, starts the TLS servers and creates the stanza.
    pub(crate) async fn start(
        pg_binaries: &PostgresBinaries,
        pgbackrest: &PgBackRestBinary,
        cluster: Cluster,
        secrets: &SecretValues,
    ) -> Result<Rig> {
        let run_as = pg_binaries.run_as.clone();
        let dir = tempfile::Builder::new()
            .prefix("tusk-pgbackrest-")
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
            "restores",
        ] {
            let path = base.join(sub);
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            chown(&run_as, &path)?;
        }
        write_certificates(&base.join("tls"), &run_as)?;

        let (instance_port, repo_host_port) = (free_port()?, free_port()?);
        let instance_layout = layout(&base, "instance", instance_port, repo_host_port);
        let repo_host_layout = layout(&base, "repo-host", instance_port, repo_host_port);
        let job_layout = layout(&base, "job", instance_port, repo_host_port);
        let instance_conf = base.join("conf/instance.conf");

        // Render once before PostgreSQL starts for the environment its archive_command needs.
        let probe = tusk_pgbackrest::instance_settings_in(&cluster, &instance_layout)?;
        let instance_env = resolve_env(&probe, secrets)?;
        let archive_command = format!(
            "{}{} --config={} {}",
            env_prefix(&instance_env),
            pgbackrest.pgbackrest.display(),
            instance_conf.display(),
            tusk_pgbackrest::archive_command().trim_start_matches("pgbackrest "),
        );
        let options = PostgresOptions::default()
            .with_initdb_arg("--data-checksums")
            .with_config("wal_level = replica")
            .with_config("archive_mode = on")
            .with_config(format!(
                "archive_command = '{}'",
                archive_command.replace('\'', "''")
            ))
            .with_config("max_wal_senders = 4");
        let pg = PostgresServer::start(pg_binaries, options).await?;

        let mut instance_layout = instance_layout;
        let mut job_layout = job_layout;
        let data_dir = pg.data_dir().to_string_lossy().into_owned();
        instance_layout.data_dir = Some(data_dir.clone());
        instance_layout.socket_dir = pg.socket_dir().to_string_lossy().into_owned();
        instance_layout.pg_port = pg.port();
        job_layout.data_dir = Some(data_dir);

        let instance = tusk_pgbackrest::instance_settings_in(&cluster, &instance_layout)?;
        let repo_host = tusk_pgbackrest::repo_host_settings_in(&cluster, &repo_host_layout)?;
        let job = tusk_pgbackrest::backup_job_settings_in(&cluster, "localhost", &job_layout)?;

        let mut env = resolve_env(&instance, secrets)?;
        write_secret_files(&instance, secrets, &run_as)?;
        write_secret_files(&job, secrets, &run_as)?;
        let job_conf = base.join("conf/job.conf");
        write_config(&instance_conf, &instance, &run_as)?;
        write_config(&job_conf, &job, &run_as)?;
        if let Some(repo_host) = &repo_host {
            write_config(&base.join("conf/repo-host.conf"), repo_host, &run_as)?;
        }
        for (name, value) in resolve_env(&job, secrets)? {
            if !env.iter().any(|(existing, _)| *existing == name) {
                env.push((name, value));
            }
        }

        let mut rig = Rig {
            pg,
            pgbackrest: pgbackrest.pgbackrest.clone(),
            run_as,
            dir,
            cluster,
            instance,
            repo_host,
            job,
            instance_conf,
            job_conf,
            env,
            servers: Vec::new(),
            restores: 0,
        };
        let instance_server = rig.server("instance", &rig.instance_conf.clone())?;
        rig.servers.push(instance_server);
        wait_listening(instance_port).await?;
        if rig.repo_host.is_some() {
            let conf = base.join("conf/repo-host.conf");
            let server = rig.server("repo-host", &conf)?;
            rig.servers.push(server);
            wait_listening(repo_host_port).await?;
        }
        rig.job(&tusk_pgbackrest::stanza_create_command()).await?;
        // Switches WAL and waits for the segment to reach every repository: proves archiving
        // through the instance configuration (and the repository host) works.
        rig.job(&tusk_pgbackrest::check_command()).await?;
        Ok(rig)
    }

    /// A `pgbackrest server` reading `conf`, with the secret environment (the repository
    /// host's cipher passphrase) as its container would have it.
    fn server(&self, name: &str, conf: &Path) -> Result<ChildProcess> {
        let mut command = daemon_command_as(&self.pgbackrest, self.run_as.as_ref());
        let argv = tusk_pgbackrest::server_command();
        command
            .arg(format!("--config={}", conf.display()))
            .args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildProcess::spawn(format!("pgbackrest server ({name})"), command)
    }

    /// Runs a pgBackRest command line as rendered (`pgbackrest --stanza=db ... <command>`)
    /// with the backup Job's configuration.
    pub(crate) async fn job(&self, argv: &[String]) -> Result<String> {
        self.pgbackrest_with(&self.job_conf, argv, &[]).await
    }

    /// Runs `argv` with configuration `conf`, extra options inserted before the command.
    pub(crate) async fn pgbackrest_with(
        &self,
        conf: &Path,
        argv: &[String],
        extra: &[String],
    ) -> Result<String> {
        let (command_name, options) = argv[1..].split_last().context("empty command")?;
        let mut command = command_as(&self.pgbackrest, self.run_as.as_ref());
        command
            .arg(format!("--config={}", conf.display()))
            .args(options)
            .args(extra)
            .arg(command_name)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        run_checked(command, &format!("pgbackrest {}", argv[1..].join(" "))).await
    }

    /// A checksum over every row of every table the scenario writes.
    pub(crate) async fn checksum(client: &tokio_postgres::Client) -> Result<String> {
        let row = client
            .query_one(
                "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) || ':' || count(*) FROM items t",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Restores into a fresh data directory with the *instance* configuration (as a new
    /// Cluster's instance would), starts PostgreSQL on it until recovery ends, and returns a
    /// client. `options` are restore options such as `--set=...`, `--type=immediate`.
    pub(crate) async fn restore(&mut self, repo: u32, options: &[String]) -> Result<Restored> {
        self.restores += 1;
        let target = self.dir.path().join(format!("restores/{}", self.restores));
        std::fs::create_dir(&target)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
        chown(&self.run_as, &target)?;
        let socket_dir = self
            .dir
            .path()
            .join(format!("restores/{}-sock", self.restores));
        std::fs::create_dir(&socket_dir)?;
        chown(&self.run_as, &socket_dir)?;

        let restore_command = format!(
            "{}{} --config={} --pg1-path={} {}",
            env_prefix(&self.env),
            self.pgbackrest.display(),
            self.instance_conf.display(),
            target.display(),
            tusk_pgbackrest::restore_command().trim_start_matches("pgbackrest "),
        );
        let mut extra = vec![
            format!("--repo={repo}"),
            format!("--pg1-path={}", target.display()),
            format!("--recovery-option=restore_command={restore_command}"),
            "--target-action=promote".to_owned(),
        ];
        extra.extend(options.iter().cloned());
        let argv = vec![
            "pgbackrest".to_owned(),
            "--stanza=db".to_owned(),
            "restore".to_owned(),
        ];
        let conf = self.instance_conf.clone();
        self.pgbackrest_with(&conf, &argv, &extra).await?;

        let port = free_port()?;
        let binaries = self.pg.binaries().clone();
        let mut command = daemon_command_as(&binaries.bin("postgres"), self.run_as.as_ref());
        let log = self
            .dir
            .path()
            .join(format!("restores/{}.log", self.restores));
        let log_file = std::fs::File::create(&log)?;
        chown(&self.run_as, &log)?;
        command
            .arg("-D")
            .arg(&target)
            .args(["-c", &format!("port={port}")])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", socket_dir.display()),
            ])
            .args(["-c", "archive_mode=off"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let process = ChildProcess::spawn("restored PostgreSQL", command)?;
        let client = wait_promoted(port, &process, &log).await?;
        Ok(Restored {
            client,
            _process: process,
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}

/// A PostgreSQL started on a restored data directory, stopped on drop.
pub(crate) struct Restored {
    pub(crate) client: tokio_postgres::Client,
    _process: ChildProcess,
}

async fn wait_promoted(
    port: u16,
    process: &ChildProcess,
    log: &Path,
) -> Result<tokio_postgres::Client> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.exit_status() {
            bail!(
                "restored PostgreSQL exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres");
        if let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?
                .get(0);
            if !in_recovery {
                return Ok(client);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "restored PostgreSQL did not finish recovery in 60 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_listening(port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("pgbackrest server did not listen on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rendered `env()`, each Secret key replaced by the value the test gives it.
pub(crate) fn resolve_env(
    settings: &Settings,
    secrets: &SecretValues,
) -> Result<Vec<(String, String)>> {
    settings
        .env()
        .into_iter()
        .map(|var| {
            let selector = var
                .value_from
                .and_then(|source| source.secret_key_ref)
                .context("a secret option without secretKeyRef")?;
            let value = secrets
                .get(&(selector.name.clone(), selector.key.clone()))
                .with_context(|| {
                    format!(
                        "no test value for Secret {}/{}",
                        selector.name, selector.key
                    )
                })?;
            Ok((var.name, value.clone()))
        })
        .collect()
}

fn env_prefix(env: &[(String, String)]) -> String {
    if env.is_empty() {
        return String::new();
    }
    let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("env {} ", assignments.join(" "))
}

fn write_secret_files(
    settings: &Settings,
    secrets: &SecretValues,
    run_as: &Option<RunAs>,
) -> Result<()> {
    for (_, file) in settings.secret_files() {
        let value = secrets
            .get(&(file.secret.name.clone(), file.secret.key.clone()))
            .with_context(|| {
                format!(
                    "no test value for Secret {}/{}",
                    file.secret.name, file.secret.key
                )
            })?;
        let path = Path::new(&file.path);
        let parent = path.parent().context("secret file without directory")?;
        std::fs::create_dir_all(parent)?;
        chown(run_as, parent)?;
        std::fs::write(path, value)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        chown(run_as, path)?;
    }
    Ok(())
}

fn write_config(path: &Path, settings: &Settings, run_as: &Option<RunAs>) -> Result<()> {
    std::fs::write(path, settings.to_ini())?;
    chown(run_as, path)
}

fn chown(run_as: &Option<RunAs>, path: &Path) -> Result<()> {
    match run_as {
        Some(run_as) => run_as.chown(path),
        None => Ok(()),
    }
}

/// A CA, a server certificate for `localhost` (a DNS SAN: pgBackRest ignores IP SANs) and a
/// client certificate with the CN the servers admit, as the pgBackRest Secret holds them.
fn write_certificates(dir: &Path, run_as: &Option<RunAs>) -> Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tusk test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf =
        |cn: &str, dns: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(dns)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
    let (server_crt, server_key) = leaf(
        tusk_api::names::PGBACKREST_SERVER_CN,
        vec!["localhost".to_owned()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_crt, client_key) = leaf(
        tusk_api::names::PGBACKREST_CLIENT_CN,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    for (name, contents) in [
        ("ca.crt", ca_cert.pem()),
        ("server.crt", server_crt),
        ("server.key", server_key),
        ("client.crt", client_crt),
        ("client.key", client_key),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents)?;
        // pgBackRest refuses keys readable by group or others unless root owns them.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        chown(run_as, &path)?;
    }
    Ok(())
}

//! Real PgBouncer for tests and benchmarks (feature `test-support`): PgBouncer started with
//! the configuration [`crate::config`] renders, in front of a testkit [`TlsPrimary`], after
//! [`prepare_auth`] created the auth role and lookup with the controller's SQL — or in front
//! of any [`Upstream`] (`start_bouncer_to`), such as a Patroni cluster behind a stand-in for its
//! `-rw` Service.
//!
//! ```text
//!   client ──TLS verify-full (pooler_ca)──► PgBouncer 127.0.0.1:<free port>
//!                                              └─TLS verify-full──► TlsPrimary 127.0.0.1
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tusk_api::Pooler;
use tusk_runtime::postgres::PrimaryTarget;
use tusk_testkit::{ChildProcess, RunAs, ServerTls, TlsPrimary, daemon_command_as, free_port};

use crate::auth::{self, ADMIN_ROLE};
use crate::children;
use crate::config::{self, Files, Placement};

/// Where PgBouncer and the server listen, and the name both certificates carry.
pub const HOST: &str = "127.0.0.1";
/// The auth role's password (it is in the auth file).
pub const AUTH_PASSWORD: &str = "AuthRolePassw0rd";
/// The admin console user's password.
pub const ADMIN_PASSWORD: &str = "AdminConsolePassw0rd";

/// The superuser's password of [`start_primary`]'s server.
pub const SUPERUSER_PASSWORD: &str = "superSecretPw1";
/// The application role `shop`'s password (it owns database `app`).
pub const APP_PASSWORD: &str = "ShopPassw0rdFromItsSecret";

/// A [`TlsPrimary`] for [`HOST`] with the application role `shop` (SCRAM, [`APP_PASSWORD`])
/// owning database `app`, as a PostgresUser would leave it.
pub async fn start_primary(pg: &tusk_testkit::PostgresBinaries) -> Result<TlsPrimary> {
    let options = tusk_testkit::PostgresOptions::default().with_config("max_connections = 100");
    start_primary_with(pg, &[HOST], options).await
}

/// [`start_primary`] with a server certificate naming `hosts` (a Cluster's `-rw` host and
/// the loopback address PgBouncer reaches it at, say), logging every statement.
pub async fn start_primary_for(
    pg: &tusk_testkit::PostgresBinaries,
    hosts: &[&str],
) -> Result<TlsPrimary> {
    let options = tusk_testkit::PostgresOptions::default()
        .with_config("max_connections = 100")
        .with_config("log_statement = 'all'");
    start_primary_with(pg, hosts, options).await
}

async fn start_primary_with(
    pg: &tusk_testkit::PostgresBinaries,
    hosts: &[&str],
    options: tusk_testkit::PostgresOptions,
) -> Result<TlsPrimary> {
    let primary = TlsPrimary::start_for_hosts(pg, hosts, SUPERUSER_PASSWORD, options).await?;
    let superuser = primary.server.connect().await?;
    superuser
        .batch_execute(&format!(
            "CREATE ROLE shop LOGIN PASSWORD '{}'",
            auth::scram_verifier(APP_PASSWORD)
        ))
        .await?;
    superuser
        .batch_execute("CREATE DATABASE app OWNER shop")
        .await?;
    Ok(primary)
}

/// A Pooler named `db-pooler` for Cluster `db` with `pgbouncer` (YAML, indented by four) as
/// its PgBouncer settings.
pub fn pooler(pgbouncer: &str) -> Pooler {
    let yaml = format!(
        "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: db-pooler, namespace: shop}}\nspec:\n  cluster: {{name: db}}\n  pgbouncer:\n{pgbouncer}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("a test Pooler: {e}"))
}

/// PgBouncer with the rendered files in a temp dir owned by the user it runs as.
#[derive(Debug)]
pub struct Bouncer {
    pub process: ChildProcess,
    pub dir: tempfile::TempDir,
    pub placement: Placement,
    /// The CA of the certificate PgBouncer presents to clients, PEM.
    pub pooler_ca: Vec<u8>,
    _tls: Option<ServerTls>,
}

/// The files PgBouncer reads, as text: what the controller puts into the Pooler's Secrets.
#[derive(Debug, Clone)]
pub struct BouncerFiles {
    /// The auth file (`<pooler>-auth` userlist.txt).
    pub auth_file: String,
    /// PgBouncer's certificate and key (`<pooler>-tls`), and the CA that issued them.
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl Bouncer {
    pub fn ini_path(&self) -> std::path::PathBuf {
        self.dir.path().join("pgbouncer.ini")
    }

    pub fn write_ini(&self, pooler: &Pooler) -> Result<()> {
        std::fs::write(self.ini_path(), config::render_ini(pooler, &self.placement))?;
        Ok(())
    }

    pub fn target(&self, user: &str, password: &str) -> PrimaryTarget {
        PrimaryTarget {
            host: HOST.to_owned(),
            port: self.placement.listen_port,
            address: None,
            ca_pem: Some(self.pooler_ca.clone()),
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tusk_runtime::postgres::ConnectError> {
        self.target(user, password)
            .connect(db, "tusk-pooler-test")
            .await
    }

    pub async fn admin(&self) -> Result<tokio_postgres::Client> {
        self.connect(ADMIN_ROLE, ADMIN_PASSWORD, "pgbouncer")
            .await
            .context("the admin console")
    }
}

pub async fn start_bouncer(
    binary: &Path,
    run_as: Option<&RunAs>,
    primary: &TlsPrimary,
    pooler: &Pooler,
) -> Result<Bouncer> {
    start_bouncer_to(binary, run_as, &Upstream::of(primary), pooler).await
}

/// Where PgBouncer's server connections go: a host its server certificate names, a port, and
/// the CA that certificate chains to (PEM).
#[derive(Debug, Clone)]
pub struct Upstream<'a> {
    pub host: &'a str,
    pub port: u16,
    pub ca_pem: &'a str,
}

impl<'a> Upstream<'a> {
    /// `primary` at [`HOST`].
    pub fn of(primary: &'a TlsPrimary) -> Self {
        Self {
            host: HOST,
            port: primary.server.port(),
            ca_pem: &primary.tls.ca_pem,
        }
    }
}

/// [`start_bouncer`] in front of any `upstream` (a Patroni cluster behind a stand-in for its
/// `-rw` Service, say), with its own certificate for [`HOST`] and tusk's auth file.
pub async fn start_bouncer_to(
    binary: &Path,
    run_as: Option<&RunAs>,
    upstream: &Upstream<'_>,
    pooler: &Pooler,
) -> Result<Bouncer> {
    start_bouncer_launched(binary, run_as, upstream, pooler, Launch::Bare).await
}

/// [`start_bouncer`] the way the pod starts it: under the container's
/// [`children::ENTRYPOINT`], which drains on SIGTERM after `stop_delay_seconds`.
pub async fn start_bouncer_as_in_pod(
    binary: &Path,
    run_as: Option<&RunAs>,
    primary: &TlsPrimary,
    pooler: &Pooler,
    stop_delay_seconds: u32,
) -> Result<Bouncer> {
    let launch = Launch::Entrypoint { stop_delay_seconds };
    start_bouncer_launched(binary, run_as, &Upstream::of(primary), pooler, launch).await
}

/// How PgBouncer is started: the binary itself, or under the pod's entrypoint script.
#[derive(Debug, Clone, Copy)]
enum Launch {
    Bare,
    Entrypoint { stop_delay_seconds: u32 },
}

async fn start_bouncer_launched(
    binary: &Path,
    run_as: Option<&RunAs>,
    upstream: &Upstream<'_>,
    pooler: &Pooler,
    launch: Launch,
) -> Result<Bouncer> {
    // The pooler's own certificate; in a cluster it is issued from the Cluster's CA.
    let tls = ServerTls::for_host(HOST, run_as)?;
    let files = BouncerFiles {
        auth_file: config::auth_file(AUTH_PASSWORD, &auth::scram_verifier(ADMIN_PASSWORD)),
        cert_pem: std::fs::read_to_string(&tls.cert_file)?,
        key_pem: std::fs::read_to_string(&tls.key_file)?,
        ca_pem: tls.ca_pem.clone(),
    };
    let mut bouncer = launch_bouncer(
        binary,
        run_as,
        upstream,
        &files,
        pooler,
        free_port()?,
        launch,
    )
    .await?;
    bouncer._tls = Some(tls);
    Ok(bouncer)
}

/// PgBouncer for `pooler` reading `files`, in front of `primary` at 127.0.0.1 (its server
/// certificate must name that address).
pub async fn start_bouncer_with(
    binary: &Path,
    run_as: Option<&RunAs>,
    primary: &TlsPrimary,
    files: &BouncerFiles,
    pooler: &Pooler,
) -> Result<Bouncer> {
    start_bouncer_on(binary, run_as, primary, files, pooler, free_port()?).await
}

/// [`start_bouncer_with`], listening on `listen_port`.
pub async fn start_bouncer_on(
    binary: &Path,
    run_as: Option<&RunAs>,
    primary: &TlsPrimary,
    files: &BouncerFiles,
    pooler: &Pooler,
    listen_port: u16,
) -> Result<Bouncer> {
    start_bouncer_upstream_on(
        binary,
        run_as,
        &Upstream::of(primary),
        files,
        pooler,
        listen_port,
    )
    .await
}

/// PgBouncer for `pooler` reading `files`, in front of `upstream`, listening on
/// `listen_port`.
pub async fn start_bouncer_upstream_on(
    binary: &Path,
    run_as: Option<&RunAs>,
    upstream: &Upstream<'_>,
    files: &BouncerFiles,
    pooler: &Pooler,
    listen_port: u16,
) -> Result<Bouncer> {
    let launch = Launch::Bare;
    launch_bouncer(binary, run_as, upstream, files, pooler, listen_port, launch).await
}

async fn launch_bouncer(
    binary: &Path,
    run_as: Option<&RunAs>,
    upstream: &Upstream<'_>,
    files: &BouncerFiles,
    pooler: &Pooler,
    listen_port: u16,
    launch: Launch,
) -> Result<Bouncer> {
    let dir = tempfile::Builder::new()
        .prefix("tusk-pgbouncer-")
        .tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let written = [
        ("server-ca.crt", upstream.ca_pem),
        ("userlist.txt", files.auth_file.as_str()),
        ("tls.crt", files.cert_pem.as_str()),
        ("tls.key", files.key_pem.as_str()),
    ];
    for (name, text) in written {
        std::fs::write(path(name), text)?;
        std::fs::set_permissions(
            path(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    let placement = Placement {
        listen_addr: HOST.to_owned(),
        listen_port,
        upstream_host: upstream.host.to_owned(),
        upstream_port: upstream.port,
        files: Files {
            auth_file: path("userlist.txt").display().to_string(),
            client_tls_cert: path("tls.crt").display().to_string(),
            client_tls_key: path("tls.key").display().to_string(),
            server_tls_ca: path("server-ca.crt").display().to_string(),
        },
    };
    std::fs::write(
        path("pgbouncer.ini"),
        config::render_ini(pooler, &placement),
    )?;
    if let Some(run_as) = run_as {
        run_as.chown(dir.path())?;
        for (name, _) in written {
            run_as.chown(&path(name))?;
        }
        run_as.chown(&path("pgbouncer.ini"))?;
    }
    let mut command = match launch {
        Launch::Bare => daemon_command_as(binary, run_as),
        Launch::Entrypoint { stop_delay_seconds } => {
            let mut shell = daemon_command_as(Path::new("/bin/sh"), run_as);
            shell
                .args(["-c", children::ENTRYPOINT])
                .arg(binary)
                .env(children::STOP_DELAY_ENV, stop_delay_seconds.to_string());
            shell
        }
    };
    command.arg(path("pgbouncer.ini"));
    command.stderr(std::fs::File::create(path("pgbouncer.log"))?);
    let bouncer = Bouncer {
        process: ChildProcess::spawn("pgbouncer", command)?,
        dir,
        placement,
        pooler_ca: files.ca_pem.as_bytes().to_vec(),
        _tls: None,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect((HOST, bouncer.placement.listen_port))
        .await
        .is_err()
    {
        if let Some(status) = bouncer.process.exit_status() {
            bail!("PgBouncer exited with {status}: {}", bouncer_log(&bouncer));
        }
        ensure!(
            Instant::now() < deadline,
            "PgBouncer did not listen: {}",
            bouncer_log(&bouncer)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(bouncer)
}

pub fn bouncer_log(bouncer: &Bouncer) -> String {
    std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log")).unwrap_or_default()
}

/// What a test against real PgBouncer starts from: PostgreSQL's binaries, PgBouncer's, and a
/// [`start_primary`] with the auth role and lookups in place ([`prepare_auth`]) — or `None`
/// when a component is missing and the test may skip (`tusk_testkit::require`: under
/// `TUSK_REQUIRE_REAL=1` it fails instead).
pub async fn real_setup() -> Result<
    Option<(
        tusk_testkit::PostgresBinaries,
        std::path::PathBuf,
        TlsPrimary,
    )>,
> {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(15)) else {
        return Ok(None);
    };
    let Some(binary) = tusk_testkit::require(tusk_testkit::pgbouncer()) else {
        return Ok(None);
    };
    let primary = start_primary(&pg).await?;
    prepare_auth(&primary).await?;
    Ok(Some((pg, binary.pgbouncer, primary)))
}

/// The auth role and the lookup function in every database, by the controller's SQL.
pub async fn prepare_auth(primary: &TlsPrimary) -> Result<Vec<String>> {
    let superuser = primary.server.connect().await?;
    let mut written = auth::ensure_role(&superuser, AUTH_PASSWORD).await?;
    let databases: Vec<String> = superuser
        .query(auth::DATABASES_QUERY, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(databases.contains(&"app".to_owned()), "{databases:?}");
    for database in &databases {
        let client = primary.server.connect_db(database).await?;
        written.extend(auth::ensure_lookup(&client).await?);
    }
    Ok(written)
}

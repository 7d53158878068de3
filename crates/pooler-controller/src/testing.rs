//! Real PgBouncer for tests and benchmarks (feature `test-support`): PgBouncer started with
//! the configuration [`crate::config`] renders, in front of a testkit [`TlsPrimary`], after
//! [`prepare_auth`] created the auth role and lookup with the controller's SQL.
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
    let primary = TlsPrimary::start(pg, HOST, SUPERUSER_PASSWORD, options).await?;
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
    _tls: ServerTls,
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
    let dir = tempfile::Builder::new()
        .prefix("tusk-pgbouncer-")
        .tempdir()?;
    // The pooler's own certificate; in a cluster it is issued from the Cluster's CA.
    let tls = ServerTls::for_host(HOST, run_as)?;
    let server_ca = dir.path().join("server-ca.crt");
    std::fs::write(&server_ca, &primary.tls.ca_pem)?;
    let auth_file = dir.path().join("userlist.txt");
    std::fs::write(
        &auth_file,
        config::auth_file(AUTH_PASSWORD, &auth::scram_verifier(ADMIN_PASSWORD)),
    )?;
    let placement = Placement {
        listen_addr: HOST.to_owned(),
        listen_port: free_port()?,
        upstream_host: HOST.to_owned(),
        upstream_port: primary.server.port(),
        files: Files {
            auth_file: auth_file.display().to_string(),
            client_tls_cert: tls.cert_file.display().to_string(),
            client_tls_key: tls.key_file.display().to_string(),
            server_tls_ca: server_ca.display().to_string(),
        },
    };
    let bouncer_files = [dir.path(), &server_ca, &auth_file];
    let bouncer = Bouncer {
        process: ChildProcess::spawn("pgbouncer", {
            // Written before the spawn below reads it.
            std::fs::write(
                dir.path().join("pgbouncer.ini"),
                config::render_ini(pooler, &placement),
            )?;
            if let Some(run_as) = run_as {
                for path in bouncer_files {
                    run_as.chown(path)?;
                }
                run_as.chown(&dir.path().join("pgbouncer.ini"))?;
            }
            let mut command = daemon_command_as(binary, run_as);
            command.arg(dir.path().join("pgbouncer.ini"));
            command.stderr(std::fs::File::create(dir.path().join("pgbouncer.log"))?);
            command
        })?,
        dir,
        placement,
        pooler_ca: tls.ca_pem.as_bytes().to_vec(),
        _tls: tls,
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

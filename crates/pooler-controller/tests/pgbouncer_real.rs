//! Real PgBouncer (Debian's) in front of real PostgreSQL, started with the `pgbouncer.ini` and
//! auth file the Pooler renders, after the auth role and lookup function are created with the
//! controller's SQL:
//!
//! ```text
//!   client ──TLS verify-full──► PgBouncer ──TLS verify-full──► PostgreSQL (TlsPrimary)
//!     shop / SCRAM               auth_query as tusk_pooler ──► tusk_pooler.lookup('shop')
//! ```
//!
//! - the role and lookup SQL writes once, then nothing (in every database);
//! - an application role logs in through the pooler with its own password over TLS
//!   verify-full, and its server connection is TLS too; a wrong password, the superuser and
//!   tusk_pooler's lookup of itself are refused;
//! - transaction pooling holds 500 client connections on at most 20 server connections;
//! - a changed pool size is applied by `RELOAD` on the admin console while a client stays
//!   connected and keeps working.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tusk_api::Pooler;
use tusk_pooler_controller::auth::{self, ADMIN_ROLE};
use tusk_pooler_controller::config::{self, Files, Placement};
use tusk_runtime::postgres::PrimaryTarget;
use tusk_testkit::{
    ChildProcess, PostgresOptions, RunAs, ServerTls, TlsPrimary, daemon_command_as, free_port,
};

const HOST: &str = "127.0.0.1";
const SUPERUSER_PASSWORD: &str = "superSecretPw1";
const AUTH_PASSWORD: &str = "AuthRolePassw0rd";
const ADMIN_PASSWORD: &str = "AdminConsolePassw0rd";
const APP_PASSWORD: &str = "ShopPassw0rdFromItsSecret";

fn pooler(pgbouncer: &str) -> Pooler {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: db-pooler, namespace: shop}}\nspec:\n  cluster: {{name: db}}\n  pgbouncer:\n{pgbouncer}"
    ))
    .unwrap()
}

/// PgBouncer with the rendered files in a temp dir owned by the user it runs as.
struct Bouncer {
    process: ChildProcess,
    dir: tempfile::TempDir,
    placement: Placement,
    pooler_ca: Vec<u8>,
    _tls: ServerTls,
}

impl Bouncer {
    fn ini_path(&self) -> std::path::PathBuf {
        self.dir.path().join("pgbouncer.ini")
    }

    fn write_ini(&self, pooler: &Pooler) -> Result<()> {
        std::fs::write(self.ini_path(), config::render_ini(pooler, &self.placement))?;
        Ok(())
    }

    fn target(&self, user: &str, password: &str) -> PrimaryTarget {
        PrimaryTarget {
            host: HOST.to_owned(),
            port: self.placement.listen_port,
            address: None,
            ca_pem: Some(self.pooler_ca.clone()),
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tusk_runtime::postgres::ConnectError> {
        self.target(user, password).connect(db, "pooler-test").await
    }

    async fn admin(&self) -> Result<tokio_postgres::Client> {
        self.connect(ADMIN_ROLE, ADMIN_PASSWORD, "pgbouncer")
            .await
            .context("the admin console")
    }
}

async fn start_bouncer(
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

fn bouncer_log(bouncer: &Bouncer) -> String {
    std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log")).unwrap_or_default()
}

/// The auth role and the lookup function in every database, by the controller's SQL.
async fn prepare_auth(primary: &TlsPrimary) -> Result<Vec<String>> {
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

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> Result<String> {
    let messages = client.simple_query(sql).await?;
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    bail!("{sql}: no row")
}

/// The value of `name` in the admin console's `SHOW CONFIG`.
async fn show_config(admin: &tokio_postgres::Client, name: &str) -> Result<String> {
    for message in admin.simple_query("SHOW CONFIG").await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message
            && row.get("key") == Some(name)
        {
            return Ok(row.get("value").unwrap_or_default().to_owned());
        }
    }
    bail!("SHOW CONFIG has no {name}")
}

#[tokio::test]
async fn rendered_pgbouncer_pools_tls_clients_authenticated_by_auth_query() -> Result<()> {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(15)) else {
        return Ok(());
    };
    let Some(binary) = tusk_testkit::require(tusk_testkit::pgbouncer()) else {
        return Ok(());
    };
    let primary = TlsPrimary::start(
        &pg,
        HOST,
        SUPERUSER_PASSWORD,
        PostgresOptions::default().with_config("max_connections = 100"),
    )
    .await?;
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

    // The auth SQL writes once, then nothing.
    let first = prepare_auth(&primary).await?;
    ensure!(
        first.iter().any(|s| s.starts_with("CREATE ROLE")),
        "{first:#?}"
    );
    ensure!(
        first
            .iter()
            .filter(|s| s.contains("SECURITY DEFINER"))
            .count()
            == 2,
        "one lookup per database (postgres, app): {first:#?}"
    );
    let second = prepare_auth(&primary).await?;
    ensure!(second.is_empty(), "a second pass wrote {second:#?}");
    // The function is not PUBLIC's: another login role cannot read verifiers with it.
    let nosy = superuser.query_one(
        "SELECT has_function_privilege('shop', 'tusk_pooler.lookup(text)', 'EXECUTE')",
        &[],
    );
    ensure!(!nosy.await?.get::<_, bool>(0), "shop may call the lookup");

    let transaction = pooler("    poolMode: Transaction\n    defaultPoolSize: 20\n");
    let bouncer = start_bouncer(
        &binary.pgbouncer,
        pg.run_as.as_ref(),
        &primary,
        &transaction,
    )
    .await?;

    // A client logs in with its own password, verify-full against the pooler's certificate;
    // the server side is TLS too.
    let client = bouncer
        .connect("shop", APP_PASSWORD, "app")
        .await
        .with_context(|| format!("logging in through PgBouncer: {}", bouncer_log(&bouncer)))?;
    ensure!(scalar(&client, "SELECT current_user").await? == "shop");
    let ssl = scalar(
        &client,
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await?;
    ensure!(
        ssl == "true",
        "PgBouncer's server connection is not TLS: {ssl}"
    );

    for (user, password, why) in [
        ("shop", "wrong", "a wrong password"),
        ("postgres", SUPERUSER_PASSWORD, "the superuser"),
        (
            "tusk_pooler",
            "guess",
            "the auth role with a wrong password",
        ),
    ] {
        ensure!(
            bouncer.connect(user, password, "app").await.is_err(),
            "{why} got in through the pooler"
        );
    }

    // 500 clients, each in a transaction at the same moment, on at most 20 server
    // connections.
    let mut clients = Vec::new();
    for chunk in 0..10 {
        let opened = futures::future::join_all(
            (0..50).map(|_| bouncer.connect("shop", APP_PASSWORD, "app")),
        )
        .await;
        for (i, opened) in opened.into_iter().enumerate() {
            clients.push(opened.with_context(|| format!("client {}", chunk * 50 + i))?);
        }
    }
    let started = Instant::now();
    let (results, peak) = tokio::join!(
        futures::future::join_all(
            clients
                .iter()
                .map(|c| c.simple_query("SELECT pg_sleep(0.02)"))
        ),
        async {
            let mut peak = 0i64;
            while started.elapsed() < Duration::from_secs(2) {
                let count: i64 = superuser
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'shop'",
                        &[],
                    )
                    .await
                    .map(|row| row.get(0))
                    .unwrap_or(0);
                peak = peak.max(count);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    );
    let failed = results.iter().filter(|r| r.is_err()).count();
    ensure!(failed == 0, "{failed} of 500 pooled queries failed");
    ensure!(
        (1..=20).contains(&peak),
        "500 clients used {peak} server connections"
    );
    eprintln!("500 clients in transactions at once: peak {peak} server connections");
    drop(clients);
    let admin = bouncer.admin().await?;

    // A changed pool size: rewrite the file, RELOAD; the open client keeps working.
    ensure!(show_config(&admin, "default_pool_size").await? == "20");
    bouncer.write_ini(&pooler(
        "    poolMode: Transaction\n    defaultPoolSize: 5\n",
    ))?;
    admin.simple_query("RELOAD").await?;
    ensure!(show_config(&admin, "default_pool_size").await? == "5");
    ensure!(
        scalar(&client, "SELECT 41 + 1").await? == "42",
        "the client open across the RELOAD stopped working"
    );
    ensure!(bouncer.process.exit_status().is_none(), "PgBouncer exited");
    Ok(())
}

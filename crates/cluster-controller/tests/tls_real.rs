//! The certificates tusk generates, used by the real programs that meet them: PostgreSQL with
//! libpq (`sslmode=verify-full`) and pgBackRest's TLS server with client-certificate auth.
//! Each test requires its component: skipped when missing, failed under `TUSK_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use tusk_api::Cluster;
use tusk_cluster_controller::plan::secrets::{DesiredSecrets, plan_secrets};
use tusk_cluster_controller::plan::tls::{CertificateKind, IssueReason, pgbackrest_keys};
use tusk_testkit::{
    ChildProcess, PostgresOptions, PostgresServer, RunAs, daemon_command_as, free_port, require,
    run_checked,
};

fn cluster() -> Cluster {
    serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}
spec:
  postgresVersion: 15
  storage: {size: 10Gi}
",
    )
    .unwrap()
}

fn by_name(secrets: &[Secret]) -> BTreeMap<String, Secret> {
    secrets
        .iter()
        .map(|secret| (secret.metadata.name.clone().unwrap(), secret.clone()))
        .collect()
}

fn value<'a>(desired: &'a DesiredSecrets, secret: &str, key: &str) -> &'a [u8] {
    let secret = desired
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(secret))
        .unwrap_or_else(|| panic!("no Secret {secret}"));
    &secret.data.as_ref().unwrap()[key].0
}

/// A directory the unprivileged user (when there is one) owns, with Secret values written as
/// files the way a Secret volume would hold them: keys 0600.
struct Files {
    dir: tempfile::TempDir,
    run_as: Option<RunAs>,
}

impl Files {
    fn new(run_as: Option<RunAs>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tusk-tls-").tempdir()?;
        if let Some(run_as) = &run_as {
            run_as.chown(dir.path())?;
        }
        Ok(Self { dir, run_as })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(run_as) = &self.run_as {
            run_as.chown(&path)?;
        }
        Ok(path)
    }

    fn mkdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::create_dir(&path)?;
        if let Some(run_as) = &self.run_as {
            run_as.chown(&path)?;
        }
        Ok(path)
    }
}

/// libpq verifies the chain and every Service name in `sslmode=verify-full` — also after the
/// server certificate was renewed, with the `ca.crt` clients took before the renewal.
#[tokio::test]
async fn libpq_verifies_the_server_certificate_and_its_service_names() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(15)) else {
        return Ok(());
    };
    let now = Timestamp::now();
    // Issued 340 days ago: 25 days left, so the plan at `now` renews it (the CA stays).
    let old = plan_secrets(
        &cluster(),
        &BTreeMap::new(),
        now - SignedDuration::from_hours(24 * 340),
    )?;
    let renewed = plan_secrets(&cluster(), &by_name(&old.secrets), now)?;
    ensure!(
        renewed
            .tls
            .issued()
            .contains(&(CertificateKind::Server, IssueReason::Expiring)),
        "the server certificate was not renewed: {:?}",
        renewed.tls.issued()
    );
    // Another Cluster's CA, which must not be accepted.
    let stranger = plan_secrets(&cluster(), &BTreeMap::new(), now)?;

    let files = Files::new(pg.run_as.clone())?;
    let cert = files.write("tls.crt", value(&renewed, "db-server-tls", "tls.crt"))?;
    let key = files.write("tls.key", value(&renewed, "db-server-tls", "tls.key"))?;
    let server_ca = files.write("server-ca.crt", value(&renewed, "db-server-tls", "ca.crt"))?;
    let client_ca = files.write("ca.crt", value(&old, "db-ca", "ca.crt"))?;
    let stranger_ca = files.write("stranger-ca.crt", value(&stranger, "db-ca", "ca.crt"))?;

    let quoted = |path: &Path| format!("'{}'", path.display());
    let options = PostgresOptions::default()
        .with_config("ssl = on")
        .with_config(format!("ssl_cert_file = {}", quoted(&cert)))
        .with_config(format!("ssl_key_file = {}", quoted(&key)))
        .with_config(format!("ssl_ca_file = {}", quoted(&server_ca)))
        // Only TLS connections get in over TCP.
        .with_hba("hostnossl all all 127.0.0.1/32 reject")
        .with_hba("hostssl all all 127.0.0.1/32 trust");
    let server = PostgresServer::start(&pg, options).await?;

    let psql = |conninfo: String| {
        let mut command = pg.command("psql");
        command
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .arg(conninfo)
            .env("HOME", files.dir.path())
            .env("PGCONNECT_TIMEOUT", "10");
        run_checked(command, "psql")
    };
    let conninfo = |host: &str, ca: &Path| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
             sslmode=verify-full sslrootcert={}",
            server.port(),
            ca.display()
        )
    };

    for host in [
        "localhost",
        "db-rw.prod.svc",
        "db-rw.prod.svc.cluster.local",
        "db-ro.prod",
        "db-r",
        "db-2-0.db-pods.prod.svc",
        "db-1-0.db-pods.prod.svc.cluster.local",
    ] {
        let output = psql(conninfo(host, &client_ca))
            .await
            .with_context(|| format!("verify-full as {host}"))?;
        ensure!(output.trim() == "t", "{host}: not over TLS: {output}");
    }

    let wrong_name = psql(conninfo("db-rw.elsewhere.svc", &client_ca)).await;
    match wrong_name {
        Err(error) if format!("{error:#}").contains("does not match host name") => {}
        other => bail!("a foreign host name was accepted or failed otherwise: {other:?}"),
    }
    let wrong_ca = psql(conninfo("db-rw.prod.svc", &stranger_ca)).await;
    match wrong_ca {
        Err(error) if format!("{error:#}").contains("certificate verify failed") => {}
        other => bail!("another Cluster's CA was accepted or failed otherwise: {other:?}"),
    }
    Ok(())
}

/// pgBackRest's TLS server presents the generated server certificate, which the client
/// verifies, and admits the generated client certificate by its CN — and nothing else.
#[tokio::test]
async fn pgbackrest_server_and_client_authenticate_each_other() -> Result<()> {
    let Some(pgbackrest) = require(tusk_testkit::pgbackrest()) else {
        return Ok(());
    };
    let Some(run_as) = require(tusk_testkit::unprivileged_user()) else {
        return Ok(());
    };
    let now = Timestamp::now();
    let desired = plan_secrets(&cluster(), &BTreeMap::new(), now)?;
    let stranger = plan_secrets(&cluster(), &BTreeMap::new(), now)?;
    let pgbr = |key: &str| value(&desired, "db-pgbackrest", key);

    let files = Files::new(run_as.clone())?;
    let ca = files.write("ca.crt", pgbr("ca.crt"))?;
    let server_cert = files.write("server.crt", pgbr(pgbackrest_keys::SERVER_CERT))?;
    let server_key = files.write("server.key", pgbr(pgbackrest_keys::SERVER_KEY))?;
    let client_cert = files.write("client.crt", pgbr(pgbackrest_keys::CLIENT_CERT))?;
    let client_key = files.write("client.key", pgbr(pgbackrest_keys::CLIENT_KEY))?;
    let stranger_ca = files.write("stranger-ca.crt", value(&stranger, "db-ca", "ca.crt"))?;
    let repo = files.mkdir("repo")?;
    for dir in ["log", "lock", "client-log", "client-lock"] {
        files.mkdir(dir)?;
    }

    let port = free_port()?;
    let server_config = files.write(
        "server.conf",
        format!(
            "[global]\n\
             tls-server-address=127.0.0.1\n\
             tls-server-port={port}\n\
             tls-server-cert-file={}\n\
             tls-server-key-file={}\n\
             tls-server-ca-file={}\n\
             tls-server-auth=pgbackrest-client=demo\n\
             repo1-path={}\n\
             log-path={}\n\
             lock-path={}\n\
             log-level-file=off\n\
             log-level-console=detail\n",
            server_cert.display(),
            server_key.display(),
            ca.display(),
            repo.display(),
            files.path("log").display(),
            files.path("lock").display(),
        )
        .as_bytes(),
    )?;
    let client_config = files.write("client.conf", b"[global]\n")?;
    let mut command = daemon_command_as(&pgbackrest.pgbackrest, run_as.as_ref());
    command
        .arg(format!("--config={}", server_config.display()))
        .arg("server")
        .env("HOME", files.dir.path());
    let server = ChildProcess::spawn("pgBackRest server", command)?;
    wait_for_port(&server, port).await?;

    let info = |cert: &Path, key: &Path, ca: &Path| {
        let mut command = tusk_testkit::command_as(&pgbackrest.pgbackrest, run_as.as_ref());
        command
            .args(["--stanza=demo", "--output=json", "--log-level-console=warn"])
            .arg("--repo1-host=localhost")
            .arg("--repo1-host-type=tls")
            .arg(format!("--repo1-host-port={port}"))
            .arg(format!("--repo1-host-cert-file={}", cert.display()))
            .arg(format!("--repo1-host-key-file={}", key.display()))
            .arg(format!("--repo1-host-ca-file={}", ca.display()))
            .arg(format!("--repo1-host-config={}", server_config.display()))
            .arg(format!("--log-path={}", files.path("client-log").display()))
            .arg(format!(
                "--lock-path={}",
                files.path("client-lock").display()
            ))
            .arg("--log-level-file=off")
            .arg(format!("--config={}", client_config.display()))
            .arg("info")
            .env("HOME", files.dir.path());
        run_checked(command, "pgbackrest info")
    };

    // `info` exits 0 even when it failed: read the repository's status (DESIGN.md §7). The
    // repository is empty, so "missing stanza path" (code 1) is the answer the server gives
    // once both sides are authenticated.
    let repo_status = |output: &str| -> Result<(i64, String)> {
        let info: serde_json::Value = serde_json::from_str(output)
            .with_context(|| format!("pgbackrest info printed no JSON: {output}"))?;
        let status = &info[0]["repo"][0]["status"];
        Ok((
            status["code"].as_i64().unwrap_or(-1),
            status["message"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    let (code, message) = repo_status(&info(&client_cert, &client_key, &ca).await?)?;
    ensure!(
        code == 1 && message.contains("missing stanza path"),
        "the generated client was not served: {code} {message}"
    );

    // The server certificate (serverAuth only, another CN) is not a client pgBackRest admits.
    let (code, message) = repo_status(&info(&server_cert, &server_key, &ca).await?)?;
    ensure!(
        code != 1 && message.contains("TLS error"),
        "the server certificate was admitted as a client: {code} {message}"
    );
    // A client that trusts another Cluster's CA refuses this server.
    let (code, message) = repo_status(&info(&client_cert, &client_key, &stranger_ca).await?)?;
    ensure!(
        code != 1 && message.contains("unable to verify certificate"),
        "a server of another CA was trusted: {code} {message}"
    );
    drop(server);
    Ok(())
}

async fn wait_for_port(server: &ChildProcess, port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.exit_status() {
            bail!("the pgBackRest server exited with {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the pgBackRest server did not listen on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

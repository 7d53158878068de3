//! The harness against the real components: PostgreSQL of every major, etcd, s3rver.
//! Each test requires its components: skipped when they are missing, failed under
//! `TUSK_REQUIRE_REAL=1`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tusk_testkit::{
    EtcdServer, PostgresBinaries, PostgresOptions, PostgresServer, PostgresSource, S3Server,
    http_request, is_process_alive, require, run_checked,
};

/// Starts a server from `pg`, checks it is the major asked for, and runs SQL over the
/// protocol and through `psql`.
async fn runs_sql(pg: PostgresBinaries) -> Result<()> {
    let server = PostgresServer::start(&pg, PostgresOptions::default()).await?;
    let client = server.connect().await?;

    let version_num: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    ensure!(
        version_num / 10000 == i32::try_from(pg.major)?,
        "PostgreSQL {} from {} reports server_version_num {version_num}",
        pg.major,
        pg.bin_dir.display()
    );
    let encoding: String = client
        .query_one(
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'postgres'",
            &[],
        )
        .await?
        .get(0);
    ensure!(encoding == "UTF8", "database encoding is {encoding}");

    client
        .batch_execute(
            "CREATE TABLE tusk_t (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO tusk_t VALUES (1, 'tusk'), (2, 'élan');",
        )
        .await?;
    let names: Vec<String> = client
        .query("SELECT name FROM tusk_t ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(names == ["tusk", "élan"], "read back {names:?}");

    let via_psql = server
        .psql("postgres", "SELECT count(*) FROM tusk_t")
        .await?;
    ensure!(via_psql.trim() == "2", "psql printed {via_psql:?}");
    Ok(())
}

#[tokio::test]
async fn postgres_14_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(14)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn postgres_15_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(15)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn debian_postgres_15_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres_from(15, PostgresSource::Debian)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn postgres_16_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(16)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn postgres_17_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(17)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn postgres_18_runs_sql() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(18)) else {
        return Ok(());
    };
    runs_sql(pg).await
}

#[tokio::test]
async fn options_reach_the_server_and_survive_restart_and_reload() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(17)) else {
        return Ok(());
    };
    let options = PostgresOptions::default()
        .with_config("work_mem = '7MB'")
        .with_preload("pg_stat_statements")
        .with_hba("host all shut_out 127.0.0.1/32 reject")
        .with_initdb_arg("--data-checksums");
    let mut server = PostgresServer::start(&pg, options).await?;
    let client = server.connect().await?;
    let work_mem: String = client.query_one("SHOW work_mem", &[]).await?.get(0);
    ensure!(work_mem == "7MB", "work_mem is {work_mem}");
    let checksums: String = client.query_one("SHOW data_checksums", &[]).await?.get(0);
    ensure!(checksums == "on", "data_checksums is {checksums}");
    // pg_stat_statements can be queried only when it was preloaded.
    client
        .batch_execute(
            "CREATE EXTENSION pg_stat_statements;
             SELECT count(*) FROM pg_stat_statements;
             CREATE ROLE shut_out LOGIN;",
        )
        .await?;
    let mut shut_out = server.config("postgres");
    shut_out.user("shut_out");
    let refused = shut_out.connect(tokio_postgres::NoTls).await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|error| format!("{error:?}").contains("pg_hba.conf rejects")),
        "the extra pg_hba line did not reject: {:?}",
        refused.map(|_| ())
    );

    let port = server.port();
    let first_pid = server.pid().context("no pid while running")?;
    if tusk_testkit::running_as_root() {
        let status = std::fs::read_to_string(format!("/proc/{first_pid}/status"))?;
        let uid_line = status.lines().find(|line| line.starts_with("Uid:"));
        ensure!(
            uid_line.is_some_and(|line| line.split_whitespace().nth(1) != Some("0")),
            "postgres runs as root: {uid_line:?}"
        );
    }

    server.restart().await?;
    ensure!(server.port() == port, "restart moved the port");
    ensure!(
        !is_process_alive(first_pid),
        "the old postmaster survived the restart"
    );
    let client = server.connect().await?;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'shut_out'",
            &[],
        )
        .await?
        .get(0);
    ensure!(count == 1, "the role did not survive the restart");

    server.append_config(&["work_mem = '9MB'"])?;
    server.reload().await?;
    let client = server.connect().await?;
    let work_mem: String = client.query_one("SHOW work_mem", &[]).await?.get(0);
    ensure!(work_mem == "9MB", "after reload work_mem is {work_mem}");

    let log = server.read_log()?;
    ensure!(
        log.matches("database system is ready to accept connections")
            .count()
            == 2,
        "the log at {} does not show two starts:\n{log}",
        server.log_file().display()
    );

    server.stop().await?;
    ensure!(server.pid().is_none(), "stopped server still has a pid");
    ensure!(
        server.data_dir().join("PG_VERSION").exists(),
        "stop removed the cluster"
    );
    Ok(())
}

#[test]
fn a_panicking_test_leaves_no_server_behind() -> Result<()> {
    let Some(pg) = require(tusk_testkit::postgres(17)) else {
        return Ok(());
    };
    let (tx, rx) = std::sync::mpsc::channel::<(u32, PathBuf)>();
    let test = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let server = PostgresServer::start(&pg, PostgresOptions::default()).await?;
            let client = server.connect().await?;
            client.batch_execute("SELECT 1").await?;
            let pid = server.pid().context("no pid")?;
            tx.send((pid, server.data_dir().to_owned()))?;
            if server.pid().is_some() {
                panic!("a test failing while its server runs");
            }
            anyhow::Ok(())
        })
    });
    ensure!(test.join().is_err(), "the test thread did not panic");
    let (pid, data_dir) = rx.recv()?;
    ensure!(
        !is_process_alive(pid),
        "postmaster {pid} outlived the panic"
    );
    ensure!(
        !data_dir.exists(),
        "{} outlived the panic",
        data_dir.display()
    );
    Ok(())
}

#[tokio::test]
async fn etcd_answers_a_put_and_a_get() -> Result<()> {
    let Some(binaries) = require(tusk_testkit::etcd()) else {
        return Ok(());
    };
    let etcd = EtcdServer::start(&binaries).await?;
    // etcd's JSON gateway takes base64: "tusk" is dHVzaw==, "ready" is cmVhZHk=.
    let put = http_request(
        etcd.client_addr(),
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"dHVzaw==","value":"cmVhZHk="}"#),
    )
    .await?;
    ensure!(put.status == 200, "put answered {put:?}");
    let get = http_request(
        etcd.client_addr(),
        "POST",
        "/v3/kv/range",
        Some(r#"{"key":"dHVzaw=="}"#),
    )
    .await?;
    ensure!(
        get.status == 200 && get.body.contains(r#""value":"cmVhZHk=""#),
        "get answered {get:?}"
    );
    ensure!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    let pid = etcd.pid();
    drop(etcd);
    ensure!(!is_process_alive(pid), "etcd outlived its guard");
    Ok(())
}

#[tokio::test]
async fn s3rver_answers_over_tls_for_localhost() -> Result<()> {
    let Some(binaries) = require(tusk_testkit::s3rver()) else {
        return Ok(());
    };
    let Some(curl) = require(tusk_testkit::program("curl")) else {
        return Ok(());
    };
    let s3 = S3Server::start(&binaries).await?;
    let object = format!("{}/{}/hello.txt", s3.endpoint(), s3.bucket());
    let mut put = Command::new(&curl);
    put.args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(s3.ca_file())
        .args(["--upload-file", "-", &object]);
    let mut put = tokio::process::Command::from(put);
    put.stdin(std::process::Stdio::piped());
    let mut child = put.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"hello from tusk").await?;
    }
    ensure!(child.wait().await?.success(), "uploading {object} failed");

    let mut list = Command::new(&curl);
    list.args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(s3.ca_file())
        .arg(format!("{}/{}", s3.endpoint(), s3.bucket()));
    let listing = run_checked(list, "curl (list bucket)").await?;
    ensure!(
        listing.contains("<Name>tusk</Name>") && listing.contains("<Key>hello.txt</Key>"),
        "bucket listing: {listing}"
    );

    // The certificate names localhost only, as pgBackRest needs: an IP must not verify.
    let mut by_ip = Command::new(&curl);
    by_ip
        .args(["--silent", "--fail", "--cacert"])
        .arg(s3.ca_file())
        .arg(format!("https://127.0.0.1:{}/", s3.port()));
    ensure!(
        !by_ip.status()?.success(),
        "the certificate verified for 127.0.0.1"
    );
    ensure!(s3.access_key() == "S3RVER" && s3.secret_key() == "S3RVER");
    Ok(())
}

#[tokio::test]
async fn patroni_and_pgbackrest_are_installed() -> Result<()> {
    let Some(patroni) = require(tusk_testkit::patroni()) else {
        return Ok(());
    };
    let Some(pgbackrest) = require(tusk_testkit::pgbackrest()) else {
        return Ok(());
    };
    let mut version = Command::new(&patroni.patroni);
    version.arg("--version");
    let patroni_version = run_checked(version, "patroni --version").await?;
    ensure!(patroni_version.starts_with("patroni "), "{patroni_version}");
    let mut version = Command::new(&pgbackrest.pgbackrest);
    version.arg("version");
    let pgbackrest_version = run_checked(version, "pgbackrest version").await?;
    ensure!(
        pgbackrest_version.starts_with("pgBackRest "),
        "{pgbackrest_version}"
    );
    Ok(())
}

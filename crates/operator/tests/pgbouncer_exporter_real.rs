//! `tusk-operator pgbouncer-exporter`, the binary, as the Pooler pod's sidecar runs it, in
//! front of real PgBouncer (Debian's 1.18, the configuration a Pooler renders) and real
//! PostgreSQL:
//!
//! ```text
//!   test ──GET /metrics──► tusk-operator pgbouncer-exporter ──TLS verify-full──► PgBouncer
//!   shop ──TLS──────────────────────────────────────────────────────────────────► PgBouncer ──► PostgreSQL
//! ```
//!
//! - the password comes from `TUSK_PGBOUNCER_PASSWORD`; `/healthz` answers 200;
//! - after N transactions `/metrics` says `pgbouncer_up 1`, at least N queries for `app`,
//!   and the open client in its pool, in text format 0.0.4;
//! - a second scrape reuses the admin connection (one "connected" log line);
//! - with PgBouncer gone, `/metrics` still answers 200 with `pgbouncer_up 0`, and the log says
//!   why without the password.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_pooler_controller::testing::{
    ADMIN_PASSWORD, APP_PASSWORD, HOST, pooler, real_setup, start_bouncer,
};

const TRANSACTIONS: usize = 30;

/// One HTTP GET: status, head, body; `None` while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect((HOST, port)).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// The value of the sample line `series value`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Kills the sidecar when the test ends, however it ends.
struct Sidecar(std::process::Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_sidecar_serves_real_pgbouncer_metrics_and_says_down_when_it_is_gone() -> Result<()> {
    let Some((pg, pgbouncer, primary)) = real_setup().await? else {
        return Ok(());
    };
    let mut bouncer = start_bouncer(
        &pgbouncer,
        pg.run_as.as_ref(),
        &primary,
        &pooler("    poolMode: Transaction\n"),
    )
    .await?;
    let ca_file = bouncer.dir.path().join("pooler-ca.crt");
    std::fs::write(&ca_file, &bouncer.pooler_ca)?;
    let log_file = bouncer.dir.path().join("exporter.log");
    let listen = tusk_testkit::free_port()?;

    let mut sidecar = Sidecar(
        Command::new(env!("CARGO_BIN_EXE_tusk-operator"))
            .args([
                "pgbouncer-exporter",
                "--listen",
                &format!("{HOST}:{listen}"),
                "--pgbouncer-host",
                HOST,
                "--pgbouncer-port",
                &bouncer.placement.listen_port.to_string(),
                // The name PgBouncer's test certificate carries.
                "--server-name",
                HOST,
                "--ca-file",
                ca_file.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .env("TUSK_PGBOUNCER_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file)?)
            .spawn()
            .context("starting tusk-operator pgbouncer-exporter")?,
    );
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let mut polls = 0;
    while get(listen, "/healthz").await.map(|answer| answer.0) != Some(200) {
        ensure!(
            sidecar.0.try_wait()?.is_none(),
            "the sidecar exited: {}",
            log()
        );
        polls += 1;
        ensure!(polls < 400, "the sidecar never served /healthz: {}", log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let client = bouncer.connect("shop", APP_PASSWORD, "app").await?;
    for i in 0..TRANSACTIONS {
        client.simple_query(&format!("SELECT {i}")).await?;
    }
    let (status, head, body) = get(listen, "/metrics").await.context("no answer")?;
    ensure!(status == 200, "{status}: {body}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    ensure!(
        value(&body, "pgbouncer_up") == Some(1.0),
        "{body}\n{}",
        log()
    );
    let queries = value(
        &body,
        "pgbouncer_stats_queries_pooled_total{database=\"app\"}",
    )
    .with_context(|| format!("no query count for app:\n{body}"))?;
    ensure!(
        queries >= TRANSACTIONS as f64,
        "{queries} after {TRANSACTIONS}"
    );
    ensure!(
        value(
            &body,
            "pgbouncer_pools_client_active_connections{database=\"app\",user=\"shop\"}"
        )
        .is_some_and(|clients| clients >= 1.0),
        "the open client is not in its pool:\n{body}"
    );
    ensure!(!body.contains("database=\"pgbouncer\""), "{body}");

    client.simple_query("SELECT 'again'").await?;
    let (_, _, again) = get(listen, "/metrics").await.context("no answer")?;
    ensure!(
        value(
            &again,
            "pgbouncer_stats_queries_pooled_total{database=\"app\"}"
        )
        .is_some_and(|n| n > queries),
        "{again}"
    );
    let connected = log()
        .matches("connected to PgBouncer's admin console")
        .count();
    ensure!(
        connected == 1,
        "two scrapes opened {connected} connections:\n{}",
        log()
    );

    // PgBouncer gone: still 200, now down.
    drop(client);
    bouncer.process.kill();
    let (status, _, down) = get(listen, "/metrics").await.context("no answer")?;
    ensure!(status == 200, "{status}: {down}");
    ensure!(value(&down, "pgbouncer_up") == Some(0.0), "{down}");
    ensure!(!down.contains("pgbouncer_stats_"), "{down}");
    ensure!(
        sidecar.0.try_wait()?.is_none(),
        "the sidecar exited: {}",
        log()
    );
    drop(sidecar);
    let log = log();
    ensure!(
        log.contains("scraping PgBouncer failed; answering pgbouncer_up 0"),
        "{log}"
    );
    ensure!(
        !log.contains(ADMIN_PASSWORD),
        "the password is in the log:\n{log}"
    );
    Ok(())
}

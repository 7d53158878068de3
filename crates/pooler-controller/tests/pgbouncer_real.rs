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
//!   connected and keeps working;
//! - `PAUSE` holds that client's next query until `RESUME`;
//! - under the pod's entrypoint, SIGTERM (what the kubelet sends PID 1) drains: clients are
//!   still served during the stop delay, a transaction in flight commits, then PgBouncer exits
//!   with 0 — where PgBouncer's own SIGTERM cuts that transaction.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tusk_pooler_controller::admin;
use tusk_pooler_controller::testing::{
    APP_PASSWORD, Bouncer, SUPERUSER_PASSWORD, bouncer_log, pooler, prepare_auth, real_setup,
    start_bouncer, start_bouncer_as_in_pod, start_primary,
};
use tusk_testkit::Signal;

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> Result<String> {
    let messages = client.simple_query(sql).await?;
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    bail!("{sql}: no row")
}

#[tokio::test]
async fn rendered_pgbouncer_pools_tls_clients_authenticated_by_auth_query() -> Result<()> {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(15)) else {
        return Ok(());
    };
    let Some(binary) = tusk_testkit::require(tusk_testkit::pgbouncer()) else {
        return Ok(());
    };
    let primary = start_primary(&pg).await?;
    let superuser = primary.server.connect().await?;

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
    ensure!(
        admin::setting(&admin, "default_pool_size")
            .await?
            .as_deref()
            == Some("20")
    );
    bouncer.write_ini(&pooler(
        "    poolMode: Transaction\n    defaultPoolSize: 5\n",
    ))?;
    admin::reload(&admin).await?;
    ensure!(
        admin::setting(&admin, "default_pool_size")
            .await?
            .as_deref()
            == Some("5")
    );
    ensure!(
        scalar(&client, "SELECT 41 + 1").await? == "42",
        "the client open across the RELOAD stopped working"
    );

    // PAUSE (spec.paused): the connected client's next query waits, RESUME lets it finish.
    admin::pause(&admin).await?;
    let waiting = tokio::spawn(async move {
        let result = client.simple_query("SELECT 'after the pause'").await;
        (client, result)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiting.is_finished(),
        "a query ran while PgBouncer was paused"
    );
    admin::resume(&admin).await?;
    let (_client, result) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .context("the query did not finish after RESUME")??;
    result.context("the query held by PAUSE failed")?;
    ensure!(bouncer.process.exit_status().is_none(), "PgBouncer exited");
    Ok(())
}

#[tokio::test]
async fn sigterm_in_the_pod_lets_the_transaction_in_flight_commit() -> Result<()> {
    let Some((pg, pgbouncer, primary)) = real_setup().await? else {
        return Ok(());
    };
    let transaction = pooler("    poolMode: Transaction\n");
    let run_as = pg.run_as.as_ref();

    // PgBouncer's own SIGTERM: the open transaction is cut (what the entrypoint is for).
    let bare = start_bouncer(&pgbouncer, run_as, &primary, &transaction).await?;
    let client = bare.connect("shop", APP_PASSWORD, "app").await?;
    client.batch_execute("BEGIN; SELECT 1").await?;
    bare.process.signal(Signal::TERM)?;
    exited(&bare, Duration::from_secs(10)).await?;
    ensure!(
        client.batch_execute("COMMIT").await.is_err(),
        "a transaction survived PgBouncer's SIGTERM: {}",
        bouncer_log(&bare)
    );

    // Under the pod's entrypoint, as the kubelet stops the container.
    let bouncer = start_bouncer_as_in_pod(&pgbouncer, run_as, &primary, &transaction, 2).await?;
    let client = bouncer.connect("shop", APP_PASSWORD, "app").await?;
    // (Two calls: in one simple query, BEGIN would take the CREATE into its transaction.)
    client.batch_execute("CREATE TABLE drained (n int)").await?;
    client
        .batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await?;
    bouncer.process.signal(Signal::TERM)?;
    // During the stop delay the pod may still get clients (endpoints are being updated).
    let late = bouncer
        .connect("shop", APP_PASSWORD, "app")
        .await
        .context("a client arriving during the stop delay")?;
    ensure!(scalar(&late, "SELECT count(*) FROM drained").await? == "0");
    drop(late);
    // Then PgBouncer shuts down safely: it waits for the transaction in flight …
    let deadline = Instant::now() + Duration::from_secs(15);
    while !bouncer_log(&bouncer).contains("SIGINT") {
        ensure!(
            Instant::now() < deadline,
            "PgBouncer was not sent SIGINT: {}",
            bouncer_log(&bouncer)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        bouncer.process.exit_status().is_none(),
        "PgBouncer left with a transaction open: {}",
        bouncer_log(&bouncer)
    );
    client
        .batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .with_context(|| format!("the transaction in flight: {}", bouncer_log(&bouncer)))?;
    // … and once it is back, exits, and the entrypoint with it, with PgBouncer's status.
    let status = exited(&bouncer, Duration::from_secs(10)).await?;
    ensure!(status.success(), "the entrypoint exited with {status}");
    let superuser = primary.server.connect_db("app").await?;
    let rows: i64 = superuser
        .query_one("SELECT count(*) FROM drained", &[])
        .await?
        .get(0);
    ensure!(rows == 2, "{rows} rows committed, not 2");
    Ok(())
}

async fn exited(bouncer: &Bouncer, within: Duration) -> Result<std::process::ExitStatus> {
    bouncer
        .process
        .wait_timeout_async(within)
        .await
        .with_context(|| format!("PgBouncer still runs: {}", bouncer_log(bouncer)))
}

//! The metrics exporter against real PgBouncer (Debian's 1.18) in front of real PostgreSQL,
//! both started with the configuration the Pooler renders:
//!
//! ```text
//!   shop ──TLS──► PgBouncer ──TLS──► PostgreSQL
//!   exporter::scrape ──TLS, tusk_pooler_admin──► PgBouncer admin console (SHOW …)
//! ```
//!
//! - after N transactions through PgBouncer the scrape says `pgbouncer_up 1` and counts at
//!   least N queries and transactions for database `app`;
//! - the client still connected shows in the pool of (`app`, `shop`), and the server
//!   connection it used in `app`'s current connections;
//! - PgBouncer's own `pgbouncer` database and names of databases that do not exist — one a
//!   client's login still waits for, one the admin user was refused with a wrong password —
//!   get no series, and the latter two are counted as omitted;
//! - every line is a HELP, a TYPE or a sample of the family just typed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use tusk_pooler_controller::auth::ADMIN_ROLE;
use tusk_pooler_controller::exporter;
use tusk_pooler_controller::testing::{
    APP_PASSWORD, bouncer_log, pooler, real_setup, start_bouncer,
};

/// Transactions the test runs through PgBouncer.
const TRANSACTIONS: usize = 25;

/// Samples by `name{labels}`, after checking the text is well formed.
fn parse_samples(text: &str) -> Result<BTreeMap<String, f64>> {
    let mut typed = None;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed = parts.next().map(str::to_owned);
            ensure!(
                matches!(parts.next(), Some("counter" | "gauge")),
                "bad TYPE line {line:?}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("not a sample: {line:?}"))?;
        let name = series.split('{').next().unwrap_or_default();
        ensure!(
            typed.as_deref() == Some(name),
            "{line:?} follows TYPE {typed:?}"
        );
        let value: f64 = value
            .parse()
            .with_context(|| format!("not a number: {line:?}"))?;
        out.insert(series.to_owned(), value);
    }
    Ok(out)
}

#[tokio::test]
async fn scrape_of_real_pgbouncer_counts_transactions_and_open_clients() -> Result<()> {
    let Some((pg, pgbouncer, primary)) = real_setup().await? else {
        return Ok(());
    };
    let bouncer = start_bouncer(
        &pgbouncer,
        pg.run_as.as_ref(),
        &primary,
        &pooler("    poolMode: Transaction\n    defaultPoolSize: 5\n"),
    )
    .await?;

    let client = bouncer
        .connect("shop", APP_PASSWORD, "app")
        .await
        .with_context(|| format!("logging in through PgBouncer: {}", bouncer_log(&bouncer)))?;
    for i in 0..TRANSACTIONS {
        client.simple_query(&format!("SELECT {i}")).await?;
    }
    // A login to a database that does not exist: PgBouncer makes an entry for the name and
    // holds the client while its auth_query waits for a server connection that cannot be
    // made (until query_wait_timeout, so the test does not wait for the refusal). The
    // exporter must give that name no series.
    let doomed = {
        let target = bouncer.target("shop", APP_PASSWORD);
        tokio::spawn(async move { target.connect("not_a_database", "doomed").await.is_ok() })
    };
    // A client claiming to be the admin user, with a wrong password, to another such name:
    // refused at once, but PgBouncer made a pool of the name before checking the password.
    ensure!(
        bouncer
            .connect(ADMIN_ROLE, "not the password", "not_a_database_either")
            .await
            .is_err(),
        "the admin user got in with a wrong password"
    );
    let admin = bouncer.admin().await?;
    let mut polls = 0;
    loop {
        let observed = exporter::observe(&admin).await?;
        let shown = |name| {
            observed
                .stats
                .iter()
                .chain(&observed.pools)
                .any(|row| row.get("database") == Some(name))
        };
        ensure!(shown("not_a_database_either"), "{observed:#?}");
        if shown("not_a_database") {
            break;
        }
        ensure!(!doomed.is_finished(), "the doomed login ended early");
        polls += 1;
        ensure!(
            polls < 400,
            "PgBouncer never showed the name of the doomed login"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let text = exporter::scrape(&admin).await?;
    eprintln!("{text}");
    let samples = parse_samples(&text)?;
    let sample = |series: &str| {
        samples
            .get(series)
            .copied()
            .with_context(|| format!("no {series} in\n{text}"))
    };

    ensure!(sample("pgbouncer_up")? == 1.0);
    ensure!(sample("pgbouncer_version_info{version=\"1.18.0\"}")? == 1.0);
    let queries = sample("pgbouncer_stats_queries_pooled_total{database=\"app\"}")?;
    ensure!(
        queries >= TRANSACTIONS as f64,
        "{queries} queries counted after {TRANSACTIONS}"
    );
    let transactions = sample("pgbouncer_stats_sql_transactions_pooled_total{database=\"app\"}")?;
    ensure!(
        transactions >= TRANSACTIONS as f64,
        "{transactions} transactions counted after {TRANSACTIONS}"
    );
    let busy = sample("pgbouncer_stats_queries_duration_seconds_total{database=\"app\"}")?;
    ensure!(
        busy > 0.0 && busy < queries,
        "query time {busy} s is not in seconds"
    );
    ensure!(sample("pgbouncer_stats_sent_bytes_total{database=\"app\"}")? > 0.0);

    // The open client is in its pool; idle between transactions, PgBouncer counts it active.
    let pool = "{database=\"app\",user=\"shop\"}";
    let clients = sample(&format!("pgbouncer_pools_client_active_connections{pool}"))?
        + sample(&format!("pgbouncer_pools_client_waiting_connections{pool}"))?;
    ensure!(
        clients >= 1.0,
        "the open client is not in its pool: {clients}"
    );
    let servers: f64 = [
        "server_active",
        "server_idle",
        "server_used",
        "server_testing",
    ]
    .iter()
    .map(|state| sample(&format!("pgbouncer_pools_{state}_connections{pool}")))
    .sum::<Result<f64>>()?;
    ensure!(
        servers >= 1.0,
        "no server connection in the pool: {servers}"
    );
    ensure!(servers <= 5.0, "more server connections than the pool size");
    ensure!(sample("pgbouncer_databases_current_connections{database=\"app\"}")? >= 1.0);
    ensure!(sample("pgbouncer_databases_pool_size{database=\"app\"}")? == 5.0);
    ensure!(
        sample("pgbouncer_pools_client_maxwait_seconds{database=\"app\",user=\"shop\"}")? >= 0.0
    );
    ensure!(sample("pgbouncer_config_max_client_connections")? == 1000.0);
    ensure!(
        sample("pgbouncer_used_clients")? >= 2.0,
        "the client and the console"
    );

    ensure!(
        !text.contains("database=\"pgbouncer\""),
        "the admin console's database got series"
    );
    ensure!(
        !text.contains("not_a_database"),
        "a name from a failed or waiting login got series"
    );
    ensure!(
        !text.contains(ADMIN_ROLE),
        "the admin user's pool got series"
    );
    ensure!(sample("pgbouncer_exporter_omitted_databases")? >= 2.0);

    // The admin connection is reusable: a second scrape on it counts the client's next query.
    client.simple_query("SELECT 'one more'").await?;
    let again = parse_samples(&exporter::scrape(&admin).await?)?;
    ensure!(
        again["pgbouncer_stats_queries_pooled_total{database=\"app\"}"] >= queries + 1.0,
        "the second scrape did not count the next query"
    );
    doomed.abort();
    ensure!(bouncer.process.exit_status().is_none(), "PgBouncer exited");
    Ok(())
}

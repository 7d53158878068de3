//! tusk's exporter queries (src/exporter_queries.yaml) against real PostgreSQL 15 and 18 —
//! the oldest and newest supported majors — run as a `pg_monitor` member like the exporter's
//! `tusk_monitor` role: every query runs, returns exactly the columns its metrics declare,
//! and the values mean what the docs say (archiving failing, the backup age after
//! `pg_backup_start`/`pg_backup_stop`, connections, database sizes, transaction ID age).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_yaml_ng::{Mapping, Value};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tusk_cluster_controller::plan::monitoring::TUSK_QUERIES;
use tusk_testkit::{PostgresOptions, PostgresServer, postgres, require};

/// Query name → (SQL, declared columns in order).
fn queries() -> BTreeMap<String, (String, Vec<String>)> {
    let parsed: Mapping = serde_yaml_ng::from_str(TUSK_QUERIES).unwrap();
    parsed
        .iter()
        .map(|(name, q)| {
            let sql = q.get("query").and_then(Value::as_str).unwrap().to_owned();
            let columns = q
                .get("metrics")
                .and_then(Value::as_sequence)
                .unwrap()
                .iter()
                .map(|m| {
                    let (column, _) = m.as_mapping().unwrap().iter().next().unwrap();
                    column.as_str().unwrap().to_owned()
                })
                .collect();
            (name.as_str().unwrap().to_owned(), (sql, columns))
        })
        .collect()
}

/// Runs `sql`; every row as column → text value (None for NULL).
async fn rows(client: &Client, sql: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {e:?}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn number(row: &BTreeMap<String, Option<String>>, column: &str) -> Option<f64> {
    row[column].as_deref().map(|v| v.parse().unwrap())
}

async fn monitor_client(server: &PostgresServer) -> Client {
    let mut config = server.config("postgres");
    config.user("tusk_monitor").password("monitor-pass");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn scenario(major: u32) {
    let Some(binaries) = require(postgres(major)) else {
        return;
    };
    let started = Instant::now();
    let options = PostgresOptions::default()
        .with_config("archive_mode = on")
        .with_config("archive_command = 'true'")
        .with_config("wal_level = replica")
        .with_hba("host all tusk_monitor 127.0.0.1/32 scram-sha-256");
    let server = PostgresServer::start(&binaries, options).await.unwrap();
    let admin = server.connect().await.unwrap();
    for statement in [
        "CREATE ROLE tusk_monitor LOGIN PASSWORD 'monitor-pass' IN ROLE pg_monitor",
        "CREATE DATABASE app",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let monitor = monitor_client(&server).await;

    // Every query runs as pg_monitor and returns exactly its declared columns.
    let queries = queries();
    for (name, (sql, columns)) in &queries {
        for row in rows(&monitor, sql).await {
            let got: Vec<&String> = row.keys().collect();
            let mut want: Vec<&String> = columns.iter().collect();
            want.sort();
            assert_eq!(got, want, "PostgreSQL {major}: columns of {name}");
        }
    }
    let run = |name: &str| queries[name].0.clone();

    // Role: a primary.
    let role = rows(&monitor, &run("tusk_pg_role")).await;
    assert_eq!(number(&role[0], "primary"), Some(1.0));
    assert_eq!(number(&role[0], "replica"), Some(0.0));
    // No standby, so no replication rows; not a replica, so no replica row.
    assert!(rows(&monitor, &run("tusk_pg_replication")).await.is_empty());
    assert!(rows(&monitor, &run("tusk_pg_replica")).await.is_empty());

    // Connections against max_connections.
    let conns = rows(&monitor, &run("tusk_pg_connections")).await;
    assert!(number(&conns[0], "used").unwrap() >= 2.0, "admin + monitor");
    assert_eq!(number(&conns[0], "max"), Some(100.0));

    // Databases: sizes and transaction ID age, per database.
    let dbs = rows(&monitor, &run("tusk_pg_database")).await;
    let app = dbs
        .iter()
        .find(|r| r["database"].as_deref() == Some("app"))
        .expect("a row for database app");
    assert!(number(app, "size_bytes").unwrap() > 1_000_000.0);
    assert!(number(app, "xid_age").unwrap() >= 0.0);
    assert!(
        !dbs.iter()
            .any(|r| r["database"].as_deref() == Some("template0")),
        "template0 does not allow connections and is left out"
    );

    // Before any backup: no history file, age unknown (NULL → NaN in the exporter).
    let backup = rows(&monitor, &run("tusk_pg_backup")).await;
    assert_eq!(number(&backup[0], "history_files"), Some(0.0));
    assert_eq!(backup[0]["last_age_seconds"], None);

    // A base backup the way pgBackRest takes one: pg_backup_start/stop on the primary.
    for statement in [
        "SELECT pg_backup_start('pgBackRest backup started at e2e', true)",
        "SELECT * FROM pg_backup_stop(true)",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let backup = rows(&monitor, &run("tusk_pg_backup")).await;
    assert_eq!(number(&backup[0], "history_files"), Some(1.0));
    let age = number(&backup[0], "last_age_seconds").unwrap();
    assert!((0.0..30.0).contains(&age), "backup age {age}");

    // Archiving works: a switched segment is archived, nothing waits, nothing fails.
    admin
        .batch_execute("SELECT pg_switch_wal();")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let archiver = rows(&monitor, &run("tusk_pg_archiver")).await;
        let row = &archiver[0];
        if number(row, "archived_count").unwrap() >= 1.0 {
            assert_eq!(number(row, "enabled"), Some(1.0));
            assert_eq!(number(row, "failing"), Some(0.0));
            assert!(number(row, "last_archived_age_seconds").unwrap() < 30.0);
            break;
        }
        assert!(Instant::now() < deadline, "nothing archived: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Archiving breaks: failing turns 1 and segments pile up as .ready.
    for statement in [
        "ALTER SYSTEM SET archive_command = 'false'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .batch_execute("CREATE TABLE t AS SELECT 1 AS x; SELECT pg_switch_wal();")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let archiver = rows(&monitor, &run("tusk_pg_archiver")).await;
        let row = &archiver[0];
        if number(row, "failing") == Some(1.0) {
            assert!(number(row, "failed_count").unwrap() >= 1.0);
            assert!(number(row, "ready_count").unwrap() >= 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archiving never reported failing: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An open transaction holding an ID shows up as the oldest transaction.
    let holder = server.connect().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let oldest = rows(&monitor, &run("tusk_pg_oldest_transaction")).await;
    assert!(number(&oldest[0], "age_seconds").unwrap() >= 0.0);
    assert!(number(&oldest[0], "xid_age").unwrap() >= 1.0);

    eprintln!(
        "exporter queries on PostgreSQL {major}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn exporter_queries_on_postgres_15() {
    scenario(15).await;
}

#[tokio::test]
async fn exporter_queries_on_postgres_18() {
    scenario(18).await;
}

//! `cargo xtask bench users`: the PostgresUser controller's SQL engine against a real local
//! PostgreSQL (testkit), for 1,000 roles with generated passwords.
//!
//! ```text
//!  naive:  one connection, per role: CREATE ROLE; ALTER ROLE (attributes); ALTER ROLE
//!          PASSWORD '<verifier>'; COMMENT ON ROLE — unconditional, each its own transaction
//!  tusk:   engine::sync_roles — one catalog read, plans, batches of 50 roles per transaction
//!          over a few connections, password statements only where the password differs
//!  no-op:  the same 1,000 roles again (must write nothing: plans empty, WAL does not move)
//!  floors: one verifier (client CPU) and one password statement (server CPU), each timed
//! ```
//!
//! Prints `name=value` lines: `create_1000_seconds=`, `noop_pass_1000_seconds=`,
//! `speedup_vs_naive=` and the settings they were measured with. Goals (issue 5): create ≤ 3 s,
//! no-op ≤ 0.2 s with zero writes, speedup ≥ 5.
//!
//! The timed code must be optimised, so a debug `cargo xtask` re-runs itself as a release
//! build first.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tusk_api::user::UserDatabase;
use tusk_user_controller::engine::{RoleRequest, sync_roles};
use tusk_user_controller::password::{PasswordChecks, generate_password, scram_verifier};
use tusk_user_controller::plan::{DesiredRole, owner_marker};
use tusk_user_controller::sql::{quote_ident, quote_literal};

/// Roles per run.
const ROLES: usize = 1000;
/// Roles per transaction in the tusk pass.
const BATCH: usize = 50;

/// Runs the benchmark with `connections` parallel connections for the tusk pass.
pub(crate) fn run(root: &Path, connections: usize, major: u32) -> Result<()> {
    if cfg!(debug_assertions) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .current_dir(root)
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "xtask",
                "--",
                "bench",
                "users",
            ])
            .args(["--connections", &connections.to_string()])
            .args(["--major", &major.to_string()])
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("the release build of the benchmark failed");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(bench(connections.max(1), major))
}

fn request(prefix: &str, index: usize) -> Result<RoleRequest> {
    let name = format!("{prefix}_{index:04}");
    let uid = format!("00000000-0000-0000-0000-{index:012}");
    let owner_marker = owner_marker(&uid);
    Ok(RoleRequest {
        desired: DesiredRole {
            comment: format!(
                "{owner_marker} (PostgresUser bench/{name}, managed by tusk; do not edit)"
            ),
            owner_marker,
            name,
            login: true,
            createdb: false,
            createrole: false,
            inherit: true,
            connection_limit: -1,
            valid_until: None,
            known_oid: None,
            databases: Vec::<UserDatabase>::new(),
        },
        password: generate_password().context("generating a password")?,
        other_databases: Vec::new(),
    })
}

async fn bench(connections: usize, major: u32) -> Result<()> {
    let Some(binaries) = tusk_testkit::require(tusk_testkit::postgres(major)) else {
        bail!("PostgreSQL {major} is not installed: run `cargo xtask install`");
    };
    // Durable commits, as in production: the naive loop's thousands of commits pay for it.
    let options = tusk_testkit::PostgresOptions::default()
        .with_config("fsync = on")
        .with_config("synchronous_commit = on");
    let server = tusk_testkit::PostgresServer::start(&binaries, options).await?;
    let target = tusk_runtime::postgres::PrimaryTarget {
        host: server.host().to_owned(),
        port: server.port(),
        address: None,
        ca_pem: None,
        user: "postgres".to_owned(),
        password: String::new(),
    };
    let pool = tusk_user_controller::primary::Connections::new("tusk-bench");
    let clients = pool
        .clients("bench", &target, "postgres", connections)
        .await?;
    let admin = server.connect().await?;

    // tusk: create.
    let checks = Arc::new(PasswordChecks::default());
    let first = tusk_requests()?;
    let passwords: Vec<String> = first.iter().map(|r| r.password.clone()).collect();
    let started = Instant::now();
    let outcomes = sync_roles(&clients, &checks, "bench", first, BATCH).await?;
    let create_seconds = started.elapsed().as_secs_f64();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} roles failed to be created: {:?}",
            outcomes.iter().find(|o| o.result.is_err())
        );
    }
    let created: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tusk\\_%'",
            &[],
        )
        .await?
        .get(0);
    if created != ROLES as i64 {
        bail!("expected {ROLES} roles, found {created}");
    }

    // tusk: no-op pass, same passwords (as the Secrets hold them), checks remembered.
    let (noop_seconds, noop_writes, wal_bytes) =
        noop_pass(&clients, &checks, &target, &passwords).await?;
    // And once more as after an operator restart: every stored verifier checked (PBKDF2).
    let (cold_seconds, cold_writes, _) = noop_pass(
        &clients,
        &Arc::new(PasswordChecks::default()),
        &target,
        &passwords,
    )
    .await?;

    // Naive: the loop an operator without a plan runs.
    let naive: Vec<RoleRequest> = (0..ROLES)
        .map(|i| request("naive", i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let naive_client = target.connect("postgres", "naive").await?;
    for request in &naive {
        let role = quote_ident(&request.desired.name);
        let verifier = scram_verifier(&request.password);
        naive_client
            .batch_execute(&format!("CREATE ROLE {role}"))
            .await?;
        naive_client
            .batch_execute(&format!(
                "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1"
            ))
            .await?;
        naive_client
            .batch_execute(&format!(
                "ALTER ROLE {role} PASSWORD {}",
                quote_literal(&verifier)
            ))
            .await?;
        naive_client
            .batch_execute(&format!(
                "COMMENT ON ROLE {role} IS {}",
                quote_literal(&request.desired.comment)
            ))
            .await?;
    }
    let naive_seconds = started.elapsed().as_secs_f64();

    // The floors: the client's cost of one verifier, the server's of one password statement.
    let started = Instant::now();
    for request in naive.iter().take(100) {
        scram_verifier(&request.password);
    }
    let verifier_ms = started.elapsed().as_secs_f64() * 10.0;
    let verifiers: Vec<String> = naive
        .iter()
        .take(100)
        .map(|r| scram_verifier(&r.password))
        .collect();
    let started = Instant::now();
    for (request, verifier) in naive.iter().zip(&verifiers) {
        naive_client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_ident(&request.desired.name),
                quote_literal(verifier)
            ))
            .await?;
    }
    let statement_ms = started.elapsed().as_secs_f64() * 10.0;

    println!(
        "settings: postgres={} roles={ROLES} connections={connections} batch={BATCH} cores={} tls=off fsync=on build=release",
        binaries.version,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("client_verifier_ms={verifier_ms:.2}");
    println!("server_password_statement_ms={statement_ms:.2}");
    println!("create_1000_seconds={create_seconds:.3}");
    println!("noop_pass_1000_seconds={noop_seconds:.3}");
    println!("noop_pass_roles_written={noop_writes}");
    println!("noop_pass_wal_bytes={wal_bytes}");
    println!("noop_pass_cold_cache_1000_seconds={cold_seconds:.3}");
    println!("noop_pass_cold_cache_roles_written={cold_writes}");
    println!("naive_create_1000_seconds={naive_seconds:.3}");
    println!("speedup_vs_naive={:.1}", naive_seconds / create_seconds);
    println!("goals: create_1000_seconds<=3 noop_pass_1000_seconds<=0.2 speedup_vs_naive>=5");
    drop(server);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

fn tusk_requests() -> Result<Vec<RoleRequest>> {
    (0..ROLES).map(|i| request("tusk", i)).collect()
}

/// One pass over the tusk roles with their current passwords: seconds, roles written, WAL
/// bytes written meanwhile.
async fn noop_pass(
    clients: &[Arc<tokio_postgres::Client>],
    checks: &Arc<PasswordChecks>,
    target: &tusk_runtime::postgres::PrimaryTarget,
    passwords: &[String],
) -> Result<(f64, usize, i64)> {
    let mut requests = tusk_requests()?;
    for (request, password) in requests.iter_mut().zip(passwords) {
        request.password = password.clone();
    }
    let before = admin_lsn(target).await?;
    let started = Instant::now();
    let outcomes = sync_roles(clients, checks, "bench", requests, BATCH).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = admin_lsn(target).await?;
    let client = target.connect("postgres", "bench-lsn").await?;
    let wal_bytes: i64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::int8",
            &[&after, &before],
        )
        .await?
        .get(0);
    let written = outcomes
        .iter()
        .filter(|o| o.result.as_ref().map_or(true, |r| !r.changes.is_empty()))
        .count();
    Ok((seconds, written, wal_bytes))
}

/// The server's current WAL position, read on a connection of its own.
async fn admin_lsn(target: &tusk_runtime::postgres::PrimaryTarget) -> Result<String> {
    let client = target.connect("postgres", "bench-lsn").await?;
    Ok(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0))
}

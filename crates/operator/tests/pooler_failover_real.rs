//! A Patroni failover behind PgBouncer, survived by reconnecting clients — real processes
//! only (DESIGN.md §6, layer 3): three Patroni + PostgreSQL nodes from the configuration the
//! Cluster controller renders (synchronous replication, etcd as the DCS), and Debian's
//! PgBouncer from the configuration the Pooler controller renders, in transaction mode.
//!
//! ```text
//!  20 clients (shop, SCRAM via auth_query) ──TLS verify-full──► PgBouncer 127.0.0.1:<port>
//!    BEGIN; INSERT … RETURNING inet_server_port(), pg_is_in_recovery(); COMMIT   (loop)
//!                                                   │ TLS verify-full, host "localhost"
//!                                                   ▼
//!                    stand-in for the `-rw` Service: localhost:<port> (this test, tokio)
//!                    every new connection → the node whose Patroni answers 200 on /primary
//!                    (polled every 200 ms); its connections are cut when that changes
//!                                                   ▼
//!                               node-1 (leader) · node-2 · node-3
//! ```
//!
//! The leader's Patroni and PostgreSQL are killed (`kill -9` of the node's process group, as
//! a crashed pod). Then, with PgBouncer never restarted: a client whose transaction fails
//! drops its connection and reconnects to the same PgBouncer address; within
//! [`RECOVERY_BOUND`] every client commits again, on the new primary (another node's port, not
//! in recovery); and every commit acknowledged before the kill is on the new primary
//! (synchronous mode promotes only the synchronous standby, so nothing acknowledged is lost).
//!
//! The server certificate is the one the Cluster controller issues; of its names, `localhost`
//! is the one that fits loopback, so PgBouncer's `[databases]` host is `localhost` (the
//! stand-in listens on 127.0.0.1, and on ::1 too when it can, wherever `localhost` resolves).
//!
//! Prints the measured figures (`failover_*` lines) to stderr; durations come from `Instant`.
//! Most of the recovery time is PgBouncer's, not Patroni's: a server login tried while the
//! Service has no endpoint fails, and PgBouncer then waits `server_login_retry` (15 s by
//! default; the Pooler does not render it) before it tries again, answering clients
//! "server login has been failing" meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../cluster-controller/tests/support/local_patroni.rs"]
mod local_patroni;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use local_patroni::{Components, LocalCluster, api_request, ca_file};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::SimpleQueryMessage;
use tusk_api::Cluster;
use tusk_pooler_controller::auth;
use tusk_pooler_controller::testing::{
    APP_PASSWORD, AUTH_PASSWORD, Bouncer, Upstream, bouncer_log, pooler, start_bouncer_to,
};

/// Clients writing at once, each on its own connection to PgBouncer.
const CLIENTS: usize = 20;
/// Pause between one client's transactions: ~200 transactions a second in all, which two
/// cores carry with synchronous replication.
const PAUSE: Duration = Duration::from_millis(100);
/// A transaction that takes longer than this counts as failed (its connection is dropped).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// From the kill until every client has committed on the new primary.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How often the `-rw` stand-in asks each node's Patroni whether it is the primary.
const POLL: Duration = Duration::from_millis(200);
/// The host PgBouncer connects to: a name the rendered server certificate carries.
const UPSTREAM_HOST: &str = "localhost";

/// Fast timing within the API's limits (loop_wait + 2 × retry_timeout ≤ ttl), as in
/// cluster-controller's patroni_real.
const TTL: u64 = 5;
const LOOP_WAIT: u64 = 1;

fn test_cluster(major: i32) -> Cluster {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: shop}}
spec:
  postgresVersion: {major}
  instances: 3
  storage: {{size: 1Gi}}
  replication: {{mode: Synchronous, synchronousNodeCount: 1}}
  highAvailability: {{ttlSeconds: {TTL}, loopWaitSeconds: {LOOP_WAIT}, retryTimeoutSeconds: 2}}
"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_failover_behind_pgbouncer_is_survived_by_reconnecting_clients() -> Result<()> {
    let Some(components) = tusk_testkit::require(Components::find()) else {
        return Ok(());
    };
    let Some(pgbouncer) = tusk_testkit::require(tusk_testkit::pgbouncer()) else {
        return Ok(());
    };
    let started = Instant::now();
    let mut local = LocalCluster::start(&components, test_cluster(components.major())).await?;
    let result = fail_over_behind_pgbouncer(&mut local, &components, &pgbouncer.pgbouncer).await;
    if result.is_err() {
        eprintln!("{}", local.log_tails(40));
    }
    eprintln!(
        "failover_test_seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    result
}

async fn fail_over_behind_pgbouncer(
    local: &mut LocalCluster,
    components: &Components,
    pgbouncer: &std::path::Path,
) -> Result<()> {
    let old_leader = local.wait_healthy(2, Duration::from_secs(90)).await?;
    let old_port = local.nodes[old_leader].pg_port;
    prepare_database(local, old_leader).await?;

    let members: Vec<Member> = local
        .nodes
        .iter()
        .map(|node| Member {
            api: node.api(),
            postgres: SocketAddr::from(([127, 0, 0, 1], node.pg_port)),
        })
        .collect();
    let service = RwService::start(members).await?;
    service
        .wait_for(Some(old_leader), Duration::from_secs(10))
        .await?;

    let server_ca = std::fs::read_to_string(ca_file(&local.nodes[old_leader]))?;
    let bouncer = start_bouncer_to(
        pgbouncer,
        components.postgres.run_as.as_ref(),
        &Upstream {
            host: UPSTREAM_HOST,
            port: service.port,
            ca_pem: &server_ca,
        },
        &pooler("    poolMode: Transaction\n"),
    )
    .await?;
    let bouncer_pid = bouncer.process.pid();

    let result = drive_clients(local, &service, &bouncer, old_leader, old_port).await;
    if result.is_err() {
        eprintln!("--- pgbouncer ---\n{}", tail(&bouncer_log(&bouncer), 40));
    }
    let report = result?;

    // PgBouncer served throughout: the process started before the kill is still running.
    ensure!(
        bouncer.process.exit_status().is_none() && bouncer.process.pid() == bouncer_pid,
        "PgBouncer (pid {bouncer_pid}) did not survive the failover: {}",
        tail(&bouncer_log(&bouncer), 40)
    );
    check_acknowledged_rows_survived(local, &report).await?;
    eprintln!("failover_pgbouncer_pid_unchanged={bouncer_pid}");
    Ok(())
}

/// On the leader, as a Pooler and a PostgresUser would leave it: the auth role and its lookup
/// function in every database (the controller's SQL), the application role `shop` (SCRAM)
/// owning database `app`, and the table the clients write.
async fn prepare_database(local: &LocalCluster, leader: usize) -> Result<()> {
    let superuser = local.connect(leader).await?;
    auth::ensure_role(&superuser, AUTH_PASSWORD).await?;
    superuser
        .batch_execute(&format!(
            "CREATE ROLE shop LOGIN PASSWORD '{}'",
            auth::scram_verifier(APP_PASSWORD)
        ))
        .await?;
    superuser
        .batch_execute("CREATE DATABASE app OWNER shop")
        .await?;
    let databases: Vec<String> = superuser
        .query(auth::DATABASES_QUERY, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(databases.contains(&"app".to_owned()), "{databases:?}");
    for database in &databases {
        let client = connect_db(local, database).await?;
        auth::ensure_lookup(&client).await?;
    }
    connect_db(local, "app")
        .await?
        .batch_execute(
            "CREATE TABLE ledger (client int, seq int, PRIMARY KEY (client, seq));
             ALTER TABLE ledger OWNER TO shop;",
        )
        .await?;
    Ok(())
}

/// A superuser connection to `database` on whichever node accepts writes.
async fn connect_db(local: &LocalCluster, database: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = local
        .primary_config()
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to database {database} on the primary"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// One commit PgBouncer acknowledged.
#[derive(Debug, Clone)]
struct Ack {
    seq: i32,
    /// `inet_server_port()`: which node ran it.
    port: u16,
    in_recovery: bool,
    at: Instant,
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Log {
    acks: Vec<Vec<Ack>>,
    failed_transactions: Vec<usize>,
    /// Connections opened to PgBouncer, the first one included.
    connections: Vec<usize>,
    failed_connects: usize,
    /// A few error messages, for the report.
    errors: BTreeSet<String>,
}

impl Log {
    fn new() -> Self {
        Self {
            acks: vec![Vec::new(); CLIENTS],
            failed_transactions: vec![0; CLIENTS],
            connections: vec![0; CLIENTS],
            ..Self::default()
        }
    }

    fn note_error(&mut self, error: String) {
        if self.errors.len() < 8 {
            self.errors.insert(error);
        }
    }
}

/// What [`drive_clients`] measured.
#[derive(Debug)]
struct Report {
    new_leader: usize,
    acks: Vec<Vec<Ack>>,
}

async fn drive_clients(
    local: &mut LocalCluster,
    service: &RwService,
    bouncer: &Bouncer,
    old_leader: usize,
    old_port: u16,
) -> Result<Report> {
    let log = Arc::new(Mutex::new(Log::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
        .map(|id| {
            let target = bouncer.target("shop", APP_PASSWORD);
            tokio::spawn(client_loop(id, target, log.clone(), stop.clone()))
        })
        .collect();
    let _stop_clients = StopOnDrop(stop.clone());

    // Every client commits a few times on the first primary.
    wait_until(
        Duration::from_secs(60),
        "every client committing through PgBouncer",
        || {
            let log = log.lock().unwrap();
            log.acks
                .iter()
                .all(|acks| acks.iter().filter(|ack| ack.port == old_port).count() >= 3)
                .then_some(())
                .ok_or_else(|| format!("{:?}", summary(&log)))
        },
    )
    .await?;

    let killed_at = Instant::now();
    local.kill(old_leader);
    eprintln!(
        "killed {} (Patroni and PostgreSQL, kill -9 of the node)",
        local.nodes[old_leader].name
    );

    // Every client commits on another node.
    let recovered = wait_until(RECOVERY_BOUND, "every client committing again", || {
        let log = log.lock().unwrap();
        let firsts: Vec<Option<Instant>> = log
            .acks
            .iter()
            .map(|acks| {
                acks.iter()
                    .find(|ack| ack.port != old_port && ack.at > killed_at)
                    .map(|ack| ack.at)
            })
            .collect();
        if firsts.iter().all(Option::is_some) {
            Ok(firsts.into_iter().flatten().collect::<Vec<_>>())
        } else {
            Err(format!(
                "{} of {CLIENTS} recovered after {:.1}s; {:?}",
                firsts.iter().filter(|first| first.is_some()).count(),
                killed_at.elapsed().as_secs_f64(),
                summary(&log)
            ))
        }
    })
    .await?;
    let first = recovered.iter().min().context("no client")?;
    let all = recovered.iter().max().context("no client")?;
    // A little more traffic on the new primary, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await?;
    }

    let new_leader = local
        .leader()
        .await
        .context("clients committed but no leader is reported")?;
    ensure!(new_leader != old_leader, "the killed node is still leader");
    let new_port = local.nodes[new_leader].pg_port;
    let log = std::mem::take(&mut *log.lock().unwrap());

    // Every commit after the kill that was not the old primary's was the new primary's, and
    // no commit ever ran on a node in recovery.
    for (id, acks) in log.acks.iter().enumerate() {
        for ack in acks {
            ensure!(
                !ack.in_recovery,
                "client {id} committed {} on a node in recovery",
                ack.seq
            );
            ensure!(
                ack.port == old_port || ack.port == new_port,
                "client {id} committed {} on port {}, neither the old primary ({old_port}) nor \
                 the new one ({new_port})",
                ack.seq,
                ack.port
            );
            ensure!(
                ack.port == new_port || ack.at <= *first,
                "client {id} committed {} on the killed node after the new primary took over",
                ack.seq
            );
        }
    }
    let before: usize = log
        .acks
        .iter()
        .map(|acks| acks.iter().filter(|ack| ack.port == old_port).count())
        .sum();
    let after: usize = log
        .acks
        .iter()
        .map(|acks| acks.iter().filter(|ack| ack.port == new_port).count())
        .sum();
    let reconnected = log
        .connections
        .iter()
        .filter(|&&connections| connections > 1)
        .count();
    let failed: usize = log.failed_transactions.iter().sum();
    let longest_gap = log
        .acks
        .iter()
        .filter_map(|acks| {
            let last_old = acks.iter().rev().find(|ack| ack.port == old_port)?.at;
            let first_new = acks.iter().find(|ack| ack.port == new_port)?.at;
            Some(first_new.saturating_duration_since(last_old))
        })
        .max()
        .unwrap_or_default();
    let rw_switched = service
        .changes()
        .iter()
        .find(|(_, leader)| *leader == Some(new_leader))
        .map(|(at, _)| at.saturating_duration_since(killed_at));

    eprintln!(
        "failover_from={} failover_to={} (ports {old_port} -> {new_port})",
        local.nodes[old_leader].name, local.nodes[new_leader].name
    );
    eprintln!(
        "failover_rw_service_switched_seconds={:.2}",
        rw_switched.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    eprintln!(
        "failover_first_commit_seconds={:.2}",
        first.saturating_duration_since(killed_at).as_secs_f64()
    );
    // PgBouncer waits server_login_retry (default 15 s, not rendered) after a failed server
    // login — such as one tried while the Service had no endpoint — before it tries again.
    eprintln!(
        "failover_first_commit_after_rw_switch_seconds={:.2}",
        rw_switched.map_or(f64::NAN, |switched| {
            first
                .saturating_duration_since(killed_at)
                .saturating_sub(switched)
                .as_secs_f64()
        })
    );
    eprintln!(
        "failover_all_clients_recovered_seconds={:.2}",
        all.saturating_duration_since(killed_at).as_secs_f64()
    );
    eprintln!(
        "failover_longest_client_gap_seconds={:.2}",
        longest_gap.as_secs_f64()
    );
    eprintln!("failover_failed_transactions={failed}");
    eprintln!("failover_failed_connects={}", log.failed_connects);
    eprintln!("failover_clients_reconnected={reconnected} of {CLIENTS}");
    eprintln!("failover_commits_before={before} failover_commits_after={after}");
    eprintln!("failover_errors_seen={:?}", log.errors);

    ensure!(
        log.acks
            .iter()
            .all(|acks| acks.iter().any(|ack| ack.port == new_port)),
        "not every client committed on the new primary"
    );
    Ok(Report {
        new_leader,
        acks: log.acks,
    })
}

/// Every commit PgBouncer acknowledged — before the kill and after — is on the new primary.
async fn check_acknowledged_rows_survived(local: &LocalCluster, report: &Report) -> Result<()> {
    let acknowledged: BTreeSet<(i32, i32)> = report
        .acks
        .iter()
        .enumerate()
        .flat_map(|(id, acks)| {
            let id = i32::try_from(id).unwrap();
            acks.iter().map(move |ack| (id, ack.seq))
        })
        .collect();
    let superuser = local.connect(report.new_leader).await?;
    ensure!(
        !superuser
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get::<_, bool>(0),
        "the new leader is in recovery"
    );
    let app = connect_db(local, "app").await?;
    let present: BTreeSet<(i32, i32)> = app
        .query("SELECT client, seq FROM ledger", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let lost: Vec<&(i32, i32)> = acknowledged.difference(&present).collect();
    eprintln!(
        "failover_acknowledged_rows={} failover_rows_present={} failover_lost_acknowledged={}",
        acknowledged.len(),
        present.len(),
        lost.len()
    );
    ensure!(
        lost.is_empty(),
        "{} acknowledged commits are missing on the new primary (synchronous mode): {:?}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// One client: a write transaction in a loop through PgBouncer; on any failure it drops its
/// connection and opens a new one to the same address, as a pool in an application would.
async fn client_loop(
    id: usize,
    target: tusk_runtime::postgres::PrimaryTarget,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(connected) = &client else {
            match target.connect("app", "failover-client").await {
                Ok(connected) => {
                    log.lock().unwrap().connections[id] += 1;
                    client = Some(connected);
                }
                Err(error) => {
                    {
                        let mut log = log.lock().unwrap();
                        log.failed_connects += 1;
                        log.note_error(format!("connect: {:#}", anyhow::Error::new(error)));
                    }
                    tokio::time::sleep(PAUSE).await;
                }
            }
            continue;
        };
        seq += 1;
        let outcome =
            tokio::time::timeout(TRANSACTION_TIMEOUT, write_transaction(connected, id, seq)).await;
        match outcome {
            Ok(Ok((port, in_recovery))) => log.lock().unwrap().acks[id].push(Ack {
                seq,
                port,
                in_recovery,
                at: Instant::now(),
            }),
            Ok(Err(error)) => {
                let mut log = log.lock().unwrap();
                log.failed_transactions[id] += 1;
                log.note_error(format!("transaction: {error:#}"));
                client = None;
            }
            Err(_) => {
                let mut log = log.lock().unwrap();
                log.failed_transactions[id] += 1;
                log.note_error(format!("transaction: no answer in {TRANSACTION_TIMEOUT:?}"));
                client = None;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// `BEGIN; INSERT … RETURNING inet_server_port(), pg_is_in_recovery(); COMMIT`, in the simple
/// protocol (no prepared statements: transaction pooling hands each transaction to any server
/// connection). Returns the server's port and whether it was in recovery.
async fn write_transaction(
    client: &tokio_postgres::Client,
    id: usize,
    seq: i32,
) -> Result<(u16, bool)> {
    client.batch_execute("BEGIN").await?;
    let messages = client
        .simple_query(&format!(
            "INSERT INTO ledger (client, seq) VALUES ({id}, {seq}) \
             RETURNING inet_server_port(), pg_is_in_recovery()"
        ))
        .await?;
    let row = messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .context("INSERT … RETURNING returned no row")?;
    let port = row
        .get(0)
        .and_then(|port| port.parse().ok())
        .context("inet_server_port() is not a port")?;
    let in_recovery = row.get(1) == Some("t");
    client.batch_execute("COMMIT").await?;
    Ok((port, in_recovery))
}

/// Per-client counts, for a failure message.
fn summary(log: &Log) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "acks",
            format!("{:?}", log.acks.iter().map(Vec::len).collect::<Vec<_>>()),
        ),
        ("failed", format!("{:?}", log.failed_transactions)),
        ("failed_connects", log.failed_connects.to_string()),
        ("errors", format!("{:?}", log.errors)),
    ])
}

/// Polls `check` every 50 ms until it returns `Ok`, or fails after `timeout` with its last
/// complaint.
async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                bail!("{what}: not within {timeout:?}: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sets the flag when dropped, so the clients stop however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// When the `-rw` stand-in's endpoint changed, and to which member (`None`: no endpoint).
type EndpointChanges = Arc<Mutex<Vec<(Instant, Option<usize>)>>>;

/// One node as the `-rw` stand-in sees it.
#[derive(Debug, Clone, Copy)]
struct Member {
    api: SocketAddr,
    postgres: SocketAddr,
}

/// The Cluster's `-rw` Service on loopback: a TCP forwarder whose one endpoint is the node
/// whose Patroni answers 200 on `GET /primary`. A new connection goes to the current
/// endpoint (or is closed at once while there is none); when the endpoint changes, the
/// connections to the previous one are cut, as removing an endpoint and a dead primary would.
struct RwService {
    port: u16,
    leader: watch::Receiver<Option<usize>>,
    /// When the endpoint changed, and to what.
    changes: EndpointChanges,
    tasks: Vec<JoinHandle<()>>,
}

impl RwService {
    async fn start(members: Vec<Member>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mut listeners = vec![listener];
        // Where `localhost` also resolves to ::1, PgBouncer may pick that address.
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        let (publish, leader) = watch::channel(None);
        let changes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![tokio::spawn(follow_primary(
            members.clone(),
            publish,
            changes.clone(),
        ))];
        for listener in listeners {
            tasks.push(tokio::spawn(accept(
                listener,
                members.clone(),
                leader.clone(),
            )));
        }
        Ok(Self {
            port,
            leader,
            changes,
            tasks,
        })
    }

    async fn wait_for(&self, leader: Option<usize>, timeout: Duration) -> Result<()> {
        let mut watching = self.leader.clone();
        tokio::time::timeout(timeout, watching.wait_for(|current| *current == leader))
            .await
            .with_context(|| format!("the -rw stand-in did not point at {leader:?}"))??;
        Ok(())
    }

    fn changes(&self) -> Vec<(Instant, Option<usize>)> {
        self.changes.lock().unwrap().clone()
    }
}

impl Drop for RwService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Publishes which member answers 200 on `/primary`, every [`POLL`]. A leader that misses
/// one poll (a slow answer on a busy machine) keeps the endpoint; two misses remove it.
async fn follow_primary(
    members: Vec<Member>,
    publish: watch::Sender<Option<usize>>,
    changes: EndpointChanges,
) {
    let mut misses = 0;
    loop {
        let mut found = None;
        for (index, member) in members.iter().enumerate() {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                api_request(member.api, "GET", "/primary", None, None),
            )
            .await;
            if matches!(answer, Ok(Ok((200, _)))) {
                found = Some(index);
                break;
            }
        }
        let current = *publish.borrow();
        let next = match (current, found) {
            (Some(_), None) if misses == 0 => {
                misses += 1;
                current
            }
            _ => {
                misses = 0;
                found
            }
        };
        if next != current {
            changes.lock().unwrap().push((Instant::now(), next));
            publish.send_replace(next);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn accept(
    listener: TcpListener,
    members: Vec<Member>,
    leader: watch::Receiver<Option<usize>>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        tokio::spawn(forward(inbound, members.clone(), leader.clone()));
    }
}

async fn forward(
    mut inbound: TcpStream,
    members: Vec<Member>,
    mut leader: watch::Receiver<Option<usize>>,
) {
    // No endpoint: the connection is closed at once.
    let Some(target) = *leader.borrow_and_update() else {
        return;
    };
    let Ok(mut outbound) = TcpStream::connect(members[target].postgres).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = leader.wait_for(|current| *current != Some(target)) => {}
    }
}

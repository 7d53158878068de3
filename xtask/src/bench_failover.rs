//! `cargo xtask bench failover`: how long writes stop when the primary dies or hands over, and
//! whether an acknowledged commit is ever lost — on three real Patroni + PostgreSQL nodes run
//! from the configuration tusk renders (synchronous replication), with etcd as the DCS.
//!
//! ```text
//!  writer ──INSERT id=n (autocommit, multi-host read-write connection)──► primary
//!    │ records (n, commit time) only when the commit is acknowledged
//!  switchover: POST /switchover ─► longest gap between acknowledged commits  = switchover_seconds
//!  failover:   kill -9 Patroni+PostgreSQL of the primary
//!              ─► first acknowledged commit after the kill                 = failover_seconds
//!              ─► every acknowledged id looked up on the new primary      = lost_committed_txns
//!  DCS outage: etcd frozen (SIGSTOP) for 2 × ttl, as an unreachable Kubernetes API
//!              ─► longest write pause, and whether the primary changed — with failsafe
//!                 mode as rendered, then with it turned off for comparison
//! ```
//!
//! Prints `name=value` lines: the median and worst of each figure over `--runs` rounds, the
//! timing used, and the goals (failover ≤ 10 s, switchover ≤ 5 s, lost 0). The timing is the
//! Cluster API's default unless `TUSK_BENCH_TTL`, `TUSK_BENCH_LOOP_WAIT` and
//! `TUSK_BENCH_RETRY_TIMEOUT` say otherwise, so other settings can be compared.

#[path = "../../crates/cluster-controller/tests/support/local_patroni.rs"]
mod local_patroni;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use local_patroni::{Components, LocalCluster};
use tusk_api::Cluster;
use tusk_api::cluster::HighAvailabilitySpec;

/// Pause between the writer's commits: fine enough to time a gap, light enough for 2 cores.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

pub(crate) fn run(runs: usize) -> Result<()> {
    let components = Components::find().map_err(|missing| {
        anyhow::anyhow!("{missing}\n(run `cargo xtask install` to put the components in place)")
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(&components, runs.max(1)))
}

fn timing() -> Result<HighAvailabilitySpec> {
    let mut ha = HighAvailabilitySpec::default();
    let read = |name: &str, value: &mut i32| -> Result<()> {
        if let Ok(text) = std::env::var(name) {
            *value = text
                .parse()
                .with_context(|| format!("{name}={text:?} is not a number of seconds"))?;
        }
        Ok(())
    };
    read("TUSK_BENCH_TTL", &mut ha.ttl_seconds)?;
    read("TUSK_BENCH_LOOP_WAIT", &mut ha.loop_wait_seconds)?;
    read("TUSK_BENCH_RETRY_TIMEOUT", &mut ha.retry_timeout_seconds)?;
    ensure!(
        ha.loop_wait_seconds + 2 * ha.retry_timeout_seconds <= ha.ttl_seconds,
        "Patroni needs loop_wait + 2 × retry_timeout ≤ ttl"
    );
    Ok(ha)
}

fn bench_cluster(major: i32, ha: &HighAvailabilitySpec) -> Result<Cluster> {
    let yaml = format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: bench, namespace: bench}}
spec:
  postgresVersion: {major}
  instances: 3
  storage: {{size: 1Gi}}
  replication: {{mode: Synchronous, synchronousNodeCount: 1}}
  highAvailability:
    ttlSeconds: {}
    loopWaitSeconds: {}
    retryTimeoutSeconds: {}
",
        ha.ttl_seconds, ha.loop_wait_seconds, ha.retry_timeout_seconds
    );
    Ok(serde_yaml_ng::from_str(&yaml)?)
}

async fn bench(components: &Components, runs: usize) -> Result<()> {
    let ha = timing()?;
    let cluster = bench_cluster(components.major(), &ha)?;
    eprintln!(
        "starting three Patroni nodes (PostgreSQL {}, ttl {} s, loop_wait {} s, retry_timeout {} s)",
        components.postgres.version, ha.ttl_seconds, ha.loop_wait_seconds, ha.retry_timeout_seconds
    );
    let mut local = LocalCluster::start(components, cluster).await?;
    let result = measure(&mut local, &ha, runs).await;
    if result.is_err() {
        eprintln!("{}", local.log_tails(30));
    }
    let figures = result?;
    figures.print(&ha, runs, &components.postgres.version);
    Ok(())
}

#[derive(Debug, Default)]
struct Figures {
    failover: Vec<f64>,
    switchover: Vec<f64>,
    lost: usize,
    acknowledged: usize,
    /// The DCS frozen for 2 × ttl, with failsafe mode as rendered and then turned off.
    outage_seconds: u64,
    outage: Option<Outage>,
    outage_without_failsafe: Option<Outage>,
}

/// What a DCS outage did to writes.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// The longest stretch without an acknowledged commit.
    write_pause: f64,
    /// Whether another member leads afterwards.
    leader_changed: bool,
}

impl Figures {
    fn print(&self, ha: &HighAvailabilitySpec, runs: usize, version: &str) {
        let (failover_median, failover_max) = median_and_max(&self.failover);
        let (switchover_median, switchover_max) = median_and_max(&self.switchover);
        println!("failover_seconds={failover_median:.2}");
        println!("failover_seconds_max={failover_max:.2}");
        println!("switchover_seconds={switchover_median:.2}");
        println!("switchover_seconds_max={switchover_max:.2}");
        println!("lost_committed_txns={}", self.lost);
        println!("acknowledged_txns={}", self.acknowledged);
        println!("dcs_outage_seconds={}", self.outage_seconds);
        for (prefix, outage) in [
            ("dcs_outage", self.outage),
            ("dcs_outage_without_failsafe", self.outage_without_failsafe),
        ] {
            if let Some(outage) = outage {
                println!("{prefix}_write_pause_seconds={:.2}", outage.write_pause);
                println!("{prefix}_leader_changed={}", outage.leader_changed);
            }
        }
        println!("ttl={}", ha.ttl_seconds);
        println!("loop_wait={}", ha.loop_wait_seconds);
        println!("retry_timeout={}", ha.retry_timeout_seconds);
        println!("runs={runs}");
        println!("postgres_version={version}");
        println!("replication_mode=Synchronous");
        println!("failover_goal_seconds=10");
        println!("switchover_goal_seconds=5");
        println!("lost_goal=0");
    }
}

fn median_and_max(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    (median, max)
}

/// What the writer saw: every acknowledged commit, in order.
#[derive(Debug, Default)]
struct Log {
    commits: Vec<Commit>,
}

#[derive(Debug, Clone, Copy)]
struct Commit {
    id: i64,
    /// When the acknowledgement arrived.
    at: Instant,
    /// When the connection it came over was made: a commit over a connection made after the
    /// kill can only come from the new primary (an acknowledgement in flight from the old one
    /// may still arrive after the kill).
    connected_at: Instant,
}

/// Inserts one row per commit into `ledger` through a read-write multi-host connection,
/// reconnecting whenever the primary goes away, until `stop`.
async fn writer(
    config: tokio_postgres::Config,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut next: i64 = 1;
    let mut client: Option<(tokio_postgres::Client, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.as_ref().is_none_or(|(client, _)| client.is_closed()) {
            let started = Instant::now();
            client = match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    Some((client, started))
                }
                Err(_) => None,
            };
        }
        if let Some((connected, connected_at)) = &client {
            let id = next;
            next += 1;
            let outcome = tokio::time::timeout(
                Duration::from_secs(5),
                connected.execute("INSERT INTO ledger (id) VALUES ($1)", &[&id]),
            )
            .await;
            if let Ok(Ok(_)) = outcome {
                let commit = Commit {
                    id,
                    at: Instant::now(),
                    connected_at: *connected_at,
                };
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .commits
                    .push(commit);
            } else {
                // Not acknowledged: the row may or may not exist, and the id is not reused.
                client = None;
            }
        }
        tokio::time::sleep(WRITE_INTERVAL).await;
    }
    Ok(())
}

async fn measure(
    local: &mut LocalCluster,
    ha: &HighAvailabilitySpec,
    runs: usize,
) -> Result<Figures> {
    let ready = Duration::from_secs(120);
    let leader = local.wait_healthy(2, ready).await?;
    local
        .connect(leader)
        .await?
        .batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY)")
        .await?;

    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writer(
        local.primary_config(),
        Arc::clone(&log),
        Arc::clone(&stop),
    ));
    let limit = Duration::from_secs(u64::try_from(ha.ttl_seconds * 4 + 30)?);
    let settle = Duration::from_secs(10);

    let mut figures = Figures::default();
    for round in 1..=runs {
        // Switchover: the longest stretch without an acknowledged commit around it.
        let leader = local.wait_healthy(2, ready).await?;
        commit_after(&log, Instant::now(), false, settle).await?;
        let candidate = local
            .sync_standby()
            .await
            .context("no synchronous standby to switch over to")?;
        let started = Instant::now();
        let body = serde_json::json!({"leader": local.nodes[leader].name, "candidate": candidate});
        let (status, answer) = local
            .api(leader, "POST", "/switchover", Some(&body))
            .await?;
        ensure!(status == 200, "POST /switchover: {status} {answer}");
        let candidate_index = local.index_of(&candidate)?;
        while local.leader().await != Some(candidate_index) {
            ensure!(started.elapsed() < limit, "{candidate} never led");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resumed = commit_after(&log, Instant::now(), false, limit).await?;
        let pause = longest_pause(&log, started, resumed);
        figures.switchover.push(pause.as_secs_f64());
        eprintln!(
            "round {round}: switchover {} → {candidate}: writes paused {:.2} s",
            local.nodes[leader].name,
            pause.as_secs_f64()
        );

        // Failover: kill -9 the primary, time the first commit on the new one.
        let leader = local.wait_healthy(2, ready).await?;
        commit_after(&log, Instant::now(), false, settle).await?;
        let killed_at = Instant::now();
        local.kill(leader);
        let first = commit_after(&log, killed_at, true, limit).await?;
        let elapsed = first.duration_since(killed_at);
        figures.failover.push(elapsed.as_secs_f64());
        let new_leader = local
            .leader()
            .await
            .context("no leader after the failover")?;
        let (lost, acknowledged) = lost_commits(local, new_leader, &log).await?;
        figures.lost += lost;
        figures.acknowledged = acknowledged;
        eprintln!(
            "round {round}: failover {} → {}: first commit after {:.2} s, {lost} of {acknowledged} acknowledged commits missing",
            local.nodes[leader].name,
            local.nodes[new_leader].name,
            elapsed.as_secs_f64()
        );
        local.spawn(leader)?;
    }

    // DCS outage: etcd frozen, as an unreachable Kubernetes API, for twice the ttl — first as
    // rendered (failsafe mode: the primary confirms its members over the REST API and keeps
    // serving), then with failsafe mode turned off for comparison.
    let outage = Duration::from_secs(u64::try_from(ha.ttl_seconds * 2)?);
    figures.outage_seconds = outage.as_secs();
    figures.outage = Some(dcs_outage(local, &log, outage, limit).await?);
    let leader = local.wait_healthy(2, ready).await?;
    let off = serde_json::json!({"failsafe_mode": false});
    let (status, answer) = local.api(leader, "PATCH", "/config", Some(&off)).await?;
    ensure!(status == 200, "PATCH /config: {status} {answer}");
    tokio::time::sleep(Duration::from_secs(u64::try_from(
        ha.loop_wait_seconds * 2,
    )?))
    .await;
    figures.outage_without_failsafe = Some(dcs_outage(local, &log, outage, limit).await?);

    stop.store(true, Ordering::Relaxed);
    writer.await??;
    Ok(figures)
}

/// Every commit acknowledged at or after `since`.
fn commits_since(log: &Mutex<Log>, since: Instant) -> Vec<Commit> {
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .commits
        .iter()
        .filter(|commit| commit.at >= since)
        .copied()
        .collect()
}

/// When the first commit at or after `since` was acknowledged; with `new_connection`, only a
/// commit over a connection made at or after `since` counts (never one from a primary killed
/// at `since`).
async fn commit_after(
    log: &Mutex<Log>,
    since: Instant,
    new_connection: bool,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = since + timeout;
    loop {
        if let Some(first) = commits_since(log, since)
            .iter()
            .find(|commit| !new_connection || commit.connected_at >= since)
        {
            return Ok(first.at);
        }
        if Instant::now() >= deadline {
            bail!("no acknowledged commit within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The longest stretch between `started`, the commits acknowledged after it and `resumed`.
fn longest_pause(log: &Mutex<Log>, started: Instant, resumed: Instant) -> Duration {
    let mut times = vec![started];
    times.extend(
        commits_since(log, started)
            .into_iter()
            .map(|commit| commit.at)
            .filter(|at| *at <= resumed),
    );
    times.push(resumed);
    times
        .windows(2)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default()
}

/// Freezes etcd for `outage` and reports what the writer saw.
async fn dcs_outage(
    local: &LocalCluster,
    log: &Mutex<Log>,
    outage: Duration,
    limit: Duration,
) -> Result<Outage> {
    let leader = local.wait_healthy(2, Duration::from_secs(120)).await?;
    commit_after(log, Instant::now(), false, Duration::from_secs(10)).await?;
    let started = Instant::now();
    signal_process(local.etcd.pid(), "-STOP")?;
    tokio::time::sleep(outage).await;
    signal_process(local.etcd.pid(), "-CONT")?;
    let resumed = commit_after(log, Instant::now(), false, limit).await?;
    let pause = longest_pause(log, started, resumed);
    let after = local.wait_healthy(2, Duration::from_secs(120)).await?;
    eprintln!(
        "DCS frozen for {} s: writes paused at most {:.2} s, leader {} → {}",
        outage.as_secs(),
        pause.as_secs_f64(),
        local.nodes[leader].name,
        local.nodes[after].name
    );
    Ok(Outage {
        write_pause: pause.as_secs_f64(),
        leader_changed: after != leader,
    })
}

fn signal_process(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

/// Looks up every acknowledged id on the new primary; returns (missing, acknowledged).
async fn lost_commits(
    local: &LocalCluster,
    leader: usize,
    log: &Mutex<Log>,
) -> Result<(usize, usize)> {
    let acknowledged: Vec<i64> = log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .commits
        .iter()
        .map(|commit| commit.id)
        .collect();
    let client = local.connect(leader).await?;
    let present: BTreeSet<i64> = client
        .query("SELECT id FROM ledger", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let missing = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .count();
    Ok((missing, acknowledged.len()))
}

//! The Patroni configuration tusk renders, run for real: three Patroni + PostgreSQL nodes on
//! loopback with etcd standing in for the Kubernetes DCS (DESIGN.md §6, layer 3).
//!
//! Only the DCS section, paths, ports and addresses are changed (tests/support/local_patroni.rs);
//! pg_hba, parameters, authentication and bootstrap are as rendered. One test walks the life of
//! a cluster — every step needs the previous one, and three nodes at a time is what two cores
//! can do quickly:
//!
//! bootstrap → replicas stream (hostssl replication) → pg_hba and TLS as rendered → reload-only
//! change through `PATCH /config` → restart-needing change shows `pending_restart` →
//! switchover through the REST API → `kill -9` of the primary fails over → the old primary
//! rejoins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as Json;
use support::local_patroni::{Components, LocalCluster, api_request, ca_file, is_leader_role};
use tusk_api::Cluster;
use tusk_cluster_controller::patroni::{self, ParameterApply};
use tusk_cluster_controller::patroni_api::{self, Credentials};

/// Fast timing within the API's limits: loop_wait + 2 × retry_timeout ≤ ttl.
const TTL: u64 = 5;
const LOOP_WAIT: u64 = 1;

fn test_cluster(major: i32) -> Cluster {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: ha, namespace: test}}
spec:
  postgresVersion: {major}
  instances: 3
  storage: {{size: 1Gi}}
  replication: {{mode: Synchronous, synchronousNodeCount: 1}}
  highAvailability: {{ttlSeconds: {TTL}, loopWaitSeconds: {LOOP_WAIT}, retryTimeoutSeconds: 2}}
  postgresql:
    parameters: {{work_mem: 8MB}}
    pgHba: ['hostssl all app 127.0.0.0/8 scram-sha-256']
"
    ))
    .unwrap()
}

struct Steps(Instant);

impl Steps {
    fn done(&self, step: &str) {
        eprintln!("[{:>6.2}s] {step}", self.0.elapsed().as_secs_f64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_configuration_runs_a_highly_available_cluster() -> Result<()> {
    let Some(components) = tusk_testkit::require(Components::find()) else {
        return Ok(());
    };
    let steps = Steps(Instant::now());
    let cluster = test_cluster(components.major());
    let mut local = LocalCluster::start(&components, cluster.clone()).await?;
    let result = walk_through(&mut local, &cluster, &steps).await;
    if result.is_err() {
        eprintln!("{}", local.log_tails(40));
    }
    result
}

async fn walk_through(local: &mut LocalCluster, cluster: &Cluster, steps: &Steps) -> Result<()> {
    let major = local.major();

    // Bootstrap: one node initialises, the others clone it over hostssl replication.
    let leader = local.wait_healthy(2, Duration::from_secs(60)).await?;
    let replicas = local.streaming_replicas(leader).await?;
    ensure!(
        replicas.iter().filter(|(_, state)| state == "sync").count() == 1,
        "synchronous mode should give exactly one sync standby: {replicas:?}"
    );
    steps.done(&format!(
        "bootstrapped PostgreSQL {major}; leader {}, streaming {replicas:?}",
        local.nodes[leader].name
    ));

    check_rendered_settings(local, leader).await?;
    check_pg_hba(local, leader).await?;
    steps.done("settings, TLS and pg_hba are as rendered");

    let client = local.connect(leader).await?;
    client
        .batch_execute("CREATE TABLE facts (id int PRIMARY KEY, note text)")
        .await?;
    client
        .execute("INSERT INTO facts VALUES (1, 'before any change')", &[])
        .await?;

    let changed = reload_only_change(local, cluster, leader).await?;
    steps.done("work_mem changed through PATCH /config without a restart");

    let changed = restart_needing_change(local, &changed, leader).await?;
    steps.done("shared_buffers change reports pending_restart");

    let leader = switchover(local, leader).await?;
    steps.done(&format!("switched over to {}", local.nodes[leader].name));

    let (leader, elapsed, old) = failover(local, leader).await?;
    steps.done(&format!(
        "failover to {} took {:.2}s after kill -9 of {}",
        local.nodes[leader].name,
        elapsed.as_secs_f64(),
        local.nodes[old].name
    ));

    // The old primary comes back with its data and follows the new one (pg_rewind if its
    // timeline diverged, over hostssl as tusk_rewind).
    local.spawn(old)?;
    let leader = local.wait_healthy(2, Duration::from_secs(40)).await?;
    let rejoined = local.connect(old).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count: i64 = rejoined
            .query_one("SELECT count(*) FROM facts", &[])
            .await?
            .get(0);
        if count >= 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the rejoined node has {count} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rewound = local.nodes[old].log_tail(400).contains("pg_rewind");
    steps.done(&format!(
        "{} rejoined as a streaming replica of {} (pg_rewind ran: {rewound})",
        local.nodes[old].name, local.nodes[leader].name
    ));

    // After all that, the DCS still holds exactly what tusk would render.
    let observed = get_config(local, leader).await?;
    let patch = patroni::dynamic_config_patch(&observed, &patroni::dynamic_config(&changed)?)?;
    ensure!(
        patch.is_none(),
        "the DCS drifted from the render: {patch:?}"
    );
    Ok(())
}

async fn show(client: &tokio_postgres::Client, name: &str) -> Result<String> {
    Ok(client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .with_context(|| format!("SHOW {name}"))?
        .get(0))
}

async fn check_rendered_settings(local: &LocalCluster, leader: usize) -> Result<()> {
    let client = local.connect(leader).await?;
    let expected = [
        ("ssl", "on".to_owned()),
        ("hot_standby", "on".to_owned()),
        ("wal_log_hints", "on".to_owned()),
        ("wal_level", "replica".to_owned()),
        ("password_encryption", "scram-sha-256".to_owned()),
        // Rendered as a plain `on`, which PyYAML reads as a boolean (see patroni.rs).
        ("log_checkpoints", "on".to_owned()),
        ("log_lock_waits", "on".to_owned()),
        ("max_wal_senders", "20".to_owned()),
        ("work_mem", "8MB".to_owned()),
        ("data_checksums", "on".to_owned()),
        ("cluster_name", patroni::scope("ha")),
        (
            "unix_socket_directories",
            local.nodes[leader].socket_dir().display().to_string(),
        ),
    ];
    for (name, value) in expected {
        ensure!(
            show(&client, name).await? == value,
            "{name} should be {value}"
        );
    }
    let standby_names = show(&client, "synchronous_standby_names").await?;
    ensure!(!standby_names.is_empty(), "no synchronous_standby_names");
    let ssl_in_use: bool = client
        .query_one(
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)",
            &[],
        )
        .await?
        .get(0);
    ensure!(ssl_in_use, "replication connections should use TLS");
    Ok(())
}

/// TCP: TLS with SCRAM works (verifying the cluster CA), plain TCP hits the final reject line.
async fn check_pg_hba(local: &LocalCluster, leader: usize) -> Result<()> {
    let node = &local.nodes[leader];
    let psql = |sslmode: &str| {
        let mut command = std::process::Command::new(local.postgres_program("psql"));
        command
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={}",
                node.pg_port,
                ca_file(node).display()
            ))
            .args(["-XAtc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
            .env("PGPASSWORD", &local.passwords.superuser)
            .env("PGCONNECT_TIMEOUT", "5");
        command.output()
    };
    let tls = psql("verify-ca")?;
    ensure!(
        tls.status.success() && String::from_utf8_lossy(&tls.stdout).trim() == "t",
        "hostssl + scram-sha-256 with the cluster CA failed: {}",
        String::from_utf8_lossy(&tls.stderr)
    );
    let plain = psql("disable")?;
    let error = String::from_utf8_lossy(&plain.stderr);
    ensure!(
        !plain.status.success() && error.contains("rejects connection"),
        "plain TCP should meet `host all all all reject`: {error}"
    );
    Ok(())
}

async fn get_config(local: &LocalCluster, index: usize) -> Result<Json> {
    let (status, body) = local.api(index, "GET", "/config", None).await?;
    ensure!(status == 200, "GET /config: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

async fn postmaster_start_times(local: &LocalCluster) -> Result<BTreeMap<String, String>> {
    let mut times = BTreeMap::new();
    for (index, node) in local.nodes.iter().enumerate() {
        let client = local.connect(index).await?;
        let row = client
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await?;
        times.insert(node.name.clone(), row.get(0));
    }
    Ok(times)
}

/// Waits until `SHOW name` is `value` on every node.
async fn wait_setting_everywhere(local: &LocalCluster, name: &str, value: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for index in 0..local.nodes.len() {
        let client = local.connect(index).await?;
        loop {
            let current = show(&client, name).await?;
            if current == value {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} on {} is {current}, not {value}",
                    local.nodes[index].name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn reload_only_change(
    local: &LocalCluster,
    cluster: &Cluster,
    leader: usize,
) -> Result<Cluster> {
    let major = local.major();
    // Bootstrap wrote bootstrap.dcs to the DCS verbatim: nothing to patch in steady state.
    let observed = get_config(local, leader).await?;
    let steady = patroni::dynamic_config_patch(&observed, &patroni::dynamic_config(cluster)?)?;
    ensure!(
        steady.is_none(),
        "steady state should patch nothing: {steady:?}"
    );

    let mut changed = cluster.clone();
    changed
        .spec
        .postgresql
        .parameters
        .insert("work_mem".into(), "32MB".into());
    let plan = patroni::plan_parameter_change(
        &patroni::parameters(cluster)?,
        &patroni::parameters(&changed)?,
        major,
    );
    ensure!(
        plan.changed == ["work_mem"] && !plan.needs_restart(),
        "{plan:?}"
    );
    let patch = patroni::dynamic_config_patch(&observed, &patroni::dynamic_config(&changed)?)?
        .context("a changed parameter should give a patch")?;
    ensure!(
        patch == serde_json::json!({"postgresql": {"parameters": {"work_mem": "32MB"}}}),
        "unexpected patch {patch}"
    );

    let before = postmaster_start_times(local).await?;
    let (status, _) = api_request(
        local.nodes[leader].api(),
        "PATCH",
        "/config",
        Some(&patch),
        None,
    )
    .await?;
    ensure!(
        status == 401,
        "PATCH /config without credentials answered {status}"
    );
    let (status, body) = local.api(leader, "PATCH", "/config", Some(&patch)).await?;
    ensure!(status == 200, "PATCH /config: {status} {body}");

    wait_setting_everywhere(local, "work_mem", "32MB").await?;
    ensure!(
        postmaster_start_times(local).await? == before,
        "a reload-only change restarted PostgreSQL"
    );
    for index in 0..local.nodes.len() {
        ensure!(
            !pending_restart(local, index).await?,
            "{} reports pending_restart after a reload-only change",
            local.nodes[index].name
        );
    }
    Ok(changed)
}

async fn pending_restart(local: &LocalCluster, index: usize) -> Result<bool> {
    let (status, body) = local.api(index, "GET", "/patroni", None).await?;
    ensure!(status == 200, "GET /patroni: {status} {body}");
    let state: Json = serde_json::from_str(&body)?;
    Ok(state.get("pending_restart").and_then(Json::as_bool) == Some(true))
}

async fn restart_needing_change(
    local: &LocalCluster,
    cluster: &Cluster,
    leader: usize,
) -> Result<Cluster> {
    let major = local.major();
    let mut changed = cluster.clone();
    changed
        .spec
        .postgresql
        .parameters
        .insert("shared_buffers".into(), "192MB".into());
    ensure!(patroni::parameter_apply("shared_buffers", major) == ParameterApply::Restart);
    let plan = patroni::plan_parameter_change(
        &patroni::parameters(cluster)?,
        &patroni::parameters(&changed)?,
        major,
    );
    ensure!(
        plan.restart == ["shared_buffers"] && !plan.primary_first,
        "{plan:?}"
    );

    let observed = get_config(local, leader).await?;
    let patch = patroni::dynamic_config_patch(&observed, &patroni::dynamic_config(&changed)?)?
        .context("a changed parameter should give a patch")?;
    let (status, body) = local.api(leader, "PATCH", "/config", Some(&patch)).await?;
    ensure!(status == 200, "PATCH /config: {status} {body}");

    let deadline = Instant::now() + Duration::from_secs(15);
    for index in 0..local.nodes.len() {
        while !pending_restart(local, index).await? {
            ensure!(
                Instant::now() < deadline,
                "{} never reported pending_restart",
                local.nodes[index].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = local.connect(index).await?;
        ensure!(show(&client, "shared_buffers").await? == "128MB");
    }
    Ok(changed)
}

async fn switchover(local: &LocalCluster, leader: usize) -> Result<usize> {
    let members = local.members().await?;
    let candidate = members
        .iter()
        .find(|member| member.role == "sync_standby")
        .with_context(|| format!("no sync standby to switch over to: {members:?}"))?
        .name
        .clone();
    let credentials = Credentials {
        username: patroni::RESTAPI_USERNAME.to_owned(),
        password: local.passwords.restapi.clone(),
    };
    // The controller's own client, against the real API.
    patroni_api::switchover(
        local.nodes[leader].api(),
        &credentials,
        &local.nodes[leader].name,
        &candidate,
    )
    .await
    .map_err(|error| anyhow::anyhow!(error))?;
    let new_leader = local.index_of(&candidate)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while local.leader().await != Some(new_leader) {
        ensure!(Instant::now() < deadline, "{candidate} never became leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = local.connect(new_leader).await?;
    client
        .execute("INSERT INTO facts VALUES (2, 'after switchover')", &[])
        .await?;
    // The old primary follows the new one before the next step needs a sync standby.
    let healthy = local.wait_healthy(2, Duration::from_secs(30)).await?;
    ensure!(healthy == new_leader);
    Ok(new_leader)
}

async fn failover(local: &mut LocalCluster, leader: usize) -> Result<(usize, Duration, usize)> {
    let killed_at = Instant::now();
    local.kill(leader);
    let deadline = killed_at + Duration::from_secs(TTL * 4 + 10);
    let written = loop {
        if let Ok((client, connection)) =
            local.primary_config().connect(tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            if client
                .execute("INSERT INTO facts VALUES (3, 'after failover')", &[])
                .await
                .is_ok()
            {
                break killed_at.elapsed();
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no writable primary {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_leader = local
        .leader()
        .await
        .context("a write succeeded but no leader is reported")?;
    ensure!(new_leader != leader, "the killed node is still leader");
    let members = local.members().await?;
    ensure!(
        members
            .iter()
            .filter(|member| is_leader_role(&member.role))
            .count()
            == 1,
        "{members:?}"
    );
    // Within the ttl plus two HA loops (detection and promotion), and some slack for 2 cores.
    let bound = Duration::from_secs(TTL + 2 * LOOP_WAIT + 3);
    ensure!(
        written <= bound,
        "failover took {written:?}, more than {bound:?}"
    );
    // Every write acknowledged before the kill is there (synchronous mode).
    let client = local.connect(new_leader).await?;
    let ids: Vec<i32> = client
        .query("SELECT id FROM facts ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(ids == [1, 2, 3], "rows after failover: {ids:?}");
    Ok((new_leader, written, leader))
}

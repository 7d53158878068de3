//! The Patroni configuration tusk renders, run for real: three Patroni + PostgreSQL nodes on
//! loopback with etcd standing in for the Kubernetes DCS (DESIGN.md §6, layer 3).
//!
//! Only the DCS section, paths, ports and addresses are changed (tests/support/local_patroni.rs);
//! pg_hba, parameters, authentication and bootstrap are as rendered. One test walks the life of
//! a cluster — every step needs the previous one, and three nodes at a time is what two cores
//! can do quickly:
//!
//! bootstrap → replicas stream (hostssl replication) → pg_hba and TLS as rendered → volume
//! usage measured over SQL → the monitoring role, and the exporter's connection string logs in
//! over the socket → reload-only change through the controller's `PATCH /config` path →
//! restart-needing change: `pending_restart`, then the rollout planner's steps (replicas
//! restarted through `POST /restart`, then a switchover through the REST API, whose demotion
//! restarts the old primary)
//! → a renewed server certificate is picked up by the controller's reload → `kill -9` of the
//! primary fails over → the old primary rejoins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as Json;
use support::local_patroni::{Components, LocalCluster, api_request, ca_file, is_leader_role};
use tusk_api::Cluster;
use tusk_cluster_controller::observe::Role;
use tusk_cluster_controller::observe::instance_sql;
use tusk_cluster_controller::observe::patroni_api::{self, Credentials};
use tusk_cluster_controller::plan::config_change;
use tusk_cluster_controller::plan::monitor_role;
use tusk_cluster_controller::plan::patroni::{self, ParameterApply};
use tusk_cluster_controller::plan::rollout::{self, ObservedInstance, ObservedPod, Step};
use tusk_cluster_controller::shared::layout;

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

    let usage = measure_usage(local, leader).await?;
    steps.done(&usage);

    monitoring_role(local, leader).await?;
    steps.done("tusk_monitor created once; the exporter's DSN logs in on every node");

    let changed = reload_only_change(local, cluster, leader).await?;
    steps.done("work_mem changed through PATCH /config without a restart");

    let (changed, leader, taken) = restart_needing_change(local, &changed, leader).await?;
    steps.done(&format!(
        "shared_buffers applied by the planner's rolling restart: {}",
        taken.join(", ")
    ));
    local
        .connect(leader)
        .await?
        .execute("INSERT INTO facts VALUES (2, 'after the switchover')", &[])
        .await?;

    certificate_renewal(local).await?;
    steps.done("a renewed server certificate is served after one reload per node");

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
        ("cluster_name", layout::scope("ha")),
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
    // What the reconcile plans from GET /config, sent below with the controller's client.
    let change = config_change::config_change(&changed, &observed)?
        .context("a changed parameter should give a change")?;
    ensure!(change.parameters == plan, "{change:?}");
    let patch = change.patch.clone();
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
    patroni_api::patch_config(local.nodes[leader].api(), &credentials(local), &patch)
        .await
        .map_err(|error| anyhow::anyhow!(error))?;

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

fn credentials(local: &LocalCluster) -> Credentials {
    Credentials {
        username: layout::RESTAPI_USERNAME.to_owned(),
        password: local.passwords.restapi.clone(),
    }
}

/// What the controller measures for status and auto-grow, against what `du` says.
async fn measure_usage(local: &LocalCluster, leader: usize) -> Result<String> {
    let client = local.connect(leader).await?;
    let usage = instance_sql::measure_usage(&client).await?;
    let du = std::process::Command::new("du")
        .arg("-sb")
        .arg(local.nodes[leader].data_dir())
        .output()?;
    let du: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du -sb gave no number")?;
    let measured = usage.data + usage.wal;
    ensure!(
        usage.wal >= 16 * 1024 * 1024 && usage.data > 0,
        "implausible usage {usage:?}"
    );
    // A lower bound of the files on disk, and not far below them.
    ensure!(
        measured <= du && measured * 10 >= du * 8,
        "measured {measured} bytes, du says {du}"
    );
    let mib = |bytes: u64| bytes / (1024 * 1024);
    Ok(format!(
        "usage over SQL: data {} MiB + WAL {} MiB = {:.0}% of du's {} MiB",
        mib(usage.data),
        mib(usage.wal),
        measured as f64 * 100.0 / du as f64,
        mib(du)
    ))
}

/// The role is made once from one catalog read; postgres_exporter's connection string (as
/// the pod gets it, with only the socket path and port localised) logs in on every node.
async fn monitoring_role(local: &LocalCluster, leader: usize) -> Result<()> {
    let password = tusk_cluster_controller::plan::secrets::generate_password()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let client = local.connect(leader).await?;
    ensure!(monitor_role::ensure_role(&client, &password).await?);
    ensure!(
        !monitor_role::ensure_role(&client, &password).await?,
        "a second pass must write nothing"
    );
    for (index, node) in local.nodes.iter().enumerate() {
        let dsn = layout::data_source_name()
            .replace(&format!("$({})", layout::MONITOR_PASSWORD_ENV), &password)
            .replace(layout::SOCKET_DIR, &node.socket_dir().display().to_string())
            .replace(
                &format!("port={}", tusk_api::names::POSTGRES_PORT),
                &format!("port={}", node.pg_port),
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = std::process::Command::new(local.postgres_program("psql"))
                .arg(&dsn)
                .args(["-XAtc", "SELECT pg_has_role('pg_monitor', 'MEMBER')"])
                .env("PGCONNECT_TIMEOUT", "5")
                .output()?;
            let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if output.status.success() && answer == "t" {
                break;
            }
            // A replica gets the role by replication, a moment later.
            ensure!(
                Instant::now() < deadline,
                "the exporter's DSN on {} (node {index}): {}",
                node.name,
                String::from_utf8_lossy(&output.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// A restart-needing change goes through the controller's PATCH path, every member reports
/// `pending_restart`, and the rollout planner's steps — driven against the real nodes with
/// the controller's REST client — clear it: replicas first, then a switchover, whose
/// demotion restarts the old primary. Returns the changed Cluster, the new leader and the steps taken.
async fn restart_needing_change(
    local: &LocalCluster,
    cluster: &Cluster,
    leader: usize,
) -> Result<(Cluster, usize, Vec<String>)> {
    let major = local.major();
    let mut changed = cluster.clone();
    changed
        .spec
        .postgresql
        .parameters
        .insert("shared_buffers".into(), "192MB".into());
    ensure!(patroni::parameter_apply("shared_buffers", major) == ParameterApply::Restart);
    let observed = get_config(local, leader).await?;
    let change = config_change::config_change(&changed, &observed)?
        .context("a changed parameter should give a change")?;
    ensure!(
        change.parameters.restart == ["shared_buffers"] && !change.parameters.primary_first,
        "{change:?}"
    );
    patroni_api::patch_config(
        local.nodes[leader].api(),
        &credentials(local),
        &change.patch,
    )
    .await
    .map_err(|error| anyhow::anyhow!(error))?;

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
    // The controller reads GET /cluster, which shows each member's flag once its next HA loop
    // published it.
    for node in &local.nodes {
        wait_member(local, &node.name, |member| {
            member.pending_restart == Some(true)
        })
        .await?;
    }

    let taken = drive_rollout(local, &changed).await?;
    let old_leader = &local.nodes[leader].name;
    // The switchover demotes the old primary, and Patroni's demotion restarts PostgreSQL
    // with the new settings: the planner has nothing left to restart (it would restart the
    // old primary in place if it still reported pending_restart).
    ensure!(
        (taken.len() == 3 || (taken.len() == 4 && taken[3] == format!("restart {old_leader}")))
            && taken[..2]
                .iter()
                .all(|step| step.starts_with("restart") && !step.ends_with(old_leader.as_str()))
            && taken[2].starts_with(&format!("switchover {old_leader} ->")),
        "replicas first, then the switchover, then the old primary: {taken:?}"
    );
    for index in 0..local.nodes.len() {
        ensure!(
            !pending_restart(local, index).await?,
            "{} still pending a restart",
            local.nodes[index].name
        );
    }
    wait_setting_everywhere(local, "shared_buffers", "192MB").await?;
    let new_leader = local.wait_healthy(2, Duration::from_secs(30)).await?;
    ensure!(new_leader != leader, "the primary should have moved");
    Ok((changed, new_leader, taken))
}

/// Runs the rollout planner over what Patroni reports and performs its steps with the
/// controller's REST client, as the reconcile would (one step, then look again).
async fn drive_rollout(local: &LocalCluster, cluster: &Cluster) -> Result<Vec<String>> {
    let desired = rollout::Desired {
        instances: 3,
        restart_hash: "unchanged".to_owned(),
        restart_requests: BTreeMap::new(),
        shutdown: false,
        max_lag_bytes: cluster.spec.high_availability.maximum_lag_on_failover,
        switchover: None,
        synchronous: true,
    };
    let credentials = credentials(local);
    let mut taken = Vec::new();
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ensure!(
            Instant::now() < deadline,
            "the rollout did not finish: {taken:?}; last: {last}"
        );
        let Some(view) = cluster_view(local).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let observed: Vec<ObservedInstance> = local
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| ObservedInstance {
                ordinal: u32::try_from(index + 1).unwrap_or(u32::MAX),
                statefulset: true,
                pod: view
                    .members
                    .iter()
                    .find(|member| member.name == node.name)
                    .map(|member| ObservedPod {
                        role: if member.is_leader() {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        // What Patroni's /readiness answers: running, and for a replica
                        // replicating (Patroni 3.0 says `running`, later ones `streaming`).
                        ready: matches!(member.state.as_str(), "running" | "streaming")
                            && (member.is_leader() || member.lag_bytes().is_some()),
                        terminating: false,
                        restart_hash: Some(desired.restart_hash.clone()),
                        lag_bytes: member.lag_bytes(),
                        replay_lag_ms: None,
                        restart_request: None,
                        timeline: member.timeline,
                        pending_restart: member.pending_restart == Some(true),
                        sync_standby: member.is_sync_standby(),
                        crash: None,
                    }),
            })
            .collect();
        let node = |ordinal: u32| &local.nodes[usize::try_from(ordinal).unwrap_or(1) - 1];
        let step = rollout::plan(&desired, &observed).step;
        last = format!("{step:?} from {:?}", view.members);
        match step {
            Step::Idle => return Ok(taken),
            Step::Wait { .. } => tokio::time::sleep(Duration::from_millis(200)).await,
            Step::RestartPostgres { ordinal, .. } => {
                let target = node(ordinal);
                patroni_api::restart(target.api(), &credentials)
                    .await
                    .map_err(|error| anyhow::anyhow!(error))?;
                taken.push(format!("restart {}", target.name));
                // The member publishes its cleared flag on its next HA loop; the controller
                // looks again after IN_FLIGHT_REQUEUE.
                wait_member(local, &target.name, |member| {
                    member.pending_restart != Some(true)
                })
                .await?;
            }
            Step::Switchover { from, to, .. } => {
                let (from, to) = (node(from), node(to));
                patroni_api::switchover(from.api(), &credentials, &from.name, &to.name)
                    .await
                    .map_err(|error| anyhow::anyhow!(error))?;
                taken.push(format!("switchover {} -> {}", from.name, to.name));
                wait_member(local, &to.name, |member| {
                    member.is_leader() && member.state == "running"
                })
                .await?;
            }
            other => bail!("unexpected step {other:?}"),
        }
    }
}

async fn cluster_view(local: &LocalCluster) -> Option<patroni_api::ClusterView> {
    for node in local.nodes.iter().filter(|node| node.is_running()) {
        if let Ok(view) = patroni_api::cluster(node.api()).await {
            return Some(view);
        }
    }
    None
}

async fn wait_member(
    local: &LocalCluster,
    name: &str,
    done: impl Fn(&patroni_api::Member) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(view) = cluster_view(local).await
            && view.members.iter().any(|m| m.name == name && done(m))
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{name} did not get there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A renewed certificate on disk makes the controller's check fire once per node; after its
/// reload the node serves the new certificate and the check is quiet.
async fn certificate_renewal(local: &LocalCluster) -> Result<()> {
    for index in 0..local.nodes.len() {
        let client = local.connect(index).await?;
        ensure!(
            !instance_sql::certificates_changed(&client).await?,
            "{} reports a renewal before any",
            local.nodes[index].name
        );
    }
    let renewed = local.renew_server_certificate()?;
    let mut identifiers = std::collections::BTreeSet::new();
    let mut standbys = std::collections::BTreeSet::new();
    for (index, node) in local.nodes.iter().enumerate() {
        // The controller's observation of an instance: usage and the TLS check.
        let session = instance_sql::observe_with(
            node.name.clone(),
            std::sync::Arc::new(local.connect(index).await?),
        )
        .await
        .map_err(|error| anyhow::anyhow!(error))?;
        ensure!(
            session.certificates_changed,
            "{} did not notice the renewed files",
            node.name
        );
        ensure!(session.usage.is_some_and(|usage| usage.data > 0));
        identifiers.insert(session.system_identifier.clone());
        standbys.extend(session.standbys.keys().cloned());
        instance_sql::reload(&session.client).await?;
    }
    // status.systemIdentifier and status.instances[].replayLagMilliseconds come from here.
    ensure!(
        identifiers.len() == 1
            && identifiers
                .first()
                .is_some_and(|id| id.as_deref().is_some_and(|id| id.len() >= 10)),
        "every node should report the same system identifier: {identifiers:?}"
    );
    let view = cluster_view(local).await.context("Patroni's view")?;
    let replicas: std::collections::BTreeSet<String> = view
        .members
        .iter()
        .filter(|m| !m.is_leader())
        .map(|m| m.name.clone())
        .collect();
    ensure!(
        standbys == replicas,
        "pg_stat_replication names {standbys:?}, Patroni's replicas are {replicas:?}"
    );
    let expected = fingerprint(&renewed)?;
    for (index, node) in local.nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let client = local.connect(index).await?;
            let served = served_certificate(node.pg_port)?;
            if !instance_sql::certificates_changed(&client).await? && served == expected {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} serves {served}, expected {expected}",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The SHA-256 fingerprint of the first certificate in `pem`, per `openssl x509`.
fn fingerprint(pem: &[u8]) -> Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("openssl")?;
    child.stdin.take().context("stdin")?.write_all(pem)?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "openssl x509 failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The certificate PostgreSQL on `port` presents, by its fingerprint.
fn served_certificate(port: u16) -> Result<String> {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .context("openssl s_client")?;
    fingerprint(&output.stdout)
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

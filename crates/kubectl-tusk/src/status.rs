//! What `status` shows, read from the API: the Cluster's status (which the controller fills
//! from Patroni's REST API and SQL: roles, timelines, lag, volume usage) and the objects that
//! point at the Cluster. The report is plain data; `render` draws it, `-o json|yaml` prints it.

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;
use tusk_api::condition::{find_condition, types};
use tusk_api::{Backup, BackupSchedule, Cluster, PGUpgrade, Pooler, PostgresUser, ServiceBinding};

/// How many of the latest Backups the report lists.
pub const LATEST_BACKUPS: usize = 5;

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    pub name: String,
    /// Ready, Progressing, Degraded or NotReady: the first of Ready, Progressing, Degraded
    /// that is True, else NotReady.
    pub phase: String,
    pub instances_wanted: i32,
    pub ready_instances: i32,
    pub postgres_version: Option<i32>,
    pub image: Option<String>,
    pub current_primary: Option<String>,
    pub last_primary_change: Option<Timestamp>,
    pub system_identifier: Option<String>,
    pub shutdown: bool,
    /// A rolling restart was asked for (`tusk.dev/restart`) and has not finished.
    pub restart_pending: bool,
    /// Whether the controller has seen the latest spec (`observedGeneration`).
    pub up_to_date: bool,
    pub conditions: Vec<ConditionLine>,
    pub instances: Vec<InstanceLine>,
    pub storage: Vec<VolumeLine>,
    /// `spec.storage.size`, and the auto-grow limit when auto-grow is on.
    pub storage_size: String,
    pub auto_grow_limit: Option<String>,
    /// The ContinuousArchiving condition, when a repository is configured.
    pub archiving: Option<ConditionLine>,
    pub backups: Vec<BackupLine>,
    pub schedules: Vec<ScheduleLine>,
    pub upgrades: Vec<UpgradeLine>,
    pub users: Vec<DependentLine>,
    pub bindings: Vec<DependentLine>,
    pub poolers: Vec<PoolerLine>,
}

impl Report {
    /// Whether the Cluster's Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.phase == types::READY
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionLine {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Timestamp,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLine {
    pub name: String,
    pub role: String,
    pub ready: bool,
    pub timeline: Option<i64>,
    pub lag_bytes: Option<i64>,
    /// Replay lag in milliseconds as the primary measures it; none when caught up and idle.
    pub replay_lag_milliseconds: Option<i64>,
    /// A parameter change waits for a restart of PostgreSQL.
    pub pending_restart: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeLine {
    pub instance: String,
    pub volume: String,
    pub used_bytes: i64,
    pub capacity: String,
    pub used_percent: i32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupLine {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub phase: String,
    pub label: Option<String>,
    pub completed_at: Option<Timestamp>,
    /// Bytes in the repository (after compression and deduplication).
    pub repository_bytes: Option<i64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleLine {
    pub name: String,
    pub schedule: String,
    pub suspended: bool,
    pub next: Option<Timestamp>,
    pub last_successful: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeLine {
    pub name: String,
    pub from: i32,
    pub to: i32,
    pub phase: String,
    pub step: Option<String>,
}

/// A PostgresUser or ServiceBinding on the Cluster: Ready, or why not.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DependentLine {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// A Pooler in front of the Cluster: how many of its PgBouncer pods serve, and Ready or why not.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerLine {
    pub name: String,
    /// ReadWrite or ReadOnly.
    pub target: String,
    /// Session, Transaction or Statement.
    pub pool_mode: String,
    pub instances_wanted: i32,
    pub ready_instances: i32,
    pub paused: bool,
    /// `host:port` of its Service, once the controller has published it.
    pub service: Option<String>,
    pub ready: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The Cluster and the objects that refer to it, read once for `status` and `report`.
#[derive(Debug)]
pub struct Gathered {
    pub cluster: Cluster,
    pub backups: Vec<Backup>,
    pub schedules: Vec<BackupSchedule>,
    pub upgrades: Vec<PGUpgrade>,
    pub users: Vec<PostgresUser>,
    /// From any namespace (a binding may point at a Cluster elsewhere).
    pub bindings: Vec<ServiceBinding>,
    pub poolers: Vec<Pooler>,
}

/// Reads the Cluster `name` in `namespace` and what refers to it.
pub async fn read(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Gathered> {
    let cluster = crate::get_named::<Cluster>(client, namespace, name).await?;
    let in_namespace = ListParams::default();
    let backups = Api::<Backup>::namespaced(client.clone(), namespace)
        .list(&in_namespace)
        .await
        .context("listing Backups")?;
    let schedules = Api::<BackupSchedule>::namespaced(client.clone(), namespace)
        .list(&in_namespace)
        .await
        .context("listing BackupSchedules")?;
    let upgrades = Api::<PGUpgrade>::namespaced(client.clone(), namespace)
        .list(&in_namespace)
        .await
        .context("listing PGUpgrades")?;
    let users = Api::<PostgresUser>::namespaced(client.clone(), namespace)
        .list(&in_namespace)
        .await
        .context("listing PostgresUsers")?;
    let poolers = Api::<Pooler>::namespaced(client.clone(), namespace)
        .list(&in_namespace)
        .await
        .context("listing Poolers")?;
    let mut bindings = bindings_anywhere(client, namespace).await?;
    bindings.retain(|b| {
        let own = b.namespace().unwrap_or_default();
        b.spec.cluster.name == name
            && b.spec.cluster.namespace.as_deref().unwrap_or(&own) == namespace
    });
    Ok(Gathered {
        backups: backups
            .into_iter()
            .filter(|b| b.spec.cluster.name == name)
            .collect(),
        schedules: schedules
            .into_iter()
            .filter(|s| s.spec.cluster.name == name)
            .collect(),
        upgrades: upgrades
            .into_iter()
            .filter(|u| u.spec.cluster.name == name)
            .collect(),
        users: users
            .into_iter()
            .filter(|u| u.spec.cluster.name == name)
            .collect(),
        bindings,
        poolers: poolers
            .into_iter()
            .filter(|p| p.spec.cluster.name == name)
            .collect(),
        cluster,
    })
}

/// What `status` shows of the Cluster `name` in `namespace`.
pub async fn gather(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Report> {
    Ok(report(&read(client, namespace, name).await?))
}

/// ServiceBindings in every namespace (a binding may point at a Cluster elsewhere), or only in
/// `namespace` when the user may not list them cluster-wide.
async fn bindings_anywhere(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<Vec<ServiceBinding>> {
    match Api::<ServiceBinding>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Ok(Api::<ServiceBinding>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .context("listing ServiceBindings")?
                .items)
        }
        Err(error) => Err(error).context("listing ServiceBindings"),
    }
}

/// The report of what `read` gathered.
pub fn report(gathered: &Gathered) -> Report {
    let cluster = &gathered.cluster;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    let conditions: Vec<ConditionLine> = status.conditions.iter().map(condition_line).collect();
    let phase = [types::READY, types::PROGRESSING, types::DEGRADED]
        .into_iter()
        .find(|t| find_condition(&status.conditions, t).is_some_and(|c| c.status == "True"))
        .unwrap_or("NotReady")
        .to_owned();
    let mut users: Vec<DependentLine> = gathered
        .users
        .iter()
        .map(|u| dependent(u, u.status.as_ref().map(|s| s.conditions.as_slice())))
        .collect();
    users.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut bindings: Vec<DependentLine> = gathered
        .bindings
        .iter()
        .map(|b| dependent(b, b.status.as_ref().map(|s| s.conditions.as_slice())))
        .collect();
    bindings.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut poolers: Vec<PoolerLine> = gathered.poolers.iter().map(pooler_line).collect();
    poolers.sort_by(|a, b| a.name.cmp(&b.name));
    Report {
        phase,
        instances_wanted: cluster.spec.instances,
        ready_instances: status.ready_instances,
        postgres_version: status.postgres_version,
        image: status.image.clone(),
        current_primary: status.current_primary.clone(),
        last_primary_change: status.last_primary_change.as_ref().map(|t| t.0),
        system_identifier: status.system_identifier.clone(),
        shutdown: cluster.spec.shutdown,
        restart_pending: cluster.restart_pending(),
        up_to_date: status.observed_generation == cluster.metadata.generation,
        archiving: find_condition(&status.conditions, types::CONTINUOUS_ARCHIVING)
            .map(condition_line),
        conditions: conditions
            .into_iter()
            .filter(|c| c.type_ != types::CONTINUOUS_ARCHIVING)
            .collect(),
        instances: status
            .instances
            .iter()
            .map(|i| InstanceLine {
                name: i.name.clone(),
                role: serde_name(&i.role),
                ready: i.ready,
                timeline: i.timeline,
                lag_bytes: i.lag_bytes,
                replay_lag_milliseconds: i.replay_lag_milliseconds,
                pending_restart: i.pending_restart,
            })
            .collect(),
        storage: status
            .storage
            .iter()
            .map(|v| VolumeLine {
                instance: v.instance.clone(),
                volume: v.volume.clone(),
                used_bytes: v.used_bytes,
                capacity: v.capacity.clone(),
                used_percent: v.used_percent,
            })
            .collect(),
        storage_size: cluster.spec.storage.size.0.clone(),
        auto_grow_limit: cluster
            .spec
            .storage
            .auto_grow
            .as_ref()
            .map(|a| a.limit.0.clone()),
        backups: backup_lines(&gathered.backups),
        schedules: gathered.schedules.iter().map(schedule_line).collect(),
        upgrades: gathered.upgrades.iter().map(upgrade_line).collect(),
        users,
        bindings,
        poolers,
        namespace,
        name,
    }
}

fn pooler_line(pooler: &Pooler) -> PoolerLine {
    let status = pooler.status.clone().unwrap_or_default();
    let ready = find_condition(&status.conditions, types::READY);
    PoolerLine {
        name: pooler.name_any(),
        target: serde_name(&pooler.spec.target),
        pool_mode: serde_name(&pooler.spec.pgbouncer.pool_mode),
        instances_wanted: pooler.spec.instances,
        ready_instances: status.ready_instances,
        paused: pooler.spec.paused,
        service: status.service.clone(),
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()),
    }
}

fn condition_line(condition: &Condition) -> ConditionLine {
    ConditionLine {
        type_: condition.type_.clone(),
        status: condition.status.clone(),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
        since: condition.last_transition_time.0,
    }
}

/// An enum's spelling in the API (its serde name).
fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

fn time(value: Option<&Time>) -> Option<Timestamp> {
    value.map(|t| t.0)
}

/// The Cluster's latest Backups, newest first (by creation).
fn backup_lines(backups: &[Backup]) -> Vec<BackupLine> {
    let mut of_cluster: Vec<&Backup> = backups.iter().collect();
    of_cluster.sort_by(|a, b| {
        let key = |x: &Backup| {
            (
                x.metadata.creation_timestamp.as_ref().map(|t| t.0),
                x.name_any(),
            )
        };
        key(b).cmp(&key(a))
    });
    of_cluster
        .into_iter()
        .take(LATEST_BACKUPS)
        .map(|b| {
            let status = b.status.clone().unwrap_or_default();
            BackupLine {
                name: b.name_any(),
                type_: b.spec.type_.as_str().to_owned(),
                phase: status
                    .phase
                    .map_or_else(|| "Pending".to_owned(), |p| serde_name(&p)),
                label: status.backup_label,
                completed_at: time(status.completed_at.as_ref()),
                repository_bytes: status.size.map(|s| s.repository),
                error: status.error,
            }
        })
        .collect()
}

fn schedule_line(schedule: &BackupSchedule) -> ScheduleLine {
    let status = schedule.status.clone().unwrap_or_default();
    ScheduleLine {
        name: schedule.name_any(),
        schedule: schedule.spec.schedule.clone(),
        suspended: schedule.spec.suspend,
        next: time(status.next_schedule_time.as_ref()),
        last_successful: time(status.last_successful_time.as_ref()),
    }
}

fn upgrade_line(upgrade: &PGUpgrade) -> UpgradeLine {
    let status = upgrade.status.clone().unwrap_or_default();
    UpgradeLine {
        name: upgrade.name_any(),
        from: upgrade.spec.from_postgres_version,
        to: upgrade.spec.to_postgres_version,
        phase: status
            .phase
            .map_or_else(|| "Pending".to_owned(), |p| serde_name(&p)),
        step: status.step.map(|s| s.as_str().to_owned()),
    }
}

fn dependent<K: kube::Resource>(object: &K, conditions: Option<&[Condition]>) -> DependentLine {
    let ready = conditions.and_then(|c| find_condition(c, types::READY));
    DependentLine {
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: object.meta().name.clone().unwrap_or_default(),
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()),
    }
}

//! One pass over a PGUpgrade: observe → decide (pure, [`crate::machine`]) → persist the
//! status → take the one action → events.
//!
//! The status is written *before* the action, so the persisted step is never behind what was
//! done: after a restart the state machine resumes from a step whose actions it can see in the
//! world (a Job that exists, a lock that is set) and never repeats an earlier step's decision
//! against a world that has moved on.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as ControllerAction;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tusk_api::backup::{BackupSpec, BackupType};
use tusk_api::common::ClusterReference;
use tusk_api::condition::is_ready;
use tusk_api::upgrade::{PGUpgradeStatus, UpgradeStep};
use tusk_api::{Backup, Cluster, PGUpgrade, labels, names};
use tusk_runtime::Context;
use tusk_runtime::apply;

use crate::dcs;
use crate::error::Error;
use crate::jobs::{self, JobKind};
use crate::machine::{
    self, Action, BackupFacts, BackupState, ClaimFacts, ClusterFacts, Decision, JobState, Progress,
    World,
};
use crate::status;

/// What the PGUpgrade controller needs besides the runtime's context.
#[derive(Clone, Debug)]
pub struct State {
    pub ctx: Context,
}

impl State {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    fn image_template(&self) -> &str {
        &self.ctx.config.postgres_image
    }
}

/// How soon to look again while an upgrade is under way: Jobs and Backups raise watch events,
/// but pods stopping and Patroni starting show up in the Cluster's status only eventually.
const ACTIVE_REQUEUE: Duration = Duration::from_secs(10);

/// Everything read from the API for one PGUpgrade.
#[derive(Debug, Default)]
pub struct Observed {
    pub cluster: Option<Cluster>,
    pub world: World,
}

pub async fn reconcile(
    upgrade: Arc<PGUpgrade>,
    state: Arc<State>,
) -> Result<ControllerAction, Error> {
    let _timer = state.ctx.metrics.reconcile_timer();
    let observed = observe(&upgrade, &state).await?;
    let decision = machine::decide(&upgrade, &observed.world);
    let now = Time(jiff::Timestamp::now());
    let cluster_image = observed
        .cluster
        .as_ref()
        .and_then(|c| c.spec.image.as_ref());
    let status = status::desired_status(&upgrade, &decision, cluster_image, now);
    let api: Api<PGUpgrade> = Api::namespaced(state.ctx.client.clone(), &namespace(&upgrade));
    apply::ensure_status(
        &api,
        state.ctx.field_manager(),
        &upgrade.name_any(),
        &status,
        upgrade.status.as_ref(),
    )
    .await?;
    let acted = act(&upgrade, &state, &observed, &decision, &status).await?;
    publish_transitions(&upgrade, &state, &decision, &status, acted).await;
    let steady = state.ctx.requeue(upgrade.as_ref());
    Ok(match decision.step {
        UpgradeStep::Done => steady,
        _ if matches!(decision.progress, Progress::Blocked { .. }) => steady,
        _ => ControllerAction::requeue(ACTIVE_REQUEUE),
    })
}

pub fn error_policy(upgrade: Arc<PGUpgrade>, error: &Error, state: Arc<State>) -> ControllerAction {
    tusk_runtime::error_policy(upgrade.as_ref(), error, &state.ctx)
}

fn namespace(upgrade: &PGUpgrade) -> String {
    upgrade.namespace().unwrap_or_else(|| "default".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Observe
// ---------------------------------------------------------------------------------------------

async fn observe(upgrade: &PGUpgrade, state: &State) -> Result<Observed, Error> {
    let client = state.ctx.client.clone();
    let ns = namespace(upgrade);
    let me = upgrade.name_any();
    let cluster_name = upgrade.spec.cluster.name.clone();
    let finished = upgrade
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished());
    if finished {
        return Ok(Observed::default());
    }

    let cluster = Api::<Cluster>::namespaced(client.clone(), &ns)
        .get_opt(&cluster_name)
        .await
        .map_err(Error::observe("Cluster"))?;
    let mut world = World {
        cluster: cluster.as_ref().map(cluster_facts),
        ..World::default()
    };

    {
        let upgrades = Api::<PGUpgrade>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(Error::observe("PGUpgrades"))?;
        world.other_upgrade = upgrades
            .items
            .iter()
            .filter(|other| other.spec.cluster.name == cluster_name && other.name_any() != me)
            .filter(|other| other.is_active())
            .filter(|other| goes_first(other, upgrade))
            .map(ResourceExt::name_any)
            .min();
    }

    {
        let backups = Api::<Backup>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(Error::observe("Backups"))?;
        world.backups = backups
            .items
            .iter()
            .filter(|b| b.spec.cluster.name == cluster_name)
            .map(backup_facts)
            .collect();
    }

    let selector = format!("{}={cluster_name}", labels::CLUSTER);
    let cluster_pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::observe("Pods"))?
        .items;
    world.instance_pods = cluster_pods
        .iter()
        .filter(|pod| names::pod_instance(&cluster_name, pod).is_some())
        .count();

    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
    for kind in &[
        JobKind::Check,
        JobKind::Upgrade,
        JobKind::PostUpgrade,
        JobKind::Restore,
    ] {
        let name = jobs::job_name(&me, *kind);
        let job = jobs_api
            .get_opt(&name)
            .await
            .map_err(Error::observe("Jobs"))?
            .filter(|job| jobs::is_owned_by(&job.metadata, upgrade));
        let job_state = match job {
            Some(job) => Some(job_state(&job, &pods_api, &name).await?),
            None => None,
        };
        match kind {
            JobKind::Check => world.check_job = job_state,
            JobKind::Upgrade => world.upgrade_job = job_state,
            JobKind::PostUpgrade => world.post_job = job_state,
            JobKind::Restore => world.restore_job = job_state,
        }
    }

    {
        let endpoints = Api::<Endpoints>::namespaced(client.clone(), &ns);
        let config = endpoints
            .get_opt(&dcs::config_name(&cluster_name))
            .await
            .map_err(Error::observe("Endpoints"))?;
        let leader = endpoints
            .get_opt(&dcs::leader_name(&cluster_name))
            .await
            .map_err(Error::observe("Endpoints"))?;
        world.dcs = dcs::facts(config.as_ref(), leader.as_ref());
    }

    {
        let instance = upgrade.status.as_ref().and_then(|s| s.instance.clone());
        if let Some(instance) = instance {
            let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map_err(Error::observe("PersistentVolumeClaims"))?;
            world.replica_claims = claims
                .items
                .iter()
                .filter(|claim| replica_claim(&cluster_name, &instance, &claim.name_any()))
                .map(|claim| ClaimFacts {
                    name: claim.name_any(),
                    terminating: claim.metadata.deletion_timestamp.is_some(),
                    used_by: pods_using(&cluster_pods, &claim.name_any()),
                })
                .collect();
        }
    }

    Ok(Observed { cluster, world })
}

fn cluster_facts(cluster: &Cluster) -> ClusterFacts {
    let status = cluster.status.clone().unwrap_or_default();
    ClusterFacts {
        spec_version: cluster.spec.postgres_version,
        spec_image: cluster.spec.image.clone(),
        running_version: status.postgres_version,
        lock: cluster
            .annotations()
            .get(labels::UPGRADE_LOCK_ANNOTATION)
            .cloned(),
        has_repository: cluster.spec.has_repository(),
        ready: is_ready(&status.conditions, cluster.metadata.generation),
        primary: status.current_primary.clone(),
        instances: cluster.spec.instances,
        ready_instances: status.ready_instances,
    }
}

/// Whether `other` takes precedence over `upgrade` for the same Cluster: it is under way, or
/// both wait and it was created first (by name when created in the same second).
fn goes_first(other: &PGUpgrade, upgrade: &PGUpgrade) -> bool {
    let started = other
        .status
        .as_ref()
        .and_then(|s| s.step)
        .is_some_and(|s| s != UpgradeStep::Validating);
    if started {
        return true;
    }
    let created = |u: &PGUpgrade| u.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(other), created(upgrade)) {
        (Some(a), Some(b)) if a != b => a < b,
        _ => other.name_any() < upgrade.name_any(),
    }
}

fn backup_facts(backup: &Backup) -> BackupFacts {
    let state = if backup.has_succeeded() {
        BackupState::Succeeded
    } else if backup.has_failed() {
        BackupState::Failed(
            backup
                .status
                .as_ref()
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| "the Backup reports Succeeded=False".to_owned()),
        )
    } else {
        BackupState::Waiting
    };
    BackupFacts {
        name: backup.name_any(),
        created: backup.metadata.creation_timestamp.as_ref().map(|t| t.0),
        state,
    }
}

/// Whether `claim` is the data or WAL volume of an instance of `cluster` other than
/// `instance` (the StatefulSet names them `<template>-<instance>-0`).
fn replica_claim(cluster: &str, instance: &str, claim: &str) -> bool {
    ["data-", "wal-"].iter().any(|prefix| {
        claim
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("-0"))
            .is_some_and(|owner| {
                owner != instance && names::instance_ordinal(cluster, owner).is_some()
            })
    })
}

/// The pods that have not finished and mount `claim` (pvc-protection holds a deleted claim
/// for as long as there are any).
fn pods_using(pods: &[Pod], claim: &str) -> Vec<String> {
    pods.iter()
        .filter(|pod| {
            !pod.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
        })
        .filter(|pod| {
            pod.spec
                .iter()
                .flat_map(|spec| spec.volumes.iter().flatten())
                .any(|volume| {
                    volume
                        .persistent_volume_claim
                        .as_ref()
                        .is_some_and(|source| source.claim_name == claim)
                })
        })
        .map(|pod| pod.name_any())
        .collect()
}

async fn job_state(job: &Job, pods: &Api<Pod>, name: &str) -> Result<JobState, Error> {
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
    };
    let succeeded = status.succeeded.unwrap_or(0) > 0 || condition("Complete");
    let failed = status.failed.unwrap_or(0) > 0 || condition("Failed");
    if !succeeded && !failed {
        return Ok(JobState::Running);
    }
    let message = termination_message(pods, name).await?;
    Ok(if succeeded {
        JobState::Succeeded(message)
    } else {
        let message = if message.is_empty() {
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed")
                .and_then(|c| c.message)
                .unwrap_or_else(|| format!("Job {name} failed; see its pod's log"))
        } else {
            message
        };
        JobState::Failed(message)
    })
}

/// The termination message of the Job's newest pod (`/dev/termination-log`, or the end of
/// its log when the container failed without writing one).
async fn termination_message(pods: &Api<Pod>, job: &str) -> Result<String, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{}={job}", jobs::JOB_NAME_LABEL)))
        .await
        .map_err(Error::observe("Pods"))?;
    let newest = list
        .items
        .iter()
        .max_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(newest
        .and_then(|pod| pod.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.first())
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone())
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Act
// ---------------------------------------------------------------------------------------------

/// Takes the decision's action; returns a note for the event, or `None` when nothing was
/// done.
async fn act(
    upgrade: &PGUpgrade,
    state: &State,
    observed: &Observed,
    decision: &Decision,
    status: &PGUpgradeStatus,
) -> Result<Option<(&'static str, String)>, Error> {
    let client = state.ctx.client.clone();
    let ns = namespace(upgrade);
    let me = upgrade.name_any();
    let cluster_name = upgrade.spec.cluster.name.clone();
    let manager = state.ctx.field_manager();
    let clusters = Api::<Cluster>::namespaced(client.clone(), &ns);
    let merge = |body: serde_json::Value| Patch::Merge(body);
    let params = PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    };
    match &decision.action {
        Action::Wait => Ok(None),
        Action::CreateBackup(name) => {
            create_backup(upgrade, state, observed.cluster.as_ref(), name).await?;
            Ok(Some((
                "BackupCreated",
                format!("created Backup {name} (full) of Cluster {cluster_name}"),
            )))
        }
        Action::LockCluster => {
            // The Cluster is the user's object: a merge patch of one annotation (as
            // `kubectl annotate` does) takes no ownership of anything else.
            clusters
                .patch(
                    &cluster_name,
                    &params,
                    &merge(
                        json!({"metadata": {"annotations": {labels::UPGRADE_LOCK_ANNOTATION: me}}}),
                    ),
                )
                .await
                .map_err(Error::act(format!(
                    "setting the upgrade lock on Cluster {cluster_name}"
                )))?;
            Ok(Some((
                "ClusterLocked",
                format!(
                    "set {} on Cluster {cluster_name}: its instances stop, replicas first",
                    labels::UPGRADE_LOCK_ANNOTATION
                ),
            )))
        }
        Action::CreateJob(kind) => {
            let (Some(cluster), Some(instance)) = (&observed.cluster, &status.instance) else {
                return Ok(None);
            };
            let job = jobs::desired_job(upgrade, cluster, instance, *kind, state.image_template());
            create_job(&client, &ns, &job).await?;
            Ok(Some((
                "JobCreated",
                format!(
                    "created Job {} ({}) on the volume of {instance}",
                    job.name_any(),
                    kind.describe()
                ),
            )))
        }
        Action::RewriteDcs(system) => {
            dcs::rewrite(&client, &ns, &cluster_name, system, manager).await?;
            Ok(Some((
                "PatroniStateCleared",
                format!(
                    "Patroni's DCS now accepts only the new system {system}; the old leader state was removed"
                ),
            )))
        }
        Action::DeleteClaims(claims) => {
            let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
            for claim in claims {
                match api.delete(claim, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(error) if crate::error::api_code(&error) == Some(404) => {}
                    Err(error) => {
                        return Err(Error::act(format!("deleting volume claim {claim}"))(error));
                    }
                }
            }
            Ok(Some((
                "ReplicaVolumesDeleted",
                format!(
                    "deleted {} (the replicas are re-created from the new primary)",
                    claims.join(", ")
                ),
            )))
        }
        Action::DeletePods(pods) => {
            let api = Api::<Pod>::namespaced(client.clone(), &ns);
            for pod in pods {
                match api.delete(pod, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(error) if crate::error::api_code(&error) == Some(404) => {}
                    Err(error) => return Err(Error::act(format!("deleting pod {pod}"))(error)),
                }
            }
            Ok(Some((
                "HeldVolumesReleased",
                format!(
                    "deleted pod(s) {} that held deleted replica volume(s); their StatefulSets re-create them on new volumes",
                    pods.join(", ")
                ),
            )))
        }
        Action::MoveClusterToNewMajor => {
            let to = upgrade.spec.to_postgres_version;
            clusters
                .patch(
                    &cluster_name,
                    &params,
                    &merge(json!({"spec": {"postgresVersion": to, "image": upgrade.spec.image}})),
                )
                .await
                .map_err(Error::act(format!(
                    "setting Cluster {cluster_name} to PostgreSQL {to}"
                )))?;
            Ok(Some((
                "ClusterVersionChanged",
                format!("set Cluster {cluster_name} spec.postgresVersion to {to}"),
            )))
        }
        Action::UnlockCluster => {
            clusters
                .patch(
                    &cluster_name,
                    &params,
                    &merge(json!({"metadata": {"annotations": {labels::UPGRADE_LOCK_ANNOTATION: null}}})),
                )
                .await
                .map_err(Error::act(format!("removing the upgrade lock from Cluster {cluster_name}")))?;
            Ok(Some((
                "ClusterUnlocked",
                format!(
                    "removed {} from Cluster {cluster_name}: its instances start",
                    labels::UPGRADE_LOCK_ANNOTATION
                ),
            )))
        }
        Action::StartPostUpgrade { backup, job } => {
            let mut done = Vec::new();
            if let Some(name) = backup {
                create_backup(upgrade, state, observed.cluster.as_ref(), name).await?;
                done.push(format!("Backup {name}"));
            }
            if *job && let (Some(cluster), Some(instance)) = (&observed.cluster, &status.instance) {
                let job = jobs::desired_job(
                    upgrade,
                    cluster,
                    instance,
                    JobKind::PostUpgrade,
                    state.image_template(),
                );
                create_job(&client, &ns, &job).await?;
                done.push(format!(
                    "Job {} ({})",
                    job.name_any(),
                    JobKind::PostUpgrade.describe()
                ));
            }
            Ok(Some((
                "PostUpgradeStarted",
                format!("created {}", done.join(" and ")),
            )))
        }
    }
}

async fn create_job(client: &kube::Client, ns: &str, job: &Job) -> Result<(), Error> {
    match Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), job)
        .await
    {
        // Created by an earlier pass whose watch event has not arrived yet.
        Ok(_) => Ok(()),
        Err(error) if crate::error::api_code(&error) == Some(409) => Ok(()),
        Err(error) => Err(Error::act(format!("creating Job {}", job.name_any()))(
            error,
        )),
    }
}

/// A full Backup owned by the PGUpgrade, to the Cluster's first repository.
async fn create_backup(
    upgrade: &PGUpgrade,
    state: &State,
    cluster: Option<&Cluster>,
    name: &str,
) -> Result<(), Error> {
    let repository = cluster
        .and_then(|c| c.spec.backup.as_ref())
        .and_then(|b| b.repositories.first())
        .map_or_else(
            || tusk_api::backup::DEFAULT_REPOSITORY.to_owned(),
            |r| r.name.clone(),
        );
    let ns = namespace(upgrade);
    let cluster = &upgrade.spec.cluster.name;
    let mut labels = labels::cluster_child_labels(cluster, jobs::COMPONENT);
    labels.insert(labels::UPGRADE.to_owned(), upgrade.name_any());
    let backup = Backup {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            owner_references: upgrade.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: BackupSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            type_: BackupType::Full,
            repository,
            deletion_policy: Default::default(),
        },
        status: None,
    };
    match Api::<Backup>::namespaced(state.ctx.client.clone(), &ns)
        .create(&PostParams::default(), &backup)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if crate::error::api_code(&error) == Some(409) => Ok(()),
        Err(error) => Err(Error::act(format!("creating Backup {name}"))(error)),
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

async fn publish_transitions(
    upgrade: &PGUpgrade,
    state: &State,
    decision: &Decision,
    status: &PGUpgradeStatus,
    acted: Option<(&'static str, String)>,
) {
    let previous = upgrade.status.clone().unwrap_or_default();
    let mut events: Vec<(EventType, &str, String)> = Vec::new();
    // One event per step entered; entering RollingBack is reported as the failure below.
    if previous.step != status.step
        && let Some(step) = status.step
        && step != UpgradeStep::Done
        && step != UpgradeStep::RollingBack
        && let Progress::Working(message) = &decision.progress
    {
        events.push((EventType::Normal, step.as_str(), message.clone()));
    }
    if let Some((reason, note)) = acted {
        events.push((EventType::Normal, reason, note));
    }
    if previous.phase != status.phase {
        match &decision.progress {
            Progress::Blocked { reason, message } => {
                events.push((EventType::Warning, reason, message.clone()));
            }
            Progress::Failed { reason, message } if decision.step == UpgradeStep::Done => {
                events.push((
                    EventType::Warning,
                    status::static_reason(reason),
                    message.clone(),
                ));
            }
            Progress::Succeeded(message) => {
                events.push((EventType::Normal, "Succeeded", message.clone()));
            }
            _ => {}
        }
    } else if let Progress::Blocked { reason, message } = &decision.progress {
        let before = previous
            .conditions
            .iter()
            .find(|c| c.type_ == tusk_api::condition::types::PROGRESSING)
            .map(|c| c.reason.as_str());
        if before != Some(*reason) {
            events.push((EventType::Warning, reason, message.clone()));
        }
    }
    if let (Some(before), Some(after)) = (&previous.step, &status.step)
        && *after == UpgradeStep::RollingBack
        && *before != UpgradeStep::RollingBack
        && let Progress::Failed { reason, message } = &decision.progress
    {
        events.push((
            EventType::Warning,
            status::static_reason(reason),
            message.clone(),
        ));
    }
    for (type_, reason, note) in events {
        tusk_runtime::events::publish(&state.ctx.recorder, upgrade, type_, reason, &note).await;
    }
}

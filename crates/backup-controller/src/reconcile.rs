//! One reconcile of a Backup: observe → decide → apply → status.
//!
//! ```text
//!  finished (Completed/Failed)? ──► nothing (no API call; never a second Job)
//!  Job <backup>-backup exists? ──yes──► its state (+ the pod's termination message) → status
//!     │no
//!     ├─ status.jobName set ──► Failed, JobDeleted (someone deleted the Job mid-run)
//!     ├─ Cluster missing / not Ready / no primary ──► Pending, waits (Progressing reason)
//!     └─ create ConfigMap + Job (create-if-absent) ──► Pending, JobCreated
//!  deleted, deletionPolicy Expire (finalizer tusk.dev/backup):
//!     completed set? ──► Job <backup>-expire runs `pgbackrest expire --set=<label>`
//!        succeeded ──► finalizer released      failed ──► ExpireFailed, finalizer kept
//!     no set (failed, never ran) / Cluster gone ──► finalizer released
//! ```
//!
//! Retain (the default) puts no finalizer on the Backup: deleting it only removes the Job.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tusk_api::backup::{BackupDeletionPolicy, BackupPhase, BackupStatus, reasons};
use tusk_api::condition::{DesiredCondition, is_ready, set_condition, types};
use tusk_api::names;
use tusk_api::{Backup, Cluster};
use tusk_runtime::{Context, apply};

use crate::error::Error;
use crate::job::{self, Operation};
use crate::status::{Verdict, job_verdict, next_status};

/// The time source: the wall clock in the operator, a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// How often a deletion waiting for its expire Job looks again (the Job watch also wakes it).
const EXPIRE_POLL: Duration = Duration::from_secs(15);

/// What every reconcile shares.
pub struct State {
    pub ctx: Context,
    pub clock: Clock,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl State {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            clock: Arc::new(Timestamp::now),
        }
    }

    /// The same state reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, to the second (the API keeps times to the second).
    fn now(&self) -> Timestamp {
        let now = (self.clock)();
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }

    fn finalizer(&self) -> String {
        self.ctx.kind.finalizer()
    }
}

/// Reconciles one Backup (the controller's reconcile function).
pub async fn reconcile(backup: Arc<Backup>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.ctx.metrics.reconcile_timer();
    let namespace = backup.namespace().ok_or(Error::Metadata("namespace"))?;
    let api: Api<Backup> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let finalizer = state.finalizer();
    let has_finalizer = backup.finalizers().contains(&finalizer);
    if backup.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return match expire(&backup, &state, &namespace).await? {
            Cleanup::Done => {
                set_finalizer(&api, &backup, &finalizer, false).await?;
                Ok(Action::await_change())
            }
            Cleanup::Waiting => Ok(Action::requeue(EXPIRE_POLL)),
            Cleanup::Failed => Ok(Action::await_change()),
        };
    }
    if backup.spec.deletion_policy == BackupDeletionPolicy::Expire && !has_finalizer {
        set_finalizer(&api, &backup, &finalizer, true).await?;
    }
    if backup.is_finished() {
        // One-shot: a finished Backup never gets another Job.
        return Ok(state.ctx.requeue(backup.as_ref()));
    }
    run_backup(&backup, &state, &api, &namespace).await
}

/// The controller's error policy: the runtime's, which records the metric and backs off.
pub fn error_policy(backup: Arc<Backup>, error: &Error, state: Arc<State>) -> Action {
    tusk_runtime::error_policy(backup.as_ref(), error, &state.ctx)
}

/// Adds or removes the controller's finalizer with a merge patch guarded by the object's
/// resourceVersion, so a concurrent change of the list is not overwritten.
async fn set_finalizer(
    api: &Api<Backup>,
    backup: &Backup,
    finalizer: &str,
    present: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = backup
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if present {
        finalizers.push(finalizer.to_owned());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": backup.resource_version(),
        }
    });
    api.patch(
        &backup.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube("updating the finalizer"))?;
    Ok(())
}

async fn run_backup(
    backup: &Backup,
    state: &State,
    api: &Api<Backup>,
    namespace: &str,
) -> Result<Action, Error> {
    let client = state.ctx.client.clone();
    let name = backup.name_any();
    let job_name = names::backup_job(&name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let now = state.now();
    let previous = backup.status.as_ref();
    let repository = backup.spec.repository.clone();

    let (verdict, failure) = match jobs
        .get_opt(&job_name)
        .await
        .map_err(Error::kube("reading the Job"))?
    {
        Some(job) => {
            let uid = backup.uid().unwrap_or_default();
            if !job.owner_references().iter().any(|o| o.uid == uid) {
                let error = Error::JobConflict(job_name.clone());
                (waiting(&error, false), Some(error))
            } else {
                let repo_index = repository_index(&repository);
                let pods = if job_finished(&job) {
                    pods_of(&client, namespace, &job_name).await?
                } else {
                    Vec::new()
                };
                (job_verdict(&job, &pods, repo_index, now), None)
            }
        }
        None if previous.and_then(|s| s.job_name.as_ref()).is_some() => (
            Verdict::Failed {
                job: None,
                reason: reasons::JOB_DELETED,
                error: format!(
                    "Job {job_name} was deleted before it finished; the backup counts as failed and is not retried: create a new Backup to try again"
                ),
                started: previous.and_then(|s| s.started_at.as_ref()).map(|t| t.0),
                finished: now,
            },
            None,
        ),
        None => match create_job(backup, state, namespace).await {
            Ok(()) => (Verdict::JobCreated { job: job_name }, None),
            Err(error) => {
                let progressing = !error.is_permanent();
                (waiting(&error, progressing), Some(error))
            }
        },
    };

    let status = next_status(
        previous,
        &verdict,
        &repository,
        backup.metadata.generation,
        now,
    );
    publish_transition(backup, state, previous, &status, &verdict).await;
    apply::ensure_status(api, state.ctx.field_manager(), &name, &status, previous).await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(state.ctx.requeue(backup)),
    }
}

fn waiting(error: &Error, progressing: bool) -> Verdict {
    Verdict::Waiting {
        reason: error.reason(),
        message: error.to_string(),
        progressing,
    }
}

fn repository_index(repository: &str) -> u32 {
    repository
        .strip_prefix("repo")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn job_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.succeeded.unwrap_or(0) > 0
            || s.failed.unwrap_or(0) > 0
            || s.conditions
                .iter()
                .flatten()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    })
}

async fn pods_of(client: &kube::Client, namespace: &str, job: &str) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map_err(Error::kube("listing the Job's pods"))?
        .items)
}

/// The Cluster, if it is Ready to be backed up.
async fn ready_cluster(backup: &Backup, state: &State, namespace: &str) -> Result<Cluster, Error> {
    let clusters: Api<Cluster> = Api::namespaced(state.ctx.client.clone(), namespace);
    let cluster_name = backup.spec.cluster.name.clone();
    let cluster = clusters
        .get_opt(&cluster_name)
        .await
        .map_err(Error::kube("reading the Cluster"))?
        .ok_or_else(|| Error::ClusterNotFound(cluster_name.clone()))?;
    let ready = cluster
        .status
        .as_ref()
        .is_some_and(|s| is_ready(&s.conditions, cluster.metadata.generation));
    let primary = cluster
        .status
        .as_ref()
        .and_then(|s| s.current_primary.as_ref())
        .is_some();
    if cluster.metadata.deletion_timestamp.is_some() || !ready || !primary {
        return Err(Error::ClusterNotReady(cluster_name));
    }
    if stanza_missing(&cluster) {
        return Err(Error::StanzaNotReady(cluster_name));
    }
    Ok(cluster)
}

/// Whether the Cluster says its stanza does not exist (yet, or not for its current major):
/// a backup now would only fail.
fn stanza_missing(cluster: &Cluster) -> bool {
    cluster.status.as_ref().is_some_and(|status| {
        status.conditions.iter().any(|c| {
            c.type_ == types::CONTINUOUS_ARCHIVING
                && c.status == "False"
                && c.reason == "StanzaMissing"
        })
    })
}

/// Creates the Backup's ConfigMap and Job, each only if absent: a Backup never gets two Jobs,
/// and an existing Job is never changed.
async fn create_job(backup: &Backup, state: &State, namespace: &str) -> Result<(), Error> {
    let cluster = ready_cluster(backup, state, namespace).await?;
    let image = job::image(&cluster, &state.ctx.config.postgres_image);
    let desired = job::desired(
        backup,
        &cluster,
        &Operation::Backup(backup.spec.type_),
        &image,
    )?;
    create_if_absent(state, namespace, desired).await
}

async fn create_if_absent(
    state: &State,
    namespace: &str,
    desired: job::Desired,
) -> Result<(), Error> {
    let params = PostParams {
        field_manager: Some(state.ctx.field_manager().to_owned()),
        ..PostParams::default()
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(state.ctx.client.clone(), namespace);
    match config_maps.create(&params, &desired.config_map).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => return Err(Error::kube("creating the pgBackRest ConfigMap")(source)),
    }
    let jobs: Api<Job> = Api::namespaced(state.ctx.client.clone(), namespace);
    match jobs.create(&params, &desired.job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::kube("creating the Job")(source)),
    }
}

/// Events for phase changes a person wants in `kubectl describe`.
async fn publish_transition(
    backup: &Backup,
    state: &State,
    previous: Option<&BackupStatus>,
    status: &BackupStatus,
    verdict: &Verdict,
) {
    let progressing_reason = |status: Option<&BackupStatus>| {
        status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == types::PROGRESSING))
            .map(|c| c.reason.clone())
    };
    let unchanged = previous.and_then(|s| s.phase) == status.phase
        && progressing_reason(previous) == progressing_reason(Some(status));
    if unchanged {
        return;
    }
    let (type_, reason, note) = match verdict {
        Verdict::Waiting { message, .. } => (EventType::Normal, "Waiting", message.clone()),
        Verdict::JobCreated { job } => (
            EventType::Normal,
            reasons::JOB_CREATED,
            format!(
                "created Job {job}: {} backup of Cluster {} to {}",
                backup.spec.type_.as_str(),
                backup.spec.cluster.name,
                backup.spec.repository
            ),
        ),
        Verdict::Running { job, .. } => (
            EventType::Normal,
            reasons::RUNNING,
            format!("pgBackRest started in Job {job}"),
        ),
        Verdict::Completed { .. } => (
            EventType::Normal,
            reasons::COMPLETED,
            format!(
                "{} backup completed: set {}",
                crate::status::taken_type(status, backup.spec.type_).as_str(),
                status.backup_label.as_deref().unwrap_or("(label unknown)")
            ),
        ),
        Verdict::Failed { reason, error, .. } => (EventType::Warning, *reason, last_line(error)),
    };
    publish(backup, state, type_, reason, note).await;
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_owned()
}

async fn publish(backup: &Backup, state: &State, type_: EventType, reason: &str, note: String) {
    tusk_runtime::events::publish(&state.ctx.recorder, backup, type_, reason, &note).await;
}

/// Where the expiry of a deleted Backup's set stands.
enum Cleanup {
    /// Nothing (more) to do: release the finalizer.
    Done,
    /// The expire Job is running.
    Waiting,
    /// The expire Job failed: reported, finalizer kept until someone acts.
    Failed,
}

async fn expire(backup: &Backup, state: &State, namespace: &str) -> Result<Cleanup, Error> {
    let name = backup.name_any();
    let label = backup
        .status
        .as_ref()
        .and_then(|s| s.backup_label.clone())
        .filter(|_| backup.has_succeeded());
    let Some(label) = label else {
        // Nothing reached the repository under this Backup's name.
        return Ok(Cleanup::Done);
    };
    let clusters: Api<Cluster> = Api::namespaced(state.ctx.client.clone(), namespace);
    let cluster = clusters
        .get_opt(&backup.spec.cluster.name)
        .await
        .map_err(Error::kube("reading the Cluster"))?;
    let Some(cluster) = cluster.filter(|c| c.metadata.deletion_timestamp.is_none()) else {
        publish(
            backup,
            state,
            EventType::Warning,
            "ExpireSkipped",
            format!(
                "Cluster {} is gone: backup set {label} was left in the repository, where its retention expires it",
                backup.spec.cluster.name
            ),
        )
        .await;
        return Ok(Cleanup::Done);
    };
    let job_name = job::expire_job_name(&name);
    let jobs: Api<Job> = Api::namespaced(state.ctx.client.clone(), namespace);
    let Some(existing) = jobs
        .get_opt(&job_name)
        .await
        .map_err(Error::kube("reading the expire Job"))?
    else {
        let image = job::image(&cluster, &state.ctx.config.postgres_image);
        let desired = job::desired(backup, &cluster, &Operation::Expire(label.clone()), &image)?;
        create_if_absent(state, namespace, desired).await?;
        publish(
            backup,
            state,
            EventType::Normal,
            "Expiring",
            format!(
                "created Job {job_name} to expire backup set {label} from {}",
                backup.spec.repository
            ),
        )
        .await;
        return Ok(Cleanup::Waiting);
    };
    let now = state.now();
    let verdict = job_verdict(
        &existing,
        &[],
        repository_index(&backup.spec.repository),
        now,
    );
    match verdict {
        Verdict::Completed { .. } => {
            publish(
                backup,
                state,
                EventType::Normal,
                "Expired",
                format!("expired backup set {label} from {}", backup.spec.repository),
            )
            .await;
            Ok(Cleanup::Done)
        }
        Verdict::Failed { .. } => {
            let pods = pods_of(&state.ctx.client, namespace, &job_name).await?;
            let detail = match job_verdict(&existing, &pods, 1, now) {
                Verdict::Failed { error, .. } => last_line(&error),
                _ => String::new(),
            };
            let message = format!(
                "expiring backup set {label} failed ({detail}): fix the cause and delete Job {job_name} to try again, or remove the finalizer {} to keep the set",
                state.finalizer()
            );
            let mut status = backup.status.clone().unwrap_or_default();
            let changed = set_condition(
                &mut status.conditions,
                DesiredCondition::new(
                    types::PROGRESSING,
                    false,
                    reasons::EXPIRE_FAILED,
                    message.clone(),
                ),
                backup.metadata.generation,
                Time(now),
            );
            if changed {
                let api: Api<Backup> = Api::namespaced(state.ctx.client.clone(), namespace);
                apply::ensure_status(
                    &api,
                    state.ctx.field_manager(),
                    &name,
                    &status,
                    backup.status.as_ref(),
                )
                .await?;
                publish(
                    backup,
                    state,
                    EventType::Warning,
                    reasons::EXPIRE_FAILED,
                    message,
                )
                .await;
            }
            Ok(Cleanup::Failed)
        }
        _ => Ok(Cleanup::Waiting),
    }
}

/// Whether `phase` needs no more work (used by the Cluster watch mapper).
pub fn is_open(backup: &Backup) -> bool {
    !backup
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(BackupPhase::is_finished)
}

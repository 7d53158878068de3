//! One reconcile of a BackupSchedule: observe → plan → apply → status.
//!
//! ```text
//!  observe: schedule ─► cron + time zone (invalid: Ready=False, wait for a change)
//!           Cluster exists?   Backups owned by this schedule (label + owner UID)
//!  plan:    plan.rs (pure): create / skip / missed / prune, next time, status
//!  apply:   create the Backup (create-if-absent: its name is deterministic)
//!           delete pruned Backups          status (only if it differs)    events
//!  requeue: exactly at the next scheduled time (or the bounded interval, if sooner)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tusk_api::condition::{DesiredCondition, set_condition};
use tusk_api::labels;
use tusk_api::schedule::BackupScheduleStatus;
use tusk_api::{Backup, BackupSchedule, Cluster};
use tusk_runtime::{Context, apply};

use crate::cron::CronSchedule;
use crate::error::Error;
use crate::plan::{Decision, Input, OwnedBackup, Run, plan};

/// The time source: the wall clock in the operator, a settable one in tests (which never
/// sleep).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

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
            clock: system_clock(),
        }
    }

    /// The same state reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, to the second: the API keeps times to the second, and a finer time would make a
    /// status differ from what is read back.
    fn now(&self) -> Timestamp {
        let now = (self.clock)();
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }
}

/// The label a schedule's Backups carry, and by which they are listed.
pub fn owned_selector(schedule: &str) -> String {
    format!("{}={schedule}", labels::SCHEDULE)
}

/// Reconciles one BackupSchedule (the controller's reconcile function).
pub async fn reconcile(schedule: Arc<BackupSchedule>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.ctx.metrics.reconcile_timer();
    let namespace = schedule.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = schedule.name_any();
    let client = state.ctx.client.clone();
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &namespace);
    if schedule.metadata.deletion_timestamp.is_some() {
        // Its Backups are owned: garbage collection removes them (and expires their sets
        // when their deletionPolicy says so).
        return Ok(Action::await_change());
    }
    let now = state.now();

    let cron = match CronSchedule::parse(&schedule.spec.schedule, schedule.spec.time_zone()) {
        Ok(cron) => cron,
        Err(problem) => {
            let error = Error::Schedule(problem);
            let mut status = schedule.status.clone().unwrap_or_default();
            status.observed_generation = schedule.metadata.generation;
            status.next_schedule_time = None;
            set_condition(
                &mut status.conditions,
                DesiredCondition::ready(false, error.reason(), error.to_string()),
                schedule.metadata.generation,
                Time(now),
            );
            apply::ensure_status(
                &schedules,
                state.ctx.field_manager(),
                &name,
                &status,
                schedule.status.as_ref(),
            )
            .await?;
            return Err(error);
        }
    };

    // Observe.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
    let cluster_exists = clusters
        .get_opt(&schedule.spec.cluster.name)
        .await
        .map_err(Error::kube("reading the Cluster"))?
        .is_some();
    let backups_api: Api<Backup> = Api::namespaced(client.clone(), &namespace);
    let uid = schedule.uid().ok_or(Error::Metadata("uid"))?;
    let owned: Vec<Backup> = backups_api
        .list(&ListParams::default().labels(&owned_selector(&name)))
        .await
        .map_err(Error::kube("listing Backups"))?
        .items
        .into_iter()
        .filter(|b| b.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let backups: Vec<OwnedBackup> = owned.iter().map(OwnedBackup::from_backup).collect();
    let previous = schedule.status.clone().unwrap_or_default();

    // Plan.
    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let decision = plan(
        &cron,
        Input {
            schedule_name: &name,
            spec: &schedule.spec,
            generation: schedule.metadata.generation,
            created,
            previous: &previous,
            cluster_exists,
            backups: &backups,
            now,
        },
    );

    // Apply.
    if let Some(run) = &decision.create {
        let known = backups.iter().any(|b| b.name == run.name);
        if !known {
            create_backup(&schedule, &backups_api, run).await?;
            publish(
                &schedule,
                &state,
                EventType::Normal,
                "BackupCreated",
                format!(
                    "created Backup {} for the run due {}{}",
                    run.name,
                    run.scheduled,
                    if run.immediate {
                        " (immediate first backup)"
                    } else {
                        ""
                    }
                ),
            )
            .await;
        }
    }
    for pruned in &decision.prune {
        let Some(backup) = owned.iter().find(|b| b.name_any() == *pruned) else {
            continue;
        };
        let params = DeleteParams {
            preconditions: backup.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match backups_api.delete(pruned, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(source) => return Err(Error::kube("deleting a pruned Backup")(source)),
        }
    }
    if !decision.prune.is_empty() {
        publish(
            &schedule,
            &state,
            EventType::Normal,
            "BackupsPruned",
            format!(
                "deleted {} beyond the history limits: {}",
                plural(decision.prune.len()),
                decision.prune.join(", ")
            ),
        )
        .await;
    }
    publish_transitions(&schedule, &state, &previous, &decision).await;
    apply::ensure_status(
        &schedules,
        state.ctx.field_manager(),
        &name,
        &StatusApply::from(&decision.status),
        schedule.status.as_ref().map(StatusApply::from).as_ref(),
    )
    .await?;

    let mut action = state.ctx.requeue(schedule.as_ref());
    if let Some(next) = decision.next {
        let until = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
        if until < state.ctx.config.requeue_interval {
            action = Action::requeue(until.max(Duration::from_secs(1)));
        }
    }
    Ok(action)
}

/// The status as applied: `active` always written, also when empty, so the apply empties the
/// list when the last Backup finishes (the API type leaves an empty list out).
#[derive(Debug, PartialEq, serde::Serialize)]
struct StatusApply {
    #[serde(flatten)]
    status: BackupScheduleStatus,
    active: Vec<String>,
}

impl From<&BackupScheduleStatus> for StatusApply {
    fn from(status: &BackupScheduleStatus) -> Self {
        let mut status = status.clone();
        let active = std::mem::take(&mut status.active);
        Self { status, active }
    }
}

fn plural(count: usize) -> String {
    if count == 1 {
        "1 Backup".to_owned()
    } else {
        format!("{count} Backups")
    }
}

/// The Backup of `run`, owned by the schedule (controller), labelled with it and its Cluster.
pub fn desired_backup(schedule: &BackupSchedule, run: &Run) -> Backup {
    let mut backup_labels: BTreeMap<String, String> =
        labels::cluster_child_labels(&schedule.spec.cluster.name, "backup");
    backup_labels.insert(labels::SCHEDULE.to_owned(), schedule.name_any());
    Backup {
        metadata: ObjectMeta {
            name: Some(run.name.clone()),
            namespace: schedule.namespace(),
            labels: Some(backup_labels),
            owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: schedule.spec.backup_spec(),
        status: None,
    }
}

async fn create_backup(
    schedule: &BackupSchedule,
    api: &Api<Backup>,
    run: &Run,
) -> Result<(), Error> {
    let backup = desired_backup(schedule, run);
    let params = PostParams {
        field_manager: Some(
            tusk_runtime::ControllerKind::Schedule
                .field_manager()
                .to_owned(),
        ),
        ..PostParams::default()
    };
    match api.create(&params, &backup).await {
        Ok(_) => Ok(()),
        // Created by an earlier pass whose status write was lost: the name is deterministic.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::kube("creating a Backup")(source)),
    }
}

/// Events for what a person wants in `kubectl describe`: a skipped or missed run, once.
async fn publish_transitions(
    schedule: &BackupSchedule,
    state: &State,
    previous: &BackupScheduleStatus,
    decision: &Decision,
) {
    let message_before = previous
        .conditions
        .iter()
        .find(|c| c.type_ == tusk_api::condition::types::READY)
        .map(|c| c.message.clone());
    let message_now = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == tusk_api::condition::types::READY)
        .map(|c| c.message.clone());
    if message_before == message_now {
        return;
    }
    let note = message_now.unwrap_or_default();
    if decision.skipped.is_some() {
        publish(
            schedule,
            state,
            EventType::Normal,
            "SkippedWhileRunning",
            note,
        )
        .await;
    } else if decision.missed.is_some() {
        publish(schedule, state, EventType::Warning, "MissedSchedule", note).await;
    }
}

async fn publish(
    schedule: &BackupSchedule,
    state: &State,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tusk_runtime::events::publish(&state.ctx.recorder, schedule, type_, reason, &note).await;
}

/// The controller's error policy: the runtime's, which records the metric and backs off.
pub fn error_policy(schedule: Arc<BackupSchedule>, error: &Error, state: Arc<State>) -> Action {
    tusk_runtime::error_policy(schedule.as_ref(), error, &state.ctx)
}

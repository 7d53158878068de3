//! The PGUpgrade's status from a [`Decision`](crate::machine::Decision): phase, step,
//! conditions `Progressing` and `Succeeded`, times, the Backup and the Jobs.
//!
//! Nothing here depends on the clock except through `now`, and conditions keep their
//! transition time when only their message changes, so a pass that decides the same thing
//! writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::PGUpgrade;
use tusk_api::condition::{DesiredCondition, set_condition, types};
use tusk_api::upgrade::{PGUpgradeStatus, UpgradeJobs, UpgradePhase, UpgradeStep, reasons};

use crate::jobs::{self, JobKind};
use crate::machine::{Action, Decision, Progress};

/// The status to write after `decision` for `upgrade`. `cluster_image` is the Cluster's
/// `spec.image` as observed, recorded when the upgrade takes the Cluster down.
pub fn desired_status(
    upgrade: &PGUpgrade,
    decision: &Decision,
    cluster_image: Option<&String>,
    now: Time,
) -> PGUpgradeStatus {
    let previous = upgrade.status.clone().unwrap_or_default();
    if decision.progress == Progress::Finished {
        return previous;
    }
    let generation = upgrade.metadata.generation;
    let name = upgrade.metadata.name.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.step = Some(decision.step);
    status.observed_generation = generation;
    status.backup_name.clone_from(&decision.backup_name);
    status.instance.clone_from(&decision.instance);

    // Started: past Validating. A request refused while validating never starts.
    let under_way = !matches!(decision.step, UpgradeStep::Validating | UpgradeStep::Done);
    if under_way && status.started_at.is_none() {
        status.started_at = Some(now.clone());
    }
    if decision.step == UpgradeStep::Done && status.completed_at.is_none() {
        status.completed_at = Some(now.clone());
    }
    // The image to restore is the one the Cluster had when the upgrade took it down.
    if decision.action == Action::LockCluster && status.previous_image.is_none() {
        status.previous_image = cluster_image.cloned();
    }

    let mut jobs = previous.jobs.clone().unwrap_or_default();
    let record = |slot: &mut Option<String>, kind| {
        if slot.is_none() {
            *slot = Some(jobs::job_name(&name, kind));
        }
    };
    match &decision.action {
        Action::CreateJob(JobKind::Check) => record(&mut jobs.check, JobKind::Check),
        Action::CreateJob(JobKind::Upgrade) => record(&mut jobs.upgrade, JobKind::Upgrade),
        Action::CreateJob(JobKind::PostUpgrade) | Action::StartPostUpgrade { job: true, .. } => {
            record(&mut jobs.post_upgrade, JobKind::PostUpgrade);
        }
        _ => {}
    }
    status.jobs = (jobs != UpgradeJobs::default()).then_some(jobs);

    status.phase = Some(match (&decision.progress, decision.step) {
        (Progress::Succeeded(_), _) => UpgradePhase::Completed,
        (Progress::Failed { .. }, UpgradeStep::Done) => UpgradePhase::Failed,
        (Progress::Blocked { .. }, _) | (_, UpgradeStep::Validating) => UpgradePhase::Pending,
        _ => UpgradePhase::Running,
    });

    let mut conditions = previous.conditions.clone();
    let mut set = |condition| {
        set_condition(&mut conditions, condition, generation, now.clone());
    };
    match &decision.progress {
        Progress::Working(message) => {
            set(DesiredCondition::new(
                types::PROGRESSING,
                true,
                static_step(decision.step),
                message.clone(),
            ));
        }
        Progress::Blocked { reason, message } => {
            set(DesiredCondition::new(
                types::PROGRESSING,
                false,
                reason,
                message.clone(),
            ));
        }
        Progress::Failed { reason, message } => {
            let reason = static_reason(reason);
            if decision.step == UpgradeStep::RollingBack {
                set(DesiredCondition::new(
                    types::PROGRESSING,
                    true,
                    reasons::ROLLING_BACK,
                    format!(
                        "waiting for the Cluster to be Ready on PostgreSQL {} again",
                        upgrade.spec.from_postgres_version
                    ),
                ));
            } else {
                set(DesiredCondition::new(
                    types::PROGRESSING,
                    false,
                    reason,
                    "the upgrade has finished".to_owned(),
                ));
            }
            set(DesiredCondition::new(
                types::SUCCEEDED,
                false,
                reason,
                message.clone(),
            ));
        }
        Progress::Succeeded(message) => {
            set(DesiredCondition::new(
                types::PROGRESSING,
                false,
                reasons::SUCCEEDED,
                "the upgrade has finished".to_owned(),
            ));
            set(DesiredCondition::new(
                types::SUCCEEDED,
                true,
                reasons::SUCCEEDED,
                message.clone(),
            ));
        }
        Progress::Finished => {}
    }
    status.conditions = conditions;
    status
}

/// Condition reasons are `&'static str`; the step names are.
fn static_step(step: UpgradeStep) -> &'static str {
    step.as_str()
}

/// The failure reasons are a fixed set; one read back from a condition maps onto it.
pub fn static_reason(reason: &str) -> &'static str {
    [
        reasons::CLUSTER_NOT_FOUND,
        reasons::VERSION_MISMATCH,
        reasons::UNSUPPORTED_VERSION,
        reasons::ANOTHER_UPGRADE_ACTIVE,
        reasons::NO_BACKUP_REPOSITORY,
        reasons::BACKUP_FAILED,
        reasons::CHECK_FAILED,
        reasons::UPGRADE_FAILED,
        reasons::ROLLED_BACK,
    ]
    .into_iter()
    .find(|known| *known == reason)
    .unwrap_or(reasons::UPGRADE_FAILED)
}

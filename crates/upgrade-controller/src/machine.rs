//! The upgrade as a pure function: the persisted step plus what was observed → the step to
//! persist, the one action to take now, and what to tell the user.
//!
//! ```text
//!  Validating ─► WaitingForBackup ─► ShuttingDown ─► Checking ─► Upgrading ─► Starting
//!      │   (no repository +            lock Cluster     check Job    upgrade Job   delete replica volumes,
//!      │    allowWithoutBackup) ──────►                               DCS rewrite   version+image, unlock
//!      ▼                                                  │ fail        │ fail
//!  Done(Failed) ◄── BackupFailed                          ▼             ▼
//!                                                     RollingBack: unlock, wait Ready on old ─► Done(Failed)
//!  Starting ─► RecreatingReplicas ─► PostUpgrade (backup + post Job) ─► Done(Completed)
//! ```
//!
//! [`decide`] never remembers what it did: every action is chosen because the world does not
//! show it done yet (the lock is absent, the Job does not exist, ...), so a restart of the
//! operator at any point — even between an action and the status write that records it —
//! takes the same action or moves on.

use std::collections::BTreeSet;

use jiff::Timestamp;
use tusk_api::condition::{ConditionStatus, find_condition, types};
use tusk_api::upgrade::{TransferMethod, UpgradePhase, UpgradeStep, reasons};
use tusk_api::{OLDEST_UPGRADABLE_POSTGRES_VERSION, PGUpgrade, SUPPORTED_POSTGRES_VERSIONS};

use crate::jobs::{self, JobKind};

/// What the controller observed about the Cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFacts {
    /// `spec.postgresVersion`.
    pub spec_version: i32,
    /// `spec.image`.
    pub spec_image: Option<String>,
    /// `status.postgresVersion`: the major the instances run.
    pub running_version: Option<i32>,
    /// The value of the upgrade lock annotation, if present.
    pub lock: Option<String>,
    /// Whether a backup repository is configured.
    pub has_repository: bool,
    /// `Ready` is True for the current generation.
    pub ready: bool,
    /// `status.currentPrimary`.
    pub primary: Option<String>,
    /// `spec.instances` and `status.readyInstances`.
    pub instances: i32,
    pub ready_instances: i32,
}

/// Where a Backup is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupState {
    Waiting,
    Succeeded,
    Failed(String),
}

/// A Backup of the Cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupFacts {
    pub name: String,
    pub created: Option<Timestamp>,
    pub state: BackupState,
}

/// Where a Job is; `message` is its pod's termination message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded(String),
    Failed(String),
}

/// Patroni's Kubernetes DCS objects of the Cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DcsFacts {
    /// The `initialize` annotation of `<cluster>-rw-config` (the system identifier Patroni
    /// accepts), `None` when absent or the object is missing.
    pub initialize: Option<String>,
    /// Whether the leader Endpoints still carries the old system's leader or positions.
    pub leader_state_left: bool,
}

/// Everything [`decide`] looks at besides the PGUpgrade itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    pub cluster: Option<ClusterFacts>,
    /// Another active PGUpgrade of the same Cluster that goes first (it started, or was
    /// created earlier).
    pub other_upgrade: Option<String>,
    /// Backups of the Cluster.
    pub backups: Vec<BackupFacts>,
    /// Instance pods of the Cluster that exist (running or terminating).
    pub instance_pods: usize,
    pub check_job: Option<JobState>,
    pub upgrade_job: Option<JobState>,
    pub post_job: Option<JobState>,
    pub restore_job: Option<JobState>,
    pub dcs: DcsFacts,
    /// Volume claims of instances other than the upgraded one.
    pub replica_claims: Vec<ClaimFacts>,
}

/// One replica volume claim as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimFacts {
    pub name: String,
    /// Deleted, and held by its `kubernetes.io/pvc-protection` finalizer.
    pub terminating: bool,
    /// Pods that have not finished and mount it: while there are any, pvc-protection keeps a
    /// deleted claim Terminating.
    pub used_by: Vec<String>,
}

/// The one thing to do in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: wait for the world to move.
    Wait,
    /// Create the Backup of this name, owned by the PGUpgrade.
    CreateBackup(String),
    /// Set the upgrade lock annotation on the Cluster.
    LockCluster,
    /// Create the Job.
    CreateJob(JobKind),
    /// Point Patroni's DCS at the new system: `initialize` = this identifier, the old leader
    /// state removed.
    RewriteDcs(String),
    /// Delete these volume claims (the replicas' data, re-created from the new primary).
    DeleteClaims(Vec<String>),
    /// Delete these pods: each holds a deleted (Terminating) replica claim, which goes only
    /// once no pod uses it; the StatefulSet then re-creates pod and claim.
    DeletePods(Vec<String>),
    /// Set the Cluster's `spec.postgresVersion` (and `spec.image`) to the new major.
    MoveClusterToNewMajor,
    /// Remove the upgrade lock annotation.
    UnlockCluster,
    /// The post-upgrade Backup and Job, whichever does not exist yet.
    StartPostUpgrade { backup: Option<String>, job: bool },
}

/// What the user is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Under way: `Progressing` True with the step as reason.
    Working(String),
    /// Not started and waiting for the user or another upgrade: `Progressing` False.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// Failed (when rolling back, the step is RollingBack until the Cluster is back).
    Failed { reason: String, message: String },
    /// The Cluster runs the new major.
    Succeeded(String),
    /// Finished earlier: leave the conditions as they are.
    Finished,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub step: UpgradeStep,
    pub action: Action,
    pub progress: Progress,
    /// The Backup the upgrade relies on, once chosen.
    pub backup_name: Option<String>,
    /// The instance whose volume is upgraded, once chosen.
    pub instance: Option<String>,
}

/// A deleted replica claim that a pod still uses stays Terminating for as long as the pod
/// runs (pvc-protection), and the replica never gets its fresh volume: delete the pod, so the
/// claim goes and the StatefulSet re-creates both. (Reached only when a claim was deleted
/// under a running pod, e.g. by an earlier operator version or by hand.)
fn release_held_claims(decision: &Decision, world: &World) -> Option<Decision> {
    let held: Vec<&ClaimFacts> = world
        .replica_claims
        .iter()
        .filter(|claim| claim.terminating && !claim.used_by.is_empty())
        .collect();
    if held.is_empty() {
        return None;
    }
    let pods: BTreeSet<String> = held
        .iter()
        .flat_map(|claim| claim.used_by.iter().cloned())
        .collect();
    let claims: Vec<&str> = held.iter().map(|claim| claim.name.as_str()).collect();
    Some(Decision {
        action: Action::DeletePods(pods.iter().cloned().collect()),
        progress: Progress::Working(format!(
            "the deleted volume(s) {} are held by pod(s) {} that still use them; deleting the pod(s) so the volumes go and are re-created",
            claims.join(", "),
            pods.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
        ..decision.clone()
    })
}

/// Whether the step holds the Cluster's upgrade lock.
fn is_locked_step(step: UpgradeStep) -> bool {
    step.holds_cluster_down()
}

/// The next step and action for `upgrade` in `world`.
pub fn decide(upgrade: &PGUpgrade, world: &World) -> Decision {
    let status = upgrade.status.clone().unwrap_or_default();
    let me = upgrade.metadata.name.clone().unwrap_or_default();
    let spec = &upgrade.spec;
    let (from, to) = (spec.from_postgres_version, spec.to_postgres_version);
    let cluster_name = &spec.cluster.name;
    let mut decision = Decision {
        step: status.step.unwrap_or(UpgradeStep::Validating),
        action: Action::Wait,
        progress: Progress::Finished,
        backup_name: status.backup_name.clone(),
        instance: status.instance.clone(),
    };
    if status.phase.is_some_and(UpgradePhase::is_finished) {
        decision.step = UpgradeStep::Done;
        return decision;
    }
    let working = |d: Decision, message: String| Decision {
        progress: Progress::Working(message),
        ..d
    };
    let act = |d: Decision, action: Action, message: String| Decision {
        action,
        progress: Progress::Working(message),
        ..d
    };
    let fail = |d: Decision, step: UpgradeStep, reason: &str, message: String| Decision {
        step,
        action: Action::Wait,
        progress: Progress::Failed {
            reason: reason.to_owned(),
            message,
        },
        ..d
    };

    loop {
        let cluster = world.cluster.as_ref();
        // After Validating, a vanished Cluster ends the upgrade: nothing is left to act on.
        if decision.step != UpgradeStep::Validating
            && decision.step != UpgradeStep::RollingBack
            && cluster.is_none()
        {
            return fail(
                decision,
                UpgradeStep::Done,
                reasons::CLUSTER_NOT_FOUND,
                format!("Cluster {cluster_name:?} was deleted during the upgrade"),
            );
        }
        // A lock someone removed while the Cluster must stay down is set again before
        // anything else touches the volume.
        if is_locked_step(decision.step)
            && decision.step != UpgradeStep::ShuttingDown
            && cluster.is_some_and(|c| c.lock.as_deref() != Some(me.as_str()))
        {
            return act(
                decision,
                Action::LockCluster,
                format!(
                    "the upgrade lock on Cluster {cluster_name:?} was removed; setting it again and waiting for the instances to stop"
                ),
            );
        }
        match decision.step {
            UpgradeStep::Validating => {
                if !SUPPORTED_POSTGRES_VERSIONS.contains(&to)
                    || from < OLDEST_UPGRADABLE_POSTGRES_VERSION
                    || from >= to
                {
                    return fail(
                        decision,
                        UpgradeStep::Done,
                        reasons::UNSUPPORTED_VERSION,
                        format!(
                            "cannot upgrade from PostgreSQL {from} to {to}: tusk upgrades from {OLDEST_UPGRADABLE_POSTGRES_VERSION} or later to a newer major of {}–{}; create a PGUpgrade with supported versions",
                            SUPPORTED_POSTGRES_VERSIONS.start(),
                            SUPPORTED_POSTGRES_VERSIONS.end()
                        ),
                    );
                }
                let Some(cluster) = cluster else {
                    return Decision {
                        progress: Progress::Blocked {
                            reason: reasons::CLUSTER_NOT_FOUND,
                            message: format!(
                                "Cluster {cluster_name:?} does not exist in this namespace; the upgrade starts when it does (or delete this PGUpgrade)"
                            ),
                        },
                        ..decision
                    };
                };
                let other = world.other_upgrade.clone().or_else(|| {
                    cluster
                        .lock
                        .clone()
                        .filter(|holder| holder.as_str() != me.as_str())
                });
                if let Some(other) = other {
                    return Decision {
                        progress: Progress::Blocked {
                            reason: reasons::ANOTHER_UPGRADE_ACTIVE,
                            message: format!(
                                "PGUpgrade {other:?} is active for Cluster {cluster_name:?}; this one waits until it has finished (only one upgrade per Cluster at a time)"
                            ),
                        },
                        ..decision
                    };
                }
                let running = cluster.running_version.unwrap_or(cluster.spec_version);
                if cluster.spec_version != from || running != from {
                    return fail(
                        decision,
                        UpgradeStep::Done,
                        reasons::VERSION_MISMATCH,
                        format!(
                            "Cluster {cluster_name:?} runs PostgreSQL {running} (spec.postgresVersion {}), not {from} (fromPostgresVersion); nothing was changed — create a PGUpgrade from {running}",
                            cluster.spec_version
                        ),
                    );
                }
                if !cluster.has_repository && !spec.allow_without_backup {
                    return Decision {
                        progress: Progress::Blocked {
                            reason: reasons::NO_BACKUP_REPOSITORY,
                            message: format!(
                                "Cluster {cluster_name:?} has no backup repository, and a backup taken just before is the way back from an upgrade: add one to spec.backup.repositories, or (for data you can rebuild) create the PGUpgrade with allowWithoutBackup: true"
                            ),
                        },
                        ..decision
                    };
                }
                if !cluster.ready || cluster.primary.is_none() {
                    return working(
                        decision,
                        format!("waiting for Cluster {cluster_name:?} to be Ready with a primary"),
                    );
                }
                decision.step = if cluster.has_repository {
                    UpgradeStep::WaitingForBackup
                } else {
                    UpgradeStep::ShuttingDown
                };
            }
            UpgradeStep::WaitingForBackup => {
                let created = upgrade.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let chosen = decision.backup_name.clone().or_else(|| {
                    world
                        .backups
                        .iter()
                        .filter(|b| b.state == BackupState::Succeeded)
                        .filter(|b| match (b.created, created) {
                            (Some(backup), Some(upgrade)) => backup >= upgrade,
                            _ => false,
                        })
                        .max_by_key(|b| b.created)
                        .map(|b| b.name.clone())
                });
                let Some(name) = chosen else {
                    let name = jobs::backup_before_name(&me);
                    decision.backup_name = Some(name.clone());
                    return act(
                        decision,
                        Action::CreateBackup(name.clone()),
                        format!(
                            "waiting for Backup {name:?} (a full backup before the upgrade) to complete"
                        ),
                    );
                };
                decision.backup_name = Some(name.clone());
                match world.backups.iter().find(|b| b.name == name) {
                    None => {
                        return act(
                            decision,
                            Action::CreateBackup(name.clone()),
                            format!(
                                "waiting for Backup {name:?} (a full backup before the upgrade) to complete"
                            ),
                        );
                    }
                    Some(backup) => match &backup.state {
                        BackupState::Waiting => {
                            return working(
                                decision,
                                format!(
                                    "waiting for Backup {name:?} (a full backup before the upgrade) to complete"
                                ),
                            );
                        }
                        BackupState::Failed(error) => {
                            return fail(
                                decision,
                                UpgradeStep::Done,
                                reasons::BACKUP_FAILED,
                                format!(
                                    "Backup {name:?} failed, so the upgrade did not start and nothing was changed: {}",
                                    jobs::trimmed_output(error)
                                ),
                            );
                        }
                        BackupState::Succeeded => decision.step = UpgradeStep::ShuttingDown,
                    },
                }
            }
            UpgradeStep::ShuttingDown => {
                let Some(cluster) = cluster else {
                    continue;
                };
                if decision.instance.is_none() {
                    decision.instance = cluster.primary.clone();
                }
                let Some(instance) = decision.instance.clone() else {
                    return working(
                        decision,
                        format!("waiting for Cluster {cluster_name:?} to report its primary"),
                    );
                };
                if cluster.lock.as_deref() != Some(me.as_str()) {
                    return act(
                        decision,
                        Action::LockCluster,
                        format!(
                            "waiting for the instances of Cluster {cluster_name:?} to stop (replicas first, the primary {instance} last)"
                        ),
                    );
                }
                if world.instance_pods > 0 {
                    return working(
                        decision,
                        format!(
                            "waiting for the instances of Cluster {cluster_name:?} to stop (replicas first, the primary {instance} last)"
                        ),
                    );
                }
                decision.step = UpgradeStep::Checking;
            }
            UpgradeStep::Checking | UpgradeStep::Upgrading => {
                let kind = if decision.step == UpgradeStep::Checking {
                    JobKind::Check
                } else {
                    JobKind::Upgrade
                };
                let job = if kind == JobKind::Check {
                    &world.check_job
                } else {
                    &world.upgrade_job
                };
                let name = jobs::job_name(&me, kind);
                match job {
                    None if world.instance_pods > 0 => {
                        return working(
                            decision,
                            format!(
                                "waiting for {} instance pod(s) to stop before {} runs",
                                world.instance_pods,
                                kind.describe()
                            ),
                        );
                    }
                    None => {
                        return act(
                            decision,
                            Action::CreateJob(kind),
                            format!("waiting for Job {name:?} ({})", kind.describe()),
                        );
                    }
                    Some(JobState::Running) => {
                        return working(
                            decision,
                            format!("waiting for Job {name:?} ({})", kind.describe()),
                        );
                    }
                    Some(JobState::Failed(output)) => {
                        let (reason, what) = if kind == JobKind::Check {
                            (reasons::CHECK_FAILED, "pg_upgrade --check failed")
                        } else {
                            (reasons::UPGRADE_FAILED, "pg_upgrade failed")
                        };
                        // The lock is held here (checked above). A link-mode upgrade may
                        // have been killed before its clean-up: restore first; otherwise
                        // release the lock right away.
                        let restore = kind == JobKind::Upgrade
                            && spec.transfer_method == TransferMethod::Link;
                        return Decision {
                            action: if restore {
                                Action::CreateJob(JobKind::Restore)
                            } else {
                                Action::UnlockCluster
                            },
                            ..fail(
                                decision,
                                UpgradeStep::RollingBack,
                                reason,
                                format!(
                                    "{what} (Job {name:?}); Cluster {cluster_name:?} is started again on PostgreSQL {from} as it was. Output: {}",
                                    jobs::trimmed_output(output)
                                ),
                            )
                        };
                    }
                    Some(JobState::Succeeded(_)) if kind == JobKind::Check => {
                        decision.step = UpgradeStep::Upgrading;
                    }
                    Some(JobState::Succeeded(report)) => {
                        let Some(system) = jobs::reported_system_identifier(report) else {
                            return working(
                                decision,
                                format!(
                                    "Job {name:?} succeeded but its pod reported no system identifier (was the pod deleted?); see docs/operations/major-upgrades.md"
                                ),
                            );
                        };
                        if world.dcs.initialize.as_deref() != Some(system.as_str())
                            || world.dcs.leader_state_left
                        {
                            return act(
                                decision,
                                Action::RewriteDcs(system.clone()),
                                format!("pointing Patroni's DCS at the new system {system}"),
                            );
                        }
                        decision.step = UpgradeStep::Starting;
                    }
                }
            }
            UpgradeStep::Starting => {
                let Some(cluster) = cluster else {
                    continue;
                };
                if let Some(decision) = release_held_claims(&decision, world) {
                    return decision;
                }
                // The replicas' claims are deleted only while the lock holds every instance
                // down, so no pod uses them; after the unlock the claims the StatefulSets
                // create are the new, empty ones and are never touched.
                if cluster.lock.is_some() {
                    let live: Vec<String> = world
                        .replica_claims
                        .iter()
                        .filter(|claim| !claim.terminating)
                        .map(|claim| claim.name.clone())
                        .collect();
                    if !live.is_empty() {
                        return act(
                            decision,
                            Action::DeleteClaims(live),
                            "deleting the replicas' volumes: they are re-created from the new primary"
                                .to_owned(),
                        );
                    }
                    if !world.replica_claims.is_empty() {
                        return working(
                            decision,
                            "waiting for the replicas' volumes to be deleted".to_owned(),
                        );
                    }
                }
                if cluster.spec_version != to || cluster.spec_image != spec.image {
                    return act(
                        decision,
                        Action::MoveClusterToNewMajor,
                        format!("setting Cluster {cluster_name:?} to PostgreSQL {to}"),
                    );
                }
                if cluster.lock.is_some() {
                    // The Cluster controller refuses a version change it has not seen under
                    // the lock: unlock only once its status reports the new major.
                    if cluster.running_version != Some(to) {
                        return working(
                            decision,
                            format!(
                                "waiting for Cluster {cluster_name:?} to take PostgreSQL {to} while stopped"
                            ),
                        );
                    }
                    return act(
                        decision,
                        Action::UnlockCluster,
                        format!("starting the primary on PostgreSQL {to}"),
                    );
                }
                if cluster.running_version != Some(to)
                    || cluster.primary.is_none()
                    || cluster.ready_instances < 1
                {
                    let way_back = decision.backup_name.as_deref().map_or_else(
                        || "none (allowWithoutBackup)".to_owned(),
                        |b| format!("Backup {b:?}"),
                    );
                    return working(
                        decision,
                        format!(
                            "waiting for the primary to start on PostgreSQL {to} (from here on there is no automatic rollback; the way back is {way_back})"
                        ),
                    );
                }
                decision.step = UpgradeStep::RecreatingReplicas;
            }
            UpgradeStep::RecreatingReplicas => {
                let Some(cluster) = cluster else {
                    continue;
                };
                if let Some(decision) = release_held_claims(&decision, world) {
                    return decision;
                }
                if !cluster.ready || cluster.ready_instances < cluster.instances {
                    return working(
                        decision,
                        format!(
                            "waiting for the replicas to be re-created from the new primary: {} of {} instances ready",
                            cluster.ready_instances, cluster.instances
                        ),
                    );
                }
                decision.step = UpgradeStep::PostUpgrade;
            }
            UpgradeStep::PostUpgrade => {
                let Some(cluster) = cluster else {
                    continue;
                };
                let after = jobs::backup_after_name(&me);
                let after_backup = world.backups.iter().find(|b| b.name == after);
                let want_backup = cluster.has_repository && after_backup.is_none();
                let want_job = world.post_job.is_none();
                if want_backup || want_job {
                    return act(
                        decision,
                        Action::StartPostUpgrade {
                            backup: want_backup.then(|| after.clone()),
                            job: want_job,
                        },
                        post_upgrade_message(&me, cluster.has_repository, &after),
                    );
                }
                let backup_waiting = after_backup.is_some_and(|b| b.state == BackupState::Waiting);
                if backup_waiting || world.post_job == Some(JobState::Running) {
                    return working(
                        decision,
                        post_upgrade_message(&me, cluster.has_repository, &after),
                    );
                }
                let mut notes = Vec::new();
                if let Some(JobState::Failed(output)) = &world.post_job {
                    notes.push(format!(
                        "the post-upgrade Job {:?} failed (run vacuumdb --all --analyze-in-stages and ALTER EXTENSION ... UPDATE by hand): {}",
                        jobs::job_name(&me, JobKind::PostUpgrade),
                        jobs::trimmed_output(output)
                    ));
                }
                if let Some(BackupState::Failed(error)) = after_backup.map(|b| &b.state) {
                    notes.push(format!(
                        "the Backup {after:?} after the upgrade failed (take a full backup now): {}",
                        jobs::trimmed_output(error)
                    ));
                }
                let mut message = format!("Cluster {cluster_name:?} runs PostgreSQL {to}");
                for note in notes {
                    message.push_str("; but ");
                    message.push_str(&note);
                }
                return Decision {
                    step: UpgradeStep::Done,
                    action: Action::Wait,
                    progress: Progress::Succeeded(message),
                    ..decision
                };
            }
            UpgradeStep::RollingBack => {
                let failure = find_condition(&status.conditions, types::SUCCEEDED)
                    .filter(|c| c.status == ConditionStatus::False.as_str())
                    .map(|c| (c.reason.clone(), c.message.clone()))
                    .unwrap_or_else(|| {
                        (
                            reasons::UPGRADE_FAILED.to_owned(),
                            "the upgrade failed".to_owned(),
                        )
                    });
                let failed = |d: Decision, step, message| Decision {
                    step,
                    action: Action::Wait,
                    progress: Progress::Failed {
                        reason: failure.0.clone(),
                        message,
                    },
                    ..d
                };
                let Some(cluster) = cluster else {
                    return failed(decision, UpgradeStep::Done, failure.1.clone());
                };
                let needs_restore = world.upgrade_job.is_some()
                    && spec.transfer_method == TransferMethod::Link
                    && cluster.lock.is_some();
                if needs_restore {
                    let name = jobs::job_name(&me, JobKind::Restore);
                    match &world.restore_job {
                        None if world.instance_pods > 0 => {
                            return failed(decision, UpgradeStep::RollingBack, failure.1.clone());
                        }
                        None => {
                            return Decision {
                                action: Action::CreateJob(JobKind::Restore),
                                ..failed(decision, UpgradeStep::RollingBack, failure.1.clone())
                            };
                        }
                        Some(JobState::Running) => {
                            return failed(decision, UpgradeStep::RollingBack, failure.1.clone());
                        }
                        Some(JobState::Failed(output)) => {
                            // Starting the old major on a data directory that could not be
                            // put back would fail: keep the Cluster stopped for a person.
                            return failed(
                                decision,
                                UpgradeStep::Done,
                                format!(
                                    "{}; restoring the old data directory failed too (Job {name:?}), so Cluster {cluster_name:?} stays stopped with the upgrade lock set: see docs/operations/major-upgrades.md. Output: {}",
                                    failure.1,
                                    jobs::trimmed_output(output)
                                ),
                            );
                        }
                        Some(JobState::Succeeded(_)) => {}
                    }
                }
                if cluster.lock.is_some() {
                    return Decision {
                        action: Action::UnlockCluster,
                        ..failed(decision, UpgradeStep::RollingBack, failure.1.clone())
                    };
                }
                if !cluster.ready || cluster.running_version.is_some_and(|v| v != from) {
                    return failed(decision, UpgradeStep::RollingBack, failure.1.clone());
                }
                let message = if failure.1.contains("is started again") {
                    failure
                        .1
                        .replacen("is started again", "was started again", 1)
                } else {
                    format!(
                        "{}; Cluster {cluster_name:?} runs PostgreSQL {from} again",
                        failure.1
                    )
                };
                return failed(decision, UpgradeStep::Done, message);
            }
            UpgradeStep::Done => return decision,
        }
    }
}

fn post_upgrade_message(me: &str, backup: bool, after: &str) -> String {
    let job = jobs::job_name(me, JobKind::PostUpgrade);
    if backup {
        format!(
            "waiting for Job {job:?} ({}) and Backup {after:?} (a fresh full backup)",
            JobKind::PostUpgrade.describe()
        )
    } else {
        format!(
            "waiting for Job {job:?} ({})",
            JobKind::PostUpgrade.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tusk_api::upgrade::reasons;

    const CREATED: &str = "2026-11-22T06:00:00Z";

    fn upgrade(extra: &str) -> PGUpgrade {
        let mut upgrade: PGUpgrade = serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {{name: up, namespace: db, uid: up-uid, generation: 1}}
spec:
  cluster: {{name: db}}
  fromPostgresVersion: 16
  toPostgresVersion: 17
{extra}"
        ))
        .unwrap();
        upgrade.metadata.creation_timestamp = Some(Time(CREATED.parse().unwrap()));
        upgrade
    }

    fn at(minutes: i64) -> Option<Timestamp> {
        let base: Timestamp = CREATED.parse().unwrap();
        Some(base + jiff::SignedDuration::from_mins(minutes))
    }

    fn healthy_cluster() -> ClusterFacts {
        ClusterFacts {
            spec_version: 16,
            spec_image: None,
            running_version: Some(16),
            lock: None,
            has_repository: true,
            ready: true,
            primary: Some("db-2".into()),
            instances: 3,
            ready_instances: 3,
        }
    }

    fn world() -> World {
        World {
            cluster: Some(healthy_cluster()),
            instance_pods: 3,
            replica_claims: vec![replica_claim("data-db-1-0"), replica_claim("data-db-3-0")],
            dcs: DcsFacts {
                initialize: Some("1111".into()),
                leader_state_left: true,
            },
            ..World::default()
        }
    }

    /// A replica's claim, in use by its running pod.
    fn replica_claim(name: &str) -> ClaimFacts {
        ClaimFacts {
            name: name.to_owned(),
            terminating: false,
            used_by: vec![pod_of(name)],
        }
    }

    /// `data-db-1-0` → `db-1-0`.
    fn pod_of(claim: &str) -> String {
        claim.trim_start_matches("data-").to_owned()
    }

    /// `upgrade` with the status a reconcile would have written after `decision`.
    fn persisted(upgrade: &PGUpgrade, decision: &Decision) -> PGUpgrade {
        let mut next = upgrade.clone();
        next.status = Some(crate::status::desired_status(
            upgrade,
            decision,
            None,
            Time(CREATED.parse().unwrap()),
        ));
        next
    }

    fn at_step(upgrade: &PGUpgrade, step: UpgradeStep) -> PGUpgrade {
        let mut next = upgrade.clone();
        let status = next.status.get_or_insert_with(Default::default);
        status.step = Some(step);
        status.phase = Some(UpgradePhase::Running);
        status.instance = Some("db-2".into());
        status.backup_name = Some("up-before".into());
        next
    }

    fn failed_with(decision: &Decision) -> (&str, &str) {
        match &decision.progress {
            Progress::Failed { reason, message } => (reason.as_str(), message.as_str()),
            other => panic!("not a failure: {other:?}"),
        }
    }

    fn blocked_with(decision: &Decision) -> &'static str {
        match &decision.progress {
            Progress::Blocked { reason, .. } => reason,
            other => panic!("not blocked: {other:?}"),
        }
    }

    #[test]
    fn unsupported_and_older_targets_are_refused_before_anything_is_touched() {
        for (from, to) in [(16, 19), (13, 16), (17, 16), (17, 17)] {
            let mut up = upgrade("");
            up.spec.from_postgres_version = from;
            up.spec.to_postgres_version = to;
            let decision = decide(&up, &world());
            assert_eq!(decision.step, UpgradeStep::Done, "{from}->{to}");
            assert_eq!(decision.action, Action::Wait);
            assert_eq!(failed_with(&decision).0, reasons::UNSUPPORTED_VERSION);
        }
    }

    #[test]
    fn missing_cluster_waits_with_a_clear_reason() {
        let decision = decide(
            &upgrade(""),
            &World {
                cluster: None,
                ..world()
            },
        );
        assert_eq!(decision.step, UpgradeStep::Validating);
        assert_eq!(blocked_with(&decision), reasons::CLUSTER_NOT_FOUND);
        assert_eq!(decision.action, Action::Wait);
    }

    #[test]
    fn a_second_upgrade_of_the_same_cluster_waits() {
        let w = World {
            other_upgrade: Some("first".into()),
            ..world()
        };
        let decision = decide(&upgrade(""), &w);
        assert_eq!(blocked_with(&decision), reasons::ANOTHER_UPGRADE_ACTIVE);
        assert_eq!(decision.action, Action::Wait);
        // A lock held by another PGUpgrade blocks too, even if that one is not listed.
        let mut w = world();
        w.cluster.as_mut().unwrap().lock = Some("other".into());
        assert_eq!(
            blocked_with(&decide(&upgrade(""), &w)),
            reasons::ANOTHER_UPGRADE_ACTIVE
        );
    }

    #[test]
    fn a_cluster_on_another_major_is_refused() {
        let mut w = world();
        w.cluster.as_mut().unwrap().spec_version = 15;
        w.cluster.as_mut().unwrap().running_version = Some(15);
        let decision = decide(&upgrade(""), &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        let (reason, message) = failed_with(&decision);
        assert_eq!(reason, reasons::VERSION_MISMATCH);
        assert!(message.contains("runs PostgreSQL 15"), "{message}");
    }

    #[test]
    fn no_repository_is_refused_unless_explicitly_allowed() {
        let mut w = world();
        w.cluster.as_mut().unwrap().has_repository = false;
        let decision = decide(&upgrade(""), &w);
        assert_eq!(blocked_with(&decision), reasons::NO_BACKUP_REPOSITORY);
        assert_eq!(decision.action, Action::Wait);

        let decision = decide(&upgrade("  allowWithoutBackup: true\n"), &w);
        assert_eq!(decision.step, UpgradeStep::ShuttingDown);
        assert_eq!(decision.action, Action::LockCluster);
        assert_eq!(decision.backup_name, None);
        assert_eq!(decision.instance.as_deref(), Some("db-2"));
    }

    #[test]
    fn validation_waits_for_a_ready_cluster() {
        let mut w = world();
        w.cluster.as_mut().unwrap().ready = false;
        let decision = decide(&upgrade(""), &w);
        assert_eq!(decision.step, UpgradeStep::Validating);
        assert!(matches!(decision.progress, Progress::Working(_)));
        assert_eq!(decision.action, Action::Wait);
    }

    #[test]
    fn backup_gate_creates_a_backup_when_none_is_newer_than_the_upgrade() {
        let mut w = world();
        w.backups = vec![BackupFacts {
            name: "nightly".into(),
            created: at(-60),
            state: BackupState::Succeeded,
        }];
        let decision = decide(&upgrade(""), &w);
        assert_eq!(decision.step, UpgradeStep::WaitingForBackup);
        assert_eq!(decision.action, Action::CreateBackup("up-before".into()));
        assert_eq!(decision.backup_name.as_deref(), Some("up-before"));
    }

    #[test]
    fn backup_gate_uses_a_completed_backup_taken_after_the_upgrade_was_created() {
        let mut w = world();
        w.backups = vec![BackupFacts {
            name: "fresh".into(),
            created: at(1),
            state: BackupState::Succeeded,
        }];
        let decision = decide(&upgrade(""), &w);
        assert_eq!(decision.step, UpgradeStep::ShuttingDown);
        assert_eq!(decision.backup_name.as_deref(), Some("fresh"));
        assert_eq!(decision.action, Action::LockCluster);
    }

    #[test]
    fn backup_gate_waits_and_a_failed_backup_ends_the_upgrade_untouched() {
        let up = at_step(&upgrade(""), UpgradeStep::WaitingForBackup);
        let mut w = world();
        w.backups = vec![BackupFacts {
            name: "up-before".into(),
            created: at(1),
            state: BackupState::Waiting,
        }];
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::WaitingForBackup);
        assert_eq!(decision.action, Action::Wait);

        w.backups[0].state = BackupState::Failed("repository unreachable".into());
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        assert_eq!(decision.action, Action::Wait);
        let (reason, message) = failed_with(&decision);
        assert_eq!(reason, reasons::BACKUP_FAILED);
        assert!(message.contains("repository unreachable"));

        // A Backup deleted while waiting is created again.
        w.backups.clear();
        assert_eq!(
            decide(&up, &w).action,
            Action::CreateBackup("up-before".into())
        );
    }

    #[test]
    fn shutdown_waits_for_every_pod_then_checks() {
        let up = at_step(&upgrade(""), UpgradeStep::ShuttingDown);
        let mut w = world();
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::ShuttingDown);
        assert_eq!(decision.action, Action::Wait);

        w.instance_pods = 0;
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::Checking);
        assert_eq!(decision.action, Action::CreateJob(JobKind::Check));
    }

    #[test]
    fn failed_check_rolls_back_with_its_output() {
        let up = at_step(&upgrade(""), UpgradeStep::Checking);
        let mut w = world();
        w.instance_pods = 0;
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        w.check_job = Some(JobState::Running);
        assert_eq!(decide(&up, &w).action, Action::Wait);

        w.check_job = Some(JobState::Failed(
            "pg_upgrade --check failed:\nloadable_libraries.txt:\ncould not load library \"$libdir/foo\"".into(),
        ));
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::RollingBack);
        assert_eq!(decision.action, Action::UnlockCluster);
        let (reason, message) = failed_with(&decision);
        assert_eq!(reason, reasons::CHECK_FAILED);
        assert!(message.contains("$libdir/foo"), "{message}");

        // After a restart in RollingBack the unlock is repeated until it shows, then the
        // rollback waits for the Cluster on the old major.
        let rolling = persisted(&up, &decision);
        let decision = decide(&rolling, &w);
        assert_eq!(decision.step, UpgradeStep::RollingBack);
        assert_eq!(decision.action, Action::UnlockCluster);
        w.cluster.as_mut().unwrap().lock = None;
        w.cluster.as_mut().unwrap().ready = false;
        let decision = decide(&rolling, &w);
        assert_eq!(
            (decision.step, &decision.action),
            (UpgradeStep::RollingBack, &Action::Wait)
        );
        w.cluster.as_mut().unwrap().ready = true;
        let decision = decide(&rolling, &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        let (reason, message) = failed_with(&decision);
        assert_eq!(reason, reasons::CHECK_FAILED);
        assert!(
            message.contains("was started again on PostgreSQL 16"),
            "{message}"
        );
        let done = persisted(&rolling, &decision);
        assert_eq!(
            done.status.as_ref().unwrap().phase,
            Some(UpgradePhase::Failed)
        );
        assert_eq!(decide(&done, &w).progress, Progress::Finished);
    }

    #[test]
    fn failed_upgrade_rolls_back() {
        let up = at_step(&upgrade(""), UpgradeStep::Upgrading);
        let mut w = world();
        w.instance_pods = 0;
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        w.check_job = Some(JobState::Succeeded("pg_upgrade --check passed".into()));
        w.upgrade_job = Some(JobState::Failed(
            "pg_upgrade failed; the old data directory is unchanged".into(),
        ));
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::RollingBack);
        assert_eq!(failed_with(&decision).0, reasons::UPGRADE_FAILED);
        // Link mode: the old data directory is put back by a Job before anything starts.
        assert_eq!(decision.action, Action::CreateJob(JobKind::Restore));
        let rolling = persisted(&up, &decision);
        assert_eq!(
            decide(&rolling, &w).action,
            Action::CreateJob(JobKind::Restore)
        );
        w.restore_job = Some(JobState::Running);
        assert_eq!(decide(&rolling, &w).action, Action::Wait);
        w.restore_job = Some(JobState::Succeeded("restored".into()));
        assert_eq!(decide(&rolling, &w).action, Action::UnlockCluster);
        w.cluster.as_mut().unwrap().lock = None;
        let decision = decide(&rolling, &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        assert_eq!(failed_with(&decision).0, reasons::UPGRADE_FAILED);
    }

    #[test]
    fn failed_copy_upgrade_starts_the_old_major_at_once() {
        let up = at_step(&upgrade("  transferMethod: Copy\n"), UpgradeStep::Upgrading);
        let mut w = world();
        w.instance_pods = 0;
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        w.check_job = Some(JobState::Succeeded(String::new()));
        w.upgrade_job = Some(JobState::Failed("out of space".into()));
        let decision = decide(&up, &w);
        assert_eq!(decision.action, Action::UnlockCluster);
        let rolling = persisted(&up, &decision);
        assert_eq!(decide(&rolling, &w).action, Action::UnlockCluster);
    }

    #[test]
    fn a_failed_restore_keeps_the_cluster_stopped_for_a_person() {
        let up = at_step(&upgrade(""), UpgradeStep::Upgrading);
        let mut w = world();
        w.instance_pods = 0;
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        w.check_job = Some(JobState::Succeeded(String::new()));
        w.upgrade_job = Some(JobState::Failed("Killed".into()));
        let rolling = persisted(&up, &decide(&up, &w));
        w.restore_job = Some(JobState::Failed("mv: cannot move".into()));
        let decision = decide(&rolling, &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        assert_eq!(decision.action, Action::Wait, "the lock stays");
        let (_, message) = failed_with(&decision);
        assert!(message.contains("stays stopped") && message.contains("mv: cannot move"));
    }

    #[test]
    fn a_removed_lock_is_set_again_before_any_job_runs() {
        let up = at_step(&upgrade(""), UpgradeStep::Checking);
        let mut w = world();
        w.instance_pods = 1;
        let decision = decide(&up, &w);
        assert_eq!(decision.action, Action::LockCluster);
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        let decision = decide(&up, &w);
        assert_eq!(decision.action, Action::Wait, "pods must stop first");
    }

    #[test]
    fn a_cluster_deleted_mid_upgrade_ends_it() {
        let up = at_step(&upgrade(""), UpgradeStep::Upgrading);
        let decision = decide(
            &up,
            &World {
                cluster: None,
                ..world()
            },
        );
        assert_eq!(decision.step, UpgradeStep::Done);
        assert_eq!(failed_with(&decision).0, reasons::CLUSTER_NOT_FOUND);
    }

    #[test]
    fn a_lost_upgrade_report_waits_instead_of_guessing() {
        let up = at_step(&upgrade(""), UpgradeStep::Upgrading);
        let mut w = world();
        w.instance_pods = 0;
        w.cluster.as_mut().unwrap().lock = Some("up".into());
        w.check_job = Some(JobState::Succeeded(String::new()));
        w.upgrade_job = Some(JobState::Succeeded(String::new()));
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::Upgrading);
        assert_eq!(decision.action, Action::Wait);
    }

    #[test]
    fn post_upgrade_failures_are_reported_but_the_upgrade_succeeded() {
        let up = at_step(&upgrade(""), UpgradeStep::PostUpgrade);
        let mut w = world();
        w.cluster.as_mut().unwrap().spec_version = 17;
        w.cluster.as_mut().unwrap().running_version = Some(17);
        let decision = decide(&up, &w);
        assert_eq!(
            decision.action,
            Action::StartPostUpgrade {
                backup: Some("up-after".into()),
                job: true
            }
        );
        w.post_job = Some(JobState::Failed("vacuumdb: error".into()));
        w.backups = vec![BackupFacts {
            name: "up-after".into(),
            created: at(30),
            state: BackupState::Failed("stanza mismatch".into()),
        }];
        let decision = decide(&up, &w);
        assert_eq!(decision.step, UpgradeStep::Done);
        let Progress::Succeeded(message) = &decision.progress else {
            panic!("{decision:?}")
        };
        assert!(message.contains("vacuumdb: error") && message.contains("stanza mismatch"));
    }

    /// Applies `action` to the simulated world the way the API (and the Cluster controller,
    /// the Backup controller and Kubernetes) eventually would.
    fn perform(w: &mut World, action: &Action) {
        let cluster = w.cluster.as_mut().unwrap();
        match action {
            Action::Wait => {}
            Action::CreateBackup(name) => w.backups.push(BackupFacts {
                name: name.clone(),
                created: at(1),
                state: BackupState::Waiting,
            }),
            Action::LockCluster => cluster.lock = Some("up".into()),
            Action::CreateJob(JobKind::Check) => w.check_job = Some(JobState::Running),
            Action::CreateJob(JobKind::Upgrade) => w.upgrade_job = Some(JobState::Running),
            Action::CreateJob(JobKind::PostUpgrade) => w.post_job = Some(JobState::Running),
            Action::CreateJob(JobKind::Restore) => w.restore_job = Some(JobState::Running),
            Action::RewriteDcs(system) => {
                w.dcs = DcsFacts {
                    initialize: Some(system.clone()),
                    leader_state_left: false,
                }
            }
            Action::DeleteClaims(claims) => {
                for claim in &mut w.replica_claims {
                    if claims.contains(&claim.name) {
                        claim.terminating = true;
                    }
                }
            }
            Action::DeletePods(pods) => {
                for claim in &mut w.replica_claims {
                    claim.used_by.retain(|pod| !pods.contains(pod));
                }
            }
            Action::MoveClusterToNewMajor => cluster.spec_version = 17,
            Action::UnlockCluster => cluster.lock = None,
            Action::StartPostUpgrade { backup, job } => {
                if let Some(name) = backup {
                    w.backups.push(BackupFacts {
                        name: name.clone(),
                        created: at(40),
                        state: BackupState::Waiting,
                    });
                }
                if *job {
                    w.post_job = Some(JobState::Running);
                }
            }
        }
    }

    /// What happens by itself while the controller waits.
    fn time_passes(w: &mut World) {
        for backup in &mut w.backups {
            backup.state = BackupState::Succeeded;
        }
        let cluster = w.cluster.as_mut().unwrap();
        if cluster.lock.is_some() {
            w.instance_pods = w.instance_pods.saturating_sub(1);
            cluster.ready = false;
            cluster.ready_instances = 0;
            cluster.primary = None;
            if w.instance_pods == 0 {
                // The Cluster controller reports the spec's major while the lock holds it down.
                cluster.running_version = Some(cluster.spec_version);
                for claim in &mut w.replica_claims {
                    claim.used_by.clear();
                }
            }
        } else if cluster.spec_version == 17 {
            cluster.running_version = Some(17);
            cluster.primary = Some("db-2".into());
            cluster.ready_instances = (cluster.ready_instances + 1).min(3);
            cluster.ready = cluster.ready_instances == 3;
            // The StatefulSets start the replicas again, each with a new claim of the old name.
            for name in ["data-db-1-0", "data-db-3-0"] {
                if !w.replica_claims.iter().any(|claim| claim.name == name) {
                    w.replica_claims.push(replica_claim(name));
                }
            }
        }
        if w.check_job == Some(JobState::Running) {
            w.check_job = Some(JobState::Succeeded("pg_upgrade --check passed".into()));
        }
        if w.upgrade_job == Some(JobState::Running) {
            w.upgrade_job = Some(JobState::Succeeded("system-identifier=7441".into()));
        }
        if w.post_job == Some(JobState::Running) {
            w.post_job = Some(JobState::Succeeded("done".into()));
        }
        // pvc-protection: a deleted claim goes once no pod uses it.
        w.replica_claims
            .retain(|claim| !claim.terminating || !claim.used_by.is_empty());
    }

    /// A replica's claim deleted while its re-created pod used it (what an earlier version did
    /// after the unlock) stays Terminating under pvc-protection: the machine deletes the pod
    /// instead of waiting for ever, and never deletes the new claims after the unlock.
    #[test]
    fn a_deleted_claim_held_by_a_running_pod_is_released_by_deleting_the_pod() {
        let up = at_step(&upgrade(""), UpgradeStep::Starting);
        let mut w = world();
        let cluster = w.cluster.as_mut().unwrap();
        cluster.spec_version = 17;
        cluster.running_version = Some(17);
        w.replica_claims = vec![
            ClaimFacts {
                terminating: true,
                ..replica_claim("data-db-1-0")
            },
            replica_claim("data-db-3-0"),
        ];
        let decision = decide(&up, &w);
        assert_eq!(decision.action, Action::DeletePods(vec!["db-1-0".into()]));
        let Progress::Working(message) = &decision.progress else {
            panic!("{decision:?}");
        };
        assert!(message.contains("data-db-1-0"), "{message}");
        perform(&mut w, &decision.action);
        time_passes(&mut w);
        let next = decide(&persisted(&up, &decision), &w);
        assert!(
            !matches!(next.action, Action::DeleteClaims(_)),
            "the claims after the unlock are new: {next:?}"
        );
    }

    #[test]
    fn full_run_resumes_identically_after_a_restart_at_every_point() {
        let mut up = upgrade("");
        let mut w = world();
        let mut actions = Vec::new();
        let mut steps = Vec::new();
        for _ in 0..60 {
            let decision = decide(&up, &w);
            // A restart right now (same status, same world) decides the same.
            assert_eq!(decide(&up, &w), decision);
            let next = persisted(&up, &decision);
            // A restart after the status write but before the action: the action again.
            assert_eq!(decide(&next, &w).action, decision.action, "{decision:?}");
            if steps.last() != Some(&decision.step) {
                steps.push(decision.step);
            }
            if decision.action != Action::Wait {
                actions.push(decision.action.clone());
                perform(&mut w, &decision.action);
                // A restart after the action: never the same action twice.
                assert_ne!(decide(&next, &w).action, decision.action, "{decision:?}");
            } else {
                time_passes(&mut w);
            }
            up = next;
            if decision.step == UpgradeStep::Done {
                assert!(
                    matches!(decision.progress, Progress::Succeeded(_)),
                    "{decision:?}"
                );
                break;
            }
        }
        assert_eq!(
            steps,
            [
                UpgradeStep::WaitingForBackup,
                UpgradeStep::ShuttingDown,
                UpgradeStep::Checking,
                UpgradeStep::Upgrading,
                UpgradeStep::Starting,
                UpgradeStep::RecreatingReplicas,
                UpgradeStep::PostUpgrade,
                UpgradeStep::Done,
            ]
        );
        assert_eq!(
            actions,
            [
                Action::CreateBackup("up-before".into()),
                Action::LockCluster,
                Action::CreateJob(JobKind::Check),
                Action::CreateJob(JobKind::Upgrade),
                Action::RewriteDcs("7441".into()),
                Action::DeleteClaims(vec!["data-db-1-0".into(), "data-db-3-0".into()]),
                Action::MoveClusterToNewMajor,
                Action::UnlockCluster,
                Action::StartPostUpgrade {
                    backup: Some("up-after".into()),
                    job: true
                },
            ]
        );
        let status = up.status.unwrap();
        assert_eq!(status.phase, Some(UpgradePhase::Completed));
        assert_eq!(status.instance.as_deref(), Some("db-2"));
        assert_eq!(status.backup_name.as_deref(), Some("up-before"));
        let jobs = status.jobs.unwrap();
        assert_eq!(jobs.check.as_deref(), Some("up-check"));
        assert_eq!(jobs.upgrade.as_deref(), Some("up-upgrade"));
        assert_eq!(jobs.post_upgrade.as_deref(), Some("up-post"));
        assert!(status.started_at.is_some() && status.completed_at.is_some());
    }
}

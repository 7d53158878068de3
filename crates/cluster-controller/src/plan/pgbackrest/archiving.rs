//! The `ContinuousArchiving` condition from the stanza and `pg_stat_archiver`, and the events
//! its transitions raise.

use super::stanza::{STANZA_MISSING, STANZA_RETRY_AFTER, StanzaState};
use crate::observe::backup::ArchiverStats;
use crate::shared::layout::stanza_job_name;
use crate::shared::meta::cluster_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tusk_api::cluster::reasons;
use tusk_api::condition::{ConditionStatus, DesiredCondition, find_condition, types};
use tusk_api::{Cluster, ClusterStatus};

// ---------------------------------------------------------------------------------------------
// Conditions and status
// ---------------------------------------------------------------------------------------------

pub(crate) fn micros_text(micros: Option<i64>) -> String {
    micros
        .and_then(|m| jiff::Timestamp::from_microsecond(m).ok())
        .map_or_else(|| "an unknown time".to_owned(), |t| t.to_string())
}

/// The ContinuousArchiving condition (`None`: remove it, the Cluster has no repository).
pub fn archiving_condition(
    cluster: &Cluster,
    stanza: &StanzaState,
    archiver: Option<&ArchiverStats>,
    previous: Option<&Condition>,
) -> Option<DesiredCondition> {
    if !cluster.spec.has_repository() {
        return None;
    }
    let job = stanza_job_name(&cluster_name(cluster));
    if let Some(missing) = stanza_missing(stanza, &job) {
        return Some(missing);
    }
    Some(match archiver {
        Some(stats) => archiver_verdict(stats),
        None => last_verdict(previous, &job),
    })
}

fn continuous_archiving(
    status: impl Into<ConditionStatus>,
    reason: &'static str,
    message: String,
) -> DesiredCondition {
    DesiredCondition::new(types::CONTINUOUS_ARCHIVING, status, reason, message)
}

/// `False/StanzaMissing` while the stanza Job has not succeeded (`None` once it has).
fn stanza_missing(stanza: &StanzaState, job: &str) -> Option<DesiredCondition> {
    let message = match stanza {
        StanzaState::Waiting(why) => format!(
            "the pgBackRest stanza does not exist yet ({why}); WAL is not archived until it does"
        ),
        StanzaState::Running => format!("Job {job} is creating the pgBackRest stanza"),
        StanzaState::Failed(message) => format!(
            "creating the pgBackRest stanza failed ({message}); it is retried every {} minutes: see `kubectl logs job/{job}` and check the repository settings and credentials",
            STANZA_RETRY_AFTER.as_secs() / 60
        ),
        StanzaState::Succeeded => return None,
    };
    Some(continuous_archiving(false, STANZA_MISSING, message))
}

/// What `pg_stat_archiver` on the primary says: a failure more recent than the last success
/// is `ArchiveFailing`.
fn archiver_verdict(stats: &ArchiverStats) -> DesiredCondition {
    if stats.failing() {
        continuous_archiving(
            false,
            reasons::ARCHIVE_FAILING,
            format!(
                "archiving WAL segment {} failed at {} ({} failures since the statistics were reset; last success: {} at {}): see the postgres container's log for archive-push errors",
                stats.last_failed_wal.as_deref().unwrap_or("?"),
                micros_text(stats.last_failed_micros),
                stats.failed_count,
                stats.last_archived_wal.as_deref().unwrap_or("none"),
                micros_text(stats.last_archived_micros),
            ),
        )
    } else {
        continuous_archiving(
            true,
            reasons::ARCHIVING,
            "WAL archiving works: the stanza exists and the last archive attempt succeeded"
                .to_owned(),
        )
    }
}

/// The primary could not be asked: keep a verdict from the archiver, else trust the stanza
/// Job's `pgbackrest check`.
fn last_verdict(previous: Option<&Condition>, job: &str) -> DesiredCondition {
    match previous {
        Some(previous) if previous.reason != STANZA_MISSING => continuous_archiving(
            if previous.status == "True" {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            if previous.reason == reasons::ARCHIVE_FAILING {
                reasons::ARCHIVE_FAILING
            } else {
                reasons::ARCHIVING
            },
            previous.message.clone(),
        ),
        _ => continuous_archiving(
            true,
            reasons::ARCHIVING,
            format!(
                "the stanza exists and `pgbackrest check` in Job {job} archived a WAL segment to every repository"
            ),
        ),
    }
}

/// An event for `kubectl describe` on the Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupEvent {
    /// A Warning (else Normal).
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

pub(crate) fn event(warning: bool, reason: &'static str, note: String) -> BackupEvent {
    BackupEvent {
        warning,
        reason,
        note,
    }
}

/// Events for `kubectl describe`: archiving healthy or failing, the stanza failing, and the
/// recovery target reached.
pub fn transitions(previous: Option<&ClusterStatus>, next: &ClusterStatus) -> Vec<BackupEvent> {
    let mut events = Vec::new();
    let before = previous.and_then(|s| find_condition(&s.conditions, types::CONTINUOUS_ARCHIVING));
    let after = find_condition(&next.conditions, types::CONTINUOUS_ARCHIVING);
    if let Some(after) = after {
        let changed = before.is_none_or(|b| b.status != after.status || b.reason != after.reason);
        if changed {
            match (after.status.as_str(), after.reason.as_str()) {
                ("True", _) => events.push(event(false, "ArchivingHealthy", after.message.clone())),
                (_, r) if r == reasons::ARCHIVE_FAILING => {
                    events.push(event(true, "ArchiveFailing", after.message.clone()));
                }
                _ if after.message.contains("failed") => {
                    events.push(event(true, "StanzaCreationFailed", after.message.clone()));
                }
                _ => {}
            }
        }
    }
    if let Some(reached) = &next.recovery_target_reached
        && previous.and_then(|s| s.recovery_target_reached.as_ref()) != Some(reached)
    {
        events.push(event(
            false,
            "RecoveryTargetReached",
            format!("restore finished: {reached}"),
        ));
    }
    events
}

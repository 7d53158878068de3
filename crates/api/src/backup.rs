//! The `Backup` resource: one pgBackRest backup of a Cluster, taken by one Job.
//!
//! ```text
//!   Backup ──(Cluster Ready)──► Job <backup>-backup ──mTLS──► pgBackRest server on the primary
//!     status ◄── label, size, WAL and LSN range from `pgbackrest info --output=json`
//! ```
//!
//! A Backup is a one-shot operation: its spec is immutable, a failed Job is reported once and
//! not retried (a new Backup is the retry), and `status.phase` moves Pending → Running →
//! Completed | Failed. Other controllers chain on the `Succeeded` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterReference;
use crate::condition::{Condition, ConditionStatus, find_condition, types};

/// Longest `status.error` kept; longer pgBackRest output is cut to its last part by
/// [`bounded_error`].
pub const MAX_ERROR_LENGTH: usize = 4096;

/// The repository a Backup goes to when none is named.
pub const DEFAULT_REPOSITORY: &str = "repo1";

/// Pattern of a repository name, `repo1` to `repo4` (as in a Cluster's `spec.backup`).
pub const REPOSITORY_PATTERN: &str = r"^repo[1-4]$";

/// One pgBackRest backup of a Cluster, written to one of its repositories.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "Backup",
    plural = "backups",
    namespaced,
    status = "BackupStatus",
    category = "tusk",
    shortname = "pgbackup",
    doc = "One pgBackRest backup of a Cluster (full, differential or incremental) to one of its \
           repositories. The spec is immutable: to back up again, create a new Backup.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster backed up"
    ),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "Full, Differential or Incremental"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Completed or Failed"
    ),
    printcolumn(
        name = "Label",
        type_ = "string",
        json_path = ".status.backupLabel",
        description = "The pgBackRest backup set label"
    ),
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository",
        description = "The repository written to",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self == oldSelf",
        "message": "Backup spec is immutable: create a new Backup instead"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The Cluster, in this namespace, to back up. It needs a backup repository
    /// (`spec.backup.repositories`); the Backup waits while the Cluster is not Ready.
    pub cluster: ClusterReference,

    /// Full (the default): a copy of the whole database. Differential: the files changed since
    /// the last full backup. Incremental: the files changed since the last backup of any type.
    /// A restore needs the backup's whole chain back to its full backup. When the repository
    /// holds no full backup yet, pgBackRest takes a full one instead; `status.type` says what
    /// was taken.
    #[serde(rename = "type", default)]
    pub type_: BackupType,

    /// The Cluster's repository to write to, `repo1` to `repo4`. Default `repo1`.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 5, max = 5), regex(pattern = REPOSITORY_PATTERN))]
    pub repository: String,

    /// What deleting this Backup object does to the backup set. Retain (the default): the set
    /// stays in the repository, where the Cluster's retention expires it in time. Expire: the
    /// set is expired from the repository (pgBackRest `expire --set`) when the object is
    /// deleted, together with the differential and incremental backups that depend on it.
    #[serde(default)]
    pub deletion_policy: BackupDeletionPolicy,
}

pub(crate) fn default_repository() -> String {
    DEFAULT_REPOSITORY.to_owned()
}

/// The kind of backup: Full (a copy of the whole database), Differential (the files changed
/// since the last full backup) or Incremental (the files changed since the last backup of any
/// type). Restoring a differential needs its full backup; an incremental needs the whole chain
/// back to a full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupType {
    /// A copy of the whole database.
    #[default]
    Full,
    /// The files changed since the last full backup.
    Differential,
    /// The files changed since the last backup of any type.
    Incremental,
}

impl BackupType {
    /// The spelling used in the API, docs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "Full",
            BackupType::Differential => "Differential",
            BackupType::Incremental => "Incremental",
        }
    }

    /// pgBackRest's `--type` value (also the `type` field of `pgbackrest info`).
    pub fn pgbackrest_type(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Differential => "diff",
            BackupType::Incremental => "incr",
        }
    }

    /// The type of a `pgbackrest info` entry (`full`, `diff`, `incr`).
    pub fn from_pgbackrest_type(value: &str) -> Option<BackupType> {
        match value {
            "full" => Some(BackupType::Full),
            "diff" => Some(BackupType::Differential),
            "incr" => Some(BackupType::Incremental),
            _ => None,
        }
    }
}

/// What deleting a Backup object does to its backup set: Retain (keep it in the repository,
/// the default) or Expire (expire it, and the backups depending on it, from the repository).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupDeletionPolicy {
    /// Keep the backup set; the repository's retention expires it in time.
    #[default]
    Retain,
    /// Expire the backup set from the repository.
    Expire,
}

/// Where a Backup is: Pending (waiting for the Cluster, or for its Job to start), Running,
/// Completed or Failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for the Cluster or for the Job to start.
    #[default]
    Pending,
    /// The Job is running pgBackRest.
    Running,
    /// The backup set is in the repository.
    Completed,
    /// The backup failed; `status.error` says why. Not retried.
    Failed,
}

impl BackupPhase {
    /// Whether the Backup is over (Completed or Failed) and will not change again.
    pub fn is_finished(self) -> bool {
        matches!(self, BackupPhase::Completed | BackupPhase::Failed)
    }
}

/// What the Backup controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Pending, Running, Completed or Failed. For people and printer columns; controllers
    /// read the `Succeeded` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,

    /// `Progressing` (True while waiting or running; the reason says which) and `Succeeded`
    /// (True once the set is in the repository, False when the backup failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Job running pgBackRest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub job_name: Option<String>,

    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the backup completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// The pgBackRest backup set label, such as `20261122-101500F` (full) or
    /// `20261122-101500F_20261122-111500D` (differential on top of that full). Restores name a
    /// set by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub backup_label: Option<String>,

    /// The type of backup actually taken (a Differential or Incremental becomes Full when the
    /// repository has no full backup yet).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<BackupType>,

    /// The repository written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub repository: Option<String>,

    /// Sizes of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<BackupSize>,

    /// The first and last WAL segment a restore of this backup needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,

    /// The write-ahead log positions at which the backup started and stopped; point-in-time
    /// recovery from this backup can reach any position after `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<LsnRange>,

    /// The PostgreSQL timeline the backup was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,

    /// Why the backup failed: the end of pgBackRest's error output, at most 4096 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub error: Option<String>,
}

/// Sizes of a backup, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSize {
    /// Size of the database the backup restores to, in bytes (pgBackRest `info.size`).
    #[schemars(range(min = 0))]
    pub original: i64,

    /// Bytes this backup takes in the repository, after compression (pgBackRest
    /// `info.repository.size`).
    #[schemars(range(min = 0))]
    pub repository: i64,
}

/// A range of WAL segments, by file name (`000000010000000000000003`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalRange {
    /// The first WAL segment.
    #[schemars(length(max = 64))]
    pub start: String,

    /// The last WAL segment.
    #[schemars(length(max = 64))]
    pub stop: String,
}

/// A range of write-ahead log positions (`0/3000028`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LsnRange {
    /// Where the backup started.
    #[schemars(length(max = 17))]
    pub start: String,

    /// Where the backup stopped.
    #[schemars(length(max = 17))]
    pub stop: String,
}

/// Reasons the Backup controller writes into the `Progressing` and `Succeeded` conditions
/// (also metric labels).
pub mod reasons {
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The Cluster exists but is not Ready; the backup waits.
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    /// The Cluster has no repository of the name in `spec.repository`.
    pub const REPOSITORY_NOT_FOUND: &str = "RepositoryNotFound";
    /// The Job was created and waits to start.
    pub const JOB_CREATED: &str = "JobCreated";
    /// pgBackRest is running.
    pub const RUNNING: &str = "Running";
    /// The backup set is in the repository.
    pub const COMPLETED: &str = "Completed";
    /// pgBackRest failed; `status.error` has its output.
    pub const FAILED: &str = "Failed";
    /// The Job disappeared before it finished (deleted by someone); the backup counts as
    /// failed.
    pub const JOB_DELETED: &str = "JobDeleted";
    /// With deletionPolicy Expire: expiring the backup set failed; the message says why.
    pub const EXPIRE_FAILED: &str = "ExpireFailed";
}

impl Backup {
    /// Whether the backup completed: `Succeeded` is True.
    pub fn has_succeeded(&self) -> bool {
        self.succeeded() == Some(true)
    }

    /// Whether the backup failed: `Succeeded` is False.
    pub fn has_failed(&self) -> bool {
        self.succeeded() == Some(false)
    }

    fn succeeded(&self) -> Option<bool> {
        let status = self.status.as_ref()?;
        let condition = find_condition(&status.conditions, types::SUCCEEDED)?;
        if condition.status == ConditionStatus::True.as_str() {
            Some(true)
        } else if condition.status == ConditionStatus::False.as_str() {
            Some(false)
        } else {
            None
        }
    }

    /// Whether the Backup is over (phase Completed or Failed).
    pub fn is_finished(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(BackupPhase::is_finished)
    }
}

/// The timeline encoded in a WAL segment name (its first 8 hex digits).
pub fn timeline_of_wal_segment(segment: &str) -> Option<i64> {
    let timeline = segment.get(..8)?;
    if segment.len() != 24 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(timeline, 16).ok()
}

/// `text` cut to at most [`MAX_ERROR_LENGTH`] characters, keeping the end (where pgBackRest
/// prints the error) and marking the cut with a leading `…`.
pub fn bounded_error(text: &str) -> String {
    let text = text.trim();
    let count = text.chars().count();
    if count <= MAX_ERROR_LENGTH {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - (MAX_ERROR_LENGTH - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{DesiredCondition, set_condition};
    use crate::user::tests::cel_errors;

    const MINIMAL: &str = "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {name: before-upgrade, namespace: db}
spec:
  cluster: {name: db}
";

    fn backup(yaml: &str) -> Backup {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn minimal_backup_is_a_full_backup_to_repo1_that_is_retained() {
        let backup = backup(MINIMAL);
        assert_eq!(backup.spec.type_, BackupType::Full);
        assert_eq!(backup.spec.repository, "repo1");
        assert_eq!(backup.spec.deletion_policy, BackupDeletionPolicy::Retain);
        assert!(!backup.is_finished());
        assert!(!backup.has_succeeded() && !backup.has_failed());
    }

    #[test]
    fn type_is_spelled_type_in_yaml() {
        let backup = backup(&format!("{MINIMAL}  type: Incremental\n"));
        assert_eq!(backup.spec.type_, BackupType::Incremental);
        let yaml = serde_yaml_ng::to_string(&backup).unwrap();
        assert!(yaml.contains("type: Incremental"), "{yaml}");
    }

    #[test]
    fn pgbackrest_types_round_trip() {
        for kind in [
            BackupType::Full,
            BackupType::Differential,
            BackupType::Incremental,
        ] {
            assert_eq!(
                BackupType::from_pgbackrest_type(kind.pgbackrest_type()),
                Some(kind)
            );
        }
        assert_eq!(BackupType::from_pgbackrest_type("Full"), None);
    }

    #[test]
    fn finished_phases() {
        assert!(!BackupPhase::Pending.is_finished());
        assert!(!BackupPhase::Running.is_finished());
        assert!(BackupPhase::Completed.is_finished());
        assert!(BackupPhase::Failed.is_finished());
    }

    #[test]
    fn succeeded_condition_decides_success() {
        let mut backup = backup(MINIMAL);
        let mut status = BackupStatus {
            phase: Some(BackupPhase::Failed),
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            DesiredCondition::new(
                types::SUCCEEDED,
                false,
                reasons::FAILED,
                "pgBackRest failed",
            ),
            Some(1),
            Time(jiff::Timestamp::UNIX_EPOCH),
        );
        backup.status = Some(status);
        assert!(backup.has_failed() && !backup.has_succeeded() && backup.is_finished());
    }

    #[test]
    fn timeline_comes_from_the_wal_segment_name() {
        assert_eq!(timeline_of_wal_segment("000000010000000000000003"), Some(1));
        assert_eq!(
            timeline_of_wal_segment("0000001A0000000000000003"),
            Some(26)
        );
        assert_eq!(timeline_of_wal_segment("00000001"), None);
        assert_eq!(timeline_of_wal_segment("zzzzzzzz0000000000000003"), None);
    }

    #[test]
    fn long_errors_keep_their_end() {
        let long = format!(
            "{}ERROR: [037]: backup command requires option: pg1-path",
            "x".repeat(10_000)
        );
        let bounded = bounded_error(&long);
        assert_eq!(bounded.chars().count(), MAX_ERROR_LENGTH);
        assert!(bounded.starts_with('…') && bounded.ends_with("pg1-path"));
        assert_eq!(bounded_error(" short \n"), "short");
    }

    #[test]
    fn cel_makes_the_spec_immutable() {
        assert!(cel_errors::<Backup>(MINIMAL, None).is_empty());
        let changed = format!("{MINIMAL}  type: Differential\n");
        let errors = cel_errors::<Backup>(&changed, Some(MINIMAL));
        assert_eq!(
            errors,
            vec!["Backup spec is immutable: create a new Backup instead"]
        );
        // defaults applied to both sides: writing a default out is no change
        let explicit = format!("{MINIMAL}  type: Full\n  repository: repo1\n");
        assert!(cel_errors::<Backup>(&explicit, Some(MINIMAL)).is_empty());
    }

    #[test]
    fn repository_pattern_admits_repo1_to_repo4() {
        let pattern = regex::Regex::new(REPOSITORY_PATTERN).unwrap();
        for good in ["repo1", "repo4"] {
            assert!(pattern.is_match(good));
        }
        for bad in ["repo0", "repo5", "repo10", "Repo1", ""] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn documented_example_is_valid() {
        let example = include_str!("../../../docs/examples/backup.yaml");
        let object: Backup = serde_yaml_ng::from_str(example).unwrap();
        assert!(object.metadata.namespace.is_some());
        let errors = cel_errors::<Backup>(example, None);
        assert!(errors.is_empty(), "{errors:?}");
    }
}

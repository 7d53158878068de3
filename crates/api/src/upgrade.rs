//! The `PGUpgrade` resource: a PostgreSQL major version upgrade of a Cluster, as one object.
//!
//! ```text
//!   Validating → WaitingForBackup → ShuttingDown → Checking → Upgrading → Starting
//!        → RecreatingReplicas → PostUpgrade → Done
//!   (a failure up to Upgrading: → RollingBack → Done, the Cluster back on the old major)
//! ```
//!
//! The position in that sequence is persisted in `status.step`, so an operator restart resumes
//! where it stopped. While it holds the Cluster shut down, the PGUpgrade sets the annotation
//! `tusk.dev/upgrade-lock` on it ([`crate::labels::UPGRADE_LOCK_ANNOTATION`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterReference;
use crate::condition::Condition;

/// A major version upgrade of a Cluster with pg_upgrade, gated by a fresh backup and rolled
/// back to the old major when it fails before the new server first starts.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PGUpgrade",
    plural = "pgupgrades",
    namespaced,
    status = "PGUpgradeStatus",
    category = "tusk",
    shortname = "pgupgrade",
    doc = "A PostgreSQL major version upgrade of a Cluster: a backup, a shutdown, pg_upgrade \
           --check, pg_upgrade, a start on the new major and the post-upgrade tasks, each step \
           visible in status. The spec is immutable.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "PGUpgrade names are at most 63 characters: the name is stored as a label value on the Backup and Jobs it creates"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster upgraded"
    ),
    printcolumn(
        name = "From",
        type_ = "integer",
        json_path = ".spec.fromPostgresVersion",
        description = "The major version upgraded from"
    ),
    printcolumn(
        name = "To",
        type_ = "integer",
        json_path = ".spec.toPostgresVersion",
        description = "The major version upgraded to"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Completed or Failed"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.step",
        description = "The step the upgrade is at"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.fromPostgresVersion < self.toPostgresVersion",
        "message": "toPostgresVersion must be greater than fromPostgresVersion: a PGUpgrade only goes to a newer major version"
    },
    {
        "rule": "self == oldSelf",
        "message": "PGUpgrade spec is immutable: delete this PGUpgrade (once it is finished) and create a new one"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct PGUpgradeSpec {
    /// The Cluster, in this namespace, to upgrade. Only one PGUpgrade may be active per
    /// Cluster; a second one waits with reason AnotherUpgradeActive.
    pub cluster: ClusterReference,

    /// The major version the Cluster runs now, 14 to 17. The upgrade refuses to start
    /// (reason VersionMismatch) if the Cluster runs another.
    #[schemars(range(min = 14, max = 17))]
    pub from_postgres_version: i32,

    /// The major version to upgrade to, 15 to 18, greater than `fromPostgresVersion`. Majors
    /// may be skipped (14 to 17 is one upgrade).
    #[schemars(range(min = 15, max = 18))]
    pub to_postgres_version: i32,

    /// How pg_upgrade moves the data files into the new data directory.
    ///
    /// - Link (the default): hard links. Fast (seconds, whatever the size) and needs almost no
    ///   extra disk, but the old data directory stays usable only until the new server first
    ///   starts: a failure before that rolls back to the old major; after it, the way back is
    ///   the backup taken before the upgrade.
    /// - Copy: copies every file. Needs free space for a second copy of the data on the volume
    ///   and takes time in proportion to its size; the old data directory stays intact.
    /// - Clone: copy-on-write clones (reflinks): as fast as Link and the old data directory
    ///   stays intact, but only on file systems that support them (XFS with reflink, Btrfs);
    ///   elsewhere the check fails before anything is changed.
    #[serde(default)]
    pub transfer_method: TransferMethod,

    /// The image the upgrade Jobs run and the Cluster runs afterwards; it must hold the
    /// binaries of both majors (tusk's instance image holds the previous major too). Default:
    /// the image the operator is configured with for `toPostgresVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Upgrade a Cluster that has no backup repository. By default (false) such a Cluster is
    /// refused (reason NoBackupRepository), because a backup taken just before is the way back
    /// if the upgraded data turns out wrong. Set true only for data you can afford to lose or
    /// rebuild.
    #[serde(default)]
    pub allow_without_backup: bool,
}

/// How pg_upgrade moves the data files into the new data directory.
///
/// - Link: hard links. Fast (seconds, whatever the size) and needs almost no extra disk. The
///   old data directory stays usable only until the new server first starts: a failure before
///   that rolls back to the old major; after it, the way back is the backup taken before.
/// - Copy: copies every file. Needs free space for a second copy of the data on the volume
///   and takes time in proportion to the size; the old data directory stays intact.
/// - Clone: copy-on-write clones (reflinks), as fast as Link and leaving the old data
///   directory intact, but only on file systems that support them (XFS with reflink, Btrfs);
///   elsewhere the check fails and nothing is changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TransferMethod {
    /// Hard links.
    #[default]
    Link,
    /// Copies of every file.
    Copy,
    /// Copy-on-write clones.
    Clone,
}

impl TransferMethod {
    /// pg_upgrade's option for this method.
    pub fn pg_upgrade_flag(self) -> &'static str {
        match self {
            TransferMethod::Link => "--link",
            TransferMethod::Copy => "--copy",
            TransferMethod::Clone => "--clone",
        }
    }

    /// Whether the old data directory stays untouched by the upgrade itself, so the old
    /// major can be started even after the new server has run.
    pub fn keeps_old_data(self) -> bool {
        matches!(self, TransferMethod::Copy | TransferMethod::Clone)
    }
}

/// Where a PGUpgrade is: Pending (not started: validating or waiting for another upgrade),
/// Running, Completed (the Cluster runs the new major) or Failed (see the Succeeded
/// condition; after a rollback the Cluster runs the old major again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UpgradePhase {
    /// Not started yet.
    #[default]
    Pending,
    /// Under way; `status.step` says where.
    Running,
    /// The Cluster runs the new major.
    Completed,
    /// The upgrade failed.
    Failed,
}

impl UpgradePhase {
    /// Whether the upgrade is over (Completed or Failed).
    pub fn is_finished(self) -> bool {
        matches!(self, UpgradePhase::Completed | UpgradePhase::Failed)
    }
}

/// The step a PGUpgrade is at, persisted so an operator restart resumes there:
///
/// - Validating: checking that the Cluster exists and runs `fromPostgresVersion`, that the
///   target is supported, and that no other PGUpgrade is active for the Cluster.
/// - WaitingForBackup: waiting for a Completed Backup of the Cluster taken after this
///   PGUpgrade was created (one is created if there is none). Skipped with
///   `allowWithoutBackup` on a Cluster without a repository.
/// - ShuttingDown: the Cluster is locked for the upgrade and its instances stop, replicas
///   first.
/// - Checking: a Job initialises the new data directory and runs `pg_upgrade --check`.
/// - Upgrading: a Job runs pg_upgrade with the transfer method and clears Patroni's state for
///   the old system.
/// - Starting: the Cluster moves to the new major and image, and the primary starts on it.
///   From here on, Link mode cannot roll back.
/// - RecreatingReplicas: replicas are re-created from the new primary.
/// - PostUpgrade: a fresh full backup, statistics rebuilt (`vacuumdb --analyze-in-stages`),
///   extensions updated.
/// - RollingBack: after a failure up to Upgrading, the Cluster is started again on the old
///   major with its previous image.
/// - Done: nothing more to do (phase Completed or Failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UpgradeStep {
    /// Checking the request against the Cluster.
    Validating,
    /// Waiting for a backup taken after this PGUpgrade was created.
    WaitingForBackup,
    /// Stopping the Cluster's instances.
    ShuttingDown,
    /// Running `pg_upgrade --check`.
    Checking,
    /// Running pg_upgrade.
    Upgrading,
    /// Starting the primary on the new major.
    Starting,
    /// Re-creating the replicas from the new primary.
    RecreatingReplicas,
    /// Backup, statistics and extension updates.
    PostUpgrade,
    /// Returning the Cluster to the old major.
    RollingBack,
    /// Finished.
    Done,
}

impl UpgradeStep {
    /// The spelling used in the API, conditions and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeStep::Validating => "Validating",
            UpgradeStep::WaitingForBackup => "WaitingForBackup",
            UpgradeStep::ShuttingDown => "ShuttingDown",
            UpgradeStep::Checking => "Checking",
            UpgradeStep::Upgrading => "Upgrading",
            UpgradeStep::Starting => "Starting",
            UpgradeStep::RecreatingReplicas => "RecreatingReplicas",
            UpgradeStep::PostUpgrade => "PostUpgrade",
            UpgradeStep::RollingBack => "RollingBack",
            UpgradeStep::Done => "Done",
        }
    }

    /// Whether a failure at this step can still bring the Cluster back on the old major as it
    /// was: true until the new server has first started.
    pub fn can_roll_back(self) -> bool {
        matches!(
            self,
            UpgradeStep::Validating
                | UpgradeStep::WaitingForBackup
                | UpgradeStep::ShuttingDown
                | UpgradeStep::Checking
                | UpgradeStep::Upgrading
        )
    }

    /// Whether the Cluster must be held shut down (the upgrade lock annotation present) at
    /// this step.
    pub fn holds_cluster_down(self) -> bool {
        matches!(
            self,
            UpgradeStep::ShuttingDown | UpgradeStep::Checking | UpgradeStep::Upgrading
        )
    }
}

/// What the PGUpgrade controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PGUpgradeStatus {
    /// Pending, Running, Completed or Failed. For people and printer columns; controllers
    /// read the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UpgradePhase>,

    /// The step the upgrade is at, in order:
    ///
    /// - Validating: the Cluster exists and runs `fromPostgresVersion`, the target is
    ///   supported, no other PGUpgrade is active for the Cluster.
    /// - WaitingForBackup: waiting for a Completed Backup taken after this PGUpgrade was
    ///   created (one is created if needed).
    /// - ShuttingDown: the Cluster is locked for the upgrade; its instances stop, replicas
    ///   first.
    /// - Checking: a Job initialises the new data directory and runs `pg_upgrade --check`.
    /// - Upgrading: a Job runs pg_upgrade.
    /// - Starting: the Cluster moves to the new major; the primary starts on it. From here on,
    ///   Link mode cannot roll back.
    /// - RecreatingReplicas: replicas are re-created from the new primary.
    /// - PostUpgrade: a fresh full backup, statistics rebuilt, extensions updated.
    /// - RollingBack: after a failure up to Upgrading, the Cluster starts again on the old
    ///   major as it was.
    /// - Done: finished (phase Completed or Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<UpgradeStep>,

    /// `Progressing` (True while under way: the reason names the step, the message what it
    /// waits for; False once finished) and `Succeeded` (True when the Cluster runs the new
    /// major; False with the reason and, for a failed check, pg_upgrade's output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the upgrade left Validating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the upgrade finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// The Backup the upgrade relies on as its way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub backup_name: Option<String>,

    /// The Jobs the upgrade ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<UpgradeJobs>,

    /// The instance (`<cluster>-<n>`) whose data volume is upgraded: the Cluster's primary
    /// when the upgrade shut it down. The other instances are re-created from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub instance: Option<String>,

    /// The Cluster's `spec.image` before the upgrade, so a rollback restores it exactly. Unset
    /// when the Cluster used the operator's default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub previous_image: Option<String>,
}

/// Names of the Jobs a PGUpgrade runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeJobs {
    /// The Job running `pg_upgrade --check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub check: Option<String>,

    /// The Job running pg_upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub upgrade: Option<String>,

    /// The Job running the post-upgrade tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub post_upgrade: Option<String>,
}

/// Reasons the PGUpgrade controller writes into the `Progressing` and `Succeeded` conditions
/// (also metric labels). While under way, `Progressing` carries the step's name as reason
/// ([`UpgradeStep::as_str`]).
pub mod reasons {
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The Cluster does not run `fromPostgresVersion`.
    pub const VERSION_MISMATCH: &str = "VersionMismatch";
    /// `toPostgresVersion` is not a major this operator supports.
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
    /// Another PGUpgrade of the same Cluster is under way; this one waits.
    pub const ANOTHER_UPGRADE_ACTIVE: &str = "AnotherUpgradeActive";
    /// The Cluster has no backup repository and `allowWithoutBackup` is false.
    pub const NO_BACKUP_REPOSITORY: &str = "NoBackupRepository";
    /// Waiting for the pre-upgrade Backup to complete.
    pub const WAITING_FOR_BACKUP: &str = "WaitingForBackup";
    /// The pre-upgrade Backup failed; nothing was changed.
    pub const BACKUP_FAILED: &str = "BackupFailed";
    /// Waiting for the Cluster's instances to stop.
    pub const SHUTTING_DOWN: &str = "ShuttingDown";
    /// `pg_upgrade --check` failed; its output is in the message. The Cluster was started
    /// again on the old major.
    pub const CHECK_FAILED: &str = "CheckFailed";
    /// pg_upgrade or the start on the new major failed.
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
    /// The Cluster is being brought back on the old major.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// The Cluster runs the old major again, as before the upgrade.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The Cluster runs the new major.
    pub const SUCCEEDED: &str = "Succeeded";
}

impl PGUpgrade {
    /// Whether this upgrade is under way or yet to start (and so blocks other upgrades of the
    /// same Cluster).
    pub fn is_active(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(UpgradePhase::is_finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::tests::cel_errors;

    const MINIMAL: &str = "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {name: to-18, namespace: db}
spec:
  cluster: {name: db}
  fromPostgresVersion: 17
  toPostgresVersion: 18
";

    #[test]
    fn minimal_upgrade_links_and_requires_a_backup() {
        let upgrade: PGUpgrade = serde_yaml_ng::from_str(MINIMAL).unwrap();
        assert_eq!(upgrade.spec.transfer_method, TransferMethod::Link);
        assert!(!upgrade.spec.allow_without_backup);
        assert!(upgrade.spec.image.is_none());
        assert!(upgrade.is_active());
    }

    #[test]
    fn finished_upgrades_are_not_active() {
        let mut upgrade: PGUpgrade = serde_yaml_ng::from_str(MINIMAL).unwrap();
        for (phase, active) in [
            (UpgradePhase::Pending, true),
            (UpgradePhase::Running, true),
            (UpgradePhase::Completed, false),
            (UpgradePhase::Failed, false),
        ] {
            upgrade.status = Some(PGUpgradeStatus {
                phase: Some(phase),
                ..Default::default()
            });
            assert_eq!(upgrade.is_active(), active, "{phase:?}");
        }
    }

    #[test]
    fn rollback_is_possible_until_the_new_server_starts() {
        assert!(UpgradeStep::Upgrading.can_roll_back());
        assert!(!UpgradeStep::Starting.can_roll_back());
        assert!(!UpgradeStep::Done.can_roll_back());
        assert!(UpgradeStep::Checking.holds_cluster_down());
        assert!(!UpgradeStep::Validating.holds_cluster_down());
    }

    #[test]
    fn step_names_match_their_serde_spelling() {
        for step in [
            UpgradeStep::Validating,
            UpgradeStep::WaitingForBackup,
            UpgradeStep::ShuttingDown,
            UpgradeStep::Checking,
            UpgradeStep::Upgrading,
            UpgradeStep::Starting,
            UpgradeStep::RecreatingReplicas,
            UpgradeStep::PostUpgrade,
            UpgradeStep::RollingBack,
            UpgradeStep::Done,
        ] {
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
        }
    }

    #[test]
    fn transfer_methods() {
        assert_eq!(TransferMethod::Link.pg_upgrade_flag(), "--link");
        assert!(!TransferMethod::Link.keeps_old_data());
        assert!(TransferMethod::Copy.keeps_old_data() && TransferMethod::Clone.keeps_old_data());
    }

    #[test]
    fn cel_refuses_downgrades_and_changes() {
        assert!(cel_errors::<PGUpgrade>(MINIMAL, None).is_empty());
        let same = MINIMAL.replace("fromPostgresVersion: 17", "fromPostgresVersion: 18");
        assert!(cel_errors::<PGUpgrade>(&same, None)[0].contains("newer major"));
        let down = MINIMAL.replace("toPostgresVersion: 18", "toPostgresVersion: 16");
        assert!(cel_errors::<PGUpgrade>(&down, None)[0].contains("newer major"));
        let copy = format!("{MINIMAL}  transferMethod: Copy\n");
        assert!(cel_errors::<PGUpgrade>(&copy, Some(MINIMAL))[0].contains("immutable"));
    }

    #[test]
    fn documented_example_is_valid() {
        let example = include_str!("../../../docs/examples/pgupgrade.yaml");
        let object: PGUpgrade = serde_yaml_ng::from_str(example).unwrap();
        assert!(object.metadata.namespace.is_some());
        let errors = cel_errors::<PGUpgrade>(example, None);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn version_ranges_follow_the_supported_majors() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(PGUpgrade::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let from = &spec["fromPostgresVersion"];
        let to = &spec["toPostgresVersion"];
        let supported = crate::SUPPORTED_POSTGRES_VERSIONS;
        assert_eq!(
            from["minimum"],
            f64::from(crate::OLDEST_UPGRADABLE_POSTGRES_VERSION)
        );
        assert_eq!(from["maximum"], f64::from(*supported.end() - 1));
        assert_eq!(to["minimum"], f64::from(*supported.start()));
        assert_eq!(to["maximum"], f64::from(*supported.end()));
    }
}

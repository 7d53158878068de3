//! The `BackupSchedule` resource: Backups on a cron schedule, the way a CronJob creates Jobs.
//!
//! ```text
//!   BackupSchedule ──(cron, time zone)──► Backup <schedule>-<YYYYMMDDHHMM> (owned)
//!        └── prunes Completed/Failed Backups beyond the history limits
//! ```
//!
//! The schema refuses cron expressions that are plainly wrong (field count, out-of-range
//! numbers, stray characters) with [`cron_pattern`]; the controller parses the expression fully
//! and reports anything left with reason `InvalidSchedule`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::backup::{
    BackupDeletionPolicy, BackupSpec, BackupType, REPOSITORY_PATTERN, default_repository,
};
use crate::common::ClusterReference;
use crate::condition::Condition;

/// Longest BackupSchedule name: the Backups it creates are named `<name>-<YYYYMMDDHHMM>`, and
/// that must stay within 63 characters to be usable as a label value.
pub const MAX_SCHEDULE_NAME_LENGTH: usize = 50;

/// The time zone schedules are read in when none is given.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// The `@` shorthands a schedule may use instead of five fields.
pub const SCHEDULE_SHORTHANDS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

// One value of each cron field. Leading zeros are allowed (`05`); names are case-insensitive.
const MINUTE: &str = "[0-5]?[0-9]";
const HOUR: &str = "[01]?[0-9]|2[0-3]";
const DAY_OF_MONTH: &str = "0?[1-9]|[12][0-9]|3[01]";
const MONTH: &str = "0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)";
const DAY_OF_WEEK: &str = "[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)";
const STEP: &str = "[1-9][0-9]?";

/// One cron field: a comma-separated list of `*`, `*/n`, `v`, `a-b` or `a-b/n`.
fn cron_field(value: &str) -> String {
    let element = format!("(?:[*](?:/{STEP})?|(?:{value})(?:-(?:{value})(?:/{STEP})?)?)");
    format!("{element}(?:,{element})*")
}

/// The regular expression (RE2 and Rust `regex` syntax, free of backslashes and quotes so it
/// embeds in a CEL string) that a schedule must match: five fields — minute (0-59), hour
/// (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7, 0 and 7 are Sunday,
/// or SUN-SAT) — separated by spaces, or one of [`SCHEDULE_SHORTHANDS`].
pub fn cron_pattern() -> String {
    let shorthands = SCHEDULE_SHORTHANDS
        .iter()
        .map(|s| s.trim_start_matches('@'))
        .collect::<Vec<_>>()
        .join("|");
    let fields = [MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
        .map(cron_field)
        .join(" +");
    format!("^(?:@(?:{shorthands})|{fields})$")
}

/// A time zone name as in the IANA database (`Europe/Berlin`, `America/Port-au-Prince`,
/// `Etc/GMT+5`, `UTC`).
pub const TIME_ZONE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

/// Backups of a Cluster on a cron schedule, with history limits, the way a CronJob runs Jobs.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    plural = "backupschedules",
    namespaced,
    status = "BackupScheduleStatus",
    category = "tusk",
    shortname = "pgbackupschedule",
    shortname = "pgbs",
    doc = "Creates Backups of a Cluster on a cron schedule, never two at once, and deletes the \
           oldest finished ones beyond the history limits.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 50").message(
        "BackupSchedule names are at most 50 characters, so the Backups it creates (<name>-<YYYYMMDDHHMM>) fit in 63"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster backed up"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "When backups are taken (cron)"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether new backups are paused"
    ),
    printcolumn(
        name = "LastSchedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "When the last Backup was created"
    ),
    printcolumn(
        name = "Next",
        type_ = "date",
        json_path = ".status.nextScheduleTime",
        description = "When the next Backup is due",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.backupDeletionPolicy) && self.backupDeletionPolicy == 'Expire' && has(self.successfulBackupsHistoryLimit) && self.successfulBackupsHistoryLimit == 0)",
        "message": "with backupDeletionPolicy Expire, successfulBackupsHistoryLimit 0 would expire every backup as soon as it completes: keep at least 1, or use backupDeletionPolicy Retain"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The Cluster, in this namespace, to back up. It needs a backup repository.
    pub cluster: ClusterReference,

    /// When to take a backup, in cron format: five fields separated by spaces — minute (0-59),
    /// hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7 where 0 and
    /// 7 are Sunday, or SUN-SAT). Each field is `*`, a value, a range `a-b`, a step `*/n` or
    /// `a-b/n`, or a comma-separated list of these. Or one of `@hourly`, `@daily` (=
    /// `@midnight`), `@weekly`, `@monthly`, `@yearly` (= `@annually`). Example: `0 3 * * *`
    /// (daily at 03:00), `*/30 8-18 * * MON-FRI`.
    #[schemars(schema_with = "schedule_schema")]
    pub schedule: String,

    /// The time zone the schedule is read in, as an IANA name such as `Europe/Berlin`.
    /// Default `UTC`. Across a daylight saving change, a time that does not exist that day is
    /// skipped and one that occurs twice runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_zone_schema")]
    pub time_zone: Option<String>,

    /// The type of the Backups created: Full (the default), Differential or Incremental.
    #[serde(default)]
    pub backup_type: BackupType,

    /// The Cluster's repository to write to, `repo1` to `repo4`. Default `repo1`.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 5, max = 5), regex(pattern = REPOSITORY_PATTERN))]
    pub repository: String,

    /// Stop creating Backups (running ones finish). Default false.
    #[serde(default)]
    pub suspend: bool,

    /// What to do when a run is due while a Backup of this schedule is still running. Forbid
    /// (the default and only choice today): skip that run; the skip shows in an event.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Take one backup right away when the schedule has not created any yet, instead of
    /// waiting for the first scheduled time. Default false.
    #[serde(default)]
    pub immediate: bool,

    /// How late, in seconds, a run may still start (at least 10, at most 31 days). After
    /// downtime of the operator, missed runs are not replayed: at most one catch-up Backup is
    /// created, for the most recent missed time, and only if that time is no older than this
    /// deadline. Default: the catch-up run is always taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 2_678_400))]
    pub starting_deadline_seconds: Option<i64>,

    /// How many Completed Backups of this schedule to keep as objects; older ones are deleted
    /// (with `backupDeletionPolicy` Expire, that expires their backup sets too). 0 to 100,
    /// default 3.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_backups_history_limit: i32,

    /// How many Failed Backups of this schedule to keep as objects, for diagnosis. 0 to 100,
    /// default 1.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_backups_history_limit: i32,

    /// The `deletionPolicy` of the Backups created. Retain (the default): pruning a Backup
    /// object leaves its set in the repository, whose retention decides how long it stays.
    /// Expire: pruning expires the set, so the history limit becomes this schedule's retention.
    #[serde(default)]
    pub backup_deletion_policy: BackupDeletionPolicy,
}

fn default_successful_history() -> i32 {
    3
}

fn default_failed_history() -> i32 {
    1
}

fn schedule_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "x-kubernetes-validations": [
            {
                "rule": format!("self.matches('{}')", cron_pattern()),
                "message": "spec.schedule must be a cron expression with five fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT) such as \"0 3 * * *\", or one of @hourly, @daily, @weekly, @monthly, @yearly",
            },
        ],
    })
}

fn time_zone_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "x-kubernetes-validations": [
            {
                "rule": format!("self.matches('{TIME_ZONE_PATTERN}') && self != 'Local'"),
                "message": "spec.timeZone must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC",
            },
        ],
    })
}

/// What to do when a run is due while a Backup of the schedule is still running. Forbid: skip
/// the run (the only policy today; backups of one Cluster run one at a time anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the run.
    #[default]
    Forbid,
}

/// What the BackupSchedule controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// `Ready`: True when the schedule is valid and waiting for its next run (reason
    /// Scheduled) or suspended (reason Suspended); False when the schedule or time zone cannot
    /// be used or the Cluster does not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The scheduled time of the last Backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// When the last Backup of this schedule completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,

    /// When the next Backup is due (unset while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// Backups of this schedule that are not finished yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub active: Vec<String>,

    /// The last Backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub last_backup: Option<String>,
}

/// Reasons the BackupSchedule controller writes into the `Ready` condition (also metric
/// labels).
pub mod reasons {
    /// The schedule is valid; `status.nextScheduleTime` says when it runs.
    pub const SCHEDULED: &str = "Scheduled";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The cron expression could not be parsed; the message says why.
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
    /// The time zone is not in the time zone database.
    pub const INVALID_TIME_ZONE: &str = "InvalidTimeZone";
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// A run was skipped because a Backup of this schedule was still running.
    pub const SKIPPED_WHILE_RUNNING: &str = "SkippedWhileRunning";
}

impl BackupScheduleSpec {
    /// The IANA time zone to read the schedule in.
    pub fn time_zone(&self) -> &str {
        self.time_zone.as_deref().unwrap_or(DEFAULT_TIME_ZONE)
    }

    /// The spec of a Backup this schedule creates.
    pub fn backup_spec(&self) -> BackupSpec {
        BackupSpec {
            cluster: self.cluster.clone(),
            type_: self.backup_type,
            repository: self.repository.clone(),
            deletion_policy: self.backup_deletion_policy,
        }
    }

    /// How late a run may start, if limited.
    pub fn starting_deadline(&self) -> Option<Duration> {
        self.starting_deadline_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
    }
}

/// The name of the Backup a schedule creates for the run due `at`: `<schedule>-<YYYYMMDDHHMM>`
/// in UTC. Deterministic, so a run retried after a crash finds its Backup instead of making a
/// second one.
pub fn scheduled_backup_name(schedule: &str, at: jiff::Timestamp) -> String {
    format!("{schedule}-{}", at.strftime("%Y%m%d%H%M"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::tests::cel_errors;

    const MINIMAL: &str = "apiVersion: tusk.dev/v1alpha1
kind: BackupSchedule
metadata: {name: nightly, namespace: db}
spec:
  cluster: {name: db}
  schedule: \"0 3 * * *\"
";

    fn schedule(yaml: &str) -> BackupSchedule {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn minimal_schedule_gets_cronjob_like_defaults() {
        let schedule = schedule(MINIMAL);
        let spec = &schedule.spec;
        assert_eq!(spec.time_zone(), "UTC");
        assert_eq!(spec.backup_type, BackupType::Full);
        assert_eq!(spec.repository, "repo1");
        assert!(!spec.suspend && !spec.immediate);
        assert_eq!(spec.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(spec.starting_deadline(), None);
        assert_eq!(spec.successful_backups_history_limit, 3);
        assert_eq!(spec.failed_backups_history_limit, 1);
        assert_eq!(spec.backup_deletion_policy, BackupDeletionPolicy::Retain);
        let backup = spec.backup_spec();
        assert_eq!(backup.cluster.name, "db");
        assert_eq!(backup.type_, BackupType::Full);
    }

    #[test]
    fn backup_names_carry_the_scheduled_minute_in_utc() {
        let at: jiff::Timestamp = "2026-11-22T03:00:59Z".parse().unwrap();
        assert_eq!(scheduled_backup_name("nightly", at), "nightly-202611220300");
        let longest = "n".repeat(MAX_SCHEDULE_NAME_LENGTH);
        assert_eq!(scheduled_backup_name(&longest, at).len(), 63);
    }

    fn cron() -> regex::Regex {
        regex::Regex::new(&cron_pattern()).unwrap()
    }

    #[test]
    fn cron_pattern_accepts_valid_expressions() {
        let cron = cron();
        for good in [
            "* * * * *",
            "0 3 * * *",
            "0 0 29 2 *",
            "*/15 9-17 * * MON-FRI",
            "@daily",
            "@hourly",
            "@annually",
            "@midnight",
            "59 23 31 12 7",
            "00 05 01 01 0",
            "0 0 1 jan,jul *",
            "30 2 * * sun,Sat",
            "0-30/5 * * * *",
            "0 */2 * * *",
            "5,10,15 1,2 1-7 1-6/2 1-5",
            "0  3 * * *",
        ] {
            assert!(cron.is_match(good), "{good:?} should be accepted");
        }
    }

    #[test]
    fn cron_pattern_refuses_invalid_expressions() {
        let cron = cron();
        for bad in [
            "",
            "hello",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "0 24 * * *",
            "0 0 0 * *",
            "0 0 32 * *",
            "0 0 * 0 *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "*/0 * * * *",
            "5/15 * * * *",
            "0 3 * * * ",
            " 0 3 * * *",
            "0 3 * * MON;reboot",
            "0 3 * * MONDAY",
            "0 3 * JANUARY *",
            "0 3 ? * *",
            "0 3 L * *",
            "@every 1h",
            "@reboot",
            "0 3 * * 1-",
            "0 3 * * ,1",
            "-1 * * * *",
        ] {
            assert!(!cron.is_match(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cron_pattern_embeds_in_a_cel_string() {
        let pattern = cron_pattern();
        assert!(!pattern.contains('\\') && !pattern.contains('\''));
    }

    #[test]
    fn time_zone_pattern() {
        let tz = regex::Regex::new(TIME_ZONE_PATTERN).unwrap();
        for good in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ] {
            assert!(tz.is_match(good), "{good}");
        }
        for bad in [
            "",
            "/Berlin",
            "Europe/",
            "Europe Berlin",
            "../etc/passwd",
            "Europe//Berlin",
        ] {
            assert!(!tz.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn cel_runs_the_cron_and_time_zone_rules() {
        assert!(cel_errors::<BackupSchedule>(MINIMAL, None).is_empty());
        let bad = MINIMAL.replace("0 3 * * *", "0 24 * * *");
        assert!(cel_errors::<BackupSchedule>(&bad, None)[0].contains("five fields"));
        let weekdays = MINIMAL.replace("0 3 * * *", "*/15 9-17 * * mon-fri");
        assert!(cel_errors::<BackupSchedule>(&weekdays, None).is_empty());
        let local = format!("{MINIMAL}  timeZone: Local\n");
        assert!(cel_errors::<BackupSchedule>(&local, None)[0].contains("IANA"));
        let berlin = format!("{MINIMAL}  timeZone: Europe/Berlin\n");
        assert!(cel_errors::<BackupSchedule>(&berlin, None).is_empty());
    }

    #[test]
    fn cel_refuses_expiring_every_backup() {
        let yaml = format!(
            "{MINIMAL}  backupDeletionPolicy: Expire\n  successfulBackupsHistoryLimit: 0\n"
        );
        assert!(cel_errors::<BackupSchedule>(&yaml, None)[0].contains("keep at least 1"));
        let yaml = format!("{MINIMAL}  backupDeletionPolicy: Expire\n");
        assert!(cel_errors::<BackupSchedule>(&yaml, None).is_empty());
        let long = MINIMAL.replace("name: nightly", &format!("name: {}", "n".repeat(51)));
        assert!(cel_errors::<BackupSchedule>(&long, None)[0].contains("50 characters"));
    }

    #[test]
    fn documented_example_is_valid() {
        let example = include_str!("../../../docs/examples/backupschedule.yaml");
        let object: BackupSchedule = serde_yaml_ng::from_str(example).unwrap();
        assert!(object.metadata.namespace.is_some());
        let errors = cel_errors::<BackupSchedule>(example, None);
        assert!(errors.is_empty(), "{errors:?}");
    }
}

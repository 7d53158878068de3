//! The pure step: from a schedule, its Backups and the time, what to create, skip and prune.
//!
//! ```text
//!   baseline = status.lastScheduleTime, else the schedule's creation
//!   due      = the last cron time ≤ now            (after downtime: only the most recent)
//!   due > baseline?
//!     ├─ later than startingDeadlineSeconds ─► missed, not taken
//!     ├─ a Backup of this schedule was running at `due` ─► skipped (no stacking)
//!     └─ otherwise ─► create <schedule>-<YYYYMMDDHHMM of due>
//!   immediate and nothing created yet ─► create one now
//!   prune: Completed beyond successfulBackupsHistoryLimit, Failed beyond
//!          failedBackupsHistoryLimit, oldest first; unfinished Backups never
//! ```
//!
//! Whether a run was skipped is decided from the Backups themselves (one was created before
//! the run and had not finished at its time), so it needs no memory of its own: a later pass,
//! after that Backup finished, reaches the same verdict and does not take the run late.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::Backup;
use tusk_api::condition::{DesiredCondition, find_condition, set_condition, types};
use tusk_api::schedule::{
    BackupScheduleSpec, BackupScheduleStatus, reasons, scheduled_backup_name,
};

use crate::cron::CronSchedule;

/// Most names kept in `status.active` (the schema's limit).
pub const MAX_ACTIVE: usize = 16;

/// What the planner needs to know about one Backup the schedule owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedBackup {
    pub name: String,
    pub created: Timestamp,
    /// When it finished and whether it succeeded; `None` while Pending or Running.
    pub finished: Option<Finished>,
    /// Already being deleted (pruned earlier, waiting for its finalizer): never pruned again.
    pub deleting: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub succeeded: bool,
    pub at: Timestamp,
}

impl OwnedBackup {
    /// The planner's view of `backup`.
    pub fn from_backup(backup: &Backup) -> Self {
        let created = backup
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let finished = backup.is_finished().then(|| {
            let status = backup.status.as_ref();
            let at = status
                .and_then(|s| s.completed_at.as_ref())
                .map(|t| t.0)
                .or_else(|| {
                    status
                        .and_then(|s| find_condition(&s.conditions, types::SUCCEEDED))
                        .map(|c| c.last_transition_time.0)
                })
                .unwrap_or(created);
            Finished {
                succeeded: backup.has_succeeded(),
                at,
            }
        });
        Self {
            name: backup.metadata.name.clone().unwrap_or_default(),
            created,
            finished,
            deleting: backup.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Whether this Backup was under way at `at`.
    fn was_running_at(&self, at: Timestamp) -> bool {
        self.created <= at && self.finished.is_none_or(|f| f.at > at)
    }
}

/// One Backup to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    /// The time it was due (the minute, for an immediate run).
    pub scheduled: Timestamp,
    /// The immediate first run (`spec.immediate`), not a cron time.
    pub immediate: bool,
}

/// What the schedule does at `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub create: Option<Run>,
    /// A run that came due while a Backup was running, and that Backup.
    pub skipped: Option<(Timestamp, String)>,
    /// A run too late to take (startingDeadlineSeconds).
    pub missed: Option<Timestamp>,
    /// Backups to delete, oldest first.
    pub prune: Vec<String>,
    pub next: Option<Timestamp>,
    pub status: BackupScheduleStatus,
}

/// What the planner reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub schedule_name: &'a str,
    pub spec: &'a BackupScheduleSpec,
    pub generation: Option<i64>,
    /// When the schedule object was created: runs before it are not owed.
    pub created: Timestamp,
    pub previous: &'a BackupScheduleStatus,
    pub cluster_exists: bool,
    pub backups: &'a [OwnedBackup],
    pub now: Timestamp,
}

/// Decides what to do now.
pub fn plan(cron: &CronSchedule, input: Input<'_>) -> Decision {
    let Input {
        schedule_name,
        spec,
        now,
        backups,
        ..
    } = input;
    let mut status = input.previous.clone();
    status.observed_generation = input.generation;

    let baseline = status
        .last_schedule_time
        .as_ref()
        .map_or(input.created, |t| t.0);
    let mut create = None;
    let mut skipped = None;
    let mut missed = None;
    if input.cluster_exists && !spec.suspend {
        let nothing_created = status.last_backup.is_none() && backups.is_empty();
        if spec.immediate && nothing_created {
            let scheduled = minute_of(now);
            create = Some(Run {
                name: scheduled_backup_name(schedule_name, scheduled),
                scheduled,
                immediate: true,
            });
        } else if let Some(due) = cron.last_at_or_before(now).filter(|due| *due > baseline) {
            let name = scheduled_backup_name(schedule_name, due);
            let late = now.duration_since(due);
            let too_late = spec
                .starting_deadline()
                .and_then(|d| SignedDuration::try_from(d).ok())
                .is_some_and(|deadline| late > deadline);
            if backups.iter().any(|b| b.name == name) {
                // Created by a pass whose status write was lost: that run, not a running one.
                create = Some(Run {
                    name,
                    scheduled: due,
                    immediate: false,
                });
            } else if too_late {
                missed = Some(due);
            } else if let Some(running) = backups.iter().find(|b| b.was_running_at(due)) {
                skipped = Some((due, running.name.clone()));
            } else {
                create = Some(Run {
                    name,
                    scheduled: due,
                    immediate: false,
                });
            }
        }
    }

    let mut active: Vec<String> = backups
        .iter()
        .filter(|b| b.finished.is_none())
        .map(|b| b.name.clone())
        .collect();
    if let Some(run) = &create {
        status.last_schedule_time = Some(Time(run.scheduled));
        status.last_backup = Some(run.name.clone());
        active.push(run.name.clone());
    }
    active.sort();
    active.dedup();
    active.truncate(MAX_ACTIVE);
    status.active = active;

    let newest_success = backups
        .iter()
        .filter_map(|b| b.finished.filter(|f| f.succeeded).map(|f| f.at))
        .max();
    let previous_success = status.last_successful_time.as_ref().map(|t| t.0);
    status.last_successful_time = newest_success.max(previous_success).map(Time);

    let next = (!spec.suspend).then(|| cron.next_after(now)).flatten();
    status.next_schedule_time = next.map(Time);

    let zone = spec.time_zone();
    let when = |t: Option<Timestamp>| {
        t.map_or_else(
            || "never".to_owned(),
            |t| {
                format!(
                    "{} ({})",
                    t.to_zoned(cron.time_zone().clone())
                        .strftime("%Y-%m-%d %H:%M %Z"),
                    zone
                )
            },
        )
    };
    let ready = if !input.cluster_exists {
        DesiredCondition::ready(
            false,
            reasons::CLUSTER_NOT_FOUND,
            format!(
                "Cluster {:?} does not exist in this namespace: create it, or fix spec.cluster.name; no Backups are created until it exists",
                spec.cluster.name
            ),
        )
    } else if spec.suspend {
        DesiredCondition::ready(
            true,
            reasons::SUSPENDED,
            "spec.suspend is true: no Backups are created (running ones finish)",
        )
    } else if let Some((due, running)) = &skipped {
        DesiredCondition::ready(
            true,
            reasons::SKIPPED_WHILE_RUNNING,
            format!(
                "the run due {} was skipped because Backup {running} was still running; next run {}",
                when(Some(*due)),
                when(next)
            ),
        )
    } else if let Some(due) = missed {
        DesiredCondition::ready(
            true,
            reasons::SCHEDULED,
            format!(
                "the run due {} was missed by more than startingDeadlineSeconds (was the operator down?) and not taken; next run {}",
                when(Some(due)),
                when(next)
            ),
        )
    } else {
        DesiredCondition::ready(true, reasons::SCHEDULED, format!("next run {}", when(next)))
    };
    set_condition(&mut status.conditions, ready, input.generation, Time(now));

    let protected: Vec<&str> = create.iter().map(|r| r.name.as_str()).collect();
    let prune = select_pruned(
        backups,
        spec.successful_backups_history_limit,
        spec.failed_backups_history_limit,
        &protected,
    );
    Decision {
        create,
        skipped,
        missed,
        prune,
        next,
        status,
    }
}

/// The finished Backups beyond the history limits, oldest first: the newest
/// `successful_limit` Completed and `failed_limit` Failed ones are kept; unfinished Backups and
/// those in `protected` are never chosen.
pub fn select_pruned(
    backups: &[OwnedBackup],
    successful_limit: i32,
    failed_limit: i32,
    protected: &[&str],
) -> Vec<String> {
    let mut pruned = Vec::new();
    for (succeeded, limit) in [(true, successful_limit), (false, failed_limit)] {
        let mut finished: Vec<(Timestamp, &str)> = backups
            .iter()
            .filter(|b| !b.deleting && !protected.contains(&b.name.as_str()))
            .filter_map(|b| {
                b.finished
                    .filter(|f| f.succeeded == succeeded)
                    .map(|f| (f.at, b.name.as_str()))
            })
            .collect();
        // newest first; the name (which carries the scheduled minute) breaks ties
        finished.sort_by(|a, b| b.cmp(a));
        let keep = usize::try_from(limit).unwrap_or(0);
        pruned.extend(
            finished
                .into_iter()
                .skip(keep)
                .map(|(at, name)| (at, name.to_owned())),
        );
    }
    pruned.sort();
    pruned.into_iter().map(|(_, name)| name).collect()
}

/// `at` cut to its minute.
pub fn minute_of(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second() - at.as_second().rem_euclid(60)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn spec(extra: &str) -> BackupScheduleSpec {
        serde_yaml_ng::from_str(&format!(
            "cluster: {{name: db}}\nschedule: \"0 3 * * *\"\n{extra}"
        ))
        .unwrap()
    }

    fn backup(name: &str, created: &str, finished: Option<(bool, &str)>) -> OwnedBackup {
        OwnedBackup {
            name: name.into(),
            created: ts(created),
            finished: finished.map(|(succeeded, at)| Finished {
                succeeded,
                at: ts(at),
            }),
            deleting: false,
        }
    }

    struct Case {
        spec: BackupScheduleSpec,
        previous: BackupScheduleStatus,
        backups: Vec<OwnedBackup>,
        cluster_exists: bool,
    }

    impl Case {
        fn new(extra: &str) -> Self {
            Self {
                spec: spec(extra),
                previous: BackupScheduleStatus::default(),
                backups: Vec::new(),
                cluster_exists: true,
            }
        }

        fn last_scheduled(mut self, at: &str) -> Self {
            self.previous.last_schedule_time = Some(Time(ts(at)));
            self.previous.last_backup = Some("nightly-x".into());
            self
        }

        fn at(&self, now: &str) -> Decision {
            let cron = CronSchedule::parse(&self.spec.schedule, self.spec.time_zone()).unwrap();
            plan(
                &cron,
                Input {
                    schedule_name: "nightly",
                    spec: &self.spec,
                    generation: Some(1),
                    created: ts("2026-11-01T00:00:00Z"),
                    previous: &self.previous,
                    cluster_exists: self.cluster_exists,
                    backups: &self.backups,
                    now: ts(now),
                },
            )
        }
    }

    #[test]
    fn nothing_is_due_before_the_first_scheduled_time() {
        let decision = Case::new("").at("2026-11-01T02:00:00Z");
        assert_eq!(decision.create, None);
        assert_eq!(decision.next, Some(ts("2026-11-01T03:00:00Z")));
        let ready = &decision.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Scheduled")
        );
        assert!(
            ready.message.contains("2026-11-01 03:00 UTC"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn a_due_run_creates_a_backup_named_for_its_minute() {
        let decision = Case::new("").at("2026-11-01T03:00:07Z");
        let run = decision.create.unwrap();
        assert_eq!(run.name, "nightly-202611010300");
        assert_eq!(run.scheduled, ts("2026-11-01T03:00:00Z"));
        assert_eq!(
            decision.status.last_backup.as_deref(),
            Some("nightly-202611010300")
        );
        assert_eq!(decision.status.active, vec!["nightly-202611010300"]);
        assert_eq!(decision.next, Some(ts("2026-11-02T03:00:00Z")));
    }

    #[test]
    fn a_run_already_taken_is_not_taken_again() {
        let decision = Case::new("")
            .last_scheduled("2026-11-01T03:00:00Z")
            .at("2026-11-01T09:00:00Z");
        assert_eq!(decision.create, None);
    }

    #[test]
    fn after_downtime_exactly_one_catch_up_run_for_the_latest_missed_time() {
        // last run on the 1st, operator down until the 5th at noon: runs of the 2nd..5th missed
        let decision = Case::new("")
            .last_scheduled("2026-11-01T03:00:00Z")
            .at("2026-11-05T12:00:00Z");
        let run = decision.create.unwrap();
        assert_eq!(run.scheduled, ts("2026-11-05T03:00:00Z"));
        assert_eq!(decision.next, Some(ts("2026-11-06T03:00:00Z")));
    }

    #[test]
    fn catch_up_respects_the_starting_deadline() {
        let case =
            Case::new("startingDeadlineSeconds: 3600\n").last_scheduled("2026-11-01T03:00:00Z");
        let late = case.at("2026-11-05T12:00:00Z");
        assert_eq!(late.create, None);
        assert_eq!(late.missed, Some(ts("2026-11-05T03:00:00Z")));
        assert!(late.status.conditions[0].message.contains("missed"));
        let in_time = case.at("2026-11-05T03:59:00Z");
        assert_eq!(
            in_time.create.unwrap().scheduled,
            ts("2026-11-05T03:00:00Z")
        );
    }

    #[test]
    fn a_run_due_while_a_backup_runs_is_skipped_not_stacked_and_not_taken_late() {
        let mut case = Case::new("").last_scheduled("2026-11-01T03:00:00Z");
        case.backups = vec![backup("nightly-202611010300", "2026-11-01T03:00:01Z", None)];
        let decision = case.at("2026-11-02T03:00:05Z");
        assert_eq!(decision.create, None);
        assert_eq!(
            decision.skipped,
            Some((
                ts("2026-11-02T03:00:00Z"),
                "nightly-202611010300".to_owned()
            ))
        );
        assert_eq!(decision.status.conditions[0].reason, "SkippedWhileRunning");
        assert_eq!(decision.status.active, vec!["nightly-202611010300"]);
        // it finishes at 03:30: the skipped run stays skipped
        case.backups[0].finished = Some(Finished {
            succeeded: true,
            at: ts("2026-11-02T03:30:00Z"),
        });
        let later = case.at("2026-11-02T03:31:00Z");
        assert_eq!(later.create, None);
        assert!(later.skipped.is_some());
        assert!(later.status.active.is_empty());
        assert_eq!(
            later.status.last_successful_time,
            Some(Time(ts("2026-11-02T03:30:00Z")))
        );
        // and the next run goes ahead
        let next_day = case.at("2026-11-03T03:00:00Z");
        assert_eq!(next_day.create.unwrap().name, "nightly-202611030300");
    }

    #[test]
    fn immediate_takes_one_backup_now_and_only_once() {
        let case = Case::new("immediate: true\n");
        let first = case.at("2026-11-01T10:42:31Z");
        let run = first.create.unwrap();
        assert!(run.immediate);
        assert_eq!(run.name, "nightly-202611011042");
        assert_eq!(
            first.status.last_schedule_time,
            Some(Time(ts("2026-11-01T10:42:00Z")))
        );
        let mut after = Case::new("immediate: true\n");
        after.previous = first.status.clone();
        after.backups = vec![backup(&run.name, "2026-11-01T10:42:31Z", None)];
        assert_eq!(after.at("2026-11-01T10:45:00Z").create, None);
    }

    #[test]
    fn suspend_creates_nothing_and_has_no_next_time() {
        let decision = Case::new("suspend: true\n").at("2026-11-01T03:00:00Z");
        assert_eq!(decision.create, None);
        assert_eq!(decision.next, None);
        assert_eq!(decision.status.next_schedule_time, None);
        assert_eq!(decision.status.conditions[0].reason, "Suspended");
    }

    #[test]
    fn missing_cluster_creates_nothing_and_says_so() {
        let mut case = Case::new("");
        case.cluster_exists = false;
        let decision = case.at("2026-11-01T03:00:00Z");
        assert_eq!(decision.create, None);
        let ready = &decision.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ClusterNotFound")
        );
    }

    #[test]
    fn history_limits_prune_the_oldest_finished_backups() {
        let backups = vec![
            backup(
                "s1",
                "2026-11-01T03:00:00Z",
                Some((true, "2026-11-01T03:10:00Z")),
            ),
            backup(
                "s2",
                "2026-11-02T03:00:00Z",
                Some((true, "2026-11-02T03:10:00Z")),
            ),
            backup(
                "f1",
                "2026-11-03T03:00:00Z",
                Some((false, "2026-11-03T03:10:00Z")),
            ),
            backup(
                "s3",
                "2026-11-04T03:00:00Z",
                Some((true, "2026-11-04T03:10:00Z")),
            ),
            backup(
                "f2",
                "2026-11-05T03:00:00Z",
                Some((false, "2026-11-05T03:10:00Z")),
            ),
            backup(
                "s4",
                "2026-11-06T03:00:00Z",
                Some((true, "2026-11-06T03:10:00Z")),
            ),
            backup("r1", "2026-11-07T03:00:00Z", None),
        ];
        assert_eq!(select_pruned(&backups, 3, 1, &[]), vec!["s1", "f1"]);
        assert_eq!(
            select_pruned(&backups, 0, 0, &[]),
            vec!["s1", "s2", "f1", "s3", "f2", "s4"]
        );
        assert_eq!(select_pruned(&backups, 100, 100, &[]), Vec::<String>::new());
        assert_eq!(
            select_pruned(&backups, 0, 5, &["s1"]),
            vec!["s2", "s3", "s4"]
        );
        let mut deleting = backups.clone();
        deleting[0].deleting = true;
        assert_eq!(
            select_pruned(&deleting, 3, 1, &[]),
            vec!["f1"],
            "s1 is on its way out"
        );
    }

    #[test]
    fn minutes_are_cut_not_rounded() {
        assert_eq!(
            minute_of(ts("2026-11-01T10:42:59Z")),
            ts("2026-11-01T10:42:00Z")
        );
    }
}

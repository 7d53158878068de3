//! Pure: what the Job and its pod say → the Backup's status.
//!
//! ```text
//!  no Job yet, Cluster missing/not Ready ─► Pending    Progressing=True  ClusterNotFound/ClusterNotReady
//!  no Job, spec unusable (repository)    ─► Pending    Progressing=False RepositoryNotFound/…
//!  Job created, no pod running           ─► Pending    Progressing=True  JobCreated
//!  Job active                            ─► Running    Progressing=True  Running
//!  Job Complete                          ─► Completed  Succeeded=True    Completed   (+ label, sizes, WAL, LSN)
//!  Job Failed                            ─► Failed     Succeeded=False   Failed      (+ error)
//!  Job gone after it was created         ─► Failed     Succeeded=False   JobDeleted
//! ```
//!
//! The report comes from the container's termination message (see [`crate::job::report_script`]):
//! no `pods/exec`, no log streaming.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::backup::{BackupPhase, BackupStatus, BackupType, bounded_error, reasons};
use tusk_api::condition::{DesiredCondition, set_condition, types};
use tusk_pgbackrest::{BackupSetInfo, parse_info};

use crate::job::CONTAINER;

/// What the controller concluded about a Backup this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No Job yet: waiting (for the Cluster, or for a spec fix when `progressing` is false).
    Waiting {
        reason: &'static str,
        message: String,
        progressing: bool,
    },
    /// The Job exists; its pod has not started.
    JobCreated { job: String },
    /// pgBackRest is running.
    Running {
        job: String,
        started: Option<Timestamp>,
    },
    /// The Job completed.
    Completed {
        job: String,
        started: Option<Timestamp>,
        finished: Timestamp,
        report: Box<Report>,
    },
    /// The Job failed, or disappeared.
    Failed {
        job: Option<String>,
        reason: &'static str,
        error: String,
        started: Option<Timestamp>,
        finished: Timestamp,
    },
}

impl Verdict {
    pub fn phase(&self) -> BackupPhase {
        match self {
            Verdict::Waiting { .. } | Verdict::JobCreated { .. } => BackupPhase::Pending,
            Verdict::Running { .. } => BackupPhase::Running,
            Verdict::Completed { .. } => BackupPhase::Completed,
            Verdict::Failed { .. } => BackupPhase::Failed,
        }
    }
}

/// What the backup container reported on success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub label: Option<String>,
    pub set: Option<BackupSetInfo>,
    /// Why details are missing, when they are.
    pub note: Option<String>,
}

/// Reads the success report: `label=<label>` and, on the next line, the info JSON.
pub fn parse_report(message: &str, repo_index: u32) -> Report {
    let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
    let label = first
        .trim()
        .strip_prefix("label=")
        .map(str::trim)
        .filter(|label| !label.is_empty())
        .map(str::to_owned);
    let Some(label) = label else {
        return Report {
            label: None,
            set: None,
            note: Some("the backup container reported no backup set label".to_owned()),
        };
    };
    if rest.trim().is_empty() {
        return Report {
            label: Some(label),
            set: None,
            note: Some("pgbackrest info reported nothing about the set".to_owned()),
        };
    }
    match parse_info(rest.trim()) {
        Ok(sets) => {
            let set = sets
                .into_iter()
                .find(|set| set.label == label && set.repo == repo_index);
            let note = set
                .is_none()
                .then(|| format!("pgbackrest info does not list set {label}"));
            Report {
                label: Some(label),
                set,
                note,
            }
        }
        Err(error) => Report {
            label: Some(label),
            set: None,
            note: Some(format!("cannot read pgbackrest info: {error}")),
        },
    }
}

/// The Job's state, with the pods it ran.
pub fn job_verdict(job: &Job, pods: &[Pod], repo_index: u32, now: Timestamp) -> Verdict {
    let name = job.metadata.name.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let started = status.start_time.as_ref().map(|t| t.0);
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let message = termination_message(pods);
    if let Some(complete) =
        condition("Complete").or_else(|| (status.succeeded.unwrap_or(0) > 0).then(Default::default))
    {
        let finished = status
            .completion_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| complete.last_transition_time.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let report = Box::new(match message {
            Some(message) => parse_report(&message, repo_index),
            None => Report {
                label: None,
                set: None,
                note: Some("the backup pod is gone, so its report could not be read".to_owned()),
            },
        });
        return Verdict::Completed {
            job: name,
            started,
            finished,
            report,
        };
    }
    if let Some(failed) =
        condition("Failed").or_else(|| (status.failed.unwrap_or(0) > 0).then(Default::default))
    {
        let finished = failed
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let job_message = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        let error = match (message, job_message.is_empty()) {
            (Some(output), true) => output,
            (Some(output), false) => format!("{job_message}\n{output}"),
            (None, false) => job_message,
            (None, true) => "the backup Job failed and left no message".to_owned(),
        };
        return Verdict::Failed {
            job: Some(name),
            reason: reasons::FAILED,
            error: bounded_error(&error),
            started,
            finished,
        };
    }
    if status.active.unwrap_or(0) > 0 && (status.ready.unwrap_or(0) > 0 || pod_running(pods)) {
        return Verdict::Running { job: name, started };
    }
    Verdict::JobCreated { job: name }
}

fn pod_running(pods: &[Pod]) -> bool {
    pods.iter()
        .any(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
}

/// The pgBackRest container's termination message, from the newest pod that has one.
fn termination_message(pods: &[Pod]) -> Option<String> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|pod| std::cmp::Reverse(pod.metadata.creation_timestamp.clone()));
    pods.into_iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .clone()
            .filter(|m| !m.trim().is_empty())
    })
}

/// `previous` moved to `verdict`: phase, conditions (times only where they change), the
/// report's fields.
pub fn next_status(
    previous: Option<&BackupStatus>,
    verdict: &Verdict,
    repository: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> BackupStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.phase = Some(verdict.phase());
    let mut progressing = |value: bool, reason: &'static str, message: String| {
        set_condition(
            &mut status.conditions,
            DesiredCondition::new(types::PROGRESSING, value, reason, message),
            generation,
            Time(now),
        );
    };
    match verdict {
        Verdict::Waiting {
            reason,
            message,
            progressing: value,
        } => progressing(*value, reason, message.clone()),
        Verdict::JobCreated { job } => progressing(
            true,
            reasons::JOB_CREATED,
            format!("Job {job} was created and waits for its pod to start"),
        ),
        Verdict::Running { job, .. } => progressing(
            true,
            reasons::RUNNING,
            format!("pgBackRest is running in Job {job}"),
        ),
        Verdict::Completed { .. } => {
            progressing(false, reasons::COMPLETED, "the backup finished".to_owned())
        }
        Verdict::Failed { reason, .. } => {
            progressing(false, reason, "the backup finished".to_owned())
        }
    }
    match verdict {
        Verdict::Waiting { .. } => {}
        Verdict::JobCreated { job } => {
            status.job_name = Some(job.clone());
            status.repository = Some(repository.to_owned());
        }
        Verdict::Running { job, started } => {
            status.job_name = Some(job.clone());
            status.repository = Some(repository.to_owned());
            status.started_at = started.map(Time).or(status.started_at.take());
        }
        Verdict::Completed {
            job,
            started,
            finished,
            report,
        } => {
            status.job_name = Some(job.clone());
            status.repository = Some(repository.to_owned());
            status.started_at = started.map(Time).or(status.started_at.take());
            status.completed_at = Some(Time(*finished));
            status.backup_label = report.label.clone();
            if let Some(set) = &report.set {
                status.type_ = Some(set.kind);
                status.size = Some(set.backup_size());
                status.wal = set.wal.clone();
                status.lsn = set.lsn.clone();
                status.timeline = set.timeline();
            }
            let message = match (&report.label, &report.note) {
                (Some(label), None) => format!("backup set {label} is in repository {repository}"),
                (Some(label), Some(note)) => {
                    format!("backup set {label} is in repository {repository} ({note})")
                }
                (None, note) => format!(
                    "the backup Job completed, but its report was unreadable: {}",
                    note.as_deref().unwrap_or("no report")
                ),
            };
            set_condition(
                &mut status.conditions,
                DesiredCondition::new(types::SUCCEEDED, true, reasons::COMPLETED, message),
                generation,
                Time(now),
            );
        }
        Verdict::Failed {
            job,
            reason,
            error,
            started,
            finished,
        } => {
            if let Some(job) = job {
                status.job_name = Some(job.clone());
            }
            status.repository = Some(repository.to_owned());
            status.started_at = started.map(Time).or(status.started_at.take());
            status.completed_at = Some(Time(*finished));
            status.error = Some(bounded_error(error));
            let message = if *reason == reasons::JOB_DELETED {
                error.clone()
            } else {
                "pgBackRest failed; status.error has the end of its output. Fix the cause and create a new Backup to try again".to_owned()
            };
            set_condition(
                &mut status.conditions,
                DesiredCondition::new(types::SUCCEEDED, false, reason, message),
                generation,
                Time(now),
            );
        }
    }
    status
}

/// The type actually taken, for messages (`status.type`, else what was asked).
pub fn taken_type(status: &BackupStatus, asked: BackupType) -> BackupType {
    status.type_.unwrap_or(asked)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    pub(crate) const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"17-1","max":"000000010000000000000004","min":"000000010000000000000001"}],"backup":[{"annotation":null,"archive":{"start":"000000010000000000000003","stop":"000000010000000000000004"},"backrest":{"format":5,"version":"2.54.0"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":31400000,"repository":{"delta":3940000,"delta-map":null,"size":3940000,"size-map":null},"size":31400000},"label":"20261122-101500F","link":null,"lsn":{"start":"0/3000028","stop":"0/4000050"},"prior":null,"reference":[],"tablespace":null,"timestamp":{"start":1795342500,"stop":1795342510},"type":"full"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7440000000000000000,"version":"17"}],"name":"db","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false},"restore":{"held":false}},"message":"ok"}}]"#;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn job(status: JobStatus) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some("b-backup".into());
        job.status = Some(status);
        job
    }

    fn pod(message: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Succeeded".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
        JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(ts("2026-11-22T10:20:00Z"))),
            ..Default::default()
        }
    }

    #[test]
    fn report_carries_label_sizes_wal_lsn_and_timeline() {
        let report = parse_report(&format!("label=20261122-101500F\n{INFO}"), 1);
        assert_eq!(report.note, None);
        let set = report.set.unwrap();
        assert_eq!(set.label, "20261122-101500F");
        assert_eq!(set.kind, BackupType::Full);
        assert_eq!((set.size, set.repository_size), (31_400_000, 3_940_000));
        assert_eq!(set.timeline(), Some(1));
    }

    #[test]
    fn report_without_info_keeps_the_label_and_says_why() {
        let report = parse_report("label=20261122-101500F", 1);
        assert_eq!(report.label.as_deref(), Some("20261122-101500F"));
        assert!(report.set.is_none() && report.note.is_some());
        let garbage = parse_report("label=L\n{not json", 1);
        assert!(garbage.note.unwrap().contains("cannot read"));
        assert_eq!(parse_report("", 1).label, None);
    }

    #[test]
    fn completed_job_fills_every_status_field() {
        let job = job(JobStatus {
            start_time: Some(Time(ts("2026-11-22T10:15:00Z"))),
            completion_time: Some(Time(ts("2026-11-22T10:16:00Z"))),
            succeeded: Some(1),
            conditions: Some(vec![condition("Complete", "CompletionsReached", "")]),
            ..Default::default()
        });
        let verdict = job_verdict(
            &job,
            &[pod(&format!("label=20261122-101500F\n{INFO}"))],
            1,
            ts("2026-11-22T11:00:00Z"),
        );
        let status = next_status(None, &verdict, "repo1", Some(1), ts("2026-11-22T11:00:00Z"));
        assert_eq!(status.phase, Some(BackupPhase::Completed));
        assert_eq!(status.backup_label.as_deref(), Some("20261122-101500F"));
        assert_eq!(status.type_, Some(BackupType::Full));
        assert_eq!(status.size.as_ref().unwrap().original, 31_400_000);
        assert_eq!(
            status.wal.as_ref().unwrap().start,
            "000000010000000000000003"
        );
        assert_eq!(status.lsn.as_ref().unwrap().stop, "0/4000050");
        assert_eq!(status.timeline, Some(1));
        assert_eq!(status.started_at, Some(Time(ts("2026-11-22T10:15:00Z"))));
        assert_eq!(status.completed_at, Some(Time(ts("2026-11-22T10:16:00Z"))));
        let succeeded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .unwrap();
        assert_eq!(
            (succeeded.status.as_str(), succeeded.reason.as_str()),
            ("True", "Completed")
        );
        let progressing = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(progressing.status, "False");
    }

    #[test]
    fn failed_job_reports_the_end_of_the_output() {
        let job = job(JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )]),
            ..Default::default()
        });
        let output = "P00  ERROR: [082]: WAL segment 000000010000000000000005 was not archived before the 60000ms timeout";
        let verdict = job_verdict(&job, &[pod(output)], 1, ts("2026-11-22T11:00:00Z"));
        let status = next_status(None, &verdict, "repo1", Some(1), ts("2026-11-22T11:00:00Z"));
        assert_eq!(status.phase, Some(BackupPhase::Failed));
        let error = status.error.unwrap();
        assert!(
            error.contains("BackoffLimitExceeded") && error.ends_with("timeout"),
            "{error}"
        );
        let succeeded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .unwrap();
        assert_eq!(
            (succeeded.status.as_str(), succeeded.reason.as_str()),
            ("False", "Failed")
        );
        assert!(succeeded.message.contains("create a new Backup"));
    }

    #[test]
    fn deadline_without_a_pod_message_uses_the_job_condition() {
        let job = job(JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )]),
            ..Default::default()
        });
        let Verdict::Failed { error, .. } = job_verdict(&job, &[], 1, ts("2026-11-22T11:00:00Z"))
        else {
            panic!("not failed");
        };
        assert_eq!(
            error,
            "DeadlineExceeded: Job was active longer than specified deadline"
        );
    }

    #[test]
    fn active_job_with_a_ready_pod_is_running_else_created() {
        let running = job(JobStatus {
            active: Some(1),
            ready: Some(1),
            start_time: Some(Time(ts("2026-11-22T10:15:00Z"))),
            ..Default::default()
        });
        let verdict = job_verdict(&running, &[], 1, ts("2026-11-22T10:16:00Z"));
        assert_eq!(verdict.phase(), BackupPhase::Running);
        let status = next_status(None, &verdict, "repo1", Some(1), ts("2026-11-22T10:16:00Z"));
        assert_eq!(status.started_at, Some(Time(ts("2026-11-22T10:15:00Z"))));
        let waiting = job(JobStatus {
            active: Some(1),
            ready: Some(0),
            ..Default::default()
        });
        assert_eq!(
            job_verdict(&waiting, &[], 1, ts("2026-11-22T10:16:00Z")),
            Verdict::JobCreated {
                job: "b-backup".into()
            }
        );
    }

    #[test]
    fn the_same_verdict_twice_changes_nothing() {
        let verdict = Verdict::Running {
            job: "b-backup".into(),
            started: Some(ts("2026-11-22T10:15:00Z")),
        };
        let first = next_status(None, &verdict, "repo1", Some(1), ts("2026-11-22T10:16:00Z"));
        let second = next_status(
            Some(&first),
            &verdict,
            "repo1",
            Some(1),
            ts("2026-11-22T10:17:00Z"),
        );
        assert_eq!(first, second);
    }
}

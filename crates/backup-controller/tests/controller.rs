//! The Backup controller against the in-memory Kubernetes API, with the Job's status driven by
//! the test: waiting on the Cluster, one Job with owner references, Running → Completed with
//! the report from the pod's termination message, Failed, the Job deleted mid-run, a second
//! pass that writes nothing, deletionPolicy Expire, and only API calls the chart grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tusk_api::backup::BackupPhase;
use tusk_api::condition::{DesiredCondition, find_condition, set_condition, types};
use tusk_api::{Backup, Cluster, ClusterStatus};
use tusk_backup_controller::{Error, State, reconcile};
use tusk_runtime::ControllerKind;
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_testkit::fake_api::ApiBuilder;

const NS: &str = "db";

const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"17-1","max":"000000010000000000000004","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000004"},"backrest":{"format":5,"version":"2.54.0"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":31400000,"repository":{"delta":3940000,"size":3940000},"size":31400000},"label":"20261122-101500F","link":null,"lsn":{"start":"0/3000028","stop":"0/4000050"},"prior":null,"reference":[],"tablespace":null,"timestamp":{"start":1795342500,"stop":1795342510},"type":"full"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7440000000000000000,"version":"17"}],"name":"db","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

fn cluster(ready: bool, primary: Option<&str>) -> Cluster {
    let mut cluster: Cluster = serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db, uid: cluster-uid, generation: 1}
spec:
  postgresVersion: 17
  storage: {size: 1Gi}
  backup:
    repositories:
    - name: repo1
      s3: {bucket: backups, endpoint: s3.eu-central-1.amazonaws.com, region: eu-central-1}
",
    )
    .unwrap();
    let mut status = ClusterStatus {
        current_primary: primary.map(str::to_owned),
        ..ClusterStatus::default()
    };
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(ready, if ready { "Ready" } else { "Provisioning" }, "test"),
        Some(1),
        Time(Timestamp::UNIX_EPOCH),
    );
    cluster.status = Some(status);
    cluster
}

fn backup(extra: &str) -> Backup {
    let mut backup: Backup = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {{name: nightly, namespace: db}}
spec:
  cluster: {{name: db}}
{extra}"
    ))
    .unwrap();
    backup.metadata.uid = Some("backup-uid".into());
    backup.metadata.generation = Some(1);
    backup
}

struct Harness {
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
    now: Arc<Mutex<Timestamp>>,
}

impl Harness {
    async fn new(cluster: Option<Cluster>, backup: Backup) -> Self {
        let (fake, recording) = ApiBuilder::new()
            .kind::<Backup>()
            .resource::<Cluster>()
            .objects(cluster)
            .build_recorded()
            .await
            .unwrap();
        Api::<Backup>::namespaced(fake.clone(), NS)
            .create(&PostParams::default(), &backup)
            .await
            .unwrap();
        let ctx = context(ControllerKind::Backup, &recording);
        let now = Arc::new(Mutex::new("2026-11-22T10:15:00Z".parse().unwrap()));
        let clock = now.clone();
        let state = State::new(ctx).with_clock(Arc::new(move || *clock.lock().unwrap()));
        Self {
            setup: fake,
            recording,
            state: Arc::new(state),
            now,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.setup.clone(), NS)
    }

    async fn backup(&self) -> Backup {
        self.api::<Backup>().get("nightly").await.unwrap()
    }

    async fn reconcile(&self) -> Result<Action, Error> {
        reconcile(Arc::new(self.backup().await), self.state.clone()).await
    }

    /// Reconciles the Backup as if `kubectl delete` had marked it (the in-memory API deletes
    /// at once, finalizers or not).
    async fn reconcile_deleted(&self) -> Result<Action, Error> {
        let mut backup = self.backup().await;
        backup.metadata.deletion_timestamp = Some(Time(*self.now.lock().unwrap()));
        reconcile(Arc::new(backup), self.state.clone()).await
    }

    async fn phase(&self) -> Option<BackupPhase> {
        self.backup().await.status.and_then(|s| s.phase)
    }

    async fn condition(&self, type_: &str) -> (String, String, String) {
        let backup = self.backup().await;
        let status = backup.status.unwrap();
        let c = find_condition(&status.conditions, type_)
            .unwrap_or_else(|| panic!("no {type_} condition: {:?}", status.conditions))
            .clone();
        (c.status, c.reason, c.message)
    }

    async fn jobs(&self) -> Vec<Job> {
        self.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn set_job_status(&self, name: &str, status: JobStatus) {
        let api = self.api::<Job>();
        let mut job = api.get(name).await.unwrap();
        job.status = Some(status);
        api.replace(name, &PostParams::default(), &job)
            .await
            .unwrap();
    }

    /// The pod the Job controller would have run, terminated with `message`.
    async fn finished_pod(&self, job: &str, message: &str) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{job}-abcde")),
                namespace: Some(NS.into()),
                labels: Some([("batch.kubernetes.io/job-name".to_owned(), job.to_owned())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "pgbackrest".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            message: Some(message.into()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    fn assert_rbac(&self) {
        assert_granted(tusk_backup_controller::rbac::RULES, &self.recording);
    }
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time("2026-11-22T10:20:00Z".parse().unwrap())),
        ..JobCondition::default()
    }
}

fn started() -> Option<Time> {
    Some(Time("2026-11-22T10:15:05Z".parse().unwrap()))
}

#[tokio::test]
async fn backup_waits_on_a_not_ready_cluster_and_a_repeat_writes_nothing() {
    let h = Harness::new(Some(cluster(false, None)), backup("")).await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotReady");
    assert!(!error.is_permanent());
    assert_eq!(h.phase().await, Some(BackupPhase::Pending));
    let (status, reason, message) = h.condition(types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ClusterNotReady")
    );
    assert!(message.contains("waits"), "{message}");
    assert!(
        h.jobs().await.is_empty(),
        "no Job before the Cluster is Ready"
    );
    h.recording.clear();
    assert!(h.reconcile().await.is_err());
    assert_eq!(
        h.recording.writes(),
        vec![],
        "the same wait again writes nothing"
    );
    h.assert_rbac();
}

#[tokio::test]
async fn backup_waits_while_the_cluster_has_no_stanza() {
    let mut db = cluster(true, Some("db-1"));
    let status = db.status.as_mut().unwrap();
    set_condition(
        &mut status.conditions,
        DesiredCondition::new(
            types::CONTINUOUS_ARCHIVING,
            false,
            "StanzaMissing",
            "the stanza Job has not succeeded",
        ),
        Some(1),
        Time(Timestamp::UNIX_EPOCH),
    );
    let h = Harness::new(Some(db), backup("")).await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "StanzaNotReady");
    assert!(!error.is_permanent());
    assert!(
        h.jobs().await.is_empty(),
        "no Job while the stanza is missing"
    );
    let (_, reason, message) = h.condition(types::PROGRESSING).await;
    assert_eq!(reason, "StanzaNotReady");
    assert!(message.contains("stanza"), "{message}");
    h.assert_rbac();
}

#[tokio::test]
async fn backup_of_a_missing_cluster_says_so() {
    let h = Harness::new(None, backup("")).await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotFound");
    let (_, reason, message) = h.condition(types::PROGRESSING).await;
    assert_eq!(reason, "ClusterNotFound");
    assert!(message.contains("\"db\""), "{message}");
    h.assert_rbac();
}

#[tokio::test]
async fn unknown_repository_waits_for_a_fix_with_a_clear_condition() {
    let h = Harness::new(
        Some(cluster(true, Some("db-1"))),
        backup("  repository: repo2\n"),
    )
    .await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "RepositoryNotFound");
    assert!(error.is_permanent());
    let (status, reason, message) = h.condition(types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RepositoryNotFound")
    );
    assert!(message.contains("it has: repo1"), "{message}");
    assert!(h.jobs().await.is_empty());
}

#[tokio::test]
async fn lifecycle_to_completed_with_the_report_in_status() {
    let h = Harness::new(Some(cluster(true, Some("db-2"))), backup("")).await;
    h.reconcile().await.unwrap();

    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.name_any(), "nightly-backup");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Backup", "backup-uid", Some(true))
    );
    let config = h.api::<ConfigMap>().get("nightly-backup").await.unwrap();
    assert_eq!(config.owner_references()[0].uid, "backup-uid");
    assert!(config.data.unwrap()["pgbackrest.conf"].contains("pg1-host=db-2-0.db-pods.db.svc"));
    assert_eq!(h.phase().await, Some(BackupPhase::Pending));
    assert_eq!(h.condition(types::PROGRESSING).await.1, "JobCreated");
    assert_eq!(
        h.backup().await.status.unwrap().job_name.as_deref(),
        Some("nightly-backup")
    );

    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(h.recording.writes(), vec![], "a second pass writes nothing");
    assert_eq!(h.jobs().await.len(), 1, "never two Jobs for one Backup");

    h.set_job_status(
        "nightly-backup",
        JobStatus {
            active: Some(1),
            ready: Some(1),
            start_time: started(),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.phase().await, Some(BackupPhase::Running));
    assert_eq!(h.backup().await.status.unwrap().started_at, started());
    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(
        h.recording.writes(),
        vec![],
        "a running Backup's second pass writes nothing"
    );

    h.finished_pod("nightly-backup", &format!("label=20261122-101500F\n{INFO}"))
        .await;
    h.set_job_status(
        "nightly-backup",
        JobStatus {
            succeeded: Some(1),
            start_time: started(),
            completion_time: Some(Time("2026-11-22T10:16:00Z".parse().unwrap())),
            conditions: Some(vec![condition("Complete", "CompletionsReached", "")]),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile().await.unwrap();
    let backup = h.backup().await;
    assert!(backup.has_succeeded());
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    assert_eq!(status.backup_label.as_deref(), Some("20261122-101500F"));
    assert_eq!(status.size.unwrap().repository, 3_940_000);
    assert_eq!(status.wal.unwrap().stop, "000000010000000000000004");
    assert_eq!(status.lsn.unwrap().start, "0/3000028");
    assert_eq!(status.timeline, Some(1));
    assert_eq!(status.repository.as_deref(), Some("repo1"));
    assert!(status.completed_at.is_some());
    assert_eq!(h.condition(types::PROGRESSING).await.0, "False");

    // Finished: no API call at all, and never a new Job, even when the old one is deleted.
    h.api::<Job>()
        .delete("nightly-backup", &DeleteParams::default())
        .await
        .unwrap();
    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(
        h.recording.calls(),
        vec![],
        "a finished Backup is left alone"
    );
    assert!(h.jobs().await.is_empty());
    h.assert_rbac();
}

#[tokio::test]
async fn failed_job_is_reported_once_and_not_retried() {
    let h = Harness::new(Some(cluster(true, Some("db-1"))), backup("")).await;
    h.reconcile().await.unwrap();
    h.finished_pod(
        "nightly-backup",
        "P00  ERROR: [082]: WAL segment 000000010000000000000005 was not archived before the 60000ms timeout",
    )
    .await;
    h.set_job_status(
        "nightly-backup",
        JobStatus {
            failed: Some(1),
            start_time: started(),
            conditions: Some(vec![condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )]),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile().await.unwrap();
    let backup = h.backup().await;
    assert!(backup.has_failed());
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert!(status.error.unwrap().contains("was not archived"));
    let (value, reason, message) = h.condition(types::SUCCEEDED).await;
    assert_eq!((value.as_str(), reason.as_str()), ("False", "Failed"));
    assert!(message.contains("create a new Backup"), "{message}");
    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(h.recording.calls(), vec![]);
    assert_eq!(
        h.jobs().await.len(),
        1,
        "the failed Job stays for inspection; no retry"
    );
    h.assert_rbac();
}

#[tokio::test]
async fn job_deleted_mid_run_fails_the_backup_instead_of_recreating_the_job() {
    let h = Harness::new(Some(cluster(true, Some("db-1"))), backup("")).await;
    h.reconcile().await.unwrap();
    h.set_job_status(
        "nightly-backup",
        JobStatus {
            active: Some(1),
            ready: Some(1),
            start_time: started(),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.phase().await, Some(BackupPhase::Running));

    h.api::<Job>()
        .delete("nightly-backup", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile().await.unwrap();
    assert!(h.jobs().await.is_empty(), "not silently recreated");
    assert_eq!(h.phase().await, Some(BackupPhase::Failed));
    let (value, reason, message) = h.condition(types::SUCCEEDED).await;
    assert_eq!((value.as_str(), reason.as_str()), ("False", "JobDeleted"));
    assert!(message.contains("deleted before it finished"), "{message}");
    assert_eq!(h.backup().await.status.unwrap().started_at, started());
    h.assert_rbac();
}

#[tokio::test]
async fn retain_policy_puts_no_finalizer() {
    let h = Harness::new(Some(cluster(true, Some("db-1"))), backup("")).await;
    h.reconcile().await.unwrap();
    assert!(h.backup().await.finalizers().is_empty());
}

#[tokio::test]
async fn expire_policy_expires_the_set_before_releasing_the_backup() {
    let h = Harness::new(
        Some(cluster(true, Some("db-1"))),
        backup("  deletionPolicy: Expire\n"),
    )
    .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.backup().await.finalizers(), ["tusk.dev/backup"]);
    h.finished_pod("nightly-backup", &format!("label=20261122-101500F\n{INFO}"))
        .await;
    h.set_job_status(
        "nightly-backup",
        JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![condition("Complete", "CompletionsReached", "")]),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile().await.unwrap();
    assert!(h.backup().await.has_succeeded());

    // Deleted: an expire Job for the set, and the finalizer stays until it succeeds.
    h.reconcile_deleted().await.unwrap();
    let expire = h.api::<Job>().get("nightly-expire").await.unwrap();
    let command = expire.spec.unwrap().template.spec.unwrap().containers[0]
        .command
        .clone()
        .unwrap();
    assert_eq!(
        command,
        [
            "pgbackrest",
            "--stanza=db",
            "--repo=1",
            "--set=20261122-101500F",
            "expire"
        ]
    );
    assert_eq!(h.backup().await.finalizers(), ["tusk.dev/backup"]);
    h.recording.clear();
    h.reconcile_deleted().await.unwrap();
    assert_eq!(
        h.recording.writes(),
        vec![],
        "waiting for the expire Job writes nothing"
    );

    h.set_job_status(
        "nightly-expire",
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition("Failed", "BackoffLimitExceeded", "")]),
            ..JobStatus::default()
        },
    )
    .await;
    h.finished_pod("nightly-expire", "ERROR: [075]: repository is busy")
        .await;
    h.reconcile_deleted().await.unwrap();
    let (_, reason, message) = h.condition(types::PROGRESSING).await;
    assert_eq!(reason, "ExpireFailed");
    assert!(
        message.contains("delete Job nightly-expire to try again"),
        "{message}"
    );
    assert_eq!(
        h.backup().await.finalizers(),
        ["tusk.dev/backup"],
        "kept until someone acts"
    );

    // Retried by deleting the failed expire Job; this time it succeeds.
    h.api::<Job>()
        .delete("nightly-expire", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile_deleted().await.unwrap();
    h.set_job_status(
        "nightly-expire",
        JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![condition("Complete", "CompletionsReached", "")]),
            ..JobStatus::default()
        },
    )
    .await;
    h.reconcile_deleted().await.unwrap();
    assert!(
        h.backup().await.finalizers().is_empty(),
        "released after the set was expired"
    );
    h.assert_rbac();
}

#[tokio::test]
async fn expire_policy_on_a_backup_that_never_completed_releases_at_once() {
    let h = Harness::new(
        Some(cluster(false, None)),
        backup("  deletionPolicy: Expire\n"),
    )
    .await;
    let _ = h.reconcile().await;
    assert_eq!(h.backup().await.finalizers(), ["tusk.dev/backup"]);
    h.reconcile_deleted().await.unwrap();
    assert!(h.backup().await.finalizers().is_empty());
    assert!(h.jobs().await.is_empty(), "nothing to expire");
    h.assert_rbac();
}

#[tokio::test]
async fn the_job_starts_when_the_cluster_becomes_ready_with_an_event() {
    let h = Harness::new(Some(cluster(false, None)), backup("")).await;
    assert!(h.reconcile().await.is_err());
    let clusters = h.api::<Cluster>();
    let mut ready = clusters.get("db").await.unwrap();
    ready.status = cluster(true, Some("db-3")).status;
    clusters
        .replace_status("db", &PostParams::default(), &ready)
        .await
        .unwrap();
    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(h.jobs().await.len(), 1);
    assert_eq!(h.condition(types::PROGRESSING).await.1, "JobCreated");
    let events: Vec<_> = h
        .recording
        .writes()
        .into_iter()
        .filter(|call| call.resource == "events")
        .collect();
    assert_eq!(events.len(), 1, "one JobCreated event: {events:?}");
    h.assert_rbac();
}

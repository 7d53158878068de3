//! The BackupSchedule controller against the in-memory Kubernetes API with a clock the test
//! moves (no test sleeps): Backups created on time and owned by the schedule, skipped while
//! one runs, pruned beyond the history limits, exactly one catch-up after downtime, suspend,
//! the immediate first backup, invalid schedules, a second pass that writes nothing, and only
//! API calls the chart grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tusk_api::backup::{BackupPhase, BackupStatus, reasons as backup_reasons};
use tusk_api::condition::{DesiredCondition, find_condition, set_condition, types};
use tusk_api::{Backup, BackupSchedule, Cluster};
use tusk_runtime::ControllerKind;
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_schedule_controller::{Error, State, reconcile};
use tusk_testkit::fake_api::ApiBuilder;

const NS: &str = "db";

fn cluster() -> Cluster {
    serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db, uid: cluster-uid}
spec: {postgresVersion: 17, storage: {size: 1Gi}}
",
    )
    .unwrap()
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn schedule(extra: &str) -> BackupSchedule {
    let extra: String = extra.lines().map(|line| format!("  {line}\n")).collect();
    let mut schedule: BackupSchedule = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: BackupSchedule
metadata: {{name: nightly, namespace: db}}
spec:
  cluster: {{name: db}}
  schedule: \"0 3 * * *\"
{extra}"
    ))
    .unwrap();
    schedule.metadata.uid = Some("schedule-uid".into());
    schedule.metadata.generation = Some(1);
    schedule.metadata.creation_timestamp = Some(Time(ts("2026-11-01T00:00:00Z")));
    schedule
}

struct Harness {
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
    now: Arc<Mutex<Timestamp>>,
}

impl Harness {
    async fn new(with_cluster: bool, schedule: BackupSchedule, now: &str) -> Self {
        let (fake, recording) = ApiBuilder::new()
            .kind::<BackupSchedule>()
            .kind::<Backup>()
            .resource::<Cluster>()
            .objects(with_cluster.then(cluster))
            .object(schedule)
            .build_recorded()
            .await
            .unwrap();
        let ctx = context(ControllerKind::Schedule, &recording);
        let now = Arc::new(Mutex::new(ts(now)));
        let clock = now.clone();
        let state = State::new(ctx).with_clock(Arc::new(move || *clock.lock().unwrap()));
        Self {
            setup: fake,
            recording,
            state: Arc::new(state),
            now,
        }
    }

    fn set_now(&self, at: &str) {
        *self.now.lock().unwrap() = ts(at);
    }

    fn schedules(&self) -> Api<BackupSchedule> {
        Api::namespaced(self.setup.clone(), NS)
    }

    fn backups_api(&self) -> Api<Backup> {
        Api::namespaced(self.setup.clone(), NS)
    }

    async fn schedule(&self) -> BackupSchedule {
        self.schedules().get("nightly").await.unwrap()
    }

    async fn reconcile(&self) -> Result<Action, Error> {
        reconcile(Arc::new(self.schedule().await), self.state.clone()).await
    }

    async fn backups(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .backups_api()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|b| b.name_any())
            .collect();
        names.sort();
        names
    }

    /// Moves a Backup to `phase` as the Backup controller would.
    async fn finish(&self, name: &str, phase: BackupPhase, at: &str) {
        let api = self.backups_api();
        let mut backup = api.get(name).await.unwrap();
        let mut status = BackupStatus {
            phase: Some(phase),
            completed_at: Some(Time(ts(at))),
            ..BackupStatus::default()
        };
        let succeeded = phase == BackupPhase::Completed;
        set_condition(
            &mut status.conditions,
            DesiredCondition::new(
                types::SUCCEEDED,
                succeeded,
                if succeeded {
                    backup_reasons::COMPLETED
                } else {
                    backup_reasons::FAILED
                },
                "test",
            ),
            Some(1),
            Time(ts(at)),
        );
        backup.status = Some(status);
        api.replace_status(name, &PostParams::default(), &backup)
            .await
            .unwrap();
    }

    /// The in-memory API stamps objects with the machine's time, not the test clock's: put
    /// the Backup back with the creation time the API server would have given it.
    async fn stamp_created(&self, name: &str, at: &str) {
        let api = self.backups_api();
        let mut backup = api.get(name).await.unwrap();
        api.delete(name, &Default::default()).await.unwrap();
        backup.metadata.creation_timestamp = Some(Time(ts(at)));
        backup.metadata.resource_version = None;
        api.create(&PostParams::default(), &backup).await.unwrap();
    }

    async fn ready(&self) -> (String, String, String) {
        let schedule = self.schedule().await;
        let status = schedule.status.unwrap();
        let c = find_condition(&status.conditions, types::READY)
            .unwrap()
            .clone();
        (c.status, c.reason, c.message)
    }

    fn assert_rbac(&self) {
        assert_granted(tusk_schedule_controller::rbac::RULES, &self.recording);
    }
}

#[tokio::test]
async fn creates_an_owned_backup_when_due_and_requeues_at_the_next_time() {
    let h = Harness::new(true, schedule(""), "2026-11-01T02:59:00Z").await;
    let action = h.reconcile().await.unwrap();
    assert!(h.backups().await.is_empty(), "not due yet");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "exactly at the next run"
    );
    let status = h.schedule().await.status.unwrap();
    assert_eq!(
        status.next_schedule_time,
        Some(Time(ts("2026-11-01T03:00:00Z")))
    );

    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(h.recording.writes(), vec![], "a second pass writes nothing");

    h.set_now("2026-11-01T03:00:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611010300"]);
    let backup = h.backups_api().get("nightly-202611010300").await.unwrap();
    let owner = &backup.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("BackupSchedule", "schedule-uid", Some(true))
    );
    assert_eq!(backup.labels()["tusk.dev/schedule"], "nightly");
    assert_eq!(backup.spec.cluster.name, "db");
    let status = h.schedule().await.status.unwrap();
    assert_eq!(
        status.last_schedule_time,
        Some(Time(ts("2026-11-01T03:00:00Z")))
    );
    assert_eq!(status.last_backup.as_deref(), Some("nightly-202611010300"));
    assert_eq!(status.active, ["nightly-202611010300"]);
    assert_eq!(
        status.next_schedule_time,
        Some(Time(ts("2026-11-02T03:00:00Z")))
    );

    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(
        h.recording.writes(),
        vec![],
        "the same minute again creates nothing"
    );
    h.assert_rbac();
}

#[tokio::test]
async fn skips_while_a_backup_runs_and_does_not_stack() {
    let h = Harness::new(true, schedule(""), "2026-11-01T03:00:00Z").await;
    h.reconcile().await.unwrap();
    h.stamp_created("nightly-202611010300", "2026-11-01T03:00:00Z")
        .await;
    // The backup is still running a day later.
    h.set_now("2026-11-02T03:00:10Z");
    h.reconcile().await.unwrap();
    assert_eq!(
        h.backups().await,
        ["nightly-202611010300"],
        "no second Backup"
    );
    let (status, reason, message) = h.ready().await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SkippedWhileRunning")
    );
    assert!(message.contains("nightly-202611010300"), "{message}");
    // It finishes later that morning: the skipped run is not taken late.
    h.finish(
        "nightly-202611010300",
        BackupPhase::Completed,
        "2026-11-02T04:00:00Z",
    )
    .await;
    h.set_now("2026-11-02T04:01:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611010300"]);
    let status = h.schedule().await.status.unwrap();
    assert!(status.active.is_empty());
    assert_eq!(
        status.last_successful_time,
        Some(Time(ts("2026-11-02T04:00:00Z")))
    );
    // The next run goes ahead.
    h.set_now("2026-11-03T03:00:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(
        h.backups().await,
        ["nightly-202611010300", "nightly-202611030300"]
    );
    h.assert_rbac();
}

#[tokio::test]
async fn history_limits_prune_the_oldest_finished_backups() {
    let h = Harness::new(
        true,
        schedule("successfulBackupsHistoryLimit: 2\nfailedBackupsHistoryLimit: 1\n"),
        "2026-11-01T03:00:00Z",
    )
    .await;
    let days = ["01", "02", "03", "04", "05"];
    for (i, day) in days.iter().enumerate() {
        h.set_now(&format!("2026-11-{day}T03:00:00Z"));
        h.reconcile().await.unwrap();
        let name = format!("nightly-202611{day}0300");
        h.stamp_created(&name, &format!("2026-11-{day}T03:00:00Z"))
            .await;
        let phase = if i == 1 || i == 3 {
            BackupPhase::Failed
        } else {
            BackupPhase::Completed
        };
        h.finish(&name, phase, &format!("2026-11-{day}T03:30:00Z"))
            .await;
    }
    h.set_now("2026-11-05T04:00:00Z");
    h.reconcile().await.unwrap();
    // Completed: 01, 03, 05 → keep 03 and 05. Failed: 02, 04 → keep 04.
    assert_eq!(
        h.backups().await,
        [
            "nightly-202611030300",
            "nightly-202611040300",
            "nightly-202611050300"
        ]
    );
    h.recording.clear();
    h.reconcile().await.unwrap();
    assert_eq!(h.recording.writes(), vec![], "nothing more to prune");
    h.assert_rbac();
}

#[tokio::test]
async fn downtime_gives_exactly_one_catch_up_run() {
    let h = Harness::new(true, schedule(""), "2026-11-01T03:00:00Z").await;
    h.reconcile().await.unwrap();
    h.stamp_created("nightly-202611010300", "2026-11-01T03:00:00Z")
        .await;
    h.finish(
        "nightly-202611010300",
        BackupPhase::Completed,
        "2026-11-01T03:20:00Z",
    )
    .await;
    // The operator is down from the 1st to the 6th at noon: five runs were missed.
    h.set_now("2026-11-06T12:00:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(
        h.backups().await,
        ["nightly-202611010300", "nightly-202611060300"]
    );
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await.len(), 2, "exactly one catch-up");
    h.assert_rbac();
}

#[tokio::test]
async fn catch_up_older_than_the_starting_deadline_is_not_taken() {
    let h = Harness::new(
        true,
        schedule("startingDeadlineSeconds: 3600\n"),
        "2026-11-01T03:00:00Z",
    )
    .await;
    h.reconcile().await.unwrap();
    h.stamp_created("nightly-202611010300", "2026-11-01T03:00:00Z")
        .await;
    h.finish(
        "nightly-202611010300",
        BackupPhase::Completed,
        "2026-11-01T03:20:00Z",
    )
    .await;
    h.set_now("2026-11-06T12:00:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611010300"]);
    let (_, reason, message) = h.ready().await;
    assert_eq!(reason, "Scheduled");
    assert!(message.contains("missed"), "{message}");
}

#[tokio::test]
async fn suspend_creates_nothing() {
    let h = Harness::new(
        true,
        schedule("suspend: true\nimmediate: true\n"),
        "2026-11-01T03:00:00Z",
    )
    .await;
    h.reconcile().await.unwrap();
    assert!(h.backups().await.is_empty());
    let (status, reason, _) = h.ready().await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Suspended"));
    assert_eq!(h.schedule().await.status.unwrap().next_schedule_time, None);
    h.assert_rbac();
}

#[tokio::test]
async fn immediate_takes_the_first_backup_at_once() {
    let h = Harness::new(true, schedule("immediate: true\n"), "2026-11-01T10:42:31Z").await;
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611011042"]);
    h.set_now("2026-11-01T10:50:00Z");
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611011042"], "only once");
    h.assert_rbac();
}

#[tokio::test]
async fn invalid_schedule_is_reported_and_waits_for_a_change() {
    let h = Harness::new(
        true,
        schedule("timeZone: Mars/Olympus_Mons\n"),
        "2026-11-01T03:00:00Z",
    )
    .await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "InvalidTimeZone");
    assert!(error.is_permanent());
    let (status, reason, message) = h.ready().await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidTimeZone")
    );
    assert!(message.contains("IANA"), "{message}");

    let never = Harness::new(true, schedule("").clone(), "2026-11-01T03:00:00Z").await;
    let mut bad = never.schedule().await;
    bad.spec.schedule = "0 0 31 2 *".into();
    never
        .schedules()
        .replace("nightly", &PostParams::default(), &bad)
        .await
        .unwrap();
    let error = never.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "InvalidSchedule");
    assert!(never.ready().await.2.contains("never comes due"));
    never.recording.clear();
    let _ = never.reconcile().await;
    assert_eq!(never.recording.writes(), vec![]);
    assert!(never.backups().await.is_empty());
    never.assert_rbac();
}

#[tokio::test]
async fn missing_cluster_is_reported_and_nothing_created() {
    let h = Harness::new(false, schedule("immediate: true\n"), "2026-11-01T03:00:00Z").await;
    h.reconcile().await.unwrap();
    assert!(h.backups().await.is_empty());
    let (status, reason, _) = h.ready().await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotFound")
    );
    h.assert_rbac();
}

#[tokio::test]
async fn a_backup_left_by_a_crashed_pass_is_adopted_not_duplicated() {
    let h = Harness::new(true, schedule(""), "2026-11-01T03:00:00Z").await;
    // A pass created the Backup, then crashed before writing the schedule's status.
    let owner = h.schedule().await.controller_owner_ref(&()).unwrap();
    let mut backup: Backup = serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {name: nightly-202611010300, namespace: db, labels: {tusk.dev/schedule: nightly}}
spec: {cluster: {name: db}}
",
    )
    .unwrap();
    backup.metadata.owner_references = Some(vec![owner]);
    backup.metadata.creation_timestamp = Some(Time(ts("2026-11-01T03:00:00Z")));
    h.backups_api()
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.backups().await, ["nightly-202611010300"]);
    let status = h.schedule().await.status.unwrap();
    assert_eq!(status.last_backup.as_deref(), Some("nightly-202611010300"));
}

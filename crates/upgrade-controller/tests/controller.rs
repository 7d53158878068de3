//! The reconcile function against the in-memory Kubernetes API. The test plays the other
//! actors: the Cluster controller (stopping pods, reporting status), the Backup controller
//! (completing Backups) and Kubernetes (finishing Jobs with a termination message).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tusk_api::condition::{find_condition, types};
use tusk_api::upgrade::{UpgradePhase, UpgradeStep};
use tusk_api::{Backup, Cluster, PGUpgrade, labels};
use tusk_runtime::ControllerKind;
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_testkit::fake_api::ApiBuilder;
use tusk_testkit::kube_api::PvcProtection;
use tusk_upgrade_controller::{State, reconcile};

const NS: &str = "db";

fn created(minutes_after: i64) -> Option<Time> {
    let base: jiff::Timestamp = "2026-11-22T06:00:00Z".parse().unwrap();
    Some(Time(base + jiff::SignedDuration::from_mins(minutes_after)))
}

fn cluster(repository: bool) -> Cluster {
    let backup = if repository {
        "  backup: {repositories: [{name: repo1, volume: {size: 1Gi}}]}\n"
    } else {
        ""
    };
    let mut cluster: Cluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db, uid: cluster-uid, generation: 1}}
spec:
  postgresVersion: 16
  instances: 2
  storage: {{size: 1Gi}}
{backup}"
    ))
    .unwrap();
    cluster.status = Some(cluster_status(true, 16, 2));
    cluster
}

fn cluster_status(ready: bool, version: i32, ready_instances: i32) -> tusk_api::ClusterStatus {
    cluster_status_for(ready, version, ready_instances, Some(1))
}

fn cluster_status_for(
    ready: bool,
    version: i32,
    ready_instances: i32,
    generation: Option<i64>,
) -> tusk_api::ClusterStatus {
    let mut status = tusk_api::ClusterStatus {
        postgres_version: Some(version),
        ready_instances,
        current_primary: ready.then(|| "db-1".to_owned()),
        ..Default::default()
    };
    tusk_api::condition::set_condition(
        &mut status.conditions,
        tusk_api::condition::DesiredCondition::ready(ready, "Ready", "test"),
        generation,
        Time(jiff::Timestamp::now()),
    );
    status
}

fn upgrade(name: &str, from: i32, to: i32, extra: &str, minutes: i64) -> PGUpgrade {
    let mut upgrade: PGUpgrade = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {{name: {name}, namespace: db, generation: 1}}
spec:
  cluster: {{name: db}}
  fromPostgresVersion: {from}
  toPostgresVersion: {to}
{extra}"
    ))
    .unwrap();
    upgrade.metadata.uid = Some(format!("uid-{name}"));
    upgrade.metadata.creation_timestamp = created(minutes);
    upgrade
}

fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NS.to_owned()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        annotations: Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// An instance's pod as the StatefulSet controller makes it: controlled by the StatefulSet.
fn instance_pod(instance: &str) -> Pod {
    let mut metadata = meta(
        &format!("{instance}-0"),
        &[
            (labels::CLUSTER, "db"),
            (labels::COMPONENT, "database"),
            (labels::INSTANCE_NAME, instance),
        ],
        &[],
    );
    metadata.owner_references = Some(vec![tusk_testkit::kube_api::controller_reference(
        "apps/v1",
        "StatefulSet",
        instance,
        &format!("{instance}-uid"),
    )]);
    let volume: k8s_openapi::api::core::v1::Volume = serde_json::from_value(json!({
        "name": "data",
        "persistentVolumeClaim": {"claimName": format!("data-{instance}-0")},
    }))
    .unwrap();
    Pod {
        metadata,
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            volumes: Some(vec![volume]),
            ..Default::default()
        }),
        ..Pod::default()
    }
}

fn claim(name: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(name, &[], &[]),
        ..PersistentVolumeClaim::default()
    }
}

struct Harness {
    /// The in-memory API behind the pvc-protection model: claims in use stay Terminating.
    raw: kube::Client,
    pvc_protection: PvcProtection,
    recording: RecordingClient,
    state: Arc<State>,
}

async fn harness(cluster: Option<Cluster>, upgrades: Vec<PGUpgrade>) -> Harness {
    let mut builder = ApiBuilder::new()
        .kind::<PGUpgrade>()
        .kind::<Cluster>()
        .kind::<Backup>()
        .objects(cluster)
        .objects(upgrades);
    for instance in ["db-1", "db-2"] {
        builder = builder
            .object(instance_pod(instance))
            .object(claim(&format!("data-{instance}-0")));
    }
    builder = builder
        .object(Endpoints {
            metadata: meta(
                "db-rw",
                &[],
                &[("leader", "db-1-0"), ("optime", "67109032"), ("ttl", "30")],
            ),
            ..Endpoints::default()
        })
        .object(Endpoints {
            metadata: meta(
                "db-rw-config",
                &[],
                &[
                    ("initialize", "1111"),
                    ("config", "{\"ttl\":30}"),
                    ("history", "[]"),
                ],
            ),
            ..Endpoints::default()
        });
    let pvc_protection = PvcProtection::new(builder.build().await.unwrap());
    let raw = pvc_protection.client();
    let recording = RecordingClient::new(raw.clone());
    let ctx = context(ControllerKind::Upgrade, &recording);
    Harness {
        raw,
        pvc_protection,
        recording,
        state: Arc::new(State::new(ctx)),
    }
}

impl Harness {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.raw.clone(), NS)
    }

    async fn reconcile(&self, name: &str) {
        let upgrade = self.api::<PGUpgrade>().get(name).await.unwrap();
        reconcile(Arc::new(upgrade), self.state.clone())
            .await
            .unwrap();
    }

    /// Reconciles and asserts a repeat changes nothing.
    async fn reconcile_twice(&self, name: &str) {
        self.reconcile(name).await;
        self.recording.clear();
        self.reconcile(name).await;
        assert_eq!(
            self.recording.writes(),
            vec![],
            "a second pass in the same state writes nothing ({:?})",
            self.upgrade(name).await.status
        );
    }

    async fn upgrade(&self, name: &str) -> PGUpgrade {
        self.api::<PGUpgrade>().get(name).await.unwrap()
    }

    async fn step(&self, name: &str) -> (Option<UpgradePhase>, Option<UpgradeStep>) {
        let status = self.upgrade(name).await.status.unwrap_or_default();
        (status.phase, status.step)
    }

    async fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        let status = self.upgrade(name).await.status.unwrap_or_default();
        let c = find_condition(&status.conditions, type_)
            .unwrap_or_else(|| panic!("no {type_} condition: {status:?}"))
            .clone();
        (c.status, c.reason, c.message)
    }

    async fn cluster(&self) -> Cluster {
        self.api::<Cluster>().get("db").await.unwrap()
    }

    /// The Cluster controller's status, its conditions written for the current generation.
    async fn set_cluster_status(&self, status: tusk_api::ClusterStatus) {
        let generation = self.cluster().await.metadata.generation;
        let mut status = status;
        for condition in &mut status.conditions {
            condition.observed_generation = generation;
        }
        self.api::<Cluster>()
            .patch_status(
                "db",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }

    async fn finish_backup(&self, name: &str, succeeded: bool) {
        let mut status = tusk_api::BackupStatus {
            phase: Some(if succeeded {
                tusk_api::backup::BackupPhase::Completed
            } else {
                tusk_api::backup::BackupPhase::Failed
            }),
            error: (!succeeded).then(|| "ERROR: [056]: unable to find primary cluster".to_owned()),
            ..Default::default()
        };
        tusk_api::condition::set_condition(
            &mut status.conditions,
            tusk_api::condition::DesiredCondition::new(
                types::SUCCEEDED,
                succeeded,
                if succeeded { "Completed" } else { "Failed" },
                "test",
            ),
            None,
            Time(jiff::Timestamp::now()),
        );
        self.api::<Backup>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }

    /// The StatefulSet controller starting an instance's pod, creating its claim if missing.
    async fn start_instance_on_a_new_claim(&self, instance: &str) {
        let claims = self.api::<PersistentVolumeClaim>();
        let name = format!("data-{instance}-0");
        if claims.get_opt(&name).await.unwrap().is_none() {
            claims
                .create(&PostParams::default(), &claim(&name))
                .await
                .unwrap();
        }
        let _ = self
            .api::<Pod>()
            .create(&PostParams::default(), &instance_pod(instance))
            .await;
    }

    async fn stop_instances(&self) {
        for instance in ["db-1", "db-2"] {
            self.api::<Pod>()
                .delete(&format!("{instance}-0"), &DeleteParams::default())
                .await
                .unwrap();
        }
        self.set_cluster_status(cluster_status(false, 16, 0)).await;
    }

    /// Kubernetes finishing a Job: its pod's termination message, then the Job's status.
    async fn finish_job(&self, job: &str, succeeded: bool, message: &str) {
        // Labelled as the Job's template labels it (the Cluster's and the primary's instance
        // labels included) and controlled by the Job, as a real Job pod is; it stays in place
        // after the Job finishes.
        let template_labels = self
            .api::<Job>()
            .get(job)
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        let mut labels: Vec<(&str, &str)> = template_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.push(("batch.kubernetes.io/job-name", job));
        let mut metadata = meta(&format!("{job}-abcde"), &labels, &[]);
        metadata.owner_references = Some(vec![tusk_testkit::kube_api::controller_reference(
            "batch/v1",
            "Job",
            job,
            &format!("{job}-uid"),
        )]);
        let pod = Pod {
            metadata,
            ..Pod::default()
        };
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let pod_status = json!({"status": {"containerStatuses": [{
            "name": "upgrade", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": if succeeded {0} else {1}, "message": message}}
        }]}});
        self.api::<Pod>()
            .patch_status(
                &pod.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::Merge(pod_status),
            )
            .await
            .unwrap();
        let field = if succeeded { "succeeded" } else { "failed" };
        self.api::<Job>()
            .patch_status(
                job,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {field: 1}})),
            )
            .await
            .unwrap();
    }

    async fn lock(&self) -> Option<String> {
        self.cluster()
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .get(labels::UPGRADE_LOCK_ANNOTATION)
            .cloned()
    }

    fn assert_rbac(&self) {
        assert_granted(tusk_upgrade_controller::rbac::RULES, &self.recording);
    }
}

/// Runs `name` up to the check Job: backup completed, instances stopped.
async fn up_to_the_check(h: &Harness, name: &str) {
    h.reconcile_twice(name).await;
    h.finish_backup(&format!("{name}-before"), true).await;
    h.reconcile_twice(name).await;
    assert_eq!(h.lock().await.as_deref(), Some(name));
    h.stop_instances().await;
    h.reconcile_twice(name).await;
    assert_eq!(h.step(name).await.1, Some(UpgradeStep::Checking));
}

#[tokio::test]
async fn full_upgrade_runs_every_step_and_ends_on_the_new_major() {
    let h = harness(Some(cluster(true)), vec![upgrade("up", 16, 17, "", 0)]).await;

    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (
            Some(UpgradePhase::Running),
            Some(UpgradeStep::WaitingForBackup)
        )
    );
    let backup = h.api::<Backup>().get("up-before").await.unwrap();
    let owner = &backup.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("PGUpgrade", Some(true))
    );
    let (status, reason, message) = h.condition("up", types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "WaitingForBackup")
    );
    assert!(message.contains("up-before"), "{message}");

    h.finish_backup("up-before", true).await;
    h.reconcile_twice("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::ShuttingDown));
    assert_eq!(h.lock().await.as_deref(), Some("up"));
    let status = h.upgrade("up").await.status.unwrap();
    assert_eq!(status.instance.as_deref(), Some("db-1"));
    assert_eq!(status.backup_name.as_deref(), Some("up-before"));
    assert!(status.started_at.is_some());

    h.stop_instances().await;
    h.reconcile_twice("up").await;
    let check = h.api::<Job>().get("up-check").await.unwrap();
    let pod = check.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "data-db-1-0"
    );

    h.finish_job("up-check", true, "pg_upgrade --check passed")
        .await;
    h.reconcile_twice("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::Upgrading));
    assert!(
        h.api::<Job>()
            .get_opt("up-upgrade")
            .await
            .unwrap()
            .is_some()
    );

    h.finish_job(
        "up-upgrade",
        true,
        "system-identifier=7441234567890123456\n",
    )
    .await;
    h.reconcile("up").await;
    let config = h.api::<Endpoints>().get("db-rw-config").await.unwrap();
    let annotations = config.metadata.annotations.unwrap();
    assert_eq!(annotations["initialize"], "7441234567890123456");
    assert!(!annotations.contains_key("history"));
    assert!(
        annotations.contains_key("config"),
        "the user's parameters stay"
    );
    let leader = h.api::<Endpoints>().get("db-rw").await.unwrap();
    let annotations = leader.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("leader") && !annotations.contains_key("optime"));

    h.reconcile("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::Starting));
    assert!(
        h.api::<PersistentVolumeClaim>()
            .get_opt("data-db-2-0")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.api::<PersistentVolumeClaim>()
            .get_opt("data-db-1-0")
            .await
            .unwrap()
            .is_some()
    );
    h.reconcile("up").await;
    assert_eq!(h.cluster().await.spec.postgres_version, 17);
    assert_eq!(
        h.lock().await.as_deref(),
        Some("up"),
        "still locked while the version moves"
    );
    h.reconcile_twice("up").await;
    assert_eq!(
        h.lock().await.as_deref(),
        Some("up"),
        "until the Cluster reports 17"
    );
    // The Cluster controller, still stopped, reports the major the spec now names.
    h.set_cluster_status(cluster_status(false, 17, 0)).await;
    h.reconcile("up").await;
    assert_eq!(h.lock().await, None);
    // The StatefulSets start again: the replica on a new, empty claim of the old name.
    h.start_instance_on_a_new_claim("db-2").await;
    h.start_instance_on_a_new_claim("db-1").await;
    // Until the primary runs, the Cluster is not Ready and reports 17 from before.
    h.set_cluster_status(cluster_status(false, 17, 0)).await;
    h.reconcile_twice("up").await;
    // The new claim is never deleted under its pod (pvc-protection would keep it Terminating
    // for as long as the pod runs, and the upgrade would wait for ever).
    assert_eq!(h.pvc_protection.terminating(), Vec::<String>::new());
    assert!(
        h.api::<PersistentVolumeClaim>()
            .get_opt("data-db-2-0")
            .await
            .unwrap()
            .is_some()
    );
    // A claim deleted under its running pod anyway (as an earlier tusk did after the unlock)
    // is a state the upgrade leaves: the pod goes, then the claim, then both come back new.
    h.api::<PersistentVolumeClaim>()
        .delete("data-db-2-0", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(h.pvc_protection.terminating(), ["db/data-db-2-0"]);
    h.reconcile("up").await;
    assert!(h.api::<Pod>().get_opt("db-2-0").await.unwrap().is_none());
    h.pvc_protection.release().await.unwrap();
    assert_eq!(h.pvc_protection.terminating(), Vec::<String>::new());
    h.start_instance_on_a_new_claim("db-2").await;
    h.reconcile_twice("up").await;
    assert_eq!(h.pvc_protection.terminating(), Vec::<String>::new());
    let (_, reason, message) = h.condition("up", types::PROGRESSING).await;
    assert_eq!(reason, "Starting");
    assert!(message.contains("no automatic rollback"), "{message}");

    // The Cluster controller starts the primary on 17, then the replica.
    let mut status = cluster_status(false, 17, 1);
    status.current_primary = Some("db-1".into());
    h.set_cluster_status(status).await;
    h.reconcile_twice("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::RecreatingReplicas));
    h.set_cluster_status(cluster_status(true, 17, 2)).await;
    h.reconcile_twice("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::PostUpgrade));
    assert!(
        h.api::<Backup>()
            .get_opt("up-after")
            .await
            .unwrap()
            .is_some()
    );
    assert!(h.api::<Job>().get_opt("up-post").await.unwrap().is_some());

    h.finish_backup("up-after", true).await;
    h.finish_job("up-post", true, "").await;
    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (Some(UpgradePhase::Completed), Some(UpgradeStep::Done))
    );
    let (status, reason, message) = h.condition("up", types::SUCCEEDED).await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert!(message.contains("PostgreSQL 17"), "{message}");
    let (status, _, _) = h.condition("up", types::PROGRESSING).await;
    assert_eq!(status, "False");
    let status = h.upgrade("up").await.status.unwrap();
    assert!(status.completed_at.is_some());
    let jobs = status.jobs.unwrap();
    assert_eq!(
        (
            jobs.check.as_deref(),
            jobs.upgrade.as_deref(),
            jobs.post_upgrade.as_deref()
        ),
        (Some("up-check"), Some("up-upgrade"), Some("up-post"))
    );
    assert_eq!(status.observed_generation, Some(1));

    // An event for every step and action, for `kubectl describe`.
    let events = h
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap();
    let reasons: Vec<String> = events.items.into_iter().filter_map(|e| e.reason).collect();
    for expected in [
        "WaitingForBackup",
        "BackupCreated",
        "ShuttingDown",
        "ClusterLocked",
        "Checking",
        "JobCreated",
        "Upgrading",
        "PatroniStateCleared",
        "Starting",
        "ReplicaVolumesDeleted",
        "ClusterVersionChanged",
        "HeldVolumesReleased",
        "ClusterUnlocked",
        "RecreatingReplicas",
        "PostUpgrade",
        "PostUpgradeStarted",
        "Succeeded",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} event in {reasons:?}"
        );
    }
    h.assert_rbac();
}

#[tokio::test]
async fn failed_check_restarts_the_cluster_on_the_old_major_with_the_output() {
    let h = harness(Some(cluster(true)), vec![upgrade("up", 16, 17, "", 0)]).await;
    up_to_the_check(&h, "up").await;
    h.finish_job(
        "up-check",
        false,
        "pg_upgrade --check failed:\nYour installation contains one of the reg* data types in user tables.\ntables_using_reg.txt:\nIn database: app\n  public.blocker.p",
    )
    .await;
    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (Some(UpgradePhase::Running), Some(UpgradeStep::RollingBack))
    );
    assert_eq!(h.lock().await, None, "the Cluster starts again");
    assert_eq!(h.cluster().await.spec.postgres_version, 16);
    assert!(
        h.api::<PersistentVolumeClaim>()
            .get_opt("data-db-2-0")
            .await
            .unwrap()
            .is_some()
    );
    let (status, reason, message) = h.condition("up", types::SUCCEEDED).await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "CheckFailed"));
    assert!(message.contains("public.blocker.p"), "{message}");
    let (_, reason, _) = h.condition("up", types::PROGRESSING).await;
    assert_eq!(reason, "RollingBack");

    h.set_cluster_status(cluster_status(true, 16, 2)).await;
    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (Some(UpgradePhase::Failed), Some(UpgradeStep::Done))
    );
    let (_, reason, message) = h.condition("up", types::SUCCEEDED).await;
    assert_eq!(reason, "CheckFailed");
    assert!(
        message.contains("was started again on PostgreSQL 16"),
        "{message}"
    );
    assert!(
        h.api::<Job>()
            .get_opt("up-upgrade")
            .await
            .unwrap()
            .is_none()
    );
    h.assert_rbac();
}

#[tokio::test]
async fn failed_upgrade_rolls_back_before_the_new_server_starts() {
    let h = harness(Some(cluster(true)), vec![upgrade("up", 16, 17, "", 0)]).await;
    up_to_the_check(&h, "up").await;
    h.finish_job("up-check", true, "pg_upgrade --check passed")
        .await;
    h.reconcile("up").await;
    h.finish_job(
        "up-upgrade",
        false,
        "pg_upgrade failed; the old data directory is unchanged:\ncould not create hard link",
    )
    .await;
    h.reconcile_twice("up").await;
    assert_eq!(h.step("up").await.1, Some(UpgradeStep::RollingBack));
    let (_, reason, message) = h.condition("up", types::SUCCEEDED).await;
    assert_eq!(reason, "UpgradeFailed");
    assert!(message.contains("could not create hard link"), "{message}");
    let config = h.api::<Endpoints>().get("db-rw-config").await.unwrap();
    assert_eq!(
        config.metadata.annotations.unwrap()["initialize"],
        "1111",
        "DCS untouched"
    );
    // Link mode: a restore Job puts the old data directory back before the lock goes.
    assert_eq!(h.lock().await.as_deref(), Some("up"));
    let restore = h.api::<Job>().get("up-restore").await.unwrap();
    let env = tusk_upgrade_controller::jobs::container_env(&restore);
    assert_eq!(env["TUSK_STEP"], "restore");
    h.finish_job("up-restore", true, "restored /pgdata/pg16")
        .await;
    h.reconcile_twice("up").await;
    assert_eq!(h.lock().await, None);
    h.set_cluster_status(cluster_status(true, 16, 2)).await;
    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (Some(UpgradePhase::Failed), Some(UpgradeStep::Done))
    );
    h.assert_rbac();
}

#[tokio::test]
async fn failed_backup_ends_the_upgrade_without_touching_the_cluster() {
    let h = harness(Some(cluster(true)), vec![upgrade("up", 16, 17, "", 0)]).await;
    h.reconcile("up").await;
    h.finish_backup("up-before", false).await;
    h.reconcile_twice("up").await;
    assert_eq!(
        h.step("up").await,
        (Some(UpgradePhase::Failed), Some(UpgradeStep::Done))
    );
    let (_, reason, message) = h.condition("up", types::SUCCEEDED).await;
    assert_eq!(reason, "BackupFailed");
    assert!(
        message.contains("unable to find primary cluster"),
        "{message}"
    );
    assert_eq!(h.lock().await, None);
    h.assert_rbac();
}

#[tokio::test]
async fn a_second_upgrade_of_the_same_cluster_waits_for_the_first() {
    let h = harness(
        Some(cluster(true)),
        vec![
            upgrade("first", 16, 17, "", 0),
            upgrade("second", 16, 18, "", 1),
        ],
    )
    .await;
    h.reconcile("first").await;
    h.reconcile_twice("second").await;
    assert_eq!(
        h.step("second").await,
        (Some(UpgradePhase::Pending), Some(UpgradeStep::Validating))
    );
    let (status, reason, message) = h.condition("second", types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AnotherUpgradeActive")
    );
    assert!(message.contains("\"first\""), "{message}");
    assert!(
        h.api::<Backup>()
            .get_opt("second-before")
            .await
            .unwrap()
            .is_none()
    );

    // Once the first has finished (failed here), the second starts.
    h.finish_backup("first-before", false).await;
    h.reconcile("first").await;
    h.reconcile("second").await;
    assert_eq!(
        h.step("second").await.1,
        Some(UpgradeStep::WaitingForBackup)
    );
    h.assert_rbac();
}

#[tokio::test]
async fn unsupported_older_and_mismatched_versions_are_refused() {
    let h = harness(
        Some(cluster(true)),
        vec![
            upgrade("down", 16, 15, "", 0),
            upgrade("future", 16, 19, "", 0),
            upgrade("wrong-from", 15, 17, "", 0),
        ],
    )
    .await;
    for (name, reason) in [
        ("down", "UnsupportedVersion"),
        ("future", "UnsupportedVersion"),
        ("wrong-from", "VersionMismatch"),
    ] {
        h.reconcile_twice(name).await;
        assert_eq!(
            h.step(name).await,
            (Some(UpgradePhase::Failed), Some(UpgradeStep::Done)),
            "{name}"
        );
        let (status, got, _) = h.condition(name, types::SUCCEEDED).await;
        assert_eq!((status.as_str(), got.as_str()), ("False", reason), "{name}");
        assert!(h.upgrade(name).await.status.unwrap().started_at.is_none());
    }
    assert_eq!(h.lock().await, None);
    assert!(
        h.api::<Backup>()
            .get_opt("down-before")
            .await
            .unwrap()
            .is_none()
    );
    h.assert_rbac();
}

#[tokio::test]
async fn a_cluster_without_repository_is_refused_unless_allowed() {
    let h = harness(
        Some(cluster(false)),
        vec![
            upgrade("refused", 16, 17, "", 0),
            upgrade("allowed", 16, 17, "  allowWithoutBackup: true\n", 1),
        ],
    )
    .await;
    h.reconcile_twice("refused").await;
    let (status, reason, message) = h.condition("refused", types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoBackupRepository")
    );
    assert!(message.contains("allowWithoutBackup"), "{message}");
    assert_eq!(h.step("refused").await.0, Some(UpgradePhase::Pending));

    // The refused one is still active and older: delete it, then the allowed one proceeds
    // straight to the shutdown.
    h.api::<PGUpgrade>()
        .delete("refused", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile("allowed").await;
    assert_eq!(h.step("allowed").await.1, Some(UpgradeStep::ShuttingDown));
    assert_eq!(h.lock().await.as_deref(), Some("allowed"));
    assert!(
        h.upgrade("allowed")
            .await
            .status
            .unwrap()
            .backup_name
            .is_none()
    );
    h.assert_rbac();
}

#[tokio::test]
async fn a_missing_cluster_is_reported_and_waited_for() {
    let h = harness(None, vec![upgrade("up", 16, 17, "", 0)]).await;
    h.reconcile_twice("up").await;
    let (status, reason, _) = h.condition("up", types::PROGRESSING).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotFound")
    );
    assert_eq!(h.step("up").await.0, Some(UpgradePhase::Pending));
    h.assert_rbac();
}

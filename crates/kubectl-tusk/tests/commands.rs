//! Every command against the in-memory Kubernetes API: the output a person reads (golden files),
//! the exit code a script reads, and the waits, with the controller's side played by a task
//! that answers the way the controllers do (or does not, for the timeouts). Time is paused, so
//! a 5-minute wait takes no time and no test reads the clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubectl_tusk::{BackupKind, Command, Exit, Format, Terminal, run};
use serde_json::json;
use tusk_api::{Backup, BackupSchedule, Cluster, PGUpgrade, Pooler, PostgresUser, ServiceBinding};
use tusk_testkit::fake_api::ApiBuilder;

const NS: &str = "shop";

fn from_yaml<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn at(text: &str) -> Time {
    Time(text.parse().unwrap())
}

/// A three-instance Cluster as its controller reports it: db-1 primary, db-3 catching up.
fn cluster(ready: bool) -> Cluster {
    let mut cluster: Cluster = from_yaml(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop, generation: 4}
spec:
  postgresVersion: 15
  instances: 3
  storage: {size: 10Gi, autoGrow: {thresholdPercent: 80, increasePercent: 20, limit: 50Gi}}
",
    );
    let (status, reason, message) = if ready {
        (
            "True",
            "Ready",
            "3 of 3 instances ready; db-1 is the primary",
        )
    } else {
        (
            "False",
            "InstancesNotReady",
            "2 of 3 instances ready: db-3 is starting",
        )
    };
    cluster.status = Some(from_yaml(&format!(
        "conditions:
- {{type: Ready, status: \"{status}\", reason: {reason}, message: \"{message}\", lastTransitionTime: \"2026-03-01T10:00:00Z\"}}
- {{type: Progressing, status: \"False\", reason: Stable, message: nothing to roll out, lastTransitionTime: \"2026-03-01T09:00:00Z\"}}
- {{type: Degraded, status: \"False\", reason: Healthy, message: all instances healthy, lastTransitionTime: \"2026-03-01T09:00:00Z\"}}
- {{type: ContinuousArchiving, status: \"True\", reason: Archiving, message: \"WAL archiving to repo1 works; last archived 00000002000000000000000A\", lastTransitionTime: \"2026-03-01T09:30:00Z\"}}
observedGeneration: 4
readyInstances: {}
currentPrimary: db-1
lastPrimaryChange: \"2026-02-28T23:15:00Z\"
postgresVersion: 15
image: ghcr.io/tusk-operator/postgres:15
systemIdentifier: \"7340000000000000001\"
instances:
- {{name: db-1, role: Primary, ready: true, timeline: 2}}
- {{name: db-2, role: Replica, ready: true, timeline: 2, lagBytes: 0}}
- {{name: db-3, role: Replica, ready: {}, timeline: 2, lagBytes: 16777216, replayLagMilliseconds: 1250, pendingRestart: true}}
storage:
- {{instance: db-1, volume: data, capacity: 10Gi, usedBytes: 3221225472, usedPercent: 30}}
- {{instance: db-2, volume: data, capacity: 10Gi, usedBytes: 3221225472, usedPercent: 30}}
",
        if ready { 3 } else { 2 },
        ready
    )));
    cluster
}

fn backup(name: &str, cluster: &str, created: &str, status: &str) -> Backup {
    from_yaml(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}
spec: {{cluster: {{name: {cluster}}}, type: Full}}
status: {status}
"
    ))
}

fn related() -> ApiBuilder {
    ApiBuilder::new()
        .kind::<Cluster>()
        .kind::<Backup>()
        .kind::<BackupSchedule>()
        .kind::<PGUpgrade>()
        .kind::<PostgresUser>()
        .kind::<ServiceBinding>()
        .kind::<Pooler>()
        .object(backup(
            "db-nightly-1",
            "db",
            "2026-03-01T01:00:00Z",
            "{phase: Completed, backupLabel: 20260301-010000F, completedAt: \"2026-03-01T01:04:10Z\", size: {original: 3221225472, repository: 402653184}}",
        ))
        .object(backup(
            "db-before-migration",
            "db",
            "2026-03-01T08:00:00Z",
            "{phase: Failed, error: \"pgBackRest: unable to find primary cluster\"}",
        ))
        .object(backup(
            "other-1",
            "other",
            "2026-03-01T02:00:00Z",
            "{phase: Completed}",
        ))
        .object(from_yaml::<BackupSchedule>(
            "apiVersion: tusk.dev/v1alpha1
kind: BackupSchedule
metadata: {name: db-nightly, namespace: shop}
spec: {cluster: {name: db}, schedule: \"0 1 * * *\"}
status: {nextScheduleTime: \"2026-03-02T01:00:00Z\", lastSuccessfulTime: \"2026-03-01T01:04:10Z\"}
",
        ))
        .object(from_yaml::<PostgresUser>(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: orders, namespace: shop}
spec: {cluster: {name: db}}
status:
  conditions:
  - {type: Ready, status: \"True\", reason: Ready, message: role orders is in place, lastTransitionTime: \"2026-03-01T09:00:00Z\"}
",
        ))
        .object(from_yaml::<PostgresUser>(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: reports, namespace: shop}
spec: {cluster: {name: db}}
status:
  conditions:
  - {type: Ready, status: \"False\", reason: SchemaNotFound, message: \"schema \\\"analytics\\\" does not exist in database app\", lastTransitionTime: \"2026-03-01T09:00:00Z\"}
",
        ))
        .object(from_yaml::<ServiceBinding>(
            "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: storefront, namespace: web}
spec: {cluster: {name: db, namespace: shop}, database: app}
status:
  conditions:
  - {type: Ready, status: \"True\", reason: Ready, message: Secret storefront-db is current, lastTransitionTime: \"2026-03-01T09:00:00Z\"}
",
        ))
        .object(from_yaml::<ServiceBinding>(
            "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: elsewhere, namespace: web}
spec: {cluster: {name: db}, database: app}
",
        ))
        .object(from_yaml::<Pooler>(
            "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {name: db-pooler, namespace: shop}
spec: {cluster: {name: db}, pgbouncer: {poolMode: Transaction}}
status:
  readyInstances: 2
  service: db-pooler.shop.svc:5432
  conditions:
  - {type: Ready, status: \"True\", reason: Available, message: 2 PgBouncer pods serve db-pooler.shop.svc:5432, lastTransitionTime: \"2026-03-01T09:00:00Z\"}
",
        ))
        .object(from_yaml::<Pooler>(
            "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {name: db-reports, namespace: shop}
spec: {cluster: {name: db}, target: ReadOnly, instances: 1, paused: true}
status:
  readyInstances: 1
  service: db-reports.shop.svc:5432
  conditions:
  - {type: Ready, status: \"False\", reason: Paused, message: \"spec.paused is true: PgBouncer holds new queries until it is set to false\", lastTransitionTime: \"2026-03-01T09:00:00Z\"}
",
        ))
        .object(from_yaml::<Pooler>(
            "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {name: other-pooler, namespace: shop}
spec: {cluster: {name: other}}
",
        ))
}

/// Runs `command` and returns what it printed and how it ended.
async fn invoke(client: &kube::Client, command: Command) -> (String, anyhow::Result<Exit>) {
    let mut out: Vec<u8> = Vec::new();
    let exit = {
        let mut terminal = Terminal {
            out: &mut out,
            colour: false,
        };
        run(
            command,
            client.clone(),
            NS,
            &kubectl_tusk::psql::KubectlFlags::default(),
            &mut terminal,
        )
        .await
    };
    (String::from_utf8(out).unwrap(), exit)
}

fn status(output: Format) -> Command {
    Command::Status {
        cluster: "db".to_owned(),
        output,
    }
}

#[tokio::test]
async fn status_shows_a_ready_cluster_on_one_screen() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let (text, exit) = invoke(&client, status(Format::Text)).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("status_ready", text);
    let (json, exit) = invoke(&client, status(Format::Json)).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("status_ready_json", json);
    let (yaml, _) = invoke(&client, status(Format::Yaml)).await;
    let parsed: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(
        parsed,
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    );
}

#[tokio::test]
async fn status_of_a_cluster_that_is_not_ready_exits_4_and_says_why() {
    let client = related().object(cluster(false)).build().await.unwrap();
    let (text, exit) = invoke(&client, status(Format::Text)).await;
    assert_eq!(exit.unwrap(), Exit::Failed);
    insta::assert_snapshot!("status_not_ready", text);
}

#[tokio::test]
async fn status_of_a_missing_cluster_is_an_error_naming_it() {
    let client = related().build().await.unwrap();
    let (_, exit) = invoke(&client, status(Format::Text)).await;
    let error = format!("{:#}", exit.unwrap_err());
    assert!(error.contains("Cluster shop/db not found"), "{error}");
}

/// Plays the Cluster controller's part of a switchover once the annotation appears: `promote`
/// becomes the primary, or (`None`) the request is cleared with a SwitchoverFailed event.
fn answer_switchover(client: kube::Client, promote: Option<&'static str>) {
    tokio::spawn(async move {
        let clusters = Api::<Cluster>::namespaced(client.clone(), NS);
        loop {
            let now = clusters.get("db").await.unwrap();
            if now.annotations().contains_key("tusk.dev/switchover") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let clear = json!({"metadata": {"annotations": {"tusk.dev/switchover": null}}});
        clusters
            .patch("db", &PatchParams::default(), &Patch::Merge(&clear))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        match promote {
            Some(instance) => {
                let status = json!({"status": {"currentPrimary": instance}});
                clusters
                    .patch_status("db", &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
            }
            None => {
                let event: Event = serde_json::from_value(json!({
                    "metadata": {"name": "db.switchover-failed", "namespace": NS},
                    "eventTime": MicroTime("2026-03-01T10:00:00Z".parse().unwrap()),
                    "reportingController": "tusk-cluster-controller",
                    "reportingInstance": "tusk-operator",
                    "action": "Reconciling",
                    "type": "Warning",
                    "reason": "SwitchoverFailed",
                    "note": "switchover from db-1 to db-3 (requested db-3) failed: Patroni answered 412: candidate is not healthy; the request is cleared, set the annotation again to retry",
                    "regarding": {"kind": "Cluster", "name": "db", "namespace": NS},
                }))
                .unwrap();
                Api::<Event>::namespaced(client, NS)
                    .create(&PostParams::default(), &event)
                    .await
                    .unwrap();
            }
        }
    });
}

fn switchover(to: Option<&str>) -> Command {
    Command::Switchover {
        cluster: "db".to_owned(),
        to: to.map(str::to_owned),
        timeout: Duration::from_secs(300),
    }
}

#[tokio::test(start_paused = true)]
async fn switchover_waits_for_the_new_primary() {
    let client = related().object(cluster(true)).build().await.unwrap();
    answer_switchover(client.clone(), Some("db-2"));
    let (text, exit) = invoke(&client, switchover(None)).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("switchover_any", text);
}

#[tokio::test(start_paused = true)]
async fn a_refused_switchover_exits_4_with_the_controllers_reason() {
    let client = related().object(cluster(true)).build().await.unwrap();
    answer_switchover(client.clone(), None);
    let (text, exit) = invoke(&client, switchover(Some("db-3"))).await;
    assert_eq!(exit.unwrap(), Exit::Failed);
    insta::assert_snapshot!("switchover_refused", text);
}

#[tokio::test(start_paused = true)]
async fn a_switchover_nobody_answers_times_out_with_exit_3() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let (text, exit) = invoke(&client, switchover(Some("db-2"))).await;
    assert_eq!(exit.unwrap(), Exit::TimedOut);
    assert!(text.contains("no new primary after 300s"), "{text}");
}

#[tokio::test]
async fn switchover_to_the_primary_or_an_unknown_instance_asks_for_nothing() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let (text, exit) = invoke(&client, switchover(Some("db-1"))).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert_eq!(text, "db-1 is already the primary of db\n");
    let (text, exit) = invoke(&client, switchover(Some("db-7"))).await;
    assert_eq!(exit.unwrap(), Exit::Error);
    assert_eq!(
        text,
        "db-7 is not an instance of db (instances: db-1, db-2, db-3)\n"
    );
    let cluster = Api::<Cluster>::namespaced(client, NS)
        .get("db")
        .await
        .unwrap();
    assert!(!cluster.annotations().contains_key("tusk.dev/switchover"));
}

fn take_backup(kind: BackupKind, wait: bool) -> Command {
    Command::Backup {
        cluster: "db".to_owned(),
        kind,
        name: Some("db-manual".to_owned()),
        wait,
        timeout: Duration::from_secs(3600),
    }
}

/// Plays the Backup controller: Pending, Running, then Completed (or Failed).
fn answer_backup(client: kube::Client, succeed: bool) {
    tokio::spawn(async move {
        let backups = Api::<Backup>::namespaced(client, NS);
        while backups.get_opt("db-manual").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let end = if succeed {
            json!({"phase": "Completed", "backupLabel": "20260301-100000F", "size": {"original": 3221225472_i64, "repository": 402653184}})
        } else {
            json!({"phase": "Failed", "error": "pgBackRest exited 82: WAL segment 00000002000000000000000B was not archived before the 60000ms timeout"})
        };
        for status in [
            json!({"phase": "Pending"}),
            json!({"phase": "Running", "jobName": "db-manual-backup"}),
            end,
        ] {
            tokio::time::sleep(Duration::from_secs(30)).await;
            backups
                .patch_status(
                    "db-manual",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .unwrap();
        }
    });
}

#[tokio::test(start_paused = true)]
async fn backup_wait_follows_the_backup_to_completion() {
    let client = related().object(cluster(true)).build().await.unwrap();
    answer_backup(client.clone(), true);
    let (text, exit) = invoke(&client, take_backup(BackupKind::Full, true)).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("backup_completed", text);
}

#[tokio::test(start_paused = true)]
async fn a_failed_backup_exits_4_with_its_error() {
    let client = related().object(cluster(true)).build().await.unwrap();
    answer_backup(client.clone(), false);
    let (text, exit) = invoke(&client, take_backup(BackupKind::Incr, true)).await;
    assert_eq!(exit.unwrap(), Exit::Failed);
    assert!(text.ends_with("failed: pgBackRest exited 82: WAL segment 00000002000000000000000B was not archived before the 60000ms timeout\n"), "{text}");
}

#[tokio::test]
async fn backup_without_wait_creates_the_backup_and_returns() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let (text, exit) = invoke(&client, take_backup(BackupKind::Diff, false)).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert_eq!(
        text,
        "Backup shop/db-manual created (Differential of Cluster db)\nfollow it with: kubectl get backup -n shop db-manual -w\n"
    );
    let created = Api::<Backup>::namespaced(client, NS)
        .get("db-manual")
        .await
        .unwrap();
    assert_eq!(created.spec.cluster.name, "db");
    assert_eq!(created.spec.type_.as_str(), "Differential");
}

#[tokio::test]
async fn backup_of_a_missing_cluster_creates_nothing() {
    let client = related().build().await.unwrap();
    let (_, exit) = invoke(&client, take_backup(BackupKind::Full, false)).await;
    assert!(format!("{:#}", exit.unwrap_err()).contains("Cluster shop/db not found"));
    assert!(
        Api::<Backup>::namespaced(client, NS)
            .get_opt("db-manual")
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn default_backup_names_sort_by_time() {
    let now = "2026-03-01T10:05:09Z".parse().unwrap();
    assert_eq!(
        kubectl_tusk::actions::default_backup_name("db", BackupKind::Incr, now),
        "db-incr-20260301-100509"
    );
}

fn rotate() -> Command {
    Command::RotatePassword {
        user: "orders".to_owned(),
        timeout: Duration::from_secs(120),
    }
}

#[tokio::test(start_paused = true)]
async fn rotate_password_waits_for_the_controller_to_record_the_request() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let answering = client.clone();
    tokio::spawn(async move {
        let users = Api::<PostgresUser>::namespaced(answering, NS);
        let request = loop {
            let user = users.get("orders").await.unwrap();
            if let Some(value) = user.annotations().get("tusk.dev/rotate-password") {
                break value.clone();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let status = json!({"status": {
            "passwordRotationRequest": request,
            "lastPasswordRotation": at("2026-03-01T10:00:03Z"),
            "secretName": "orders-credentials",
        }});
        users
            .patch_status("orders", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    });
    let (text, exit) = invoke(&client, rotate()).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("rotate_password", text);
}

#[tokio::test(start_paused = true)]
async fn a_rotation_nobody_answers_times_out_with_exit_3() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let (text, exit) = invoke(&client, rotate()).await;
    assert_eq!(exit.unwrap(), Exit::TimedOut);
    assert!(text.contains("not rotated after 120s"), "{text}");
}

#[test]
fn exit_codes_are_the_documented_ones() {
    assert_eq!(Exit::Ok as u8, 0);
    assert_eq!(Exit::Error as u8, 1);
    assert_eq!(Exit::TimedOut as u8, 3);
    assert_eq!(Exit::Failed as u8, 4);
}

#[tokio::test(start_paused = true)]
async fn restart_follows_the_rolling_update_until_the_controller_records_it() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let answering = client.clone();
    tokio::spawn(async move {
        let clusters = Api::<Cluster>::namespaced(answering, NS);
        let request = loop {
            let now = clusters.get("db").await.unwrap();
            if let Some(value) = now.annotations().get("tusk.dev/restart") {
                break value.clone();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        for (instance, primary) in [("db-3", "db-1"), ("db-2", "db-1"), ("db-1", "db-2")] {
            tokio::time::sleep(Duration::from_secs(20)).await;
            let progressing = json!({"status": {"currentPrimary": primary, "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "ready", "lastTransitionTime": at("2026-03-01T10:00:00Z")},
                {"type": "Progressing", "status": "True", "reason": "RollingUpdate", "message": format!("restarting {instance}"), "lastTransitionTime": at("2026-03-01T10:00:00Z")},
            ]}});
            clusters
                .patch_status("db", &PatchParams::default(), &Patch::Merge(&progressing))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        let done = json!({"status": {"restartRequest": request}});
        clusters
            .patch_status("db", &PatchParams::default(), &Patch::Merge(&done))
            .await
            .unwrap();
    });
    let restart = Command::Restart {
        cluster: "db".to_owned(),
        instance: None,
        timeout: Duration::from_secs(1800),
    };
    let (text, exit) = invoke(&client, restart).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("restart", text);
}

#[tokio::test]
async fn restart_of_a_shut_down_cluster_is_refused() {
    let mut stopped = cluster(true);
    stopped.spec.shutdown = true;
    let client = related().object(stopped).build().await.unwrap();
    let restart = Command::Restart {
        cluster: "db".to_owned(),
        instance: None,
        timeout: Duration::from_secs(60),
    };
    let (text, exit) = invoke(&client, restart).await;
    assert_eq!(exit.unwrap(), Exit::Error);
    assert!(text.contains("is shut down"), "{text}");
    let cluster = Api::<Cluster>::namespaced(client, NS)
        .get("db")
        .await
        .unwrap();
    assert!(!cluster.annotations().contains_key("tusk.dev/restart"));
}

/// `restart CLUSTER INSTANCE` asks for that instance only and ends when the instance's status
/// entry records the request and it is ready again; the primary is announced as handing over.
#[tokio::test(start_paused = true)]
async fn restart_of_one_instance_waits_for_its_status_entry() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let answering = client.clone();
    tokio::spawn(async move {
        let clusters = Api::<Cluster>::namespaced(answering, NS);
        let request = loop {
            let now = clusters.get("db").await.unwrap();
            if let Some(value) = now.annotations().get("tusk.dev/restart-instance") {
                break value.clone();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(request.starts_with("db-1="), "{request}");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let switched = json!({"status": {"currentPrimary": "db-2", "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "ready", "lastTransitionTime": at("2026-03-01T10:00:00Z")},
            {"type": "Progressing", "status": "True", "reason": "RollingUpdate", "message": "rolling update: restarting replica 1", "lastTransitionTime": at("2026-03-01T10:00:00Z")},
        ], "instances": [
            {"name": "db-1", "role": "Replica", "ready": false},
            {"name": "db-2", "role": "Primary", "ready": true},
        ]}});
        clusters
            .patch_status("db", &PatchParams::default(), &Patch::Merge(&switched))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let done = json!({"status": {"instances": [
            {"name": "db-1", "role": "Replica", "ready": true, "restartRequest": request},
            {"name": "db-2", "role": "Primary", "ready": true},
        ]}});
        clusters
            .patch_status("db", &PatchParams::default(), &Patch::Merge(&done))
            .await
            .unwrap();
    });
    let restart = Command::Restart {
        cluster: "db".to_owned(),
        instance: Some("db-1".to_owned()),
        timeout: Duration::from_secs(600),
    };
    let (text, exit) = invoke(&client, restart).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    insta::assert_snapshot!("restart_instance", text);
}

#[tokio::test(start_paused = true)]
async fn restart_of_an_unknown_instance_writes_nothing() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let restart = Command::Restart {
        cluster: "db".to_owned(),
        instance: Some("db-9".to_owned()),
        timeout: Duration::from_secs(60),
    };
    let (text, exit) = invoke(&client, restart).await;
    assert_eq!(exit.unwrap(), Exit::Error);
    assert!(
        text.contains("db-9 is not an instance of db (instances: db-1, db-2, db-3)"),
        "{text}"
    );
    let cluster = Api::<Cluster>::namespaced(client, NS)
        .get("db")
        .await
        .unwrap();
    assert!(
        !cluster
            .annotations()
            .contains_key("tusk.dev/restart-instance")
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_restart_that_does_not_finish_times_out() {
    let client = related().object(cluster(true)).build().await.unwrap();
    let restart = Command::Restart {
        cluster: "db".to_owned(),
        instance: Some("db-3".to_owned()),
        timeout: Duration::from_secs(90),
    };
    let (text, exit) = invoke(&client, restart).await;
    assert_eq!(exit.unwrap(), Exit::TimedOut);
    assert!(text.contains("has not finished after 90s"), "{text}");
}

/// A report holds the Cluster, its children and what points at it, and not one Secret value:
/// not in the Secret (keys and sizes only), not where a value was copied by hand into a
/// ConfigMap, not base64-encoded.
#[tokio::test]
async fn report_has_what_support_needs_and_no_secret_value() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    const PASSWORD: &str = "Sup3r-s3cret-pw";
    let secret: Secret = from_yaml(&format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: db-superuser, namespace: shop, labels: {{tusk.dev/cluster: db}}, annotations: {{kubectl.kubernetes.io/last-applied-configuration: '{{\"stringData\":{{\"password\":\"{PASSWORD}\"}}}}'}}}}
stringData: {{username: postgres, password: {PASSWORD}}}
"
    ));
    let mut secret = secret;
    secret.data = Some(
        secret
            .string_data
            .take()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
            .collect(),
    );
    let leaky: ConfigMap = from_yaml(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: db-notes, namespace: shop, labels: {{tusk.dev/cluster: db}}}}
data: {{notes: 'the password is {PASSWORD}', encoded: U3VwM3ItczNjcmV0LXB3}}
"
    ));
    let client = related()
        .object(cluster(true))
        .object(secret)
        .object(leaky)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("report.zip");
    let (text, exit) = invoke(
        &client,
        Command::Report {
            cluster: "db".to_owned(),
            output: output.clone(),
            operator_namespace: "tusk-system".to_owned(),
            log_lines: 100,
        },
    )
    .await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(text.contains("Secret values are not in it"), "{text}");

    let mut archive = zip::ZipArchive::new(std::fs::File::open(&output).unwrap()).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut file, &mut content).unwrap();
        files.insert(file.name().to_owned(), content);
    }
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    for expected in [
        "shop-db/README.txt",
        "shop-db/status.txt",
        "shop-db/status.json",
        "shop-db/cluster.yaml",
        "shop-db/children/secret-db-superuser.yaml",
        "shop-db/children/configmap-db-notes.yaml",
        "shop-db/related/backup-db-nightly-1.yaml",
        "shop-db/related/backupschedule-db-nightly.yaml",
        "shop-db/related/postgresuser-orders.yaml",
        "shop-db/related/servicebinding-web-storefront.yaml",
        "shop-db/related/pooler-db-pooler.yaml",
        "shop-db/events.yaml",
        "shop-db/operator.log",
        "shop-db/patroni.txt",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("other-1")),
        "another Cluster's Backup is not in the report"
    );
    assert!(
        !names.iter().any(|n| n.contains("other-pooler")),
        "another Cluster's Pooler is not in the report"
    );
    for (name, content) in &files {
        assert!(!content.contains(PASSWORD), "{name} holds the password");
        assert!(
            !content.contains("U3VwM3ItczNjcmV0LXB3"),
            "{name} holds the password in base64"
        );
    }
    let secret = &files["shop-db/children/secret-db-superuser.yaml"];
    assert!(
        secret.contains("password: '<redacted: 15 bytes>'"),
        "{secret}"
    );
    assert!(!secret.contains("last-applied"), "{secret}");
    assert!(
        files["shop-db/children/configmap-db-notes.yaml"].contains("the password is <redacted>")
    );
    assert!(
        files["shop-db/operator.log"].contains("no tusk operator pod in namespace tusk-system")
    );
    assert!(files["shop-db/status.txt"].starts_with("Cluster shop/db: Ready"));
    // The user name is not secret: it is not blanked out where it appears.
    assert!(files["shop-db/cluster.yaml"].contains("postgres"));
}

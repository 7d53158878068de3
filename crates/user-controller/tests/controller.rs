//! The reconcile function against the in-memory Kubernetes API, where no PostgreSQL is
//! needed: waiting on the Cluster, refusing bad names, and deletion without SQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{cluster, fake_api, user};

const APP: &str = "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: app}
spec:
  cluster: {name: db}
";

#[tokio::test]
async fn missing_cluster_reports_cluster_not_found_and_writes_no_secret() {
    let api = fake_api(None, Vec::new(), None).await;
    api.create(&user(APP)).await;
    let error = api.settle("app").await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotFound", "{error}");
    assert!(!error.is_permanent(), "retried: the Cluster may appear");
    let (status, reason, message) = api.ready_reason("app").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotFound")
    );
    assert!(message.contains("\"db\""), "{message}");
    assert!(
        api.secrets()
            .get_opt("db-app-credentials")
            .await
            .unwrap()
            .is_none()
    );
    let stored = api.users().get("app").await.unwrap();
    assert_eq!(
        stored.metadata.finalizers,
        Some(vec!["tusk.dev/user".to_owned()])
    );
    api.assert_rbac();
}

#[tokio::test]
async fn cluster_not_ready_waits_and_a_repeat_writes_nothing() {
    let api = fake_api(Some(cluster(false)), Vec::new(), None).await;
    api.create(&user(APP)).await;
    let error = api.settle("app").await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotReady");
    let (status, reason, _) = api.ready_reason("app").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotReady")
    );
    api.recording.clear();
    assert!(api.reconcile("app").await.is_err());
    assert_eq!(
        api.recording.writes(),
        vec![],
        "the same condition again writes nothing"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn reserved_role_name_is_refused_with_a_condition_and_waits_for_a_change() {
    let api = fake_api(Some(cluster(true)), Vec::new(), None).await;
    api.create(&user(&format!("{APP}  roleName: pg_monitor\n")))
        .await;
    let error = api.settle("app").await.unwrap_err();
    assert_eq!(error.reason(), "ReservedRoleName");
    assert!(error.is_permanent());
    let (_, reason, message) = api.ready_reason("app").await;
    assert_eq!(reason, "ReservedRoleName");
    assert!(message.contains("set another spec.roleName"), "{message}");
    api.assert_rbac();
}

#[tokio::test]
async fn overlong_role_name_is_refused_not_truncated() {
    let api = fake_api(Some(cluster(true)), Vec::new(), None).await;
    api.create(&user(&format!("{APP}  roleName: {}\n", "é".repeat(32))))
        .await;
    let error = api.settle("app").await.unwrap_err();
    assert_eq!(error.reason(), "InvalidSpec");
    let (_, _, message) = api.ready_reason("app").await;
    assert!(message.contains("63 bytes"), "{message}");
}

#[tokio::test]
async fn deletion_with_the_cluster_gone_removes_the_finalizer_without_sql() {
    // No PostgreSQL anywhere: any attempt to connect would fail the reconcile.
    let api = fake_api(None, Vec::new(), None).await;
    let dropping = format!("{APP}  deletion: {{policy: Drop, dropOwnedObjects: true}}\n");
    api.create(&user(&dropping)).await;
    let _ = api.settle("app").await;
    assert!(
        api.users()
            .get("app")
            .await
            .unwrap()
            .metadata
            .finalizers
            .is_some()
    );
    api.delete("app").await.unwrap();
    let stored = api.users().get("app").await.unwrap();
    assert!(
        stored.metadata.finalizers.unwrap_or_default().is_empty(),
        "finalizer removed"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn retain_policy_removes_the_finalizer_and_keeps_the_role() {
    let api = fake_api(Some(cluster(true)), Vec::new(), None).await;
    api.create(&user(APP)).await;
    let _ = api.settle("app").await;
    api.delete("app").await.unwrap();
    let stored = api.users().get("app").await.unwrap();
    assert!(stored.metadata.finalizers.unwrap_or_default().is_empty());
    api.assert_rbac();
}

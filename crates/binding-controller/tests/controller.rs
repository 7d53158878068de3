//! The reconcile function against the in-memory Kubernetes API: same-namespace and
//! cross-namespace bindings, consent given, refused and withdrawn, rotation, deletion in both
//! modes, bindings through a Pooler, bad input, and a steady state that writes nothing. The PostgresUser controller's
//! side (status and credentials Secret) is played by the test (support::Harness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{CA_PEM, Harness, binding, ca_secret, cluster, fake_api, namespace, pooler, secret};
use tusk_api::common::Access;

const SAME: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: orders-api, namespace: db}
spec:
  cluster: {name: db}
  database: shop
  schemas: [public, orders]
  secretName: orders-api-db
";

const CROSS: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: storefront, namespace: shop}
spec:
  cluster: {name: db, namespace: db}
  database: shop
  access: ReadOnly
";

const ADMIT_SHOP: &str = "  bindingPolicy: {namespaces: [shop]}\n";

async fn api_with(policy: &str) -> Harness {
    fake_api(
        vec![cluster(true, policy)],
        vec![ca_secret(CA_PEM)],
        vec![namespace("db", &[]), namespace("shop", &[("team", "shop")])],
    )
    .await
}

/// Creates the binding and brings it to Bound: first pass creates the user, the "user
/// controller" applies it, the second pass writes the Secret.
async fn bound(api: &Harness, yaml: &str, password: &str) -> (String, String) {
    let created = api.create(&binding(yaml)).await;
    let (namespace, name) = (created.namespace().unwrap(), created.name_any());
    let error = api.settle(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "UserNotReady", "{error}");
    let user = api.user_of(&namespace, &name).await.unwrap().name_any();
    api.user_controller_applies(&user, password, 1_000).await;
    api.reconcile(&namespace, &name).await.unwrap();
    (namespace, name)
}

#[tokio::test]
async fn same_namespace_binding_gets_an_owned_user_and_then_its_secret() {
    let api = api_with("").await;
    let created = api.create(&binding(SAME)).await;
    let uid = created.uid().unwrap();

    let error = api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(error.reason(), "UserNotReady");
    assert!(!error.is_permanent());
    let user = api.user_of("db", "orders-api").await.unwrap();
    let owner = &user.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("ServiceBinding", uid.as_str(), Some(true))
    );
    assert_eq!(user.spec.grants[0].access, Access::ReadWrite);
    assert_eq!(user.spec.grants[0].schemas, vec!["public", "orders"]);
    assert!(!user.spec.createdb && !user.spec.createrole);
    assert!(api.secret("db", "orders-api-db").await.is_none());
    let stored = api.get("db", "orders-api").await;
    assert!(
        stored.finalizers().is_empty(),
        "same namespace: GC, no finalizer"
    );
    let status = stored.status.unwrap();
    assert_eq!(status.user.as_ref().unwrap().name, user.name_any());
    assert!(status.binding.is_none());
    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(
        api.recording.writes(),
        vec![],
        "waiting writes nothing more"
    );

    api.user_controller_applies(&user.name_any(), "first-password", 1_000)
        .await;
    api.reconcile("db", "orders-api").await.unwrap();
    let (ready, reason, message) = api.ready("db", "orders-api").await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Bound"));
    assert!(message.contains("orders-api-db"), "{message}");
    let secret = api.secret("db", "orders-api-db").await.unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("servicebinding.io/postgresql")
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    let role = user.spec.role_name.clone().unwrap();
    let text = |key| api.secret_text("db", "orders-api-db", key);
    assert_eq!(text("username").await, role);
    assert_eq!(text("password").await, "first-password");
    assert_eq!(text("host").await, "db-rw.db.svc");
    assert_eq!(text("database").await, "shop");
    assert_eq!(text("ca.crt").await, CA_PEM);
    assert_eq!(
        text("uri").await,
        format!("postgresql://{role}:first-password@db-rw.db.svc:5432/shop?sslmode=verify-full")
    );
    let status = api.get("db", "orders-api").await.status.unwrap();
    assert_eq!(status.binding.unwrap().name, "orders-api-db");
    assert_eq!(status.role_name, Some(role));
    let events = api.event_reasons("db", "orders-api").await;
    assert!(
        events.contains(&"UserCreated".to_owned()) && events.contains(&"Bound".to_owned()),
        "{events:?}"
    );

    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap();
    assert_eq!(
        api.recording.writes(),
        vec![],
        "second reconcile writes nothing"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn cross_namespace_binding_without_consent_is_refused_and_creates_nothing() {
    let api = api_with("").await;
    api.create(&binding(CROSS)).await;
    api.reconcile("shop", "storefront").await.unwrap();
    assert_eq!(
        api.get("shop", "storefront").await.finalizers(),
        ["tusk.dev/binding"],
        "first pass: the finalizer, before anything is created"
    );
    let error = api.reconcile("shop", "storefront").await.unwrap_err();
    assert_eq!(error.reason(), "NamespaceNotAllowed");
    let (ready, reason, message) = api.ready("shop", "storefront").await;
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "NamespaceNotAllowed")
    );
    assert!(message.contains("spec.bindingPolicy"), "{message}");
    assert!(api.user_of("shop", "storefront").await.is_none());
    assert!(
        api.users()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(api.secret("shop", "storefront").await.is_none());

    api.recording.clear();
    assert!(api.reconcile("shop", "storefront").await.is_err());
    assert_eq!(
        api.recording.writes(),
        vec![],
        "the same refusal writes nothing"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn cross_namespace_binding_admitted_by_name_is_labelled_and_finalized() {
    let api = api_with(ADMIT_SHOP).await;
    let (namespace, name) = bound(&api, CROSS, "storefront-password").await;
    let stored = api.get(&namespace, &name).await;
    assert_eq!(stored.finalizers(), ["tusk.dev/binding"]);
    let user = api.user_of(&namespace, &name).await.unwrap();
    assert_eq!(user.namespace().as_deref(), Some("db"));
    assert!(
        user.metadata.owner_references.is_none(),
        "owners never cross namespaces"
    );
    let labels = user.labels();
    assert_eq!(labels["tusk.dev/binding-namespace"], "shop");
    assert_eq!(labels["tusk.dev/binding-name"], "storefront");
    assert_eq!(labels["tusk.dev/binding-uid"], stored.uid().unwrap());
    assert_eq!(user.spec.grants[0].access, Access::ReadOnly);
    let (ready, reason, _) = api.ready("shop", "storefront").await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Bound"));
    assert_eq!(
        api.secret_text("shop", "storefront", "host").await,
        "db-rw.db.svc"
    );
    assert_eq!(
        api.secret_text("shop", "storefront", "password").await,
        "storefront-password"
    );

    api.recording.clear();
    api.reconcile("shop", "storefront").await.unwrap();
    assert_eq!(api.recording.writes(), vec![]);
    api.assert_rbac();
}

#[tokio::test]
async fn namespace_selector_admits_by_labels_only() {
    let api = fake_api(
        vec![cluster(
            true,
            "  bindingPolicy:\n    namespaceSelector: {matchLabels: {team: shop}}\n",
        )],
        vec![ca_secret(CA_PEM)],
        vec![
            namespace("shop", &[("team", "shop")]),
            namespace("billing", &[]),
        ],
    )
    .await;
    api.create(&binding(CROSS)).await;
    let admitted = api.settle("shop", "storefront").await.unwrap_err();
    assert_eq!(admitted.reason(), "UserNotReady", "admitted: {admitted}");
    api.create(&binding(
        &CROSS.replace("namespace: shop", "namespace: billing"),
    ))
    .await;
    let refused = api.settle("billing", "storefront").await.unwrap_err();
    assert_eq!(refused.reason(), "NamespaceNotAllowed");
    assert!(
        refused.to_string().contains("namespaceSelector"),
        "{refused}"
    );
    assert!(api.user_of("billing", "storefront").await.is_none());
    api.assert_rbac();
}

#[tokio::test]
async fn withdrawn_consent_revokes_the_user_and_the_secret() {
    let api = api_with(ADMIT_SHOP).await;
    let (namespace, name) = bound(&api, CROSS, "pw").await;
    assert!(api.secret(&namespace, "storefront").await.is_some());

    api.set_cluster_policy(json!({"namespaces": ["billing"]}))
        .await;
    let error = api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "NamespaceNotAllowed");
    assert!(
        api.user_of(&namespace, &name).await.is_none(),
        "user deleted"
    );
    assert!(
        api.secret(&namespace, "storefront").await.is_none(),
        "Secret deleted"
    );
    // (That status.binding and status.user are cleared is checked where the status is built:
    // the in-memory API applies status as a merge patch, which cannot remove a field.)
    let events = api.event_reasons(&namespace, &name).await;
    assert!(events.contains(&"BindingRevoked".to_owned()), "{events:?}");

    api.recording.clear();
    assert!(api.reconcile(&namespace, &name).await.is_err());
    // Revoked once, then quiet: no delete and no event again. (The status is sent again here
    // only because the in-memory API cannot remove status.binding; a server-side apply does.)
    let writes: Vec<_> = api
        .recording
        .writes()
        .into_iter()
        .filter(|call| call.resource != "servicebindings/status")
        .collect();
    assert_eq!(writes, vec![], "revoked once, then quiet");

    // Consent given again: a fresh user and Secret.
    api.set_cluster_policy(json!({"namespaces": ["shop"]}))
        .await;
    let error = api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "UserNotReady");
    assert!(api.user_of(&namespace, &name).await.is_some());
    api.assert_rbac();
}

#[tokio::test]
async fn password_rotation_reaches_the_binding_secret_in_one_reconcile() {
    let api = api_with("").await;
    let (namespace, name) = bound(&api, SAME, "old-password").await;
    let user = api.user_of(&namespace, &name).await.unwrap().name_any();

    // The PostgresUser controller writes the new password first; until PostgreSQL has it,
    // the binding keeps the one that works, and writes nothing.
    api.write_credentials(&user, "new-password", 2_000).await;
    api.recording.clear();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(api.recording.writes(), vec![]);
    assert_eq!(
        api.secret_text(&namespace, "orders-api-db", "password")
            .await,
        "old-password"
    );

    // Applied in PostgreSQL (status): one reconcile carries it to the binding Secret.
    api.report_user_ready(&user, 2_000).await;
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        api.secret_text(&namespace, "orders-api-db", "password")
            .await,
        "new-password"
    );
    assert!(
        api.secret_text(&namespace, "orders-api-db", "uri")
            .await
            .contains(":new-password@")
    );
    let events = api.event_reasons(&namespace, &name).await;
    assert!(
        events.contains(&"CredentialsRotated".to_owned()),
        "{events:?}"
    );
    let (ready, reason, _) = api.ready(&namespace, &name).await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Bound"));
    api.assert_rbac();
}

#[tokio::test]
async fn changing_access_updates_the_user_and_waits_for_it() {
    let api = api_with("").await;
    let (namespace, name) = bound(&api, SAME, "pw").await;
    api.bindings(&namespace)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"access": "ReadOnly", "database": "reports"}})),
        )
        .await
        .unwrap();
    let error = api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "UserNotReady");
    let user = api.user_of(&namespace, &name).await.unwrap();
    assert_eq!(user.spec.grants[0].access, Access::ReadOnly);
    assert_eq!(user.spec.grants[0].database, "reports");
    api.report_user_ready(&user.name_any(), 1_000).await;
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        api.secret_text(&namespace, "orders-api-db", "database")
            .await,
        "reports"
    );
    let events = api.event_reasons(&namespace, &name).await;
    assert!(
        events.contains(&"UserUpdated".to_owned()) && events.contains(&"SecretUpdated".to_owned()),
        "{events:?}"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn deleting_a_same_namespace_binding_leaves_cleanup_to_garbage_collection() {
    let api = api_with("").await;
    let (namespace, name) = bound(&api, SAME, "pw").await;
    let user = api.user_of(&namespace, &name).await.unwrap();
    assert_eq!(
        user.spec.deletion.policy,
        tusk_api::user::DeletionPolicy::Drop
    );
    api.recording.clear();
    assert!(
        api.delete_binding(&namespace, &name).await.is_none(),
        "no finalizer to run"
    );
    assert!(
        api.users()
            .get_opt(&user.name_any())
            .await
            .unwrap()
            .is_none()
    );
    assert!(api.secret(&namespace, "orders-api-db").await.is_none());
    assert_eq!(api.recording.calls(), vec![], "the controller took no part");
}

#[tokio::test]
async fn deleting_a_cross_namespace_binding_deletes_its_user_by_label() {
    let api = api_with(ADMIT_SHOP).await;
    let (namespace, name) = bound(&api, CROSS, "pw").await;
    let user = api.user_of(&namespace, &name).await.unwrap();
    // The PostgresUser controller's finalizer: it drops the role before the object goes.
    api.users()
        .patch(
            &user.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": ["tusk.dev/user"]}})),
        )
        .await
        .unwrap();
    // An unrelated PostgresUser of the same Cluster stays.
    api.create(&binding(SAME)).await;
    api.reconcile("db", "orders-api").await.unwrap_err();

    let result = api.delete_binding(&namespace, &name).await.unwrap();
    result.unwrap();
    let deleting = api.users().get(&user.name_any()).await.unwrap();
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "the user is being deleted; its controller drops the role"
    );
    assert!(
        api.bindings(&namespace)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(api.secret(&namespace, "storefront").await.is_none());
    assert!(api.user_of("db", "orders-api").await.is_some());
    let events = api.event_reasons(&namespace, &name).await;
    assert!(events.contains(&"Unbound".to_owned()), "{events:?}");
    api.assert_rbac();
}

#[tokio::test]
async fn a_clashing_secret_is_refused_and_never_overwritten() {
    let api = fake_api(
        vec![cluster(true, "")],
        vec![
            ca_secret(CA_PEM),
            secret("db", "orders-api-db", &[("config", b"someone else's")]),
        ],
        Vec::new(),
    )
    .await;
    api.create(&binding(SAME)).await;
    api.reconcile("db", "orders-api").await.unwrap_err();
    let user = api.user_of("db", "orders-api").await.unwrap().name_any();
    api.user_controller_applies(&user, "pw", 1_000).await;
    let error = api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(error.reason(), "SecretConflict");
    let (_, reason, message) = api.ready("db", "orders-api").await;
    assert_eq!(reason, "SecretConflict");
    assert!(
        message.contains("orders-api-db") && message.contains("spec.secretName"),
        "{message}"
    );
    let untouched = api.secret("db", "orders-api-db").await.unwrap();
    assert_eq!(
        untouched.data.unwrap().keys().collect::<Vec<_>>(),
        ["config"]
    );
    assert!(untouched.metadata.owner_references.is_none());

    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(api.recording.writes(), vec![]);

    api.secrets("db")
        .delete("orders-api-db", &Default::default())
        .await
        .unwrap();
    api.reconcile("db", "orders-api").await.unwrap();
    assert_eq!(
        api.secret_text("db", "orders-api-db", "password").await,
        "pw"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn missing_cluster_reports_cluster_not_found_and_keeps_what_exists() {
    let api = fake_api(Vec::new(), Vec::new(), Vec::new()).await;
    api.create(&binding(SAME)).await;
    let error = api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotFound");
    assert!(
        !error.is_permanent(),
        "retried with backoff: the Cluster may appear"
    );
    assert!(api.user_of("db", "orders-api").await.is_none());
    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(api.recording.writes(), vec![]);

    // A bound binding whose Cluster is deleted reports it and keeps its Secret.
    let api = api_with("").await;
    let (namespace, name) = bound(&api, SAME, "pw").await;
    api.clusters()
        .delete("db", &Default::default())
        .await
        .unwrap();
    let error = api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotFound");
    let (ready, _, message) = api.ready(&namespace, &name).await;
    assert_eq!(ready, "False");
    assert!(message.contains("does not exist"), "{message}");
    assert!(api.secret(&namespace, "orders-api-db").await.is_some());
    api.assert_rbac();
}

#[tokio::test]
async fn cluster_not_ready_shows_through_as_the_binding_condition() {
    let api = fake_api(
        vec![cluster(false, "")],
        vec![ca_secret(CA_PEM)],
        Vec::new(),
    )
    .await;
    api.create(&binding(SAME)).await;
    let error = api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotReady");
    let (_, _, message) = api.ready("db", "orders-api").await;
    assert!(message.contains("Creating"), "{message}");
    assert!(
        api.user_of("db", "orders-api").await.is_some(),
        "the user waits with it"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn another_bindings_user_is_never_taken_over() {
    let api = api_with("").await;
    api.create(&binding(SAME)).await;
    let identity = api.identity("db", "orders-api").await;
    let mut squatter = tusk_binding_controller::desired::desired_user(
        &api.get("db", "orders-api").await,
        &identity,
    )
    .unwrap();
    squatter.metadata.owner_references = None;
    squatter
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tusk.dev/binding-uid".into(), "someone-else".into());
    api.users()
        .create(&Default::default(), &squatter)
        .await
        .unwrap();
    let error = api.reconcile("db", "orders-api").await.unwrap_err();
    assert_eq!(error.reason(), "UserOwnedElsewhere");
    let kept = api.users().get(&identity.user_name()).await.unwrap();
    assert_eq!(kept.labels()["tusk.dev/binding-uid"], "someone-else");
    api.assert_rbac();
}

/// `CROSS` (namespace `shop`, Cluster `db` in namespace `db`) through Pooler `db-pooler`.
fn through_pooler(yaml: &str) -> String {
    format!("{yaml}  pooler: {{name: db-pooler}}\n")
}

/// The calls recorded since the last `clear` that wrote to `resource`.
fn writes_to(api: &Harness, resource: &str) -> Vec<String> {
    api.recording
        .writes()
        .into_iter()
        .filter(|call| call.resource == resource)
        .map(|call| format!("{} {}", call.verb, call.name.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn binding_through_a_pooler_points_its_secret_at_the_pooler_service() {
    let api = api_with(ADMIT_SHOP).await;
    api.poolers()
        .create(
            &Default::default(),
            &pooler("db-pooler", "db", "Transaction"),
        )
        .await
        .unwrap();
    let (namespace, name) = bound(&api, &through_pooler(CROSS), "pooled-password").await;
    let (ready, reason, message) = api.ready(&namespace, &name).await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Bound"));
    assert!(
        message.contains("through Pooler \"db-pooler\""),
        "{message}"
    );
    let role = api
        .user_of(&namespace, &name)
        .await
        .unwrap()
        .spec
        .role_name
        .unwrap();
    let text = |key| api.secret_text("shop", "storefront", key);
    assert_eq!(text("host").await, "db-pooler.db.svc");
    assert_eq!(text("port").await, "5432");
    assert_eq!(text("username").await, role, "the same dedicated user");
    assert_eq!(text("password").await, "pooled-password");
    assert_eq!(
        text("ca.crt").await,
        CA_PEM,
        "the Cluster's CA issued the Pooler's certificate"
    );
    assert_eq!(
        text("uri").await,
        format!(
            "postgresql://{role}:pooled-password@db-pooler.db.svc:5432/shop?sslmode=verify-full"
        )
    );
    assert_eq!(
        text("jdbc-url").await,
        "jdbc:postgresql://db-pooler.db.svc:5432/shop?sslmode=verify-full&prepareThreshold=0"
    );

    api.recording.clear();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        api.recording.writes(),
        vec![],
        "second reconcile writes nothing"
    );

    // The Pooler switched to session mode: prepared statements work again.
    api.poolers()
        .patch(
            "db-pooler",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"pgbouncer": {"poolMode": "Session"}}})),
        )
        .await
        .unwrap();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        text("jdbc-url").await,
        "jdbc:postgresql://db-pooler.db.svc:5432/shop?sslmode=verify-full"
    );
    api.assert_rbac();
}

#[tokio::test]
async fn removing_the_pooler_points_the_secret_back_at_the_cluster_and_keeps_the_user() {
    let api = api_with(ADMIT_SHOP).await;
    api.poolers()
        .create(&Default::default(), &pooler("db-pooler", "db", "Statement"))
        .await
        .unwrap();
    let (namespace, name) = bound(&api, &through_pooler(CROSS), "pw").await;
    let user_before = api.user_of(&namespace, &name).await.unwrap();

    api.set_binding_pooler(&namespace, &name, None).await;
    api.recording.clear();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        api.secret_text("shop", "storefront", "host").await,
        "db-rw.db.svc"
    );
    assert_eq!(
        api.secret_text("shop", "storefront", "jdbc-url").await,
        "jdbc:postgresql://db-rw.db.svc:5432/shop?sslmode=verify-full"
    );
    assert_eq!(writes_to(&api, "secrets"), ["patch storefront"]);
    assert_eq!(writes_to(&api, "postgresusers"), Vec::<String>::new());
    let user_after = api.user_of(&namespace, &name).await.unwrap();
    assert_eq!(
        user_after.spec, user_before.spec,
        "the PostgresUser does not change"
    );
    let events = api.event_reasons(&namespace, &name).await;
    assert!(events.contains(&"SecretUpdated".to_owned()), "{events:?}");

    api.recording.clear();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(api.recording.writes(), vec![]);
    api.assert_rbac();
}

#[tokio::test]
async fn a_missing_pooler_is_pooler_not_found_and_the_direct_secret_stays_until_it_exists() {
    let api = api_with("").await;
    let (namespace, name) = bound(&api, SAME, "pw").await;
    api.set_binding_pooler(&namespace, &name, Some("db-pooler"))
        .await;

    let error = api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(error.reason(), "PoolerNotFound");
    assert!(
        !error.is_permanent(),
        "retried: the Pooler may be created next"
    );
    let (ready, reason, message) = api.ready(&namespace, &name).await;
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "PoolerNotFound")
    );
    assert!(
        message.contains("\"db-pooler\" does not exist in namespace \"db\"")
            && message.contains("spec.pooler"),
        "{message}"
    );
    assert_eq!(
        api.secret_text(&namespace, "orders-api-db", "host").await,
        "db-rw.db.svc",
        "the Secret that works stays"
    );
    api.recording.clear();
    api.reconcile(&namespace, &name).await.unwrap_err();
    assert_eq!(
        api.recording.writes(),
        vec![],
        "the same wait writes nothing"
    );

    // The Pooler appears (its watch event brings this pass): the Secret moves to it.
    api.poolers()
        .create(&Default::default(), &pooler("db-pooler", "db", "Session"))
        .await
        .unwrap();
    api.reconcile(&namespace, &name).await.unwrap();
    assert_eq!(
        api.secret_text(&namespace, "orders-api-db", "host").await,
        "db-pooler.db.svc"
    );
    let (ready, reason, _) = api.ready(&namespace, &name).await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Bound"));
    api.assert_rbac();
}

#[tokio::test]
async fn a_pooler_of_another_cluster_is_refused_with_what_to_fix() {
    let api = api_with(ADMIT_SHOP).await;
    api.poolers()
        .create(
            &Default::default(),
            &pooler("db-pooler", "reports", "Transaction"),
        )
        .await
        .unwrap();
    api.create(&binding(&through_pooler(CROSS))).await;
    let error = api.settle("shop", "storefront").await.unwrap_err();
    assert_eq!(error.reason(), "PoolerClusterMismatch");
    let (ready, reason, message) = api.ready("shop", "storefront").await;
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "PoolerClusterMismatch")
    );
    assert!(
        message.contains("pools Cluster \"reports\", not Cluster \"db\"")
            && message.contains("spec.cluster.name is \"db\""),
        "{message}"
    );
    assert!(api.secret("shop", "storefront").await.is_none());

    api.recording.clear();
    api.reconcile("shop", "storefront").await.unwrap_err();
    assert_eq!(
        api.recording.writes(),
        vec![],
        "the same refusal writes nothing"
    );
    api.assert_rbac();
}

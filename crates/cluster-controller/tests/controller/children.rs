//! The children a Cluster gets: created with owner references, a second pass that writes
//! nothing, deleted or edited children put back, refusals that create nothing, Secrets that
//! keep their passwords, the monitoring Secret, and only calls the chart grants.

use super::*;

#[tokio::test]
async fn first_reconcile_creates_every_child_owned_by_the_cluster() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let uid = h.cluster().await.uid().unwrap();
    let owned_by_cluster = |meta: &kube::api::ObjectMeta| {
        meta.owner_references.as_ref().is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == uid && r.controller == Some(true) && r.kind == "Cluster")
        })
    };

    let statefulsets = h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut names: Vec<String> = statefulsets.iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(names, vec!["db-1", "db-2", "db-3"]);
    for sts in &statefulsets {
        assert!(owned_by_cluster(&sts.metadata), "{}", sts.name_any());
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.replicas, Some(1));
    }
    let mut services: Vec<String> = h
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .inspect(|s| assert!(owned_by_cluster(&s.metadata)))
        .map(|s| s.name_any())
        .collect();
    services.sort();
    assert_eq!(services, vec!["db-pods", "db-r", "db-ro", "db-rw"]);
    let rw = h.api::<Service>().get("db-rw").await.unwrap();
    assert!(
        rw.spec.unwrap().selector.is_none(),
        "-rw has no selector: Patroni owns its Endpoints"
    );

    assert!(owned_by_cluster(
        &h.api::<ConfigMap>()
            .get("db-patroni")
            .await
            .unwrap()
            .metadata
    ));
    assert!(owned_by_cluster(
        &h.api::<ServiceAccount>()
            .get("db-patroni")
            .await
            .unwrap()
            .metadata
    ));
    assert!(owned_by_cluster(
        &h.api::<Role>().get("db-patroni").await.unwrap().metadata
    ));
    assert!(owned_by_cluster(
        &h.api::<RoleBinding>()
            .get("db-patroni")
            .await
            .unwrap()
            .metadata
    ));
    assert!(owned_by_cluster(
        &h.api::<PodDisruptionBudget>()
            .get("db")
            .await
            .unwrap()
            .metadata
    ));
    let secrets = h
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(secrets.iter().any(|s| s.name_any() == "db-superuser"));
    assert!(secrets.iter().all(|s| owned_by_cluster(&s.metadata)));

    let status = h.cluster().await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "Provisioning");
    assert_eq!(
        status.observed_generation,
        h.cluster().await.metadata.generation
    );
}

#[tokio::test]
async fn second_reconcile_writes_nothing() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![], "steady state must not write");
}

#[tokio::test]
async fn deleted_children_are_restored() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.api::<Service>()
        .delete("db-rw", &DeleteParams::default())
        .await
        .unwrap();
    h.api::<ConfigMap>()
        .delete("db-patroni", &DeleteParams::default())
        .await
        .unwrap();
    h.api::<StatefulSet>()
        .delete("db-2", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile().await;
    assert!(h.api::<Service>().get_opt("db-rw").await.unwrap().is_some());
    assert!(
        h.api::<ConfigMap>()
            .get_opt("db-patroni")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        h.api::<StatefulSet>()
            .get_opt("db-2")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn edited_child_is_put_back() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let api = h.api::<Service>();
    let mut ro = api.get("db-ro").await.unwrap();
    ro.spec.as_mut().unwrap().selector =
        Some(BTreeMap::from([("app".to_owned(), "other".to_owned())]));
    api.replace("db-ro", &PostParams::default(), &ro)
        .await
        .unwrap();
    h.reconcile().await;
    let selector = api
        .get("db-ro")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(
        selector.get(labels::ROLE).map(String::as_str),
        Some("replica")
    );
}

#[tokio::test]
async fn forbidden_parameter_is_refused_and_nothing_is_created() {
    // The CRD refuses this; an object stored before the rule existed still gets a clear answer.
    let h = Harness::new(cluster(
        "  postgresVersion: 17\n  storage: {size: 1Gi}\n  postgresql: {parameters: {wal_level: minimal}}\n",
    ))
    .await;
    h.reconcile().await;
    assert!(
        h.api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let ready = find_condition(&h.cluster().await.status.unwrap().conditions, types::READY)
        .cloned()
        .unwrap();
    assert_eq!(ready.reason, "ForbiddenParameter");
    assert!(ready.message.contains("wal_level"), "{}", ready.message);
}

#[tokio::test]
async fn every_call_is_granted_by_the_chart() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

#[tokio::test]
async fn a_secret_whose_labels_were_removed_keeps_its_password() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let api = h.api::<Secret>();
    let mut superuser = api.get("db-superuser").await.unwrap();
    let password = superuser.data.as_ref().unwrap()["password"].clone();
    superuser.metadata.labels = None;
    api.replace("db-superuser", &PostParams::default(), &superuser)
        .await
        .unwrap();
    h.reconcile().await;
    let after = api.get("db-superuser").await.unwrap();
    assert_eq!(
        after.data.unwrap()["password"],
        password,
        "an existing password is never replaced"
    );
}

#[tokio::test]
async fn monitoring_gets_its_own_secret_and_the_exporter_logs_in_with_it() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let secret = h.api::<Secret>().get("db-monitor").await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["username"].0, b"tusk_monitor");
    assert_eq!(data["password"].0.len(), 40);
    let pod = h
        .api::<StatefulSet>()
        .get("db-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let exporter = pod
        .containers
        .iter()
        .find(|c| c.name == "exporter")
        .unwrap();
    let env = exporter.env.clone().unwrap();
    let password = env
        .iter()
        .position(|e| e.name == "TUSK_MONITOR_PASSWORD")
        .unwrap();
    let dsn = env
        .iter()
        .position(|e| e.name == "DATA_SOURCE_NAME")
        .unwrap();
    assert!(
        password < dsn,
        "Kubernetes expands $(VAR) only from earlier variables"
    );
    let reference = env[password]
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("db-monitor", "password")
    );
    assert!(
        env[dsn]
            .value
            .as_deref()
            .unwrap()
            .contains("password=$(TUSK_MONITOR_PASSWORD)")
    );

    // Monitoring off: no Secret is made for it.
    let h = Harness::new(cluster(
        "  postgresVersion: 17\n  storage: {size: 1Gi}\n  monitoring: {enabled: false}\n",
    ))
    .await;
    h.reconcile().await;
    assert!(
        h.api::<Secret>()
            .get_opt("db-monitor")
            .await
            .unwrap()
            .is_none()
    );
}

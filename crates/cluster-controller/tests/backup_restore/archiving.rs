//! The backup side of a Cluster: the pgBackRest ConfigMap and repository host, the stanza Job
//! and the ContinuousArchiving condition it drives (also from pg_stat_archiver), an object-store
//! repository.

use super::*;

#[tokio::test]
async fn config_map_and_repository_host_are_created_owned_and_restricted() {
    let h = Harness::new(&[cluster("db", VOLUME)]).await;
    h.reconcile("db").await;
    let uid = h.cluster("db").await.uid().unwrap();

    let cm = h
        .api::<ConfigMap>()
        .get("db-pgbackrest-config")
        .await
        .unwrap();
    assert!(owned_by(&cm.metadata, &uid));
    let data = cm.data.unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["pgbackrest.conf", "repo-host.conf", "stanza.conf"]);
    assert!(data["pgbackrest.conf"].contains("repo1-host=db-repo-host.db.svc"));
    assert!(data["repo-host.conf"].contains("repo1-path=/pgbackrest/repo1/db/db"));
    assert!(data["repo-host.conf"].contains("tls-server-auth=pgbackrest-client=db"));

    let sts = h.api::<StatefulSet>().get("db-repo-host").await.unwrap();
    assert!(owned_by(&sts.metadata, &uid));
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("repo"));
    assert_eq!(
        claims[0]
            .spec
            .as_ref()
            .unwrap()
            .storage_class_name
            .as_deref(),
        Some("standard")
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.command.as_ref().unwrap(),
        &["pgbackrest", "server"]
    );
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["tusk.dev/cluster"], "db");
    assert_eq!(labels["app.kubernetes.io/component"], "repo-host");
    assert_ne!(
        labels["app.kubernetes.io/component"], "database",
        "the repository host is not an instance: -r and the PDB must not select it"
    );

    let service = h.api::<Service>().get("db-repo-host").await.unwrap();
    assert!(owned_by(&service.metadata, &uid));
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 8432);

    // The instances mount the configuration in both pgBackRest containers.
    let instance = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let pod = instance.spec.unwrap().template.spec.unwrap();
    for name in ["postgres", "pgbackrest"] {
        let container = pod.containers.iter().find(|c| c.name == name).unwrap();
        let mounts = container.volume_mounts.as_ref().unwrap();
        assert!(
            mounts.iter().any(|m| m.mount_path == "/etc/pgbackrest"),
            "{name}"
        );
        assert!(
            mounts.iter().any(|m| m.mount_path == "/etc/pgbackrest/tls"),
            "{name}"
        );
    }
    let (status, reason, _) = h.archiving("db").await.unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "StanzaMissing")
    );
}

#[tokio::test]
async fn continuous_archiving_follows_the_stanza_job() {
    let h = Harness::new(&[cluster("db", VOLUME)]).await;
    h.reconcile("db").await;
    assert!(
        h.api::<Job>().get_opt("db-stanza").await.unwrap().is_none(),
        "not before Ready"
    );

    h.start_instances("db").await;
    h.reconcile("db").await;
    assert!(
        h.api::<Job>().get_opt("db-stanza").await.unwrap().is_none(),
        "not before the repository host is ready"
    );
    let (_, _, message) = h.archiving("db").await.unwrap();
    assert!(message.contains("repository host"), "{message}");

    h.repo_host_ready("db").await;
    h.reconcile("db").await;
    let job = h.api::<Job>().get("db-stanza").await.unwrap();
    let uid = h.cluster("db").await.uid().unwrap();
    assert!(owned_by(&job.metadata, &uid));
    let pod = job.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let script = &container.command.as_ref().unwrap()[2];
    assert_eq!(
        script,
        &tusk_cluster_controller::plan::pgbackrest::stanza_script(17)
    );
    assert!(script.starts_with("pgbackrest --stanza=db stanza-create || "));
    assert!(script.ends_with(" && exec pgbackrest --stanza=db check"));
    let env = container.env.as_ref().unwrap();
    let host = env
        .iter()
        .find(|e| e.name == "PGBACKREST_PG1_HOST")
        .unwrap();
    // The primary's pod, by the name cluster DNS serves (`<pod>.<serviceName>.<ns>.svc`): an
    // instance name there (`db-1.db-pods…`) resolves nowhere and the Job retries until its
    // deadline.
    let served = pod_dns_names(&h).await;
    let host = host.value.clone().unwrap();
    assert!(served.contains(&host), "{host} is not served: {served:?}");
    assert_eq!(host, "db-1-0.db-pods.db.svc");
    assert!(
        pod.affinity.unwrap().pod_affinity.is_some(),
        "runs beside the repository host's ReadWriteOnce volume"
    );
    assert!(pod.volumes.unwrap().iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "repo-db-repo-host-0")
    }));
    let (status, reason, message) = h.archiving("db").await.unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "StanzaMissing")
    );
    assert!(message.contains("creating"), "{message}");

    h.finish_stanza_job("db", "Complete", 1).await;
    h.reconcile("db").await;
    let (status, reason, _) = h.archiving("db").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Archiving"));

    // Steady: nothing is written.
    h.recording.clear();
    h.reconcile("db").await;
    assert_eq!(h.recording.writes(), vec![], "steady state must not write");

    // A changed repository configuration re-runs the stanza Job.
    h.update_spec("db", |c| {
        c.spec.backup.as_mut().unwrap().repositories[0]
            .retention
            .full = 7;
    })
    .await;
    h.reconcile("db").await;
    assert!(h.api::<Job>().get_opt("db-stanza").await.unwrap().is_none());
    let (status, _, _) = h.archiving("db").await.unwrap();
    assert_eq!(status, "False");
    h.reconcile("db").await;
    assert!(h.api::<Job>().get_opt("db-stanza").await.unwrap().is_some());

    // A failure is reported, then retried after a while.
    h.finish_stanza_job("db", "Failed", 10).await;
    h.reconcile("db").await;
    let (status, reason, message) = h.archiving("db").await.unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "StanzaMissing")
    );
    assert!(
        message.contains("failed") && message.contains("kubectl logs job/db-stanza"),
        "{message}"
    );
    assert!(
        h.api::<Job>().get_opt("db-stanza").await.unwrap().is_some(),
        "kept for its logs"
    );
    h.finish_stanza_job("db", "Failed", 600).await;
    h.reconcile("db").await;
    assert!(
        h.api::<Job>().get_opt("db-stanza").await.unwrap().is_none(),
        "retried"
    );

    // Without a repository: no condition, no repository host, no ConfigMap.
    h.update_spec("db", |c| c.spec.backup = None).await;
    h.reconcile("db").await;
    assert_eq!(h.archiving("db").await, None);
    assert!(
        h.api::<StatefulSet>()
            .get_opt("db-repo-host")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.api::<Service>()
            .get_opt("db-repo-host")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.api::<ConfigMap>()
            .get_opt("db-pgbackrest-config")
            .await
            .unwrap()
            .is_none()
    );

    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

#[tokio::test]
async fn object_store_repository_needs_no_repository_host() {
    let h = Harness::new(&[cluster("db", S3)]).await;
    h.reconcile("db").await;
    assert!(
        h.api::<StatefulSet>()
            .get_opt("db-repo-host")
            .await
            .unwrap()
            .is_none()
    );
    let cm = h
        .api::<ConfigMap>()
        .get("db-pgbackrest-config")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert!(!data.contains_key("repo-host.conf"));
    assert!(data["pgbackrest.conf"].contains("repo1-s3-bucket=backups"));
    assert!(
        !data["pgbackrest.conf"].contains("AWS_"),
        "no secret in the ConfigMap"
    );
    let instance = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let pod = instance.spec.unwrap().template.spec.unwrap();
    let postgres = pod
        .containers
        .iter()
        .find(|c| c.name == "postgres")
        .unwrap();
    let key = postgres
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "PGBACKREST_REPO1_S3_KEY")
        .unwrap();
    let selector = key
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("minio", "AWS_ACCESS_KEY_ID")
    );

    // Ready with a primary: the stanza Job starts at once (no repository host to wait for).
    h.start_instances("db").await;
    h.reconcile("db").await;
    let job = h.api::<Job>().get("db-stanza").await.unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert!(pod.affinity.is_none());
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

#[tokio::test]
async fn archive_failures_in_pg_stat_archiver_turn_the_condition_false() {
    let h = Harness::new(&[cluster("db", S3)]).await;
    h.reconcile("db").await;
    h.start_instances("db").await;
    h.reconcile("db").await;
    h.finish_stanza_job("db", "Complete", 1).await;
    h.reconcile("db").await;
    let cluster = h.cluster("db").await;

    // The primary's view is injected where observe() would put it.
    let mut observed = Observed::default();
    observed.backup.stanza_job = Some(h.api::<Job>().get("db-stanza").await.unwrap());
    for pod in h.api::<Pod>().list(&ListParams::default()).await.unwrap() {
        observed.pods.insert(pod.name_any(), pod);
    }
    for sts in h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        observed.statefulsets.insert(sts.name_any(), sts);
    }
    let now = Time(jiff::Timestamp::now());
    let base = 1_795_000_000_000_000_i64;
    observed.backup.archiver = Some(ArchiverStats {
        archived_count: 12,
        last_archived_wal: Some("00000001000000000000000B".into()),
        last_archived_micros: Some(base),
        failed_count: 3,
        last_failed_wal: Some("00000001000000000000000C".into()),
        last_failed_micros: Some(base + 60_000_000),
    });
    let desired = plan(&cluster, &observed, &Images::default(), now.clone()).unwrap();
    let condition =
        find_condition(&desired.status.conditions, types::CONTINUOUS_ARCHIVING).unwrap();
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "ArchiveFailing");
    assert!(
        condition.message.contains("00000001000000000000000C")
            && condition.message.contains("2026-"),
        "{}",
        condition.message
    );
    let events = pgbackrest::transitions(cluster.status.as_ref(), &desired.status);
    assert!(
        events
            .iter()
            .any(|e| e.warning && e.reason == "ArchiveFailing")
    );

    // A later success clears it.
    observed
        .backup
        .archiver
        .as_mut()
        .unwrap()
        .last_archived_micros = Some(base + 120_000_000);
    let desired = plan(&cluster, &observed, &Images::default(), now).unwrap();
    let condition =
        find_condition(&desired.status.conditions, types::CONTINUOUS_ARCHIVING).unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Archiving")
    );
}

//! A restoring Cluster: the pgBackRest bootstrap it renders, a missing source waited for, the
//! timeline history read after recovery, and the backup and restore examples.

use super::*;

const RESTORED: &str = "  postgresVersion: 17
  storage: {size: 10Gi}
  bootstrap:
    restore:
      cluster: db
      target: {time: '2026-11-22T10:15:00Z'}
  backup:
    repositories:
      - name: repo1
        s3:
          bucket: backups
          endpoint: minio.storage.svc:9000
          region: any
          uriStyle: Path
          credentialsSecret: {name: minio}
";

#[tokio::test]
async fn restore_cluster_renders_the_pgbackrest_bootstrap() {
    let h = Harness::new(&[cluster("db", S3), cluster("db-restored", RESTORED)]).await;
    h.reconcile("db-restored").await;

    // Patroni bootstraps with pgBackRest, to the target, then promotes.
    let patroni = h
        .api::<ConfigMap>()
        .get("db-restored-patroni")
        .await
        .unwrap();
    let yaml: serde_json::Value =
        serde_yaml_ng::from_str(&patroni.data.unwrap()["patroni.yaml"]).unwrap();
    let bootstrap = &yaml["bootstrap"];
    assert_eq!(bootstrap["method"], "pgbackrest");
    assert_eq!(
        bootstrap["pgbackrest"]["command"],
        "pgbackrest --config=/etc/pgbackrest/restore/pgbackrest.conf --stanza=db --type=time '--target=2026-11-22 10:15:00+00' --target-action=promote restore"
    );
    assert_eq!(bootstrap["pgbackrest"]["keep_existing_recovery_conf"], true);
    assert_eq!(bootstrap["pgbackrest"]["no_params"], true);
    assert_eq!(
        bootstrap["pgbackrest"]["recovery_conf"]["recovery_target_action"],
        "promote"
    );

    // The source is read as repo5 from a file of its own; the Cluster archives to its path.
    let cm = h
        .api::<ConfigMap>()
        .get("db-restored-pgbackrest-config")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert!(
        data["restore.conf"].contains("repo5-path=/db/db\n"),
        "{}",
        data["restore.conf"]
    );
    assert!(!data["restore.conf"].contains("repo1-"));
    assert!(data["pgbackrest.conf"].contains("repo1-path=/db/db-restored\n"));
    assert!(
        !data["pgbackrest.conf"].contains("repo5"),
        "archive-push never sees the source"
    );

    let sts = h.api::<StatefulSet>().get("db-restored-1").await.unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let postgres = pod
        .containers
        .iter()
        .find(|c| c.name == "postgres")
        .unwrap();
    let source_key = postgres
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "PGBACKREST_REPO5_S3_KEY")
        .unwrap();
    assert_eq!(
        source_key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .optional,
        Some(true),
        "pods start after the source is gone"
    );
    assert!(
        postgres
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/etc/pgbackrest/restore")
    );

    // Once it runs, what happens to the source does not stop it: an upgrade to another
    // major, then its deletion.
    h.update_spec("db", |c| c.spec.postgres_version = 18).await;
    h.reconcile("db-restored").await;
    let status = h.cluster("db-restored").await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_ne!(ready.reason, "RestoreVersionMismatch", "{}", ready.message);
    h.api::<Cluster>()
        .delete("db", &Default::default())
        .await
        .unwrap();
    h.reconcile("db-restored").await;
    assert!(
        h.api::<StatefulSet>()
            .get_opt("db-restored-1")
            .await
            .unwrap()
            .is_some()
    );
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

#[tokio::test]
async fn restore_waits_for_a_missing_source_and_refuses_the_sources_own_path() {
    let h = Harness::new(&[cluster("db-restored", RESTORED)]).await;
    h.reconcile("db-restored").await;
    assert!(
        h.api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing is created without the source"
    );
    let status = h.cluster("db-restored").await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(ready.reason, "RestoreSourceNotFound");
    assert!(ready.message.contains("\"db\""), "{}", ready.message);

    let same_path = RESTORED.replace(
        "credentialsSecret: {name: minio}",
        "credentialsSecret: {name: minio}\n        path: /db/db",
    );
    let h = Harness::new(&[cluster("db", S3), cluster("db-restored", &same_path)]).await;
    h.reconcile("db-restored").await;
    let status = h.cluster("db-restored").await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(ready.reason, "RestoreWouldOverwriteSource");
    assert!(
        h.api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[test]
fn recovery_outcome_reads_the_timeline_history() {
    let history = "1\t0/3016090\tbefore 2026-11-22 10:15:00+00\n";
    assert_eq!(
        backup::recovery_outcome(2, history).as_deref(),
        Some("timeline 2 began at 0/3016090 after recovery stopped: before 2026-11-22 10:15:00+00")
    );
    let two =
        "1\t0/3016090\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
    assert!(
        backup::recovery_outcome(3, two)
            .unwrap()
            .ends_with("at restore point \"x\"")
    );
    assert_eq!(backup::recovery_outcome(1, ""), None);
}

fn example(file: &str) -> Cluster {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/examples")
            .join(file),
    )
    .unwrap();
    let mut cluster: Cluster = serde_yaml_ng::from_str(&text).unwrap();
    cluster.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    cluster
}

#[test]
fn backup_and_restore_examples_render_without_a_problem() {
    let source = example("cluster.yaml");
    let now = Time(jiff::Timestamp::from_second(1_795_000_000).unwrap());
    for file in [
        "cluster-backup-volume.yaml",
        "cluster-backup-s3.yaml",
        "cluster-restore.yaml",
        "cluster-restore-inline.yaml",
        "cluster-restore-backup-set.yaml",
        "cluster-restore-lsn.yaml",
    ] {
        let cluster = example(file);
        let mut observed = Observed::default();
        observed.backup.restore_source = Some(source.clone());
        let desired = plan(&cluster, &observed, &Images::default(), now.clone()).unwrap();
        assert!(desired.problem.is_none(), "{file}: {:?}", desired.problem);
        let data = desired.backup.config_map.clone().unwrap().data.unwrap();
        if cluster.spec.bootstrap.is_some() {
            let restore = &data["restore.conf"];
            assert!(
                restore.contains("pg1-path=/pgdata/pg17"),
                "{file}: {restore}"
            );
            let own = data.get("pgbackrest.conf").cloned().unwrap_or_default();
            for line in restore.lines().filter(|l| l.starts_with("repo")) {
                assert!(
                    !own.contains(line),
                    "{file}: {line} in the instances' configuration"
                );
            }
        }
        if cluster.spec.has_repository() {
            assert!(data.contains_key("pgbackrest.conf"), "{file}");
        }
    }
    // The inline source: its own path in the same bucket as the new Cluster's.
    let inline = example("cluster-restore-inline.yaml");
    let desired = plan(&inline, &Observed::default(), &Images::default(), now).unwrap();
    let data = desired.backup.config_map.unwrap().data.unwrap();
    assert!(data["restore.conf"].contains("repo5-path=/shop/orders\n"));
    assert!(data["restore.conf"].contains("repo5-cipher-type=aes-256-cbc\n"));
    assert!(data["pgbackrest.conf"].contains("repo1-path=/db/orders-recovered\n"));
}

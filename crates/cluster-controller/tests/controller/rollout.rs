//! Status that follows the instances, the rolling update, shutdown, and which pods count as
//! instances.

use super::*;

#[tokio::test]
async fn status_follows_the_instances() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(2, false).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    assert_eq!(
        find_condition(&status.conditions, types::READY)
            .unwrap()
            .status,
        "False"
    );

    h.start_pods(2, true).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(ready.status, "True", "{}", ready.message);
    assert_eq!(status.current_primary.as_deref(), Some("db-2"));
    assert_eq!(status.ready_instances, 3);
    assert_eq!(status.postgres_version, Some(17));
    assert_eq!(
        find_condition(&status.conditions, types::DEGRADED)
            .unwrap()
            .status,
        "False"
    );
    assert_eq!(
        find_condition(&status.conditions, types::PROGRESSING)
            .unwrap()
            .status,
        "False"
    );
    assert_eq!(status.endpoints.unwrap().read_write, "db-rw.db.svc:5432");
    let running = h
        .api::<StatefulSet>()
        .get("db-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert!(running.is_some());
    assert_eq!(status.image, running, "the image every instance runs");
}

#[tokio::test]
async fn spec_change_starts_a_rolling_update_with_a_replica() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let mut changed = h.cluster().await;
    changed.spec.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()),
        )])),
        ..Default::default()
    });
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &changed)
        .await
        .unwrap();
    h.recording.clear();
    h.reconcile().await;
    let deleted: Vec<_> = h
        .recording
        .writes()
        .into_iter()
        .filter(|c| c.verb == "delete")
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].resource, "pods");
    assert_eq!(
        deleted[0].name.as_deref(),
        Some("db-3-0"),
        "highest replica first, never the primary"
    );
    let progressing = find_condition(
        &h.cluster().await.status.unwrap().conditions,
        types::PROGRESSING,
    )
    .cloned()
    .unwrap();
    assert_eq!(progressing.status, "True");
    assert_eq!(progressing.reason, "RollingUpdate");
    let hash = h
        .api::<StatefulSet>()
        .get("db-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()[RESTART_HASH_ANNOTATION]
        .clone();
    assert!(!hash.is_empty());
}

#[tokio::test]
async fn shutdown_stops_every_instance_and_keeps_volumes() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let mut stopped = h.cluster().await;
    stopped.spec.shutdown = true;
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &stopped)
        .await
        .unwrap();
    h.reconcile().await;
    let replicas: BTreeMap<String, i32> = h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|s| (s.name_any(), s.spec.as_ref().unwrap().replicas.unwrap()))
        .collect();
    assert_eq!(replicas["db-1"], 1, "the primary stops last");
    assert_eq!(replicas["db-2"], 0);
    assert_eq!(replicas["db-3"], 0);
    assert!(
        h.api::<PodDisruptionBudget>()
            .get_opt("db")
            .await
            .unwrap()
            .is_none()
    );
}

/// On a real cluster a PGUpgrade's completed Job pods stay in place, labelled with the Cluster
/// and the primary's instance (`tusk.dev/instance=db-1`) because they ran on its volume. The
/// Cluster controller took them for the primary's pod and waited forever for "replica(s) 1"
/// to stop. Only a pod that an instance StatefulSet controls (owner reference, as the
/// StatefulSet controller sets it) is an instance.
#[tokio::test]
async fn a_jobs_pod_with_an_instances_labels_is_not_that_instance() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let mut stopped = h.cluster().await;
    stopped.spec.shutdown = true;
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &stopped)
        .await
        .unwrap();
    // The StatefulSet controller's part: pods of a StatefulSet at 0 go away.
    let stop_scaled_down = || async {
        for sts in h
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            if sts.spec.unwrap().replicas == Some(0) {
                let _ = h
                    .api::<Pod>()
                    .delete(
                        &format!("{}-0", sts.metadata.name.unwrap()),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
    };
    h.reconcile().await;
    stop_scaled_down().await;
    // A finished upgrade Job's pod, labelled as the upgrade controller labels it.
    let job_pod: Pod = serde_yaml_ng::from_str(
        "metadata:
  name: up-upgrade-x7k2p
  namespace: db
  labels: {tusk.dev/cluster: db, tusk.dev/instance: db-1, tusk.dev/upgrade: up,
           app.kubernetes.io/component: upgrade, batch.kubernetes.io/job-name: up-upgrade}
  ownerReferences:
  - {apiVersion: batch/v1, kind: Job, name: up-upgrade, uid: job-uid, controller: true}
",
    )
    .unwrap();
    h.api::<Pod>()
        .create(&PostParams::default(), &job_pod)
        .await
        .unwrap();
    h.reconcile().await;
    stop_scaled_down().await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(ready.reason, "ShutDown", "{}", ready.message);
    let replicas: Vec<i32> = h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.spec.as_ref().unwrap().replicas.unwrap())
        .collect();
    assert_eq!(replicas, [0, 0, 0]);
}

/// `tusk.dev/restart` (what `kubectl tusk restart` sets): a new value rolls every instance like
/// a spec change that needs a restart, highest replica first, and is recorded in
/// `status.restartRequest` only once every instance runs the template that carries it.
#[tokio::test]
async fn a_restart_request_rolls_every_instance_and_is_recorded_when_done() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::RESTART_ANNOTATION.to_owned(), "r1".to_owned());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap();
    h.recording.clear();
    h.reconcile().await;
    let deleted: Vec<_> = h
        .recording
        .writes()
        .into_iter()
        .filter(|c| c.verb == "delete")
        .filter_map(|c| c.name)
        .collect();
    assert_eq!(deleted, vec!["db-3-0".to_owned()], "highest replica first");
    let status = h.cluster().await.status.unwrap();
    assert_eq!(status.restart_request, None, "not done yet");
    let template = h
        .api::<StatefulSet>()
        .get("db-2")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(template[labels::RESTART_ANNOTATION], "r1");

    // Every pod recreated from the new templates (as the rollout and the StatefulSet
    // controller would have done, one at a time).
    h.start_pods(1, true).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    assert_eq!(status.restart_request.as_deref(), Some("r1"));
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![], "a finished restart is quiet");

    // Removing the annotation (a GitOps tool pruning it, say) does not restart again.
    let mut pruned = h.cluster().await;
    pruned
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(labels::RESTART_ANNOTATION);
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &pruned)
        .await
        .unwrap();
    h.recording.clear();
    h.reconcile().await;
    // The in-memory API bumps metadata.generation on any replace (a real API server does not
    // for an annotation), so the status's observedGeneration follows; nothing else is written.
    let writes: Vec<_> = h
        .recording
        .writes()
        .into_iter()
        .filter(|c| c.resource != "clusters/status")
        .collect();
    assert_eq!(
        writes,
        vec![],
        "removing a finished request restarts nothing"
    );
}

/// `tusk.dev/restart-instance` (what `kubectl tusk restart CLUSTER INSTANCE` sets) recreates
/// that instance's pod only, records the request in its `status.instances[]` entry once the
/// new pod is ready, and a later request for another instance leaves the first one alone.
#[tokio::test]
async fn an_instance_restart_request_recreates_that_instance_only() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;

    request_instance_restart(&h, "db-2=r1").await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(deleted_pods(&h), vec!["db-2-0".to_owned()]);
    assert_eq!(
        template_request(&h, "db-2").await.as_deref(),
        Some("db-2=r1")
    );
    assert_eq!(template_request(&h, "db-3").await, None);
    assert_eq!(instance_request(&h, "db-2").await, None, "not done yet");

    h.start_pods(1, true).await;
    h.reconcile().await;
    assert_eq!(
        instance_request(&h, "db-2").await.as_deref(),
        Some("db-2=r1")
    );
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![], "a finished restart is quiet");

    // The next request names db-3: db-2 keeps the template it has, so is not restarted again.
    request_instance_restart(&h, "db-3=r2").await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(deleted_pods(&h), vec!["db-3-0".to_owned()]);
    assert_eq!(
        template_request(&h, "db-2").await.as_deref(),
        Some("db-2=r1")
    );
    assert_eq!(
        template_request(&h, "db-3").await.as_deref(),
        Some("db-3=r2")
    );

    // A request naming no instance of the Cluster restarts nothing.
    h.start_pods(1, true).await;
    h.reconcile().await;
    request_instance_restart(&h, "db-9=r3").await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(deleted_pods(&h), Vec::<String>::new());
}

async fn request_instance_restart(h: &Harness, value: &str) {
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            labels::RESTART_INSTANCE_ANNOTATION.to_owned(),
            value.to_owned(),
        );
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap();
}

fn deleted_pods(h: &Harness) -> Vec<String> {
    h.recording
        .writes()
        .into_iter()
        .filter(|c| c.verb == "delete" && c.resource == "pods")
        .filter_map(|c| c.name)
        .collect()
}

async fn template_request(h: &Harness, instance: &str) -> Option<String> {
    h.api::<StatefulSet>()
        .get(instance)
        .await
        .unwrap()
        .spec?
        .template
        .metadata?
        .annotations?
        .remove(labels::RESTART_INSTANCE_ANNOTATION)
}

async fn instance_request(h: &Harness, instance: &str) -> Option<String> {
    h.cluster()
        .await
        .status?
        .instances
        .into_iter()
        .find(|i| i.name == instance)?
        .restart_request
}

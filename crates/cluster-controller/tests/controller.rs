//! The Cluster controller against the in-memory Kubernetes API: children with owner
//! references, a second pass that writes nothing, self-healing, status that follows the
//! instances, refusals that change nothing, and only API calls the chart grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use tusk_api::condition::{find_condition, types};
use tusk_api::{Cluster, labels};
use tusk_cluster_controller::reconcile::reconcile;
use tusk_cluster_controller::shared::State;
use tusk_cluster_controller::shared::layout::RESTART_HASH_ANNOTATION;
use tusk_cluster_controller::shared::pod::Images;
use tusk_runtime::rbac::disallowed_calls;
use tusk_runtime::rbac::test_support::RecordingClient;
use tusk_runtime::{ControllerKind, Metrics, OperatorConfig};

const NS: &str = "db";

fn cluster(yaml_spec: &str) -> Cluster {
    let text = format!(
        "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: {NS}}}\nspec:\n{yaml_spec}"
    );
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The owner reference the StatefulSet controller puts on the pods it creates, by which the
/// Cluster controller tells an instance's pod from a Job's pod with the same labels.
fn statefulset_controller(
    sts: &StatefulSet,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    tusk_testkit::kube_api::controller_reference(
        "apps/v1",
        "StatefulSet",
        &sts.name_any(),
        &sts.uid().unwrap_or_default(),
    )
}

struct Harness {
    /// Unrecorded: the test's own setup calls.
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
    /// What the kubelet would serve as containers' logs (the in-memory API serves none).
    logs: tusk_testkit::kube_api::PodLogs,
}

impl Harness {
    async fn new(cluster: Cluster) -> Self {
        let fake = kube_fake_client::ClientBuilder::new()
            .with_resource::<Cluster>()
            .with_status_subresource::<Cluster>()
            .build()
            .await
            .unwrap();
        let logs = tusk_testkit::kube_api::PodLogs::new(fake.clone());
        let recording = RecordingClient::new(logs.client());
        Api::<Cluster>::namespaced(fake.clone(), NS)
            .create(&PostParams::default(), &cluster)
            .await
            .unwrap();
        let ctx = tusk_runtime::Context::new(
            recording.client(),
            ControllerKind::Cluster,
            Arc::new(OperatorConfig::default()),
            &Metrics::new(),
        );
        let state = Arc::new(State {
            runtime: ctx,
            images: Images::default(),
            patroni_api: false,
        });
        Self {
            setup: fake,
            recording,
            state,
            logs,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.setup.clone(), NS)
    }

    async fn cluster(&self) -> Cluster {
        self.api::<Cluster>().get("db").await.unwrap()
    }

    async fn reconcile(&self) {
        reconcile(Arc::new(self.cluster().await), self.state.clone())
            .await
            .unwrap();
    }

    /// Creates the pods the StatefulSets would run, as Patroni would label them.
    async fn start_pods(&self, primary: u32, ready: bool) {
        for sts in self
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            let spec = sts.spec.clone().unwrap();
            if spec.replicas == Some(0) {
                continue;
            }
            let template = spec.template.metadata.clone().unwrap();
            let mut pod_labels = template.labels.clone().unwrap();
            let ordinal: u32 = sts.name_any().rsplit('-').next().unwrap().parse().unwrap();
            pod_labels.insert(
                labels::ROLE.to_owned(),
                if ordinal == primary {
                    "master"
                } else {
                    "replica"
                }
                .to_owned(),
            );
            let pod = Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("{}-0", sts.name_any())),
                    namespace: Some(NS.to_owned()),
                    labels: Some(pod_labels),
                    annotations: template.annotations.clone(),
                    owner_references: Some(vec![statefulset_controller(&sts)]),
                    ..Default::default()
                },
                status: Some(PodStatus {
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: if ready { "True" } else { "False" }.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let api = self.api::<Pod>();
            let name = pod.name_any();
            let mut stored = match api.get_opt(&name).await.unwrap() {
                Some(_) => api
                    .replace(&name, &PostParams::default(), &pod)
                    .await
                    .unwrap(),
                None => api.create(&PostParams::default(), &pod).await.unwrap(),
            };
            stored.status = pod.status.clone();
            api.replace_status(&name, &PostParams::default(), &stored)
                .await
                .unwrap();
        }
    }
}

impl Harness {
    /// Creates the PVCs the StatefulSet controller would, from each StatefulSet's claim
    /// templates (labelled with its selector), bound at the requested size, in `class`.
    async fn create_claims(&self, class: &str) {
        for sts in self
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            let spec = sts.spec.clone().unwrap();
            for template in spec.volume_claim_templates.clone().unwrap_or_default() {
                let name = format!(
                    "{}-{}-0",
                    template.metadata.name.clone().unwrap(),
                    sts.name_any()
                );
                let mut claim_spec = template.spec.clone().unwrap();
                claim_spec.storage_class_name = Some(class.to_owned());
                let size = claim_spec
                    .resources
                    .as_ref()
                    .unwrap()
                    .requests
                    .as_ref()
                    .unwrap()["storage"]
                    .clone();
                let claim = PersistentVolumeClaim {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(NS.to_owned()),
                        labels: spec.selector.match_labels.clone(),
                        ..Default::default()
                    },
                    spec: Some(claim_spec),
                    ..Default::default()
                };
                let api = self.api::<PersistentVolumeClaim>();
                let mut stored = api.create(&PostParams::default(), &claim).await.unwrap();
                stored.status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
                    phase: Some("Bound".into()),
                    capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
                    ..Default::default()
                });
                api.replace_status(&name, &PostParams::default(), &stored)
                    .await
                    .unwrap();
            }
        }
    }

    async fn create_storage_class(&self, name: &str, expandable: bool) {
        Api::<StorageClass>::all(self.setup.clone())
            .create(
                &PostParams::default(),
                &StorageClass {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.to_owned()),
                        ..Default::default()
                    },
                    provisioner: "csi.example.com".into(),
                    allow_volume_expansion: Some(expandable),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    async fn requested_size(&self, claim: &str) -> String {
        self.api::<PersistentVolumeClaim>()
            .get(claim)
            .await
            .unwrap()
            .spec
            .unwrap()
            .resources
            .unwrap()
            .requests
            .unwrap()["storage"]
            .0
            .clone()
    }

    async fn set_storage_size(&self, size: &str) {
        let mut changed = self.cluster().await;
        changed.spec.storage.size =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(size.into());
        self.api::<Cluster>()
            .replace("db", &PostParams::default(), &changed)
            .await
            .unwrap();
    }
}

const THREE: &str = "  postgresVersion: 17\n  instances: 3\n  storage: {size: 10Gi}\n";

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
async fn switchover_request_for_the_current_primary_is_cleared() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(2, true).await;
    h.reconcile().await;
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::SWITCHOVER_ANNOTATION.to_owned(), "db-2".to_owned());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap();
    h.reconcile().await;
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
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
async fn a_raised_storage_size_expands_the_pvcs_not_the_statefulset_template() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.create_storage_class("standard", true).await;
    h.create_claims("standard").await;
    h.start_pods(1, true).await;
    h.reconcile().await;

    h.set_storage_size("20Gi").await;
    h.recording.clear();
    h.reconcile().await;
    for n in 1..=3 {
        assert_eq!(h.requested_size(&format!("data-db-{n}-0")).await, "20Gi");
    }
    let template_size = h
        .api::<StatefulSet>()
        .get("db-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap()[0]
        .spec
        .clone()
        .unwrap()
        .resources
        .unwrap()
        .requests
        .unwrap()["storage"]
        .0
        .clone();
    assert_eq!(
        template_size, "10Gi",
        "volumeClaimTemplates are immutable: the StatefulSet keeps its size"
    );
    let writes = h.recording.writes();
    assert_eq!(
        writes
            .iter()
            .filter(|c| c.resource == "persistentvolumeclaims" && c.verb == "patch")
            .count(),
        3,
        "{writes:?}"
    );
    assert!(
        !writes.iter().any(|c| c.resource == "statefulsets"),
        "{writes:?}"
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );

    // Done once: the next pass writes nothing (the status is already current).
    h.reconcile().await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![]);
}

#[tokio::test]
async fn a_storage_class_without_expansion_is_reported_and_nothing_is_patched() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.create_storage_class("fixed", false).await;
    h.create_claims("fixed").await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    h.set_storage_size("20Gi").await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.requested_size("data-db-1-0").await, "10Gi");
    assert!(
        !h.recording
            .writes()
            .iter()
            .any(|c| c.resource == "persistentvolumeclaims")
    );
    let status = h.cluster().await.status.unwrap();
    let pressure = find_condition(&status.conditions, "StoragePressure")
        .cloned()
        .unwrap();
    assert_eq!(pressure.status, "True");
    assert_eq!(pressure.reason, "ExpansionNotAllowed");
    assert!(
        pressure.message.contains("allowVolumeExpansion"),
        "{}",
        pressure.message
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
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

/// Pure tier: what one pass plans from measured usage (the SQL measurement itself runs in
/// tests/patroni_real.rs).
#[test]
fn measured_usage_past_the_threshold_plans_an_expansion_and_reports_usage() {
    use tusk_cluster_controller::observe::Observed;
    use tusk_cluster_controller::observe::instance_sql::InstanceUsage;
    use tusk_cluster_controller::plan::plan;

    let cluster = {
        let mut c = cluster(
            "  postgresVersion: 17\n  instances: 2\n  storage: {size: 10Gi, autoGrow: {thresholdPercent: 80, increasePercent: 25, limit: 12Gi}}\n",
        );
        c.metadata.uid = Some("u1".into());
        c
    };
    let gib = 1024 * 1024 * 1024;
    let mut observed = Observed::default();
    for n in 1..=2 {
        let instance = format!("db-{n}");
        let sts: StatefulSet = serde_yaml_ng::from_str(&format!(
            "metadata: {{name: {instance}}}\nspec: {{selector: {{}}, serviceName: db-pods, template: {{}}}}\n"
        ))
        .unwrap();
        observed.statefulsets.insert(instance.clone(), sts);
        let claim: PersistentVolumeClaim = serde_yaml_ng::from_str(&format!(
            "metadata: {{name: data-{instance}-0}}\nspec: {{resources: {{requests: {{storage: 10Gi}}}}, storageClassName: standard}}\nstatus: {{capacity: {{storage: 10Gi}}}}\n"
        ))
        .unwrap();
        observed.claims.insert(format!("data-{instance}-0"), claim);
    }
    observed.usage.insert(
        "db-1".into(),
        InstanceUsage {
            data: 8 * gib,
            wal: gib / 2,
        },
    );
    observed.usage.insert(
        "db-2".into(),
        InstanceUsage {
            data: 4 * gib,
            wal: gib / 2,
        },
    );
    observed.storage_classes.insert("standard".into(), true);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let desired = plan(&cluster, &observed, &Images::default(), now).unwrap();

    let expansions = &desired.storage.expansions;
    assert_eq!(expansions.len(), 1, "{expansions:?}");
    assert_eq!(expansions[0].claim, "data-db-1-0");
    assert_eq!(
        expansions[0].to.0, "12Gi",
        "10Gi + 25% rounds to 13Gi, capped at the limit"
    );
    let usage: Vec<(String, i32)> = desired
        .status
        .storage
        .iter()
        .map(|u| (u.instance.clone(), u.used_percent))
        .collect();
    assert_eq!(usage, vec![("db-1".into(), 85), ("db-2".into(), 45)]);
    let pressure = find_condition(&desired.status.conditions, "StoragePressure").unwrap();
    assert_eq!(
        (pressure.status.as_str(), pressure.reason.as_str()),
        ("False", "Expanding")
    );
}

/// A stand-in for the Patroni REST API of the three instance pods (pod IPs 127.0.0.11–13,
/// port 8008): serves `GET /cluster` and `GET /config` from shared state and records the
/// unsafe requests the controller sends.
mod fake_patroni {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    pub(crate) struct Dcs {
        pub(crate) members: serde_json::Value,
        pub(crate) config: serde_json::Value,
        /// (address, method, path, had credentials, body)
        pub(crate) requests: Vec<(String, String, String, bool, String)>,
        /// What `POST /switchover` answers instead of carrying it out (Patroni's 412 "no good
        /// candidates", say); `None` moves the leader to the candidate, as Patroni does.
        pub(crate) switchover_refusal: Option<(u16, String)>,
    }

    pub(crate) type Shared = Arc<Mutex<Dcs>>;

    pub(crate) async fn serve(ip: &str, dcs: Shared) -> Option<()> {
        let listener = tokio::net::TcpListener::bind((ip, 8008)).await.ok()?;
        let ip = ip.to_owned();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let dcs = dcs.clone();
                let ip = ip.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0_u8; 4096];
                    let (head, body) = loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buffer).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if body.len() >= length {
                                break (head.to_owned(), body.to_owned());
                            }
                        }
                    };
                    let mut words = head.split_whitespace();
                    let (method, path) = (
                        words.next().unwrap_or_default().to_owned(),
                        words.next().unwrap_or_default().to_owned(),
                    );
                    let authorized = head.to_ascii_lowercase().contains("authorization: basic ");
                    let (code, answer) = {
                        let mut dcs = dcs.lock().unwrap();
                        match (method.as_str(), path.as_str()) {
                            ("GET", "/cluster") => (200, dcs.members.to_string()),
                            ("GET", "/config") => (200, dcs.config.to_string()),
                            ("POST", "/switchover") => {
                                dcs.requests.push((
                                    ip.clone(),
                                    method,
                                    path,
                                    authorized,
                                    body.clone(),
                                ));
                                match dcs.switchover_refusal.clone() {
                                    Some(refusal) => refusal,
                                    None => {
                                        let request: serde_json::Value =
                                            serde_json::from_str(&body).unwrap_or_default();
                                        let candidate = request["candidate"].as_str();
                                        for member in dcs.members["members"].as_array_mut().unwrap()
                                        {
                                            let role = if member["name"].as_str() == candidate {
                                                "leader"
                                            } else {
                                                "replica"
                                            };
                                            member["role"] = role.into();
                                        }
                                        (200, "Successfully switched over".to_owned())
                                    }
                                }
                            }
                            _ => {
                                dcs.requests
                                    .push((ip.clone(), method, path, authorized, body));
                                (200, "{}".to_owned())
                            }
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Some(())
    }
}

#[tokio::test]
async fn parameter_changes_go_to_patroni_and_pending_restarts_restart_a_replica_in_place() {
    use std::sync::Mutex;
    use tusk_cluster_controller::plan::patroni;

    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    // The pods' IPs, where the controller finds Patroni.
    for n in 1..=3 {
        let api = h.api::<Pod>();
        let mut pod = api.get(&format!("db-{n}-0")).await.unwrap();
        pod.status.as_mut().unwrap().pod_ip = Some(format!("127.0.0.{}", 10 + n));
        api.replace_status(&format!("db-{n}-0"), &PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let current = h.cluster().await;
    let dcs: fake_patroni::Shared = Arc::new(Mutex::new(fake_patroni::Dcs {
        members: serde_json::json!({"members": [
            {"name": "db-1-0", "role": "leader", "state": "running"},
            {"name": "db-2-0", "role": "replica", "state": "running", "lag": 0},
            {"name": "db-3-0", "role": "replica", "state": "running", "lag": 0},
        ]}),
        config: serde_json::to_value(patroni::dynamic_config(&current).unwrap()).unwrap(),
        requests: Vec::new(),
        switchover_refusal: None,
    }));
    for n in 1..=3 {
        if fake_patroni::serve(&format!("127.0.0.{}", 10 + n), dcs.clone())
            .await
            .is_none()
        {
            eprintln!("skipped: cannot listen on 127.0.0.1x:8008 here");
            return;
        }
    }
    let reachable = Arc::new(State {
        patroni_api: true,
        ..(*h.state).clone()
    });
    let reconcile_reachable =
        || async { reconcile(Arc::new(h.cluster().await), reachable.clone()).await };

    // In step with the DCS: nothing is sent to Patroni and nothing written to the API.
    reconcile_reachable().await.unwrap();
    h.recording.clear();
    reconcile_reachable().await.unwrap();
    assert!(dcs.lock().unwrap().requests.is_empty());
    assert_eq!(h.recording.writes(), vec![]);

    // A restart-only parameter: one PATCH /config with only that parameter, with credentials.
    let mut changed = h.cluster().await;
    changed
        .spec
        .postgresql
        .parameters
        .insert("shared_buffers".into(), "1GB".into());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &changed)
        .await
        .unwrap();
    reconcile_reachable().await.unwrap();
    {
        let mut dcs = dcs.lock().unwrap();
        let requests = std::mem::take(&mut dcs.requests);
        assert_eq!(requests.len(), 1, "{requests:?}");
        let (_, method, path, authorized, body) = &requests[0];
        assert_eq!(
            (method.as_str(), path.as_str(), *authorized),
            ("PATCH", "/config", true)
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"postgresql": {"parameters": {"shared_buffers": "1GB"}}})
        );
        // Patroni applied it and now reports the restart every member needs.
        dcs.config["postgresql"]["parameters"]["shared_buffers"] = "1GB".into();
        for member in dcs.members["members"].as_array_mut().unwrap() {
            member["pending_restart"] = true.into();
        }
    }
    reconcile_reachable().await.unwrap();
    {
        let requests = std::mem::take(&mut dcs.lock().unwrap().requests);
        assert_eq!(
            requests
                .iter()
                .map(|(ip, method, path, authorized, _)| (
                    ip.as_str(),
                    method.as_str(),
                    path.as_str(),
                    *authorized
                ))
                .collect::<Vec<_>>(),
            vec![("127.0.0.13", "POST", "/restart", true)],
            "the highest replica first, in place; no pod deleted"
        );
    }
    assert!(
        !h.recording
            .writes()
            .iter()
            .any(|c| c.resource == "pods" && c.verb == "delete")
    );
    let progressing = find_condition(
        &h.cluster().await.status.unwrap().conditions,
        types::PROGRESSING,
    )
    .cloned()
    .unwrap();
    assert_eq!(progressing.reason, "RollingUpdate");
    assert!(
        progressing.message.contains("PostgreSQL"),
        "{}",
        progressing.message
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );
}

/// Three running instances, pod IPs 127.0.0.{first}–{first+2} with a fake Patroni on each
/// (db-1 the leader), and the controller allowed to reach it. `None` where this machine
/// cannot listen on those addresses.
async fn with_fake_patroni(first: u8) -> Option<(Harness, fake_patroni::Shared, Arc<State>)> {
    use std::sync::Mutex;
    use tusk_cluster_controller::plan::patroni;

    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    for n in 1..=3_u8 {
        let api = h.api::<Pod>();
        let name = format!("db-{n}-0");
        let mut pod = api.get(&name).await.unwrap();
        pod.status.as_mut().unwrap().pod_ip = Some(format!("127.0.0.{}", first + n - 1));
        api.replace_status(&name, &PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let current = h.cluster().await;
    let dcs: fake_patroni::Shared = Arc::new(Mutex::new(fake_patroni::Dcs {
        members: serde_json::json!({"members": [
            {"name": "db-1-0", "role": "leader", "state": "running", "timeline": 1},
            {"name": "db-2-0", "role": "replica", "state": "streaming", "lag": 0, "timeline": 1},
            {"name": "db-3-0", "role": "replica", "state": "streaming", "lag": 0, "timeline": 1},
        ]}),
        config: serde_json::to_value(patroni::dynamic_config(&current).unwrap()).unwrap(),
        requests: Vec::new(),
        switchover_refusal: None,
    }));
    for n in 0..3 {
        fake_patroni::serve(&format!("127.0.0.{}", first + n), dcs.clone()).await?;
    }
    let reachable = Arc::new(State {
        patroni_api: true,
        ..(*h.state).clone()
    });
    // Settle: status and children in step with the fake DCS.
    reconcile(Arc::new(h.cluster().await), reachable.clone())
        .await
        .unwrap();
    Some((h, dcs, reachable))
}

async fn request_switchover(h: &Harness, value: &str) -> Cluster {
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::SWITCHOVER_ANNOTATION.to_owned(), value.to_owned());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap()
}

async fn cluster_events(h: &Harness) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    h.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

fn switchover_posts(dcs: &fake_patroni::Shared) -> Vec<String> {
    dcs.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, method, path, _, _)| method == "POST" && path == "/switchover")
        .map(|(_, _, _, _, body)| body.clone())
        .collect()
}

/// Models what broke on a real cluster: with `any`, every pass found another healthy replica
/// and switched again (13 moves in two minutes). The request is claimed — the annotation
/// removed with the resourceVersion the pass read, as the API server checks it — before
/// Patroni is asked, so a pass that still sees the annotation in a stale cache (the watch
/// has not delivered the removal yet) gets 409 Conflict and does nothing.
#[tokio::test]
async fn switchover_any_is_carried_out_once_and_cleared() {
    let Some((h, dcs, reachable)) = with_fake_patroni(21).await else {
        eprintln!("skipped: cannot listen on 127.0.0.21-23:8008 here");
        return;
    };
    let stale = request_switchover(&h, "any").await;
    reconcile(Arc::new(stale.clone()), reachable.clone())
        .await
        .unwrap();
    let posts = switchover_posts(&dcs);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let body: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(body["leader"], "db-1-0");
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION),
        "the request is cleared"
    );

    // The stale object (annotation still on it), then the current one, several times.
    reconcile(Arc::new(stale), reachable.clone()).await.unwrap();
    for _ in 0..3 {
        reconcile(Arc::new(h.cluster().await), reachable.clone())
            .await
            .unwrap();
    }
    assert_eq!(switchover_posts(&dcs).len(), 1, "exactly one switchover");
    let events = cluster_events(&h).await;
    let switched: Vec<_> = events.iter().filter(|e| e.1 == "Switchover").collect();
    assert_eq!(switched.len(), 1, "{events:?}");
    assert!(
        switched[0].2.contains("tusk.dev/switchover=any"),
        "{switched:?}"
    );
}

#[tokio::test]
async fn a_switchover_patroni_refuses_is_reported_once_and_cleared() {
    let Some((h, dcs, reachable)) = with_fake_patroni(24).await else {
        eprintln!("skipped: cannot listen on 127.0.0.24-26:8008 here");
        return;
    };
    dcs.lock().unwrap().switchover_refusal = Some((
        412,
        "switchover is not possible: no good candidates have been found".into(),
    ));
    request_switchover(&h, "db-3").await;
    for _ in 0..3 {
        reconcile(Arc::new(h.cluster().await), reachable.clone())
            .await
            .unwrap();
    }
    assert_eq!(switchover_posts(&dcs).len(), 1, "asked once, not retried");
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
    let events = cluster_events(&h).await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "SwitchoverFailed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].0, "Warning");
    assert!(failed[0].2.contains("no good candidates"), "{failed:?}");
    assert!(
        failed[0].2.contains("tusk.dev/switchover=db-3"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_switchover_to_an_unknown_instance_is_cleared_with_the_reason() {
    let Some((h, dcs, reachable)) = with_fake_patroni(27).await else {
        eprintln!("skipped: cannot listen on 127.0.0.27-29:8008 here");
        return;
    };
    request_switchover(&h, "db-9").await;
    reconcile(Arc::new(h.cluster().await), reachable.clone())
        .await
        .unwrap();
    assert!(switchover_posts(&dcs).is_empty());
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
    let events = cluster_events(&h).await;
    let cleared: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "SwitchoverRequestCleared")
        .collect();
    assert_eq!(cleared.len(), 1, "{events:?}");
    assert!(cleared[0].2.contains("no such instance"), "{cleared:?}");
}

/// What the kubelet reports for a container in CrashLoopBackOff, as real Patroni 3.0.2 leaves
/// it (tests/restore_patroni_real.rs): as PID 1 it exits 0 even when it gave up, and its
/// traceback fills the termination message, so PostgreSQL's FATAL line is only in the log the
/// controller reads (`previous=true`).
#[tokio::test]
async fn a_crash_looping_first_instance_is_reported_as_a_failed_bootstrap_with_its_cause() {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    };
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let sts = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let postgres = &sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(postgres.name, "postgres");
    assert_eq!(
        postgres.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "the log's end must reach the termination message"
    );
    h.start_pods(1, false).await;
    h.logs.set(
        NS,
        "db-1-0",
        "postgres",
        true,
        "2026-11-30 10:01:02,003 INFO: Running custom bootstrap script\n\
         2026-11-30 10:01:09 UTC [61] FATAL:  could not create directory \"pg_wal\": Permission denied\n\
         2026-11-30 10:01:10,004 INFO: removing initialize key after failed attempt to bootstrap the cluster\n\
         Traceback (most recent call last):\n\
         \x20   raise PatroniFatalException('Failed to bootstrap cluster')\n\
         patroni.exceptions.PatroniFatalException: 'Failed to bootstrap cluster'\n",
    );
    let api = h.api::<Pod>();
    let mut pod = api.get("db-1-0").await.unwrap();
    pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "postgres".into(),
        restart_count: 5,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    api.replace_status("db-1-0", &PostParams::default(), &pod)
        .await
        .unwrap();
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BootstrapFailed")
    );
    for part in [
        "exited with code 0 after 5 restarts",
        "FATAL:  could not create directory \"pg_wal\": Permission denied",
        "PatroniFatalException: 'Failed to bootstrap cluster'",
        "kubectl logs db-1-0 -c postgres --previous",
    ] {
        assert!(
            ready.message.contains(part),
            "{part:?} in {}",
            ready.message
        );
    }
    let events = cluster_events(&h).await;
    assert!(
        events
            .iter()
            .any(|(type_, reason, _)| type_ == "Warning" && reason == "BootstrapFailed"),
        "{events:?}"
    );
    // Steady: the same crash again writes nothing.
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![]);
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![],
        "reading the previous log is granted by the chart"
    );
}

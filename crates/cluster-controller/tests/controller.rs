//! The Cluster controller against the in-memory Kubernetes API: children with owner
//! references, a second pass that writes nothing, self-healing, status that follows the
//! instances, refusals that change nothing, and only API calls the chart grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Pod, PodCondition, PodStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use tusk_api::condition::{find_condition, types};
use tusk_api::{Cluster, labels};
use tusk_cluster_controller::children::{Images, RESTART_HASH_ANNOTATION};
use tusk_cluster_controller::reconcile::{State, reconcile};
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

struct Harness {
    /// Unrecorded: the test's own setup calls.
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
}

impl Harness {
    async fn new(cluster: Cluster) -> Self {
        let fake = kube_fake_client::ClientBuilder::new()
            .with_resource::<Cluster>()
            .with_status_subresource::<Cluster>()
            .build()
            .await
            .unwrap();
        let recording = RecordingClient::new(fake.clone());
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

#[tokio::test]
async fn every_call_is_granted_by_the_chart() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(Some(ControllerKind::Cluster), &calls),
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
        disallowed_calls(Some(ControllerKind::Cluster), &calls),
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

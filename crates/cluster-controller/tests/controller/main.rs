//! The Cluster controller against the in-memory Kubernetes API: children with owner
//! references, a second pass that writes nothing, self-healing, status that follows the
//! instances, refusals that change nothing, and only API calls the chart grants.
//!
//! This file holds the harness (an in-memory API with the StatefulSet controller's part played
//! by hand); the tests are grouped by concern: children.rs, rollout.rs, storage.rs,
//! patroni_api.rs (against a stand-in for Patroni's REST API), crash.rs.

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

mod children;
mod crash;
mod patroni_api;
mod rollout;
mod storage;

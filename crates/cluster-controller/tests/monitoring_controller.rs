//! The exporter queries ConfigMap against the in-memory Kubernetes API: created owned by the
//! Cluster and mounted into the exporter, the user's queries merged in and followed, removed
//! when monitoring is turned off, never rewritten in steady state, and every call granted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tusk_api::Cluster;
use tusk_cluster_controller::plan::monitoring::{QUERIES_KEY, TUSK_QUERIES, produced_metrics};
use tusk_cluster_controller::reconcile::reconcile;
use tusk_cluster_controller::shared::State;
use tusk_cluster_controller::shared::pod::Images;
use tusk_runtime::rbac::disallowed_calls;
use tusk_runtime::rbac::test_support::RecordingClient;
use tusk_runtime::{ControllerKind, Metrics, OperatorConfig};

const NS: &str = "db";

struct Harness {
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
}

impl Harness {
    async fn new(spec: &str) -> Self {
        let fake = kube_fake_client::ClientBuilder::new()
            .with_resource::<Cluster>()
            .with_status_subresource::<Cluster>()
            .build()
            .await
            .unwrap();
        let cluster: Cluster = serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: {NS}}}\nspec:\n{spec}"
        ))
        .unwrap();
        Api::<Cluster>::namespaced(fake.clone(), NS)
            .create(&PostParams::default(), &cluster)
            .await
            .unwrap();
        let recording = RecordingClient::new(fake.clone());
        let runtime = tusk_runtime::Context::new(
            recording.client(),
            ControllerKind::Cluster,
            Arc::new(OperatorConfig::default()),
            &Metrics::new(),
        );
        Self {
            setup: fake,
            recording,
            state: Arc::new(State {
                runtime,
                images: Images::default(),
                patroni_api: false,
            }),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.setup.clone(), NS)
    }

    async fn reconcile(&self) {
        let cluster = self.api::<Cluster>().get("db").await.unwrap();
        reconcile(Arc::new(cluster), self.state.clone())
            .await
            .unwrap();
    }

    async fn queries(&self) -> Option<String> {
        self.api::<ConfigMap>()
            .get_opt("db-monitoring")
            .await
            .unwrap()
            .map(|cm| cm.data.unwrap()[QUERIES_KEY].clone())
    }

    async fn put_user_queries(&self, text: &str) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("my-queries".into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "queries.yaml".to_owned(),
                text.to_owned(),
            )])),
            ..ConfigMap::default()
        };
        let api = self.api::<ConfigMap>();
        match api.get_opt("my-queries").await.unwrap() {
            Some(existing) => {
                let mut replaced = cm;
                replaced.metadata.resource_version = existing.resource_version();
                api.replace("my-queries", &PostParams::default(), &replaced)
                    .await
                    .unwrap();
            }
            None => {
                api.create(&PostParams::default(), &cm).await.unwrap();
            }
        }
    }

    fn config_map_writes(&self) -> usize {
        self.recording
            .writes()
            .iter()
            .filter(|c| c.resource == "configmaps")
            .count()
    }
}

const MINIMAL: &str = "  postgresVersion: 17\n  storage: {size: 10Gi}\n";
const WITH_CUSTOM: &str = "  postgresVersion: 17\n  storage: {size: 10Gi}\n  monitoring:\n    customQueries: {name: my-queries, key: queries.yaml}\n";
const USER_QUERIES: &str = "app_orders:\n  query: SELECT 1 AS open\n  metrics:\n    - open: {usage: GAUGE, description: open orders}\n";

#[tokio::test]
async fn queries_config_map_is_owned_mounted_and_not_rewritten() {
    let h = Harness::new(MINIMAL).await;
    h.reconcile().await;
    let cm = h.api::<ConfigMap>().get("db-monitoring").await.unwrap();
    let uid = h.api::<Cluster>().get("db").await.unwrap().uid().unwrap();
    assert!(
        cm.owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    );
    assert_eq!(h.queries().await.unwrap(), TUSK_QUERIES);

    let sts = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let exporter = pod
        .containers
        .iter()
        .find(|c| c.name == "exporter")
        .unwrap();
    assert!(
        exporter
            .args
            .as_ref()
            .unwrap()
            .contains(&"--extend.query-path=/etc/tusk/exporter/queries.yaml".to_owned())
    );
    let mount = exporter
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/etc/tusk/exporter")
        .unwrap();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(volume.config_map.unwrap().name, "db-monitoring");

    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.config_map_writes(), 0, "steady state writes no ConfigMap");
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );
}

#[tokio::test]
async fn user_queries_are_merged_and_followed() {
    let h = Harness::new(WITH_CUSTOM).await;
    // Not there yet: tusk's queries run, and the user is told.
    h.reconcile().await;
    assert_eq!(h.queries().await.unwrap(), TUSK_QUERIES);

    h.put_user_queries(USER_QUERIES).await;
    h.reconcile().await;
    let merged = produced_metrics(&h.queries().await.unwrap()).unwrap();
    assert!(merged.contains(&"app_orders_open".to_owned()));
    assert!(merged.contains(&"tusk_pg_role_primary".to_owned()));

    // A broken file falls back to tusk's queries.
    h.put_user_queries("- not\n- a mapping\n").await;
    h.reconcile().await;
    assert_eq!(h.queries().await.unwrap(), TUSK_QUERIES);
    let calls = h.recording.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.resource == "events" && c.verb == "create"),
        "a Warning event tells the user: {calls:?}"
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

#[tokio::test]
async fn turning_monitoring_off_removes_the_queries_and_the_exporter() {
    let h = Harness::new(MINIMAL).await;
    h.reconcile().await;
    assert!(h.queries().await.is_some());
    let mut cluster = h.api::<Cluster>().get("db").await.unwrap();
    cluster.spec.monitoring.enabled = false;
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &cluster)
        .await
        .unwrap();
    h.reconcile().await;
    assert!(h.queries().await.is_none());
    let sts = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert!(!pod.containers.iter().any(|c| c.name == "exporter"));
    assert!(
        !pod.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name == "exporter-queries")
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );
}

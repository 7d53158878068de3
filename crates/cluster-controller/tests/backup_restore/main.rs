//! The Cluster side of backups against the in-memory Kubernetes API: the pgBackRest ConfigMap
//! and repository host (created, owned, restricted, steady), the stanza Job and the
//! ContinuousArchiving condition it drives, the restore bootstrap a restoring Cluster renders,
//! and only API calls the chart grants.
//!
//! This file holds the harness; the tests are in archiving.rs and restore.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use tusk_api::condition::{find_condition, types};
use tusk_api::{Cluster, labels};
use tusk_cluster_controller::observe::Observed;
use tusk_cluster_controller::observe::backup::{self, ArchiverStats};
use tusk_cluster_controller::plan::pgbackrest;
use tusk_cluster_controller::plan::plan;
use tusk_cluster_controller::reconcile::reconcile;
use tusk_cluster_controller::shared::State;
use tusk_cluster_controller::shared::pod::Images;
use tusk_runtime::rbac::disallowed_calls;
use tusk_runtime::rbac::test_support::RecordingClient;
use tusk_runtime::{ControllerKind, Metrics, OperatorConfig};

const NS: &str = "db";

fn cluster(name: &str, yaml_spec: &str) -> Cluster {
    let text = format!(
        "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n{yaml_spec}"
    );
    serde_yaml_ng::from_str(&text).unwrap()
}

const VOLUME: &str = "  postgresVersion: 17
  storage: {size: 10Gi}
  backup:
    repositories:
      - name: repo1
        volume: {size: 50Gi, storageClassName: standard}
";

const S3: &str = "  postgresVersion: 17
  storage: {size: 10Gi}
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

struct Harness {
    setup: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
}

impl Harness {
    async fn new(clusters: &[Cluster]) -> Self {
        let fake = kube_fake_client::ClientBuilder::new()
            .with_resource::<Cluster>()
            .with_status_subresource::<Cluster>()
            .build()
            .await
            .unwrap();
        let recording = RecordingClient::new(fake.clone());
        for cluster in clusters {
            Api::<Cluster>::namespaced(fake.clone(), NS)
                .create(&PostParams::default(), cluster)
                .await
                .unwrap();
        }
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

    async fn cluster(&self, name: &str) -> Cluster {
        self.api::<Cluster>().get(name).await.unwrap()
    }

    async fn reconcile(&self, name: &str) {
        reconcile(Arc::new(self.cluster(name).await), self.state.clone())
            .await
            .unwrap();
    }

    async fn archiving(&self, name: &str) -> Option<(String, String, String)> {
        let status = self.cluster(name).await.status?;
        find_condition(&status.conditions, types::CONTINUOUS_ARCHIVING)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    /// The instance pods, ready, instance 1 primary (as Patroni labels them).
    async fn start_instances(&self, cluster: &str) {
        for sts in self
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            let name = sts.name_any();
            if tusk_api::names::instance_ordinal(cluster, &name).is_none() {
                continue;
            }
            let template = sts.spec.clone().unwrap().template.metadata.unwrap();
            let mut pod_labels = template.labels.clone().unwrap();
            pod_labels.insert(
                labels::ROLE.to_owned(),
                if name.ends_with("-1") {
                    "master"
                } else {
                    "replica"
                }
                .to_owned(),
            );
            let pod = Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("{name}-0")),
                    namespace: Some(NS.to_owned()),
                    labels: Some(pod_labels),
                    annotations: template.annotations.clone(),
                    owner_references: Some(vec![statefulset_controller(&sts)]),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api = self.api::<Pod>();
            let mut stored = match api.get_opt(&pod.name_any()).await.unwrap() {
                Some(existing) => existing,
                None => api.create(&PostParams::default(), &pod).await.unwrap(),
            };
            stored.status = Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            api.replace_status(&pod.name_any(), &PostParams::default(), &stored)
                .await
                .unwrap();
        }
    }

    async fn repo_host_ready(&self, name: &str) {
        let api = self.api::<StatefulSet>();
        let mut sts = api.get(&format!("{name}-repo-host")).await.unwrap();
        sts.status = Some(StatefulSetStatus {
            replicas: 1,
            ready_replicas: Some(1),
            ..Default::default()
        });
        api.replace_status(&sts.name_any(), &PostParams::default(), &sts)
            .await
            .unwrap();
    }

    async fn finish_stanza_job(&self, name: &str, outcome: &str, age_seconds: i64) {
        let api = self.api::<Job>();
        let mut job = api.get(&format!("{name}-stanza")).await.unwrap();
        let when = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_seconds);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: outcome.into(),
                status: "True".into(),
                reason: Some("BackoffLimitExceeded".into()).filter(|_| outcome == "Failed"),
                message: Some("Job has reached the specified backoff limit".into())
                    .filter(|_| outcome == "Failed"),
                last_transition_time: Some(Time(when)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        api.replace_status(&job.name_any(), &PostParams::default(), &job)
            .await
            .unwrap();
    }

    async fn update_spec(&self, name: &str, edit: impl FnOnce(&mut Cluster)) {
        let mut cluster = self.cluster(name).await;
        edit(&mut cluster);
        self.api::<Cluster>()
            .replace(name, &PostParams::default(), &cluster)
            .await
            .unwrap();
    }
}

/// The pod host names cluster DNS would serve for what the controller created, by the rule a
/// real cluster applies (the in-memory API has no DNS): a StatefulSet's pod `<sts>-<ordinal>`
/// gets hostname = its name and subdomain = `spec.serviceName`, and `<hostname>.<subdomain>.
/// <ns>.svc` resolves only when a headless Service of that name exists in the namespace.
async fn pod_dns_names(h: &Harness) -> std::collections::BTreeSet<String> {
    let headless: Vec<String> = h
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|service| {
            service
                .spec
                .as_ref()
                .and_then(|spec| spec.cluster_ip.as_deref())
                == Some("None")
        })
        .map(|service| service.name_any())
        .collect();
    let mut served = std::collections::BTreeSet::new();
    for sts in h
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let spec = sts.spec.clone().unwrap();
        let Some(subdomain) = spec.service_name.filter(|name| headless.contains(name)) else {
            continue;
        };
        for ordinal in 0..spec.replicas.unwrap_or(1) {
            served.insert(format!("{}-{ordinal}.{subdomain}.{NS}.svc", sts.name_any()));
        }
    }
    served
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

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true) && r.kind == "Cluster")
    })
}

mod archiving;
mod restore;

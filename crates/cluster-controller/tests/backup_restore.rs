//! The Cluster side of backups against the in-memory Kubernetes API: the pgBackRest ConfigMap
//! and repository host (created, owned, restricted, steady), the stanza Job and the
//! ContinuousArchiving condition it drives, the restore bootstrap a restoring Cluster renders,
//! and only API calls the chart grants.

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

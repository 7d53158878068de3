//! The Pooler controller against the in-memory Kubernetes API, with the PostgreSQL side real:
//! a TLS primary standing in for the Cluster's, and Debian's PgBouncer started from the files
//! the controller put into its Secrets (its certificate, its auth file) with the settings its
//! ConfigMap renders. The Deployment controller is played by the test: it makes the
//! ReplicaSet and the pod (ready, its IP where PgBouncer listens) and reports the rollout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition, PodStatus, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use tusk_api::condition::{DesiredCondition, set_condition};
use tusk_api::names;
use tusk_api::{Cluster, ClusterStatus, Pooler};
use tusk_pooler_controller::children::{AUTH_FILE_KEY, INI_KEY};
use tusk_pooler_controller::config::{Placement, render_ini};
use tusk_pooler_controller::testing::{self, APP_PASSWORD, BouncerFiles, SUPERUSER_PASSWORD};
use tusk_pooler_controller::{State, admin, reconcile};
use tusk_runtime::ControllerKind;
use tusk_runtime::postgres::PrimaryTarget;
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_testkit::fake_api::ApiBuilder;
use tusk_testkit::kube_api::controller_reference;

const NAMESPACE: &str = "shop";
const POOLER: &str = "db-pooler";
const FINALIZER: &str = "tusk.dev/pooler";

fn cluster(ready: bool) -> Cluster {
    let mut cluster: Cluster = serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop, uid: cluster-uid, generation: 1}
spec: {postgresVersion: 15, storage: {size: 1Gi}}
",
    )
    .unwrap();
    let mut status = ClusterStatus::default();
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(ready, if ready { "Ready" } else { "Creating" }, "test"),
        Some(1),
        Time(jiff::Timestamp::now()),
    );
    cluster.status = Some(status);
    cluster
}

fn pooler(extra: &str) -> Pooler {
    let mut pooler: Pooler = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {{name: db-pooler, namespace: shop, uid: pooler-uid, generation: 1, finalizers: [{FINALIZER}]}}
spec:
  cluster: {{name: db}}
  instances: 1
  pgbouncer: {{poolMode: Transaction, defaultPoolSize: 20}}
{extra}"
    ))
    .unwrap();
    pooler.metadata.namespace = Some(NAMESPACE.to_owned());
    pooler
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    tusk_testkit::kube_api::secret(NAMESPACE, name, &data)
}

struct Harness {
    raw: kube::Client,
    recording: RecordingClient,
    state: Arc<State>,
}

async fn harness(
    cluster: Option<Cluster>,
    secrets: Vec<Secret>,
    primary: Option<SocketAddr>,
    console: Option<SocketAddr>,
) -> Harness {
    let (raw, recording) = ApiBuilder::new()
        .kind::<Pooler>()
        .kind::<Cluster>()
        .objects(cluster)
        .objects(secrets)
        .build_recorded()
        .await
        .unwrap();
    let mut state = State::new(context(ControllerKind::Pooler, &recording));
    state.primary_address = primary;
    state.console_address = console;
    Harness {
        raw,
        recording,
        state: Arc::new(state),
    }
}

impl Harness {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.raw.clone(), NAMESPACE)
    }

    async fn create(&self, pooler: &Pooler) {
        self.api::<Pooler>()
            .create(&PostParams::default(), pooler)
            .await
            .unwrap();
    }

    async fn reconcile(
        &self,
    ) -> Result<kube::runtime::controller::Action, tusk_pooler_controller::Error> {
        let pooler = self.api::<Pooler>().get(POOLER).await.unwrap();
        reconcile(Arc::new(pooler), self.state.clone()).await
    }

    async fn condition(&self, type_: &str) -> (String, String, String) {
        let pooler = self.api::<Pooler>().get(POOLER).await.unwrap();
        let condition = pooler
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .cloned()
            .unwrap_or_else(|| panic!("no {type_} condition: {:?}", pooler.status));
        (condition.status, condition.reason, condition.message)
    }

    async fn secret_text(&self, name: &str, key: &str) -> String {
        let secret = self.api::<Secret>().get(name).await.unwrap();
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    }

    /// The Deployment controller's part: a ReplicaSet and one ready pod, and the rollout done.
    async fn roll_out(&self) {
        let deployment = self.api::<Deployment>().get(POOLER).await.unwrap();
        let labels = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone();
        let set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{POOLER}-5d8f")),
                labels: labels.clone(),
                owner_references: Some(vec![controller_reference(
                    "apps/v1",
                    "Deployment",
                    POOLER,
                    &deployment.uid().unwrap(),
                )]),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let set = self
            .api::<ReplicaSet>()
            .create(&PostParams::default(), &set)
            .await
            .unwrap();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{POOLER}-5d8f-x7k2p")),
                labels,
                owner_references: Some(vec![controller_reference(
                    "apps/v1",
                    "ReplicaSet",
                    &set.name_any(),
                    &set.uid().unwrap(),
                )]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let status = PodStatus {
            pod_ip: Some("127.0.0.1".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        };
        self.api::<Pod>()
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .unwrap();
        self.report_rollout(1, 1, 1).await;
    }

    async fn report_rollout(&self, replicas: i32, updated: i32, ready: i32) {
        let deployment = self.api::<Deployment>().get(POOLER).await.unwrap();
        let status = DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        };
        self.api::<Deployment>()
            .patch_status(
                POOLER,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    async fn edit(&self, change: serde_json::Value) {
        let mut pooler = self.api::<Pooler>().get(POOLER).await.unwrap();
        let mut spec = serde_json::to_value(&pooler.spec).unwrap();
        json_merge(&mut spec, change);
        pooler.spec = serde_json::from_value(spec).unwrap();
        pooler.metadata.generation = Some(pooler.metadata.generation.unwrap_or(1) + 1);
        self.api::<Pooler>()
            .replace(POOLER, &PostParams::default(), &pooler)
            .await
            .unwrap();
    }
}

fn json_merge(target: &mut serde_json::Value, change: serde_json::Value) {
    match (target, change) {
        (serde_json::Value::Object(target), serde_json::Value::Object(change)) => {
            for (key, value) in change {
                json_merge(target.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (target, change) => *target = change,
    }
}

/// The whole flow: Secrets, the auth SQL, children, PgBouncer serving a client with the
/// controller's certificate and auth file, a quiet second pass, a settings change applied in
/// place, pause and resume, and deletion dropping the auth role.
#[tokio::test]
async fn a_pooler_serves_its_cluster_through_pgbouncer_and_follows_its_spec() {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(15)) else {
        return;
    };
    let Some(pgbouncer) = tusk_testkit::require(tusk_testkit::pgbouncer()) else {
        return;
    };
    let rw_host = names::read_write_host("db", NAMESPACE);
    let primary = testing::start_primary_for(&pg, &[&rw_host, testing::HOST])
        .await
        .unwrap();
    let secrets = vec![
        secret(
            &names::superuser_secret("db"),
            &[("username", "postgres"), ("password", SUPERUSER_PASSWORD)],
        ),
        secret(
            &names::ca_secret("db"),
            &[
                ("ca.crt", &primary.tls.ca_pem),
                ("ca.key", &primary.tls.ca_key_pem),
            ],
        ),
    ];
    // PgBouncer's port is chosen now, so the controller's console calls can be sent there.
    let console_port = tusk_testkit::free_port().unwrap();
    let console: SocketAddr = format!("127.0.0.1:{console_port}").parse().unwrap();
    let h = harness(
        Some(cluster(true)),
        secrets,
        Some(primary.address().unwrap()),
        Some(console),
    )
    .await;
    h.create(&pooler("")).await;

    // First pass: Secrets, SQL, children; no pod yet.
    h.reconcile().await.unwrap();
    let (status, reason, _) = h.condition("Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "RollingOut"));
    for name in ["db-pooler-auth", "db-pooler-tls", "db-pooler-role"] {
        h.api::<Secret>().get(name).await.unwrap();
    }
    let config_map = h.api::<ConfigMap>().get(POOLER).await.unwrap();
    let ini = &config_map.data.unwrap()[INI_KEY];
    assert_eq!(
        ini,
        &render_ini(&pooler(""), &Placement::in_pod(&pooler(""), NAMESPACE))
    );
    h.api::<Service>().get(POOLER).await.unwrap();
    h.api::<PodDisruptionBudget>().get(POOLER).await.unwrap();
    let superuser = primary.server.connect().await.unwrap();
    let role = superuser
        .query_one(
            "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'tusk_pooler'",
            &[],
        )
        .await
        .unwrap();
    assert!(role.get::<_, bool>(0) && !role.get::<_, bool>(1));
    let userlist = h.secret_text("db-pooler-auth", AUTH_FILE_KEY).await;
    assert!(!userlist.contains(APP_PASSWORD), "no application password");
    assert!(!userlist.contains("shop"), "{userlist}");

    // PgBouncer from the controller's files, then the pod is "ready".
    let files = BouncerFiles {
        auth_file: userlist,
        cert_pem: h.secret_text("db-pooler-tls", "tls.crt").await,
        key_pem: h.secret_text("db-pooler-tls", "tls.key").await,
        ca_pem: h.secret_text("db-pooler-tls", "ca.crt").await,
    };
    let bouncer = testing::start_bouncer_on(
        &pgbouncer.pgbouncer,
        pg.run_as.as_ref(),
        &primary,
        &files,
        &pooler(""),
        console_port,
    )
    .await
    .unwrap();
    h.roll_out().await;
    h.reconcile().await.unwrap();
    let (status, reason, message) = h.condition("Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Available"),
        "{message}"
    );
    assert_eq!(h.condition("Progressing").await.0, "False");
    assert_eq!(h.condition("Degraded").await.0, "False");
    let stored = h.api::<Pooler>().get(POOLER).await.unwrap();
    assert_eq!(
        stored.status.as_ref().unwrap().service.as_deref(),
        Some("db-pooler.shop.svc:5432")
    );

    // An application logs in with its own role through PgBouncer, verifying PgBouncer's
    // certificate (issued by the controller) against the Cluster's CA for the Service name.
    let app = PrimaryTarget {
        host: "db-pooler.shop.svc".to_owned(),
        port: console_port,
        address: Some("127.0.0.1".parse().unwrap()),
        ca_pem: Some(primary.tls.ca_pem.clone().into_bytes()),
        user: "shop".to_owned(),
        password: APP_PASSWORD.to_owned(),
    };
    let client = app.connect("app", "test-app").await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // Steady state: nothing written, to Kubernetes or PostgreSQL.
    h.recording.clear();
    let log_offset = primary.server.read_log().unwrap().len();
    h.reconcile().await.unwrap();
    assert_eq!(h.recording.writes(), vec![], "a quiet pass writes nothing");
    let log = primary.server.read_log().unwrap()[log_offset..].to_owned();
    let writes: Vec<&str> = log
        .lines()
        .filter(|line| {
            ["CREATE ", "ALTER ", "GRANT ", "REVOKE ", "DROP "]
                .iter()
                .any(|k| line.contains(k))
        })
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");

    // A settings change reaches the running PgBouncer without a restart: the open client
    // keeps working, the pod template does not change.
    let template = |d: Deployment| d.spec.unwrap().template;
    let before = template(h.api::<Deployment>().get(POOLER).await.unwrap());
    h.edit(serde_json::json!({"pgbouncer": {"defaultPoolSize": 7}}))
        .await;
    h.reconcile().await.unwrap();
    let after = template(h.api::<Deployment>().get(POOLER).await.unwrap());
    assert_eq!(before, after, "applied in place, not rolled");
    let admin_password = h.secret_text("db-pooler-auth", "admin-password").await;
    let admin_target = PrimaryTarget {
        user: "tusk_pooler_admin".to_owned(),
        password: admin_password,
        ..app.clone()
    };
    let admin = admin_target.connect("pgbouncer", "test").await.unwrap();
    assert_eq!(
        admin::setting(&admin, "default_pool_size")
            .await
            .unwrap()
            .as_deref(),
        Some("7")
    );
    let (status, reason, message) = h.condition("Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Available"),
        "{message}"
    );
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the open client was not dropped");

    // Paused: new queries wait; Ready says why. Resumed: they run.
    h.edit(serde_json::json!({"paused": true})).await;
    h.reconcile().await.unwrap();
    let (status, reason, _) = h.condition("Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Paused"));
    let held = tokio::spawn(async move {
        let value: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
        value
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a paused PgBouncer holds the query");
    h.edit(serde_json::json!({"paused": false})).await;
    h.reconcile().await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .expect("RESUME lets the held query run")
            .unwrap(),
        2
    );
    let (status, reason, _) = h.condition("Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Available"));

    assert_granted(tusk_pooler_controller::rbac::RULES, &h.recording);

    // Deleted (the last Pooler of the Cluster): the auth role and its functions go.
    let mut doomed = h.api::<Pooler>().get(POOLER).await.unwrap();
    doomed.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    reconcile(Arc::new(doomed), h.state.clone()).await.unwrap();
    let left: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'tusk_pooler'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let app_db = primary.server.connect_db("app").await.unwrap();
    let schemas: i64 = app_db
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tusk_pooler'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
    assert!(
        h.api::<Secret>()
            .get_opt("db-pooler-role")
            .await
            .unwrap()
            .is_none()
    );
    assert_granted(tusk_pooler_controller::rbac::RULES, &h.recording);
    drop(bouncer);
}

#[tokio::test]
async fn a_pooler_waits_for_its_cluster_and_says_so() {
    let h = harness(None, vec![], None, None).await;
    h.create(&pooler("")).await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotFound");
    let (status, reason, message) = h.condition("Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotFound")
    );
    assert!(message.contains("spec.cluster.name"), "{message}");
    assert!(
        h.api::<Deployment>()
            .get_opt(POOLER)
            .await
            .unwrap()
            .is_none()
    );

    let h = harness(Some(cluster(false)), vec![], None, None).await;
    h.create(&pooler("")).await;
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "ClusterNotReady");
    assert!(
        h.api::<Secret>()
            .get_opt("db-pooler-auth")
            .await
            .unwrap()
            .is_none()
    );
    assert_granted(tusk_pooler_controller::rbac::RULES, &h.recording);
}

#[tokio::test]
async fn a_pooler_never_takes_over_an_object_it_does_not_own() {
    let someone_elses = Service {
        metadata: ObjectMeta {
            name: Some(POOLER.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), "other".to_owned())])),
            ..ObjectMeta::default()
        },
        ..Service::default()
    };
    let ca = tusk_testkit::ServerTls::for_host("unused", None).unwrap();
    let secrets = vec![secret(
        &names::ca_secret("db"),
        &[("ca.crt", &ca.ca_pem), ("ca.key", &ca.ca_key_pem)],
    )];
    let h = harness(Some(cluster(true)), secrets, None, None).await;
    h.api::<Service>()
        .create(&PostParams::default(), &someone_elses)
        .await
        .unwrap();
    h.create(&pooler("")).await;
    h.recording.clear();
    let error = h.reconcile().await.unwrap_err();
    assert_eq!(error.reason(), "NameConflict");
    let (_, reason, message) = h.condition("Ready").await;
    assert_eq!(reason, "NameConflict");
    assert!(message.contains("Service db-pooler"), "{message}");
    let writes: Vec<_> = h
        .recording
        .writes()
        .into_iter()
        .filter(|call| call.resource != "poolers/status" && call.resource != "events")
        .collect();
    assert!(writes.is_empty(), "nothing half-applied: {writes:?}");
    let service = h.api::<Service>().get(POOLER).await.unwrap();
    assert_eq!(
        service.labels().get("app").map(String::as_str),
        Some("other")
    );
}

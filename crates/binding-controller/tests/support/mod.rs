//! Shared test setup: an in-memory Kubernetes API with tusk's kinds, a recording client for
//! RBAC and write checks, a stand-in for the PostgresUser controller's side of the contract
//! (its status and credentials Secret), and deletion that honours finalizers as the API
//! server does. Also used by crates/operator/tests/binding_real.rs (`#[path]`).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kube_fake_client::discovery::Discovery;
use kube_fake_client::interceptor;
use kube_fake_client::registry::ResourceRegistry;
use serde_json::json;
use tusk_api::condition::{DesiredCondition, set_condition};
use tusk_api::labels::cluster_child_labels;
use tusk_api::names;
use tusk_api::{Cluster, ClusterStatus, Pooler, PostgresUser, PostgresUserStatus, ServiceBinding};
use tusk_binding_controller::naming::BindingIdentity;
use tusk_binding_controller::reconcile::{CREDENTIALS_COMPONENT, PASSWORD_CHANGED_AT_ANNOTATION};
use tusk_binding_controller::{Error, reconcile};
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_runtime::{Context, ControllerKind};
use tusk_testkit::fake_api::ApiBuilder;
pub use tusk_testkit::kube_api::secret;

/// The Cluster `db` lives in namespace `db`; applications live in `shop` and `billing`.
pub const CLUSTER_NS: &str = "db";
pub const CLUSTER: &str = "db";
pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\ntest CA\n-----END CERTIFICATE-----\n";

/// Cluster `db` in namespace `db`, Ready or not, with `policy` (YAML lines under `spec`, each
/// indented by two spaces) appended.
pub fn cluster(ready: bool, policy: &str) -> Cluster {
    let mut cluster: Cluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db, uid: cluster-uid-1, generation: 1}}
spec:
  postgresVersion: 17
  storage: {{size: 1Gi}}
{policy}"
    ))
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

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .chain([("kubernetes.io/metadata.name".to_owned(), name.to_owned())])
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Pooler `name` in namespace `db` in front of Cluster `cluster`, pooling in `mode`
/// (`Session`, `Transaction` or `Statement`), without status: as the Pooler controller has not
/// seen it yet (a binding does not wait for it).
pub fn pooler(name: &str, cluster: &str, mode: &str) -> Pooler {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {{name: {name}, namespace: {CLUSTER_NS}}}
spec:
  cluster: {{name: {cluster}}}
  pgbouncer: {{poolMode: {mode}}}
"
    ))
    .unwrap()
}

/// The Cluster's CA Secret (`db-ca`, key `ca.crt`) with `pem`.
pub fn ca_secret(pem: &str) -> Secret {
    secret(
        CLUSTER_NS,
        &names::ca_secret(CLUSTER),
        &[("ca.crt", pem.as_bytes())],
    )
}

pub fn binding(yaml: &str) -> ServiceBinding {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// What the in-memory API does not do by itself: a DELETE of an object that has finalizers
/// only sets `deletionTimestamp` (the object goes once they are removed), as the API server
/// does. Applied to PostgresUsers, whose finalizer the PostgresUser controller owns; a
/// binding is marked for deletion with [`Harness::begin_deletion`].
fn graceful_deletion_of_users() -> interceptor::Funcs {
    let registry = Arc::new(ResourceRegistry::new());
    registry.register::<PostgresUser>();
    interceptor::Funcs::new().delete(move |ctx| {
        let gvk = serde_json::from_value(
            json!({"group": "tusk.dev", "version": "v1alpha1", "kind": "PostgresUser"}),
        )
        .unwrap();
        let gvr = Discovery::gvk_to_gvr_with_registry(&gvk, &registry).unwrap();
        let Ok(mut object) = ctx.client.tracker().get(&gvr, ctx.namespace, ctx.name) else {
            return Ok(None);
        };
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            return Ok(None);
        }
        if object["metadata"]["deletionTimestamp"].is_null() {
            ctx.client
                .tracker()
                .delete(&gvr, ctx.namespace, ctx.name, false)?;
            object["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
            object["metadata"]["resourceVersion"] = json!("");
            object = ctx
                .client
                .tracker()
                .add(&gvr, &gvk, object, ctx.namespace)?;
        }
        Ok(Some(object))
    })
}

/// Answers `GET /api/v1/namespaces/<name>` from `namespaces` and passes everything else to
/// `inner`: the in-memory API cannot route requests for Namespaces (a cluster-scoped kind
/// whose path looks like a namespaced one).
fn serve_namespaces(inner: kube::Client, namespaces: Vec<Namespace>) -> kube::Client {
    let namespaces: Arc<BTreeMap<String, Namespace>> = Arc::new(
        namespaces
            .into_iter()
            .map(|namespace| (namespace.name_any(), namespace))
            .collect(),
    );
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let namespaces = namespaces.clone();
        async move {
            let name = request
                .uri()
                .path()
                .strip_prefix("/api/v1/namespaces/")
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(str::to_owned);
            match name {
                Some(name) if request.method() == http::Method::GET => {
                    let (code, body) = match namespaces.get(&name) {
                        Some(namespace) => (200, serde_json::to_vec(namespace).unwrap()),
                        None => (
                            404,
                            serde_json::to_vec(&json!({
                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404,
                                "message": format!("namespaces {name:?} not found"),
                            }))
                            .unwrap(),
                        ),
                    };
                    Ok(http::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(body))
                        .unwrap())
                }
                _ => inner.send(request).await,
            }
        }
    });
    kube::Client::new(service, "default")
}

/// The in-memory API and the controller's context over it.
pub struct Harness {
    /// The in-memory API without recording, for test setup.
    pub raw: kube::Client,
    pub recording: RecordingClient,
    pub ctx: Arc<Context>,
}

pub async fn fake_api(
    clusters: Vec<Cluster>,
    secrets: Vec<Secret>,
    namespaces: Vec<Namespace>,
) -> Harness {
    let client = ApiBuilder::new()
        .kind::<PostgresUser>()
        .kind::<Cluster>()
        .kind::<ServiceBinding>()
        .kind::<Pooler>()
        .interceptors(graceful_deletion_of_users())
        .objects(clusters)
        .objects(secrets)
        .build()
        .await
        .unwrap();
    let recording = RecordingClient::new(serve_namespaces(client.clone(), namespaces));
    let ctx = context(ControllerKind::Binding, &recording);
    Harness {
        raw: client,
        recording,
        ctx: Arc::new(ctx),
    }
}

impl Harness {
    pub fn bindings(&self, namespace: &str) -> Api<ServiceBinding> {
        Api::namespaced(self.raw.clone(), namespace)
    }

    pub fn users(&self) -> Api<PostgresUser> {
        Api::namespaced(self.raw.clone(), CLUSTER_NS)
    }

    pub fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.raw.clone(), namespace)
    }

    pub fn clusters(&self) -> Api<Cluster> {
        Api::namespaced(self.raw.clone(), CLUSTER_NS)
    }

    pub fn poolers(&self) -> Api<Pooler> {
        Api::namespaced(self.raw.clone(), CLUSTER_NS)
    }

    /// Sets (`Some`) or removes (`None`) `spec.pooler` of a stored binding.
    pub async fn set_binding_pooler(&self, namespace: &str, name: &str, pooler: Option<&str>) {
        let pooler = pooler.map(|name| json!({"name": name}));
        self.bindings(namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"pooler": pooler}})),
            )
            .await
            .unwrap();
    }

    /// Creates `binding` as `kubectl create` would (the API server assigns its UID).
    pub async fn create(&self, binding: &ServiceBinding) -> ServiceBinding {
        let namespace = binding.namespace().unwrap();
        self.bindings(&namespace)
            .create(&PostParams::default(), binding)
            .await
            .unwrap()
    }

    pub async fn get(&self, namespace: &str, name: &str) -> ServiceBinding {
        self.bindings(namespace).get(name).await.unwrap()
    }

    /// Reconciles the stored binding once, as the controller would after a watch event.
    pub async fn reconcile(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let binding = self.get(namespace, name).await;
        reconcile(Arc::new(binding), self.ctx.clone()).await
    }

    /// Reconciles until the spec is worked on: a new cross-namespace binding's first pass only
    /// adds the finalizer (its watch event brings the second).
    pub async fn settle(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let before = self.get(namespace, name).await.finalizers().len();
        let result = self.reconcile(namespace, name).await;
        if result.is_ok() && self.get(namespace, name).await.finalizers().len() > before {
            return self.reconcile(namespace, name).await;
        }
        result
    }

    /// `kubectl delete` of a binding: with finalizers, the API server only sets
    /// `deletionTimestamp` and the controller reconciles the deleting object; once no finalizer
    /// is left the object goes, and garbage collection takes what it owns (the in-memory API
    /// cascades on delete). Returns the reconcile's result, if one ran.
    pub async fn delete_binding(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<Action, Error>> {
        let stored = self.get(namespace, name).await;
        let mut result = None;
        if !stored.finalizers().is_empty() {
            let mut deleting = stored.clone();
            deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
            result = Some(reconcile(Arc::new(deleting), self.ctx.clone()).await);
            if !self.get(namespace, name).await.finalizers().is_empty() {
                return result;
            }
        }
        self.bindings(namespace)
            .delete(name, &Default::default())
            .await
            .unwrap();
        result
    }

    /// The Ready condition of a binding: (status, reason, message).
    pub async fn ready(&self, namespace: &str, name: &str) -> (String, String, String) {
        let binding = self.get(namespace, name).await;
        let condition = binding
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .cloned()
            .unwrap_or_else(|| panic!("{name} has no Ready condition: {:?}", binding.status));
        (condition.status, condition.reason, condition.message)
    }

    /// The identity of a stored binding, from which its children are named.
    pub async fn identity(&self, namespace: &str, name: &str) -> BindingIdentity {
        let binding = self.get(namespace, name).await;
        BindingIdentity {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: binding.uid().unwrap(),
        }
    }

    pub async fn user_of(&self, namespace: &str, name: &str) -> Option<PostgresUser> {
        let identity = self.identity(namespace, name).await;
        self.users().get_opt(&identity.user_name()).await.unwrap()
    }

    pub async fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets(namespace).get_opt(name).await.unwrap()
    }

    pub async fn secret_text(&self, namespace: &str, name: &str, key: &str) -> String {
        let secret = self.secret(namespace, name).await.unwrap();
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    }

    /// Plays the PostgresUser controller's part for the user `name`: writes its credentials
    /// Secret with `password` set at `changed_at` (seconds) and reports the user Ready for its
    /// current generation with that password applied.
    pub async fn user_controller_applies(&self, name: &str, password: &str, changed_at: i64) {
        self.write_credentials(name, password, changed_at).await;
        self.report_user_ready(name, changed_at).await;
    }

    /// The credentials Secret as the PostgresUser controller writes it (first, before SQL).
    pub async fn write_credentials(&self, name: &str, password: &str, changed_at: i64) {
        let user = self.users().get(name).await.unwrap();
        let role = user.spec.role_name.clone().unwrap();
        let secret_name = names::user_credentials_secret(CLUSTER, name);
        let at = jiff::Timestamp::from_second(changed_at).unwrap();
        let mut labels = cluster_child_labels(CLUSTER, CREDENTIALS_COMPONENT);
        labels.insert("test".into(), "yes".into());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(CLUSTER_NS.to_owned()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    PASSWORD_CHANGED_AT_ANNOTATION.to_owned(),
                    at.to_string(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    controller: Some(true),
                    ..user.controller_owner_ref(&()).unwrap()
                }]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("username".to_owned(), ByteString(role.into_bytes())),
                (
                    "password".to_owned(),
                    ByteString(password.as_bytes().to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        self.secrets(CLUSTER_NS)
            .patch(
                &secret_name,
                &PatchParams::apply("tusk-user-controller").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    /// The PostgresUser's status once the password set at `changed_at` is in PostgreSQL.
    pub async fn report_user_ready(&self, name: &str, changed_at: i64) {
        let user = self.users().get(name).await.unwrap();
        let mut status = user.status.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            DesiredCondition::ready(true, "Applied", "role matches the spec"),
            user.metadata.generation,
            Time(jiff::Timestamp::now()),
        );
        status.observed_generation = user.metadata.generation;
        status.role_name = user.spec.role_name.clone();
        status.last_password_rotation =
            Some(Time(jiff::Timestamp::from_second(changed_at).unwrap()));
        self.set_user_status(name, status).await;
    }

    pub async fn set_user_status(&self, name: &str, status: PostgresUserStatus) {
        self.users()
            .patch_status(
                name,
                &PatchParams::apply("tusk-user-controller").force(),
                &Patch::Apply(&json!({
                    "apiVersion": "tusk.dev/v1alpha1",
                    "kind": "PostgresUser",
                    "status": status,
                })),
            )
            .await
            .unwrap();
    }

    pub async fn set_cluster_policy(&self, policy: serde_json::Value) {
        self.clusters()
            .patch(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"bindingPolicy": policy}})),
            )
            .await
            .unwrap();
        // The Cluster controller reports the new generation Ready.
        let cluster = self.clusters().get(CLUSTER).await.unwrap();
        let mut status = cluster.status.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            DesiredCondition::ready(true, "Ready", "test"),
            cluster.metadata.generation,
            Time(jiff::Timestamp::now()),
        );
        self.clusters()
            .patch_status(
                CLUSTER,
                &PatchParams::apply("tusk-cluster-controller").force(),
                &Patch::Apply(&json!({
                    "apiVersion": "tusk.dev/v1alpha1",
                    "kind": "Cluster",
                    "status": status,
                })),
            )
            .await
            .unwrap();
    }

    /// Reasons of the events recorded so far for the binding `name`.
    pub async fn event_reasons(&self, namespace: &str, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.raw.clone(), namespace);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Fails if any recorded call is not granted by the chart's RBAC for the controller.
    pub fn assert_rbac(&self) {
        assert_granted(tusk_binding_controller::rbac::RULES, &self.recording);
    }
}

//! Shared test setup: an in-memory Kubernetes API holding a Cluster and its Secrets, a
//! recording client for RBAC and write checks, and — for the real tests — a PostgreSQL server
//! with TLS that stands in for the Cluster's primary.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use tusk_api::condition::{DesiredCondition, set_condition};
use tusk_api::names;
use tusk_api::{Cluster, ClusterStatus, PostgresUser};
use tusk_runtime::ControllerKind;
use tusk_runtime::rbac::test_support::{RecordingClient, assert_granted, context};
use tusk_testkit::fake_api::ApiBuilder;
use tusk_testkit::{PostgresOptions, PostgresServer, ServerTls, TlsPrimary};
use tusk_user_controller::{Error, State, reconcile};

pub const NAMESPACE: &str = "db";
pub const CLUSTER: &str = "db";
pub const SUPERUSER_PASSWORD: &str = "superuser-test-password-9f8e7d";

/// A Cluster named `db` in namespace `db`, Ready or not.
pub fn cluster(ready: bool) -> Cluster {
    let mut cluster: Cluster = serde_yaml_ng::from_str(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db, uid: cluster-uid-1, generation: 1}
spec: {postgresVersion: 17, storage: {size: 1Gi}}
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

/// A Secret in namespace `db`.
pub fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    tusk_testkit::kube_api::secret(NAMESPACE, name, data)
}

/// The Cluster's superuser and CA Secrets.
pub fn cluster_secrets(ca_pem: &str) -> Vec<Secret> {
    vec![
        secret(
            &names::superuser_secret(CLUSTER),
            &[
                ("username", b"postgres"),
                ("password", SUPERUSER_PASSWORD.as_bytes()),
            ],
        ),
        secret(&names::ca_secret(CLUSTER), &[("ca.crt", ca_pem.as_bytes())]),
    ]
}

/// A PostgresUser from YAML, in namespace `db`, with a uid and generation as the API server
/// would set them.
pub fn user(yaml: &str) -> PostgresUser {
    let mut user: PostgresUser = serde_yaml_ng::from_str(yaml).unwrap();
    user.metadata.namespace = Some(NAMESPACE.to_owned());
    let name = user.metadata.name.clone().unwrap();
    user.metadata.uid = Some(format!("uid-{name}"));
    user.metadata.generation = Some(1);
    user
}

/// The in-memory API and the controller state over it.
pub struct Harness {
    /// The in-memory API without recording, for test setup.
    pub raw: kube::Client,
    pub recording: RecordingClient,
    pub state: Arc<State>,
}

pub async fn fake_api(
    cluster: Option<Cluster>,
    secrets: Vec<Secret>,
    primary: Option<SocketAddr>,
) -> Harness {
    let (client, recording) = ApiBuilder::new()
        .kind::<PostgresUser>()
        .kind::<Cluster>()
        .objects(cluster)
        .objects(secrets)
        .build_recorded()
        .await
        .unwrap();
    let ctx = context(ControllerKind::User, &recording);
    let mut state = State::new(ctx);
    if let Some(primary) = primary {
        state = state.with_primary_address(primary);
    }
    Harness {
        raw: client,
        recording,
        state: Arc::new(state),
    }
}

impl Harness {
    pub fn users(&self) -> Api<PostgresUser> {
        Api::namespaced(self.recording.client(), NAMESPACE)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.recording.client(), NAMESPACE)
    }

    /// Creates `user` as `kubectl create` would, with the controller's finalizer already in
    /// place (test setup, not recorded). kube's finalizer helper adds it with a JSON patch
    /// that tests `/metadata/finalizers` for null; the API server passes that test on an
    /// object without the field, the in-memory API does not — so setup does that step.
    pub async fn create(&self, user: &PostgresUser) {
        let mut user = user.clone();
        user.metadata.finalizers = Some(vec!["tusk.dev/user".to_owned()]);
        Api::<PostgresUser>::namespaced(self.raw.clone(), NAMESPACE)
            .create(&PostParams::default(), &user)
            .await
            .unwrap();
    }

    /// Reconciles the stored object once, as the controller would after a watch event.
    pub async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let user = self.users().get(name).await.unwrap();
        reconcile(Arc::new(user), self.state.clone()).await
    }

    /// Reconciles until the finalizer is in place and the spec applied (two passes for a new
    /// object: the first only adds the finalizer, as kube's finalizer helper does).
    pub async fn settle(&self, name: &str) -> Result<Action, Error> {
        let user = self.users().get(name).await.unwrap();
        let has_finalizer = user
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "tusk.dev/user"));
        if !has_finalizer {
            reconcile(Arc::new(user), self.state.clone()).await?;
        }
        self.reconcile(name).await
    }

    /// Reconciles the object as if `kubectl delete` had just marked it for deletion.
    pub async fn delete(&self, name: &str) -> Result<Action, Error> {
        let mut user = self.users().get(name).await.unwrap();
        user.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        reconcile(Arc::new(user), self.state.clone()).await
    }

    pub async fn ready_reason(&self, name: &str) -> (String, String, String) {
        let user = self.users().get(name).await.unwrap();
        let condition = user
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .cloned()
            .unwrap_or_else(|| panic!("{name} has no Ready condition: {:?}", user.status));
        (condition.status, condition.reason, condition.message)
    }

    pub async fn secret_text(&self, name: &str, key: &str) -> String {
        let secret = self.secrets().get(name).await.unwrap();
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    }

    /// Fails if any recorded call is not granted by the chart's RBAC for the controller.
    pub fn assert_rbac(&self) {
        assert_granted(tusk_user_controller::rbac::RULES, &self.recording);
    }
}

/// A PostgreSQL server standing in for the Cluster's primary: TLS with a certificate for
/// `db-rw.db.svc`, SCRAM for every TLS login, plain connections only for the harness's
/// superuser, and every statement logged.
pub struct Primary {
    pub server: PostgresServer,
    pub tls: ServerTls,
}

pub async fn start_primary(major: u32) -> Option<Primary> {
    let binaries = tusk_testkit::require(tusk_testkit::postgres(major))?;
    let TlsPrimary { server, tls } = TlsPrimary::start(
        &binaries,
        &names::read_write_host(CLUSTER, NAMESPACE),
        SUPERUSER_PASSWORD,
        PostgresOptions::default().with_config("log_statement = 'all'"),
    )
    .await
    .unwrap();
    Some(Primary { server, tls })
}

impl Primary {
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.server.host().parse().unwrap(), self.server.port())
    }

    /// Logs in as an application would: from the credentials Secret's values, over TLS
    /// verified against the Cluster CA for the `-rw` host name.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tusk_runtime::postgres::ConnectError> {
        let target = tusk_runtime::postgres::PrimaryTarget {
            host: names::read_write_host(CLUSTER, NAMESPACE),
            port: self.server.port(),
            address: Some(self.server.host().parse().unwrap()),
            ca_pem: Some(self.tls.ca_pem.clone().into_bytes()),
            user: user.to_owned(),
            password: password.to_owned(),
        };
        target.connect(database, "test-app").await
    }

    pub fn log_len(&self) -> usize {
        self.server.read_log().unwrap().len()
    }

    pub fn log_since(&self, offset: usize) -> String {
        self.server.read_log().unwrap()[offset..].to_owned()
    }
}

/// Keywords of every statement that writes, as tusk spells them.
pub const WRITE_KEYWORDS: &[&str] = &[
    "CREATE ",
    "ALTER ",
    "GRANT ",
    "REVOKE ",
    "COMMENT ",
    "DROP ",
    "REASSIGN ",
];

/// The logged statements in `log` that write.
pub fn logged_writes(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| WRITE_KEYWORDS.iter().any(|k| line.contains(k)))
        .map(str::to_owned)
        .collect()
}

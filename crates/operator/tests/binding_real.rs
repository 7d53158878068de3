//! ServiceBindings end to end against a real PostgreSQL: the ServiceBinding controller and the
//! PostgresUser controller reconcile against one in-memory Kubernetes API, the PostgresUser
//! controller against a real server standing in for the Cluster's primary (TLS with a CA of
//! the test's own, SCRAM logins). Here, where both controllers are linked, also the contract
//! between them.
//!
//! Scenario: two bindings to database `shop` — `orders-api` (ReadWrite, the Cluster's own
//! namespace) and `storefront` (ReadOnly, from namespace `shop`, admitted by the Cluster's
//! bindingPolicy). Each logs in with its own Secret's `uri`, verifying the server against the
//! Secret's `ca.crt` for the host the `uri` names (verify-full); the ReadOnly one cannot write;
//! a password rotation reaches the binding Secret; deleting `storefront` drops its role and
//! leaves `orders-api` working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../binding-controller/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use support::{CLUSTER, CLUSTER_NS, Harness, binding, ca_secret, cluster, fake_api, secret};
use tusk_api::PostgresUser;
use tusk_api::names;
use tusk_runtime::ControllerKind;
use tusk_runtime::rbac::test_support::{RecordingClient, context};
use tusk_testkit::{PostgresOptions, PostgresServer, ServerTls, TlsPrimary};

const SUPERUSER_PASSWORD: &str = "superuser-test-password-5c4b3a";

const ORDERS: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: orders-api, namespace: db}
spec:
  cluster: {name: db}
  database: shop
  access: ReadWrite
  secretName: orders-api-db
";

const STOREFRONT: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: storefront, namespace: shop}
spec:
  cluster: {name: db, namespace: db}
  database: shop
  access: ReadOnly
";

#[test]
fn the_controllers_agree_on_the_credentials_secret_contract() {
    assert_eq!(
        tusk_binding_controller::reconcile::PASSWORD_CHANGED_AT_ANNOTATION,
        tusk_user_controller::credentials::PASSWORD_CHANGED_AT_ANNOTATION
    );
    assert_eq!(
        tusk_binding_controller::reconcile::CREDENTIALS_COMPONENT,
        tusk_user_controller::credentials::COMPONENT
    );
}

/// PostgreSQL with TLS for `db-rw.db.svc`, SCRAM for every TLS login, plain connections only
/// for the harness's superuser.
async fn start_primary(major: u32) -> Option<TlsPrimary> {
    let binaries = tusk_testkit::require(tusk_testkit::postgres(major))?;
    let primary = TlsPrimary::start(
        &binaries,
        &names::read_write_host(CLUSTER, CLUSTER_NS),
        SUPERUSER_PASSWORD,
        PostgresOptions::default(),
    )
    .await
    .unwrap();
    Some(primary)
}

/// Both controllers over one in-memory API.
struct Controllers {
    api: Harness,
    users: Arc<tusk_user_controller::State>,
}

impl Controllers {
    async fn new(server: &PostgresServer, tls: &ServerTls) -> Self {
        let api = fake_api(
            vec![cluster(true, "  bindingPolicy: {namespaces: [shop]}\n")],
            vec![
                ca_secret(&tls.ca_pem),
                secret(
                    CLUSTER_NS,
                    &names::superuser_secret(CLUSTER),
                    &[
                        ("username", b"postgres"),
                        ("password", SUPERUSER_PASSWORD.as_bytes()),
                    ],
                ),
            ],
            Vec::new(),
        )
        .await;
        let ctx = context(ControllerKind::User, &RecordingClient::new(api.raw.clone()));
        let address = SocketAddr::new(server.host().parse().unwrap(), server.port());
        let users = Arc::new(tusk_user_controller::State::new(ctx).with_primary_address(address));
        Self { api, users }
    }

    /// One pass of the PostgresUser controller over `name`. Its finalizer is put in place
    /// first, as the API server would let kube's finalizer helper do (the in-memory API
    /// refuses that helper's `test` of a missing field).
    async fn reconcile_user(&self, name: &str) -> Result<(), tusk_user_controller::Error> {
        let users = self.api.users();
        let user = users.get(name).await.unwrap();
        if user.finalizers().is_empty() && user.metadata.deletion_timestamp.is_none() {
            users
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        &serde_json::json!({"metadata": {"finalizers": ["tusk.dev/user"]}}),
                    ),
                )
                .await
                .unwrap();
        }
        let user = users.get(name).await.unwrap();
        tusk_user_controller::reconcile(Arc::new(user), self.users.clone())
            .await
            .map(|_| ())
    }

    /// Runs both controllers until the binding is Bound (at most a few passes each).
    async fn bind(&self, namespace: &str, name: &str) {
        for _ in 0..4 {
            if self.api.settle(namespace, name).await.is_ok() {
                return;
            }
            if let Some(user) = self.api.user_of(namespace, name).await {
                self.reconcile_user(&user.name_any()).await.unwrap();
            }
        }
        panic!(
            "{namespace}/{name} not Bound: {:?}",
            self.api.ready(namespace, name).await
        );
    }
}

/// Logs in as an application would from the binding Secret: the `uri` (user, password, host,
/// database, `sslmode=verify-full`) and `ca.crt`. The TCP connection goes to the test server's
/// address and port; TLS verifies the certificate chain against `ca.crt` and the host name the
/// `uri` names.
async fn login_with_secret(
    api: &Harness,
    server: &PostgresServer,
    namespace: &str,
    secret: &str,
) -> Result<tokio_postgres::Client, tusk_runtime::postgres::ConnectError> {
    let uri = api.secret_text(namespace, secret, "uri").await;
    let (base, query) = uri.split_once('?').unwrap();
    assert_eq!(query, "sslmode=verify-full");
    let config = tokio_postgres::Config::from_str(base).unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(host, "db-rw.db.svc");
    let target = tusk_runtime::postgres::PrimaryTarget {
        host,
        port: server.port(),
        address: Some(server.host().parse().unwrap()),
        ca_pem: Some(
            api.secret_text(namespace, secret, "ca.crt")
                .await
                .into_bytes(),
        ),
        user: config.get_user().unwrap().to_owned(),
        password: String::from_utf8(config.get_password().unwrap().to_vec()).unwrap(),
    };
    target
        .connect(config.get_dbname().unwrap(), "binding-test-app")
        .await
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bindings_log_in_with_their_own_secrets_and_outlive_each_other() {
    let started = Instant::now();
    let Some(TlsPrimary { server, tls }) = start_primary(17).await else {
        return;
    };
    let admin = server.connect().await.unwrap();
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    server
        .connect_db("shop")
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('seed')",
        )
        .await
        .unwrap();
    let controllers = Controllers::new(&server, &tls).await;
    let api = &controllers.api;
    api.create(&binding(ORDERS)).await;
    api.create(&binding(STOREFRONT)).await;
    controllers.bind("db", "orders-api").await;
    controllers.bind("shop", "storefront").await;

    // Each logs in with its own Secret, as its own role, verified against the Cluster's CA.
    let orders = login_with_secret(api, &server, "db", "orders-api-db")
        .await
        .unwrap();
    let storefront = login_with_secret(api, &server, "shop", "storefront")
        .await
        .unwrap();
    let orders_role = current_user(&orders).await;
    let storefront_role = current_user(&storefront).await;
    assert_ne!(
        orders_role, storefront_role,
        "two bindings never share a role"
    );
    assert_eq!(
        orders_role,
        api.secret_text("db", "orders-api-db", "username").await
    );
    orders
        .batch_execute("INSERT INTO items (name) VALUES ('from orders-api')")
        .await
        .unwrap();
    let count: i64 = storefront
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2, "ReadOnly reads");
    let refused = storefront
        .batch_execute("INSERT INTO items (name) VALUES ('from storefront')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "ReadOnly cannot write: {refused}"
    );
    let superuser: bool = storefront
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);

    // Steady state: a pass over each binding writes nothing.
    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap();
    api.reconcile("shop", "storefront").await.unwrap();
    assert_eq!(api.recording.writes(), vec![]);
    api.assert_rbac();

    // Rotation: the PostgresUser controller rotates on request; one binding pass carries the
    // new password to the binding Secret, and the old one stops working.
    let storefront_user = api.user_of("shop", "storefront").await.unwrap().name_any();
    let old_password = api.secret_text("shop", "storefront", "password").await;
    Api::<PostgresUser>::namespaced(api.raw.clone(), CLUSTER_NS)
        .patch(
            &storefront_user,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"annotations": {"tusk.dev/rotate-password": "now"}}})),
        )
        .await
        .unwrap();
    controllers.reconcile_user(&storefront_user).await.unwrap();
    api.reconcile("shop", "storefront").await.unwrap();
    let new_password = api.secret_text("shop", "storefront", "password").await;
    assert_ne!(new_password, old_password);
    let rotated = login_with_secret(api, &server, "shop", "storefront")
        .await
        .unwrap();
    assert_eq!(current_user(&rotated).await, storefront_role);
    drop(rotated);

    // Deleting storefront: its finalizer deletes its PostgresUser, whose controller drops the
    // role; orders-api keeps working.
    drop(storefront);
    api.delete_binding("shop", "storefront")
        .await
        .unwrap()
        .unwrap();
    assert!(api.secret("shop", "storefront").await.is_none());
    let deleting = api.users().get(&storefront_user).await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    controllers.reconcile_user(&storefront_user).await.unwrap();
    assert!(
        api.users()
            .get_opt(&storefront_user)
            .await
            .unwrap()
            .is_none()
    );
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&storefront_role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the storefront role is dropped");
    let orders = login_with_secret(api, &server, "db", "orders-api-db")
        .await
        .unwrap();
    orders
        .batch_execute("INSERT INTO items (name) VALUES ('still here')")
        .await
        .unwrap();
    api.recording.clear();
    api.reconcile("db", "orders-api").await.unwrap();
    assert_eq!(api.recording.writes(), vec![], "orders-api unaffected");
    eprintln!(
        "binding_real: two bindings, rotation and deletion in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

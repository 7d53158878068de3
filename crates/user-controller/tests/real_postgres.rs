//! The controller against a real PostgreSQL (15 and 17) standing in for a Cluster's primary:
//! TLS verify-full with a CA of the test's own, SCRAM logins, every statement logged.
//!
//! One scenario per major, in order: create (role, database, grants, Secret), log in as the
//! app over TLS, a second pass that writes nothing (API and SQL), drift corrected, rotation
//! with a session open, a grant downgraded, hostile names, a role owned elsewhere, drop with
//! reassign — and at the end, no password anywhere in the server log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Instant;

use kube::api::{Patch, PatchParams};
use support::{
    Harness, Primary, cluster, cluster_secrets, fake_api, logged_writes, start_primary, user,
};

const OWNER: &str = "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: shop}
spec:
  cluster: {name: db}
  connectionLimit: 20
  databases: [{name: shop}]
  grants:
  - database: shop
    access: Owner
    schemas: [public, orders]
  deletion: {policy: Drop, reassignOwnedTo: keeper}
";

const READER: &str = "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: reporting}
spec:
  cluster: {name: db}
  grants:
  - database: shop
    access: ReadWrite
    schemas: [orders]
";

/// Every password the Secrets held during the scenario, to look for in the server log.
#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    async fn password(&mut self, api: &Harness, user: &str) -> String {
        let password = api
            .secret_text(&format!("db-{user}-credentials"), "password")
            .await;
        self.0.insert(password.clone());
        password
    }
}

async fn scenario(major: u32) {
    let started = Instant::now();
    let Some(primary) = start_primary(major).await else {
        return;
    };
    let mut secrets = cluster_secrets(&primary.tls.ca_pem);
    secrets.push(support::secret(
        "supplied",
        &[("pw", b"supplied-password-0123456789")],
    ));
    let api = fake_api(Some(cluster(true)), secrets, Some(primary.address())).await;
    let mut seen = Seen::default();
    let admin = primary.server.connect().await.unwrap();
    admin.batch_execute("CREATE ROLE keeper").await.unwrap();

    // Create: role, database, schemas, grants, Secret.
    api.create(&user(OWNER)).await;
    api.create(&user(READER)).await;
    api.settle("shop").await.unwrap();
    api.settle("reporting").await.unwrap();
    for name in ["shop", "reporting"] {
        let (status, reason, _) = api.ready_reason(name).await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Applied"),
            "{name}"
        );
    }
    let stored = api.users().get("shop").await.unwrap();
    let status = stored.status.unwrap();
    let oid: i64 = admin
        .query_one("SELECT oid::int8 FROM pg_roles WHERE rolname = 'shop'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status.role_oid, Some(oid));
    assert_eq!(status.secret_name.as_deref(), Some("db-shop-credentials"));
    assert_eq!(status.databases, vec!["shop".to_owned()]);
    let comment: String = admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        comment.contains(&format!("tusk.dev/owner={}", stored.metadata.uid.unwrap())),
        "{comment}"
    );
    assert_eq!(
        api.secret_text("db-shop-credentials", "host").await,
        "db-rw.db.svc"
    );
    assert_eq!(
        api.secret_text("db-shop-credentials", "dbname").await,
        "shop"
    );
    assert_eq!(
        api.secret_text("db-shop-credentials", "ca.crt").await,
        primary.tls.ca_pem
    );
    let owner_ref = api
        .secrets()
        .get("db-shop-credentials")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owner_ref[0].kind, "PostgresUser");

    // The app logs in over TLS with the generated credentials and builds its schema.
    let shop_password = seen.password(&api, "shop").await;
    let reporting_password = seen.password(&api, "reporting").await;
    assert!(shop_password.len() >= 32);
    let shop = primary.login("shop", &shop_password, "shop").await.unwrap();
    shop.batch_execute(
        "CREATE TABLE orders.items (id serial PRIMARY KEY, name text); INSERT INTO orders.items (name) VALUES ('a')",
    )
    .await
    .unwrap();
    // Default privileges cover the table created after the grant.
    let reporting = primary
        .login("reporting", &reporting_password, "shop")
        .await
        .unwrap();
    reporting
        .batch_execute("INSERT INTO orders.items (name) VALUES ('b')")
        .await
        .unwrap();
    assert!(primary.login("shop", "wrong", "shop").await.is_err());

    // A pass where nothing differs writes nothing: no API write, no SQL write.
    for name in ["shop", "reporting"] {
        api.settle(name).await.unwrap();
    }
    api.recording.clear();
    let log_offset = primary.log_len();
    let backends = controller_backends(&admin).await;
    for name in ["shop", "reporting"] {
        api.reconcile(name).await.unwrap();
    }
    assert_eq!(
        controller_backends(&admin).await,
        backends,
        "the pass reused the cached connections"
    );
    assert_eq!(
        api.recording.writes(),
        vec![],
        "steady state writes nothing to the API"
    );
    let log = primary.log_since(log_offset);
    assert_eq!(
        logged_writes(&log),
        Vec::<String>::new(),
        "steady state writes no SQL"
    );
    assert!(
        log.contains("pg_authid"),
        "the catalog was read (and logged):\n{log}"
    );

    // Drift: attributes, a revoked grant and a changed password are put back.
    let other = postgres_protocol::password::scram_sha_256(b"not-the-secret");
    admin
        .batch_execute(&format!(
            "ALTER ROLE shop NOLOGIN CONNECTION LIMIT 1; ALTER ROLE reporting PASSWORD '{other}'"
        ))
        .await
        .unwrap();
    primary
        .server
        .connect_db("shop")
        .await
        .unwrap()
        .batch_execute("REVOKE INSERT ON orders.items FROM reporting")
        .await
        .unwrap();
    assert!(
        primary
            .login("reporting", &reporting_password, "shop")
            .await
            .is_err()
    );
    api.reconcile("shop").await.unwrap();
    api.reconcile("reporting").await.unwrap();
    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = 'shop'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i32>(1)), (true, 20));
    let reporting = primary
        .login("reporting", &reporting_password, "shop")
        .await
        .unwrap();
    reporting
        .batch_execute("INSERT INTO orders.items (name) VALUES ('c')")
        .await
        .unwrap();

    // Rotation on request: a session opened before keeps working; new logins need the new
    // password, which is already in the Secret.
    let before = primary.login("shop", &shop_password, "shop").await.unwrap();
    let annotate = serde_json::json!({"metadata": {"annotations": {"tusk.dev/rotate-password": "2026-11-22T10:00:00Z"}}});
    api.users()
        .patch("shop", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    api.reconcile("shop").await.unwrap();
    let rotated = seen.password(&api, "shop").await;
    assert_ne!(rotated, shop_password);
    before.batch_execute("SELECT 1").await.unwrap();
    assert!(primary.login("shop", &shop_password, "shop").await.is_err());
    primary.login("shop", &rotated, "shop").await.unwrap();
    let (_, reason, _) = api.ready_reason("shop").await;
    assert_eq!(reason, "PasswordRotated");
    let status = api.users().get("shop").await.unwrap().status.unwrap();
    assert_eq!(
        status.password_rotation_request.as_deref(),
        Some("2026-11-22T10:00:00Z")
    );
    assert!(status.last_password_rotation.is_some());
    // Handled once: the next pass keeps the new password and writes nothing.
    api.recording.clear();
    let log_offset = primary.log_len();
    api.reconcile("shop").await.unwrap();
    assert_eq!(api.recording.writes(), vec![]);
    assert_eq!(
        logged_writes(&primary.log_since(log_offset)),
        Vec::<String>::new()
    );
    assert_eq!(
        api.secret_text("db-shop-credentials", "password").await,
        rotated
    );

    // A grant lowered in the spec is revoked.
    let downgrade = serde_json::json!({"spec": {"grants": [{"database": "shop", "access": "ReadOnly", "schemas": ["orders"]}]}});
    api.users()
        .patch(
            "reporting",
            &PatchParams::default(),
            &Patch::Merge(&downgrade),
        )
        .await
        .unwrap();
    api.reconcile("reporting").await.unwrap();
    let error = reporting
        .batch_execute("INSERT INTO orders.items (name) VALUES ('d')")
        .await
        .unwrap_err();
    assert!(
        error
            .as_db_error()
            .unwrap()
            .message()
            .contains("permission denied"),
        "{error}"
    );
    reporting
        .batch_execute("SELECT * FROM orders.items")
        .await
        .unwrap();

    // A supplied password is honoured.
    api.create(&user(
        "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: supplied}
spec:
  cluster: {name: db}
  password: {secret: {name: supplied, key: pw}}
",
    ))
    .await;
    api.settle("supplied").await.unwrap();
    seen.password(&api, "supplied").await;
    primary
        .login("supplied", "supplied-password-0123456789", "postgres")
        .await
        .unwrap();

    hostile_names(&api, &primary, &mut seen).await;
    owned_elsewhere(&api, &primary).await;

    // Drop with reassign: sessions ended, objects and the database go to `keeper`.
    let session = primary.login("shop", &rotated, "shop").await.unwrap();
    api.delete("shop").await.unwrap();
    assert!(
        session.batch_execute("SELECT 1").await.is_err(),
        "session ended"
    );
    let gone: i64 = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = 'shop'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    let database_owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(database_owner, "keeper");
    let table_owner: String = primary
        .server
        .connect_db("shop")
        .await
        .unwrap()
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(table_owner, "keeper");
    let stored = api.users().get("shop").await.unwrap();
    assert!(stored.metadata.finalizers.unwrap_or_default().is_empty());

    // No password — generated, rotated or supplied — ever reached the server log.
    let log = primary.server.read_log().unwrap();
    seen.0.insert("supplied-password-0123456789".to_owned());
    seen.0.insert(support::SUPERUSER_PASSWORD.to_owned());
    for password in &seen.0 {
        assert!(
            !log.contains(password.as_str()),
            "a password is in the server log"
        );
    }
    assert!(
        log.contains("SCRAM-SHA-256$"),
        "verifiers, and only they, were sent"
    );
    api.assert_rbac();
    eprintln!("PostgreSQL {major}: scenario took {:?}", started.elapsed());
}

async fn wal_position(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// The server processes serving the controller's connections.
async fn controller_backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tusk-user-controller' ORDER BY pid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Names that are created verbatim (quoted, never interpreted) or refused with a message.
async fn hostile_names(api: &Harness, primary: &Primary, seen: &mut Seen) {
    let created = [
        ("h1", "Robert'); DROP TABLE students;--"),
        ("h2", "quote\"inside"),
        ("h3", "semi;colon $$ dollar"),
        ("h4", "back\\slash"),
        ("h5", "ünïcödé 🐘"),
        ("h6", &"x".repeat(63)),
        ("h7", "MixedCase"),
    ];
    for (object, role) in &created {
        let yaml = format!(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {{name: {object}}}
spec:
  cluster: {{name: db}}
  roleName: {}
  databases: [{{name: {}}}]
",
            serde_json::to_string(role).unwrap(),
            serde_json::to_string(&format!("db {role}").chars().take(40).collect::<String>())
                .unwrap()
        );
        api.create(&user(&yaml)).await;
        api.settle(object)
            .await
            .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        let found: i64 = primary
            .server
            .connect()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "role {role:?} exists verbatim");
        let password = seen.password(api, object).await;
        primary
            .login(role, &password, "postgres")
            .await
            .unwrap_or_else(|e| panic!("{role:?} cannot log in: {e}"));
    }
    let refused = [
        ("r1", "\"\"", "InvalidSpec"),
        ("r2", &format!("\"{}\"", "y".repeat(64)), "InvalidSpec"),
        ("r3", "\"a\\u0000b\"", "InvalidSpec"),
        ("r4", "postgres", "ReservedRoleName"),
        ("r5", "pg_read_all_data", "ReservedRoleName"),
        ("r6", "tusk_monitor", "ReservedRoleName"),
    ];
    for (object, role_yaml, reason) in refused {
        let yaml = format!(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {{name: {object}}}
spec:
  cluster: {{name: db}}
  roleName: {role_yaml}
"
        );
        api.create(&user(&yaml)).await;
        let error = api.settle(object).await.unwrap_err();
        assert_eq!(error.reason(), reason, "{role_yaml}: {error}");
        let (status, _, message) = api.ready_reason(object).await;
        assert_eq!(status, "False");
        assert!(message.contains("spec.roleName"), "{message}");
    }
    let roles: i64 = primary
        .server
        .connect()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'y%' OR rolname = ''",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 0, "refused names created nothing");
}

/// A role made by hand is reported, not taken over or changed.
async fn owned_elsewhere(api: &Harness, primary: &Primary) {
    let admin = primary.server.connect().await.unwrap();
    admin
        .batch_execute("CREATE ROLE taken NOLOGIN CONNECTION LIMIT 7")
        .await
        .unwrap();
    api.create(&user(
        "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: taken}
spec:
  cluster: {name: db}
",
    ))
    .await;
    let error = api.settle("taken").await.unwrap_err();
    assert_eq!(error.reason(), "RoleOwnedElsewhere");
    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolconnlimit, rolpassword IS NULL FROM pg_authid WHERE rolname = 'taken'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        (false, 7, true),
        "the role was left exactly as it was"
    );
}

/// The engine the controller and the benchmark share: many roles in batches over two
/// connections, a role made by hand refused without holding back the others, and a repeat
/// that writes nothing (the WAL does not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_applies_many_roles_in_batches_and_a_repeat_writes_nothing() {
    use std::sync::Arc;
    use tusk_user_controller::engine::{RoleRequest, sync_roles};
    use tusk_user_controller::password::PasswordChecks;
    use tusk_user_controller::plan::{DesiredRole, owner_marker};

    let Some(binaries) = tusk_testkit::require(tusk_testkit::postgres(17)) else {
        return;
    };
    let server = tusk_testkit::PostgresServer::start(&binaries, Default::default())
        .await
        .unwrap();
    let admin = server.connect().await.unwrap();
    admin.batch_execute("CREATE ROLE e_07").await.unwrap();
    let target = tusk_runtime::postgres::PrimaryTarget {
        host: server.host().to_owned(),
        port: server.port(),
        address: None,
        ca_pem: None,
        user: "postgres".to_owned(),
        password: String::new(),
    };
    let pool = tusk_user_controller::primary::Connections::new("engine-test");
    let clients = pool.clients("c", &target, "postgres", 2).await.unwrap();
    assert_eq!(pool.cached(), 2);
    let requests = || {
        (0..20)
            .map(|i| {
                let marker = owner_marker(&format!("uid-{i}"));
                RoleRequest {
                    desired: DesiredRole {
                        name: format!("e_{i:02}"),
                        comment: format!("{marker} test"),
                        owner_marker: marker,
                        login: true,
                        createdb: i % 2 == 0,
                        createrole: false,
                        inherit: true,
                        connection_limit: i,
                        valid_until: None,
                        known_oid: None,
                        databases: Vec::new(),
                    },
                    password: format!("password-number-{i}-0123456789abcdef"),
                    other_databases: Vec::new(),
                }
            })
            .collect::<Vec<_>>()
    };
    let checks = Arc::new(PasswordChecks::default());
    let outcomes = sync_roles(&clients, &checks, "c", requests(), 6)
        .await
        .unwrap();
    let refused: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(refused, vec!["e_07"], "only the hand-made role is refused");
    let managed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'e\\_%' AND shobj_description(oid, 'pg_authid') LIKE 'tusk.dev/owner=%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(managed, 19);
    let before = wal_position(&admin).await;
    let again = sync_roles(&clients, &checks, "c", requests(), 6)
        .await
        .unwrap();
    assert!(
        again
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .all(|r| r.changes.is_empty())
    );
    assert_eq!(wal_position(&admin).await, before, "a repeat writes no WAL");
    // After a restart the checks are cold: verified against the stored verifiers, no writes.
    let cold = sync_roles(
        &clients,
        &Arc::new(PasswordChecks::default()),
        "c",
        requests(),
        6,
    )
    .await
    .unwrap();
    assert!(
        cold.iter()
            .filter_map(|o| o.result.as_ref().ok())
            .all(|r| r.changes.is_empty())
    );
    assert_eq!(wal_position(&admin).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_15_roles_grants_rotation_drift_and_drop() {
    scenario(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_17_roles_grants_rotation_drift_and_drop() {
    scenario(17).await;
}
